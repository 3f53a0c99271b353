//! The engine's side of the monitor protocol.

use std::path::Path;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use super::protocol::{ExitInfo, Reply, Request};

/// Errors of talking to a monitor.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the container's monitor at {}", path.display())]
    Connect {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the container's monitor went away")]
    Io(#[from] std::io::Error),
    #[error("the container's monitor sent a bad answer")]
    Format(#[from] serde_json::Error),
    #[error("{0}")]
    Refused(String),
}

/// An open connection after the first answer.
pub struct Session {
    pub reply: Reply,
    pub reader: BufReader<OwnedReadHalf>,
    pub writer: OwnedWriteHalf,
}

/// Sends `request` and reads the first answer; a refusal is an error.
pub async fn open(socket: &Path, request: &Request) -> Result<Session, ClientError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ClientError::Connect {
            path: socket.to_owned(),
            source,
        })?;
    let (read, mut writer) = stream.into_split();
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    writer.write_all(&line).await?;
    let mut reader = BufReader::new(read);
    let mut answer = String::new();
    if reader.read_line(&mut answer).await? == 0 {
        return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    let reply: Reply = serde_json::from_str(&answer)?;
    if !reply.ok {
        return Err(ClientError::Refused(reply.error));
    }
    Ok(Session {
        reply,
        reader,
        writer,
    })
}

/// A request with a one-line answer.
pub async fn call(socket: &Path, request: &Request) -> Result<Reply, ClientError> {
    Ok(open(socket, request).await?.reply)
}

/// Waits for the end of the run; `None` when the monitor went away without
/// saying (the caller then reads `exit.json`).
pub async fn wait(socket: &Path) -> Result<Option<ExitInfo>, ClientError> {
    let mut session = open(socket, &Request::Wait).await?;
    let mut line = String::new();
    if session.reader.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    Ok(Some(serde_json::from_str(&line)?))
}
