//! `Networks`: the engine's networks and the live state of every container
//! on them — records on disk, address pools, bridges, DNS servers, the
//! firewall, the published-port table.
//!
//! Network verbs (create, remove, list) live here; what happens to one
//! container's sandbox (addresses, interfaces, ports) is in `sandbox.rs`.
//! Every change runs under one lock, so the firewall is always rendered from
//! a consistent state.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use ipnet::Ipv4Net;
use tokio::sync::Mutex;

use super::dns::{DnsRecords, DnsServer};
use super::error::NetworkError;
use super::ipam::Pool;
use super::netlink::{BridgeSpec, Netlink};
use super::nft::{Firewall, FirewallState, NetworkRules};
use super::ports::PortTable;
use super::record::{NetworkRecord, OPT_BRIDGE_NAME, OPT_ICC, OPT_MASQUERADE, OPT_MTU};
use super::sandbox::Sandbox;

/// Engine flags about networking (Docker's daemon options of the same names).
#[derive(Debug, Clone)]
pub struct NetworkOptions {
    /// The default bridge's interface; `none` for no default bridge.
    pub bridge: String,
    /// `--bip`: the default bridge's address and prefix.
    pub bip: Option<Ipv4Net>,
    /// `--fixed-cidr`: where the default bridge's dynamic addresses come from.
    pub fixed_cidr: Option<Ipv4Net>,
    pub mtu: Option<u32>,
    /// `--default-gateway`: the default route of containers on the default bridge.
    pub default_gateway: Option<Ipv4Addr>,
    pub icc: bool,
    pub ip_forward: bool,
    pub ip_masq: bool,
    /// The engine's resolv.conf: DNS upstreams of user networks.
    pub resolv_conf: PathBuf,
    /// `--ip`: the host address of ports published without one.
    pub default_bind_ip: std::net::IpAddr,
    /// Who holds published host ports (the host daemon, in the VM).
    pub port_authority: super::ports::PortAuthority,
    /// Subnets no network may overlap (`--reserved-subnet`; in the VM, its
    /// own NIC's, where the desktop is reachable).
    pub reserved_subnets: Vec<Ipv4Net>,
    /// The engine is the only user of this kernel's network stack (PID 1
    /// of the VM): it may switch off what no network of its needs, which on
    /// a shared host it leaves as it found it (see
    /// `Networks::bridge_hook`).
    pub owns_kernel: bool,
}

impl Default for NetworkOptions {
    fn default() -> Self {
        NetworkOptions {
            bridge: "vmctl0".to_owned(),
            bip: None,
            fixed_cidr: None,
            mtu: None,
            default_gateway: None,
            icc: true,
            ip_forward: true,
            ip_masq: true,
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            default_bind_ip: std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port_authority: super::ports::PortAuthority::Local,
            reserved_subnets: Vec::new(),
            owns_kernel: false,
        }
    }
}

/// A network and what the engine runs for it.
pub(super) struct NetworkEntry {
    pub record: NetworkRecord,
    pub pool: Option<Pool>,
    pub dns: Option<(DnsServer, DnsRecords)>,
}

pub(super) struct State {
    pub networks: BTreeMap<String, NetworkEntry>,
    pub sandboxes: HashMap<String, Sandbox>,
}

impl State {
    /// A network by full id, unique id prefix, or name (Docker's order).
    pub fn find(&self, key: &str) -> Result<&NetworkEntry, NetworkError> {
        if let Some(entry) = self.networks.get(key) {
            return Ok(entry);
        }
        if let Some(entry) = self.networks.values().find(|e| e.record.name == key) {
            return Ok(entry);
        }
        let mut matches = self
            .networks
            .values()
            .filter(|e| !key.is_empty() && e.record.id.starts_with(key));
        match (matches.next(), matches.next()) {
            (Some(entry), None) => Ok(entry),
            _ => Err(NetworkError::NotFound(key.to_owned())),
        }
    }

    pub fn id_of(&self, key: &str) -> Result<String, NetworkError> {
        self.find(key).map(|e| e.record.id.clone())
    }
}

/// What `POST /networks/create` asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub name: String,
    pub driver: String,
    pub internal: bool,
    pub attachable: bool,
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub ip_range: Option<Ipv4Net>,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

pub struct Networks {
    pub options: NetworkOptions,
    dir: PathBuf,
    pub(super) state: Mutex<State>,
    pub ports: PortTable,
    pub(super) firewall: Firewall,
    pub(super) netlink: Netlink,
}

pub(super) fn new_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

pub(super) fn now() -> String {
    crate::state::time::now_rfc3339()
}

impl Networks {
    /// Loads the networks, makes the predefined ones, and sets up the engine's
    /// network namespace: sysctls, bridges, DNS servers, an empty firewall.
    pub async fn open(
        options: NetworkOptions,
        root: &std::path::Path,
    ) -> Result<Arc<Networks>, NetworkError> {
        let dir = root.join("networks");
        std::fs::create_dir_all(&dir).map_err(|source| NetworkError::Io {
            step: "create",
            path: dir.clone(),
            source,
        })?;
        let networks = Networks {
            netlink: Netlink::new()?,
            firewall: Firewall::new("vmctl"),
            ports: PortTable::default(),
            state: Mutex::new(State {
                networks: BTreeMap::new(),
                sandboxes: HashMap::new(),
            }),
            dir,
            options,
        };
        networks.set_sysctls()?;
        let mut records = networks.load_records();
        networks.predefine(&mut records)?;
        let mut state = networks.state.lock().await;
        for record in records {
            match networks.bring_up(record.clone()).await {
                Ok(entry) => {
                    state.networks.insert(record.id.clone(), entry);
                }
                Err(e) => tracing::error!(
                    network = %record.name,
                    error = %crate::state::error_chain(&e),
                    "cannot bring a network up; it is left out"
                ),
            }
        }
        drop(state);
        Ok(Arc::new(networks))
    }

    fn set_sysctls(&self) -> Result<(), NetworkError> {
        if self.options.ip_forward {
            super::sysctl::set("net.ipv4.ip_forward", "1")?;
        }
        Ok(())
    }

    /// Whether traffic between two ports of a bridge passes the `ip`
    /// family's hooks (`br_netfilter`), where `icc=false` is enforced: on
    /// while a network has `icc=false`. Otherwise nothing of the firewall
    /// looks at it (isolation between networks and the guards act on routed
    /// traffic), and the second pass through conntrack and the ip hooks on
    /// every packet a container sends or receives is pure cost: about 80 µs
    /// of a round trip to a published port in the VM under emulation. So in
    /// the VM ([`NetworkOptions::owns_kernel`]) it is switched off again; on
    /// a shared host, where others may rely on it, it is left as found.
    fn bridge_hook(&self, wanted: &FirewallState) {
        const KEY: &str = "net.bridge.bridge-nf-call-iptables";
        let needed = wanted.networks.iter().any(|n| !n.icc);
        let value = match (needed, self.options.owns_kernel) {
            (true, _) => "1",
            (false, true) => "0",
            (false, false) => return,
        };
        match super::sysctl::set(KEY, value) {
            Ok(true) => tracing::debug!(key = KEY, value, "bridged traffic's ip hooks switched"),
            Ok(false) => {}
            Err(e) if needed => tracing::warn!(
                error = %e,
                "bridged traffic bypasses the firewall; icc=false cannot be enforced"
            ),
            Err(e) => tracing::debug!(error = %e, "bridged traffic's ip hooks left as they are"),
        }
    }

    fn load_records(&self) -> Vec<NetworkRecord> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut records = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    serde_json::from_slice::<NetworkRecord>(&b).map_err(|e| e.to_string())
                }) {
                Ok(record) => records.push(record),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping a network record")
                }
            }
        }
        records.sort_by(|a, b| a.created.cmp(&b.created));
        records
    }

    pub(super) fn save(&self, record: &NetworkRecord) -> Result<(), NetworkError> {
        let path = self.dir.join(format!("{}.json", record.id));
        let bytes = serde_json::to_vec_pretty(record).unwrap_or_default();
        crate::state::files::write_atomic(&path, &bytes).map_err(|source| NetworkError::Io {
            step: "write",
            path,
            source,
        })
    }

    pub(super) fn delete_record(&self, id: &str) {
        let _ = std::fs::remove_file(self.dir.join(format!("{id}.json")));
    }

    /// Makes `bridge`, `host` and `none` exist; the default bridge follows
    /// the engine's flags on every start.
    fn predefine(&self, records: &mut Vec<NetworkRecord>) -> Result<(), NetworkError> {
        for (name, driver) in [("bridge", "bridge"), ("host", "host"), ("none", "null")] {
            let position = records.iter().position(|r| r.name == name);
            let mut record = match position {
                Some(at) => records[at].clone(),
                None => NetworkRecord {
                    id: new_id(),
                    name: name.to_owned(),
                    driver: driver.to_owned(),
                    created: now(),
                    ..Default::default()
                },
            };
            if name == "bridge" {
                if self.options.bridge == "none" {
                    if let Some(at) = position {
                        records.remove(at);
                    }
                    continue;
                }
                self.configure_default_bridge(&mut record);
            }
            self.save(&record)?;
            match position {
                Some(at) => records[at] = record,
                None => records.insert(0, record),
            }
        }
        Ok(())
    }

    fn configure_default_bridge(&self, record: &mut NetworkRecord) {
        let options = &self.options;
        let bip = options
            .bip
            .unwrap_or_else(|| Ipv4Net::new(Ipv4Addr::new(172, 17, 0, 1), 16).unwrap_or_default());
        record.default_bridge = true;
        record.subnet = Some(bip.trunc());
        record.gateway = Some(bip.addr());
        record.ip_range = options.fixed_cidr;
        record.options = BTreeMap::from([
            (OPT_BRIDGE_NAME.to_owned(), options.bridge.clone()),
            (OPT_ICC.to_owned(), options.icc.to_string()),
            (OPT_MASQUERADE.to_owned(), options.ip_masq.to_string()),
            (
                "com.docker.network.bridge.default_bridge".to_owned(),
                "true".to_owned(),
            ),
            (
                "com.docker.network.bridge.host_binding_ipv4".to_owned(),
                "0.0.0.0".to_owned(),
            ),
            (OPT_MTU.to_owned(), options.mtu.unwrap_or(1500).to_string()),
        ]);
    }

    /// Creates the interfaces and services of a network that exists on disk.
    pub(super) async fn bring_up(
        &self,
        record: NetworkRecord,
    ) -> Result<NetworkEntry, NetworkError> {
        let mut pool = None;
        let mut dns = None;
        if let (Some(subnet), true) = (record.subnet, record.has_interfaces()) {
            pool = Some(Pool::new(subnet, record.ip_range, record.gateway));
        }
        if record.driver == "bridge" {
            let (Some(subnet), Some(gateway)) = (record.subnet, record.gateway) else {
                return Err(NetworkError::Invalid(format!(
                    "network {} has no subnet",
                    record.name
                )));
            };
            let bridge = record.bridge_name();
            let address = Ipv4Net::new(gateway, subnet.prefix_len())
                .map_err(|_| NetworkError::Invalid(format!("bad subnet {subnet}")))?;
            self.netlink
                .ensure_bridge(&BridgeSpec {
                    name: bridge.clone(),
                    address,
                    mtu: record.mtu(),
                    // Fixed, or the bridge takes the MAC of its first port.
                    mac: Some(super::netlink::mac_for(gateway)),
                })
                .await?;
            // Lets `127.0.0.1:PORT` be DNATed to a container on this bridge.
            super::sysctl::set_path(&["net", "ipv4", "conf", &bridge, "route_localnet"], "1")?;
            if record.has_dns() {
                let records = DnsRecords::new();
                let upstreams = std::fs::read_to_string(&self.options.resolv_conf)
                    .map(|t| super::dns::upstreams_from_resolv_conf(&t))
                    .unwrap_or_default();
                let server = DnsServer::start(
                    std::net::SocketAddr::new(gateway.into(), 53),
                    records.clone(),
                    upstreams,
                    !record.internal,
                )
                .await
                .map_err(|source| NetworkError::Dns {
                    network: record.name.clone(),
                    source,
                })?;
                dns = Some((server, records));
            }
        }
        Ok(NetworkEntry { record, pool, dns })
    }

    /// The firewall the current state needs.
    pub(super) fn firewall_state(&self, state: &State) -> FirewallState {
        let mut wanted = FirewallState::default();
        for entry in state.networks.values() {
            let record = &entry.record;
            if record.driver != "bridge" {
                continue;
            }
            let Some(subnet) = record.subnet else {
                continue;
            };
            wanted.networks.push(NetworkRules {
                bridge: record.bridge_name(),
                subnet,
                internal: record.internal,
                masquerade: record.masquerade() && self.options.ip_masq,
                icc: record.icc(),
            });
        }
        for sandbox in state.sandboxes.values() {
            wanted.ports.extend(sandbox.port_rules.iter().cloned());
            wanted.links.extend(sandbox.link_rules.iter().cloned());
        }
        // Containers never reach the VM's own network (the desktop's
        // loopback is there), but for DNS to the engine's upstreams in it.
        wanted.guarded = self.options.reserved_subnets.clone();
        if !wanted.guarded.is_empty() {
            let upstreams = std::fs::read_to_string(&self.options.resolv_conf)
                .map(|t| super::dns::upstreams_from_resolv_conf(&t))
                .unwrap_or_default();
            wanted.resolvers = upstreams
                .iter()
                .filter_map(|a| match a.ip() {
                    std::net::IpAddr::V4(ip) => Some(ip),
                    std::net::IpAddr::V6(_) => None,
                })
                .filter(|ip| wanted.guarded.iter().any(|n| n.contains(ip)))
                .collect();
        }
        wanted
    }

    pub(super) async fn apply_firewall(&self, state: &State) -> Result<(), NetworkError> {
        let wanted = self.firewall_state(state);
        self.bridge_hook(&wanted);
        self.firewall.apply(&wanted).await?;
        Ok(())
    }

    /// After restoring the running containers: drops interfaces on our bridges
    /// that belong to no sandbox, and renders the firewall afresh.
    pub async fn reconcile(&self) -> Result<(), NetworkError> {
        let state = self.state.lock().await;
        let live: std::collections::HashSet<String> = state
            .sandboxes
            .values()
            .flat_map(|s| s.host_interfaces())
            .collect();
        for entry in state
            .networks
            .values()
            .filter(|e| e.record.driver == "bridge")
        {
            let bridge = entry.record.bridge_name();
            let Some(index) = self.netlink.link_index(&bridge).await? else {
                continue;
            };
            for port in self.netlink.ports_of(index).await? {
                if !live.contains(&port) {
                    tracing::info!(interface = %port, bridge = %bridge, "removing a leftover interface");
                    self.netlink.delete_link(&port).await?;
                }
            }
        }
        self.apply_firewall(&state).await
    }

    /// Every network's record, oldest first.
    pub async fn list(&self) -> Vec<NetworkRecord> {
        let state = self.state.lock().await;
        let mut list: Vec<NetworkRecord> =
            state.networks.values().map(|e| e.record.clone()).collect();
        list.sort_by(|a, b| a.created.cmp(&b.created));
        list
    }

    pub async fn get(&self, key: &str) -> Result<NetworkRecord, NetworkError> {
        self.state.lock().await.find(key).map(|e| e.record.clone())
    }

    /// Ids of the containers attached to a network right now, with their
    /// endpoints (for `network inspect`).
    pub async fn attached(&self, network_id: &str) -> Vec<(String, super::sandbox::LiveEndpoint)> {
        let state = self.state.lock().await;
        state
            .sandboxes
            .values()
            .filter_map(|s| {
                s.endpoints
                    .get(network_id)
                    .map(|e| (s.container_id.clone(), e.clone()))
            })
            .collect()
    }

    /// The address of the default bridge (`host-gateway` of `--add-host`).
    pub async fn host_gateway(&self) -> Option<Ipv4Addr> {
        let state = self.state.lock().await;
        state
            .networks
            .values()
            .find(|e| e.record.default_bridge)
            .and_then(|e| e.record.gateway)
    }

    /// The network ids and names in use, to validate a create request.
    pub async fn resolve(&self, key: &str) -> Result<NetworkRecord, NetworkError> {
        self.get(key).await
    }

    /// Stops every DNS server (engine shutdown in tests).
    pub async fn shutdown(&self) {
        let mut state = self.state.lock().await;
        for entry in state.networks.values_mut() {
            if let Some((server, _)) = entry.dns.take() {
                server.stop().await;
            }
        }
    }
}
