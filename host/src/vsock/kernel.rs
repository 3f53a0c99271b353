//! Kernel AF_VSOCK: on a Linux host with `/dev/vhost-vsock`, the guest's CID
//! is reachable directly (QEMU's `vhost-vsock-pci,guest-cid=N`).

use tokio_vsock::{VsockAddr, VsockStream};

use super::{AcceptFuture, ConnectFuture, GuestListener, GuestStream, VsockError, VsockTransport};

/// Whether this host can give guests a kernel vsock device.
pub fn is_available() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/vhost-vsock")
        .is_ok()
}

/// A guest CID for machine `name` on the host kernel's vsock: stable per
/// name, above the reserved 0–2, below 2^31.
pub fn guest_cid(name: &str) -> u32 {
    // FNV-1a: stable across builds, unlike std's hasher.
    let hash = name.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    3 + hash % 0x7fff_fff0
}

pub struct KernelVsock {
    cid: u32,
}

impl KernelVsock {
    pub fn new(cid: u32) -> Self {
        Self { cid }
    }
}

impl VsockTransport for KernelVsock {
    fn name(&self) -> &'static str {
        "af-vsock"
    }

    fn connect(&self, port: u32) -> ConnectFuture<'_> {
        let addr = VsockAddr::new(self.cid, port);
        Box::pin(async move {
            match VsockStream::connect(addr).await {
                Ok(stream) => Ok(Box::new(vmctl_proto::framing::Framed::new(stream)) as _),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    Err(VsockError::Refused { port })
                }
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                    Err(VsockError::Refused { port })
                }
                Err(source) => Err(VsockError::Io { port, source }),
            }
        })
    }

    fn listen(&self, port: u32) -> Result<Box<dyn GuestListener>, VsockError> {
        let listener =
            tokio_vsock::VsockListener::bind(VsockAddr::new(tokio_vsock::VMADDR_CID_ANY, port))
                .map_err(|source| VsockError::Listen {
                    port,
                    path: "/dev/vsock".into(),
                    source,
                })?;
        Ok(Box::new(KernelListener {
            listener,
            cid: self.cid,
        }))
    }
}

/// Accepts only connections from this machine's guest.
struct KernelListener {
    listener: tokio_vsock::VsockListener,
    cid: u32,
}

impl GuestListener for KernelListener {
    fn accept(&mut self) -> AcceptFuture<'_> {
        Box::pin(async move {
            loop {
                let (stream, peer) = self.listener.accept().await?;
                if peer.cid() == self.cid {
                    return Ok(Box::new(vmctl_proto::framing::Framed::new(stream)) as GuestStream);
                }
            }
        })
    }
}
