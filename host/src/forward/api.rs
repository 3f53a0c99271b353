//! The Docker API endpoint: a private local endpoint (a unix socket, 0600,
//! or an owner-only named pipe: [`crate::endpoint`]) whose every connection
//! is piped to guest vsock port 2375. A byte pipe, never parsing HTTP, so
//! hijacked attach/exec streams and half-closes pass through untouched.

use std::sync::Arc;

use vmctl_proto::VSOCK_PORT_API;

use super::pipe;
use crate::endpoint::LocalListener;
use crate::vsock::VsockTransport;

/// Serves `listener` until the task is dropped.
pub async fn serve(mut listener: Box<dyn LocalListener>, transport: Arc<dyn VsockTransport>) {
    loop {
        let client = match listener.accept().await {
            Ok(client) => client,
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
