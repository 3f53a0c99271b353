//! Carrying a container's streams to this terminal: output frames to stdout
//! and stderr, stdin to the container (raw mode and size for `-t`:
//! [`super::terminal`]).

use std::io::Write;
use std::pin::Pin;

use bollard::container::LogOutput;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::error::CliError;

/// Writes every frame to stdout or stderr until the stream ends.
pub async fn copy_output(
    mut output: Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>,
) -> Result<(), CliError> {
    let io = |source| CliError::Io {
        what: "writing the container's output".into(),
        source,
    };
    while let Some(frame) = output.next().await {
        match frame? {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                let mut out = std::io::stdout().lock();
                out.write_all(&message).map_err(io)?;
                out.flush().map_err(io)?;
            }
            LogOutput::StdErr { message } => {
                let mut err = std::io::stderr().lock();
                err.write_all(&message).map_err(io)?;
                err.flush().map_err(io)?;
            }
            LogOutput::StdIn { .. } => {}
        }
    }
    Ok(())
}

/// Copies this process's stdin to the container, then half-closes.
pub fn feed_stdin(mut input: Pin<Box<dyn AsyncWrite + Send>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let _ = tokio::io::copy(&mut stdin, &mut input).await;
        let _ = input.shutdown().await;
    })
}
