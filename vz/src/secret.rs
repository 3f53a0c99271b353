//! The per-boot secret's way into a Virtualization.framework guest.
//!
//! VZ has no fw_cfg. The VMM reads the secret file the daemon wrote (0600,
//! 32 bytes) and listens on host vsock port
//! [`SECRET_PORT`](vmctl_proto::auth::SECRET_PORT) before the VM starts.
//! The guest's PID 1 connects there before any container can exist; the
//! FIRST connection gets the 32 raw bytes and a close, and the VMM stops
//! listening on that port for good, so nothing started later in the guest
//! can ask again. [`OneShot`] is that rule; `vm.rs` removes the listener.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use vmctl_proto::auth::{Secret, SECRET_LEN};

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the vsock secret {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the vsock secret {path} is malformed")]
    Malformed {
        path: PathBuf,
        #[source]
        source: vmctl_proto::auth::AuthError,
    },
    #[error("the vsock secret was already handed to the guest")]
    Spent,
    #[error("cannot hand the vsock secret to the guest")]
    Write(#[source] std::io::Error),
}

/// Reads the secret file the daemon wrote for this boot.
pub fn load(path: &Path) -> Result<Secret, SecretError> {
    let bytes = std::fs::read(path).map_err(|source| SecretError::Read {
        path: path.to_owned(),
        source,
    })?;
    Secret::from_bytes(&bytes).map_err(|source| SecretError::Malformed {
        path: path.to_owned(),
        source,
    })
}

/// The secret, handed out once.
pub struct OneShot(Mutex<Option<Secret>>);

impl OneShot {
    pub fn new(secret: Secret) -> Self {
        Self(Mutex::new(Some(secret)))
    }

    /// The secret the first time, `None` ever after.
    pub fn take(&self) -> Option<Secret> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Whether the secret is still to be handed out.
    pub fn pending(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Writes the 32 bytes to the guest's connection and closes it; any
    /// later connection is closed without a byte ([`SecretError::Spent`]).
    pub async fn hand_over<W: AsyncWrite + Unpin>(&self, mut guest: W) -> Result<(), SecretError> {
        let Some(secret) = self.take() else {
            let _ = guest.shutdown().await;
            return Err(SecretError::Spent);
        };
        let bytes: &[u8; SECRET_LEN] = secret.as_bytes();
        guest.write_all(bytes).await.map_err(SecretError::Write)?;
        guest.shutdown().await.map_err(SecretError::Write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn only_the_first_guest_connection_gets_the_secret() {
        let gate = OneShot::new(Secret::from_bytes(&[4u8; SECRET_LEN]).unwrap());
        assert!(gate.pending());
        let (ours, mut pid1) = tokio::io::duplex(64);
        gate.hand_over(ours).await.unwrap();
        let mut got = Vec::new();
        pid1.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, [4u8; SECRET_LEN], "32 bytes, then the close");
        assert!(!gate.pending());

        let (ours, mut late) = tokio::io::duplex(64);
        assert!(matches!(
            gate.hand_over(ours).await,
            Err(SecretError::Spent)
        ));
        let mut got = Vec::new();
        late.read_to_end(&mut got).await.unwrap();
        assert!(got.is_empty(), "a second asker learns nothing");
    }

    #[test]
    fn the_file_must_hold_exactly_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.secret");
        assert!(matches!(load(&path), Err(SecretError::Read { .. })));
        std::fs::write(&path, [1u8; SECRET_LEN]).unwrap();
        assert_eq!(load(&path).unwrap().as_bytes(), &[1u8; SECRET_LEN]);
        std::fs::write(&path, [1u8; SECRET_LEN - 1]).unwrap();
        assert!(matches!(load(&path), Err(SecretError::Malformed { .. })));
    }
}
