//! The forward service on vsock port 1026 (protocol in
//! `vmctl_proto::forward`): every stream the host opens names a target in
//! the VM — a container's address for a published port, any VM address for
//! a `vmctl port add` rule — and the service connects to it and copies.
//!
//! TCP: bytes both ways, an EOF on one side becomes a write shutdown on the
//! other (half-close survives: the stream is framed). UDP: one connected
//! socket per flow; each datagram travels length-prefixed; a flow idle for
//! [`UDP_IDLE`] is closed (the host closes its side at the same age).
//!
//! Only streams that proved the host's secret get here ([`super::vsock`]).
//!
//! Second layer behind the host's policy: a published port's stream may
//! only name a container — never loopback, nor the VM NIC's subnet (where
//! the desktop is); only a header flagged as the user's own `vmctl port`
//! rule may ([`Origin::Rule`]). At most [`MAX_FORWARDS`] streams at once,
//! and [`MAX_UDP_FLOWS`] UDP flows per target; beyond, the host hears
//! "failed" (logged once per episode).
//!
//! It runs as its own process (`/init vm-forward`), beside the engine, so a
//! crash or restart of the engine never cuts a forwarded connection, and it
//! needs nothing from the engine: the header says where to go.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use ipnet::Ipv4Net;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use vmctl_proto::forward::{read_datagram, write_datagram, ForwardHeader, ForwardReply, Origin};
use vmctl_proto::framing::{pump, Framed};
use vmctl_proto::ports::Protocol;

/// How long a UDP flow lives without a datagram either way.
pub const UDP_IDLE: Duration = Duration::from_secs(60);

/// How long connecting to a target may take before the host hears "failed".
const CONNECT_LIMIT: Duration = Duration::from_secs(10);

/// Forward streams open at once.
pub const MAX_FORWARDS: usize = 8192;

/// UDP flows to one target at once.
pub const MAX_UDP_FLOWS: usize = 1024;

/// What the service admits: targets and bounds.
pub struct Limits {
    /// The VM NIC's subnets (published ports may not target them).
    nic: Vec<Ipv4Net>,
    active: AtomicUsize,
    max: usize,
    flows: Mutex<HashMap<SocketAddr, usize>>,
    max_flows: usize,
    /// Whether "too many" was logged since there was room again.
    full: AtomicBool,
}

/// One admitted stream; gives its slots back when dropped.
pub struct Slot {
    limits: &'static Limits,
    flow: Option<SocketAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limits.active.fetch_sub(1, Ordering::AcqRel);
        if let Some(target) = self.flow {
            let mut flows = self.limits.flows.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = flows.get_mut(&target) {
                *n -= 1;
                if *n == 0 {
                    flows.remove(&target);
                }
            }
        }
    }
}

static LIMITS: OnceLock<Limits> = OnceLock::new();

impl Limits {
    pub fn new(nic: Vec<Ipv4Net>, max: usize, max_flows: usize) -> Limits {
        Limits {
            nic,
            active: AtomicUsize::new(0),
            max,
            flows: Mutex::new(HashMap::new()),
            max_flows,
            full: AtomicBool::new(false),
        }
    }

    /// The service's limits (set once by [`main`]; the defaults elsewhere).
    fn global() -> &'static Limits {
        LIMITS.get_or_init(|| Limits::new(Vec::new(), MAX_FORWARDS, MAX_UDP_FLOWS))
    }

    /// Why `header` is refused, if it is.
    pub fn refusal(&self, header: &ForwardHeader) -> Option<String> {
        if header.origin == Origin::Rule {
            return None;
        }
        let ip = header.target.ip();
        let nic = match ip {
            IpAddr::V4(v4) => self.nic.iter().find(|n| n.contains(&v4)),
            IpAddr::V6(_) => None,
        };
        let why = if ip.is_loopback() {
            "loopback"
        } else if ip.is_unspecified() || ip.is_multicast() {
            "not a container's address"
        } else if nic.is_some() {
            "the VM's own network"
        } else {
            return None;
        };
        Some(format!(
            "refused: a published port may not reach {} ({why})",
            header.target
        ))
    }

    /// Takes a slot for `header`'s stream, or says why not.
    fn admit(&'static self, header: &ForwardHeader) -> Result<Slot, String> {
        if let Some(refusal) = self.refusal(header) {
            return Err(refusal);
        }
        if self.active.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.active.fetch_sub(1, Ordering::AcqRel);
            return Err(self.too_many("forwarded connections", self.max));
        }
        let mut slot = Slot {
            limits: self,
            flow: None,
        };
        if header.protocol == Protocol::Udp {
            let mut flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
            let n = flows.entry(header.target).or_insert(0);
            if *n >= self.max_flows {
                drop(flows);
                return Err(self.too_many("UDP flows to one target", self.max_flows));
            }
            *n += 1;
            slot.flow = Some(header.target);
        } else if self.active.load(Ordering::Acquire) < self.max / 2 {
            self.full.store(false, Ordering::Release);
        }
        Ok(slot)
    }

    fn too_many(&self, what: &str, max: usize) -> String {
        if !self.full.swap(true, Ordering::AcqRel) {
            tracing::warn!(max, "too many {what}: refusing new ones until some end");
        }
        format!("refused: more than {max} {what}")
    }
}

/// Serves one forward stream until both directions end.
pub async fn handle<S>(stream: Framed<S>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    handle_within(stream, Limits::global()).await
}

/// [`handle`] under `limits`.
pub async fn handle_within<S>(mut stream: Framed<S>, limits: &'static Limits)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let header = match ForwardHeader::read(&mut stream).await {
        Ok(header) => header,
        Err(e) => {
            tracing::warn!(error = %e, "bad forward header");
            return;
        }
    };
    let _slot = match limits.admit(&header) {
        Ok(slot) => slot,
        Err(message) => {
            tracing::warn!(target = %header.target, %message, "forward refused");
            let _ = reply(&mut stream, ForwardReply::Failed(message)).await;
            return;
        }
    };
    let result = match header.protocol {
        Protocol::Tcp => tcp(stream, header).await,
        Protocol::Udp => udp(stream, header).await,
    };
    if let Err(e) = result {
        tracing::debug!(target = %header.target, protocol = %header.protocol, error = %e, "forward ended");
    }
}

async fn reply<S: AsyncWrite + Unpin>(stream: &mut S, reply: ForwardReply) -> std::io::Result<()> {
    stream.write_all(&reply.encode()).await?;
    stream.flush().await
}

async fn tcp<S>(mut stream: Framed<S>, header: ForwardHeader) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let connected = tokio::time::timeout(CONNECT_LIMIT, TcpStream::connect(header.target)).await;
    let mut target = match connected {
        Ok(Ok(target)) => target,
        Ok(Err(e)) => {
            let message = format!("cannot connect to {}: {e}", header.target);
            return reply(&mut stream, ForwardReply::Failed(message)).await;
        }
        Err(_) => {
            let message = format!("connecting to {} timed out", header.target);
            return reply(&mut stream, ForwardReply::Failed(message)).await;
        }
    };
    let _ = target.set_nodelay(true);
    reply(&mut stream, ForwardReply::Connected).await?;
    pump(&mut stream, &mut target).await.map(drop)
}

async fn udp<S>(mut stream: S, header: ForwardHeader) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let local = match header.target {
        std::net::SocketAddr::V4(_) => "0.0.0.0:0",
        std::net::SocketAddr::V6(_) => "[::]:0",
    };
    let socket = match UdpSocket::bind(local).await {
        Ok(socket) => socket,
        Err(e) => {
            let message = format!("cannot open a UDP socket: {e}");
            return reply(&mut stream, ForwardReply::Failed(message)).await;
        }
    };
    if let Err(e) = socket.connect(header.target).await {
        let message = format!("cannot reach {}: {e}", header.target);
        return reply(&mut stream, ForwardReply::Failed(message)).await;
    }
    reply(&mut stream, ForwardReply::Connected).await?;
    let (mut from_host, mut to_host) = tokio::io::split(stream);
    let mut inbound = Vec::new();
    let mut outbound = vec![0u8; vmctl_proto::forward::MAX_DATAGRAM];
    loop {
        tokio::select! {
            read = tokio::time::timeout(UDP_IDLE, read_datagram(&mut from_host, &mut inbound)) => {
                match read {
                    Ok(Ok(Some(()))) => {
                        // A refused send (nothing listens yet) is what UDP does: dropped.
                        let _ = socket.send(&inbound).await;
                    }
                    Ok(Ok(None)) | Err(_) => break,
                    Ok(Err(e)) => return Err(std::io::Error::other(e)),
                }
            }
            received = socket.recv(&mut outbound) => {
                match received {
                    Ok(n) => write_datagram(&mut to_host, &outbound[..n]).await.map_err(std::io::Error::other)?,
                    // ICMP port unreachable from an earlier send: the flow lives on.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    to_host.shutdown().await
}

/// Serves vsock port 1026, for streams that proved the host's secret, until
/// the process ends.
pub fn main() -> anyhow::Result<()> {
    use anyhow::Context;
    // First, before any thread or child: the secret PID 1 handed over.
    let secret = super::secret::inherited()
        .context("the forwarder serves vsock only with the host's secret")?;
    // One thread: a byte pipe is bound by syscalls, not CPU, and a task woken
    // on the thread that polls its sockets costs no cross-CPU wakeup (an
    // emulated IPI under TCG).
    raise_open_files();
    let nic = super::engine::nic_subnets();
    tracing::info!(?nic, "published ports may not reach these subnets");
    let _ = LIMITS.set(Limits::new(nic, MAX_FORWARDS, MAX_UDP_FLOWS));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start tokio")?;
    runtime.block_on(async {
        super::file_events::start(secret.clone());
        let port = vmctl_proto::VSOCK_PORT_FORWARD;
        // The kernel's 256 KiB of vsock credit per stream: 2 MiB made a
        // port rule's bulk upload 1.3× faster but a published port's 1.7×
        // slower (`vmctl-bench vm-ports`, BENCHMARKS.md).
        let mut listener = super::vsock::AuthListener::bind(port, secret)?;
        tracing::info!(port, "forward service up");
        loop {
            match listener.accept().await {
                Ok(stream) => {
                    tokio::spawn(handle(stream));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "forward accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    })
}

/// Raises the soft open-file limit to the hard one: each forward holds a
/// vsock stream and a socket to its target.
fn raise_open_files() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The host's end of a forward stream.
    type Host = Framed<tokio::io::DuplexStream>;

    /// A host end and the service's end of one forward stream.
    fn stream() -> (Host, Framed<tokio::io::DuplexStream>) {
        let (host, guest) = tokio::io::duplex(1 << 16);
        (Framed::new(host), Framed::new(guest))
    }

    /// A `vmctl port` rule's header: these tests reach listeners on the
    /// VM's loopback, which only rules may.
    async fn send_header(stream: &mut Host, protocol: Protocol, target: std::net::SocketAddr) {
        send_header_from(stream, protocol, target, Origin::Rule).await
    }

    async fn send_header_from(
        stream: &mut Host,
        protocol: Protocol,
        target: std::net::SocketAddr,
        origin: Origin,
    ) {
        let header = ForwardHeader {
            protocol,
            target,
            origin,
        }
        .encode();
        stream.write_all(&header).await.unwrap();
        stream.flush().await.unwrap();
    }

    fn limits(max: usize, max_flows: usize) -> &'static Limits {
        let nic = vec!["10.0.2.0/24".parse().unwrap()];
        Box::leak(Box::new(Limits::new(nic, max, max_flows)))
    }

    /// What the service answers `origin`'s header to `target`.
    async fn answer(
        limits: &'static Limits,
        protocol: Protocol,
        target: &str,
        origin: Origin,
    ) -> ForwardReply {
        let (mut host, guest) = stream();
        tokio::spawn(handle_within(guest, limits));
        send_header_from(&mut host, protocol, target.parse().unwrap(), origin).await;
        ForwardReply::read(&mut host).await.unwrap()
    }

    #[tokio::test]
    async fn published_ports_never_reach_loopback_or_the_vms_network() {
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let on_loopback = server.local_addr().unwrap().to_string();
        let limits = limits(16, 16);
        for target in [
            on_loopback.as_str(),
            "10.0.2.2:18999",
            "10.0.2.15:22",
            "[::1]:80",
            "0.0.0.0:80",
        ] {
            match answer(limits, Protocol::Tcp, target, Origin::Published).await {
                ForwardReply::Failed(message) => {
                    assert!(
                        message.starts_with("refused: a published port may not reach"),
                        "{message}"
                    )
                }
                other => panic!("{target}: {other:?}"),
            }
        }
        assert_eq!(
            answer(limits, Protocol::Tcp, &on_loopback, Origin::Rule).await,
            ForwardReply::Connected,
            "the user's own rule may"
        );
    }

    #[tokio::test]
    async fn streams_and_udp_flows_are_bounded() {
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap().to_string();
        let second = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let other = second.local_addr().unwrap().to_string();
        let limits = limits(4, 2);
        let mut open = Vec::new();
        let refused = |reply: ForwardReply, what: &str| match reply {
            ForwardReply::Failed(message) => assert!(message.contains(what), "{message}"),
            other => panic!("{other:?}"),
        };
        for to in [&target, &target, &other, &other] {
            let (mut host, guest) = stream();
            tokio::spawn(handle_within(guest, limits));
            send_header(&mut host, Protocol::Udp, to.parse().unwrap()).await;
            assert_eq!(
                ForwardReply::read(&mut host).await.unwrap(),
                ForwardReply::Connected,
                "{to}"
            );
            open.push(host);
            if open.len() == 2 {
                // Two flows to one target: a third is refused.
                refused(
                    answer(limits, Protocol::Udp, &target, Origin::Rule).await,
                    "UDP flows",
                );
            }
        }
        // Four streams in all: a fifth is refused, whatever its target.
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = tcp.local_addr().unwrap().to_string();
        refused(
            answer(limits, Protocol::Tcp, &tcp, Origin::Rule).await,
            "forwarded connections",
        );
        // A flow that ends gives its slots back.
        drop(open.remove(0));
        while limits.active.load(Ordering::Acquire) > 3 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            answer(limits, Protocol::Udp, &target, Origin::Rule).await,
            ForwardReply::Connected
        );
    }

    #[tokio::test]
    async fn tcp_forward_keeps_half_close() {
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = server.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut conn, _) = server.accept().await.unwrap();
            let mut all = Vec::new();
            conn.read_to_end(&mut all).await.unwrap();
            conn.write_all(format!("got {}", all.len()).as_bytes())
                .await
                .unwrap();
        });
        let (mut host, guest) = stream();
        tokio::spawn(handle(guest));
        send_header(&mut host, Protocol::Tcp, target).await;
        assert_eq!(
            ForwardReply::read(&mut host).await.unwrap(),
            ForwardReply::Connected
        );
        host.write_all(&[7u8; 100_000]).await.unwrap();
        host.shutdown().await.unwrap();
        let mut answer = String::new();
        host.read_to_string(&mut answer).await.unwrap();
        assert_eq!(answer, "got 100000", "the answer came after our half-close");
    }

    #[tokio::test]
    async fn a_refused_target_is_reported() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = free.local_addr().unwrap();
        drop(free);
        let (mut host, guest) = stream();
        tokio::spawn(handle(guest));
        send_header(&mut host, Protocol::Tcp, target).await;
        match ForwardReply::read(&mut host).await.unwrap() {
            ForwardReply::Failed(message) => assert!(message.contains("refused"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn udp_datagrams_travel_both_ways() {
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buffer = [0u8; 2048];
            loop {
                let (n, from) = echo.recv_from(&mut buffer).await.unwrap();
                echo.send_to(&buffer[..n], from).await.unwrap();
            }
        });
        let (mut host, guest) = stream();
        tokio::spawn(handle(guest));
        send_header(&mut host, Protocol::Udp, target).await;
        assert_eq!(
            ForwardReply::read(&mut host).await.unwrap(),
            ForwardReply::Connected
        );
        let mut buffer = Vec::new();
        for text in ["one", "two"] {
            write_datagram(&mut host, text.as_bytes()).await.unwrap();
            read_datagram(&mut host, &mut buffer)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(buffer, text.as_bytes());
        }
    }
}
