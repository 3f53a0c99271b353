//! The daemon's own endpoint (`daemon.sock`, mode 0600, or the owner-only
//! pipe `vmctl-NAME-daemon` on Windows: [`crate::endpoint`]): how the CLI
//! asks a running daemon things. One JSON request line per connection, one JSON
//! answer line. After a `connect` answered `ok`, the connection is a byte
//! pipe to the named guest vsock port — the CLI never needs to know which
//! vsock transport the VM has (on macOS only the daemon's process can reach
//! the guest's vsock at all).

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::endpoint::{self, Endpoint, EndpointError, LocalStream};
use crate::forward::ports::ForwardInfo;
use crate::machine::port_rules::PortRule;
use crate::machine::status::VmStatus;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum DaemonRequest {
    /// The VM's status.
    Status,
    /// Stop the VM; answered once it is down.
    Stop,
    /// Pipe this connection to guest vsock `port`.
    Connect { port: u32 },
    /// Add a manual port rule: listening at once, then saved.
    PortAdd { rule: PortRule },
    /// Remove manual port rules by name or host port.
    PortRm { target: String },
    /// Every forward, rules and published ports.
    PortLs,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DaemonResponse {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<VmStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<ForwardInfo>>,
    /// The rules a `port_rm` removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<Vec<PortRule>>,
}

impl DaemonResponse {
    pub fn ok() -> Self {
        Self {
            ok: true,
            ..Self::default()
        }
    }
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            error: Some(message.into()),
            ..Self::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the vmctl daemon is not answering on {endpoint}")]
    Unreachable {
        endpoint: Endpoint,
        #[source]
        source: std::io::Error,
    },
    #[error("the vmctl daemon is not answering")]
    Connect(#[source] EndpointError),
    #[error("the vmctl daemon sent a malformed answer")]
    Malformed(#[source] serde_json::Error),
    #[error("{0}")]
    Refused(String),
}

/// Sends `request`; answers the reply and the stream (for `connect`).
pub async fn request(
    daemon: &Endpoint,
    request: &DaemonRequest,
) -> Result<(DaemonResponse, BufReader<LocalStream>), ClientError> {
    let io = |source| ClientError::Unreachable {
        endpoint: daemon.clone(),
        source,
    };
    let mut stream = endpoint::connect(daemon)
        .await
        .map_err(ClientError::Connect)?;
    let mut line = serde_json::to_vec(request).map_err(ClientError::Malformed)?;
    line.push(b'\n');
    stream.write_all(&line).await.map_err(io)?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    reader.read_line(&mut answer).await.map_err(io)?;
    if answer.is_empty() {
        return Err(io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    let response: DaemonResponse = serde_json::from_str(&answer).map_err(ClientError::Malformed)?;
    if !response.ok {
        return Err(ClientError::Refused(response.error.unwrap_or_default()));
    }
    Ok((response, reader))
}
