//! The front door of the VM's vsock services (API 2375, control 1025,
//! forward 1026): a listener that hands a service only streams that proved
//! the per-boot secret (`vmctl_proto::auth`, the server's side).
//!
//! Each accepted stream is framed (`vmctl_proto::framing`) and runs the
//! handshake in a task of its own, bounded by
//! [`HANDSHAKE_LIMIT`](vmctl_proto::auth::HANDSHAKE_LIMIT), so a silent or
//! slow client delays no one else; a stream that fails is closed before the
//! service reads a byte of it. Whoever opened it — a local desktop user on
//! the host kernel's vsock, a container that got hold of `AF_VSOCK` — learns
//! nothing but the server's nonce.

use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_vsock::{VsockListener, VsockStream};
use vmctl_proto::auth::{self, Secret, HANDSHAKE_LIMIT};
use vmctl_proto::framing::Framed;

/// A stream that proved the secret.
pub type HostStream = Framed<VsockStream>;

/// Accept queue of the guest's vsock services (capped by `net.core.somaxconn`).
const BACKLOG: i32 = 4096;

/// Proven streams waiting for the service to take them.
const QUEUE: usize = 256;

/// Streams of one vsock port that proved the secret.
pub struct AuthListener {
    port: u32,
    proven: mpsc::Receiver<HostStream>,
}

impl AuthListener {
    /// Listens on vsock `port` (any CID); must run inside a tokio runtime.
    pub fn bind(port: u32, secret: Secret) -> anyhow::Result<Self> {
        let listener = bind(port)?;
        let (sender, proven) = mpsc::channel(QUEUE);
        tokio::spawn(admit(listener, port, secret, sender));
        Ok(Self { port, proven })
    }

    /// The next stream that proved the secret.
    pub async fn accept(&mut self) -> std::io::Result<HostStream> {
        self.proven.recv().await.ok_or_else(|| {
            std::io::Error::other(format!("vsock port {} stopped listening", self.port))
        })
    }
}

impl crate::api::Listener for AuthListener {
    type Io = HostStream;
    async fn accept(&mut self) -> std::io::Result<Self::Io> {
        AuthListener::accept(self).await
    }
}

/// Accepts until the [`AuthListener`] is dropped; each stream proves the
/// secret in its own task.
async fn admit(
    listener: VsockListener,
    port: u32,
    secret: Secret,
    proven: mpsc::Sender<HostStream>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = proven.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(port, error = %e, "vsock accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let secret = secret.clone();
        let proven = proven.clone();
        tokio::spawn(async move {
            let mut stream = Framed::new(stream);
            match auth::serve(&mut stream, &secret, port, HANDSHAKE_LIMIT).await {
                Ok(()) => {
                    let _ = proven.send(stream).await;
                }
                Err(e) => tracing::warn!(
                    port,
                    peer_cid = peer.cid(),
                    error = %e,
                    "closed a vsock connection that did not prove the host's secret"
                ),
            }
        });
    }
}

/// The host's vsock CID, as the guest sees it.
pub const HOST_CID: u32 = 2;

/// A blocking vsock stream to the host's `port` whose reads and writes give
/// up after `limit` (the guest's few blocking requests to the host: the
/// secret at boot, port reservations).
pub fn connect_host(port: u32, limit: Duration) -> std::io::Result<std::os::fd::OwnedFd> {
    use nix::sys::socket::{connect, setsockopt, socket, sockopt};
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, VsockAddr};
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let limit = nix::sys::time::TimeVal::new(limit.as_secs() as i64, 0);
    setsockopt(&fd, sockopt::ReceiveTimeout, &limit)?;
    setsockopt(&fd, sockopt::SendTimeout, &limit)?;
    connect(fd.as_raw_fd(), &VsockAddr::new(HOST_CID, port))?;
    Ok(fd)
}

/// A vsock listener on `port` (any CID) whose accept queue holds
/// [`BACKLOG`] connections: the vsock crate listens with 128, and a burst
/// beyond the queue is refused outright (vsock has no SYN retry), so 200
/// clients connecting at once through one forward would lose some.
fn bind(port: u32) -> anyhow::Result<VsockListener> {
    use std::os::fd::AsFd;
    let listener = VsockListener::bind(tokio_vsock::VsockAddr::new(
        tokio_vsock::VMADDR_CID_ANY,
        port,
    ))
    .with_context(|| format!("cannot listen on vsock port {port}"))?;
    // listen(2) again on a listening socket only changes its queue length.
    let backlog =
        nix::sys::socket::Backlog::new(BACKLOG).unwrap_or(nix::sys::socket::Backlog::MAXCONN);
    nix::sys::socket::listen(&listener.as_fd(), backlog)
        .with_context(|| format!("cannot deepen the accept queue of vsock port {port}"))?;
    Ok(listener)
}
