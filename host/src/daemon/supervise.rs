//! The daemon's keeper (`vmctl machine supervise NAME`, what `start` spawns):
//! runs `vmctl machine daemon NAME` as its child and starts it again when it
//! is killed (a signal, not an exit) while the VM it owned still runs. The
//! new daemon adopts the VM and re-lists the published ports, so the docker
//! socket and every desktop listener come back by themselves. Any exit of
//! the daemon — a stop, the VM ending, a failed start — ends the keeper
//! with the same code.

use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::machine::{status, Machine, Roots};

/// More restarts than this within [`WINDOW`] means the daemon cannot live:
/// the keeper gives up instead of looping.
const MAX_RESTARTS: usize = 5;
const WINDOW: Duration = Duration::from_secs(60);

/// Runs and keeps the daemon of `name`; answers its last exit code.
pub fn run(roots: &Roots, name: &str) -> std::io::Result<i32> {
    let machine = Machine::load(roots, name).map_err(std::io::Error::other)?;
    let exe = std::env::current_exe()?;
    let mut restarts: Vec<Instant> = Vec::new();
    loop {
        let status = Command::new(&exe)
            .args(["machine", "daemon", name])
            .stdin(Stdio::null())
            .status()?;
        let Some(signal) = killed_by(status) else {
            return Ok(status.code().unwrap_or(1));
        };
        let vm = status::liveness(&machine.paths).vmm;
        restarts.retain(|at| at.elapsed() < WINDOW);
        if vm.is_none() || restarts.len() >= MAX_RESTARTS {
            tracing::warn!(vm = %name, signal, restarts = restarts.len(), "daemon killed; not restarting it");
            return Ok(128 + signal);
        }
        restarts.push(Instant::now());
        tracing::warn!(vm = %name, signal, "daemon killed while its VM runs: starting it again");
    }
}

/// The signal that ended a process, if one did (never, on Windows).
fn killed_by(status: ExitStatus) -> Option<i32> {
    crate::process::killed_by_signal(status)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_signal_is_told_from_an_exit() {
        let killed = Command::new("sh")
            .args(["-c", "kill -9 $$"])
            .status()
            .unwrap();
        assert_eq!(killed_by(killed), Some(9));
        let exited = Command::new("sh").args(["-c", "exit 3"]).status().unwrap();
        assert_eq!(killed_by(exited), None);
    }
}
