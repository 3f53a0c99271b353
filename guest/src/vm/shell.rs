//! Shells in the VM for `vmctl machine ssh`: a command (default a login
//! shell) on a pseudo-terminal when the host has one, on pipes otherwise
//! (stdout and stderr merged), its bytes carried on the control connection.
//! The host closing its side hangs the shell up (SIGHUP).

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use vmctl_proto::control::ControlResponse;

use super::control::answer;

pub struct ShellRequest {
    pub command: Vec<String>,
    pub tty: bool,
    pub rows: u16,
    pub cols: u16,
    pub term: Option<String>,
}

impl ShellRequest {
    fn command(&self) -> std::process::Command {
        let argv: Vec<String> = if self.command.is_empty() {
            vec!["/bin/sh".into(), "-l".into()]
        } else {
            self.command.clone()
        };
        let mut command = std::process::Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .current_dir("/root")
            .env("HOME", "/root")
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("TERM", self.term.as_deref().unwrap_or("xterm"));
        command
    }
}

/// Runs the shell and carries its bytes until it exits or the host leaves.
pub async fn run<S>(reader: BufReader<S>, request: ShellRequest)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let started = if request.tty {
        spawn_tty(&request)
    } else {
        spawn_pipes(&request)
    };
    let mut stream = reader.into_inner();
    let (child, input, output) = match started {
        Ok(started) => started,
        Err(e) => {
            let _ = answer(
                &mut stream,
                ControlResponse::error(format!("cannot start the shell: {e}")),
            )
            .await;
            return;
        }
    };
    if answer(&mut stream, ControlResponse::ok()).await.is_err() {
        hang_up(&child);
        return;
    }
    let (mut from_host, mut to_host) = tokio::io::split(stream);
    let mut input = tokio::fs::File::from_std(std::fs::File::from(input));
    let mut output = tokio::fs::File::from_std(std::fs::File::from(output));
    let feed = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_host, &mut input).await;
    });
    // Ends when the shell's side closes (pty: EIO once it exits).
    let _ = tokio::io::copy(&mut output, &mut to_host).await;
    let _ = to_host.shutdown().await;
    if !feed.is_finished() {
        feed.abort();
    }
    hang_up(&child);
    let mut child = child;
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
}

fn hang_up(child: &std::process::Child) {
    // SAFETY: kill of the shell's process group (it is a session leader).
    unsafe { libc::kill(-(child.id() as i32), libc::SIGHUP) };
}

type Started = (std::process::Child, OwnedFd, OwnedFd);

fn spawn_tty(request: &ShellRequest) -> std::io::Result<Started> {
    let size = nix::pty::Winsize {
        ws_row: if request.rows == 0 { 24 } else { request.rows },
        ws_col: if request.cols == 0 { 80 } else { request.cols },
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).map_err(std::io::Error::from)?;
    let slave = pty.slave;
    let mut command = request.command();
    command
        .stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave.try_clone()?));
    // SAFETY: setsid and ioctl are async-signal-safe; fd 0 is the pty slave here.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    drop(slave);
    let output = pty.master.try_clone()?;
    Ok((child, pty.master, output))
}

fn spawn_pipes(request: &ShellRequest) -> std::io::Result<Started> {
    let (stdin_read, stdin_write) = nix::unistd::pipe().map_err(std::io::Error::from)?;
    let (out_read, out_write) = nix::unistd::pipe().map_err(std::io::Error::from)?;
    for fd in [&stdin_write, &out_read] {
        // SAFETY: F_SETFD on fds we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    let mut command = request.command();
    command
        .stdin(Stdio::from(stdin_read))
        .stdout(Stdio::from(out_write.try_clone()?))
        .stderr(Stdio::from(out_write));
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = command.spawn()?;
    Ok((child, stdin_write, out_read))
}
