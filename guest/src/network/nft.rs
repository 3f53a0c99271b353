//! The engine's firewall: one nftables table (`ip vmctl` by default) that
//! holds every NAT and filter rule container networking needs, rendered from
//! a declarative [`FirewallState`] and replaced as a whole in one `nft -j -f -`
//! transaction. Reconciling after a crash is just another [`Firewall::apply`].
//!
//! This module owns the ruleset only. It does not create bridges or veths,
//! set sysctls (`ip_forward`, `route_localnet` on each bridge) or decide
//! which ports are published; the engine does, and describes the result.
//!
//! # Primer
//!
//! nftables groups rules into *chains* inside a *table*. A *base chain* is
//! attached to a netfilter hook with a priority; a *regular chain* is only
//! entered by `jump`. A rule is a list of matches ending in a verdict
//! (`accept`, `drop`, `jump`) or a NAT statement. Bridged traffic between
//! containers also traverses the `ip` hooks (`br_netfilter`, switched on by
//! the engine while a network has `icc=false`), with `iifname`
//! and `oifname` both set to the bridge. The rendered table, modelled on
//! Docker's iptables rules with `userland-proxy=false`:
//!
//! ```text
//! table ip vmctl {
//!   chain prerouting   nat,    prerouting,  dstnat   fib daddr type local jump ports
//!   chain output       nat,    output,      -100     fib daddr type local jump ports
//!   chain ports        (regular)                     [ip daddr HIP] tcp dport HP dnat to CIP:CP
//!   chain postrouting  nat,    postrouting, srcnat   ip saddr NET oifname != BR masquerade
//!                                                    oifname BR ip saddr 127.0.0.0/8 masquerade
//!                                                    oifname BR ip saddr NET ct status dnat masquerade
//!   chain forward      filter, forward,     filter   iifname BR oifname != BR drop   (internal)
//!                                                    oifname BR iifname != BR drop   (internal)
//!                                                    iifname BR oifname { OTHERS } drop
//!                                                    iifname BR oifname BR … accept  (links, icc off)
//!                                                    iifname BR oifname BR drop      (icc off)
//! }
//! ```
//!
//! Every base chain has policy `accept`: the table only ever adds NAT and
//! drops for our own bridges, never breaks the host's other traffic. Ports
//! of internal networks are not published (as in Docker).

mod render;
mod run;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use run::RunError;

/// The table the engine uses unless told otherwise.
pub const DEFAULT_TABLE: &str = "vmctl";

/// Where `nft` lives on Debian-like systems; without it, `nft` from `PATH`.
const DEFAULT_NFT: &str = "/usr/sbin/nft";

/// Longest interface name the kernel accepts (`IFNAMSIZ` - 1).
const MAX_IFNAME: usize = 15;

/// Everything the engine wants from the firewall.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirewallState {
    pub networks: Vec<NetworkRules>,
    pub ports: Vec<PortRule>,
    pub links: Vec<LinkRule>,
    /// Subnets no container on our bridges may reach (in the VM, its NIC's,
    /// where QEMU puts the desktop's loopback at `10.0.2.2`), but for DNS to
    /// [`resolvers`](Self::resolvers).
    pub guarded: Vec<ipnet::Ipv4Net>,
    /// Name servers inside `guarded` that containers may ask (UDP and TCP
    /// port 53): the engine's own upstreams.
    pub resolvers: Vec<Ipv4Addr>,
}

/// One bridge network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRules {
    pub bridge: String,
    pub subnet: ipnet::Ipv4Net,
    /// No traffic in or out of the bridge, only between its containers.
    pub internal: bool,
    /// Source-NAT traffic leaving the host (ignored when `internal`).
    pub masquerade: bool,
    /// Containers of this bridge may talk to each other; when off, only
    /// [`LinkRule`]s pass.
    pub icc: bool,
}

/// Transport protocol of a published port or a link (nftables uses the
/// same names, `tcp` and `udp`).
pub use vmctl_proto::ports::Protocol;

/// A published port: `host_ip:host_port` → `container_ip:container_port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRule {
    /// The bridge of the container's network.
    pub bridge: String,
    pub protocol: Protocol,
    /// `None` (or `0.0.0.0`) = any local address.
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_ip: Ipv4Addr,
    pub container_port: u16,
}

impl PortRule {
    /// The local address the port is bound to; `None` for any.
    pub fn host_ip(&self) -> Option<Ipv4Addr> {
        self.host_ip.filter(|ip| !ip.is_unspecified())
    }

    /// What the rendered rule depends on, in rendering order: a port bound
    /// to one address sorts before the same port on any address.
    fn key(&self) -> (Protocol, u16, bool, Option<Ipv4Addr>, Ipv4Addr, u16, &str) {
        let host_ip = self.host_ip();
        (
            self.protocol,
            self.host_port,
            host_ip.is_none(),
            host_ip,
            self.container_ip,
            self.container_port,
            &self.bridge,
        )
    }
}

/// A legacy `--link` on a bridge with `icc == false`: `from` may reach
/// `to:port`, and the replies pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRule {
    pub bridge: String,
    pub from: Ipv4Addr,
    pub to: Ipv4Addr,
    pub protocol: Protocol,
    pub port: u16,
}

/// Errors of the firewall.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("invalid nftables table name {0:?}")]
    InvalidTable(String),
    #[error("invalid bridge name {0:?}")]
    InvalidBridge(String),
    #[error("bridge {0} is listed as two networks")]
    DuplicateBridge(String),
    #[error("a {what} refers to bridge {bridge}, which is not a network")]
    UnknownBridge { what: &'static str, bridge: String },
    #[error("host port {protocol}/{host_port} is published twice")]
    PortConflict { protocol: Protocol, host_port: u16 },
    #[error("cannot encode the ruleset of table {table}")]
    Encode {
        table: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot apply the ruleset of table {table}")]
    Apply {
        table: String,
        #[source]
        source: RunError,
    },
    #[error("cannot delete table {table}")]
    Delete {
        table: String,
        #[source]
        source: RunError,
    },
    #[error("cannot list table {table}")]
    List {
        table: String,
        #[source]
        source: RunError,
    },
}

impl FirewallState {
    /// Checks what the rendering cannot express or would get wrong silently:
    /// bridge names, one network per bridge, ports and links on known
    /// bridges, and no host port published twice.
    pub fn validate(&self) -> Result<(), NftError> {
        let mut bridges = std::collections::HashSet::new();
        for net in &self.networks {
            if !is_ifname(&net.bridge) {
                return Err(NftError::InvalidBridge(net.bridge.clone()));
            }
            if !bridges.insert(net.bridge.as_str()) {
                return Err(NftError::DuplicateBridge(net.bridge.clone()));
            }
        }
        let known = |what, bridge: &String| {
            if bridges.contains(bridge.as_str()) {
                Ok(())
            } else {
                Err(NftError::UnknownBridge {
                    what,
                    bridge: bridge.clone(),
                })
            }
        };
        for port in &self.ports {
            known("published port", &port.bridge)?;
        }
        for link in &self.links {
            known("link", &link.bridge)?;
        }
        self.check_port_conflicts()
    }

    fn check_port_conflicts(&self) -> Result<(), NftError> {
        for (i, a) in self.ports.iter().enumerate() {
            for b in &self.ports[i + 1..] {
                let same_port = a.protocol == b.protocol && a.host_port == b.host_port;
                let overlap = match (a.host_ip(), b.host_ip()) {
                    (Some(x), Some(y)) => x == y,
                    _ => true,
                };
                if same_port && overlap && a.key() != b.key() {
                    return Err(NftError::PortConflict {
                        protocol: a.protocol,
                        host_port: a.host_port,
                    });
                }
            }
        }
        Ok(())
    }
}

/// The engine's nftables table, and the `nft` binary that edits it.
#[derive(Debug, Clone)]
pub struct Firewall {
    table: String,
    nft: PathBuf,
}

impl Default for Firewall {
    fn default() -> Firewall {
        Firewall::new(DEFAULT_TABLE)
    }
}

impl Firewall {
    /// The table `ip <table>`, edited with `/usr/sbin/nft` if present,
    /// else `nft` from `PATH`.
    pub fn new(table: &str) -> Firewall {
        let nft = if Path::new(DEFAULT_NFT).exists() {
            PathBuf::from(DEFAULT_NFT)
        } else {
            PathBuf::from("nft")
        };
        Firewall {
            table: table.to_owned(),
            nft,
        }
    }

    /// Uses another `nft` binary.
    pub fn with_nft(mut self, nft: impl Into<PathBuf>) -> Firewall {
        self.nft = nft.into();
        self
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// The transaction [`Firewall::apply`] runs: replace the table with the
    /// one `state` describes. Pure and deterministic.
    pub fn render(&self, state: &FirewallState) -> nftables::schema::Nftables<'static> {
        render::ruleset(&self.table, state)
    }

    /// Replaces the table atomically with the one `state` describes.
    pub async fn apply(&self, state: &FirewallState) -> Result<(), NftError> {
        self.check_table()?;
        state.validate()?;
        let started = Instant::now();
        let payload = self.encode(&self.render(state))?;
        run::nft(&self.nft, &["-j", "-f", "-"], Some(&payload))
            .await
            .map_err(|source| NftError::Apply {
                table: self.table.clone(),
                source,
            })?;
        tracing::debug!(
            table = %self.table,
            networks = state.networks.len(),
            ports = state.ports.len(),
            links = state.links.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "nftables ruleset applied"
        );
        Ok(())
    }

    /// Deletes the table; a table that does not exist is not an error.
    pub async fn delete(&self) -> Result<(), NftError> {
        self.check_table()?;
        let payload = self.encode(&render::removal(&self.table))?;
        run::nft(&self.nft, &["-j", "-f", "-"], Some(&payload))
            .await
            .map_err(|source| NftError::Delete {
                table: self.table.clone(),
                source,
            })?;
        tracing::debug!(table = %self.table, "nftables table deleted");
        Ok(())
    }

    /// The table as `nft list table ip <table>` prints it.
    pub async fn list(&self) -> Result<String, NftError> {
        self.check_table()?;
        run::nft(&self.nft, &["list", "table", "ip", &self.table], None)
            .await
            .map_err(|source| NftError::List {
                table: self.table.clone(),
                source,
            })
    }

    fn check_table(&self) -> Result<(), NftError> {
        let valid = !self.table.is_empty()
            && self.table.len() <= 64
            && self
                .table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid {
            Ok(())
        } else {
            Err(NftError::InvalidTable(self.table.clone()))
        }
    }

    fn encode(&self, ruleset: &nftables::schema::Nftables<'_>) -> Result<Vec<u8>, NftError> {
        serde_json::to_vec(ruleset).map_err(|source| NftError::Encode {
            table: self.table.clone(),
            source,
        })
    }
}

/// A name nft takes literally as an interface: no `*` wildcard, no `@` set
/// reference, no quoting trouble.
fn is_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests;
