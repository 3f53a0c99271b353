//! Processes the daemon owns (the VMM, the vsock backend): started detached
//! from the terminal so a Ctrl-C or the CLI's exit never reaches them,
//! recorded in a pid file so a restarted daemon can adopt them, and watched
//! in a way that works for an adopted process too, where `waitpid` cannot.
//!
//! The portable part is here; how a process is watched and stopped is one
//! file per mechanism:
//! - [`pidfd`] (Linux): a pidfd, woken at the exit, signalled without a
//!   recycled-pid race; `/proc` for liveness and command lines;
//! - [`kill`] (other unix: macOS): `kill(2)` by pid, liveness polled with
//!   signal 0, command lines from `ps`;
//! - [`windows`]: a process handle (`OpenProcess`), `TerminateProcess`.
//!
//! [`unix`] holds what every unix shares (sessions, reaping, signals).

// Also built for Linux's tests: the macOS mechanism runs there too.
#[cfg(any(all(unix, not(target_os = "linux")), all(test, target_os = "linux")))]
mod kill;
#[cfg(target_os = "linux")]
mod pidfd;
#[cfg(unix)]
mod unix;
#[cfg(windows)]
mod windows;

#[cfg(all(unix, not(target_os = "linux")))]
use kill as watch;
#[cfg(target_os = "linux")]
use pidfd as watch;
#[cfg(windows)]
use windows as watch;

#[cfg(unix)]
use unix as session;
#[cfg(windows)]
use windows as session;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub use session::{killed_by_signal, new_session};
pub use watch::alive;

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
    watch: watch::Watch,
    pid_file: PathBuf,
}

impl Owned {
    /// Starts `command` detached (its own process group), stdin from
    /// /dev/null, stdout and stderr appended to `log`, and records its pid
    /// in `pid_file`.
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
            .stderr(open_log()?);
        session::own_group(&mut command);
        let child = command
            .spawn()
            .map_err(|source| ProcessError::Spawn { program, source })?;
        // The Child is dropped without waiting: the watch follows it, and
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
        let watch =
            watch::Watch::open(pid).map_err(|source| ProcessError::Watch { pid, source })?;
        Ok(Self {
            pid,
            watch,
            pid_file: pid_file.to_owned(),
        })
    }

    /// Whether the process has exited (it is reaped if it was our child).
    /// The platform's liveness check is the authority: a pidfd's readiness
    /// alone has been seen to fire for a live QEMU under load.
    pub fn has_exited(&self) -> bool {
        session::reap(self.pid);
        !self.watch.alive(self.pid)
    }

    /// Waits until the process exits: woken by the watch where the
    /// platform can, confirmed by [`Self::has_exited`], and re-checked
    /// twice a second in any case.
    pub async fn exited(&self) {
        loop {
            if self.has_exited() {
                return;
            }
            self.watch.changed(Duration::from_millis(500)).await;
        }
    }

    /// Asks the process to stop (SIGTERM), then stops it (SIGKILL) after
    /// `grace`; waits for the exit and removes the pid file. Where the
    /// platform has no polite request (Windows), it is stopped at once.
    pub async fn terminate(&self, grace: Duration) {
        if !self.has_exited() {
            let asked = self.watch.ask_to_stop();
            if !asked || tokio::time::timeout(grace, self.exited()).await.is_err() {
                self.watch.kill();
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
/// `marker` (so a recycled pid is never mistaken for ours). Where the
/// platform cannot read another process's command line, none is found.
pub fn find_recorded(pid_file: &Path, marker: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = watch::cmdline(pid)?;
    let ours = mentions(&cmdline, marker.as_os_str().as_encoded_bytes());
    (ours && alive(pid)).then_some(pid)
}

fn mentions(cmdline: &[u8], marker: &[u8]) -> bool {
    !marker.is_empty() && cmdline.windows(marker.len()).any(|w| w == marker)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_must_appear_in_the_command_line() {
        let cmdline = b"qemu-system-x86_64\0-qmp\0unix:/run/vmctl/default/qmp.sock,server=on\0";
        assert!(mentions(cmdline, b"/run/vmctl/default/qmp.sock"));
        assert!(!mentions(cmdline, b"/run/vmctl/other/qmp.sock"));
        assert!(!mentions(cmdline, b""));
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_spawned_process_is_found_watched_and_terminated() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("marker-argument");
        let pid_file = dir.path().join("sleep.pid");
        // A shell that sleeps with the marker in its argv, as QEMU has its
        // control socket's path.
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg("trap 'kill $!; exit' TERM; sleep 30 & wait")
            .arg(&marker);
        let owned = Owned::spawn(command, &dir.path().join("log"), &pid_file).unwrap();
        assert!(!owned.has_exited());
        // Until the child has exec'd, its command line is still ours.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while find_recorded(&pid_file, &marker).is_none() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(find_recorded(&pid_file, &marker), Some(owned.pid));
        assert_eq!(find_recorded(&pid_file, &dir.path().join("other")), None);
        owned.terminate(Duration::from_secs(5)).await;
        assert!(owned.has_exited());
        assert!(!pid_file.exists());
        assert!(!alive(owned.pid));
    }
}
