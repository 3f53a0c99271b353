//! What every unix shares for owned processes: process groups and sessions,
//! reaping our own children, and telling a signal from an exit.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus};

/// Starts `command` in a process group of its own: a terminal's Ctrl-C
/// (sent to the foreground group) never reaches it.
pub(super) fn own_group(command: &mut Command) {
    command.process_group(0);
}

/// Starts `command` in a session of its own (`setsid`): no controlling
/// terminal, so closing the terminal never reaches it either.
pub fn new_session(command: &mut Command) {
    // SAFETY: setsid is async-signal-safe and touches no memory of ours.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
}

/// Collects the exit status of `pid` if it is our exited child (ECHILD for
/// adopted ones is fine).
pub(super) fn reap(pid: u32) {
    let mut status = 0;
    // SAFETY: waitpid on a specific pid with WNOHANG never blocks.
    unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
}

/// The signal that ended a process, if one did.
pub fn killed_by_signal(status: ExitStatus) -> Option<i32> {
    status.signal()
}
