//! Runs the `nft` binary once: arguments, an optional payload on stdin, and
//! stdout back as text. stderr is captured into the error, never printed
//! (the `nftables` crate's own helper leaves stderr attached to ours).

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use tokio::io::AsyncWriteExt;

/// Why one run of `nft` failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start {}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the ruleset to {}", program.display())]
    Stdin {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot wait for {}", program.display())]
    Wait {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `nft` ran and refused: `stderr` holds its diagnostics.
    #[error("{} exited with {status}: {stderr}", program.display())]
    Failed {
        program: PathBuf,
        status: ExitStatus,
        stderr: String,
    },
    #[error("{} wrote output that is not UTF-8", program.display())]
    Output {
        program: PathBuf,
        #[source]
        source: std::string::FromUtf8Error,
    },
}

/// Runs `program args…`, feeds `stdin` (if any) and returns its stdout.
///
/// The payload is written while the process is awaited, so an `nft` that
/// exits early reports its own error rather than a broken pipe.
pub(super) async fn nft(
    program: &Path,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> Result<String, RunError> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| RunError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    let pipe = child.stdin.take();
    let write = async move {
        match (pipe, stdin) {
            (Some(mut pipe), Some(payload)) => {
                pipe.write_all(payload).await?;
                pipe.shutdown().await
            }
            _ => Ok(()),
        }
    };
    let (written, output) = tokio::join!(write, child.wait_with_output());
    let output = output.map_err(|source| RunError::Wait {
        program: program.to_owned(),
        source,
    })?;
    if !output.status.success() {
        return Err(RunError::Failed {
            program: program.to_owned(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    written.map_err(|source| RunError::Stdin {
        program: program.to_owned(),
        source,
    })?;
    String::from_utf8(output.stdout).map_err(|source| RunError::Output {
        program: program.to_owned(),
        source,
    })
}
