//! A running container's sandbox changing under it: `docker network
//! connect`/`disconnect` add or remove one interface live, and after an
//! engine restart `restore` takes back the sandboxes of containers that kept
//! running (their interfaces are still there).

use std::collections::BTreeMap;
use std::path::Path;

use vmctl_proto::ports::PortBinding;

use super::error::NetworkError;
use super::manager::{Networks, State};
use super::netlink::Netlink;
use super::ports::{self, PortRequest};
use super::record::EndpointRecord;
use super::sandbox::{dns_names, port_rule, short, LiveEndpoint, Sandbox};

impl Networks {
    /// After an engine restart: takes back the sandbox of a container that
    /// kept running (addresses, host ports, names); interfaces are still there.
    pub async fn restore(
        &self,
        container_id: &str,
        name: &str,
        netns: &Path,
        endpoints: &BTreeMap<String, EndpointRecord>,
        bindings: &[PortBinding],
    ) -> Result<(), NetworkError> {
        let mut state = self.state.lock().await;
        let mut sandbox = Sandbox {
            container_id: container_id.to_owned(),
            name: name.to_owned(),
            netns: netns.to_owned(),
            endpoints: BTreeMap::new(),
            reservations: Vec::new(),
            bindings: Vec::new(),
            port_rules: Vec::new(),
            link_rules: Vec::new(),
        };
        for (network, settings) in endpoints {
            let Some(address) = settings.address else {
                continue;
            };
            let Ok(id) = state
                .id_of(&settings.network_id)
                .or_else(|_| state.id_of(network))
            else {
                continue;
            };
            let Some(entry) = state.networks.get_mut(&id) else {
                continue;
            };
            if let Some(pool) = entry.pool.as_mut() {
                pool.mark(address.addr(), container_id);
            }
            let record = entry.record.clone();
            sandbox.endpoints.insert(
                id.clone(),
                LiveEndpoint {
                    network_id: id.clone(),
                    network_name: record.name.clone(),
                    endpoint_id: settings.endpoint_id.clone(),
                    order: settings.order,
                    address,
                    gateway: settings.gateway,
                    mac: settings.mac.clone(),
                    interface: settings.interface.clone(),
                    host_interface: settings.host_interface.clone(),
                    aliases: settings.aliases.clone(),
                    dns_names: dns_names(&record, name, &settings.aliases, container_id),
                    default_route: !record.internal,
                    driver: record.driver.clone(),
                    mtu: record.mtu(),
                },
            );
        }
        for binding in bindings {
            let request = PortRequest {
                protocol: binding.protocol,
                container_port: binding.container_port,
                host_ip: binding.host_ip,
                host_ports: binding.host_port..=binding.host_port,
                default_address: binding.default_address,
            };
            match ports::reserve(&self.options.port_authority, &request, binding) {
                Ok(reservation) => sandbox.reservations.push(reservation),
                Err(e) => {
                    tracing::warn!(id = %short(container_id), error = %e, "cannot re-reserve a published port")
                }
            }
            sandbox.port_rules.push(port_rule(binding));
            sandbox.bindings.push(binding.clone());
        }
        state.sandboxes.insert(container_id.to_owned(), sandbox);
        self.fill_port_bridges(&mut state, container_id);
        self.register_names(&state, container_id);
        self.ports.add(bindings);
        Ok(())
    }

    /// `docker network connect` of a running container: one more interface.
    pub async fn connect(
        &self,
        container_id: &str,
        key: &str,
        settings: &EndpointRecord,
    ) -> Result<Option<LiveEndpoint>, NetworkError> {
        let mut state = self.state.lock().await;
        let Some(sandbox) = state.sandboxes.get(container_id) else {
            return Err(NetworkError::Invalid(format!(
                "container {} is not running",
                short(container_id)
            )));
        };
        let netns = sandbox.netns.clone();
        let order = sandbox
            .endpoints
            .values()
            .map(|e| e.order + 1)
            .max()
            .unwrap_or(0);
        let count = sandbox.endpoints.len();
        let probe = Sandbox {
            container_id: sandbox.container_id.clone(),
            name: sandbox.name.clone(),
            netns: netns.clone(),
            endpoints: sandbox.endpoints.clone(),
            reservations: Vec::new(),
            bindings: Vec::new(),
            port_rules: Vec::new(),
            link_rules: Vec::new(),
        };
        let Some(mut live) = self.allocate_endpoint(&mut state, &probe, key, settings, order)?
        else {
            return Ok(None);
        };
        live.interface = format!("eth{count}");
        let inside = match Netlink::in_netns(&netns) {
            Ok(inside) => inside,
            Err(e) => {
                release_one(&mut state, container_id, &live);
                return Err(e.into());
            }
        };
        if let Err(e) = self.plumb_endpoint(&state, &inside, &netns, &live).await {
            if !live.host_interface.is_empty() {
                let _ = self.netlink.delete_link(&live.host_interface).await;
            }
            release_one(&mut state, container_id, &live);
            return Err(e);
        }
        if let Some(sandbox) = state.sandboxes.get_mut(container_id) {
            sandbox
                .endpoints
                .insert(live.network_id.clone(), live.clone());
        }
        self.register_names(&state, container_id);
        Ok(Some(live))
    }

    /// `docker network disconnect` of a running container.
    pub async fn disconnect(
        &self,
        container_id: &str,
        network_id: &str,
    ) -> Result<(), NetworkError> {
        let mut state = self.state.lock().await;
        let Some(sandbox) = state.sandboxes.get_mut(container_id) else {
            return Ok(());
        };
        let Some(endpoint) = sandbox.endpoints.remove(network_id) else {
            return Ok(());
        };
        let netns = sandbox.netns.clone();
        if !endpoint.host_interface.is_empty() {
            self.netlink.delete_link(&endpoint.host_interface).await?;
        } else if let Ok(inside) = Netlink::in_netns(&netns) {
            inside.delete_link(&endpoint.interface).await?;
        }
        release_one(&mut state, container_id, &endpoint);
        Ok(())
    }
}

/// Returns one endpoint's address and DNS names.
fn release_one(state: &mut State, container_id: &str, endpoint: &LiveEndpoint) {
    if let Some(entry) = state.networks.get_mut(&endpoint.network_id) {
        if let Some(pool) = entry.pool.as_mut() {
            pool.release(endpoint.address.addr());
        }
        if let Some((_, records)) = entry.dns.as_ref() {
            records.remove(container_id);
        }
    }
}
