//! The desktop's own rules for published ports, applied to every request of
//! the guest whatever the guest says (the guest runs images its user did
//! not write; a container may forge requests to the host-port service).
//!
//! - **Listen address**: loopback (`127.0.0.0/8`, `::1`) and the machine's
//!   `port-bind-address` always; `0.0.0.0`, `::` or one of the desktop's own
//!   addresses only when the machine's `allow-lan-ports` is on; an address
//!   that is not the desktop's never.
//! - **Target**: a published port forwards to a container. It may never
//!   name the VM's own NIC subnet (QEMU's `10.0.2.0/24`, where `10.0.2.2`
//!   is the desktop's loopback) nor loopback, unspecified, multicast or
//!   broadcast addresses. Only the user's own `vmctl port` rules reach the
//!   VM's addresses ([`Origin::Rule`]).
//! - **Bounds**: at most [`MAX_RESERVATIONS`] published ports per machine,
//!   and reservations at most at [`RESERVE_RATE`] a second after a burst of
//!   [`RESERVE_BURST`] ([`TokenBucket`]).
//!
//! Every check is a pure function of the request and [`Settings`], so the
//! tests need no VM; [`super::ports::Forwarder`] calls them at reservation,
//! at each reconcile with the engine's list and for each connection.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use ipnet::Ipv4Net;
use vmctl_proto::forward::Origin;
use vmctl_proto::ports::PortBinding;

/// Published ports one machine may hold at once.
pub const MAX_RESERVATIONS: usize = 4096;
/// Reservations a second, sustained.
pub const RESERVE_RATE: f64 = 256.0;
/// Reservations at once (a `-p 8000-9023:8000-9023` range is 1024).
pub const RESERVE_BURST: f64 = 2048.0;

/// What the machine's settings say, as the policy needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `vmctl machine init|set --allow-lan-ports`.
    pub allow_lan: bool,
    /// The machine's `port-bind-address`: always allowed (the user chose it).
    pub bind_address: IpAddr,
    /// The VM's own NIC subnet (from the hypervisor backend's config).
    pub nic_subnet: Option<Ipv4Net>,
}

impl Default for Settings {
    /// The strictest: loopback only, no NIC subnet known.
    fn default() -> Self {
        Settings {
            allow_lan: false,
            bind_address: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            nic_subnet: None,
        }
    }
}

/// Why the desktop refuses. The text follows Docker's `Bind for …
/// failed: …` so the docker CLI shows it as the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("Bind for {address} failed: this machine publishes ports on loopback only (allow-lan-ports is off; use 127.0.0.1, or `vmctl machine set NAME --allow-lan-ports=true`)")]
    LanNotAllowed { address: SocketAddr },
    #[error("Bind for {address} failed: {ip} is not an address of this desktop", ip = address.ip())]
    NotOurs { address: SocketAddr },
    #[error("Bind for {address} failed: a published port may not forward to {target} ({why})")]
    Target {
        address: SocketAddr,
        target: SocketAddr,
        why: &'static str,
    },
    #[error("Bind for {address} failed: this machine already publishes {max} ports")]
    TooMany { address: SocketAddr, max: usize },
    #[error("Bind for {address} failed: too many port reservations a second; try again")]
    TooFast { address: SocketAddr },
}

/// Whether the desktop may listen on `ip` for a published port.
/// `local` are the desktop's own addresses (for an explicit `HostIp`).
pub fn check_listen(
    ip: IpAddr,
    port: u16,
    settings: &Settings,
    local: &[IpAddr],
) -> Result<(), Refusal> {
    let address = SocketAddr::new(ip, port);
    if ip.is_loopback() || ip == settings.bind_address {
        return Ok(());
    }
    if !ip.is_unspecified() && !local.contains(&ip) {
        return Err(Refusal::NotOurs { address });
    }
    if settings.allow_lan {
        Ok(())
    } else {
        Err(Refusal::LanNotAllowed { address })
    }
}

/// Why `target` is not a container, if it is not; `None` when it may be.
pub fn forbidden_target(
    target: SocketAddr,
    origin: Origin,
    settings: &Settings,
) -> Option<&'static str> {
    if origin == Origin::Rule {
        return None;
    }
    let ip = target.ip();
    if ip.is_loopback() {
        return Some("loopback");
    }
    if ip.is_unspecified() || ip.is_multicast() {
        return Some("not a container's address");
    }
    if let IpAddr::V4(v4) = ip {
        if v4.is_broadcast() || v4.is_link_local() {
            return Some("not a container's address");
        }
        if settings.nic_subnet.is_some_and(|net| net.contains(&v4)) {
            return Some("the VM's own network, where the desktop is");
        }
    }
    None
}

/// [`check_listen`] and the target of a published `binding`.
pub fn check_binding(
    binding: &PortBinding,
    settings: &Settings,
    local: &[IpAddr],
) -> Result<(), Refusal> {
    let address = SocketAddr::new(binding.host_ip, binding.host_port);
    let target = SocketAddr::new(IpAddr::V4(binding.container_ip), binding.container_port);
    if let Some(why) = forbidden_target(target, Origin::Published, settings) {
        return Err(Refusal::Target {
            address,
            target,
            why,
        });
    }
    check_listen(binding.host_ip, binding.host_port, settings, local)
}

/// Whether one more published port fits beside `live` ones.
pub fn check_count(binding: &PortBinding, live: usize) -> Result<(), Refusal> {
    if live < MAX_RESERVATIONS {
        Ok(())
    } else {
        Err(Refusal::TooMany {
            address: SocketAddr::new(binding.host_ip, binding.host_port),
            max: MAX_RESERVATIONS,
        })
    }
}

/// The desktop's own addresses (every interface's), for [`check_listen`].
/// Windows: none are listed yet (no `getifaddrs`; `GetAdaptersAddresses`
/// comes with the Windows backend), so only loopback, the machine's bind
/// address and the wildcard can be listened on there.
#[cfg(not(unix))]
pub fn local_addresses() -> Vec<IpAddr> {
    Vec::new()
}

/// The desktop's own addresses (every interface's), for [`check_listen`].
#[cfg(unix)]
pub fn local_addresses() -> Vec<IpAddr> {
    let Ok(addresses) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addresses
        .filter_map(|a| a.address)
        .filter_map(|a| {
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .collect()
}

/// A token bucket: `burst` tokens at most, refilled at `rate` a second.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// The bucket for reservations ([`RESERVE_RATE`], [`RESERVE_BURST`]).
    pub fn reservations() -> Self {
        Self::new(RESERVE_RATE, RESERVE_BURST, Instant::now())
    }

    /// Takes one token at `now`; `false` when the bucket is empty.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use vmctl_proto::ports::Protocol;

    fn settings(allow_lan: bool) -> Settings {
        Settings {
            allow_lan,
            bind_address: "127.0.0.1".parse().unwrap(),
            nic_subnet: Some("10.0.2.0/24".parse().unwrap()),
        }
    }

    fn binding(host_ip: &str, container_ip: &str) -> PortBinding {
        PortBinding {
            protocol: Protocol::Tcp,
            host_ip: host_ip.parse().unwrap(),
            host_port: 18998,
            container_ip: container_ip.parse().unwrap(),
            container_port: 18999,
            container_id: "c".repeat(64),
            container_name: "c".into(),
            default_address: false,
        }
    }

    const LAN: &str = "192.168.1.20";

    fn local() -> Vec<IpAddr> {
        vec!["127.0.0.1".parse().unwrap(), LAN.parse().unwrap()]
    }

    #[test]
    fn every_address_with_lan_off_is_refused_but_loopback() {
        let off = settings(false);
        for ip in ["0.0.0.0", "::", LAN] {
            let refusal = check_binding(&binding(ip, "172.17.0.2"), &off, &local()).unwrap_err();
            assert!(matches!(refusal, Refusal::LanNotAllowed { .. }), "{ip}");
            assert!(refusal.to_string().contains("allow-lan-ports is off"));
        }
        for ip in ["127.0.0.1", "127.0.0.2", "::1"] {
            check_binding(&binding(ip, "172.17.0.2"), &off, &local()).unwrap();
        }
    }

    #[test]
    fn lan_on_allows_our_addresses_and_the_wildcards() {
        let on = settings(true);
        for ip in ["0.0.0.0", "::", LAN, "127.0.0.1", "::1"] {
            check_binding(&binding(ip, "172.17.0.2"), &on, &local()).unwrap();
        }
    }

    #[test]
    fn the_port_bind_address_is_always_allowed() {
        let chosen = Settings {
            bind_address: "0.0.0.0".parse().unwrap(),
            ..settings(false)
        };
        check_binding(&binding("0.0.0.0", "172.17.0.2"), &chosen, &local()).unwrap();
        let refusal = check_binding(&binding(LAN, "172.17.0.2"), &chosen, &local()).unwrap_err();
        assert!(matches!(refusal, Refusal::LanNotAllowed { .. }));
    }

    #[test]
    fn a_foreign_address_is_refused_by_name() {
        for lan in [false, true] {
            let refusal = check_binding(
                &binding("192.0.2.1", "172.17.0.2"),
                &settings(lan),
                &local(),
            )
            .unwrap_err();
            assert_eq!(
                refusal.to_string(),
                "Bind for 192.0.2.1:18998 failed: 192.0.2.1 is not an address of this desktop"
            );
        }
    }

    #[test]
    fn published_ports_never_target_the_desktop_or_the_vm() {
        let on = settings(true);
        for target in [
            "10.0.2.2",
            "10.0.2.15",
            "10.0.2.255",
            "127.0.0.1",
            "127.8.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "169.254.1.1",
        ] {
            let refusal = check_binding(&binding("127.0.0.1", target), &on, &local()).unwrap_err();
            assert!(
                matches!(refusal, Refusal::Target { .. }),
                "{target}: {refusal}"
            );
        }
        let desktop = check_binding(&binding("0.0.0.0", "10.0.2.2"), &on, &local()).unwrap_err();
        assert_eq!(
            desktop.to_string(),
            "Bind for 0.0.0.0:18998 failed: a published port may not forward to 10.0.2.2:18999 (the VM's own network, where the desktop is)"
        );
        for target in ["172.17.0.2", "10.0.3.2", "192.168.16.5"] {
            check_binding(&binding("127.0.0.1", target), &on, &local()).unwrap();
        }
    }

    #[test]
    fn only_rules_reach_the_vm_itself() {
        let on = settings(true);
        for target in ["127.0.0.1:80", "[::1]:80", "10.0.2.15:22"] {
            let target: SocketAddr = target.parse().unwrap();
            assert!(
                forbidden_target(target, Origin::Published, &on).is_some(),
                "{target}"
            );
            assert_eq!(forbidden_target(target, Origin::Rule, &on), None);
        }
    }

    #[test]
    fn reservations_are_counted() {
        let b = binding("127.0.0.1", "172.17.0.2");
        check_count(&b, MAX_RESERVATIONS - 1).unwrap();
        let refusal = check_count(&b, MAX_RESERVATIONS).unwrap_err();
        assert!(refusal.to_string().contains("already publishes 4096 ports"));
    }

    #[test]
    fn a_flood_empties_the_bucket_and_time_refills_it() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 5.0, start);
        let granted = (0..100).filter(|_| bucket.take(start)).count();
        assert_eq!(granted, 5, "only the burst passes at once");
        assert!(!bucket.take(start + Duration::from_millis(50)));
        assert!(bucket.take(start + Duration::from_millis(200)));
        let later = start + Duration::from_secs(60);
        assert_eq!(
            (0..100).filter(|_| bucket.take(later)).count(),
            5,
            "never more than the burst"
        );
    }
}
