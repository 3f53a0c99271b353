//! Container networking, Docker's way: a default bridge (`vmctl0`, like
//! docker0), user-defined bridge and macvlan networks, a veth pair per
//! container and network, addresses from per-network pools, nftables for
//! NAT, published ports and isolation, and a DNS responder per user network.
//!
//! - `manager.rs`: the networks, the single lock over all state, the firewall
//!   rendered from it and the reconcile at start; `create.rs`: creating and
//!   removing networks.
//! - `sandbox.rs`: one container's addresses, interfaces and ports per run;
//!   `attach.rs`: connect/disconnect of a running container, restore after
//!   an engine restart.
//! - `record.rs`: what is stored; `ipam.rs`: address pools; `ports.rs`:
//!   published ports, host-port reservations and the port-binding list.
//! - `netlink.rs` (rtnetlink), `sysctl.rs`, `nft.rs` (nftables), `dns.rs`
//!   (hickory): one kernel interface or protocol each.

pub mod attach;
pub mod create;
pub mod dns;
pub mod error;
pub mod host_ports;
pub mod ipam;
pub mod manager;
pub mod netlink;
pub mod nft;
pub mod ports;
pub mod record;
pub mod sandbox;
pub mod sysctl;

pub use error::NetworkError;
pub use manager::{CreateRequest, NetworkOptions, Networks};
