//! Linux: processes watched through a pidfd (`pidfd_open`), which wakes at
//! the exit and signals without ever hitting a recycled pid; `/proc` says
//! whether a pid lives (zombies do not) and what its command line is.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::unix::AsyncFd;

/// A pidfd of one process, registered with the async runtime on the first
/// wait (a process can be adopted before any runtime runs).
#[derive(Debug)]
pub(super) struct Watch {
    pidfd: OwnedFd,
    registered: OnceLock<Option<AsyncFd<OwnedFd>>>,
}

impl Watch {
    pub(super) fn open(pid: u32) -> std::io::Result<Self> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the syscall just returned this fd; nobody else owns it.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(Self {
            pidfd,
            registered: OnceLock::new(),
        })
    }

    pub(super) fn alive(&self, pid: u32) -> bool {
        alive(pid)
    }

    /// Returns when the pidfd turns readable (the process may have exited)
    /// or after `within`. Registered once: the readiness is an edge, so a
    /// pidfd that stays readable while the process still looks alive waits
    /// out `within` instead of waking at once again.
    pub(super) async fn changed(&self, within: Duration) {
        let registered = self.registered.get_or_init(|| {
            let fd = self.pidfd.try_clone().ok()?;
            // SAFETY: the AsyncFd owns this duplicate fd until it is
            // dropped; nothing else closes or replaces it.
            unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.ok()
        });
        match registered {
            Some(fd) => {
                if let Ok(Ok(mut guard)) = tokio::time::timeout(within, fd.readable()).await {
                    guard.clear_ready();
                }
            }
            None => tokio::time::sleep(within.min(Duration::from_millis(200))).await,
        }
    }

    /// SIGTERM through the pidfd.
    pub(super) fn ask_to_stop(&self) -> bool {
        self.signal(libc::SIGTERM)
    }

    /// SIGKILL through the pidfd.
    pub(super) fn kill(&self) {
        self.signal(libc::SIGKILL);
    }

    fn signal(&self, signal: libc::c_int) -> bool {
        // SAFETY: pidfd_send_signal on our pidfd cannot hit a recycled pid.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            ) == 0
        }
    }
}

/// Whether `pid` names a live process (not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// The NUL-separated command line of `pid`.
pub(super) fn cmdline(pid: u32) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/cmdline")).ok()
}
