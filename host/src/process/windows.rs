//! Windows: processes held by a handle (`OpenProcess`), which stays valid
//! after the exit so a recycled pid is never mistaken for ours; stopped with
//! `TerminateProcess` (Windows has no polite stop a console-less process
//! must obey). Windows has no signals, sessions or zombies: a detached
//! process group stands in for a session, and reaping is the handle's close.
//!
//! Another process's command line is not readable without its memory, so
//! no process is adopted here (`cmdline` answers `None`): a restarted daemon
//! boots a fresh VM. The Hyper-V backend decides how its VMs are found again.

use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::os::windows::process::CommandExt;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use windows_sys::Win32::Foundation::{STILL_ACTIVE, WAIT_OBJECT_0};
use windows_sys::Win32::System::Threading::{
    GetExitCodeProcess, OpenProcess, TerminateProcess, WaitForSingleObject,
    CREATE_NEW_PROCESS_GROUP, DETACHED_PROCESS, PROCESS_QUERY_LIMITED_INFORMATION,
    PROCESS_SYNCHRONIZE, PROCESS_TERMINATE,
};

/// A handle to one process.
#[derive(Debug)]
pub(super) struct Watch(OwnedHandle);

impl Watch {
    pub(super) fn open(pid: u32) -> std::io::Result<Self> {
        open(
            pid,
            PROCESS_SYNCHRONIZE | PROCESS_TERMINATE | PROCESS_QUERY_LIMITED_INFORMATION,
        )
        .map(Self)
    }

    /// Whether the process still runs (the handle, not the pid, decides).
    pub(super) fn alive(&self, _pid: u32) -> bool {
        // SAFETY: a valid process handle we own; a zero timeout never blocks.
        unsafe { WaitForSingleObject(self.0.as_raw_handle(), 0) != WAIT_OBJECT_0 }
    }

    /// A short poll (waiting on the handle would hold a blocking thread).
    pub(super) async fn changed(&self, within: Duration) {
        tokio::time::sleep(within.min(Duration::from_millis(100))).await;
    }

    /// There is no polite request to make: the caller stops it at once.
    pub(super) fn ask_to_stop(&self) -> bool {
        false
    }

    pub(super) fn kill(&self) {
        // SAFETY: a valid process handle with PROCESS_TERMINATE.
        unsafe { TerminateProcess(self.0.as_raw_handle(), 1) };
    }
}

fn open(pid: u32, access: u32) -> std::io::Result<OwnedHandle> {
    // SAFETY: OpenProcess takes plain values and returns a new handle or null.
    let handle = unsafe { OpenProcess(access, 0, pid) };
    if handle.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: OpenProcess just returned this handle; nobody else owns it.
    Ok(unsafe { OwnedHandle::from_raw_handle(handle) })
}

/// Whether `pid` names a running process.
pub fn alive(pid: u32) -> bool {
    let Ok(handle) = open(pid, PROCESS_QUERY_LIMITED_INFORMATION) else {
        return false;
    };
    let mut code = 0u32;
    // SAFETY: a valid handle with query access; `code` is ours to fill.
    let ok = unsafe { GetExitCodeProcess(handle.as_raw_handle(), &mut code) } != 0;
    ok && code == STILL_ACTIVE as u32
}

/// Not readable from outside the process: nothing is adopted (see above).
pub(super) fn cmdline(_pid: u32) -> Option<Vec<u8>> {
    None
}

/// A process group of its own, with no console: Ctrl-C in the user's
/// console never reaches it.
pub(super) fn own_group(command: &mut Command) {
    command.creation_flags(CREATE_NEW_PROCESS_GROUP | DETACHED_PROCESS);
}

/// The same as [`own_group`]: Windows has no sessions to leave.
pub fn new_session(command: &mut Command) {
    own_group(command);
}

/// Nothing to collect: a process's status goes with its last handle.
pub(super) fn reap(_pid: u32) {}

/// Windows has no signals: a killed process ends with an exit code.
pub fn killed_by_signal(_status: ExitStatus) -> Option<i32> {
    None
}
