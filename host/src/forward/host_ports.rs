//! The host-port service (host vsock port 1027, protocol in
//! `vmctl_proto::forward`): the guest engine reserves desktop ports here
//! before it starts a container, and releases those it did not use.

use std::sync::Arc;

use tokio::io::{AsyncWriteExt, BufReader};
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
    // A line longer than the cap is refused by dropping the connection.
    match vmctl_proto::line::read_line(&mut reader, &mut line).await {
        Ok(0) => return,
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "bad request on the host-port service: connection dropped");
            return;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    use super::super::gate::Gate;
    use super::super::policy::Settings;
    use super::super::test_utils::NoGuest;

    fn forwarder() -> Arc<Forwarder> {
        Forwarder::with_gate(
            Arc::new(NoGuest),
            Gate::fixed(Settings {
                allow_lan: true,
                bind_address: "127.0.0.1".parse().unwrap(),
                nic_subnet: Some("10.0.2.0/24".parse().unwrap()),
            }),
        )
    }

    /// Sends `request` to the service; its whole answer.
    async fn ask(forwarder: Arc<Forwarder>, request: &[u8]) -> String {
        let (mut guest, host) = tokio::io::duplex(1 << 20);
        let served = tokio::spawn(handle(Box::new(host), forwarder));
        guest.write_all(request).await.unwrap();
        let mut answer = String::new();
        guest.read_to_string(&mut answer).await.unwrap();
        served.await.unwrap();
        answer
    }

    #[tokio::test]
    async fn the_forged_request_of_the_issue_is_answered_with_a_refusal() {
        let port = std::net::TcpListener::bind("0.0.0.0:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let request = format!(
            r#"{{"op":"reserve","binding":{{"protocol":"tcp","host_ip":"0.0.0.0","host_port":{port},"container_ip":"10.0.2.2","container_port":18999,"container_id":"x","container_name":"x"}}}}"#
        );
        let forwarder = forwarder();
        let answer = ask(forwarder.clone(), format!("{request}\n").as_bytes()).await;
        let response: HostPortResponse = serde_json::from_str(answer.trim()).unwrap();
        assert!(!response.ok);
        assert!(
            response
                .error
                .unwrap()
                .contains("may not forward to 10.0.2.2:18999"),
            "{answer}"
        );
        assert!(forwarder.list().is_empty());
        assert!(
            std::net::TcpListener::bind(("0.0.0.0", port)).is_ok(),
            "nothing listens"
        );
    }

    #[tokio::test]
    async fn an_oversized_line_drops_the_connection_unanswered() {
        let mut request = br#"{"op":"reserve","binding":{"container_name":""#.to_vec();
        request.extend(std::iter::repeat_n(b'x', vmctl_proto::line::MAX_LINE));
        request.extend_from_slice(b"\"}}\n");
        let forwarder = forwarder();
        assert_eq!(
            ask(forwarder.clone(), &request).await,
            "",
            "no answer, no bind"
        );
        assert!(forwarder.list().is_empty());
    }
}
