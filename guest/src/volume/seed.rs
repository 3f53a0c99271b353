//! Seeding: a new (empty) volume mounted over a path the image has content
//! at gets a copy of that content, owner and mode included, so `VOLUME
//! /var/lib/mysql` or `-v data:/etc/nginx` start out as the image made them
//! (Docker's copy-data; `nocopy` turns it off).
//!
//! The copy never follows a symbolic link: links are copied as links, and
//! the walk only descends into real directories, so nothing outside `from`
//! is read. Hard links inside the tree stay hard links. Extended attributes
//! are not copied.

use std::collections::HashMap;
use std::fs::{Metadata, OpenOptions};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use super::{Seed, VolumeError};

/// Symbolic links followed at most while resolving a path inside the image.
const MAX_LINK_HOPS: usize = 40;

/// Whether the volume data directory `mountpoint` is empty (and so would be
/// seeded).
pub fn needs_seed(mountpoint: &Path) -> Result<bool, VolumeError> {
    let mut entries =
        std::fs::read_dir(mountpoint).map_err(|e| VolumeError::io("read", mountpoint, e))?;
    Ok(entries.next().is_none())
}

/// Fills the volume of `seed` from what `image_root` (the container's root
/// file system before mounts) has at the seed's destination, when the volume
/// is empty and the image has a directory there. Returns the bytes copied.
pub fn seed_volume(image_root: &Path, seed: &Seed) -> Result<u64, VolumeError> {
    if !needs_seed(&seed.mountpoint)? {
        return Ok(0);
    }
    let Some(source) = resolve_in_root(image_root, &seed.destination)? else {
        return Ok(0);
    };
    match std::fs::symlink_metadata(&source) {
        Ok(meta) if meta.is_dir() => {
            let bytes = copy_tree(&source, &seed.mountpoint)?;
            tracing::info!(volume = %seed.volume, destination = %seed.destination, bytes, "volume seeded from the image");
            Ok(bytes)
        }
        _ => Ok(0),
    }
}

/// Resolves the absolute `path` inside `root` the way the container would
/// see it: symbolic links are followed but cannot leave `root` (`..` stops
/// at it, absolute targets start over from it). `None` when a component does
/// not exist.
pub fn resolve_in_root(root: &Path, path: &str) -> Result<Option<PathBuf>, VolumeError> {
    let mut pending: Vec<PathBuf> = components(Path::new(path));
    pending.reverse();
    let mut resolved = PathBuf::new();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        if part.as_os_str() == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        let full = root.join(&candidate);
        let meta = match std::fs::symlink_metadata(&full) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(VolumeError::io("stat", full, e)),
        };
        if !meta.file_type().is_symlink() {
            resolved = candidate;
            continue;
        }
        hops += 1;
        if hops > MAX_LINK_HOPS {
            return Ok(None);
        }
        let target =
            std::fs::read_link(&full).map_err(|e| VolumeError::io("read link", &full, e))?;
        if target.is_absolute() {
            resolved = PathBuf::new();
        }
        pending.extend(components(&target).into_iter().rev());
    }
    Ok(Some(root.join(resolved)))
}

/// The normal and `..` components of `path`, each as a path.
fn components(path: &Path) -> Vec<PathBuf> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(PathBuf::from(name)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect()
}

/// Copies the directory tree `from` into the directory `to` (created when
/// missing), keeping file types, modes, owners and modification times;
/// `to` itself takes `from`'s. Returns the bytes of file data copied.
pub fn copy_tree(from: &Path, to: &Path) -> Result<u64, VolumeError> {
    let meta = std::fs::symlink_metadata(from).map_err(|e| VolumeError::io("stat", from, e))?;
    if !meta.is_dir() {
        return Err(VolumeError::NotADirectory(from.to_owned()));
    }
    match std::fs::create_dir(to) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && to.is_dir() => {}
        Err(e) => return Err(VolumeError::io("create", to, e)),
    }
    let mut copy = Copy::default();
    copy.dir_contents(from, to)?;
    apply_metadata(to, &meta)?;
    Ok(copy.bytes)
}

/// The state of one [`copy_tree`].
#[derive(Default)]
struct Copy {
    bytes: u64,
    /// First copy of each multiply-linked file, by (device, inode).
    links: HashMap<(u64, u64), PathBuf>,
}

impl Copy {
    fn dir_contents(&mut self, from: &Path, to: &Path) -> Result<(), VolumeError> {
        let entries = std::fs::read_dir(from).map_err(|e| VolumeError::io("read", from, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| VolumeError::io("read", from, e))?;
            let source = entry.path();
            let target = to.join(entry.file_name());
            let meta = std::fs::symlink_metadata(&source)
                .map_err(|e| VolumeError::io("stat", &source, e))?;
            self.entry(&source, &target, &meta)?;
        }
        Ok(())
    }

    fn entry(&mut self, source: &Path, target: &Path, meta: &Metadata) -> Result<(), VolumeError> {
        let kind = meta.file_type();
        if kind.is_dir() {
            std::fs::create_dir(target).map_err(|e| VolumeError::io("create", target, e))?;
            self.dir_contents(source, target)?;
        } else if kind.is_symlink() {
            let link =
                std::fs::read_link(source).map_err(|e| VolumeError::io("read link", source, e))?;
            std::os::unix::fs::symlink(&link, target)
                .map_err(|e| VolumeError::io("create link", target, e))?;
        } else if kind.is_file() {
            let key = (meta.dev(), meta.ino());
            if meta.nlink() > 1 {
                if let Some(first) = self.links.get(&key) {
                    return std::fs::hard_link(first, target)
                        .map_err(|e| VolumeError::io("link", target, e));
                }
                self.links.insert(key, target.to_owned());
            }
            self.bytes += copy_file(source, target)?;
        } else if kind.is_fifo() || kind.is_char_device() || kind.is_block_device() {
            let flag = if kind.is_fifo() {
                SFlag::S_IFIFO
            } else if kind.is_char_device() {
                SFlag::S_IFCHR
            } else {
                SFlag::S_IFBLK
            };
            nix::sys::stat::mknod(target, flag, Mode::from_bits_truncate(0o600), meta.rdev())
                .map_err(|e| VolumeError::io("create node", target, e.into()))?;
        } else {
            // Sockets mean nothing in a copy.
            return Ok(());
        }
        apply_metadata(target, meta)
    }
}

/// Copies a regular file's bytes, refusing to open `source` through a link
/// or to wait on a FIFO put there since it was listed.
fn copy_file(source: &Path, target: &Path) -> Result<u64, VolumeError> {
    let mut input = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(source)
        .map_err(|e| VolumeError::io("open", source, e))?;
    let meta = input
        .metadata()
        .map_err(|e| VolumeError::io("stat", source, e))?;
    if !meta.is_file() {
        let changed = std::io::Error::other("no longer a regular file");
        return Err(VolumeError::io("copy", source, changed));
    }
    let mut output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(target)
        .map_err(|e| VolumeError::io("create", target, e))?;
    std::io::copy(&mut input, &mut output).map_err(|e| VolumeError::io("copy", target, e))
}

/// Gives `path` the owner, mode and times of `meta`, without following a
/// link at `path`. The owner goes first: changing it clears set-id bits.
fn apply_metadata(path: &Path, meta: &Metadata) -> Result<(), VolumeError> {
    std::os::unix::fs::lchown(path, Some(meta.uid()), Some(meta.gid()))
        .map_err(|e| VolumeError::io("chown", path, e))?;
    if !meta.file_type().is_symlink() {
        let mode = std::fs::Permissions::from_mode(meta.mode() & 0o7777);
        std::fs::set_permissions(path, mode).map_err(|e| VolumeError::io("chmod", path, e))?;
    }
    let atime = TimeSpec::new(meta.atime(), meta.atime_nsec());
    let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    nix::sys::stat::utimensat(None, path, &atime, &mtime, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| VolumeError::io("set times of", path, e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    fn set_mtime(path: &Path, secs: i64) {
        let t = TimeSpec::new(secs, 0);
        nix::sys::stat::utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink).unwrap();
    }

    #[test]
    fn copy_tree_keeps_types_modes_owners_times_and_links() {
        if !is_root() {
            eprintln!(
                "SKIPPED copy_tree_keeps_types_modes_owners_times_and_links: needs root for chown"
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        let to = dir.path().join("to");
        std::fs::create_dir_all(from.join("sub/deeper")).unwrap();
        std::fs::write(from.join("sub/file"), b"hello").unwrap();
        std::os::unix::fs::chown(from.join("sub/file"), Some(1001), Some(1002)).unwrap();
        std::fs::set_permissions(
            from.join("sub/file"),
            std::fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
        std::fs::hard_link(from.join("sub/file"), from.join("hard")).unwrap();
        std::os::unix::fs::chown(from.join("sub"), Some(1000), Some(1000)).unwrap();
        std::fs::set_permissions(from.join("sub"), std::fs::Permissions::from_mode(0o750)).unwrap();
        symlink("/etc/passwd", from.join("abs-link")).unwrap();
        symlink("sub/file", from.join("rel-link")).unwrap();
        symlink("sub", from.join("dir-link")).unwrap();
        std::os::unix::fs::lchown(from.join("rel-link"), Some(7), Some(8)).unwrap();
        nix::unistd::mkfifo(&from.join("fifo"), Mode::from_bits_truncate(0o640)).unwrap();
        std::fs::set_permissions(&from, std::fs::Permissions::from_mode(0o711)).unwrap();
        std::os::unix::fs::chown(&from, Some(999), Some(999)).unwrap();
        set_mtime(&from.join("sub/file"), 1_000_000);
        set_mtime(&from.join("rel-link"), 2_000_000);
        set_mtime(&from.join("sub"), 3_000_000);

        let bytes = copy_tree(&from, &to).unwrap();
        assert_eq!(bytes, 5);

        let meta = |p: &str| std::fs::symlink_metadata(to.join(p)).unwrap();
        let root = std::fs::symlink_metadata(&to).unwrap();
        assert_eq!(
            (root.mode() & 0o7777, root.uid(), root.gid()),
            (0o711, 999, 999)
        );
        let sub = meta("sub");
        assert!(sub.is_dir());
        assert_eq!(
            (sub.mode() & 0o7777, sub.uid(), sub.gid()),
            (0o750, 1000, 1000)
        );
        assert_eq!(sub.mtime(), 3_000_000);
        assert!(meta("sub/deeper").is_dir());
        let file = meta("sub/file");
        assert_eq!(
            (file.mode() & 0o7777, file.uid(), file.gid()),
            (0o4755, 1001, 1002)
        );
        assert_eq!(file.mtime(), 1_000_000);
        assert_eq!(std::fs::read(to.join("sub/file")).unwrap(), b"hello");
        assert_eq!(meta("hard").ino(), file.ino(), "hard links stay linked");
        for (link, target) in [
            ("abs-link", "/etc/passwd"),
            ("rel-link", "sub/file"),
            ("dir-link", "sub"),
        ] {
            assert!(meta(link).file_type().is_symlink(), "{link}");
            assert_eq!(
                std::fs::read_link(to.join(link)).unwrap(),
                PathBuf::from(target)
            );
        }
        let rel = meta("rel-link");
        assert_eq!((rel.uid(), rel.gid(), rel.mtime()), (7, 8, 2_000_000));
        let fifo = meta("fifo");
        assert!(fifo.file_type().is_fifo());
        assert_eq!(fifo.mode() & 0o7777, 0o640);
    }

    #[test]
    fn copy_tree_refuses_a_link_as_source() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        symlink(dir.path().join("real"), dir.path().join("link")).unwrap();
        let err = copy_tree(&dir.path().join("link"), &dir.path().join("to")).unwrap_err();
        assert!(matches!(err, VolumeError::NotADirectory(_)));
        assert!(!dir.path().join("to").exists());
    }

    #[test]
    fn resolve_in_root_stays_inside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("run/app")).unwrap();
        std::fs::create_dir_all(root.join("var")).unwrap();
        symlink("/run", root.join("var/run")).unwrap();
        symlink("../../../../..", root.join("var/up")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        assert_eq!(
            resolve_in_root(root, "/var/run/app").unwrap(),
            Some(root.join("run/app"))
        );
        assert_eq!(
            resolve_in_root(root, "/var/up/run/app").unwrap(),
            Some(root.join("run/app")),
            "`..` stops at the root"
        );
        assert_eq!(resolve_in_root(root, "/missing/x").unwrap(), None);
        assert_eq!(resolve_in_root(root, "/loop/x").unwrap(), None);
    }

    #[test]
    fn seed_fills_only_empty_volumes() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("rootfs");
        std::fs::create_dir_all(image.join("etc/app")).unwrap();
        std::fs::write(image.join("etc/app/conf"), b"x=1").unwrap();
        let mountpoint = dir.path().join("vol/_data");
        std::fs::create_dir_all(&mountpoint).unwrap();
        let seed = Seed {
            volume: "vol".into(),
            destination: "/etc/app".into(),
            mountpoint: mountpoint.clone(),
            new: true,
        };
        assert!(needs_seed(&mountpoint).unwrap());
        assert_eq!(seed_volume(&image, &seed).unwrap(), 3);
        assert_eq!(std::fs::read(mountpoint.join("conf")).unwrap(), b"x=1");

        // Not empty any more: left alone.
        std::fs::write(image.join("etc/app/other"), b"y").unwrap();
        assert!(!needs_seed(&mountpoint).unwrap());
        assert_eq!(seed_volume(&image, &seed).unwrap(), 0);
        assert!(!mountpoint.join("other").exists());

        // Nothing in the image at that path.
        let empty = dir.path().join("empty/_data");
        std::fs::create_dir_all(&empty).unwrap();
        let missing = Seed {
            destination: "/nope".into(),
            mountpoint: empty.clone(),
            ..seed
        };
        assert_eq!(seed_volume(&image, &missing).unwrap(), 0);
        assert!(needs_seed(&empty).unwrap());
    }
}
