//! Unix-socket endpoints (Linux, macOS): a socket file in the machine's
//! runtime directory, mode 0600, so only the desktop user can connect (a
//! socket's mode is what guards a connect).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tokio::net::UnixListener;

use super::{AcceptFuture, LocalListener, LocalStream};

/// Binds a unix socket only its owner may use (0600), replacing a stale one
/// and creating its directory.
pub fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

impl LocalListener for UnixListener {
    fn accept(&mut self) -> AcceptFuture<'_> {
        Box::pin(async move {
            let (stream, _) = UnixListener::accept(self).await?;
            Ok(Box::new(stream) as LocalStream)
        })
    }
}
