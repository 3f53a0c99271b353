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
//! It runs as its own process (`/init vm-forward`), beside the engine, so a
//! crash or restart of the engine never cuts a forwarded connection, and it
//! needs nothing from the engine: the header says where to go.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use vmctl_proto::forward::{read_datagram, write_datagram, ForwardHeader, ForwardReply};
use vmctl_proto::ports::Protocol;

/// How long a UDP flow lives without a datagram either way.
pub const UDP_IDLE: Duration = Duration::from_secs(60);

/// How long connecting to a target may take before the host hears "failed".
const CONNECT_LIMIT: Duration = Duration::from_secs(10);

/// Serves one forward stream until both directions end.
pub async fn handle<S>(mut stream: S)
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

async fn tcp<S>(mut stream: S, header: ForwardHeader) -> std::io::Result<()>
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
    tokio::io::copy_bidirectional_with_sizes(&mut stream, &mut target, 64 * 1024, 64 * 1024)
        .await
        .map(drop)
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

/// Serves vsock port 1026 until the process ends.
pub fn main() -> anyhow::Result<()> {
    use anyhow::Context;
    // One thread: a byte pipe is bound by syscalls, not CPU, and a task woken
    // on the thread that polls its sockets costs no cross-CPU wakeup (an
    // emulated IPI under TCG).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start tokio")?;
    runtime.block_on(async {
        let listener = super::vsock_listener(vmctl_proto::VSOCK_PORT_FORWARD)?;
        tracing::info!(port = vmctl_proto::VSOCK_PORT_FORWARD, "forward service up");
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(handle(vmctl_proto::framing::Framed::new(stream)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "forward accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn send_header(
        stream: &mut tokio::io::DuplexStream,
        protocol: Protocol,
        target: std::net::SocketAddr,
    ) {
        let header = ForwardHeader { protocol, target }.encode();
        stream.write_all(&header).await.unwrap();
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
        let (host, guest) = tokio::io::duplex(1 << 16);
        tokio::spawn(handle(guest));
        let mut host = host;
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
        let (mut host, guest) = tokio::io::duplex(1024);
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
        let (mut host, guest) = tokio::io::duplex(1 << 16);
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
