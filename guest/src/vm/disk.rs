//! The data disk: formatted ext4 on first boot (a zero-filled disk), mounted
//! at `/var/lib/vmctl` on every boot, so images, containers and volumes
//! survive VM restarts. A disk holding something that is not ext is never
//! formatted: the engine then runs from memory, and the console says why.

use std::io::Read;
use std::path::Path;
use std::process::Command;

use nix::mount::{mount, MsFlags};

/// What [`prepare`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum DiskOutcome {
    Mounted,
    FormattedAndMounted,
    /// Running from tmpfs, with the reason.
    Memory(String),
}

/// What is on the disk's first bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Contents {
    /// An ext2/3/4 superblock (magic 0xEF53 at byte 1080).
    Ext,
    /// All zeros: never used.
    Empty,
    /// Something else.
    Unknown,
}

/// Looks at the first 64 KiB of `device`.
pub fn inspect(device: &Path) -> std::io::Result<Contents> {
    let mut head = vec![0u8; 64 * 1024];
    let mut file = std::fs::File::open(device)?;
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    head.truncate(filled);
    if head.len() >= 1082 && head[1080] == 0x53 && head[1081] == 0xEF {
        Ok(Contents::Ext)
    } else if head.iter().all(|&b| b == 0) {
        Ok(Contents::Empty)
    } else {
        Ok(Contents::Unknown)
    }
}

/// Formats (when empty) and mounts `device` at `target`.
pub fn prepare(device: &Path, target: &Path) -> DiskOutcome {
    let contents = match inspect(device) {
        Ok(contents) => contents,
        Err(e) => return DiskOutcome::Memory(format!("cannot read {}: {e}", device.display())),
    };
    let formatted = match contents {
        Contents::Ext => false,
        Contents::Empty => {
            if let Err(reason) = format(device) {
                return DiskOutcome::Memory(reason);
            }
            true
        }
        Contents::Unknown => {
            return DiskOutcome::Memory(format!(
                "{} holds data that is not an ext file system; not formatting it",
                device.display()
            ))
        }
    };
    let _ = std::fs::create_dir_all(target);
    // Online discard: blocks ext4 frees (a removed image, container or
    // volume) are unmapped on the virtio disk at the next journal commit,
    // and the host punches them out of its sparse disk file, so deleting in
    // the VM gives the space back to the desktop.
    if let Err(e) = mount(
        Some(device),
        target,
        Some("ext4"),
        MsFlags::MS_NOATIME,
        Some("discard"),
    ) {
        return DiskOutcome::Memory(format!("cannot mount {}: {e}", device.display()));
    }
    if formatted {
        DiskOutcome::FormattedAndMounted
    } else {
        DiskOutcome::Mounted
    }
}

fn format(device: &Path) -> Result<(), String> {
    let status = Command::new("/usr/sbin/mke2fs")
        .args(["-t", "ext4", "-q", "-F", "-L", "vmctl-data"])
        .args(["-E", "lazy_itable_init=1,lazy_journal_init=1"])
        .arg(device)
        .status()
        .map_err(|e| format!("cannot run mke2fs: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("mke2fs {} failed: {status}", device.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn tells_empty_ext_and_unknown_apart() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(1 << 20).unwrap();
        assert_eq!(inspect(file.path()).unwrap(), Contents::Empty);
        file.seek(SeekFrom::Start(1080)).unwrap();
        file.write_all(&[0x53, 0xEF]).unwrap();
        assert_eq!(inspect(file.path()).unwrap(), Contents::Ext);
        file.seek(SeekFrom::Start(1080)).unwrap();
        file.write_all(&[1, 2]).unwrap();
        assert_eq!(inspect(file.path()).unwrap(), Contents::Unknown);
    }
}
