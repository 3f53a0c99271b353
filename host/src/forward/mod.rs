//! Forwarders: host sockets whose connections become guest vsock streams.
//!
//! [`api`] forwards the Docker API endpoint (a unix socket, or a named pipe
//! on Windows: `crate::endpoint`). [`ports`] keeps one desktop
//! listener per published port and manual rule ([`listener`], [`tcp`],
//! [`udp`]; on `127.0.0.1` by default also `[::1]`: [`dual_stack`]), fed by
//! the guest's reservations ([`host_ports`]) and its port list ([`watch`]).

pub mod api;
pub mod dual_stack;
pub mod gate;
pub mod holder;
pub mod host_ports;
pub mod listener;
pub mod policy;
pub mod ports;
pub mod stats;
pub mod tcp;
#[cfg(test)]
mod test_utils;
pub mod udp;
pub mod watch;

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use vmctl_proto::forward::{ForwardHeader, ForwardReply, Origin};
use vmctl_proto::ports::Protocol;

use crate::vsock::{GuestStream, VsockError, VsockTransport};

/// Where a desktop listener's connections go, and what they pass first.
#[derive(Clone)]
pub struct Route {
    /// The desktop address listened on.
    pub listen: SocketAddr,
    /// Where the guest connects.
    pub target: SocketAddr,
    /// A published port or the user's own rule.
    pub origin: Origin,
    pub gate: std::sync::Arc<gate::Gate>,
    /// The forward link, once the machine has one (`crate::link`):
    /// published ports and rules take it instead of vsock while it is ready.
    pub link: LinkSlot,
}

/// Where a forward's connections go through the forward link, if they
/// may: a published port's container as it is; a rule's port on the VM's
/// loopback at the guest's link address (the guest maps what comes in on
/// the link there to its loopback).
pub fn link_target(origin: Origin, target: SocketAddr) -> Option<std::net::SocketAddrV4> {
    let SocketAddr::V4(target) = target else {
        return None;
    };
    match origin {
        Origin::Published if !target.ip().is_loopback() => Some(target),
        Origin::Rule if target.ip().is_loopback() => Some(std::net::SocketAddrV4::new(
            vmctl_proto::forward::LINK_GUEST,
            target.port(),
        )),
        _ => None,
    }
}

impl Route {
    /// The forward link and the address to ask it for, when this route's
    /// connections should take it now (it is ready and may carry them).
    pub fn through_link(&self) -> Option<(&crate::link::Link, std::net::SocketAddrV4)> {
        let link = self.link.get().filter(|link| link.ready())?;
        Some((link, link_target(self.origin, self.target)?))
    }
}

/// Where the forwarder and its routes find the machine's forward link.
pub type LinkSlot = std::sync::Arc<std::sync::OnceLock<std::sync::Arc<crate::link::Link>>>;

/// Copies bytes both ways until both directions ended. An EOF on one side
/// becomes a write shutdown on the other (half-close), so a client that
/// closes its sending side still gets the whole answer.
pub async fn pipe<A, B>(mut a: A, mut b: B) -> std::io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, 64 * 1024, 64 * 1024).await
}

/// Opens one forwarded stream: connects to the guest's forward service,
/// names `target`, and waits for the guest's answer. `None` (logged) when
/// the guest cannot be reached or cannot reach the target; the caller then
/// drops its client.
pub async fn open_forward(
    transport: &dyn VsockTransport,
    protocol: Protocol,
    target: SocketAddr,
    origin: Origin,
) -> Option<GuestStream> {
    let header = ForwardHeader {
        protocol,
        target,
        origin,
    };
    // A stream opened ahead (`crate::vsock::pool`) may have ended since
    // without showing it yet: a second try takes a fresh one.
    for attempt in 0..2 {
        let mut guest = match connect_forward(transport).await {
            Ok(guest) => guest,
            Err(e) => {
                tracing::warn!(%target, error = %crate::error_chain(&e), "cannot reach the guest's forwarder");
                return None;
            }
        };
        if guest.write_all(&header.encode()).await.is_err() || guest.flush().await.is_err() {
            continue;
        }
        match ForwardReply::read(&mut guest).await {
            Ok(ForwardReply::Connected) => return Some(guest),
            Ok(ForwardReply::Failed(message)) => {
                tracing::debug!(%target, %protocol, %message, "the guest could not reach the target");
                return None;
            }
            Err(e) => {
                tracing::debug!(%target, attempt, error = %e, "no answer from the guest's forwarder");
            }
        }
    }
    None
}

/// Connects to the guest's forward service. A refusal while the guest is up
/// means its accept queue overflowed under a burst (vsock refuses instead of
/// letting the peer retry, as TCP's SYN would): tried again a few times,
/// about 0.3 s in all, before the client is let go.
async fn connect_forward(transport: &dyn VsockTransport) -> Result<GuestStream, VsockError> {
    let mut pause = std::time::Duration::from_millis(5);
    for _ in 0..6 {
        match transport.connect(vmctl_proto::VSOCK_PORT_FORWARD).await {
            Err(VsockError::Refused { .. }) => {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            other => return other,
        }
    }
    transport.connect(vmctl_proto::VSOCK_PORT_FORWARD).await
}

#[cfg(test)]
mod link_tests {
    use super::*;

    #[test]
    fn the_link_takes_containers_and_the_vms_loopback_ports() {
        let container: SocketAddr = "172.17.0.2:80".parse().unwrap();
        let loopback: SocketAddr = "127.0.0.1:5432".parse().unwrap();
        assert_eq!(
            link_target(Origin::Published, container),
            Some("172.17.0.2:80".parse().unwrap())
        );
        let guest = std::net::SocketAddrV4::new(vmctl_proto::forward::LINK_GUEST, 5432);
        assert_eq!(link_target(Origin::Rule, loopback), Some(guest));
        // Never the other way round, nor IPv6.
        assert_eq!(link_target(Origin::Published, loopback), None);
        assert_eq!(link_target(Origin::Rule, container), None);
        assert_eq!(
            link_target(Origin::Published, "[::1]:80".parse().unwrap()),
            None
        );
    }
}
