//! vsock transports: how the host opens a stream to a guest vsock port.
//!
//! One trait, [`VsockTransport`], whatever carries the bytes:
//! - [`hybrid`] (unix): a unix socket speaking `CONNECT <port>\n` / `OK …\n`, the
//!   protocol of Firecracker and Cloud Hypervisor, which QEMU gets through the
//!   vhost-user backend `vhost-device-vsock` (used when the host has no
//!   `/dev/vhost-vsock`, and on macOS/Windows with QEMU);
//! - [`kernel`] (Linux): AF_VSOCK to the guest's CID, with `vhost-vsock-pci`.
//!
//! [`select`] picks the one this desktop has (Windows: none yet).
//!
//! Virtualization.framework's socket device and Hyper-V sockets join here as
//! backends of their own when those hypervisors land. The daemon holds an
//! `Arc<dyn VsockTransport>` and never knows which one it has: always
//! wrapped in [`auth::Authenticated`], so every stream it gets proved the
//! VM's per-boot secret.

pub mod auth;
#[cfg(unix)]
pub mod hybrid;
#[cfg(target_os = "linux")]
pub mod kernel;
pub mod pool;
pub mod vhost_user;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::hypervisor::VsockDevice;
use vhost_user::BackendPaths;

/// A byte stream to a guest port; shutdown of the write half reaches the
/// guest as a half-close.
pub trait GuestIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> GuestIo for T {}

pub type GuestStream = Box<dyn GuestIo>;

pub type ConnectFuture<'a> =
    Pin<Box<dyn Future<Output = Result<GuestStream, VsockError>> + Send + 'a>>;

/// Opens streams to ports of one guest.
pub trait VsockTransport: Send + Sync {
    /// The transport's name for logs and `vmctl machine status`.
    fn name(&self) -> &'static str;

    /// Connects to guest `port`. A port nobody listens on fails with
    /// [`VsockError::Refused`], quickly.
    fn connect(&self, port: u32) -> ConnectFuture<'_>;

    /// Listens on host `port` for connections the guest opens (framed, like
    /// every host ↔ guest stream). The default: this transport cannot.
    fn listen(&self, port: u32) -> Result<Box<dyn GuestListener>, VsockError> {
        Err(VsockError::Unsupported {
            port,
            transport: self.name(),
        })
    }
}

pub type AcceptFuture<'a> = Pin<Box<dyn Future<Output = std::io::Result<GuestStream>> + Send + 'a>>;

/// Connections the guest opens to one host port.
pub trait GuestListener: Send {
    fn accept(&mut self) -> AcceptFuture<'_>;
}

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("cannot reach the VM's vsock device at {path}")]
    Device {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the guest refused vsock port {port} (nothing listens there yet)")]
    Refused { port: u32 },
    #[error("vsock port {port}: unexpected handshake answer {answer:?}")]
    Handshake { port: u32, answer: String },
    #[error("{transport} cannot listen on host vsock port {port}")]
    Unsupported { port: u32, transport: &'static str },
    #[error("cannot listen on host vsock port {port} at {path}")]
    Listen {
        port: u32,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("vsock port {port}: the peer did not prove the VM's per-boot secret")]
    Auth {
        port: u32,
        #[source]
        source: vmctl_proto::auth::AuthError,
    },
    #[error(
        "vsock port {port}: no per-boot secret (the VM was not booted by a daemon that left one)"
    )]
    NoSecret { port: u32 },
    #[error("vmctl has no vsock transport on {platform} yet")]
    NoTransport { platform: &'static str },
    #[error("vsock port {port}")]
    Io {
        port: u32,
        #[source]
        source: std::io::Error,
    },
}

/// The transport for machine `name`: hybrid vsock on `hybrid_socket` with
/// no backend when the VMM itself serves it (`vmm_serves_vsock`: VZ); the
/// host kernel's vsock when it has `/dev/vhost-vsock` (unless
/// `VMCTL_VSOCK=hybrid`), setting `device` to it; else the vhost-user
/// `backend` (returned: the caller starts it) and hybrid vsock on
/// `hybrid_socket`. Windows has none of these yet.
pub fn select(
    name: &str,
    hybrid_socket: &Path,
    device: &mut VsockDevice,
    backend: BackendPaths,
    vmm_serves_vsock: bool,
) -> Result<(Option<BackendPaths>, Arc<dyn VsockTransport>), VsockError> {
    #[cfg(unix)]
    if vmm_serves_vsock {
        return Ok((
            None,
            Arc::new(hybrid::HybridVsock::new(hybrid_socket.to_owned())),
        ));
    }
    #[cfg(target_os = "linux")]
    {
        let hybrid_forced = std::env::var("VMCTL_VSOCK").is_ok_and(|v| v == "hybrid");
        if !hybrid_forced && kernel::is_available() {
            let cid = kernel::guest_cid(name);
            *device = VsockDevice::Kernel { cid };
            return Ok((None, Arc::new(kernel::KernelVsock::new(cid))));
        }
    }
    #[cfg(unix)]
    {
        let _ = (name, &device);
        Ok((
            Some(backend),
            Arc::new(hybrid::HybridVsock::new(hybrid_socket.to_owned())),
        ))
    }
    #[cfg(not(unix))]
    {
        let _ = (name, hybrid_socket, device, backend, vmm_serves_vsock);
        Err(VsockError::NoTransport {
            platform: std::env::consts::OS,
        })
    }
}
