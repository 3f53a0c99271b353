//! Processes the daemon owns (the VMM, the vsock backend): started in a
//! session of their own so a terminal's Ctrl-C or the CLI's exit never
//! reaches them, recorded in a pid file so a restarted daemon can adopt them,
//! and watched through a pidfd — which works for an adopted process too, where
//! `waitpid` cannot.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start {program}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open {path}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write pid file {path}")]
    PidFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot watch process {pid}")]
    Watch {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
}

/// A process the daemon started or adopted.
#[derive(Debug)]
pub struct Owned {
    pub pid: u32,
    pidfd: OwnedFd,
    pid_file: PathBuf,
}

impl Owned {
    /// Starts `command` in a new session, stdin from /dev/null, stdout and
    /// stderr appended to `log`, and records its pid in `pid_file`.
    pub fn spawn(mut command: Command, log: &Path, pid_file: &Path) -> Result<Self, ProcessError> {
        let program = PathBuf::from(command.get_program());
        let open_log = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|source| ProcessError::Log {
                    path: log.to_owned(),
                    source,
                })
        };
        command
            .stdin(Stdio::null())
            .stdout(open_log()?)
            .stderr(open_log()?)
            .process_group(0);
        let child = command
            .spawn()
            .map_err(|source| ProcessError::Spawn { program, source })?;
        // The Child is dropped without waiting: the pidfd watches it, and
        // `reap` collects its status.
        let pid = child.id();
        std::fs::write(pid_file, format!("{pid}\n")).map_err(|source| ProcessError::PidFile {
            path: pid_file.to_owned(),
            source,
        })?;
        Self::adopt(pid, pid_file)
    }

    /// Watches a process started by an earlier daemon.
    pub fn adopt(pid: u32, pid_file: &Path) -> Result<Self, ProcessError> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(ProcessError::Watch {
                pid,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Self {
            pid,
            // SAFETY: the syscall just returned this fd; nobody else owns it.
            pidfd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
            pid_file: pid_file.to_owned(),
        })
    }

    /// Whether the process has exited (it is reaped if it was our child).
    /// `/proc` is the authority: a pidfd's readiness alone has been seen
    /// to fire for a live QEMU under load.
    pub fn has_exited(&self) -> bool {
        self.reap();
        !crate::machine::status::pid_alive(self.pid)
    }

    /// Waits until the process exits: woken by the pidfd, confirmed by
    /// [`Self::has_exited`], and re-checked twice a second in any case.
    pub async fn exited(&self) {
        let registered = self.pidfd.try_clone().ok().and_then(|fd| {
            // SAFETY: the AsyncFd owns this duplicate fd until it is dropped;
            // nothing else closes or replaces it.
            unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
            }
            .ok()
        });
        loop {
            if self.has_exited() {
                return;
            }
            match &registered {
                Some(fd) => {
                    if let Ok(Ok(mut guard)) =
                        tokio::time::timeout(Duration::from_millis(500), fd.readable()).await
                    {
                        guard.clear_ready();
                    }
                }
                None => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    fn reap(&self) {
        let mut status = 0;
        // SAFETY: waitpid on a specific pid with WNOHANG; ECHILD for adopted ones is fine.
        unsafe { libc::waitpid(self.pid as libc::pid_t, &mut status, libc::WNOHANG) };
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: pidfd_send_signal on our pidfd cannot hit a recycled pid.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }

    /// SIGTERM, then SIGKILL after `grace`; waits for the exit and removes the pid file.
    pub async fn terminate(&self, grace: Duration) {
        if !self.has_exited() {
            self.signal(libc::SIGTERM);
            if tokio::time::timeout(grace, self.exited()).await.is_err() {
                self.signal(libc::SIGKILL);
                self.exited().await;
            }
        }
        let _ = std::fs::remove_file(&self.pid_file);
    }

    pub fn forget_pid_file(&self) {
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

/// The live process recorded in `pid_file` whose command line mentions
/// `marker` (so a recycled pid is never mistaken for ours).
pub fn find_recorded(pid_file: &Path, marker: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let marker = marker.as_os_str().as_encoded_bytes();
    let mentions = cmdline.windows(marker.len()).any(|w| w == marker);
    (mentions && crate::machine::status::pid_alive(pid)).then_some(pid)
}
