//! The machine's per-boot vsock secret on the desktop (`vmctl_proto::auth`).
//!
//! The daemon draws a fresh one before every boot and writes it, mode 0600,
//! to `vm.secret` in the machine's runtime directory ([`super::MachinePaths::boot_secret`]):
//! the hypervisor hands that file to the guest (QEMU: `-fw_cfg …,file=`, so
//! the bytes never appear in an argv other local users can read), and a
//! daemon started again while the VM runs reads it back to adopt the VM.
//! The daemon removes it when the VM stops.

use std::io::Write;
use std::path::{Path, PathBuf};

use vmctl_proto::auth::{AuthError, Secret, SECRET_LEN};

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot draw a vsock secret")]
    Generate(#[source] AuthError),
    #[error("cannot write the vsock secret {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A fresh secret for the boot about to start, written to `path` (0600,
/// replacing the previous boot's atomically).
pub fn renew(path: &Path) -> Result<Secret, SecretError> {
    let secret = Secret::generate().map_err(SecretError::Generate)?;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".new");
    let temporary = PathBuf::from(temporary);
    let write = |source| SecretError::Write {
        path: path.to_owned(),
        source,
    };
    match std::fs::remove_file(&temporary) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(write(e)),
    }
    let mut file = private_file(&temporary).map_err(write)?;
    file.write_all(secret.as_bytes()).map_err(write)?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(write)?;
    Ok(secret)
}

#[cfg(unix)]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

/// The secret of the VM that runs now, as the daemon that booted it left
/// it; `None` when there is none (then the guest cannot be adopted).
pub fn load(path: &Path) -> Option<Secret> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() != SECRET_LEN {
        tracing::warn!(path = %path.display(), bytes = bytes.len(), "ignoring a malformed vsock secret");
        return None;
    }
    Secret::from_bytes(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_boot_gets_a_fresh_private_secret_that_a_restarted_daemon_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.secret");
        assert!(load(&path).is_none());
        let first = renew(&path).unwrap();
        assert_eq!(load(&path), Some(first.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let second = renew(&path).unwrap();
        assert_ne!(first, second, "a new boot, a new secret");
        assert_eq!(load(&path), Some(second));
        std::fs::write(&path, b"short").unwrap();
        assert!(load(&path).is_none());
    }
}
