//! One desktop socket of a forward: bound (TCP: listening) on exactly the
//! address asked, served by [`super::tcp`] or [`super::udp`] until the
//! [`Listener`] is dropped. A bind that fails is told in Docker's words
//! ([`BindRefusal`]), which the guest's engine passes on to the docker CLI.
//!
//! What to listen on, and for whom, is [`super::ports`]'s business; this
//! module only opens and closes sockets.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::task::JoinHandle;
use vmctl_proto::ports::Protocol;

use super::stats::Stats;
use super::Route;
use crate::vsock::VsockTransport;

/// What the guest hears when a desktop program holds the port.
pub const IN_USE: &str = "port is already in use on the desktop";

/// Why a desktop port could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindRefusal {
    pub message: String,
    /// Someone else has it (worth trying the next port of a range).
    pub taken: bool,
}

/// A bound desktop socket and the task serving it; closed when dropped.
#[derive(Debug)]
pub struct Listener {
    task: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        // The task owns the socket: aborting it closes the socket.
        self.task.abort();
    }
}

/// Binds `protocol` on `route.listen` (port 0: any free one) and serves it
/// along `route`. Answers the port bound.
pub fn open(
    protocol: Protocol,
    mut route: Route,
    transport: Arc<dyn VsockTransport>,
    stats: Arc<Stats>,
) -> Result<(u16, Listener), std::io::Error> {
    let (ip, port) = (route.listen.ip(), route.listen.port());
    let socket = bind(protocol, ip, port)?;
    let bound = local_port(&socket).unwrap_or(port);
    route.listen = SocketAddr::new(ip, bound);
    let task = match protocol {
        Protocol::Tcp => {
            let listener = std::net::TcpListener::from(socket);
            listener.set_nonblocking(true)?;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            tokio::spawn(super::tcp::serve(listener, route, transport, stats))
        }
        Protocol::Udp => {
            let socket = std::net::UdpSocket::from(socket);
            socket.set_nonblocking(true)?;
            let socket = tokio::net::UdpSocket::from_std(socket)?;
            tokio::spawn(super::udp::serve(socket, route, transport, stats))
        }
    };
    Ok((bound, Listener { task }))
}

/// Docker's wording. The guest hears only that the port is in use, never
/// which desktop process holds it (`vmctl run` looks that up itself).
pub fn refusal(ip: IpAddr, port: u16, error: std::io::Error) -> BindRefusal {
    let address = SocketAddr::new(ip, port);
    match error.kind() {
        std::io::ErrorKind::AddrInUse => BindRefusal {
            message: format!("Bind for {address} failed: {IN_USE}"),
            taken: true,
        },
        std::io::ErrorKind::AddrNotAvailable => BindRefusal {
            message: format!("Bind for {address} failed: {ip} is not an address of this desktop"),
            taken: false,
        },
        std::io::ErrorKind::PermissionDenied => BindRefusal {
            message: format!(
                "Bind for {address} failed: permission denied (ports below 1024 need privileges on the desktop)"
            ),
            taken: false,
        },
        _ => BindRefusal {
            message: format!("Bind for {address} failed: {error}"),
            taken: false,
        },
    }
}

/// A socket bound to `ip:port` (TCP: listening), not inherited by child
/// processes. `::` takes IPv6 only, so every address means exactly what it
/// says.
fn bind(protocol: Protocol, ip: IpAddr, port: u16) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    let address = SocketAddr::new(ip, port);
    let kind = match protocol {
        Protocol::Tcp => Type::STREAM,
        Protocol::Udp => Type::DGRAM,
    };
    // socket2 opens it close-on-exec (unix) or not inheritable (Windows).
    let socket = Socket::new(Domain::for_address(address), kind, None)?;
    if ip.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // A listener of a container that was just removed may leave TIME_WAIT
    // connections behind; they must not block the port. Windows never lets
    // them block it, and its SO_REUSEADDR would let another program bind
    // the same port at once: unix only.
    if protocol == Protocol::Tcp && cfg!(unix) {
        socket.set_reuse_address(true)?;
    }
    socket.bind(&address.into())?;
    if protocol == Protocol::Tcp {
        socket.listen(1024)?;
    }
    Ok(socket)
}

fn local_port(socket: &socket2::Socket) -> Option<u16> {
    socket.local_addr().ok()?.as_socket().map(|a| a.port())
}
