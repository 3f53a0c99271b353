//! Published-port forwarding: what the host daemon and the guest say to each
//! other so that a desktop connection reaches a container.
//!
//! Three conversations, each on framed vsock streams ([`crate::framing`]):
//!
//! ```text
//! host → guest vsock 1026 (forward)   one stream per TCP connection / UDP flow
//!     host:  ForwardHeader            which protocol, which guest address,
//!                                     and whether it is a `vmctl port` rule
//!     guest: ForwardReply             connected, or why not (then closes)
//!     then   TCP: the bytes, half-close preserved
//!            UDP: datagrams, each a u16 big-endian length + payload
//! guest → host vsock 1027 (host ports) one JSON request line, one JSON answer
//!     {"op":"reserve","binding":{…}}  bind the desktop listener now; port 0 = any
//!     {"op":"release","binding":{…}}  the container did not start after all
//! host → guest vsock 1025 (control)   {"op":"watch_ports"}: the port list, then
//!                                     its changes (`crate::ports::PortEvent` lines)
//! ```
//!
//! The reservation is what makes `docker run -p 8080:80` fail when the
//! desktop's port 8080 is taken: the engine asks the host before it starts
//! the container, and the host's listener exists before the container does.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::ports::{PortBinding, Protocol};

/// Version byte opening a [`ForwardHeader`] without flags (a published
/// port): what every guest understands.
pub const HEADER_VERSION: u8 = 1;

/// Version byte of a header that ends with a flags byte ([`FLAG_RULE`]).
pub const HEADER_VERSION_FLAGS: u8 = 2;

/// Flags bit: the forward is the desktop user's own `vmctl port` rule.
pub const FLAG_RULE: u8 = 1;

/// The largest UDP payload carried (IPv4's limit).
pub const MAX_DATAGRAM: usize = 65_507;

/// Kernel command-line key: the address published ports without a `HostIp`
/// bind to (the machine's `port-bind-address`), like dockerd's `--ip`.
pub const CMDLINE_BIND: &str = "vmctl.bind";

/// Kernel command-line key: the subnet of the VM's own NIC (QEMU user
/// networking's `10.0.2.0/24`), where the desktop itself is reachable.
/// Published ports may not target it, and user networks may not overlap it.
pub const CMDLINE_NIC_SUBNET: &str = "vmctl.nic_subnet";

/// The forward link (Linux with QEMU): a second NIC whose far end is a
/// tap in a network namespace of the daemon's, through which published TCP
/// ports reach containers with the host kernel doing TCP with the guest's:
/// under emulation, far faster than a relay over vsock (BENCHMARKS.md,
/// issue 19). Kernel command-line key, present when the VM has the link:
/// the guest's address on it, `ADDRESS/PREFIX`.
pub const CMDLINE_LINK: &str = "vmctl.link";

/// The link NIC's MAC address: how the guest tells it from its own NIC.
pub const LINK_MAC: &str = "52:54:00:76:6d:6c";

/// The desktop's side of the link (the helper's namespace).
pub const LINK_HOST: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 19, 249, 1);

/// The guest's side of the link.
pub const LINK_GUEST: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 19, 249, 2);

/// The link's prefix length: the two addresses and nothing else.
pub const LINK_PREFIX: u8 = 30;

/// The link's MTU: large frames are what makes it fast under emulation.
pub const LINK_MTU: u32 = 65_520;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(
        "forward header version {0} (this side speaks {HEADER_VERSION} and {HEADER_VERSION_FLAGS})"
    )]
    Version(u8),
    #[error("forward header names protocol {0}")]
    Protocol(u8),
    #[error("forward header names address family {0}")]
    Family(u8),
    #[error("datagram of {0} bytes is larger than {MAX_DATAGRAM}")]
    Datagram(usize),
    #[error("the forward stream")]
    Io(#[from] std::io::Error),
}

/// Who asked for a forward: the guest's engine (a published port, whose
/// target must be a container) or the desktop user (`vmctl port add`, which
/// may name the VM's own addresses, loopback included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Origin {
    #[default]
    Published,
    Rule,
}

/// The first thing on a forward stream: where the guest should connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardHeader {
    pub protocol: Protocol,
    /// A container's address (published ports) or any address of the VM
    /// (`vmctl port add`, usually `127.0.0.1`).
    pub target: SocketAddr,
    pub origin: Origin,
}

impl ForwardHeader {
    /// `[version][protocol 0=tcp 1=udp][family 4|6][address][port, big-endian]`,
    /// then, in version 2 only, `[flags]`. A published port's header stays
    /// version 1, byte for byte what older guests read.
    pub fn encode(&self) -> Vec<u8> {
        let version = match self.origin {
            Origin::Published => HEADER_VERSION,
            Origin::Rule => HEADER_VERSION_FLAGS,
        };
        let mut out = vec![
            version,
            match self.protocol {
                Protocol::Tcp => 0,
                Protocol::Udp => 1,
            },
        ];
        match self.target.ip() {
            IpAddr::V4(ip) => {
                out.push(4);
                out.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                out.push(6);
                out.extend_from_slice(&ip.octets());
            }
        }
        out.extend_from_slice(&self.target.port().to_be_bytes());
        if self.origin == Origin::Rule {
            out.push(FLAG_RULE);
        }
        out
    }

    pub async fn read<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Self, ForwardError> {
        let mut head = [0u8; 3];
        reader.read_exact(&mut head).await?;
        if head[0] != HEADER_VERSION && head[0] != HEADER_VERSION_FLAGS {
            return Err(ForwardError::Version(head[0]));
        }
        let protocol = match head[1] {
            0 => Protocol::Tcp,
            1 => Protocol::Udp,
            other => return Err(ForwardError::Protocol(other)),
        };
        let ip = match head[2] {
            4 => {
                let mut octets = [0u8; 4];
                reader.read_exact(&mut octets).await?;
                IpAddr::V4(Ipv4Addr::from(octets))
            }
            6 => {
                let mut octets = [0u8; 16];
                reader.read_exact(&mut octets).await?;
                IpAddr::V6(Ipv6Addr::from(octets))
            }
            other => return Err(ForwardError::Family(other)),
        };
        let mut port = [0u8; 2];
        reader.read_exact(&mut port).await?;
        let origin = if head[0] == HEADER_VERSION_FLAGS && reader.read_u8().await? & FLAG_RULE != 0
        {
            Origin::Rule
        } else {
            Origin::Published
        };
        Ok(ForwardHeader {
            protocol,
            target: SocketAddr::new(ip, u16::from_be_bytes(port)),
            origin,
        })
    }
}

/// The guest's answer to a header: `Ok` once it reached the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardReply {
    Connected,
    Failed(String),
}

impl ForwardReply {
    /// `[0]` for connected; `[1][u16 length][message]` for failed.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ForwardReply::Connected => vec![0],
            ForwardReply::Failed(message) => {
                let text = &message.as_bytes()[..message.len().min(1024)];
                let mut out = vec![1];
                out.extend_from_slice(&(text.len() as u16).to_be_bytes());
                out.extend_from_slice(text);
                out
            }
        }
    }

    pub async fn read<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Self, ForwardError> {
        let status = reader.read_u8().await?;
        if status == 0 {
            return Ok(ForwardReply::Connected);
        }
        let len = reader.read_u16().await? as usize;
        let mut text = vec![0u8; len];
        reader.read_exact(&mut text).await?;
        Ok(ForwardReply::Failed(
            String::from_utf8_lossy(&text).into_owned(),
        ))
    }
}

/// Writes one datagram: a u16 big-endian length, then the payload.
pub async fn write_datagram<W: AsyncWrite + Unpin>(
    writer: &mut W,
    payload: &[u8],
) -> Result<(), ForwardError> {
    if payload.len() > MAX_DATAGRAM {
        return Err(ForwardError::Datagram(payload.len()));
    }
    let mut out = Vec::with_capacity(payload.len() + 2);
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    writer.write_all(&out).await?;
    writer.flush().await?;
    Ok(())
}

/// Reads one datagram into `buffer`; `None` at the end of the stream.
pub async fn read_datagram<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut Vec<u8>,
) -> Result<Option<()>, ForwardError> {
    let mut len = [0u8; 2];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u16::from_be_bytes(len) as usize;
    if len > MAX_DATAGRAM {
        return Err(ForwardError::Datagram(len));
    }
    buffer.resize(len, 0);
    reader.read_exact(buffer).await?;
    Ok(Some(()))
}

/// A request of the guest engine to the host daemon (vsock 1027).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum HostPortRequest {
    /// Listen on the desktop for `binding` (its `host_port` 0: any free port).
    Reserve { binding: PortBinding },
    /// Drop a reservation whose container did not start.
    Release { binding: PortBinding },
}

/// The host's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPortResponse {
    pub ok: bool,
    /// The port the host listens on (the one picked for port 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    /// Why not, in Docker's words (`Bind for 127.0.0.1:80 failed: …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The port is taken (by a container or a desktop program): the next
    /// port of a range may do.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub taken: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn headers_replies_and_datagrams_round_trip() {
        for target in ["172.17.0.2:80", "[fd00::2]:8080"] {
            for origin in [Origin::Published, Origin::Rule] {
                let header = ForwardHeader {
                    protocol: Protocol::Udp,
                    target: target.parse().unwrap(),
                    origin,
                };
                let bytes = header.encode();
                assert_eq!(ForwardHeader::read(&mut &bytes[..]).await.unwrap(), header);
            }
        }
        // A published port's header is the version-1 header older guests read.
        let published = ForwardHeader {
            protocol: Protocol::Tcp,
            target: "172.17.0.2:80".parse().unwrap(),
            origin: Origin::Published,
        };
        assert_eq!(published.encode(), [1, 0, 4, 172, 17, 0, 2, 0, 80]);
        let failed = ForwardReply::Failed("connection refused".into());
        assert_eq!(
            ForwardReply::read(&mut &failed.encode()[..]).await.unwrap(),
            failed
        );
        assert_eq!(
            ForwardReply::read(&mut &ForwardReply::Connected.encode()[..])
                .await
                .unwrap(),
            ForwardReply::Connected
        );
        let mut wire = Vec::new();
        write_datagram(&mut wire, b"ping").await.unwrap();
        write_datagram(&mut wire, b"").await.unwrap();
        let mut reader = &wire[..];
        let mut buffer = Vec::new();
        assert!(read_datagram(&mut reader, &mut buffer)
            .await
            .unwrap()
            .is_some());
        assert_eq!(buffer, b"ping");
        assert!(read_datagram(&mut reader, &mut buffer)
            .await
            .unwrap()
            .is_some());
        assert!(buffer.is_empty(), "an empty datagram is a datagram");
        assert!(read_datagram(&mut reader, &mut buffer)
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn bad_headers_are_named() {
        let bad = [3u8, 0, 4, 1, 2, 3, 4, 0, 80];
        assert!(matches!(
            ForwardHeader::read(&mut &bad[..]).await,
            Err(ForwardError::Version(3))
        ));
        let bad = [1u8, 7, 4];
        assert!(matches!(
            ForwardHeader::read(&mut &bad[..]).await,
            Err(ForwardError::Protocol(7))
        ));
        let short = [1u8, 0, 4, 1];
        assert!(matches!(
            ForwardHeader::read(&mut &short[..]).await,
            Err(ForwardError::Io(_))
        ));
    }

    #[test]
    fn host_port_requests_are_tagged_json() {
        let response = HostPortResponse {
            ok: true,
            host_port: Some(32768),
            error: None,
            taken: false,
        };
        assert_eq!(
            serde_json::to_string(&response).unwrap(),
            r#"{"ok":true,"host_port":32768}"#
        );
    }
}
