//! Reading a file out of a container's root filesystem, which the
//! container (and its image) wrote and the engine must not trust.
//!
//! The path is resolved as the container would see it, with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: a symlinked
//! `/etc/passwd` is followed inside the rootfs and can never lead out of it
//! (to the engine's `/proc/1/environ` or the VM's `/etc/shadow`). On kernels
//! without `openat2` (before 5.6) the path is resolved by hand, one symlink
//! at a time, kept inside the rootfs the same way.
//!
//! The file is first opened with `O_PATH`, which opens nothing: a FIFO, a
//! device node (`/dev/zero`, a watchdog) or a socket is refused on its
//! `fstat` before any driver sees an `open`. Only a regular file is then
//! reopened for reading (through `/proc/self/fd`, so it is the same inode),
//! with `O_NONBLOCK | O_NOCTTY`, and at most [`MAX_FILE`] bytes are read.
//! Callers that run on the async runtime still call this from
//! `spawn_blocking`: a regular file on a slow disk is bounded, not instant.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// The most bytes read from one file of a container (`/etc/passwd` of a
/// large directory is well under a megabyte).
pub const MAX_FILE: u64 = 4 << 20;

/// The most symlinks followed while resolving one path by hand.
const MAX_SYMLINKS: usize = 40;

/// Errors of reading a file inside a container's root.
#[derive(Debug, thiserror::Error)]
pub enum InRootError {
    #[error("cannot open {} in the container's root", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} in the container's root is not a regular file", path.display())]
    NotRegular { path: PathBuf },
    #[error("{} in the container's root is larger than {limit} bytes", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("cannot read {} in the container's root", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The bytes of `relative` inside `rootfs`, resolved as if `rootfs` were
/// `/`: `None` when it does not exist, an error when it is not a regular
/// file or holds more than `limit` bytes.
pub fn read(rootfs: &Path, relative: &str, limit: u64) -> Result<Option<Vec<u8>>, InRootError> {
    let shown = Path::new("/").join(relative.trim_start_matches('/'));
    let open_err = |source| InRootError::Open {
        path: shown.clone(),
        source,
    };
    let handle = match open_path(rootfs, relative) {
        Ok(handle) => handle,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(open_err(e)),
    };
    let meta = handle.metadata().map_err(open_err)?;
    if !meta.file_type().is_file() {
        return Err(InRootError::NotRegular { path: shown });
    }
    if meta.len() > limit {
        return Err(InRootError::TooLarge { path: shown, limit });
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{}", handle.as_raw_fd()))
        .map_err(open_err)?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| InRootError::Read {
            path: shown.clone(),
            source,
        })?;
    if bytes.len() as u64 > limit {
        return Err(InRootError::TooLarge { path: shown, limit });
    }
    Ok(Some(bytes))
}

/// An `O_PATH` handle on `relative` inside `rootfs` (opens nothing),
/// resolved as the container would resolve it. Usable as the directory of
/// `*at` calls when it names a directory.
pub fn open_path(rootfs: &Path, relative: &str) -> io::Result<File> {
    let root = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(rootfs)?;
    match open_in_root(&root, relative) {
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            let path = resolve_by_hand(rootfs, Path::new(relative))?;
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
                .open(path)
        }
        other => other,
    }
}

/// `struct open_how` of `openat2(2)`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `RESOLVE_IN_ROOT` and `RESOLVE_NO_MAGICLINKS` of `openat2(2)`.
const RESOLVE_IN_ROOT: u64 = 0x10;
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;

/// Opens `relative` below the directory `root` with `openat2` and
/// `O_PATH`, every symlink resolved inside `root`.
fn open_in_root(root: &File, relative: &str) -> io::Result<File> {
    let path = CString::new(relative).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `path` is a NUL-terminated string and `how` a valid open_how
    // that both outlive the call; the size passed is the struct's own size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else
    // owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    Ok(File::from(fd))
}

/// Resolves `relative` inside `rootfs` by hand (for kernels without
/// `openat2`): `..` stops at the rootfs, absolute symlink targets start over
/// at the rootfs. Returns the host path of the result.
pub(super) fn resolve_by_hand(rootfs: &Path, relative: &Path) -> io::Result<PathBuf> {
    let mut done = PathBuf::new();
    let mut todo: Vec<std::ffi::OsString> = components(relative);
    todo.reverse();
    let mut links = 0;
    while let Some(part) = todo.pop() {
        if part.as_bytes() == b".." {
            done.pop();
            continue;
        }
        let candidate = done.join(&part);
        let host = rootfs.join(&candidate);
        match std::fs::symlink_metadata(&host) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = std::fs::read_link(&host)?;
                if target.is_absolute() {
                    done = PathBuf::new();
                }
                let mut more = components(&target);
                more.reverse();
                todo.extend(more);
            }
            Ok(_) => done = candidate,
            Err(e) if e.kind() == io::ErrorKind::NotFound => done = candidate,
            Err(e) => return Err(e),
        }
    }
    Ok(rootfs.join(done))
}

/// The normal and `..` components of a path; `/` and `.` dropped.
fn components(path: &Path) -> Vec<std::ffi::OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs_with_link(target: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        std::fs::create_dir_all(rootfs.join("data")).unwrap();
        std::fs::write(rootfs.join("data/passwd"), "inside:x:7:7::/in:/bin/sh\n").unwrap();
        std::fs::write(dir.path().join("passwd"), "outside:x:9:9::/out:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink(target, rootfs.join("etc/passwd")).unwrap();
        dir
    }

    #[test]
    fn symlinks_resolve_inside_the_rootfs() {
        // An absolute link means the container's /data/passwd, and a link
        // climbing out with .. stops at the rootfs.
        for target in ["/data/passwd", "../../../data/passwd", "../../passwd"] {
            let dir = rootfs_with_link(target);
            let rootfs = dir.path().join("rootfs");
            let bytes = read(&rootfs, "etc/passwd", MAX_FILE).unwrap();
            if target == "../../passwd" {
                assert_eq!(bytes, None, "{target} must not reach the host file");
            } else {
                assert!(bytes.unwrap().starts_with(b"inside:"), "{target}");
            }
            let by_hand = resolve_by_hand(&rootfs, Path::new("etc/passwd")).unwrap();
            assert!(by_hand.starts_with(&rootfs), "{target}: {by_hand:?}");
        }
    }

    #[test]
    fn magic_links_of_proc_are_refused() {
        // A container's /proc is not mounted in the engine's view, but a
        // rootfs that is the host (or a bind of /proc) must still not hand
        // out the engine's environment through /proc/self.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/proc/self/environ", dir.path().join("etc/passwd")).unwrap();
        assert_eq!(read(dir.path(), "etc/passwd", MAX_FILE).unwrap(), None);
        // And a rootfs of `/` reading its own /proc/self/fd/N (a magic link)
        // is refused by RESOLVE_NO_MAGICLINKS.
        let file = File::open("/proc/self/status").unwrap();
        let relative = format!("proc/self/fd/{}", file.as_raw_fd());
        assert!(read(Path::new("/"), &relative, MAX_FILE).is_err());
    }

    #[test]
    fn fifos_devices_and_directories_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/dir")).unwrap();
        nix::unistd::mkfifo(
            &dir.path().join("etc/group"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        // No writer ever comes: a plain open would block here forever.
        let err = read(dir.path(), "etc/group", MAX_FILE).unwrap_err();
        assert!(matches!(err, InRootError::NotRegular { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "/etc/group in the container's root is not a regular file"
        );
        let err = read(dir.path(), "etc/dir", MAX_FILE).unwrap_err();
        assert!(matches!(err, InRootError::NotRegular { .. }), "{err:?}");
        // /dev/zero, reached as the container's own root would reach it.
        let err = read(Path::new("/"), "dev/zero", MAX_FILE).unwrap_err();
        assert!(matches!(err, InRootError::NotRegular { .. }), "{err:?}");
    }

    #[test]
    fn large_files_are_refused_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), vec![b'x'; 100]).unwrap();
        assert_eq!(
            read(dir.path(), "etc/passwd", 100).unwrap().unwrap().len(),
            100
        );
        let err = read(dir.path(), "etc/passwd", 99).unwrap_err();
        assert!(
            matches!(err, InRootError::TooLarge { limit: 99, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn missing_files_are_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path(), "etc/passwd", MAX_FILE).unwrap(), None);
    }
}
