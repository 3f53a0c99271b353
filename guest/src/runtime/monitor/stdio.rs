//! The stdio of a container process: pipes, or a pseudo-terminal whose master
//! side libcontainer hands back over a console socket.

use std::io::IoSliceMut;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

/// What the monitor keeps of a process's stdio.
pub enum Stdio {
    Pipes {
        /// Write end of the process's stdin, when stdin is open.
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    Tty {
        master: OwnedFd,
    },
}

/// What the process gets, before it is created.
pub enum ChildStdio {
    Pipes {
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
        /// The monitor's ends.
        keep: Stdio,
    },
    Console {
        listener: UnixListener,
        path: PathBuf,
    },
}

/// The monitor's side of stdio once the builder has the process's side:
/// ready, or a pty master still to be received on the console socket.
pub enum Pending {
    Ready(Stdio),
    Console(UnixListener),
}

impl ChildStdio {
    /// Gives the process's side to libcontainer's builder.
    pub fn apply(self, builder: ContainerBuilder) -> (ContainerBuilder, Pending) {
        match self {
            ChildStdio::Pipes {
                stdin,
                stdout,
                stderr,
                keep,
            } => (
                builder
                    .with_stdin(stdin)
                    .with_stdout(stdout)
                    .with_stderr(stderr),
                Pending::Ready(keep),
            ),
            ChildStdio::Console { listener, path } => (
                builder.with_console_socket(Some(&path)),
                Pending::Console(listener),
            ),
        }
    }
}

impl Pending {
    /// The monitor's stdio, once the process was created.
    pub fn finish(self) -> Result<Stdio, StdioError> {
        match self {
            Pending::Ready(stdio) => Ok(stdio),
            Pending::Console(listener) => Ok(Stdio::Tty {
                master: receive_master(&listener)?,
            }),
        }
    }
}

/// Errors of setting stdio up.
#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    #[error("cannot create a pipe")]
    Pipe(#[source] nix::Error),
    #[error("cannot open /dev/null")]
    DevNull(#[source] std::io::Error),
    #[error("cannot listen on console socket {}", path.display())]
    ConsoleSocket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no terminal was received on the console socket")]
    NoTerminal(#[source] std::io::Error),
}

/// Prepares stdio: a console socket at `console` for a tty, pipes otherwise.
pub fn prepare(tty: bool, open_stdin: bool, console: &Path) -> Result<ChildStdio, StdioError> {
    if tty {
        let _ = std::fs::remove_file(console);
        let listener = UnixListener::bind(console).map_err(|source| StdioError::ConsoleSocket {
            path: console.to_owned(),
            source,
        })?;
        return Ok(ChildStdio::Console {
            listener,
            path: console.to_owned(),
        });
    }
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(StdioError::Pipe);
    let (stdin_child, stdin_keep) = if open_stdin {
        let (r, w) = pipe()?;
        (r, Some(w))
    } else {
        let null = std::fs::File::open("/dev/null").map_err(StdioError::DevNull)?;
        (OwnedFd::from(null), None)
    };
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    Ok(ChildStdio::Pipes {
        stdin: stdin_child,
        stdout: out_w,
        stderr: err_w,
        keep: Stdio::Pipes {
            stdin: stdin_keep,
            stdout: out_r,
            stderr: err_r,
        },
    })
}

/// Takes the pty master sent by libcontainer on the console socket.
pub fn receive_master(listener: &UnixListener) -> Result<OwnedFd, StdioError> {
    use std::os::fd::AsRawFd;
    let (stream, _) = listener.accept().map_err(StdioError::NoTerminal)?;
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| StdioError::NoTerminal(e.into()))?;
    for message in msg.cmsgs().map_err(|e| StdioError::NoTerminal(e.into()))? {
        if let ControlMessageOwned::ScmRights(fds) = message {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this fd in our table for us
                // (SCM_RIGHTS); nothing else owns it.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(StdioError::NoTerminal(std::io::Error::other(
        "message carried no fd",
    )))
}

/// Sets the window size of a terminal.
pub fn resize(master: i32, height: u16, width: u16) -> std::io::Result<()> {
    let size = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which lives for the call.
    let rc = unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &size) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
