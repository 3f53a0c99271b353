//! `PUT /containers/{id}/archive`: a tar extracted into a directory of the
//! container, in the view ([`super::view`]), with dockerd's rules.
//!
//! - The destination is resolved with every symlink followed (so a link
//!   to a directory works) and must be a directory; a path under a volume
//!   or bind must be in a writable one, any other path needs a writable
//!   root (`--read-only` refuses). The kernel holds the same line: the
//!   view mounts those read-only.
//! - Entry names are cleaned; one that climbs out of the destination
//!   (`../x`) is refused, as are a symlink whose target, taken from the
//!   link's directory, climbs out, and a hard link to a path outside. An
//!   absolute name or symlink target is taken inside the destination and
//!   the container respectively, as dockerd takes them.
//! - Missing parents are made (`0755`); an existing entry is replaced
//!   unless both are directories (then merged); with
//!   `noOverwriteDirNonDir` a directory never becomes a non-directory nor
//!   the reverse. Files are created `O_EXCL | O_NOFOLLOW`.
//! - Owners (or the container user's with `copyUIDGID`), modes with their
//!   setuid/setgid/sticky bits, times, and `SCHILY.xattr.*` attributes are
//!   kept (not `trusted.overlay.*`, which only overlayfs may set). Device
//!   nodes and FIFOs are made as dockerd makes them: the view is `nodev`,
//!   and a container's device cgroup decides whether it may open one.
//!
//! Entries are applied in order and an error stops the extraction at the
//! entry that caused it: what came before it stays, as with dockerd
//! (which does not roll back either). Everything is relative to the
//! destination, entered with `fchdir`; in the view no path leads out of
//! the container.

use std::ffi::{CString, OsStr};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use super::path;
use super::{CpError, View};

/// How to extract.
#[derive(Debug, Default, Clone)]
pub struct Options {
    pub no_overwrite_dir_non_dir: bool,
    /// Owner of everything extracted, instead of the tar's.
    pub chown: Option<(u32, u32)>,
}

/// The destination directory, entered.
pub struct Destination {
    /// The path as given (absolute), for messages.
    shown: String,
}

/// Resolves `absolute` in the view, checks it is a directory that may be
/// written, and makes it the working directory.
pub fn destination(absolute: &str, view: &View) -> Result<Destination, CpError> {
    // O_PATH: a FIFO the container put there is never opened (nor waited on).
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(absolute)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOTDIR) => CpError::NotADirectory,
            _ => CpError::io("open", absolute, e),
        })?;
    let meta = dir
        .metadata()
        .map_err(|e| CpError::io("stat", absolute, e))?;
    if !meta.is_dir() {
        return Err(CpError::NotADirectory);
    }
    // Which mount holds it, by the path the links resolve to (dockerd's
    // check); the mounts' flags enforce the same should a link change.
    let resolved = crate::runtime::rootfs::resolve_in_root(std::path::Path::new("/"), absolute);
    let resolved = path::clean(&resolved.display().to_string());
    let volume = view
        .mounts
        .iter()
        .filter(|m| m.volume && path::is_within(&resolved, &path::clean(&m.destination)))
        .max_by_key(|m| path::clean(&m.destination).len());
    match volume {
        Some(m) if !m.rw => return Err(CpError::ReadonlyVolume),
        None if view.readonly_rootfs => return Err(CpError::ReadonlyRootfs),
        _ => {}
    }
    nix::unistd::fchdir(dir.as_raw_fd()).map_err(|e| CpError::io("enter", absolute, e.into()))?;
    Ok(Destination {
        shown: path::clean(absolute),
    })
}

/// Extracts the tar `input` into the destination.
pub fn extract(dest: Destination, input: impl Read, options: &Options) -> Result<(), CpError> {
    let mut archive = tar::Archive::new(input);
    let mut directories: Vec<(String, TimeSpec, TimeSpec)> = Vec::new();
    let entries = archive.entries().map_err(tar_error)?;
    for entry in entries {
        let mut entry = entry.map_err(tar_error)?;
        let raw = entry.path_bytes().into_owned();
        let name = path::clean(&String::from_utf8_lossy(&raw));
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            continue;
        }
        // An absolute name lands in the destination (Go joins it there).
        let relative = path::clean(name.trim_start_matches('/'));
        if relative == ".." || relative.starts_with("../") {
            return Err(CpError::Tar(format!(
                "{:?} is outside of {:?}",
                String::from_utf8_lossy(&raw),
                dest.shown
            )));
        }
        if let Some(timed) = apply(&dest, &mut entry, &relative, kind, options)? {
            directories.push(timed);
        }
    }
    // Read what follows the archive's end, so the client's upload finishes.
    let _ = io::copy(&mut archive.into_inner(), &mut io::sink());
    // Directory times last: filling a directory changes its mtime.
    for (relative, atime, mtime) in directories.iter().rev() {
        let _ = nix::sys::stat::utimensat(
            None,
            relative.as_str(),
            atime,
            mtime,
            UtimensatFlags::NoFollowSymlink,
        );
    }
    Ok(())
}

/// One entry being applied: where it goes, and how it is named in errors.
struct Target<'a> {
    dest: &'a Destination,
    /// Relative to the destination (the working directory), cleaned.
    relative: &'a str,
    /// Absolute in the container, for messages.
    shown: String,
}

impl Target<'_> {
    fn io(&self, what: &'static str) -> impl FnOnce(io::Error) -> CpError + '_ {
        move |source| CpError::Io {
            what,
            path: self.shown.clone(),
            source,
        }
    }

    fn errno(&self, what: &'static str) -> impl FnOnce(nix::Error) -> CpError + '_ {
        move |e| self.io(what)(e.into())
    }
}

/// Applies one entry at `relative`; a directory's times come back to be
/// set at the end.
fn apply<R: Read>(
    dest: &Destination,
    entry: &mut tar::Entry<'_, R>,
    relative: &str,
    kind: tar::EntryType,
    options: &Options,
) -> Result<Option<(String, TimeSpec, TimeSpec)>, CpError> {
    let target = Target {
        dest,
        relative,
        shown: format!("{}/{}", dest.shown.trim_end_matches('/'), relative),
    };
    if !make_room(&target, kind == tar::EntryType::Directory, options)? {
        return Ok(None);
    }
    let header = entry.header().clone();
    let mode = header.mode().map_err(target.io("read the mode of"))? & 0o7777;
    create(&target, entry, &header, kind, mode)?;
    let (uid, gid) = match options.chown {
        Some(ids) => ids,
        None => (
            header.uid().unwrap_or(0) as u32,
            header.gid().unwrap_or(0) as u32,
        ),
    };
    lchown(relative, uid, gid).map_err(target.io("chown"))?;
    if let Some(extensions) = entry.pax_extensions().ok().flatten() {
        for extension in extensions.flatten() {
            let Some(name) = extension.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
                continue;
            };
            if name.starts_with(b"trusted.overlay.") {
                continue;
            }
            set_xattr(relative, name, extension.value_bytes())
                .map_err(target.io("set attributes of"))?;
        }
    }
    // After the chown, which clears setuid and setgid.
    if kind != tar::EntryType::Symlink && kind != tar::EntryType::Link {
        std::fs::set_permissions(relative, std::fs::Permissions::from_mode(mode))
            .map_err(target.io("chmod"))?;
    }
    let mtime = TimeSpec::new(header.mtime().unwrap_or(0) as i64, 0);
    match kind {
        tar::EntryType::Directory => Ok(Some((relative.to_owned(), mtime, mtime))),
        tar::EntryType::Link => Ok(None),
        _ => nix::sys::stat::utimensat(
            None,
            relative,
            &mtime,
            &mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map(|()| None)
        .map_err(target.errno("set the times of")),
    }
}

/// Makes the entry's parents, and clears its place unless a directory
/// meets a directory (then they merge); `false` when there is nothing to
/// do (the destination itself).
fn make_room(target: &Target<'_>, is_dir_entry: bool, options: &Options) -> Result<bool, CpError> {
    let relative = target.relative;
    if relative != "." {
        let parent = path::split(relative).0.trim_end_matches('/');
        if !parent.is_empty() && std::fs::symlink_metadata(parent).is_err() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(target.io("create the parents of"))?;
        }
    }
    let Ok(existing) = std::fs::symlink_metadata(relative) else {
        return Ok(true);
    };
    let existing_dir = existing.is_dir();
    let (shown, dest) = (&target.shown, &target.dest.shown);
    if options.no_overwrite_dir_non_dir && existing_dir && !is_dir_entry {
        return Err(CpError::Tar(format!(
            "cannot overwrite directory {shown:?} with non-directory {dest:?}"
        )));
    }
    if options.no_overwrite_dir_non_dir && !existing_dir && is_dir_entry {
        return Err(CpError::Tar(format!(
            "cannot overwrite non-directory {shown:?} with directory {dest:?}"
        )));
    }
    if existing_dir && relative == "." {
        return Ok(false);
    }
    if !(existing_dir && is_dir_entry) {
        remove_all(relative).map_err(target.io("remove"))?;
    }
    Ok(true)
}

/// Creates the entry itself (its metadata comes after).
fn create<R: Read>(
    target: &Target<'_>,
    entry: &mut tar::Entry<'_, R>,
    header: &tar::Header,
    kind: tar::EntryType,
    mode: u32,
) -> Result<(), CpError> {
    let relative = target.relative;
    let dest = &target.dest.shown;
    match kind {
        tar::EntryType::Directory => {
            match std::fs::DirBuilder::new().mode(0o700).create(relative) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(target.io("create")(e)),
                _ => Ok(()),
            }
        }
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(relative)
                .map_err(target.io("create"))?;
            io::copy(entry, &mut file)
                .map(drop)
                .map_err(target.io("write"))
        }
        tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
            let (flag, dev) = match kind {
                tar::EntryType::Fifo => (SFlag::S_IFIFO, 0),
                other => {
                    let major = header.device_major().ok().flatten().unwrap_or(0);
                    let minor = header.device_minor().ok().flatten().unwrap_or(0);
                    let flag = if other == tar::EntryType::Char {
                        SFlag::S_IFCHR
                    } else {
                        SFlag::S_IFBLK
                    };
                    (flag, libc::makedev(major, minor))
                }
            };
            nix::sys::stat::mknodat(None, relative, flag, Mode::from_bits_truncate(mode), dev)
                .map_err(target.errno("create"))
        }
        tar::EntryType::Link => {
            let link = link_name(entry)?;
            let linked = path::clean(&format!("{dest}/{link}"));
            if !is_within_text(&linked, dest) {
                return Err(CpError::Tar(format!(
                    "invalid hardlink {linked:?} -> {link:?}"
                )));
            }
            let inside = path::clean(linked[dest.len()..].trim_start_matches('/'));
            nix::unistd::linkat(
                None,
                inside.as_str(),
                None,
                relative,
                nix::fcntl::AtFlags::empty(),
            )
            .map_err(target.errno("link"))
        }
        tar::EntryType::Symlink => {
            let link = link_name(entry)?;
            let parent = path::split(&target.shown)
                .0
                .trim_end_matches('/')
                .to_owned();
            if !is_within_text(&path::clean(&format!("{parent}/{link}")), dest) {
                return Err(CpError::Tar(format!(
                    "invalid symlink {:?} -> {link:?}",
                    target.shown
                )));
            }
            std::os::unix::fs::symlink(&link, relative).map_err(target.io("create"))
        }
        other => Err(CpError::Tar(format!(
            "unhandled tar header type {}",
            other.as_byte()
        ))),
    }
}

/// A tar that cannot be read: the reader's words, unless they quote the
/// garbage they choked on.
fn tar_error(e: io::Error) -> CpError {
    let text = e.to_string();
    if text
        .chars()
        .any(|c| c.is_control() || c == char::REPLACEMENT_CHARACTER)
    {
        return CpError::Tar("archive/tar: invalid tar header".to_owned());
    }
    CpError::Tar(format!("cannot read the archive: {text}"))
}

/// The link target of a hard or symbolic link entry.
fn link_name<R: Read>(entry: &tar::Entry<'_, R>) -> Result<String, CpError> {
    let link = entry
        .link_name_bytes()
        .ok_or_else(|| CpError::Tar("a link entry without a target".to_owned()))?;
    Ok(String::from_utf8_lossy(&link).into_owned())
}

/// Go's `strings.HasPrefix(target, dest)`, the test dockerd applies to link
/// targets (lexical, both cleaned).
fn is_within_text(target: &str, dest: &str) -> bool {
    target.starts_with(dest)
}

/// Removes `relative` and, for a directory, everything in it, never
/// following a symlink.
fn remove_all(relative: &str) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(relative)?;
    if !meta.is_dir() {
        return std::fs::remove_file(relative);
    }
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(relative)?;
    remove_children(&dir)?;
    std::fs::remove_dir(relative)
}

/// Empties the open directory `dir`, relative to its descriptor.
fn remove_children(dir: &std::fs::File) -> io::Result<()> {
    let fd = nix::fcntl::fcntl(dir.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(0))?;
    let mut stream = nix::dir::Dir::from_fd(fd)?;
    let names: Vec<CString> = stream
        .iter()
        .flatten()
        .map(|e| e.file_name().to_owned())
        .filter(|n| !matches!(n.as_bytes(), b"." | b".."))
        .collect();
    for name in names {
        let name = OsStr::from_bytes(name.as_bytes());
        let at = Some(dir.as_raw_fd());
        match nix::unistd::unlinkat(at, name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(nix::Error::ENOENT) => continue,
            Err(nix::Error::EISDIR) => {}
            Err(e) => return Err(e.into()),
        }
        let flags = nix::fcntl::OFlag::O_RDONLY
            | nix::fcntl::OFlag::O_DIRECTORY
            | nix::fcntl::OFlag::O_NOFOLLOW
            | nix::fcntl::OFlag::O_CLOEXEC;
        let child = nix::fcntl::openat(at, name, flags, Mode::empty())?;
        // SAFETY: openat just returned this descriptor.
        let child = unsafe { std::fs::File::from_raw_fd(child) };
        remove_children(&child)?;
        match nix::unistd::unlinkat(at, name, nix::unistd::UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(nix::Error::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn lchown(relative: &str, uid: u32, gid: u32) -> io::Result<()> {
    nix::unistd::fchownat(
        None,
        relative,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(io::Error::from)
}

/// `lsetxattr(2)`; a filesystem without attributes, or one refusing this
/// name, is not an error (as dockerd ignores `ENOTSUP` and `EPERM`).
fn set_xattr(relative: &str, name: &[u8], value: &[u8]) -> io::Result<()> {
    let path = CString::new(relative).map_err(|_| io::ErrorKind::InvalidInput)?;
    let name = CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: NUL-terminated path and name and a live value buffer of the
    // given length.
    let done = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if done < 0 {
        let e = io::Error::last_os_error();
        if matches!(e.raw_os_error(), Some(libc::ENOTSUP | libc::EPERM)) {
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_targets_are_checked_lexically_like_dockerd() {
        assert!(is_within_text(&path::clean("/x/d/../../x/etc"), "/x"));
        assert!(!is_within_text(&path::clean("/x/sub/../../../etc"), "/x"));
        // An absolute symlink target is joined inside, so it passes.
        assert!(is_within_text(&path::clean("/x/sub//etc/passwd"), "/x"));
    }
}
