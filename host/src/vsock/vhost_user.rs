//! The vhost-user vsock backend process (`vhost-device-vsock`, rust-vmm):
//! it gives QEMU a virtio-vsock device without `/dev/vhost-vsock` and exposes
//! the guest's ports as a hybrid-vsock unix socket ([`super::hybrid`]).
//! Started before QEMU (QEMU connects to its vhost-user socket at launch),
//! supervised by the daemon, stopped after the VM.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{self, Owned, ProcessError};

/// Environment variable naming the vhost-device-vsock binary.
pub const BACKEND_ENV: &str = "VMCTL_VHOST_VSOCK";
const PROGRAM: &str = "vhost-device-vsock";

/// The guest's CID on the vhost-user device.
pub const GUEST_CID: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(
        "{PROGRAM} was not found (cargo install vhost-device-vsock --locked, or set {BACKEND_ENV})"
    )]
    NotInstalled,
    #[error("starting {PROGRAM}")]
    Spawn(#[source] ProcessError),
    #[error("{PROGRAM} did not open {0} (see the daemon log)")]
    NoSocket(PathBuf),
}

/// Where the backend listens.
#[derive(Debug, Clone)]
pub struct BackendPaths {
    /// vhost-user control socket, for QEMU.
    pub vhost_socket: PathBuf,
    /// Hybrid-vsock socket, for the host.
    pub vsock_socket: PathBuf,
    pub pid_file: PathBuf,
    pub log: PathBuf,
}

/// Starts the backend and waits until QEMU can connect to it.
pub fn start(paths: &BackendPaths) -> Result<Owned, BackendError> {
    let binary = crate::binaries::find(PROGRAM, BACKEND_ENV).ok_or(BackendError::NotInstalled)?;
    for stale in [&paths.vhost_socket, &paths.vsock_socket] {
        let _ = std::fs::remove_file(stale);
    }
    let mut command = Command::new(binary);
    command.arg("--vm").arg(format!(
        "guest-cid={GUEST_CID},socket={},uds-path={}",
        paths.vhost_socket.display(),
        paths.vsock_socket.display()
    ));
    private_sockets(&mut command);
    let owned = Owned::spawn(command, &paths.log, &paths.pid_file).map_err(BackendError::Spawn)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    // The backend binds the hybrid socket before it serves QEMU's.
    while !paths.vhost_socket.exists() {
        if owned.has_exited() || Instant::now() > deadline {
            owned.forget_pid_file();
            return Err(BackendError::NoSocket(paths.vhost_socket.clone()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for socket in [&paths.vsock_socket, &paths.vhost_socket] {
        if let Err(e) = make_private(socket) {
            tracing::warn!(socket = %socket.display(), error = %e, "cannot make a vsock socket 0600");
        }
    }
    Ok(owned)
}

/// The backend creates its sockets with no access for anyone else: whoever
/// can connect to the hybrid socket reaches every guest port (the secret
/// still stands in the way, but nothing else should need to).
fn private_sockets(command: &mut Command) {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: umask is async-signal-safe and touches no memory.
        unsafe {
            command.pre_exec(|| {
                libc::umask(0o077);
                Ok(())
            });
        }
    }
    #[cfg(not(unix))]
    let _ = command;
}

/// Mode 0600 on a socket the backend made (a socket's mode is what guards a connect).
fn make_private(socket: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
    }
    #[cfg(not(unix))]
    {
        let _ = socket;
        Ok(())
    }
}

/// The backend an earlier daemon started, if it still runs.
pub fn adopt(paths: &BackendPaths) -> Option<Owned> {
    let pid = process::find_recorded(&paths.pid_file, &paths.vhost_socket)?;
    Owned::adopt(pid, &paths.pid_file).ok()
}
