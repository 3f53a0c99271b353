//! A container's sandbox: its addresses, interfaces, published ports and
//! link rules, from the moment its start is prepared until its run ends.
//!
//! A start goes in two steps so that nothing is plumbed for a container that
//! cannot get what it asked for: `prepare` (addresses from the pools, host
//! ports reserved — a port conflict fails here, before any process exists),
//! then `plumb` once the container's network namespace exists (veth or
//! macvlan per endpoint, addresses and routes inside, DNS names, DNAT rules,
//! port events). `release` undoes all of it and never stops at the first
//! error.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use vmctl_proto::ports::{PortBinding, Protocol};

use super::error::NetworkError;
use super::manager::{Networks, State};
use super::netlink::{self, InterfaceConfig, MacvlanSpec, Netlink, VethSpec};
use super::nft::{LinkRule, PortRule};
use super::ports::{self, PortRequest, Reservation};
use super::record::{EndpointRecord, OPT_PARENT};

/// One endpoint of a running container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveEndpoint {
    pub network_id: String,
    pub network_name: String,
    pub endpoint_id: String,
    pub order: u32,
    pub address: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub mac: String,
    pub interface: String,
    /// Host end of the veth pair; empty for macvlan.
    pub host_interface: String,
    pub aliases: Vec<String>,
    pub dns_names: Vec<String>,
    /// Whether the default route goes through this endpoint.
    pub default_route: bool,
    pub driver: String,
    pub mtu: Option<u32>,
}

impl LiveEndpoint {
    /// Copies what inspect shows into the container's endpoint record.
    pub fn fill(&self, record: &mut EndpointRecord) {
        record.network_id = self.network_id.clone();
        record.endpoint_id = self.endpoint_id.clone();
        record.address = Some(self.address);
        record.gateway = self.gateway;
        record.mac = self.mac.clone();
        record.interface = self.interface.clone();
        record.host_interface = self.host_interface.clone();
    }
}

/// Everything the engine holds for one container's run.
pub struct Sandbox {
    pub container_id: String,
    pub name: String,
    pub netns: PathBuf,
    /// By network id.
    pub endpoints: BTreeMap<String, LiveEndpoint>,
    pub reservations: Vec<Reservation>,
    pub bindings: Vec<PortBinding>,
    pub port_rules: Vec<PortRule>,
    pub link_rules: Vec<LinkRule>,
}

impl Sandbox {
    pub fn host_interfaces(&self) -> Vec<String> {
        self.endpoints
            .values()
            .filter(|e| !e.host_interface.is_empty())
            .map(|e| e.host_interface.clone())
            .collect()
    }

    fn primary(&self) -> Option<&LiveEndpoint> {
        self.endpoints.values().min_by_key(|e| e.order)
    }
}

/// A container that `--link`s to another: the target's address on the
/// default bridge and its exposed ports (what `icc=false` still lets through).
#[derive(Debug, Clone)]
pub struct LinkTarget {
    pub address: Ipv4Addr,
    pub ports: Vec<(Protocol, u16)>,
    /// The linked container's environment (`ALIAS_ENV_*` for the linker).
    pub env: Vec<String>,
}

/// What the engine asks for when a container starts.
pub struct SandboxRequest {
    pub container_id: String,
    pub name: String,
    /// Network key (name or id) → endpoint settings, any order.
    pub endpoints: Vec<(String, EndpointRecord)>,
    pub ports: Vec<PortRequest>,
    pub links: Vec<LinkTarget>,
}

pub(super) fn short(id: &str) -> &str {
    &id[..12.min(id.len())]
}

fn new_endpoint_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let parts: Vec<u8> = text
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).ok())
        .collect::<Option<_>>()?;
    parts.try_into().ok()
}

impl Networks {
    /// Step one of a start: addresses and host ports, nothing plumbed yet.
    pub async fn prepare(
        &self,
        request: SandboxRequest,
    ) -> Result<Vec<LiveEndpoint>, NetworkError> {
        let mut state = self.state.lock().await;
        let mut sandbox = Sandbox {
            container_id: request.container_id.clone(),
            name: request.name.clone(),
            netns: PathBuf::new(),
            endpoints: BTreeMap::new(),
            reservations: Vec::new(),
            bindings: Vec::new(),
            port_rules: Vec::new(),
            link_rules: Vec::new(),
        };
        let mut endpoints = request.endpoints.clone();
        endpoints.sort_by_key(|(_, e)| e.order);
        let result = self.prepare_into(&mut state, &mut sandbox, &endpoints, &request);
        if let Err(e) = result {
            Self::release_addresses(&mut state, &sandbox);
            return Err(e);
        }
        let live: Vec<LiveEndpoint> = {
            let mut list: Vec<_> = sandbox.endpoints.values().cloned().collect();
            list.sort_by_key(|e| e.order);
            list
        };
        state
            .sandboxes
            .insert(request.container_id.clone(), sandbox);
        Ok(live)
    }

    fn prepare_into(
        &self,
        state: &mut State,
        sandbox: &mut Sandbox,
        endpoints: &[(String, EndpointRecord)],
        request: &SandboxRequest,
    ) -> Result<(), NetworkError> {
        for (index, (key, settings)) in endpoints.iter().enumerate() {
            let live = self.allocate_endpoint(state, sandbox, key, settings, index as u32)?;
            if let Some(live) = live {
                sandbox.endpoints.insert(live.network_id.clone(), live);
            }
        }
        let Some(primary) = sandbox.primary().cloned() else {
            return Ok(());
        };
        if primary.driver == "bridge" {
            self.reserve_ports(sandbox, &primary, &request.ports)?;
            let entry = state.find(&primary.network_id)?;
            if !entry.record.icc() {
                for link in &request.links {
                    for (protocol, port) in &link.ports {
                        sandbox.link_rules.push(LinkRule {
                            bridge: entry.record.bridge_name(),
                            from: primary.address.addr(),
                            to: link.address,
                            protocol: *protocol,
                            port: *port,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Takes an address on one network for the sandbox; `None` for networks
    /// without interfaces (`host`, `none`).
    pub(super) fn allocate_endpoint(
        &self,
        state: &mut State,
        sandbox: &Sandbox,
        key: &str,
        settings: &EndpointRecord,
        order: u32,
    ) -> Result<Option<LiveEndpoint>, NetworkError> {
        let id = state.id_of(key)?;
        let Some(entry) = state.networks.get_mut(&id) else {
            return Err(NetworkError::NotFound(key.to_owned()));
        };
        let record = entry.record.clone();
        if !record.has_interfaces() {
            return Ok(None);
        }
        if sandbox.endpoints.contains_key(&id) {
            return Err(NetworkError::AlreadyConnected {
                container: sandbox.name.clone(),
                network: record.name.clone(),
            });
        }
        let Some(pool) = entry.pool.as_mut() else {
            return Err(NetworkError::Invalid(format!(
                "network {} has no address pool",
                record.name
            )));
        };
        let address = pool.allocate(settings.requested_ip, &sandbox.container_id)?;
        let prefix = pool.subnet().prefix_len();
        let mac = if settings.requested_mac.is_empty() {
            mac_text(netlink::mac_for(address))
        } else {
            settings.requested_mac.to_lowercase()
        };
        let gateway = if record.default_bridge {
            self.options.default_gateway.or(record.gateway)
        } else {
            record.gateway
        };
        let endpoint_id = new_endpoint_id();
        Ok(Some(LiveEndpoint {
            network_id: id.clone(),
            network_name: record.name.clone(),
            order,
            address: Ipv4Net::new(address, prefix).unwrap_or_default(),
            gateway,
            mac,
            interface: String::new(),
            // Named per run, so a restart never meets the previous run's
            // pair, which is deleted in the background.
            host_interface: if record.driver == "bridge" {
                netlink::veth_name(&sandbox.container_id, &endpoint_id)
            } else {
                String::new()
            },
            endpoint_id,
            aliases: settings.aliases.clone(),
            dns_names: dns_names(
                &record,
                &sandbox.name,
                &settings.aliases,
                &sandbox.container_id,
            ),
            default_route: !record.internal,
            driver: record.driver.clone(),
            mtu: record.mtu(),
        }))
    }

    fn reserve_ports(
        &self,
        sandbox: &mut Sandbox,
        primary: &LiveEndpoint,
        requests: &[PortRequest],
    ) -> Result<(), NetworkError> {
        for request in requests {
            let mut binding = PortBinding {
                protocol: request.protocol,
                host_ip: request.host_ip,
                host_port: 0,
                container_ip: primary.address.addr(),
                container_port: request.container_port,
                container_id: sandbox.container_id.clone(),
                container_name: sandbox.name.clone(),
                default_address: request.default_address,
            };
            let reservation = ports::reserve(&self.options.port_authority, request, &binding)
                .map_err(|source| NetworkError::Port {
                    endpoint: sandbox.name.clone(),
                    id: primary.endpoint_id.clone(),
                    source,
                })?;
            binding.host_port = reservation.port;
            sandbox.port_rules.push(port_rule(&binding));
            sandbox.bindings.push(binding);
            sandbox.reservations.push(reservation);
        }
        Ok(())
    }

    fn release_addresses(state: &mut State, sandbox: &Sandbox) {
        for endpoint in sandbox.endpoints.values() {
            if let Some(entry) = state.networks.get_mut(&endpoint.network_id) {
                if let Some(pool) = entry.pool.as_mut() {
                    pool.release(endpoint.address.addr());
                }
            }
        }
    }

    /// Step two: interfaces into the namespace at `netns`, DNS names, DNAT
    /// rules and port events. On error the caller calls [`Networks::release`].
    pub async fn plumb(
        &self,
        container_id: &str,
        netns: &Path,
    ) -> Result<Vec<LiveEndpoint>, NetworkError> {
        let mut state = self.state.lock().await;
        let Some(sandbox) = state.sandboxes.get_mut(container_id) else {
            return Ok(Vec::new());
        };
        sandbox.netns = netns.to_owned();
        let mut endpoints: Vec<LiveEndpoint> = sandbox.endpoints.values().cloned().collect();
        endpoints.sort_by_key(|e| e.order);
        if endpoints.is_empty() {
            return Ok(Vec::new());
        }
        let inside = Netlink::in_netns(netns)?;
        let mut done = Vec::new();
        for (index, endpoint) in endpoints.iter().enumerate() {
            let mut endpoint = endpoint.clone();
            endpoint.interface = format!("eth{index}");
            self.plumb_endpoint(&state, &inside, netns, &endpoint)
                .await?;
            done.push(endpoint);
        }
        let sandbox = state.sandboxes.get_mut(container_id).ok_or_else(|| {
            NetworkError::Invalid(format!(
                "container {} left while starting",
                short(container_id)
            ))
        })?;
        for endpoint in &done {
            sandbox
                .endpoints
                .insert(endpoint.network_id.clone(), endpoint.clone());
        }
        let bindings = sandbox.bindings.clone();
        let firewall = !sandbox.port_rules.is_empty() || !sandbox.link_rules.is_empty();
        self.fill_port_bridges(&mut state, container_id);
        self.register_names(&state, container_id);
        if firewall {
            self.apply_firewall(&state).await?;
        }
        self.ports.add(&bindings);
        Ok(done)
    }

    /// Port rules carry the bridge of the container's primary endpoint.
    pub(super) fn fill_port_bridges(&self, state: &mut State, container_id: &str) {
        let bridge = state
            .sandboxes
            .get(container_id)
            .and_then(|s| s.primary())
            .and_then(|p| state.networks.get(&p.network_id))
            .map(|e| e.record.bridge_name())
            .unwrap_or_default();
        if let Some(sandbox) = state.sandboxes.get_mut(container_id) {
            for rule in &mut sandbox.port_rules {
                rule.bridge = bridge.clone();
            }
        }
    }

    pub(super) fn register_names(&self, state: &State, container_id: &str) {
        let Some(sandbox) = state.sandboxes.get(container_id) else {
            return;
        };
        for endpoint in sandbox.endpoints.values() {
            if let Some((_, records)) = state
                .networks
                .get(&endpoint.network_id)
                .and_then(|e| e.dns.as_ref())
            {
                records.set(
                    &sandbox.container_id,
                    &endpoint.dns_names,
                    endpoint.address.addr(),
                );
            }
        }
    }

    /// One interface into the container's namespace, configured.
    pub(super) async fn plumb_endpoint(
        &self,
        state: &State,
        inside: &Netlink,
        netns: &Path,
        endpoint: &LiveEndpoint,
    ) -> Result<(), NetworkError> {
        let entry = state.find(&endpoint.network_id)?;
        let file = std::fs::File::open(netns).map_err(|source| NetworkError::Io {
            step: "open",
            path: netns.to_owned(),
            source,
        })?;
        let mac = parse_mac(&endpoint.mac).ok_or_else(|| {
            NetworkError::Invalid(format!("invalid MAC address: {}", endpoint.mac))
        })?;
        if endpoint.driver == "bridge" {
            let bridge = entry.record.bridge_name();
            let index = self
                .netlink
                .link_index(&bridge)
                .await?
                .ok_or_else(|| NetworkError::Invalid(format!("bridge {bridge} is missing")))?;
            self.netlink
                .add_veth(&VethSpec {
                    host_name: &endpoint.host_interface,
                    bridge: index,
                    mtu: endpoint.mtu,
                    netns: file.as_fd(),
                    peer_name: &endpoint.interface,
                    peer_mac: mac,
                })
                .await?;
        } else {
            let parent = entry
                .record
                .options
                .get(OPT_PARENT)
                .cloned()
                .unwrap_or_default();
            let index = self.netlink.link_index(&parent).await?.ok_or_else(|| {
                NetworkError::Invalid(format!("parent interface {parent} does not exist"))
            })?;
            inside_or_host_macvlan(&self.netlink, index, endpoint, file.as_fd(), mac).await?;
        }
        let default_route = endpoint.default_route && endpoint.order == 0;
        inside
            .configure(&InterfaceConfig {
                name: endpoint.interface.clone(),
                address: endpoint.address,
                gateway: if default_route {
                    endpoint.gateway
                } else {
                    None
                },
                mtu: endpoint.mtu,
            })
            .await?;
        Ok(())
    }

    /// Ends a container's run: addresses, names, ports, rules. Returns the
    /// host interfaces to delete with [`Networks::delete_interfaces`]: the
    /// kernel takes tens of milliseconds per veth, so the caller does it off
    /// the exit path (they also go when the run's namespace goes, and each
    /// run's pair has a name of its own). Keeps going past errors and
    /// reports the first.
    pub async fn release(&self, container_id: &str) -> Result<Vec<String>, NetworkError> {
        let mut state = self.state.lock().await;
        let Some(sandbox) = state.sandboxes.remove(container_id) else {
            return Ok(Vec::new());
        };
        let mut first_error = None;
        let interfaces = sandbox.host_interfaces();
        for endpoint in sandbox.endpoints.values() {
            if let Some(entry) = state.networks.get_mut(&endpoint.network_id) {
                if let Some((_, records)) = entry.dns.as_ref() {
                    records.remove(container_id);
                }
            }
        }
        Self::release_addresses(&mut state, &sandbox);
        if !sandbox.port_rules.is_empty() || !sandbox.link_rules.is_empty() {
            if let Err(e) = self.apply_firewall(&state).await {
                first_error.get_or_insert(e);
            }
        }
        self.ports.remove(&sandbox.bindings);
        drop(sandbox);
        match first_error {
            Some(e) => Err(e),
            None => Ok(interfaces),
        }
    }

    /// Deletes host interfaces of ended runs; a missing one is fine.
    pub async fn delete_interfaces(&self, names: &[String]) {
        for name in names {
            if let Err(e) = self.netlink.delete_link(name).await {
                tracing::warn!(interface = %name, error = %e, "cannot delete interface");
            }
        }
    }
}

async fn inside_or_host_macvlan(
    host: &Netlink,
    parent: u32,
    endpoint: &LiveEndpoint,
    netns: std::os::fd::BorrowedFd<'_>,
    mac: [u8; 6],
) -> Result<(), NetworkError> {
    host.add_macvlan(&MacvlanSpec {
        parent,
        name: &endpoint.interface,
        netns,
        mac,
        mtu: endpoint.mtu,
    })
    .await?;
    Ok(())
}

/// The names a container answers to in a network's DNS (user networks
/// only): its name, its aliases and its short id, as Docker's `DNSNames`.
pub(super) fn dns_names(
    network: &super::record::NetworkRecord,
    name: &str,
    aliases: &[String],
    container_id: &str,
) -> Vec<String> {
    if !network.has_dns() {
        return Vec::new();
    }
    let mut names = vec![name.to_owned()];
    names.extend(aliases.iter().cloned());
    names.push(short(container_id).to_owned());
    names
}

/// The DNAT rule of a binding (its bridge is filled in at plumbing). An
/// IPv6 or unspecified host address publishes on every IPv4 address.
pub(super) fn port_rule(binding: &PortBinding) -> PortRule {
    PortRule {
        bridge: String::new(),
        protocol: binding.protocol,
        host_ip: match binding.host_ip {
            IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
            _ => None,
        },
        host_port: binding.host_port,
        container_ip: binding.container_ip,
        container_port: binding.container_port,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_print_and_parse() {
        let mac = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
        assert_eq!(mac_text(mac), "02:42:ac:11:00:02");
        assert_eq!(parse_mac("02:42:AC:11:00:02"), Some(mac));
        assert_eq!(parse_mac("02:42"), None);
    }
}
