//! `COPY` and `ADD`: files from a source root (the build context, another
//! stage's or an image's root filesystem) into a step's root filesystem.
//!
//! Both roots are untrusted ground. The build context is the user's, but an
//! image's root (the destination, or a `COPY --from` source) may hold
//! symlinks planted to lead a copy out of it (`/app` → `/proc/1/root/etc`).
//! So every path is resolved inside its root the way the container would
//! resolve it ([`in_root::open_path`]: `openat2(RESOLVE_IN_ROOT)`), and
//! everything below a resolved directory is reached through descriptors:
//! entries are created with `mkdirat`/`openat(O_EXCL|O_NOFOLLOW)`/
//! `symlinkat` in a directory opened without following links, and a tree
//! is read the same way, a symlink copied as a symlink.
//!
//! Docker's rules: a source directory's contents (not the directory) are
//! copied; a destination ending in `/`, or several sources, name a
//! directory; a relative destination is under `WORKDIR`; new files and
//! directories belong to `0:0` unless `--chown` says otherwise; modes and
//! modification times are kept (`--chmod` sets the mode). Wildcards follow
//! Go's `filepath.Match` (`*` and `?` stay within one path component,
//! `[a-z]`, `[^…]`, `\` escapes). `ADD` also unpacks a local tar archive
//! (plain, gzip, zstd) into the destination, its owners kept.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::runtime::in_root;

/// Errors of a copy, said the way Docker says them.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("no source files were specified")]
    NoSources,
    #[error("file not found in build context or excluded by .dockerignore: stat {0}: file does not exist")]
    NotFound(String),
    #[error("cannot copy to non-directory: {0}")]
    NotADirectory(String),
    #[error("source {0} is a device node: refused")]
    Device(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(what: &'static str, path: impl Into<String>) -> impl FnOnce(io::Error) -> CopyError {
    let path = path.into();
    move |source| CopyError::Io { what, path, source }
}

/// How copied entries are owned and moded.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ownership {
    /// `--chown` (resolved); `None` keeps the source's owner (archives) or
    /// gives `0:0` (everything else).
    pub owner: Option<(u32, u32)>,
    /// `--chmod`.
    pub mode: Option<u32>,
}

/// Matches `name` against a Go `filepath.Match` pattern.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    fn class(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
        // pattern starts after '['; answers (matched, bytes of the class incl. ']')
        let mut i = 0;
        let negate = matches!(pattern.first(), Some(b'^' | b'!'));
        if negate {
            i += 1;
        }
        let mut matched = false;
        let mut first = true;
        while i < pattern.len() {
            if pattern[i] == b']' && !first {
                return Some((matched != negate, i + 1));
            }
            first = false;
            let mut lo = pattern[i];
            if lo == b'\\' {
                i += 1;
                lo = *pattern.get(i)?;
            }
            i += 1;
            let mut hi = lo;
            if pattern.get(i) == Some(&b'-') && pattern.get(i + 1).is_some_and(|c| *c != b']') {
                hi = pattern[i + 1];
                if hi == b'\\' {
                    hi = *pattern.get(i + 2)?;
                    i += 1;
                }
                i += 2;
            }
            if lo <= c && c <= hi {
                matched = true;
            }
        }
        None
    }
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some(b'*') => {
                let rest = &p[1..];
                let mut i = 0;
                loop {
                    if go(rest, &n[i..]) {
                        return true;
                    }
                    if i >= n.len() || n[i] == b'/' {
                        return false;
                    }
                    i += 1;
                }
            }
            Some(b'?') => !n.is_empty() && n[0] != b'/' && go(&p[1..], &n[1..]),
            Some(b'[') => match (n.first(), class(&p[1..], *n.first().unwrap_or(&0))) {
                (Some(c), Some((true, len))) if *c != b'/' => go(&p[1 + len..], &n[1..]),
                _ => false,
            },
            Some(b'\\') if p.len() > 1 => n.first() == Some(&p[1]) && go(&p[2..], &n[1..]),
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

/// A path for `openat2` below a root: the root itself is `.`.
fn dot(rel: &str) -> &str {
    if rel.is_empty() {
        "."
    } else {
        rel
    }
}

/// Whether a source names several files by wildcard.
pub fn has_wildcards(pattern: &str) -> bool {
    pattern.contains(['*', '?', '[', '\\'])
}

/// A path inside a root, cleaned lexically (`..` never above the root),
/// without the leading `/`; empty for the root itself.
pub fn clean_in_root(path: &str) -> String {
    crate::volume::resolve::clean(&format!("/{path}"))
        .trim_start_matches('/')
        .to_owned()
}

/// The sources a COPY names inside `root`: each pattern cleaned; a pattern
/// with wildcards becomes every path of the root it matches (sorted), a
/// plain one must exist.
pub fn expand_sources(root: &Path, patterns: &[String]) -> Result<Vec<String>, CopyError> {
    let mut out = Vec::new();
    let mut all: Option<Vec<String>> = None;
    for pattern in patterns {
        let cleaned = clean_in_root(pattern);
        if has_wildcards(&cleaned) {
            if all.is_none() {
                let mut paths = Vec::new();
                walk_names(root, "", &mut paths)?;
                all = Some(paths);
            }
            let matched: Vec<String> = all
                .as_ref()
                .into_iter()
                .flatten()
                .filter(|p| wildcard_match(&cleaned, p))
                .cloned()
                .collect();
            out.extend(matched);
        } else {
            match in_root::open_path(root, dot(&cleaned)) {
                Ok(_) => out.push(cleaned),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(CopyError::NotFound(
                        pattern.trim_start_matches('/').to_owned(),
                    ))
                }
                Err(e) => return Err(io_err("stat", pattern.clone())(e)),
            }
        }
    }
    if out.is_empty() {
        return Err(CopyError::NoSources);
    }
    Ok(out)
}

/// Every path below `root`/`rel` (not following symlinks), sorted.
fn walk_names(root: &Path, rel: &str, out: &mut Vec<String>) -> Result<(), CopyError> {
    let dir = Dir::open_in(root, rel)?;
    for (name, meta) in dir.entries()? {
        let path = if rel.is_empty() {
            name.to_string_lossy().into_owned()
        } else {
            format!("{rel}/{}", name.to_string_lossy())
        };
        out.push(path.clone());
        if meta.is_dir() {
            walk_names(root, &path, out)?;
        }
    }
    Ok(())
}

/// An open directory, reached by descriptor only.
struct Dir {
    fd: OwnedFd,
    shown: String,
}

/// What `fstatat(AT_SYMLINK_NOFOLLOW)` says of an entry.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    rdev: u64,
}

impl Stat {
    /// An entry that is not a device: `mode` with its type bits
    /// (`S_IFREG`…), owner, size and modification time.
    pub fn new(mode: u32, (uid, gid): (u32, u32), size: u64, mtime: (i64, i64)) -> Self {
        Self {
            mode,
            uid,
            gid,
            size,
            mtime,
            rdev: 0,
        }
    }

    fn kind(&self) -> u32 {
        self.mode & libc::S_IFMT
    }
    fn is_dir(&self) -> bool {
        self.kind() == libc::S_IFDIR
    }
}

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Dir {
    /// The directory `rel` inside `root`, resolved in the root.
    fn open_in(root: &Path, rel: &str) -> Result<Self, CopyError> {
        let shown = format!("/{rel}");
        let handle = in_root::open_path(root, dot(rel)).map_err(io_err("open", shown.clone()))?;
        let meta = handle.metadata().map_err(io_err("stat", shown.clone()))?;
        if !meta.is_dir() {
            return Err(CopyError::NotADirectory(shown));
        }
        // Reopen for reading (O_PATH cannot list), through the same inode.
        let file = File::open(format!("/proc/self/fd/{}", handle.as_raw_fd()))
            .map_err(io_err("open", shown.clone()))?;
        Ok(Self {
            fd: file.into(),
            shown,
        })
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn child_shown(&self, name: &OsStr) -> String {
        format!(
            "{}/{}",
            self.shown.trim_end_matches('/'),
            name.to_string_lossy()
        )
    }

    fn stat(&self, name: &OsStr) -> io::Result<Option<Stat>> {
        let c = cstr(name)?;
        // SAFETY: `stat` is plain data; all zeroes is a valid value of it.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor, NUL-terminated name, a stat buffer we own.
        let ret =
            unsafe { libc::fstatat(self.raw(), c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
        if ret < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::NotFound {
                Ok(None)
            } else {
                Err(e)
            };
        }
        Ok(Some(Stat {
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            rdev: st.st_rdev,
        }))
    }

    /// The entries, sorted by name, each with its `lstat`.
    fn entries(&self) -> Result<Vec<(OsString, Stat)>, CopyError> {
        let listed = format!("/proc/self/fd/{}", self.raw());
        let mut names: Vec<OsString> = std::fs::read_dir(&listed)
            .map_err(io_err("read", self.shown.clone()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io_err("read", self.shown.clone()))?;
        names.sort();
        let mut out = Vec::new();
        for name in names {
            if let Some(stat) = self
                .stat(&name)
                .map_err(io_err("stat", self.child_shown(&name)))?
            {
                out.push((name, stat));
            }
        }
        Ok(out)
    }

    /// The child directory `name`, never through a symlink.
    fn child(&self, name: &OsStr) -> io::Result<Dir> {
        let c = cstr(name)?;
        // SAFETY: valid descriptor and NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                self.raw(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Dir {
            // SAFETY: the kernel just gave us this descriptor.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            shown: self.child_shown(name),
        })
    }

    fn open_file(&self, name: &OsStr) -> io::Result<File> {
        let c = cstr(name)?;
        // SAFETY: valid descriptor and NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                self.raw(),
                c.as_ptr(),
                libc::O_RDONLY
                    | libc::O_NOFOLLOW
                    | libc::O_NOCTTY
                    | libc::O_NONBLOCK
                    | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just gave us this descriptor.
        Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn read_link(&self, name: &OsStr) -> io::Result<OsString> {
        let c = cstr(name)?;
        let mut buf = vec![0u8; libc::PATH_MAX as usize];
        // SAFETY: valid descriptor, NUL-terminated name, a buffer of the size given.
        let n =
            unsafe { libc::readlinkat(self.raw(), c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        buf.truncate(n as usize);
        Ok(OsString::from_vec_compat(buf))
    }

    /// Removes `name` unless it is a directory (what a new entry replaces).
    fn remove_non_dir(&self, name: &OsStr) -> io::Result<Option<Stat>> {
        let existing = self.stat(name)?;
        if let Some(st) = existing {
            if !st.is_dir() {
                let c = cstr(name)?;
                // SAFETY: valid descriptor and NUL-terminated name.
                check(unsafe { libc::unlinkat(self.raw(), c.as_ptr(), 0) })?;
                return Ok(None);
            }
        }
        Ok(existing)
    }

    /// `name` as a directory: kept if it is one, else made with `mode`.
    /// Answers it open and whether it was made.
    fn make_dir(&self, name: &OsStr, mode: u32) -> io::Result<(Dir, bool)> {
        let made = match self.remove_non_dir(name)? {
            Some(_) => false,
            None => {
                let c = cstr(name)?;
                // SAFETY: valid descriptor and NUL-terminated name.
                check(unsafe { libc::mkdirat(self.raw(), c.as_ptr(), mode & 0o7777) })?;
                true
            }
        };
        Ok((self.child(name)?, made))
    }

    fn chown(&self, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
        let c = cstr(name)?;
        // SAFETY: valid descriptor and NUL-terminated name.
        check(unsafe {
            libc::fchownat(self.raw(), c.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW)
        })
    }

    fn chmod(&self, name: &OsStr, mode: u32) -> io::Result<()> {
        // fchmodat cannot refuse to follow links; the entry was made (or
        // checked) just now as a non-link in a directory reached without
        // following links, so plain fchmodat names that very entry.
        let c = cstr(name)?;
        // SAFETY: valid descriptor and NUL-terminated name.
        check(unsafe { libc::fchmodat(self.raw(), c.as_ptr(), mode & 0o7777, 0) })
    }

    fn set_mtime(&self, name: &OsStr, mtime: (i64, i64)) -> io::Result<()> {
        let c = cstr(name)?;
        let times = [
            libc::timespec {
                tv_sec: mtime.0,
                tv_nsec: mtime.1,
            },
            libc::timespec {
                tv_sec: mtime.0,
                tv_nsec: mtime.1,
            },
        ];
        // SAFETY: valid descriptor, NUL-terminated name, two timespecs.
        check(unsafe {
            libc::utimensat(
                self.raw(),
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
    }
}

trait FromVecCompat {
    fn from_vec_compat(v: Vec<u8>) -> Self;
}

impl FromVecCompat for OsString {
    fn from_vec_compat(v: Vec<u8>) -> Self {
        std::os::unix::ffi::OsStringExt::from_vec(v)
    }
}

/// Where a copy reads: a directory tree on disk ([`OnDisk`]), or the
/// build context's tar through its index ([`super::index::Tree`]).
pub trait Source {
    /// A directory of the source.
    type Dir;
    /// The entries of `dir`, sorted by name, each with its `lstat`.
    fn entries(&self, dir: &Self::Dir) -> Result<Vec<(OsString, Stat)>, CopyError>;
    /// The directory `name` of `dir`.
    fn child(&self, dir: &Self::Dir, name: &OsStr) -> Result<Self::Dir, CopyError>;
    /// The bytes of the regular file `name` of `dir`.
    fn open_file(&self, dir: &Self::Dir, name: &OsStr) -> Result<Box<dyn Read + '_>, CopyError>;
    /// The target of the symlink `name` of `dir`.
    fn read_link(&self, dir: &Self::Dir, name: &OsStr) -> Result<OsString, CopyError>;
    /// The entry `name` of `dir`, for messages.
    fn shown(&self, dir: &Self::Dir, name: &OsStr) -> String;
}

/// A tree on disk, read through descriptors, links never followed.
struct OnDisk;

impl Source for OnDisk {
    type Dir = Dir;

    fn entries(&self, dir: &Dir) -> Result<Vec<(OsString, Stat)>, CopyError> {
        dir.entries()
    }

    fn child(&self, dir: &Dir, name: &OsStr) -> Result<Dir, CopyError> {
        dir.child(name)
            .map_err(io_err("open", dir.child_shown(name)))
    }

    fn open_file(&self, dir: &Dir, name: &OsStr) -> Result<Box<dyn Read + '_>, CopyError> {
        let file = dir
            .open_file(name)
            .map_err(io_err("open", dir.child_shown(name)))?;
        Ok(Box::new(file))
    }

    fn read_link(&self, dir: &Dir, name: &OsStr) -> Result<OsString, CopyError> {
        dir.read_link(name)
            .map_err(io_err("read link", dir.child_shown(name)))
    }

    fn shown(&self, dir: &Dir, name: &OsStr) -> String {
        dir.child_shown(name)
    }
}

/// Where copied entries go and how they are owned.
struct Target<'a> {
    ownership: &'a Ownership,
}

impl Target<'_> {
    /// Owner of a new entry: `--chown`'s, else `0:0`.
    fn owner(&self) -> (u32, u32) {
        self.ownership.owner.unwrap_or((0, 0))
    }

    fn mode(&self, st: &Stat) -> u32 {
        self.ownership.mode.unwrap_or(st.mode & 0o7777)
    }

    /// Copies the entry `name` of `from` (whose lstat is `st`) in `source`
    /// to `name` in `to`.
    fn copy_entry<S: Source>(
        &self,
        source: &S,
        from: &S::Dir,
        to: &Dir,
        name: &OsStr,
        st: &Stat,
    ) -> Result<(), CopyError> {
        let shown = to.child_shown(name);
        let (uid, gid) = self.owner();
        let mode = self.mode(st);
        match st.kind() {
            libc::S_IFDIR => {
                let src = source.child(from, name)?;
                let (dst, _) = to
                    .make_dir(name, 0o700)
                    .map_err(io_err("mkdir", shown.clone()))?;
                self.copy_tree(source, &src, &dst)?;
                to.chown(name, uid, gid)
                    .map_err(io_err("chown", shown.clone()))?;
                to.chmod(name, mode)
                    .map_err(io_err("chmod", shown.clone()))?;
                to.set_mtime(name, st.mtime)
                    .map_err(io_err("set times of", shown))?;
            }
            libc::S_IFREG => {
                let mut src = source.open_file(from, name)?;
                self.write_file(to, name, &mut src, 0o600)?;
                to.chown(name, uid, gid)
                    .map_err(io_err("chown", shown.clone()))?;
                to.chmod(name, mode)
                    .map_err(io_err("chmod", shown.clone()))?;
                to.set_mtime(name, st.mtime)
                    .map_err(io_err("set times of", shown))?;
            }
            libc::S_IFLNK => {
                let target = source.read_link(from, name)?;
                if let Some(existing) = to
                    .remove_non_dir(name)
                    .map_err(io_err("replace", shown.clone()))?
                {
                    let _ = existing;
                    return Err(CopyError::Io {
                        what: "replace directory with symlink",
                        path: shown,
                        source: io::Error::from_raw_os_error(libc::EISDIR),
                    });
                }
                let t = cstr(&target).map_err(io_err("symlink", shown.clone()))?;
                let n = cstr(name).map_err(io_err("symlink", shown.clone()))?;
                // SAFETY: NUL-terminated strings, a valid directory descriptor.
                check(unsafe { libc::symlinkat(t.as_ptr(), to.raw(), n.as_ptr()) })
                    .map_err(io_err("symlink", shown.clone()))?;
                to.chown(name, uid, gid)
                    .map_err(io_err("chown", shown.clone()))?;
                to.set_mtime(name, st.mtime)
                    .map_err(io_err("set times of", shown))?;
            }
            libc::S_IFIFO => {
                to.remove_non_dir(name)
                    .map_err(io_err("replace", shown.clone()))?;
                let n = cstr(name).map_err(io_err("mkfifo", shown.clone()))?;
                // SAFETY: NUL-terminated name, a valid directory descriptor.
                check(unsafe { libc::mkfifoat(to.raw(), n.as_ptr(), mode) })
                    .map_err(io_err("mkfifo", shown.clone()))?;
                to.chown(name, uid, gid)
                    .map_err(io_err("chown", shown.clone()))?;
                to.chmod(name, mode).map_err(io_err("chmod", shown))?;
            }
            libc::S_IFSOCK => {} // as Docker: sockets are not copied
            _ => {
                let _ = st.rdev;
                return Err(CopyError::Device(source.shown(from, name)));
            }
        }
        Ok(())
    }

    fn copy_tree<S: Source>(&self, source: &S, from: &S::Dir, to: &Dir) -> Result<(), CopyError> {
        for (name, st) in source.entries(from)? {
            self.copy_entry(source, from, to, &name, &st)?;
        }
        Ok(())
    }

    /// Writes `src` to a new file `name` in `to` (replacing a non-directory).
    fn write_file(
        &self,
        to: &Dir,
        name: &OsStr,
        src: &mut dyn Read,
        mode: u32,
    ) -> Result<(), CopyError> {
        let shown = to.child_shown(name);
        if to
            .remove_non_dir(name)
            .map_err(io_err("replace", shown.clone()))?
            .is_some()
        {
            return Err(CopyError::Io {
                what: "replace directory with file",
                path: shown,
                source: io::Error::from_raw_os_error(libc::EISDIR),
            });
        }
        let c = cstr(name).map_err(io_err("create", shown.clone()))?;
        // SAFETY: valid descriptor and NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                to.raw(),
                c.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                mode,
            )
        };
        if fd < 0 {
            return Err(io_err("create", shown)(io::Error::last_os_error()));
        }
        // SAFETY: the kernel just gave us this descriptor.
        let mut dst = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        io::copy(src, &mut dst).map_err(io_err("write", shown))?;
        Ok(())
    }
}

/// The directory `path` (absolute, in the container) inside `root`,
/// resolved in the root; missing components are made `0755`, owned by
/// `owner` (Docker's `MkdirAllAndChownNew`).
fn make_dirs(root: &Path, path: &str, owner: (u32, u32)) -> Result<Dir, CopyError> {
    let clean = clean_in_root(path);
    let mut dir = Dir::open_in(root, "")?;
    let mut done = String::new();
    for part in clean.split('/').filter(|p| !p.is_empty()) {
        let next = if done.is_empty() {
            part.to_owned()
        } else {
            format!("{done}/{part}")
        };
        match Dir::open_in(root, &next) {
            Ok(d) => dir = d,
            Err(CopyError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                let name = OsStr::new(part);
                let shown = dir.child_shown(name);
                let (child, made) = dir
                    .make_dir(name, 0o755)
                    .map_err(io_err("mkdir", shown.clone()))?;
                if made {
                    dir.chown(name, owner.0, owner.1)
                        .map_err(io_err("chown", shown.clone()))?;
                    dir.chmod(name, 0o755).map_err(io_err("chmod", shown))?;
                }
                dir = child;
            }
            Err(e) => return Err(e),
        }
        done = next;
    }
    Ok(dir)
}

/// The destination of a directory source: missing parents are root's and
/// only the destination itself, when made, `owner`'s (dockerd's
/// `CopyWithTar`, then `fixPermissions`); a file's missing parents are all
/// `owner`'s ([`make_dirs`], dockerd's `MkdirAllAndChownNew`).
fn make_dest_dir(root: &Path, dest: &str, owner: (u32, u32)) -> Result<Dir, CopyError> {
    let made = !is_dir_in(root, dest);
    let dir = make_dirs(root, dest, (0, 0))?;
    let (parent, name) = split_dest(dest);
    if made && !name.is_empty() {
        Dir::open_in(root, &parent)?
            .chown(&name, owner.0, owner.1)
            .map_err(io_err("chown", format!("/{}", clean_in_root(dest))))?;
    }
    Ok(dir)
}

/// WORKDIR: makes `path` (absolute) inside `root` when it is missing
/// (`0755`, root's); answers whether anything was made.
pub fn make_missing_dir(root: &Path, path: &str) -> Result<bool, CopyError> {
    if is_dir_in(root, path) {
        return Ok(false);
    }
    make_dirs(root, path, (0, 0))?;
    Ok(true)
}

/// Whether `dest` (absolute) is an existing directory inside `root`.
fn is_dir_in(root: &Path, dest: &str) -> bool {
    in_root::open_path(root, dot(&clean_in_root(dest)))
        .and_then(|h| h.metadata())
        .is_ok_and(|m| m.is_dir())
}

/// The parent directory and file name of an absolute container path.
fn split_dest(dest: &str) -> (String, OsString) {
    let clean = clean_in_root(dest);
    match clean.rsplit_once('/') {
        Some((dir, name)) => (dir.to_owned(), OsString::from(name)),
        None => (String::new(), OsString::from(clean)),
    }
}

/// One COPY or ADD: `sources` (paths in `src_root`, as [`expand_sources`]
/// gave them) to `dest` (absolute, in the container; a trailing `/` names a
/// directory) in `dst_root`. `unpack` (ADD) unpacks tar archives.
pub fn copy(
    src_root: &Path,
    sources: &[String],
    dst_root: &Path,
    dest: &str,
    ownership: &Ownership,
    unpack: bool,
) -> Result<(), CopyError> {
    let owner = ownership.owner.unwrap_or((0, 0));
    let target = Target { ownership };
    let dest_is_dir = dest.ends_with('/') || sources.len() > 1 || is_dir_in(dst_root, dest);
    for source in sources {
        if source.is_empty() {
            // The whole root (`COPY . /dst`): its contents.
            let dir = Dir::open_in(src_root, "")?;
            let dst = make_dest_dir(dst_root, dest, owner)?;
            target.copy_tree(&OnDisk, &dir, &dst)?;
            continue;
        }
        let (parent, name) = split_dest(&format!("/{source}"));
        let from_parent = Dir::open_in(src_root, &parent)?;
        let st = from_parent
            .stat(&name)
            .map_err(io_err("stat", format!("/{source}")))?;
        // The source itself is followed (inside its root) when it is a
        // symlink, as Docker does; what is below it is not.
        let (from_parent, name, st) = match st {
            Some(st) if st.kind() == libc::S_IFLNK => {
                let handle = in_root::open_path(src_root, dot(source))
                    .map_err(io_err("open", format!("/{source}")))?;
                let meta = handle
                    .metadata()
                    .map_err(io_err("stat", format!("/{source}")))?;
                if meta.is_dir() {
                    let dir = Dir::open_in(src_root, source)?;
                    let dst = make_dest_dir(dst_root, dest, owner)?;
                    target.copy_tree(&OnDisk, &dir, &dst)?;
                    continue;
                }
                // A link to a file: copy the file it names, under the link's name.
                if !meta.is_file() {
                    return Err(CopyError::Device(format!("/{source}")));
                }
                let mut file = File::open(format!("/proc/self/fd/{}", handle.as_raw_fd()))
                    .map_err(io_err("open", format!("/{source}")))?;
                let st = Stat {
                    mode: meta.mode(),
                    uid: meta.uid(),
                    gid: meta.gid(),
                    size: meta.len(),
                    mtime: (meta.mtime(), meta.mtime_nsec()),
                    rdev: 0,
                };
                copy_file_to(
                    &target,
                    dst_root,
                    dest,
                    dest_is_dir,
                    &name,
                    &mut file,
                    &st,
                    owner,
                )?;
                continue;
            }
            Some(st) => (from_parent, name, st),
            None => return Err(CopyError::NotFound(source.clone())),
        };
        if st.is_dir() {
            let dir = from_parent
                .child(&name)
                .map_err(io_err("open", format!("/{source}")))?;
            let dst = make_dest_dir(dst_root, dest, owner)?;
            target.copy_tree(&OnDisk, &dir, &dst)?;
            continue;
        }
        if unpack && st.kind() == libc::S_IFREG {
            let mut file = from_parent
                .open_file(&name)
                .map_err(io_err("open", format!("/{source}")))?;
            if is_archive(&mut file).map_err(io_err("read", format!("/{source}")))? {
                let file = from_parent
                    .open_file(&name)
                    .map_err(io_err("open", format!("/{source}")))?;
                unpack_archive(file, dst_root, dest, owner)?;
                continue;
            }
        }
        if st.kind() == libc::S_IFREG {
            let mut file = from_parent
                .open_file(&name)
                .map_err(io_err("open", format!("/{source}")))?;
            copy_file_to(
                &target,
                dst_root,
                dest,
                dest_is_dir,
                &name,
                &mut file,
                &st,
                owner,
            )?;
        } else {
            // A symlink was handled above; a FIFO or a socket as an entry.
            let (dir, dest_name) = place(dst_root, dest, dest_is_dir, &name, owner)?;
            target.copy_entry(&OnDisk, &from_parent, &dir, &name, &st)?;
            if dest_name != name {
                rename_in(&dir, &name, &dest_name)?;
            }
        }
    }
    Ok(())
}

/// A source of a COPY as [`copy_items`] takes it.
pub enum Item<D> {
    /// A directory: its contents are copied.
    Dir(D),
    /// A regular file: `name` in `parent`, whose lstat is `st`.
    File { parent: D, name: OsString, st: Stat },
}

/// One COPY whose sources are directories and regular files of `source`
/// (what [`copy`] does for those, from any [`Source`]): the build
/// context's tar is read this way without being unpacked first.
pub fn copy_items<S: Source>(
    source: &S,
    items: &[Item<S::Dir>],
    dst_root: &Path,
    dest: &str,
    ownership: &Ownership,
) -> Result<(), CopyError> {
    let owner = ownership.owner.unwrap_or((0, 0));
    let target = Target { ownership };
    let dest_is_dir = dest.ends_with('/') || items.len() > 1 || is_dir_in(dst_root, dest);
    for item in items {
        match item {
            Item::Dir(dir) => {
                let dst = make_dest_dir(dst_root, dest, owner)?;
                target.copy_tree(source, dir, &dst)?;
            }
            Item::File { parent, name, st } => {
                let mut src = source.open_file(parent, name)?;
                copy_file_to(
                    &target,
                    dst_root,
                    dest,
                    dest_is_dir,
                    name,
                    &mut src,
                    st,
                    owner,
                )?;
            }
        }
    }
    Ok(())
}

/// The directory a single file goes into and its name there.
fn place(
    dst_root: &Path,
    dest: &str,
    dest_is_dir: bool,
    name: &OsStr,
    owner: (u32, u32),
) -> Result<(Dir, OsString), CopyError> {
    if dest_is_dir {
        Ok((make_dirs(dst_root, dest, owner)?, name.to_owned()))
    } else {
        let (parent, file) = split_dest(dest);
        Ok((make_dirs(dst_root, &format!("/{parent}"), owner)?, file))
    }
}

fn rename_in(dir: &Dir, from: &OsStr, to: &OsStr) -> Result<(), CopyError> {
    let shown = dir.child_shown(to);
    let a = cstr(from).map_err(io_err("rename", shown.clone()))?;
    let b = cstr(to).map_err(io_err("rename", shown.clone()))?;
    // SAFETY: valid descriptor and NUL-terminated names.
    check(unsafe { libc::renameat(dir.raw(), a.as_ptr(), dir.raw(), b.as_ptr()) })
        .map_err(io_err("rename", shown))
}

#[allow(clippy::too_many_arguments)]
fn copy_file_to(
    target: &Target<'_>,
    dst_root: &Path,
    dest: &str,
    dest_is_dir: bool,
    name: &OsStr,
    src: &mut dyn Read,
    st: &Stat,
    owner: (u32, u32),
) -> Result<(), CopyError> {
    let (dir, file_name) = place(dst_root, dest, dest_is_dir, name, owner)?;
    let shown = dir.child_shown(&file_name);
    target.write_file(&dir, &file_name, src, 0o600)?;
    let (uid, gid) = target.owner();
    dir.chown(&file_name, uid, gid)
        .map_err(io_err("chown", shown.clone()))?;
    dir.chmod(&file_name, target.mode(st))
        .map_err(io_err("chmod", shown.clone()))?;
    dir.set_mtime(&file_name, st.mtime)
        .map_err(io_err("set times of", shown))
}

/// Whether the file starts like a tar archive ADD unpacks: gzip, zstd, or a
/// plain tar (`ustar` at offset 257).
fn is_archive(file: &mut File) -> io::Result<bool> {
    let mut head = [0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let head = &head[..n];
    Ok(head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || head.get(257..262) == Some(b"ustar"))
}

/// ADD of a local archive: unpacked (checked, as a layer is) into a scratch
/// directory beside nothing else, then its tree copied into `dest` with the
/// archive's owners.
fn unpack_archive(
    file: File,
    dst_root: &Path,
    dest: &str,
    owner: (u32, u32),
) -> Result<(), CopyError> {
    let scratch = tempfile_dir(dst_root)?;
    let result = (|| {
        crate::image::unpack::unpack_layer(file, &scratch).map_err(|e| CopyError::Io {
            what: "unpack",
            path: dest.to_owned(),
            source: io::Error::other(e.to_string()),
        })?;
        let from = Dir::open_in(&scratch, "")?;
        let to = make_dirs(dst_root, dest, owner)?;
        let keep = KeepOwners;
        keep.copy_tree(&from, &to)
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// A scratch directory for unpacking, next to (not inside) the rootfs.
fn tempfile_dir(dst_root: &Path) -> Result<PathBuf, CopyError> {
    let base = dst_root.parent().unwrap_or(Path::new("/tmp"));
    let dir = base.join(format!(".add-{:016x}", rand::random::<u64>()));
    std::fs::create_dir(&dir).map_err(io_err("create", dir.display().to_string()))?;
    Ok(dir)
}

/// Copies an unpacked archive's tree keeping its owners and modes.
struct KeepOwners;

impl KeepOwners {
    fn copy_tree(&self, from: &Dir, to: &Dir) -> Result<(), CopyError> {
        for (name, st) in from.entries()? {
            let shown = to.child_shown(&name);
            match st.kind() {
                libc::S_IFDIR => {
                    let src = from
                        .child(&name)
                        .map_err(io_err("open", from.child_shown(&name)))?;
                    let (dst, _) = to
                        .make_dir(&name, 0o700)
                        .map_err(io_err("mkdir", shown.clone()))?;
                    self.copy_tree(&src, &dst)?;
                }
                _ => {
                    let ownership = Ownership {
                        owner: Some((st.uid, st.gid)),
                        mode: None,
                    };
                    Target {
                        ownership: &ownership,
                    }
                    .copy_entry(&OnDisk, from, to, &name, &st)?;
                    continue;
                }
            }
            to.chown(&name, st.uid, st.gid)
                .map_err(io_err("chown", shown.clone()))?;
            to.chmod(&name, st.mode)
                .map_err(io_err("chmod", shown.clone()))?;
            to.set_mtime(&name, st.mtime)
                .map_err(io_err("set times of", shown))?;
        }
        Ok(())
    }
}

/// The content hash of `sources` in `root` for the build cache: for every
/// entry below each source (sorted, links not followed) its path, type,
/// mode, owner, size, link target and content — not its times, as
/// Docker's classic builder leaves them out. `kind:hex` as Docker prints
/// it (`file:`, `dir:` for one source, `multi:` for several).
pub fn hash_sources(root: &Path, sources: &[String]) -> Result<String, CopyError> {
    let mut all = Sha256::new();
    let mut kind = "multi";
    for source in sources {
        let handle =
            in_root::open_path(root, dot(source)).map_err(io_err("open", format!("/{source}")))?;
        let meta = handle
            .metadata()
            .map_err(io_err("stat", format!("/{source}")))?;
        let mut one = Sha256::new();
        if meta.is_dir() {
            kind = "dir";
            let dir = Dir::open_in(root, source)?;
            hash_tree(&dir, "", &mut one)?;
        } else {
            kind = "file";
            one.update(format!(
                "{:o} {} {} {}\n",
                meta.mode(),
                meta.uid(),
                meta.gid(),
                meta.len()
            ));
            let mut file = File::open(format!("/proc/self/fd/{}", handle.as_raw_fd()))
                .map_err(io_err("open", format!("/{source}")))?;
            io::copy(&mut file, &mut one).map_err(io_err("read", format!("/{source}")))?;
        }
        all.update(source.as_bytes());
        all.update([0]);
        all.update(one.finalize());
    }
    if sources.len() > 1 {
        kind = "multi";
    }
    Ok(format!("{kind}:{}", hex::encode(all.finalize())))
}

fn hash_tree(dir: &Dir, rel: &str, hasher: &mut Sha256) -> Result<(), CopyError> {
    for (name, st) in dir.entries()? {
        let path = format!("{rel}/{}", name.to_string_lossy());
        hasher.update(format!(
            "{path}\0{:o} {} {} {}\0",
            st.mode, st.uid, st.gid, st.size
        ));
        match st.kind() {
            libc::S_IFDIR => {
                let child = dir
                    .child(&name)
                    .map_err(io_err("open", dir.child_shown(&name)))?;
                hash_tree(&child, &path, hasher)?;
            }
            libc::S_IFREG => {
                let mut file = dir
                    .open_file(&name)
                    .map_err(io_err("open", dir.child_shown(&name)))?;
                io::copy(&mut file, hasher).map_err(io_err("read", dir.child_shown(&name)))?;
            }
            libc::S_IFLNK => {
                let target = dir
                    .read_link(&name)
                    .map_err(io_err("read link", dir.child_shown(&name)))?;
                hasher.update(target.as_bytes());
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_follow_go_filepath_match() {
        assert!(wildcard_match("*.txt", "a.txt"));
        assert!(!wildcard_match("*.txt", "dir/a.txt"));
        assert!(wildcard_match("dir/*.txt", "dir/a.txt"));
        assert!(wildcard_match("hom?", "home"));
        assert!(!wildcard_match("hom?", "hom/"));
        assert!(wildcard_match("[a-c]x", "bx"));
        assert!(!wildcard_match("[^a-c]x", "bx"));
        assert!(wildcard_match("[^a-c]x", "dx"));
        assert!(wildcard_match("a\\*b", "a*b"));
        assert!(!wildcard_match("a\\*b", "axb"));
        assert!(wildcard_match("*", "anything"));
        assert!(!wildcard_match("*", "a/b"));
    }

    #[test]
    fn paths_are_cleaned_inside_the_root() {
        assert_eq!(clean_in_root("/a/./b/../c"), "a/c");
        assert_eq!(clean_in_root("../../etc/passwd"), "etc/passwd");
        assert_eq!(clean_in_root("."), "");
        assert_eq!(clean_in_root("/"), "");
    }
}
