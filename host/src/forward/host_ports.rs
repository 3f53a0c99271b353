//! The host-port service (host vsock port 1027, protocol in
//! `vmctl_proto::forward`): the guest engine reserves desktop ports here
//! before it starts a container, and releases those it did not use.

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use vmctl_proto::forward::{HostPortRequest, HostPortResponse};

use super::ports::Forwarder;
use crate::vsock::{GuestListener, GuestStream};

/// Serves the guest's requests until the task is dropped.
pub async fn serve(mut listener: Box<dyn GuestListener>, forwarder: Arc<Forwarder>) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                tokio::spawn(handle(stream, forwarder.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept on the host-port service failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle(stream: GuestStream, forwarder: Arc<Forwarder>) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).await.is_err() || line.is_empty() {
        return;
    }
    let response = match serde_json::from_str::<HostPortRequest>(&line) {
        Ok(HostPortRequest::Reserve { binding }) => forwarder.reserve(&binding),
        Ok(HostPortRequest::Release { binding }) => {
            forwarder.release(&binding);
            HostPortResponse {
                ok: true,
                ..Default::default()
            }
        }
        Err(e) => HostPortResponse {
            error: Some(format!("bad request: {e}")),
            ..Default::default()
        },
    };
    let mut answer = serde_json::to_vec(&response).unwrap_or_default();
    answer.push(b'\n');
    let stream = reader.get_mut();
    let _ = stream.write_all(&answer).await;
    let _ = stream.shutdown().await;
}
