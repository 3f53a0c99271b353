//! The daemon's lock file (`daemon.lock`): held exclusively by the daemon
//! for its whole life, and probed by the CLI without disturbing it. The
//! kernel drops the lock with the last descriptor, so a killed daemon never
//! leaves it held. Unix: `flock(2)`; Windows: `LockFileEx` on the first byte.

use std::fs::File;
use std::path::Path;

/// An exclusive lock, held until dropped.
#[derive(Debug)]
pub struct Held {
    _file: File,
}

/// Takes the lock on `path` (created when missing); `Ok(None)` when another
/// process holds it.
pub fn try_exclusive(path: &Path) -> std::io::Result<Option<Held>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    Ok(sys::try_lock(&file, true).then_some(Held { _file: file }))
}

/// Whether some process holds the lock on `path`.
pub fn is_held(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    // A shared lock is refused only while an exclusive one is held; it
    // goes with `file` at once.
    !sys::try_lock(&file, false)
}

#[cfg(unix)]
mod sys {
    use std::os::fd::AsRawFd;

    pub(super) fn try_lock(file: &std::fs::File, exclusive: bool) -> bool {
        let kind = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        // SAFETY: flock on an fd we own; LOCK_NB never blocks.
        unsafe { libc::flock(file.as_raw_fd(), kind | libc::LOCK_NB) == 0 }
    }
}

#[cfg(windows)]
mod sys {
    use std::os::windows::io::AsRawHandle;

    use windows_sys::Win32::Storage::FileSystem::{
        LockFileEx, LOCKFILE_EXCLUSIVE_LOCK, LOCKFILE_FAIL_IMMEDIATELY,
    };
    use windows_sys::Win32::System::IO::OVERLAPPED;

    pub(super) fn try_lock(file: &std::fs::File, exclusive: bool) -> bool {
        let mut flags = LOCKFILE_FAIL_IMMEDIATELY;
        if exclusive {
            flags |= LOCKFILE_EXCLUSIVE_LOCK;
        }
        // SAFETY: an all-zero OVERLAPPED is the documented way to lock from
        // offset 0 on a handle opened for synchronous I/O.
        let mut overlapped: OVERLAPPED = unsafe { std::mem::zeroed() };
        // SAFETY: a valid file handle we own; FAIL_IMMEDIATELY never blocks;
        // `overlapped` outlives the call.
        unsafe { LockFileEx(file.as_raw_handle(), flags, 0, 1, 0, &mut overlapped) != 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_seen_and_refused_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.lock");
        assert!(!is_held(&path), "no file, no holder");
        let held = try_exclusive(&path).unwrap().expect("free");
        assert!(is_held(&path));
        assert!(try_exclusive(&path).unwrap().is_none(), "a second holder");
        drop(held);
        assert!(!is_held(&path));
        assert!(try_exclusive(&path).unwrap().is_some());
    }
}
