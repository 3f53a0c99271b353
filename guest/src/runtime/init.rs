//! The static init binary for `docker run --init`, embedded in the engine.
//!
//! `guest/build.rs` compiles `guest/init/main.rs` into a fully static
//! program; this module carries its bytes and installs them on disk, from
//! where the spec builder bind-mounts the file read-only at
//! `/sbin/docker-init` and runs the container's command below it.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The init program (`vmctl-init`).
pub const BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/vmctl-init"));

/// The file name the init is installed under.
pub const FILE_NAME: &str = "vmctl-init";

/// Where the init appears inside a container, as with Docker.
pub const CONTAINER_PATH: &str = "/sbin/docker-init";

/// Installs [`BINARY`] as `dir/vmctl-init` (mode 0755) and returns its path.
/// The file is replaced atomically (temporary file, fsync, rename), and only
/// when its content differs, so running containers keep a stable file.
pub fn install(dir: &Path) -> io::Result<PathBuf> {
    let path = dir.join(FILE_NAME);
    if let Ok(current) = fs::read(&path) {
        if current == BINARY {
            let mode = fs::metadata(&path)?.permissions().mode() & 0o7777;
            if mode != 0o755 {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
            }
            return Ok(path);
        }
    }
    fs::create_dir_all(dir)?;
    let temp = dir.join(format!(".{FILE_NAME}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = fs::File::create(&temp)?;
        file.write_all(BINARY)?;
        file.set_permissions(fs::Permissions::from_mode(0o755))?;
        file.sync_all()?;
        fs::rename(&temp, &path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::Duration;

    /// A 64-bit little-endian ELF file's program headers as
    /// `(p_type, p_offset, p_filesz)`.
    fn program_headers(elf: &[u8]) -> Vec<(u32, usize, usize)> {
        assert_eq!(&elf[..4], b"\x7fELF");
        assert_eq!(elf[4], 2, "64-bit ELF");
        assert_eq!(elf[5], 1, "little-endian ELF");
        let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
        let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
        let phoff = u64_at(0x20);
        let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
        (0..phnum)
            .map(|i| phoff + i * phentsize)
            .map(|h| (u32_at(h), u64_at(h + 8), u64_at(h + 32)))
            .collect()
    }

    #[test]
    fn binary_is_static() {
        const PT_DYNAMIC: u32 = 2;
        const PT_INTERP: u32 = 3;
        const DT_NEEDED: u64 = 1;
        let headers = program_headers(BINARY);
        assert!(!headers.is_empty());
        assert!(
            !headers.iter().any(|h| h.0 == PT_INTERP),
            "the init must need no ELF interpreter"
        );
        // A static-pie keeps a dynamic section for its own relocations, but
        // it must name no shared library.
        for &(_, offset, size) in headers.iter().filter(|h| h.0 == PT_DYNAMIC) {
            for entry in BINARY[offset..offset + size].chunks_exact(16) {
                let tag = u64::from_le_bytes(entry[..8].try_into().unwrap());
                assert_ne!(tag, DT_NEEDED, "the init must need no shared library");
            }
        }
    }

    #[test]
    fn install_is_idempotent_and_executable() {
        let dir = tempfile::tempdir().unwrap();
        let path = install(&dir.path().join("bin")).unwrap();
        assert_eq!(fs::read(&path).unwrap(), BINARY);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755);
        let before = fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(install(&dir.path().join("bin")).unwrap(), path);
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), before);
        fs::write(&path, b"stale").unwrap();
        install(&dir.path().join("bin")).unwrap();
        assert_eq!(fs::read(&path).unwrap(), BINARY);
        assert_eq!(fs::read_dir(dir.path().join("bin")).unwrap().count(), 1);
    }

    #[test]
    fn passes_on_the_exit_code() {
        let dir = tempfile::tempdir().unwrap();
        let init = install(dir.path()).unwrap();
        let status = Command::new(&init)
            .args(["--", "/bin/sh", "-c", "exit 3"])
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(3));
        let status = Command::new(&init)
            .args(["--", "/bin/sh", "-c", "kill -KILL $$"])
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(128 + 9));
        let status = Command::new(&init)
            .args(["--", "/nonexistent/program"])
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(127));
    }

    #[test]
    fn forwards_sigterm_and_reaps_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let init = install(dir.path()).unwrap();
        // The background sleep is orphaned when sh exits; the init (a child
        // subreaper) must still exit with sh's code.
        let mut child = Command::new(&init)
            .args([
                "--",
                "/bin/sh",
                "-c",
                "sleep 0.3 & trap 'exit 7' TERM; while :; do sleep 0.05; done",
            ])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: plain kill(2) of our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert_eq!(child.wait().unwrap().code(), Some(7));
    }
}
