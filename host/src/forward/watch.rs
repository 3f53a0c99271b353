//! Following the guest engine's port list (control port 1025,
//! `watch_ports`): a snapshot, then changes; each one reconciles the
//! forwarder. Any break — engine restart, vsock reset, a gap in the
//! generations — reconnects and starts again from a snapshot.

use std::sync::Arc;
use std::time::Duration;

use vmctl_proto::control::ControlRequest;
use vmctl_proto::ports::{apply, PortBindingList, PortEvent};

use super::ports::Forwarder;
use crate::daemon::guest;
use crate::vsock::VsockTransport;

/// How soon a broken watch is tried again.
const RETRY: Duration = Duration::from_millis(200);

/// Follows the list until the task is dropped; sweeps the forwarder meanwhile.
pub async fn follow(transport: Arc<dyn VsockTransport>, forwarder: Arc<Forwarder>) {
    let sweeper = {
        let forwarder = forwarder.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                forwarder.sweep();
            }
        })
    };
    let _sweeper = AbortOnDrop(sweeper);
    loop {
        match watch_once(transport.as_ref(), &forwarder).await {
            Ok(()) => tracing::debug!("port watch ended; watching again"),
            Err(e) => tracing::debug!(error = %e, "port watch broke; watching again"),
        }
        tokio::time::sleep(RETRY).await;
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn watch_once(transport: &dyn VsockTransport, forwarder: &Forwarder) -> Result<(), String> {
    let (response, mut reader) = guest::call(transport, &ControlRequest::WatchPorts)
        .await
        .map_err(|e| crate::error_chain(&e))?;
    if !response.ok {
        return Err(response.error.unwrap_or_default());
    }
    let mut mirror = PortBindingList::default();
    let mut line = String::new();
    loop {
        line.clear();
        let n = vmctl_proto::line::read_line(&mut reader, &mut line)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        let event: PortEvent = serde_json::from_str(&line).map_err(|e| e.to_string())?;
        if !apply(&mut mirror, &event) {
            return Err(format!(
                "generation {} after {}: re-listing",
                event.generation(),
                mirror.generation
            ));
        }
        forwarder.reconcile(&mirror);
    }
}
