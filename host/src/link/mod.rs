//! The forward link: published ports (TCP and UDP) and `vmctl port` rules
//! into the VM through a NIC instead of vsock (Linux with QEMU; elsewhere
//! there is none and vsock carries them).
//!
//! Why: under emulation a relay in the guest is what a forwarded byte costs
//! most (a wake-up, a read and a write per message, and vsock's 4 KiB
//! packets), and no relay reached half of raw vsock's throughput. The guest
//! kernel's own TCP receiving 64 KiB frames from a virtio-net NIC was 2.2×
//! faster than raw vsock, and as fast per round trip (`vmctl-bench
//! vm-ports-ideas`, BENCHMARKS.md, issue 19). So the VM gets a second NIC
//! whose far end is a tap in a network namespace of its own, made by a
//! helper process (`vmctl __forward-link`, [`helper`]); the daemon asks
//! the helper for a socket in that namespace connecting to a container (or
//! to the guest's link address, which the guest maps to its loopback, for a
//! rule), and relays the desktop's connection into it on the desktop: the
//! host kernel does TCP with the guest's, and nothing of ours runs in the
//! guest's data path.
//!
//! The namespace holds the tap and loopback only: its one route leads to
//! the guest, nothing in it listens, and the desktop's own network is not
//! in it. A user namespace makes it when the daemon is not root.
//!
//! Daemon ↔ helper, on the unix socket `run/link.sock` (the machine's
//! private run directory), one request per connection:
//! - `T`: the tap's descriptor (once, for QEMU's `-netdev tap,fd=`);
//! - `C` + IPv4 address (4 bytes) + port (2 bytes, big-endian): a TCP
//!   socket of the namespace connecting there (non-blocking, in progress);
//! - `U` + the same: a UDP socket of the namespace connected there;
//! - `Q`: the helper ends (the daemon stopped its VM); answered `0`.
//!
//! Answer: `0` with the descriptor (SCM_RIGHTS), or `1` + errno (4 bytes,
//! big-endian).

#[cfg(target_os = "linux")]
pub mod helper;

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The daemon's handle on a machine's link.
pub struct Link {
    socket: PathBuf,
    /// The guest has its side up: it answered through the link.
    ready: AtomicBool,
    /// The tap, held open for the daemon's life (the VMM has its own copy):
    /// a VMM started again (a second boot attempt) gets the same one.
    #[cfg(target_os = "linux")]
    tap: std::sync::OnceLock<std::os::fd::OwnedFd>,
}

impl Link {
    /// The link whose helper listens on `socket`.
    pub fn new(socket: &Path) -> Link {
        Link {
            socket: socket.to_owned(),
            ready: AtomicBool::new(false),
            #[cfg(target_os = "linux")]
            tap: std::sync::OnceLock::new(),
        }
    }

    /// The link of a running VM that an earlier daemon started, if its
    /// helper is still there (its socket is; the watch proves the rest).
    pub fn adopt(socket: &Path) -> Option<std::sync::Arc<Link>> {
        socket
            .exists()
            .then(|| std::sync::Arc::new(Link::new(socket)))
    }

    /// For a VM about to boot: starts the helper and takes the tap, whose
    /// descriptor the VMM is to inherit. `None` (logged) where this desktop
    /// cannot have a link: published ports then take vsock.
    pub async fn prepare(socket: &Path) -> Option<(std::sync::Arc<Link>, i32)> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let path = socket.to_owned();
            let started = tokio::task::spawn_blocking(move || start(&path)).await;
            let link = match started {
                Ok(Ok(link)) => std::sync::Arc::new(link),
                Ok(Err(e)) => {
                    tracing::info!(error = %e, "no forward link: published ports take vsock");
                    return None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no forward link");
                    return None;
                }
            };
            let tap = match link.tap().await {
                Ok(tap) => tap,
                Err(e) => {
                    tracing::warn!(error = %e, "the link helper gave no tap: published ports take vsock");
                    link.close().await;
                    return None;
                }
            };
            let raw = link.tap.get_or_init(|| tap).as_raw_fd();
            Some((link, raw))
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = socket;
            None
        }
    }

    /// The guest's kernel command-line word naming its side of the link.
    pub fn cmdline_word() -> String {
        use vmctl_proto::forward::{CMDLINE_LINK, LINK_GUEST, LINK_PREFIX};
        format!("{CMDLINE_LINK}={LINK_GUEST}/{LINK_PREFIX}")
    }

    /// The helper's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Whether connections should go through the link now.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Waits (in the background) until the guest answers through the link:
    /// a connection to a port nothing listens on that the guest refuses is
    /// the proof. Gives up after `patience`; the link then stays unused.
    pub fn watch(self: &std::sync::Arc<Self>, patience: Duration) {
        let link = self.clone();
        tokio::spawn(async move {
            let probe = SocketAddrV4::new(vmctl_proto::forward::LINK_GUEST, 9);
            let started = std::time::Instant::now();
            while started.elapsed() < patience {
                let answer =
                    tokio::time::timeout(Duration::from_secs(1), link.connect_tcp(probe)).await;
                match answer {
                    Ok(Ok(_)) => {}
                    Ok(Err(LinkError::Target(e)))
                        if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                    Ok(Err(LinkError::Helper(e))) if e.kind() == std::io::ErrorKind::NotFound => {
                        tracing::info!("no forward link (its helper is gone)");
                        return;
                    }
                    _ => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
                link.ready.store(true, Ordering::Relaxed);
                tracing::info!("forward link up: published ports and port rules go through it");
                return;
            }
            tracing::warn!(
                "the guest never answered on the forward link: published ports stay on vsock"
            );
        });
    }
}

/// Why the link gave no connection.
#[derive(Debug)]
pub enum LinkError {
    /// The helper gave no socket (gone, or overwhelmed): vsock can still
    /// carry the connection.
    Helper(std::io::Error),
    /// The target did not answer through the link (refused, timed out).
    Target(std::io::Error),
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::Helper(e) => write!(f, "the link helper gave no socket: {e}"),
            LinkError::Target(e) => write!(f, "no answer through the link: {e}"),
        }
    }
}

#[cfg(target_os = "linux")]
mod client {
    use std::io::{Error, ErrorKind, Result};
    use std::net::SocketAddrV4;
    use std::os::fd::{FromRawFd, OwnedFd, RawFd};

    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
    use tokio::net::{TcpStream, UnixStream};

    use super::{Link, LinkError};

    /// How long a connection through the link may take to be answered.
    const CONNECT_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

    impl Link {
        /// A TCP connection from the link's namespace to `target`
        /// (a container's address), connected.
        pub async fn connect_tcp(
            &self,
            target: SocketAddrV4,
        ) -> std::result::Result<TcpStream, LinkError> {
            let fd = self
                .ask(&request(b'C', target))
                .await
                .map_err(LinkError::Helper)?;
            let stream = std::net::TcpStream::from(fd);
            let stream = TcpStream::from_std(stream).map_err(LinkError::Helper)?;
            match tokio::time::timeout(CONNECT_LIMIT, stream.writable()).await {
                Ok(ready) => ready.map_err(LinkError::Target)?,
                Err(_) => {
                    let e = Error::new(ErrorKind::TimedOut, "no answer in time");
                    return Err(LinkError::Target(e));
                }
            }
            if let Some(e) = stream.take_error().map_err(LinkError::Target)? {
                return Err(LinkError::Target(e));
            }
            stream.peer_addr().map_err(LinkError::Target)?;
            Ok(stream)
        }

        /// A UDP socket of the link's namespace connected to `target`.
        pub async fn connect_udp(&self, target: SocketAddrV4) -> Result<tokio::net::UdpSocket> {
            let fd = self.ask(&request(b'U', target)).await?;
            tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(fd))
        }

        /// Ends the helper (its VM stopped), and waits for its word.
        pub async fn close(&self) {
            let Ok(mut socket) = UnixStream::connect(&self.socket).await else {
                return;
            };
            if socket.write_all(b"Q").await.is_ok() {
                let mut answer = [0u8; 1];
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(2),
                    socket.read(&mut answer),
                )
                .await;
            }
        }

        /// The tap's descriptor, for the VMM.
        pub async fn tap(&self) -> Result<OwnedFd> {
            self.ask(b"T").await
        }

        /// One request, one descriptor back. A helper whose queue is full
        /// (a burst of connections) is tried again for up to about 0.2 s.
        async fn ask(&self, request: &[u8]) -> Result<OwnedFd> {
            let mut tries = 0;
            let mut socket = loop {
                match UnixStream::connect(&self.socket).await {
                    Err(e) if e.kind() == ErrorKind::WouldBlock && tries < 100 => {
                        tries += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    }
                    other => break other?,
                }
            };
            socket.write_all(request).await?;
            loop {
                socket.readable().await?;
                match socket.try_io(Interest::READABLE, || receive(&socket)) {
                    Ok(Answer::Fd(fd)) => return Ok(fd),
                    Ok(Answer::Errno) => {
                        let mut errno = [0u8; 4];
                        socket.read_exact(&mut errno).await?;
                        return Err(Error::from_raw_os_error(i32::from_be_bytes(errno)));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }

    enum Answer {
        Fd(OwnedFd),
        /// `1`: the errno follows.
        Errno,
    }

    /// Reads the answer's first byte and the descriptor that came with it.
    fn receive(socket: &UnixStream) -> Result<Answer> {
        use std::os::fd::AsRawFd;
        let mut status = [0u8; 1];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let mut iov = [std::io::IoSliceMut::new(&mut status)];
        let message = recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(Error::from)?;
        let mut fd = None;
        for cmsg in message.cmsgs().map_err(Error::from)? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                for raw in fds {
                    // SAFETY: the kernel just gave us this descriptor; it
                    // is ours alone.
                    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                    fd.get_or_insert(owned);
                }
            }
        }
        match (message.bytes, status[0], fd) {
            (0, _, _) => Err(Error::new(
                ErrorKind::UnexpectedEof,
                "the link helper hung up",
            )),
            (_, 0, Some(fd)) => Ok(Answer::Fd(fd)),
            (_, 1, _) => Ok(Answer::Errno),
            _ => Err(Error::new(
                ErrorKind::InvalidData,
                "a garbled answer from the link helper",
            )),
        }
    }

    pub(super) fn request(kind: u8, target: SocketAddrV4) -> [u8; 7] {
        let mut request = [0u8; 7];
        request[0] = kind;
        request[1..5].copy_from_slice(&target.ip().octets());
        request[5..7].copy_from_slice(&target.port().to_be_bytes());
        request
    }
}

#[cfg(not(target_os = "linux"))]
impl Link {
    /// Never: this desktop has no link.
    pub async fn connect_tcp(
        &self,
        _target: SocketAddrV4,
    ) -> Result<tokio::net::TcpStream, LinkError> {
        Err(LinkError::Helper(std::io::ErrorKind::Unsupported.into()))
    }

    /// Nothing to end: this desktop has no link.
    pub async fn close(&self) {}

    /// Never: this desktop has no link.
    pub async fn connect_udp(
        &self,
        _target: SocketAddrV4,
    ) -> std::io::Result<tokio::net::UdpSocket> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

/// Starts the link's helper for a machine whose run directory holds
/// `socket`, and waits until it listens. `Err` where this desktop cannot
/// have a link (not Linux, no user namespaces, no `/dev/net/tun`): the
/// caller goes on without one.
pub fn start(socket: &Path) -> std::io::Result<Link> {
    #[cfg(target_os = "linux")]
    {
        helper::spawn(socket)?;
        Ok(Link::new(socket))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = socket;
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "the forward link needs Linux",
        ))
    }
}

/// Turns the link off: `VMCTL_LINK=0` (published ports then take vsock,
/// as on desktops without one).
pub const ENV: &str = "VMCTL_LINK";

/// Whether the link is wanted (not turned off with [`ENV`]).
pub fn wanted() -> bool {
    std::env::var(ENV).map_or(true, |v| v != "0")
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_connect_request_names_address_and_port() {
        let request = client::request(b'C', "172.17.0.2:8080".parse().unwrap());
        assert_eq!(request, [b'C', 172, 17, 0, 2, 0x1f, 0x90]);
        let request = client::request(b'U', "10.1.2.3:53".parse().unwrap());
        assert_eq!(request, [b'U', 10, 1, 2, 3, 0, 53]);
    }
}
