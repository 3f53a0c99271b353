//! Forwarders: host sockets whose connections become guest vsock streams.
//!
//! [`api`] forwards the Docker API socket. [`ports`] keeps one desktop
//! listener per published port and manual rule ([`tcp`], [`udp`]), fed by
//! the guest's reservations ([`host_ports`]) and its port list ([`watch`]).

pub mod api;
pub mod holder;
pub mod host_ports;
pub mod ports;
pub mod stats;
pub mod tcp;
pub mod udp;
pub mod watch;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixListener;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("cannot listen on {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Binds a unix socket only its owner may use (0600), replacing a stale one.
pub fn bind_private(path: &Path) -> Result<UnixListener, ForwardError> {
    let bind = |source| ForwardError::Bind {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(bind)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind(e)),
    }
    let listener = UnixListener::bind(path).map_err(bind)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind)?;
    Ok(listener)
}

/// Copies bytes both ways until both directions ended. An EOF on one side
/// becomes a write shutdown on the other (half-close), so a client that
/// closes its sending side still gets the whole answer.
pub async fn pipe<A, B>(mut a: A, mut b: B) -> std::io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, 64 * 1024, 64 * 1024).await
}
