//! Serves the daemon's endpoint ([`super::protocol`]).

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::protocol::{DaemonRequest, DaemonResponse};
use super::Running;
use crate::endpoint::{LocalListener, LocalStream};
use crate::forward::pipe;
use crate::machine::port_rules::{self, PortRule};

pub(super) async fn serve(mut listener: Box<dyn LocalListener>, running: Arc<Running>) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                tokio::spawn(handle(stream, running.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept on the daemon socket failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn answer(stream: &mut LocalStream, response: &DaemonResponse) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(response).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line).await
}

async fn handle(stream: LocalStream, running: Arc<Running>) {
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
        DaemonRequest::PortAdd { rule } => {
            let response = match add_rule(&running, rule) {
                Ok(()) => DaemonResponse::ok(),
                Err(message) => DaemonResponse::error(message),
            };
            let _ = answer(&mut stream, &response).await;
        }
        DaemonRequest::PortRm { target } => {
            let response = match remove_rules(&running, &target) {
                Ok(removed) => DaemonResponse {
                    ok: true,
                    removed: Some(removed),
                    ..DaemonResponse::default()
                },
                Err(message) => DaemonResponse::error(message),
            };
            let _ = answer(&mut stream, &response).await;
        }
        DaemonRequest::PortLs => {
            let response = DaemonResponse {
                ok: true,
                ports: Some(running.forwarder.list()),
                ..DaemonResponse::default()
            };
            let _ = answer(&mut stream, &response).await;
        }
    }
}

/// Listens for `rule`, then saves it; a rule that cannot listen is not saved.
fn add_rule(running: &Running, rule: PortRule) -> Result<(), String> {
    let paths = &running.machine.paths;
    let _guard = running.rules_lock.lock().unwrap_or_else(|e| e.into_inner());
    let mut rules = port_rules::load(paths).map_err(|e| crate::error_chain(&e))?;
    if rules.iter().any(|r| r.name == rule.name) {
        return Err(format!("port rule {} already exists", rule.name));
    }
    running
        .forwarder
        .add_rule(rule.clone())
        .map_err(|refusal| refusal.message)?;
    rules.push(rule.clone());
    if let Err(e) = port_rules::save(paths, &rules) {
        running.forwarder.remove_rule(&rule.name);
        return Err(crate::error_chain(&e));
    }
    Ok(())
}

/// Removes the rules named `target`, or on host port `target`.
fn remove_rules(running: &Running, target: &str) -> Result<Vec<PortRule>, String> {
    let paths = &running.machine.paths;
    let _guard = running.rules_lock.lock().unwrap_or_else(|e| e.into_inner());
    let rules = port_rules::load(paths).map_err(|e| crate::error_chain(&e))?;
    let (removed, kept) = port_rules::split_matching(rules, target);
    if removed.is_empty() {
        return Ok(removed);
    }
    port_rules::save(paths, &kept).map_err(|e| crate::error_chain(&e))?;
    for rule in &removed {
        running.forwarder.remove_rule(&rule.name);
    }
    Ok(removed)
}
