//! Creating and removing networks: checking a create request the way
//! Docker does (name, driver, subnet overlaps, gateway, bridge options),
//! bringing the network up, and tearing it down when no container uses it.

use std::collections::BTreeMap;

use ipnet::Ipv4Net;

use super::error::NetworkError;
use super::ipam;
use super::manager::{new_id, now, CreateRequest, NetworkEntry, Networks, State};
use super::record::{NetworkRecord, OPT_BRIDGE_NAME, OPT_MTU, OPT_PARENT};

impl Networks {
    /// Creates a user-defined network.
    pub async fn create(&self, request: CreateRequest) -> Result<NetworkRecord, NetworkError> {
        let mut state = self.state.lock().await;
        let record = self.plan_network(&state, request)?;
        if record.driver == "macvlan" {
            let parent = record.options.get(OPT_PARENT).cloned().unwrap_or_default();
            if self.netlink.link_index(&parent).await?.is_none() {
                return Err(NetworkError::Invalid(format!(
                    "-o parent interface was not found on the host: {parent}"
                )));
            }
        }
        if record.driver == "bridge" {
            // An interface of that name that no network of ours owns (the
            // VM's eth0, lo, a container's veth) is refused before anything
            // is made, so the cleanup below only ever deletes our own bridge.
            let bridge = record.bridge_name();
            if self.netlink.link_index(&bridge).await?.is_some() {
                return Err(NetworkError::BridgeTaken {
                    network: record.name,
                    bridge,
                });
            }
        }
        self.save(&record)?;
        let entry = match self.bring_up(record.clone()).await {
            Ok(entry) => entry,
            Err(e) => {
                self.delete_record(&record.id);
                if record.driver == "bridge" {
                    let _ = self.netlink.delete_link(&record.bridge_name()).await;
                }
                return Err(e);
            }
        };
        state.networks.insert(record.id.clone(), entry);
        if let Err(e) = self.apply_firewall(&state).await {
            if let Some(entry) = state.networks.remove(&record.id) {
                self.tear_down(entry).await;
            }
            self.delete_record(&record.id);
            return Err(e);
        }
        tracing::info!(network = %record.name, id = %record.short_id(), "network created");
        Ok(record)
    }

    /// Checks a create request and fills in what Docker would.
    fn plan_network(
        &self,
        state: &State,
        request: CreateRequest,
    ) -> Result<NetworkRecord, NetworkError> {
        let name = request.name.trim().to_owned();
        if name.is_empty() {
            return Err(NetworkError::Invalid(
                "network name must not be empty".into(),
            ));
        }
        if state.networks.values().any(|e| e.record.name == name) {
            return Err(NetworkError::NameExists(name));
        }
        let driver = if request.driver.is_empty() {
            "bridge".to_owned()
        } else {
            request.driver.clone()
        };
        if !matches!(driver.as_str(), "bridge" | "macvlan") {
            return Err(NetworkError::Unsupported(format!(
                "plugin \"{driver}\" not found: this engine has the bridge and macvlan drivers"
            )));
        }
        let taken: Vec<Ipv4Net> = state
            .networks
            .values()
            .filter_map(|e| e.record.subnet)
            .collect();
        let subnet = match request.subnet {
            Some(subnet) => {
                let reserved = &self.options.reserved_subnets;
                if let Some(reserved) = ipam::reserved_overlap(&subnet, reserved) {
                    return Err(NetworkError::ReservedOverlap {
                        requested: subnet,
                        reserved,
                    });
                }
                if taken.iter().any(|t| ipam::overlaps(t, &subnet)) {
                    return Err(NetworkError::Overlap);
                }
                subnet.trunc()
            }
            None => ipam::default_subnets()
                .filter(|s| ipam::reserved_overlap(s, &self.options.reserved_subnets).is_none())
                .find(|s| !taken.iter().any(|t| ipam::overlaps(t, s)))
                .ok_or_else(|| {
                    NetworkError::Invalid("no free address pool for a new network".into())
                })?,
        };
        let gateway = match request.gateway {
            Some(gateway) if !subnet.contains(&gateway) => {
                return Err(NetworkError::Invalid(format!(
                    "invalid gateway {gateway}: it does not belong to subnet {subnet}"
                )))
            }
            Some(gateway) => gateway,
            None => subnet.hosts().next().unwrap_or(subnet.network()),
        };
        if let Some(range) = request.ip_range {
            if !subnet.contains(&range) {
                return Err(NetworkError::Invalid(format!(
                    "invalid ip-range {range}: it is not within subnet {subnet}"
                )));
            }
        }
        let mut options = request.options.clone();
        if driver == "bridge" {
            self.check_bridge_options(state, &mut options)?;
        } else if options.get(OPT_PARENT).is_none_or(|p| p.is_empty()) {
            return Err(NetworkError::Invalid(
                "macvlan networks need -o parent=INTERFACE".into(),
            ));
        }
        Ok(NetworkRecord {
            id: new_id(),
            name,
            driver,
            created: now(),
            internal: request.internal,
            attachable: request.attachable,
            subnet: Some(subnet),
            gateway: Some(gateway),
            ip_range: request.ip_range,
            options,
            labels: request.labels,
            default_bridge: false,
        })
    }

    fn check_bridge_options(
        &self,
        state: &State,
        options: &mut BTreeMap<String, String>,
    ) -> Result<(), NetworkError> {
        if let Some(name) = options.get(OPT_BRIDGE_NAME) {
            let valid = !name.is_empty()
                && name.len() <= 15
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !valid {
                return Err(NetworkError::Invalid(format!(
                    "invalid bridge name {name:?}"
                )));
            }
            if state
                .networks
                .values()
                .any(|e| e.record.driver == "bridge" && &e.record.bridge_name() == name)
            {
                return Err(NetworkError::Invalid(format!(
                    "bridge name {name} is already used by another network"
                )));
            }
        }
        if let Some(mtu) = options.get(OPT_MTU) {
            if !mtu.parse::<u32>().is_ok_and(|m| (68..=65535).contains(&m)) {
                return Err(NetworkError::Invalid(format!(
                    "invalid MTU {mtu:?}: must be between 68 and 65535"
                )));
            }
        }
        if self.options.mtu.is_some() && !options.contains_key(OPT_MTU) {
            options.insert(
                OPT_MTU.to_owned(),
                self.options.mtu.unwrap_or(1500).to_string(),
            );
        }
        Ok(())
    }

    /// Stops what runs for a network and removes its bridge.
    async fn tear_down(&self, entry: NetworkEntry) {
        if let Some((server, _)) = entry.dns {
            server.stop().await;
        }
        if entry.record.driver == "bridge" {
            if let Err(e) = self.netlink.delete_link(&entry.record.bridge_name()).await {
                tracing::warn!(network = %entry.record.name, error = %e, "cannot delete the bridge");
            }
        }
    }

    /// Removes a user-defined network that no running container uses.
    pub async fn remove(&self, key: &str) -> Result<NetworkRecord, NetworkError> {
        let mut state = self.state.lock().await;
        let entry = state.find(key)?;
        let record = entry.record.clone();
        if matches!(record.name.as_str(), "bridge" | "host" | "none") {
            return Err(NetworkError::Predefined(record.name));
        }
        if state
            .sandboxes
            .values()
            .any(|s| s.endpoints.contains_key(&record.id))
        {
            return Err(NetworkError::ActiveEndpoints {
                name: record.name,
                id: record.id,
            });
        }
        if let Some(entry) = state.networks.remove(&record.id) {
            self.tear_down(entry).await;
        }
        self.delete_record(&record.id);
        self.apply_firewall(&state).await?;
        tracing::info!(network = %record.name, "network removed");
        Ok(record)
    }
}
