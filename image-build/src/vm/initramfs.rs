//! The initramfs tree: every file, directory, link and device node the
//! guest boots with, by path, then written as one sorted cpio archive
//! and compressed with zstd (which the kernel decompresses fastest).
//!
//! The layout is a contract with vmctl-guest's PID 1 (`guest/src/vm/`):
//! `/init` is vmctl-guest, `/etc/vmctl/modules` lists the modules in load
//! order, `/usr/share/vmctl/images/` holds the built-in images, `nft` and
//! `mke2fs` are in `/usr/sbin`, busybox and its applets in `/bin` and friends.

use std::collections::BTreeMap;
use std::io::Write;

use super::cpio::{CpioWriter, Node};
use super::VmImageError;

/// zstd level: high enough to keep the image small, fast to decompress at any level.
const ZSTD_LEVEL: i32 = 15;

#[derive(Default)]
pub struct Tree {
    entries: BTreeMap<String, (Node, u32)>,
}

impl Tree {
    /// Adds `path` (absolute) and any missing parent directories.
    pub fn add(&mut self, path: &str, node: Node, perm: u32) {
        let path = path.trim_start_matches('/');
        let mut parent = String::new();
        for part in path
            .split('/')
            .collect::<Vec<_>>()
            .iter()
            .rev()
            .skip(1)
            .rev()
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            self.entries
                .entry(parent.clone())
                .or_insert((Node::Dir, 0o755));
        }
        self.entries.insert(path.to_owned(), (node, perm));
    }

    pub fn dir(&mut self, path: &str, perm: u32) {
        self.add(path, Node::Dir, perm);
    }

    pub fn file(&mut self, path: &str, data: Vec<u8>, perm: u32) {
        let executable = perm & 0o111 != 0;
        self.add(path, Node::File { data, executable }, perm);
    }

    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path.trim_start_matches('/'))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The compressed archive. Sorted paths put every directory before its
    /// contents (`a` < `a/b`).
    pub fn archive(&self) -> Result<Vec<u8>, VmImageError> {
        let io = VmImageError::Archive;
        let mut encoder = zstd::Encoder::new(Vec::new(), ZSTD_LEVEL).map_err(io)?;
        encoder.include_checksum(true).map_err(io)?;
        let mut cpio = CpioWriter::new(encoder);
        for (path, (node, perm)) in &self.entries {
            cpio.entry(path, node, *perm).map_err(io)?;
        }
        let mut encoder = cpio.finish().map_err(io)?;
        encoder.flush().map_err(io)?;
        encoder.finish().map_err(io)
    }
}
