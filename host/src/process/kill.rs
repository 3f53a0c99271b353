//! Unix without pidfds (macOS): processes named by pid, signalled with
//! `kill(2)`, their liveness polled with signal 0 (an exited child of ours
//! is reaped first, so it is not taken for alive), their command line read
//! with `ps`. A pid could be recycled between two looks; the command-line
//! check of `find_recorded` is what keeps a stranger from being adopted.

use std::time::Duration;

/// A process by pid.
#[derive(Debug)]
pub(super) struct Watch(u32);

impl Watch {
    pub(super) fn open(pid: u32) -> std::io::Result<Self> {
        if alive(pid) {
            Ok(Self(pid))
        } else {
            Err(std::io::Error::from_raw_os_error(libc::ESRCH))
        }
    }

    pub(super) fn alive(&self, pid: u32) -> bool {
        alive(pid)
    }

    /// Nothing wakes us at the exit: a short poll.
    pub(super) async fn changed(&self, within: Duration) {
        tokio::time::sleep(within.min(Duration::from_millis(100))).await;
    }

    pub(super) fn ask_to_stop(&self) -> bool {
        send(self.0, libc::SIGTERM)
    }

    pub(super) fn kill(&self) {
        send(self.0, libc::SIGKILL);
    }
}

/// Whether `pid` names a live process: signal 0 reaches it, or it exists
/// but belongs to someone else (EPERM).
pub fn alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: signal 0 only checks that the pid exists; nothing is sent.
    let found = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0;
    found || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The command line of `pid` as `ps` prints it (arguments joined by spaces).
pub(super) fn cmdline(pid: u32) -> Option<Vec<u8>> {
    let output = std::process::Command::new("ps")
        .args(["-o", "command=", "-p", &pid.to_string()])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    (output.status.success() && !output.stdout.is_empty()).then_some(output.stdout)
}

/// Sends `signal` to `pid`.
fn send(pid: u32, signal: libc::c_int) -> bool {
    // SAFETY: kill takes a pid and a signal number; it touches no memory.
    unsafe { libc::kill(pid as libc::pid_t, signal) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_child_is_seen_alive_stopped_and_killed_by_pid() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let watch = Watch::open(pid).unwrap();
        assert!(watch.alive(pid));
        // Until the child has exec'd, its command line is still ours.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut line = String::new();
        while !line.contains("sleep 30") && std::time::Instant::now() < deadline {
            line = String::from_utf8(cmdline(pid).unwrap()).unwrap();
        }
        assert!(line.contains("sleep 30"), "{line}");
        watch.changed(Duration::from_millis(1)).await;
        assert!(watch.ask_to_stop());
        // Until it is reaped, an exited child is a zombie, which signal 0 still reaches.
        assert!(child.wait().is_ok());
        assert!(!alive(pid));
        assert!(cmdline(pid).is_none());
        assert!(Watch::open(pid).is_err());

        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        Watch::open(child.id()).unwrap().kill();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    }
}
