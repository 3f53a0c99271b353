//! The host's side of the guest's control service (vsock port 1025,
//! protocol in `vmctl_proto::control`): one request per connection.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncWriteExt, BufReader};
use vmctl_proto::control::{ControlRequest, ControlResponse, Health};
use vmctl_proto::VSOCK_PORT_CONTROL;

use crate::vsock::{GuestStream, VsockError, VsockTransport};

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("connecting to the guest's control service")]
    Connect(#[source] VsockError),
    #[error("talking to the guest's control service")]
    Io(#[source] std::io::Error),
    #[error("the guest's control service sent a malformed answer")]
    Malformed(#[source] serde_json::Error),
    #[error("the guest refused {op}: {message}")]
    Refused { op: &'static str, message: String },
    #[error("the guest did not answer within {0:?}")]
    Timeout(Duration),
}

/// Sends `request` and reads the answer line; returns the stream too, for
/// requests (a shell) that continue as a byte stream.
pub async fn call(
    transport: &dyn VsockTransport,
    request: &ControlRequest,
) -> Result<(ControlResponse, BufReader<GuestStream>), GuestError> {
    let stream = transport
        .connect(VSOCK_PORT_CONTROL)
        .await
        .map_err(GuestError::Connect)?;
    call_on(stream, request).await
}

/// [`call`] on a stream already connected to the control port.
pub async fn call_on(
    mut stream: GuestStream,
    request: &ControlRequest,
) -> Result<(ControlResponse, BufReader<GuestStream>), GuestError> {
    let mut line = serde_json::to_vec(request).map_err(GuestError::Malformed)?;
    line.push(b'\n');
    stream.write_all(&line).await.map_err(GuestError::Io)?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    vmctl_proto::line::read_line(&mut reader, &mut answer)
        .await
        .map_err(GuestError::Io)?;
    if answer.is_empty() {
        return Err(GuestError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    let response: ControlResponse = serde_json::from_str(&answer).map_err(GuestError::Malformed)?;
    Ok((response, reader))
}

async fn simple(
    transport: &dyn VsockTransport,
    request: ControlRequest,
    op: &'static str,
) -> Result<ControlResponse, GuestError> {
    let (response, _) = tokio::time::timeout(Duration::from_secs(30), call(transport, &request))
        .await
        .map_err(|_| GuestError::Timeout(Duration::from_secs(30)))??;
    if response.ok {
        Ok(response)
    } else {
        Err(GuestError::Refused {
            op,
            message: response.error.unwrap_or_default(),
        })
    }
}

pub async fn health(transport: &dyn VsockTransport) -> Result<Health, GuestError> {
    let response = simple(transport, ControlRequest::Health, "health").await?;
    response.health.ok_or(GuestError::Refused {
        op: "health",
        message: "no health in the answer".into(),
    })
}

/// Health over a stream already connected to the control port.
pub async fn health_on(stream: GuestStream) -> Result<Health, GuestError> {
    let limit = Duration::from_secs(10);
    let (response, _) = tokio::time::timeout(limit, call_on(stream, &ControlRequest::Health))
        .await
        .map_err(|_| GuestError::Timeout(limit))??;
    response.health.ok_or(GuestError::Refused {
        op: "health",
        message: response
            .error
            .unwrap_or_else(|| "no health in the answer".into()),
    })
}

/// Sets the guest's clock to the host's.
pub async fn sync_time(transport: &dyn VsockTransport) -> Result<(), GuestError> {
    let unix_nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    simple(
        transport,
        ControlRequest::SetTime { unix_nanos },
        "set_time",
    )
    .await
    .map(drop)
}

/// Asks the guest to stop its containers, flush its disk and power off.
pub async fn shutdown(transport: &dyn VsockTransport) -> Result<(), GuestError> {
    simple(transport, ControlRequest::Shutdown, "shutdown")
        .await
        .map(drop)
}

/// The kernel command-line value of the host's clock now.
pub fn cmdline_time() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
}
