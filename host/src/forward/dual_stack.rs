//! localhost on both stacks: a port published on `127.0.0.1` without an
//! address given (`-p 8080:80` on a machine whose `port-bind-address` is the
//! default, or `vmctl port add` without `--host-ip`) listens on `[::1]` as
//! well, its *twin*: Node ≥ 18, Java and others resolve `localhost` to `::1`
//! first. Docker Desktop listens on both too.
//!
//! The twin is a courtesy, never a condition: when `[::1]` cannot be had
//! (another program holds the port there, IPv6 is off) the IPv4 listener
//! serves alone, the reason is logged and `vmctl port ls` shows it; a port
//! that was only taken is tried again by the forwarder's sweep. An address
//! given explicitly (`-p 127.0.0.1:8080:80`) is used exactly: no twin.
//! Nothing here ever listens on `::` or `0.0.0.0`.
//!
//! Both sockets of a forward share its target, policy gate and traffic
//! counters; [`super::ports`] opens and closes them together.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vmctl_proto::ports::Protocol;

use super::listener::{self, Listener};
use super::stats::Stats;
use super::Route;
use crate::vsock::VsockTransport;

/// Where a twin listens.
pub const TWIN_IP: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// Whether a forward on `host_ip` gets a twin: only IPv4 loopback reached
/// by default, never an address the user wrote.
pub fn wanted(host_ip: IpAddr, default_address: bool) -> bool {
    default_address && host_ip == IpAddr::V4(Ipv4Addr::LOCALHOST)
}

/// The `[::1]` socket of a forward, or why there is none.
#[derive(Debug)]
pub struct Twin {
    listener: Option<Listener>,
    why_not: Option<String>,
    /// The port was taken (it may come free): the sweep tries again.
    retry: bool,
}

/// A twin as `vmctl port ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwinInfo {
    pub address: SocketAddr,
    /// Why nothing listens there (the IPv4 listener serves alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Twin {
    /// Listens on `[::1]:port` for `route` (its `listen` is replaced); a
    /// failure is logged and kept as the reason.
    pub fn open(
        protocol: Protocol,
        port: u16,
        route: Route,
        transport: Arc<dyn VsockTransport>,
        stats: Arc<Stats>,
    ) -> Twin {
        match Twin::bind(protocol, port, route, transport, stats) {
            Ok(twin) => twin,
            Err(error) => {
                let (why, retry) = reason(&error);
                let address = SocketAddr::new(TWIN_IP, port);
                tracing::warn!(%address, %protocol, %error, "localhost on IPv6 unavailable: the IPv4 listener serves alone");
                Twin::unavailable(why, retry)
            }
        }
    }

    /// [`Twin::open`] that answers the error instead (for quiet retries).
    pub fn bind(
        protocol: Protocol,
        port: u16,
        mut route: Route,
        transport: Arc<dyn VsockTransport>,
        stats: Arc<Stats>,
    ) -> std::io::Result<Twin> {
        route.listen = SocketAddr::new(TWIN_IP, port);
        let (_, listener) = listener::open(protocol, route, transport, stats)?;
        Ok(Twin {
            listener: Some(listener),
            why_not: None,
            retry: false,
        })
    }

    /// No twin, for `why` (`retry`: the port may come free).
    pub fn unavailable(why: impl Into<String>, retry: bool) -> Twin {
        Twin {
            listener: None,
            why_not: Some(why.into()),
            retry,
        }
    }

    pub fn listening(&self) -> bool {
        self.listener.is_some()
    }

    /// Not listening, but the port was only taken: worth another try.
    pub fn worth_retrying(&self) -> bool {
        self.listener.is_none() && self.retry
    }

    pub fn info(&self, port: u16) -> TwinInfo {
        TwinInfo {
            address: SocketAddr::new(TWIN_IP, port),
            error: self.why_not.clone(),
        }
    }
}

/// Why `[::1]` could not be bound, in a few words; whether it may come free.
fn reason(error: &std::io::Error) -> (String, bool) {
    #[cfg(unix)]
    let no_ipv6 = error.raw_os_error() == Some(libc::EAFNOSUPPORT);
    #[cfg(not(unix))]
    let no_ipv6 = false;
    match error.kind() {
        std::io::ErrorKind::AddrInUse => ("address in use".into(), true),
        std::io::ErrorKind::AddrNotAvailable | std::io::ErrorKind::Unsupported => {
            ("no IPv6 loopback on this desktop".into(), false)
        }
        _ if no_ipv6 => ("no IPv6 loopback on this desktop".into(), false),
        _ => (error.to_string(), false),
    }
}

/// `127.0.0.1:8080, [::1]:8080`, or `127.0.0.1:8080 (::1 unavailable: address
/// in use)`: every address of a forward, for `vmctl port ls`.
pub fn addresses_text(primary: SocketAddr, twin: Option<&TwinInfo>) -> String {
    match twin {
        None => primary.to_string(),
        Some(TwinInfo {
            error: None,
            address,
        }) => format!("{primary}, {address}"),
        Some(TwinInfo {
            error: Some(why),
            address,
        }) => format!("{primary} ({} unavailable: {why})", address.ip()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_default_ipv4_loopback_has_a_twin() {
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(wanted(local, true));
        assert!(
            !wanted(local, false),
            "an explicit 127.0.0.1 is used exactly"
        );
        for other in ["127.0.0.2", "0.0.0.0", "::1", "::", "192.168.1.20"] {
            assert!(!wanted(other.parse().unwrap(), true), "{other}");
        }
    }

    #[test]
    fn reasons_are_short_and_only_a_taken_port_is_retried() {
        let in_use = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        assert_eq!(reason(&in_use), ("address in use".into(), true));
        let off = std::io::Error::from(std::io::ErrorKind::AddrNotAvailable);
        assert_eq!(
            reason(&off),
            ("no IPv6 loopback on this desktop".into(), false)
        );
        #[cfg(unix)]
        assert!(!reason(&std::io::Error::from_raw_os_error(libc::EAFNOSUPPORT)).1);
    }

    #[test]
    fn port_ls_shows_both_addresses_or_why_one_is_missing() {
        let primary: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let address: SocketAddr = "[::1]:8080".parse().unwrap();
        assert_eq!(addresses_text(primary, None), "127.0.0.1:8080");
        let both = TwinInfo {
            address,
            error: None,
        };
        assert_eq!(
            addresses_text(primary, Some(&both)),
            "127.0.0.1:8080, [::1]:8080"
        );
        let alone = TwinInfo {
            address,
            error: Some("address in use".into()),
        };
        assert_eq!(
            addresses_text(primary, Some(&alone)),
            "127.0.0.1:8080 (::1 unavailable: address in use)"
        );
    }
}
