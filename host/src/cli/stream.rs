//! Carrying a container's streams to this terminal: output frames to stdout
//! and stderr, stdin to the container, raw mode and size for `-t`.

use std::io::{IsTerminal, Write};
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

/// The terminal's size (rows, columns), when stdout is one.
pub fn terminal_size() -> Option<(u16, u16)> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the winsize we pass.
    let ok = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut size) } == 0;
    ok.then_some((size.ws_row, size.ws_col))
}

/// The local terminal in raw mode while a `-t` stream runs.
pub struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    /// Raw mode when stdin is a terminal; `None` otherwise.
    pub fn enter() -> Option<Self> {
        use nix::sys::termios;
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let saved = termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &raw).ok()?;
        Some(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.saved,
        );
    }
}
