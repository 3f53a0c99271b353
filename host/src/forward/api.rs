//! The Docker API socket: a host unix socket (0600) whose every connection
//! is piped to guest vsock port 2375. A byte pipe, never parsing HTTP, so
//! hijacked attach/exec streams and half-closes pass through untouched.

use std::sync::Arc;

use tokio::net::UnixListener;
use vmctl_proto::VSOCK_PORT_API;

use super::pipe;
use crate::vsock::VsockTransport;

/// Serves `listener` until the task is dropped.
pub async fn serve(listener: UnixListener, transport: Arc<dyn VsockTransport>) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(e) => {
                tracing::warn!(error = %e, "accept on the API socket failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let transport = transport.clone();
        tokio::spawn(async move {
            let guest = match transport.connect(VSOCK_PORT_API).await {
                Ok(guest) => guest,
                Err(e) => {
                    tracing::warn!(port = VSOCK_PORT_API, error = %crate::error_chain(&e), "cannot reach the guest engine");
                    return;
                }
            };
            if let Err(e) = pipe(client, guest).await {
                tracing::debug!(port = VSOCK_PORT_API, error = %e, "API connection ended with an error");
            }
        });
    }
}
