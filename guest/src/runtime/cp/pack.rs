//! `GET /containers/{id}/archive`: the stat of a path and a tar of it, in
//! the view ([`super::view`]), with dockerd's rules.
//!
//! The path's directory is resolved with every symlink followed; its last
//! element is not (a link is archived as a link), unless the path ends in
//! `/` or `/.`. The tar's top entry is the path's base name (`.` for
//! `dir/.`, so the CLI copies the contents), directories are walked
//! recursively in name order, and each entry is stored as what it is:
//! links as links, hard links within the walk as hard links, devices and
//! FIFOs as nodes, with mode, owner, mtime and `security.capability`.
//!
//! The walk holds a descriptor per directory and opens every child
//! relative to it with `O_NOFOLLOW`: a running container that swaps a
//! directory for a symlink mid-walk gets the symlink skipped, never
//! followed. A file is opened `O_NONBLOCK` and checked with `fstat` before
//! it is read, so a FIFO swapped in is skipped too; the view is `nodev`,
//! so a device node is never opened.

use std::collections::HashMap;
use std::ffi::{CStr, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

use nix::fcntl::OFlag;
use nix::sys::stat::{FileStat, Mode};

use super::path::{self, PathStat};
use super::CpError;

/// What [`stat`] found, for [`archive`] to walk.
pub struct Target {
    directory: bool,
}

/// The stat of `absolute` (see [`path::absolute`]) in the view, as
/// dockerd answers it, with the link target resolved in the container.
pub fn stat(absolute: &str) -> Result<(PathStat, Target), CpError> {
    let meta =
        std::fs::symlink_metadata(absolute).map_err(|e| CpError::io("lstat", absolute, e))?;
    let link_target = if meta.file_type().is_symlink() {
        let resolved = crate::runtime::rootfs::resolve_in_root(std::path::Path::new("/"), absolute);
        resolved.display().to_string()
    } else {
        String::new()
    };
    let stat = PathStat {
        name: path::base(absolute).to_owned(),
        size: meta.size() as i64,
        mode: path::go_file_mode(meta.mode()),
        mtime: path::go_time(meta.mtime(), meta.mtime_nsec()),
        link_target,
    };
    Ok((
        stat,
        Target {
            directory: meta.is_dir(),
        },
    ))
}

/// Writes the tar of `absolute` to `out`: a directory (walked) or one
/// entry, named after the path's base.
pub fn archive(absolute: &str, target: Target, out: impl Write) -> Result<(), CpError> {
    let top = path::base(absolute).to_owned();
    let mut walk = Walk {
        builder: tar::Builder::new(out),
        links: HashMap::new(),
    };
    if target.directory {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::open(absolute, flags, Mode::empty())
            .map_err(|e| CpError::io("open", absolute, e.into()))?;
        // SAFETY: open just returned this descriptor; nobody else owns it.
        let dir = unsafe { File::from_raw_fd(fd) };
        walk.directory(dir, &top, "")?;
    } else {
        let (parent, name) = path::split(absolute);
        let parent = if parent.is_empty() { "/" } else { parent };
        let fd = nix::fcntl::open(
            parent,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| CpError::io("open", parent, e.into()))?;
        // SAFETY: open just returned this descriptor; nobody else owns it.
        let parent = unsafe { File::from_raw_fd(fd) };
        walk.entry(&parent, OsStr::new(name), &top, "")?;
    }
    walk.builder
        .into_inner()
        .and_then(|mut out| out.flush())
        .map_err(CpError::Write)
}

/// One walk's tar writer and the hard links it has seen.
struct Walk<W: Write> {
    builder: tar::Builder<W>,
    /// (device, inode) of files with more than one link, to their first name.
    links: HashMap<(u64, u64), String>,
}

impl<W: Write> Walk<W> {
    /// Adds the directory `dir` (named `relative` under `top`) and all in it.
    fn directory(&mut self, dir: File, top: &str, relative: &str) -> Result<(), CpError> {
        let meta = nix::sys::stat::fstat(dir.as_raw_fd())
            .map_err(|e| CpError::io("stat", shown(top, relative), e.into()))?;
        let name = path::entry_name(top, relative, true);
        let mut header = header_from(&meta, tar::EntryType::Directory);
        self.append(
            &mut header,
            &name,
            None,
            capability(dir.as_raw_fd()),
            io::empty(),
        )?;
        let mut names = names(&dir).map_err(|e| CpError::io("read", shown(top, relative), e))?;
        names.sort();
        for child in names {
            let child_relative = if relative.is_empty() {
                String::from_utf8_lossy(child.as_bytes()).into_owned()
            } else {
                format!("{relative}/{}", String::from_utf8_lossy(child.as_bytes()))
            };
            self.entry(&dir, &child, top, &child_relative)?;
        }
        Ok(())
    }

    /// Adds `name` of the directory `parent`, as what it is now.
    fn entry(
        &mut self,
        parent: &File,
        name: &OsStr,
        top: &str,
        relative: &str,
    ) -> Result<(), CpError> {
        let at = Some(parent.as_raw_fd());
        let meta = match nix::sys::stat::fstatat(at, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        {
            Ok(meta) => meta,
            // Gone since the directory was read.
            Err(nix::Error::ENOENT) => return Ok(()),
            Err(e) => return Err(CpError::io("lstat", shown(top, relative), e.into())),
        };
        let entry_name = path::entry_name(top, relative, false);
        match meta.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                let flags =
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                match nix::fcntl::openat(at, name, flags, Mode::empty()) {
                    Ok(fd) => {
                        // SAFETY: openat just returned this descriptor.
                        let dir = unsafe { File::from_raw_fd(fd) };
                        self.directory(dir, top, relative)
                    }
                    // Swapped for something else since the stat: skipped.
                    Err(nix::Error::ENOTDIR | nix::Error::ELOOP | nix::Error::ENOENT) => Ok(()),
                    Err(e) => Err(CpError::io("open", shown(top, relative), e.into())),
                }
            }
            libc::S_IFREG => self.file(parent, name, &entry_name, top, relative),
            libc::S_IFLNK => {
                let target = match nix::fcntl::readlinkat(at, name) {
                    Ok(target) => target,
                    Err(nix::Error::ENOENT | nix::Error::EINVAL) => return Ok(()),
                    Err(e) => return Err(CpError::io("readlink", shown(top, relative), e.into())),
                };
                let mut header = header_from(&meta, tar::EntryType::Symlink);
                self.append(
                    &mut header,
                    &entry_name,
                    Some(target.as_bytes()),
                    None,
                    io::empty(),
                )
            }
            kind @ (libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO) => {
                let entry_type = match kind {
                    libc::S_IFCHR => tar::EntryType::Char,
                    libc::S_IFBLK => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                };
                let mut header = header_from(&meta, entry_type);
                if kind != libc::S_IFIFO {
                    let _ = header.set_device_major(libc::major(meta.st_rdev));
                    let _ = header.set_device_minor(libc::minor(meta.st_rdev));
                }
                self.append(&mut header, &entry_name, None, None, io::empty())
            }
            // Sockets have no tar form (Go's tar refuses them; dockerd skips).
            _ => Ok(()),
        }
    }

    /// Adds a regular file: its bytes, or a hard link to a name already in
    /// the tar.
    fn file(
        &mut self,
        parent: &File,
        name: &OsStr,
        entry_name: &str,
        top: &str,
        relative: &str,
    ) -> Result<(), CpError> {
        let flags = OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC;
        let fd = match nix::fcntl::openat(Some(parent.as_raw_fd()), name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(nix::Error::ELOOP | nix::Error::ENOENT | nix::Error::ENXIO) => return Ok(()),
            Err(e) => return Err(CpError::io("open", shown(top, relative), e.into())),
        };
        // SAFETY: openat just returned this descriptor.
        let file = unsafe { File::from_raw_fd(fd) };
        let meta = nix::sys::stat::fstat(file.as_raw_fd())
            .map_err(|e| CpError::io("stat", shown(top, relative), e.into()))?;
        if meta.st_mode & libc::S_IFMT != libc::S_IFREG {
            // Swapped for a FIFO or the like since the stat: skipped.
            return Ok(());
        }
        if meta.st_nlink > 1 {
            let key = (meta.st_dev, meta.st_ino);
            if let Some(first) = self.links.get(&key).cloned() {
                let mut header = header_from(&meta, tar::EntryType::Link);
                return self.append(
                    &mut header,
                    entry_name,
                    Some(first.as_bytes()),
                    None,
                    io::empty(),
                );
            }
            self.links.insert(key, entry_name.to_owned());
        }
        let size = u64::try_from(meta.st_size).unwrap_or(0);
        let mut header = header_from(&meta, tar::EntryType::Regular);
        header.set_size(size);
        let capability = capability(file.as_raw_fd());
        // A file that shrinks while read is padded, one that grows is cut:
        // the header's size holds.
        let data = file.take(size).chain(io::repeat(0)).take(size);
        self.append(&mut header, entry_name, None, capability, data)
    }

    /// Writes one entry: GNU long-name and long-link records where the
    /// name or target does not fit, a PAX record for the capability.
    fn append(
        &mut self,
        header: &mut tar::Header,
        name: &str,
        link: Option<&[u8]>,
        capability: Option<Vec<u8>>,
        data: impl Read,
    ) -> Result<(), CpError> {
        let write = |e| CpError::Write(e);
        if let Some(value) = capability {
            self.builder
                .append_pax_extensions([("SCHILY.xattr.security.capability", &value[..])])
                .map_err(write)?;
        }
        let name = name.as_bytes();
        if name.len() > 100 {
            self.long_record(tar::EntryType::GNULongName, name)?;
        }
        if let Some(link) = link {
            if link.len() > 100 {
                self.long_record(tar::EntryType::GNULongLink, link)?;
            }
            let field = &mut header.as_old_mut().linkname;
            let n = link.len().min(field.len());
            field[..n].copy_from_slice(&link[..n]);
        }
        let field = &mut header.as_old_mut().name;
        let n = name.len().min(field.len());
        field[..n].copy_from_slice(&name[..n]);
        header.set_cksum();
        self.builder.append(header, data).map_err(write)
    }

    /// A GNU `././@LongLink` record holding `value` for the next entry.
    fn long_record(&mut self, kind: tar::EntryType, value: &[u8]) -> Result<(), CpError> {
        let mut header = tar::Header::new_gnu();
        let field = &mut header.as_old_mut().name;
        let long = b"././@LongLink";
        field[..long.len()].copy_from_slice(long);
        header.set_entry_type(kind);
        header.set_mode(0o644);
        let mut data = value.to_vec();
        data.push(0);
        header.set_size(data.len() as u64);
        header.set_cksum();
        self.builder
            .append(&header, &data[..])
            .map_err(CpError::Write)
    }
}

/// A path for messages: the walked path's base and the entry below it.
fn shown(top: &str, relative: &str) -> String {
    path::entry_name(top, relative, false)
}

/// The names in the directory `dir` (without `.` and `..`).
fn names(dir: &File) -> io::Result<Vec<std::ffi::OsString>> {
    let fd: RawFd = nix::fcntl::fcntl(dir.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(0))
        .map_err(io::Error::from)?;
    let mut stream = nix::dir::Dir::from_fd(fd).map_err(io::Error::from)?;
    let mut out = Vec::new();
    for entry in stream.iter() {
        let entry = entry.map_err(io::Error::from)?;
        let name: &CStr = entry.file_name();
        if matches!(name.to_bytes(), b"." | b"..") {
            continue;
        }
        out.push(OsStr::from_bytes(name.to_bytes()).to_os_string());
    }
    Ok(out)
}

/// The `security.capability` attribute of an open file, the one attribute
/// dockerd's tar carries.
fn capability(fd: RawFd) -> Option<Vec<u8>> {
    let mut value = vec![0u8; 256];
    // SAFETY: a live descriptor, a NUL-terminated name and a live buffer of
    // the given length.
    let n = unsafe {
        libc::fgetxattr(
            fd,
            c"security.capability".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    let n = usize::try_from(n).ok()?;
    value.truncate(n);
    Some(value)
}

fn header_from(meta: &FileStat, kind: tar::EntryType) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(meta.st_mode & 0o7777);
    header.set_uid(u64::from(meta.st_uid));
    header.set_gid(u64::from(meta.st_gid));
    header.set_mtime(u64::try_from(meta.st_mtime).unwrap_or(0));
    header.set_size(0);
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, type, link target) of each entry of a tar.
    fn listing(bytes: &[u8]) -> Vec<(String, tar::EntryType, Option<String>)> {
        let mut archive = tar::Archive::new(bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
                let link = e
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned());
                (name, e.header().entry_type(), link)
            })
            .collect()
    }

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("d");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("a"), "a").unwrap();
        std::fs::hard_link(d.join("a"), d.join("hard")).unwrap();
        std::fs::write(d.join("sub/b"), "b").unwrap();
        std::os::unix::fs::symlink("/", d.join("root")).unwrap();
        nix::unistd::mkfifo(&d.join("pipe"), Mode::from_bits_truncate(0o600)).unwrap();
        let long = "x".repeat(150);
        std::fs::write(d.join(&long), "long").unwrap();
        dir
    }

    #[test]
    fn directories_are_walked_with_links_as_links() {
        let dir = tree();
        let absolute = format!("{}/d", dir.path().display());
        let (found, target) = stat(&absolute).unwrap();
        assert_eq!(found.name, "d");
        assert_eq!(found.mode & path::mode::DIR, path::mode::DIR);
        let mut out = Vec::new();
        archive(&absolute, target, &mut out).unwrap();
        let entries = listing(&out);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names[0], "d/");
        assert!(names.contains(&"d/sub/b"), "{names:?}");
        let long = format!("d/{}", "x".repeat(150));
        assert!(names.contains(&long.as_str()), "{names:?}");
        let find = |n: &str| entries.iter().find(|e| e.0 == n).unwrap().clone();
        assert_eq!(find("d/root").1, tar::EntryType::Symlink);
        assert_eq!(find("d/root").2.as_deref(), Some("/"));
        assert_eq!(find("d/pipe").1, tar::EntryType::Fifo);
        assert_eq!(find("d/hard").1, tar::EntryType::Link);
        assert_eq!(find("d/hard").2.as_deref(), Some("d/a"));
    }

    #[test]
    fn a_trailing_dot_names_the_contents_and_a_link_stays_a_link() {
        let dir = tree();
        let absolute = format!("{}/d/.", dir.path().display());
        let (found, target) = stat(&absolute).unwrap();
        assert_eq!(found.name, ".");
        let mut out = Vec::new();
        archive(&absolute, target, &mut out).unwrap();
        assert_eq!(listing(&out)[0].0, "./");
        assert!(listing(&out).iter().any(|e| e.0 == "./sub/b"));

        let link = format!("{}/d/root", dir.path().display());
        let (found, target) = stat(&link).unwrap();
        assert_eq!(found.mode & path::mode::SYMLINK, path::mode::SYMLINK);
        assert_eq!(found.link_target, "/");
        let mut out = Vec::new();
        archive(&link, target, &mut out).unwrap();
        assert_eq!(
            listing(&out),
            vec![(
                "root".to_owned(),
                tar::EntryType::Symlink,
                Some("/".to_owned())
            )]
        );
    }

    #[test]
    fn a_missing_path_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let err = stat(&format!("{}/nope", dir.path().display()))
            .err()
            .unwrap();
        assert_eq!(err.kind(), super::super::FailKind::NotFound);
    }
}
