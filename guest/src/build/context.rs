//! A build's scratch directory under `<root>/build/<id>/`: the build
//! context unpacked from the client's tar (`context/`), and the mounts and
//! upper directories of its COPY steps. Removed when the build ends, and
//! leftovers of an engine that died mid-build at the next start.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::image::ImageError;
use crate::runtime::rootfs;

/// The most bytes a Dockerfile may have.
pub const MAX_DOCKERFILE: u64 = 4 << 20;

/// A build's scratch directory; removed (its mounts first) when dropped.
#[derive(Debug)]
pub struct Scratch {
    dir: PathBuf,
    mounts: std::sync::Mutex<Vec<PathBuf>>,
}

impl Scratch {
    /// A new, empty scratch directory under `builds` (`<root>/build`).
    pub fn new(builds: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(builds)?;
        let dir = builds.join(format!("{:016x}", rand::random::<u64>()));
        std::fs::create_dir(&dir)?;
        std::fs::create_dir(dir.join("context"))?;
        Ok(Self {
            dir,
            mounts: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Where the context is unpacked.
    pub fn context(&self) -> PathBuf {
        self.dir.join("context")
    }

    /// Where the context's tar is kept as received.
    pub fn context_tar(&self) -> PathBuf {
        self.dir.join("context.tar")
    }

    /// A fresh directory inside the scratch directory, named `name-N`.
    pub fn fresh(&self, name: &str) -> std::io::Result<PathBuf> {
        let dir = self
            .dir
            .join(format!("{name}-{:08x}", rand::random::<u32>()));
        std::fs::create_dir(&dir)?;
        Ok(dir)
    }

    /// Mounts the overlay of `lower` (+ `dir/upper`) at `dir/merged`, to be
    /// unmounted by [`Self::unmount`] or when the scratch goes.
    pub fn mount(&self, lower: &[PathBuf], dir: &Path) -> Result<PathBuf, rootfs::RootfsError> {
        let merged = dir.join("merged");
        rootfs::mount_overlay(lower, &dir.join("upper"), &dir.join("work"), &merged)?;
        self.mounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(merged.clone());
        Ok(merged)
    }

    /// Unmounts what [`Self::mount`] mounted at `merged`.
    pub fn unmount(&self, merged: &Path) -> Result<(), rootfs::RootfsError> {
        rootfs::unmount(merged)?;
        self.mounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|m| m != merged);
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for merged in self
            .mounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = rootfs::unmount(&merged);
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove a build's scratch directory");
        }
    }
}

/// Removes what builds of an earlier engine left under `builds`: their
/// mounts (lazily) and directories.
pub fn clean_leftovers(builds: &Path) {
    let Ok(entries) = std::fs::read_dir(builds) else {
        return;
    };
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let prefix = builds.display().to_string();
    for line in mounts.lines() {
        if let Some(target) = line.split(' ').nth(1) {
            if target.starts_with(&prefix) {
                let _ = rootfs::unmount(Path::new(target));
            }
        }
    }
    for entry in entries.flatten() {
        let _ = std::fs::remove_dir_all(entry.path());
    }
}

/// Unpacks the client's context tar (plain, gzip or zstd) into `dest` with
/// the checked unpacker layers use: no entry lands outside `dest`, none
/// writes through a symlink, device nodes are refused.
pub fn unpack(body: impl Read, dest: &Path) -> Result<(), ImageError> {
    let tar = crate::image::unpack::decompress(body)?;
    crate::image::unpack::unpack_layer(BlockPadded::new(tar), dest).map(|_| ())
}

/// `tar` (plain) as [`BlockPadded`] completes it.
pub fn padded<R: Read>(tar: R) -> impl Read {
    BlockPadded::new(tar)
}

/// A tar stream completed to a whole 512-byte block where it ends.
///
/// The docker CLI sends a Dockerfile from outside the context (`-f ../x`,
/// `-f -`) inside the context tar, rewritten by moby's
/// `ReplaceFileTarWrapper`, which closes its pipe before its tar writer: the
/// stream stops right after the last entry's data, with neither the padding
/// nor the end-of-archive blocks. Go's tar reader (dockerd's) takes an end
/// of stream there for the end of the archive; the tar crate wants the
/// padding first, which this supplies (zeros), and then ends too.
struct BlockPadded<R> {
    inner: R,
    read: u64,
    /// Zeros still to give once `inner` has ended.
    padding: Option<u64>,
}

impl<R> BlockPadded<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            read: 0,
            padding: None,
        }
    }
}

impl<R: Read> Read for BlockPadded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.padding.is_none() {
            let n = self.inner.read(buf)?;
            if n > 0 || buf.is_empty() {
                self.read += n as u64;
                return Ok(n);
            }
            self.padding = Some((512 - self.read % 512) % 512);
        }
        let left = self.padding.unwrap_or(0);
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        buf[..n].fill(0);
        self.padding = Some(left - n as u64);
        Ok(n)
    }
}

/// The Dockerfile at `name` (a path inside the context, resolved in it).
pub fn read_dockerfile(context: &Path, name: &str) -> Result<String, String> {
    let relative = super::copy::clean_in_root(name);
    match crate::runtime::in_root::read(context, &relative, MAX_DOCKERFILE) {
        Ok(Some(bytes)) => String::from_utf8(bytes)
            .map_err(|_| format!("the Dockerfile ({name}) is not UTF-8 text")),
        Ok(None) => Err(format!("Cannot locate specified Dockerfile: {name}")),
        Err(e) => Err(format!("cannot read the Dockerfile ({name}): {e}")),
    }
}
