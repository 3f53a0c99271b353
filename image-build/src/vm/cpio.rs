//! A deterministic writer of newc cpio archives (the initramfs format).
//!
//! Format primer: each entry is a 110-byte ASCII header (`070701` and
//! thirteen 8-digit hex fields: inode, mode, uid, gid, nlink, mtime, size,
//! dev major/minor, rdev major/minor, name size with its NUL, checksum),
//! the name and a NUL padded to 4 bytes, then the data padded to 4 bytes.
//! `TRAILER!!!` ends the archive. Here every mtime, uid and gid is 0 and
//! inodes are numbered in write order, so the same entries give the same
//! bytes on any machine.

use std::io::{self, Write};

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// What one archive entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File { data: Vec<u8>, executable: bool },
    Symlink(String),
    CharDevice { major: u32, minor: u32 },
}

pub struct CpioWriter<W: Write> {
    out: W,
    next_inode: u32,
    written: u64,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            next_inode: 1,
            written: 0,
        }
    }

    /// Appends `path` (relative, no leading `/`) with `mode`'s permission bits.
    pub fn entry(&mut self, path: &str, node: &Node, perm: u32) -> io::Result<()> {
        let (kind, data, rdev): (u32, &[u8], (u32, u32)) = match node {
            Node::Dir => (S_IFDIR, &[], (0, 0)),
            Node::File { data, .. } => (S_IFREG, data, (0, 0)),
            Node::Symlink(target) => (S_IFLNK, target.as_bytes(), (0, 0)),
            Node::CharDevice { major, minor } => (S_IFCHR, &[], (*major, *minor)),
        };
        let nlink = if kind == S_IFDIR { 2 } else { 1 };
        let inode = self.next_inode;
        self.next_inode += 1;
        self.raw(path, inode, kind | (perm & 0o7777), nlink, data, rdev)
    }

    fn raw(
        &mut self,
        name: &str,
        inode: u32,
        mode: u32,
        nlink: u32,
        data: &[u8],
        rdev: (u32, u32),
    ) -> io::Result<()> {
        let size = u32::try_from(data.len()).map_err(|_| io::Error::other("file over 4 GiB"))?;
        let header = format!(
            "070701{inode:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0,
            0,
            0,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let pad = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..pad])
    }

    /// Writes the trailer; answers the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.raw("TRAILER!!!", 0, 0, 1, &[], (0, 0))?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busybox_cpio_lists_what_was_written() {
        let mut w = CpioWriter::new(Vec::new());
        w.entry("bin", &Node::Dir, 0o755).unwrap();
        let data = b"hello".to_vec();
        w.entry(
            "bin/x",
            &Node::File {
                data,
                executable: true,
            },
            0o755,
        )
        .unwrap();
        w.entry("bin/sh", &Node::Symlink("/bin/busybox".into()), 0o777)
            .unwrap();
        w.entry(
            "dev/console",
            &Node::CharDevice { major: 5, minor: 1 },
            0o600,
        )
        .unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        if !std::path::Path::new("/bin/busybox").exists() {
            eprintln!("SKIPPED the listing check: /bin/busybox is missing");
            return;
        }
        let mut child = std::process::Command::new("/bin/busybox")
            .args(["cpio", "-t", "-v"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        let listing = String::from_utf8(out.stdout).unwrap();
        for needle in [
            "drwxr-xr-x",
            "bin/x",
            "bin/sh -> /bin/busybox",
            "crw-------",
            "dev/console",
        ] {
            assert!(
                listing.contains(needle),
                "{needle} missing from:\n{listing}"
            );
        }
    }
}
