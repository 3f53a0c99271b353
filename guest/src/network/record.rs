//! What the engine stores about networks and about a container's place on
//! them: a network's record (`<root>/networks/<id>.json`) and the endpoint
//! records kept inside each container's record.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use vmctl_proto::ports::PortBinding;

/// Option naming a bridge network's Linux bridge.
pub const OPT_BRIDGE_NAME: &str = "com.docker.network.bridge.name";
/// Option turning inter-container traffic on a bridge off (`"false"`).
pub const OPT_ICC: &str = "com.docker.network.bridge.enable_icc";
/// Option turning MASQUERADE for traffic leaving a bridge off (`"false"`).
pub const OPT_MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";
/// Option setting the MTU of a network's interfaces.
pub const OPT_MTU: &str = "com.docker.network.driver.mtu";
/// macvlan: the parent interface.
pub const OPT_PARENT: &str = "parent";

/// One network, as `docker network inspect` shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkRecord {
    pub id: String,
    pub name: String,
    /// `bridge`, `macvlan`, `host` or `null`.
    pub driver: String,
    pub created: String,
    pub internal: bool,
    pub attachable: bool,
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub ip_range: Option<Ipv4Net>,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// The engine's default bridge (`bridge`): no DNS, `--link` works.
    pub default_bridge: bool,
}

impl NetworkRecord {
    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }

    /// Whether containers on it get an interface and an address.
    pub fn has_interfaces(&self) -> bool {
        matches!(self.driver.as_str(), "bridge" | "macvlan")
    }

    /// The Linux bridge of a bridge network.
    pub fn bridge_name(&self) -> String {
        match self.options.get(OPT_BRIDGE_NAME) {
            Some(name) if !name.is_empty() => name.clone(),
            _ => format!("br-{}", self.short_id()),
        }
    }

    pub fn mtu(&self) -> Option<u32> {
        self.options.get(OPT_MTU).and_then(|m| m.parse().ok())
    }

    pub fn icc(&self) -> bool {
        self.options.get(OPT_ICC).map(String::as_str) != Some("false")
    }

    pub fn masquerade(&self) -> bool {
        self.options.get(OPT_MASQUERADE).map(String::as_str) != Some("false")
    }

    /// Whether the engine answers DNS for it (user-defined bridges).
    pub fn has_dns(&self) -> bool {
        self.driver == "bridge" && !self.default_bridge
    }
}

/// A container's attachment to one network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EndpointRecord {
    pub network_id: String,
    /// Order of attachment: 0 is `eth0`, the network mode's network.
    pub order: u32,
    pub aliases: Vec<String>,
    /// `IPAMConfig.IPv4Address` (`--ip`).
    pub requested_ip: Option<Ipv4Addr>,
    /// `--mac-address` (or the endpoint's MacAddress).
    pub requested_mac: String,
    /// The endpoint's `DriverOpts`, kept as dockerd keeps them (the bridge
    /// driver acts on none of them).
    pub driver_opts: BTreeMap<String, String>,
    /// The following are set while the container runs, cleared at its exit.
    pub endpoint_id: String,
    pub address: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub mac: String,
    /// Interface inside the container (`eth0`, `eth1`…).
    pub interface: String,
    /// Host end of the veth pair (bridge networks).
    pub host_interface: String,
}

impl EndpointRecord {
    /// Forgets what only a running container has.
    pub fn clear_live(&mut self) {
        self.endpoint_id.clear();
        self.address = None;
        self.gateway = None;
        self.mac.clear();
        self.interface.clear();
        self.host_interface.clear();
    }
}

/// A container's networking: endpoints by network name and its published
/// ports while it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerNetworking {
    pub endpoints: BTreeMap<String, EndpointRecord>,
    pub ports: Vec<PortBinding>,
    pub sandbox_id: String,
}

impl ContainerNetworking {
    /// Endpoints in interface order.
    pub fn ordered(&self) -> Vec<(&String, &EndpointRecord)> {
        let mut list: Vec<_> = self.endpoints.iter().collect();
        list.sort_by_key(|(_, e)| e.order);
        list
    }

    pub fn next_order(&self) -> u32 {
        self.endpoints
            .values()
            .map(|e| e.order + 1)
            .max()
            .unwrap_or(0)
    }
}
