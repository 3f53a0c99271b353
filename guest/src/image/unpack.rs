//! Safe unpacking of one layer tar into a directory that overlayfs then uses
//! as a lower layer.
//!
//! Layers come from untrusted tarballs, so every entry is checked before it
//! touches the disk:
//!
//! - paths are cleaned lexically; a `..` that climbs out of the layer is refused;
//! - every parent of an entry must be a real directory inside the layer (created
//!   when missing): a symlink or file in the middle of a path is refused, so an
//!   entry never writes through a symlink;
//! - an existing entry is removed before a new one takes its name, and files are
//!   created with `O_CREAT|O_EXCL|O_NOFOLLOW`;
//! - hardlinks must name an existing non-directory inside the layer;
//! - char and block devices are refused, except `0/0` char devices (overlayfs
//!   whiteouts);
//! - OCI whiteouts become overlayfs ones: `.wh.NAME` → a `0/0` char device
//!   `NAME`; `.wh..wh..opq` → `trusted.overlay.opaque=y` on the directory.
//!
//! Modes, owners, mtimes, symlinks and `SCHILY.xattr.*` attributes are kept,
//! except `trusted.overlay.*`, which only whiteouts may set. The caller unpacks
//! into a fresh private directory that nobody else writes into, so checking
//! with `lstat` before acting leaves no race.

use std::ffi::{CString, OsStr};
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use super::digest::HashingReader;
use super::ImageError;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// What unpacking a layer found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerStats {
    /// `sha256:<hex>` of the uncompressed tar: the layer's diff-id.
    pub diff_id: String,
    /// Bytes of regular file content.
    pub size: u64,
}

/// Wraps a layer blob in the decompressor its first bytes call for: gzip,
/// zstd, or none.
pub fn decompress<'a>(blob: impl Read + 'a) -> Result<Box<dyn Read + 'a>, ImageError> {
    crate::state::compress::decompress(blob).map_err(|source| ImageError::ReadLayer {
        entry: "(start)".to_owned(),
        source,
    })
}

/// Hashes a layer blob's uncompressed stream without unpacking it (for a
/// layer already in the store).
pub fn digest_layer(blob: impl Read) -> Result<String, ImageError> {
    let mut hashing = HashingReader::new(decompress(blob)?);
    hashing.drain().map_err(|source| ImageError::ReadLayer {
        entry: "(stream)".to_owned(),
        source,
    })?;
    Ok(hashing.digest())
}

/// Unpacks a layer blob (plain, gzip or zstd tar) into `dest`, an existing
/// empty directory.
pub fn unpack_layer(blob: impl Read, dest: &Path) -> Result<LayerStats, ImageError> {
    let mut hashing = HashingReader::new(decompress(blob)?);
    let mut size = 0;
    let mut dir_times = Vec::new();
    {
        let mut archive = tar::Archive::new(MetaLimit::new(&mut hashing));
        let entries = archive.entries().map_err(|source| ImageError::ReadLayer {
            entry: "(start)".to_owned(),
            source,
        })?;
        let mut last = String::from("(start)");
        for entry in entries {
            let mut entry = entry.map_err(|source| ImageError::ReadLayer {
                entry: format!("after {last}"),
                source,
            })?;
            last = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            size += unpack_entry(&mut entry, &last, dest, &mut dir_times)?;
        }
    }
    hashing.drain().map_err(|source| ImageError::ReadLayer {
        entry: "(end)".to_owned(),
        source,
    })?;
    // Children change their directory's mtime: set directories' last, deepest first.
    for (path, mtime) in dir_times.iter().rev() {
        set_mtime(path, *mtime)?;
    }
    Ok(LayerStats {
        diff_id: hashing.digest(),
        size,
    })
}

/// Largest PAX or GNU long-name entry accepted. The tar crate reads such
/// entries whole into memory, so a layer declaring one of gigabytes (a few
/// bytes once compressed) would exhaust the VM's memory.
const MAX_META_ENTRY: u64 = 1 << 20;

/// Watches the tar headers going by and refuses oversized metadata entries
/// before the tar crate sees them. It follows the stream block by block:
/// a header, then its data rounded up to 512 bytes (and, for GNU sparse
/// files, the extension blocks after the header).
struct MetaLimit<R> {
    inner: R,
    block: [u8; 512],
    filled: usize,
    /// Data bytes still to pass before the next header.
    skip: u64,
    /// The next block is a GNU sparse extension block.
    sparse_extension: bool,
}

impl<R: Read> MetaLimit<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            block: [0; 512],
            filled: 0,
            skip: 0,
            sparse_extension: false,
        }
    }

    fn inspect(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = (self.skip.min(bytes.len() as u64)) as usize;
                self.skip -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let n = (512 - self.filled).min(bytes.len());
            self.block[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            bytes = &bytes[n..];
            if self.filled < 512 {
                break;
            }
            self.filled = 0;
            if self.sparse_extension {
                self.sparse_extension = self.block[504] != 0;
                continue;
            }
            let kind = self.block[156];
            let size = header_size(&self.block[124..136]);
            if matches!(kind, b'x' | b'g' | b'L' | b'K') && size > MAX_META_ENTRY {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "a tar metadata entry ('{}') of {size} bytes (the limit is {MAX_META_ENTRY})",
                        kind as char
                    ),
                ));
            }
            self.sparse_extension = kind == b'S' && self.block[482] != 0;
            // A base-256 size near u64::MAX must not wrap to a small skip.
            self.skip = size.div_ceil(512).saturating_mul(512);
        }
        Ok(())
    }
}

impl<R: Read> Read for MetaLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.inspect(&buf[..n])?;
        Ok(n)
    }
}

/// A tar header's size field: octal text, or GNU's base-256 binary.
fn header_size(field: &[u8]) -> u64 {
    if field[0] & 0x80 != 0 {
        return field[1..].iter().fold(0u64, |n, &b| {
            n.saturating_mul(256).saturating_add(u64::from(b))
        });
    }
    field
        .iter()
        .skip_while(|&&b| b == b' ' || b == 0)
        .take_while(|&&b| (b'0'..=b'7').contains(&b))
        .fold(0u64, |n, &b| {
            n.saturating_mul(8).saturating_add(u64::from(b - b'0'))
        })
}

/// Cleans `raw` lexically into a path relative to the layer root; `None` when
/// a `..` climbs out.
fn clean(raw: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(part) => out.push(part),
        }
    }
    Some(out)
}

/// Makes sure every component of `rel` below `dest` is a real directory,
/// creating missing ones; returns the full path.
fn real_dirs(dest: &Path, rel: &Path, entry: &str, create: bool) -> Result<PathBuf, ImageError> {
    let mut current = dest.to_owned();
    for part in rel.components() {
        current.push(part);
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_dir() => {}
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(ImageError::unsafe_entry(entry, "a parent is a symlink"));
            }
            Ok(_) => {
                return Err(ImageError::unsafe_entry(
                    entry,
                    "a parent is not a directory",
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&current)
                    .map_err(|e| ImageError::io("create directory", &current, e))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ImageError::unsafe_entry(
                    entry,
                    "link target does not exist",
                ));
            }
            Err(e) => return Err(ImageError::io("stat", &current, e)),
        }
    }
    Ok(current)
}

/// Removes whatever is at `path` (not following symlinks), keeping a directory
/// when `keep_dir`.
fn clear(path: &Path, keep_dir: bool) -> Result<(), ImageError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_dir() => {
            if !keep_dir {
                fs::remove_dir_all(path).map_err(|e| ImageError::io("remove", path, e))?;
            }
        }
        Ok(_) => fs::remove_file(path).map_err(|e| ImageError::io("remove", path, e))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(ImageError::io("stat", path, e)),
    }
    Ok(())
}

/// Unpacks one entry; returns the bytes of file content written.
fn unpack_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    name: &str,
    dest: &Path,
    dir_times: &mut Vec<(PathBuf, u64)>,
) -> Result<u64, ImageError> {
    let raw = entry.path_bytes().into_owned();
    let rel = clean(Path::new(OsStr::from_bytes(&raw)))
        .ok_or_else(|| ImageError::unsafe_entry(name, "path escapes the layer"))?;
    let kind = entry.header().entry_type();
    let header = entry.header().clone();

    let file_name = rel.file_name().map(|n| n.to_string_lossy().into_owned());
    let parent_rel = rel.parent().unwrap_or(Path::new("")).to_owned();
    if let Some(file_name) = file_name.as_deref() {
        if file_name == OPAQUE_WHITEOUT {
            let dir = real_dirs(dest, &parent_rel, name, true)?;
            set_xattr(&dir, OPAQUE_XATTR, b"y")
                .map_err(|e| ImageError::io("mark opaque", &dir, e))?;
            return Ok(0);
        }
        if file_name.starts_with(".wh..wh.") {
            return Ok(0); // aufs bookkeeping, meaningless to overlayfs
        }
        if let Some(hidden) = file_name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(ImageError::unsafe_entry(name, "empty whiteout name"));
            }
            let parent = real_dirs(dest, &parent_rel, name, true)?;
            let target = parent.join(hidden);
            clear(&target, false)?;
            make_whiteout(&target)?;
            return Ok(0);
        }
    }

    if rel.as_os_str().is_empty() {
        if kind != tar::EntryType::Directory {
            return Err(ImageError::unsafe_entry(
                name,
                "the layer root is not a directory",
            ));
        }
        apply_metadata(entry, &header, dest, false)?;
        dir_times.push((dest.to_owned(), header.mtime().unwrap_or(0)));
        return Ok(0);
    }
    let parent = real_dirs(dest, &parent_rel, name, true)?;
    let target = parent.join(rel.file_name().unwrap_or_default());
    clear(&target, kind == tar::EntryType::Directory)?;

    let mut written = 0;
    match kind {
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&target)
                .map_err(|e| ImageError::io("create", &target, e))?;
            written = io::copy(entry, &mut file).map_err(|source| ImageError::ReadLayer {
                entry: name.to_owned(),
                source,
            })?;
        }
        tar::EntryType::Directory => {
            if !target.exists() {
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&target)
                    .map_err(|e| ImageError::io("create directory", &target, e))?;
            }
            dir_times.push((target.clone(), header.mtime().unwrap_or(0)));
        }
        tar::EntryType::Symlink => {
            let link = link_name(entry, name)?;
            std::os::unix::fs::symlink(&link, &target)
                .map_err(|e| ImageError::io("create symlink", &target, e))?;
        }
        tar::EntryType::Link => {
            let link = link_name(entry, name)?;
            let link_rel = clean(&link)
                .filter(|p| !p.as_os_str().is_empty())
                .ok_or_else(|| {
                    ImageError::unsafe_entry(name, "hardlink target escapes the layer")
                })?;
            let source = real_dirs(
                dest,
                link_rel.parent().unwrap_or(Path::new("")),
                name,
                false,
            )?
            .join(link_rel.file_name().unwrap_or_default());
            match fs::symlink_metadata(&source) {
                Ok(meta) if meta.is_dir() => {
                    return Err(ImageError::unsafe_entry(name, "hardlink to a directory"));
                }
                Ok(_) => {}
                Err(_) => {
                    return Err(ImageError::unsafe_entry(
                        name,
                        "hardlink target does not exist",
                    ));
                }
            }
            // link(2) does not follow a symlink named as the source.
            fs::hard_link(&source, &target)
                .map_err(|e| ImageError::io("create hardlink", &target, e))?;
            return Ok(0);
        }
        tar::EntryType::Char | tar::EntryType::Block => {
            let major = header.device_major().ok().flatten().unwrap_or(u32::MAX);
            let minor = header.device_minor().ok().flatten().unwrap_or(u32::MAX);
            if kind != tar::EntryType::Char || major != 0 || minor != 0 {
                return Err(ImageError::unsafe_entry(
                    name,
                    "device nodes are not allowed",
                ));
            }
            make_whiteout(&target)?;
        }
        tar::EntryType::Fifo => {
            nix::unistd::mkfifo(&target, Mode::from_bits_truncate(0o600))
                .map_err(|e| ImageError::io("create fifo", &target, e.into()))?;
        }
        _ => return Err(ImageError::unsafe_entry(name, "unsupported entry type")),
    }
    apply_metadata(entry, &header, &target, kind == tar::EntryType::Symlink)?;
    if kind != tar::EntryType::Directory {
        set_mtime(&target, header.mtime().unwrap_or(0))?;
    }
    Ok(written)
}

fn link_name<R: Read>(entry: &tar::Entry<'_, R>, name: &str) -> Result<PathBuf, ImageError> {
    entry
        .link_name_bytes()
        .filter(|l| !l.is_empty())
        .map(|l| PathBuf::from(OsStr::from_bytes(&l)))
        .ok_or_else(|| ImageError::unsafe_entry(name, "link without a target"))
}

/// An overlayfs whiteout: a `0/0` char device.
fn make_whiteout(target: &Path) -> Result<(), ImageError> {
    nix::sys::stat::mknod(
        target,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o600),
        libc::makedev(0, 0),
    )
    .map_err(|e| ImageError::io("create whiteout", target, e.into()))
}

/// Owner, then mode (chown clears set-id bits), then xattrs.
fn apply_metadata<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    header: &tar::Header,
    target: &Path,
    symlink: bool,
) -> Result<(), ImageError> {
    let uid = header.uid().ok().and_then(|u| u32::try_from(u).ok());
    let gid = header.gid().ok().and_then(|g| u32::try_from(g).ok());
    std::os::unix::fs::lchown(target, uid, gid).map_err(|e| ImageError::io("chown", target, e))?;
    if !symlink {
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        fs::set_permissions(target, fs::Permissions::from_mode(mode))
            .map_err(|e| ImageError::io("chmod", target, e))?;
    }
    let Ok(Some(extensions)) = entry.pax_extensions() else {
        return Ok(());
    };
    for extension in extensions.flatten() {
        let Some(name) = extension
            .key()
            .ok()
            .and_then(|k| k.strip_prefix("SCHILY.xattr."))
        else {
            continue;
        };
        if name.starts_with("trusted.overlay.") {
            continue;
        }
        match set_xattr(target, name, extension.value_bytes()) {
            Ok(()) => {}
            // Like Docker: a filesystem without xattrs is not an error.
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {}
            Err(e) => return Err(ImageError::io("set xattr on", target, e)),
        }
    }
    Ok(())
}

fn set_mtime(path: &Path, secs: u64) -> Result<(), ImageError> {
    let time = TimeSpec::new(i64::try_from(secs).unwrap_or(0), 0);
    nix::sys::stat::utimensat(None, path, &time, &time, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| ImageError::io("set mtime of", path, e.into()))
}

/// `lsetxattr(2)`: never follows a symlink.
fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let path = CString::new(path.as_os_str().as_bytes())?;
    let name = CString::new(name)?;
    // SAFETY: both strings are NUL-terminated and outlive the call; the value
    // pointer and length describe a live slice.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn oversized_metadata_entries_are_refused_before_reading_them() {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::XHeader);
        header.set_size(1 << 33);
        header.set_cksum();
        let mut layer = header.as_bytes().to_vec();
        layer.extend_from_slice(&[0u8; 4096]);
        let dir = tempfile::tempdir().unwrap();
        let err = unpack_layer(&layer[..], dir.path()).unwrap_err();
        assert!(
            format!("{err:?}").contains("tar metadata entry ('x')"),
            "{err:?}"
        );
        // Small ones pass, and a regular file's size is not limited.
        let mut ok = tar::Builder::new(Vec::new());
        let mut file = tar::Header::new_gnu();
        file.set_size(3 << 20);
        file.set_mode(0o644);
        file.set_cksum();
        ok.append_data(
            &mut file,
            format!("{}f", "d/".repeat(80)),
            &vec![7u8; 3 << 20][..],
        )
        .unwrap();
        let ok = ok.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        unpack_layer(&ok[..], dir.path()).unwrap();
        assert_eq!(super::header_size(b"00000000017\0"), 15);
        let mut binary = [0u8; 12];
        binary[0] = 0x80;
        binary[11] = 2;
        binary[10] = 1;
        assert_eq!(super::header_size(&binary), 258);
    }

    #[test]
    fn a_size_near_u64_max_is_refused_not_wrapped() {
        // Found by the layer_unpack fuzz target: rounding a GNU base-256
        // size of 2^64 - 1 up to whole blocks overflowed (a panic with
        // overflow checks, a skip of 0 without).
        let mut header = tar::Header::new_gnu();
        header.set_path("f").unwrap();
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.as_old_mut().size = [0xff; 12];
        header.set_cksum();
        let mut layer = header.as_bytes().to_vec();
        layer.extend_from_slice(&[0u8; 1024]);
        assert_eq!(super::header_size(&header.as_old().size), u64::MAX);
        let dir = tempfile::tempdir().unwrap();
        assert!(unpack_layer(&layer[..], dir.path()).is_err());
    }

    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    /// A tar entry with any name and link name, checked by nobody.
    struct Raw<'a> {
        name: &'a str,
        kind: tar::EntryType,
        link: &'a str,
        data: &'a [u8],
        dev: (u32, u32),
    }

    fn raw(name: &str, kind: tar::EntryType) -> Raw<'_> {
        Raw {
            name,
            kind,
            link: "",
            data: b"",
            dev: (0, 0),
        }
    }

    fn tar_of(entries: &[Raw<'_>]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for e in entries {
            let mut header = tar::Header::new_gnu();
            let name = &mut header.as_old_mut().name;
            name[..e.name.len()].copy_from_slice(e.name.as_bytes());
            header.set_entry_type(e.kind);
            header.set_mode(if e.kind == tar::EntryType::Directory {
                0o755
            } else {
                0o644
            });
            header.set_size(e.data.len() as u64);
            header.set_mtime(1_000_000);
            header.set_uid(0);
            header.set_gid(0);
            if !e.link.is_empty() {
                header.set_link_name_literal(e.link).unwrap();
            }
            if matches!(e.kind, tar::EntryType::Char | tar::EntryType::Block) {
                header.set_device_major(e.dev.0).unwrap();
                header.set_device_minor(e.dev.1).unwrap();
            }
            header.set_cksum();
            builder.append(&header, e.data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    /// A sandbox: `outside/` holds a bait file, `layer/` is the target.
    struct Sandbox {
        _dir: tempfile::TempDir,
        outside: PathBuf,
        layer: PathBuf,
    }

    fn sandbox() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        let layer = dir.path().join("layer");
        fs::create_dir(&outside).unwrap();
        fs::create_dir(&layer).unwrap();
        fs::write(outside.join("bait"), b"untouched").unwrap();
        Sandbox {
            _dir: dir,
            outside,
            layer,
        }
    }

    fn assert_outside_untouched(sandbox: &Sandbox) {
        let names: Vec<_> = fs::read_dir(&sandbox.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("bait")]);
        assert_eq!(
            fs::read(sandbox.outside.join("bait")).unwrap(),
            b"untouched"
        );
        let parent: Vec<_> = fs::read_dir(sandbox.layer.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(parent.len(), 2, "something was written beside the layer");
    }

    fn refused(sandbox: &Sandbox, entries: &[Raw<'_>]) -> String {
        let err = unpack_layer(tar_of(entries).as_slice(), &sandbox.layer).unwrap_err();
        assert_eq!(
            err.kind(),
            crate::state::ErrorKind::InvalidParameter,
            "{err}"
        );
        assert_outside_untouched(sandbox);
        err.to_string()
    }

    #[test]
    fn dotdot_escape_is_refused() {
        let sandbox = sandbox();
        let mut file = raw("../outside/evil", tar::EntryType::Regular);
        file.data = b"pwned";
        let msg = refused(&sandbox, &[file]);
        assert!(msg.contains("../outside/evil"), "{msg}");
    }

    #[test]
    fn dotdot_inside_the_layer_is_fine() {
        let sandbox = sandbox();
        let mut file = raw("a/../b", tar::EntryType::Regular);
        file.data = b"ok";
        unpack_layer(tar_of(&[file]).as_slice(), &sandbox.layer).unwrap();
        assert_eq!(fs::read(sandbox.layer.join("b")).unwrap(), b"ok");
    }

    #[test]
    fn writing_through_a_symlinked_parent_is_refused() {
        let sandbox = sandbox();
        let target = sandbox.outside.to_string_lossy().into_owned();
        let mut link = raw("a", tar::EntryType::Symlink);
        link.link = &target;
        let mut file = raw("a/evil", tar::EntryType::Regular);
        file.data = b"pwned";
        let msg = refused(&sandbox, &[link, file]);
        assert!(msg.contains("a/evil") && msg.contains("symlink"), "{msg}");
    }

    #[test]
    fn relative_symlink_parent_is_refused() {
        let sandbox = sandbox();
        let mut link = raw("up", tar::EntryType::Symlink);
        link.link = "../outside";
        let mut file = raw("up/bait", tar::EntryType::Regular);
        file.data = b"pwned";
        refused(&sandbox, &[link, file]);
    }

    #[test]
    fn a_file_replaces_a_symlink_instead_of_writing_through_it() {
        let sandbox = sandbox();
        let target = sandbox.outside.join("bait").to_string_lossy().into_owned();
        let mut link = raw("f", tar::EntryType::Symlink);
        link.link = &target;
        let mut file = raw("f", tar::EntryType::Regular);
        file.data = b"inside";
        unpack_layer(tar_of(&[link, file]).as_slice(), &sandbox.layer).unwrap();
        assert_outside_untouched(&sandbox);
        assert_eq!(fs::read(sandbox.layer.join("f")).unwrap(), b"inside");
    }

    #[test]
    fn hardlink_out_of_the_layer_is_refused() {
        let sandbox = sandbox();
        let mut link = raw("h", tar::EntryType::Link);
        link.link = "../outside/bait";
        let msg = refused(&sandbox, &[link]);
        assert!(msg.contains("hardlink"), "{msg}");
    }

    #[test]
    fn hardlink_through_a_symlinked_dir_is_refused() {
        let sandbox = sandbox();
        let target = sandbox.outside.to_string_lossy().into_owned();
        let mut dir = raw("d", tar::EntryType::Symlink);
        dir.link = &target;
        let mut link = raw("h", tar::EntryType::Link);
        link.link = "d/bait";
        refused(&sandbox, &[dir, link]);
    }

    #[test]
    fn hardlink_inside_the_layer_works() {
        let sandbox = sandbox();
        let mut file = raw("bin/busybox", tar::EntryType::Regular);
        file.data = b"elf";
        let mut link = raw("bin/sh", tar::EntryType::Link);
        link.link = "/bin/busybox";
        unpack_layer(tar_of(&[file, link]).as_slice(), &sandbox.layer).unwrap();
        let a = fs::metadata(sandbox.layer.join("bin/busybox")).unwrap();
        let b = fs::metadata(sandbox.layer.join("bin/sh")).unwrap();
        assert_eq!(a.ino(), b.ino());
    }

    #[test]
    fn device_nodes_are_refused() {
        let sandbox = sandbox();
        let mut block = raw("sda", tar::EntryType::Block);
        block.dev = (8, 0);
        refused(&sandbox, &[block]);
        let mut char = raw("mem", tar::EntryType::Char);
        char.dev = (1, 1);
        let msg = refused(&sandbox, &[char]);
        assert!(msg.contains("mem") && msg.contains("device"), "{msg}");
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        let sandbox = sandbox();
        let entries = [
            raw("etc/", tar::EntryType::Directory),
            raw("etc/.wh.passwd", tar::EntryType::Regular),
            raw("var/cache/.wh..wh..opq", tar::EntryType::Regular),
        ];
        unpack_layer(tar_of(&entries).as_slice(), &sandbox.layer).unwrap();
        let whiteout = fs::symlink_metadata(sandbox.layer.join("etc/passwd")).unwrap();
        assert!(whiteout.file_type().is_char_device());
        assert_eq!(whiteout.rdev(), 0);
        assert!(!sandbox.layer.join("etc/.wh.passwd").exists());
        let mut value = [0u8; 8];
        let path = CString::new(sandbox.layer.join("var/cache").as_os_str().as_bytes()).unwrap();
        let name = CString::new(OPAQUE_XATTR).unwrap();
        // SAFETY: NUL-terminated strings and a live buffer of the given size.
        let n = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                name.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        assert_eq!(n, 1, "opaque xattr missing");
        assert_eq!(value[0], b'y');
    }

    #[test]
    fn metadata_and_digest_are_kept() {
        let sandbox = sandbox();
        let mut file = raw("usr/bin/tool", tar::EntryType::Regular);
        file.data = b"#!/bin/sh\n";
        let mut link = raw("usr/bin/alias", tar::EntryType::Symlink);
        link.link = "tool";
        let bytes = tar_of(&[raw("usr/", tar::EntryType::Directory), file, link]);
        let stats = unpack_layer(bytes.as_slice(), &sandbox.layer).unwrap();
        assert_eq!(stats.diff_id, super::super::digest::of_bytes(&bytes));
        assert_eq!(stats.size, 10);
        let meta = fs::metadata(sandbox.layer.join("usr/bin/tool")).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o644);
        assert_eq!(meta.mtime(), 1_000_000);
        assert_eq!(
            fs::metadata(sandbox.layer.join("usr")).unwrap().mtime(),
            1_000_000
        );
        assert_eq!(
            fs::read_link(sandbox.layer.join("usr/bin/alias")).unwrap(),
            PathBuf::from("tool")
        );
    }

    #[test]
    fn gzip_layers_are_decompressed() {
        use std::io::Write;
        let sandbox = sandbox();
        let mut file = raw("hello", tar::EntryType::Regular);
        file.data = b"hi";
        let plain = tar_of(&[file]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let stats = unpack_layer(gz.finish().unwrap().as_slice(), &sandbox.layer).unwrap();
        assert_eq!(stats.diff_id, super::super::digest::of_bytes(&plain));
        assert_eq!(fs::read(sandbox.layer.join("hello")).unwrap(), b"hi");
    }
}
