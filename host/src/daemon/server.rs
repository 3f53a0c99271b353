//! Serves the daemon's socket ([`super::protocol`]).

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::protocol::{DaemonRequest, DaemonResponse};
use super::Running;
use crate::forward::pipe;

pub(super) async fn serve(listener: UnixListener, running: Arc<Running>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(handle(stream, running.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept on the daemon socket failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn answer(stream: &mut UnixStream, response: &DaemonResponse) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(response).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line).await
}

async fn handle(stream: UnixStream, running: Arc<Running>) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).await.is_err() {
        return;
    }
    // Nothing but the request line was sent before the answer.
    let mut stream = reader.into_inner();
    let request: DaemonRequest = match serde_json::from_str(&line) {
        Ok(request) => request,
        Err(e) => {
            let _ = answer(
                &mut stream,
                &DaemonResponse::error(format!("bad request: {e}")),
            )
            .await;
            return;
        }
    };
    match request {
        DaemonRequest::Status => {
            let response = DaemonResponse {
                ok: true,
                status: Some(running.status()),
                ..DaemonResponse::default()
            };
            let _ = answer(&mut stream, &response).await;
        }
        DaemonRequest::Stop => {
            running.stop.notify_one();
            // The answer is the connection closing when the daemon exits;
            // an early ok lets the CLI show progress.
            let _ = answer(&mut stream, &DaemonResponse::ok()).await;
        }
        DaemonRequest::Connect { port } => match running.transport.connect(port).await {
            Ok(guest) => {
                if answer(&mut stream, &DaemonResponse::ok()).await.is_ok() {
                    let _ = pipe(stream, guest).await;
                }
            }
            Err(e) => {
                let _ = answer(&mut stream, &DaemonResponse::error(crate::error_chain(&e))).await;
            }
        },
    }
}
