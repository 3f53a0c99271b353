//! The container's filesystem as a copy sees it: its root and its mounts
//! in a mount namespace of the copy's own, entered with `pivot_root`.
//!
//! After [`enter`], `/` is the container's root (with its volumes, binds
//! and `/etc` files at their places), no other mount is reachable, and no
//! `/proc` is mounted: a symlink or `..` can only lead to another place of
//! the container. Every mount is `nodev` and `nosuid`; the root is
//! read-only for a stat or an archive, and for an extract into a
//! `--read-only` container, as read-only binds are.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::{CpError, View, ViewMount};
use crate::runtime::in_root;

/// What entering the view found out on the way.
#[derive(Debug, Default)]
pub struct Entered {
    /// The uid and gid the container's user resolved to (`copyUIDGID`).
    pub chown: Option<(u32, u32)>,
}

fn view_err<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CpError + 'a {
    move |source| CpError::View {
        step,
        path: path.to_owned(),
        source,
    }
}

fn errno<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(nix::Error) -> CpError + 'a {
    move |e| CpError::View {
        step,
        path: path.to_owned(),
        source: std::io::Error::from(e),
    }
}

/// Builds the view of `view` in a new mount namespace and enters it
/// (`writes`: the root stays writable unless `--read-only`). With
/// `chown_user`, resolves that user in the container's `/etc/passwd`
/// first (the files are read before `/proc` is gone).
pub fn enter(view: &View, writes: bool, chown_user: Option<&str>) -> Result<Entered, CpError> {
    let slash = Path::new("/");
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(errno("unshare the mount namespace for", slash))?;
    // Before anything is mounted: nothing may propagate to the engine.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(errno("make private", slash))?;
    let root = view.rootfs.as_path();
    if !is_overlay_mount(root) {
        // Not running: the root is ours to mount (and goes with us).
        crate::runtime::rootfs::mount_overlay(&view.lower, &view.upper, &view.work, root).map_err(
            |e| CpError::View {
                step: "mount",
                path: root.to_owned(),
                source: std::io::Error::other(crate::state::error_chain(&e)),
            },
        )?;
    }
    let mut mounts: Vec<&ViewMount> = view.mounts.iter().collect();
    mounts.sort_by_key(|m| super::path::clean(&m.destination).matches('/').count());
    for m in mounts {
        match bind(root, m) {
            Ok(()) => {}
            Err(e) if m.volume => return Err(e),
            // The engine's /etc files are a courtesy: a container that
            // made its /etc/hosts a dangling link copies without them.
            Err(e) => tracing::info!(
                destination = %m.destination,
                error = %crate::state::error_chain(&e),
                "cp: an /etc file is left out of the view"
            ),
        }
    }
    let chown = match chown_user.filter(|u| !u.is_empty()) {
        Some(user) => {
            let resolved =
                crate::runtime::user::resolve(root, user, &[]).map_err(|e| CpError::View {
                    step: "resolve the user in",
                    path: root.to_owned(),
                    source: std::io::Error::other(crate::state::error_chain(&e)),
                })?;
            Some((resolved.uid, resolved.gid))
        }
        None => None,
    };
    pivot(root)?;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NODEV | MsFlags::MS_NOSUID;
    if !writes || view.readonly_rootfs {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(None::<&str>, "/", None::<&str>, flags, None::<&str>)
        .map_err(errno("remount the container's root", slash))?;
    Ok(Entered { chown })
}

/// Whether `path` is the root of an overlayfs mount (a running
/// container's root, which the engine mounted).
fn is_overlay_mount(path: &Path) -> bool {
    let Ok(fs) = nix::sys::statfs::statfs(path) else {
        return false;
    };
    if fs.filesystem_type() != nix::sys::statfs::OVERLAYFS_SUPER_MAGIC {
        return false;
    }
    match (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) {
        (Ok(own), Some(Ok(parent))) => own.dev() != parent.dev(),
        _ => false,
    }
}

/// Mounts `m.source` at its destination inside `root` (created when
/// missing, as dockerd creates mount points), resolved in the root and
/// mounted through the resolved descriptor, then sets its flags.
fn bind(root: &Path, m: &ViewMount) -> Result<(), CpError> {
    let source_is_dir = std::fs::metadata(&m.source)
        .map_err(view_err("find", &m.source))?
        .is_dir();
    let destination = super::path::clean(&m.destination);
    let shown = Path::new(&destination);
    let target = ensure_in_root(root, &destination, source_is_dir)?;
    mount(
        Some(&m.source),
        fd_path(&target).as_str(),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(errno("bind-mount at", shown))?;
    // The descriptor names what lies under the new mount; the path, opened
    // again, names the mount itself.
    let mounted = in_root::open_path(root, &destination).map_err(view_err("open", shown))?;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NODEV | MsFlags::MS_NOSUID;
    if !m.rw {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(
        None::<&str>,
        fd_path(&mounted).as_str(),
        None::<&str>,
        flags,
        None::<&str>,
    )
    .map_err(errno("remount", shown))
}

fn fd_path(file: &File) -> String {
    format!("/proc/self/fd/{}", file.as_raw_fd())
}

/// An `O_PATH` handle on `destination` inside `root`, resolved as the
/// container would; missing directories on the way are made (`0755`), and
/// a missing last element becomes a directory or an empty file.
fn ensure_in_root(root: &Path, destination: &str, dir: bool) -> Result<File, CpError> {
    let parts: Vec<&str> = destination.split('/').filter(|p| !p.is_empty()).collect();
    let shown = Path::new(destination);
    let mut parent = in_root::open_path(root, ".").map_err(view_err("open", root))?;
    for (i, part) in parts.iter().enumerate() {
        let prefix = parts[..=i].join("/");
        let last = i + 1 == parts.len();
        let opened = match in_root::open_path(root, &prefix) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match create_at(&parent, part, last && !dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(view_err("create the mount point", shown)(e)),
                }
                in_root::open_path(root, &prefix).map_err(view_err("open", shown))?
            }
            other => other.map_err(view_err("open", shown))?,
        };
        parent = opened;
    }
    Ok(parent)
}

/// Creates `name` in the directory `parent`: an empty file (`0644`) or a
/// directory (`0755`); never through a symlink.
fn create_at(parent: &File, name: &str, file: bool) -> std::io::Result<()> {
    let c = std::ffi::CString::new(name).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: a live descriptor and a NUL-terminated name; the descriptor
    // openat returns is closed at once.
    let done = unsafe {
        if file {
            let fd = libc::openat(parent.as_raw_fd(), c.as_ptr(), flags, 0o644 as libc::c_uint);
            if fd >= 0 {
                libc::close(fd);
            }
            fd
        } else {
            libc::mkdirat(parent.as_raw_fd(), c.as_ptr(), 0o755)
        }
    };
    if done < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Makes `root` this process's `/` and detaches the rest of the namespace.
fn pivot(root: &Path) -> Result<(), CpError> {
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(root)
        .map_err(view_err("open", root))?;
    nix::unistd::fchdir(dir.as_raw_fd()).map_err(errno("enter", root))?;
    nix::unistd::pivot_root(".", ".").map_err(errno("pivot_root into", root))?;
    // The old root now lies over the new one at "."; detach it, and every
    // mount under it, from this namespace.
    umount2(".", MntFlags::MNT_DETACH).map_err(errno("detach the old root from", root))?;
    nix::unistd::chdir("/").map_err(errno("enter", root))?;
    Ok(())
}
