//! The engine's side of networking: which networks a container is on (from
//! its network mode and `NetworkingConfig`), the glue that gives a starting
//! container its sandbox and takes it back at exit, and the network verbs
//! that need to know about containers (connect, disconnect, remove, prune).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use vmctl_proto::ports::Protocol;

use super::record::ContainerRecord;
use super::{Engine, EngineError};
use crate::model::{Config, HostConfig};
use crate::network::record::{ContainerNetworking, EndpointRecord};
use crate::network::sandbox::{LinkTarget, LiveEndpoint, SandboxRequest};
use crate::network::NetworkError;

/// One entry of `NetworkingConfig.EndpointsConfig` (or a connect request's
/// `EndpointConfig`).
pub fn endpoint_settings(
    value: Option<&Value>,
    mac_fallback: &str,
) -> Result<EndpointRecord, EngineError> {
    let mut endpoint = EndpointRecord::default();
    let Some(value) = value.filter(|v| v.is_object()) else {
        endpoint.requested_mac = mac_fallback.to_owned();
        return Ok(endpoint);
    };
    if let Some(ip) = value
        .pointer("/IPAMConfig/IPv4Address")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        endpoint.requested_ip =
            Some(ip.parse::<Ipv4Addr>().map_err(|_| {
                EngineError::InvalidParameter(format!("invalid IPv4 address: {ip}"))
            })?);
    }
    endpoint.aliases = value
        .get("Aliases")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    endpoint.driver_opts = value
        .get("DriverOpts")
        .and_then(Value::as_object)
        .map(|opts| {
            opts.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let mac = value
        .get("MacAddress")
        .and_then(Value::as_str)
        .unwrap_or("");
    endpoint.requested_mac = if mac.is_empty() { mac_fallback } else { mac }.to_owned();
    if !endpoint.requested_mac.is_empty() && !valid_mac(&endpoint.requested_mac) {
        return Err(EngineError::InvalidParameter(format!(
            "invalid MAC address: {}",
            endpoint.requested_mac
        )));
    }
    Ok(endpoint)
}

fn valid_mac(text: &str) -> bool {
    let parts: Vec<&str> = text.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok())
}

/// The name of the network a network mode puts the container on, if any.
pub fn mode_network(mode: &str) -> Option<&str> {
    match mode {
        "" | "default" | "bridge" => Some("bridge"),
        "none" | "host" => None,
        m if m.starts_with("container:") => None,
        m => Some(m),
    }
}

impl Engine {
    /// Works out a new container's endpoints and checks its network options.
    pub(super) async fn plan_networking(
        &self,
        config: &Config,
        host_config: &HostConfig,
        networking_config: Option<&Value>,
    ) -> Result<ContainerNetworking, EngineError> {
        let mode = host_config.network_mode.as_str();
        crate::network::ports::validate(config, host_config).map_err(NetworkError::InvalidPort)?;
        if mode.starts_with("container:") || mode == "host" {
            if mode != "host" && !host_config.port_bindings.is_empty() {
                return Err(EngineError::InvalidParameter(
                    "conflicting options: port publishing and the container type network mode"
                        .into(),
                ));
            }
            return Ok(ContainerNetworking::default());
        }
        let configs = networking_config
            .and_then(|n| n.get("EndpointsConfig"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut networking = ContainerNetworking::default();
        let Some(primary) = mode_network(mode) else {
            return Ok(networking);
        };
        let record = match self.networks.get(primary).await {
            Ok(record) => record,
            // `--bridge none`: the default mode is a namespace with only `lo`.
            Err(_) if mode == "default" => return Ok(networking),
            Err(e) => return Err(e.into()),
        };
        let settings = configs
            .get(mode)
            .or_else(|| configs.get(&record.name))
            .or_else(|| configs.get(&record.id));
        let endpoint = self.checked_endpoint(&record, settings, &config.mac_address)?;
        networking.endpoints.insert(record.name.clone(), endpoint);
        for (key, value) in &configs {
            if key == mode || key == &record.name || key == &record.id {
                continue;
            }
            let other = self.networks.get(key).await?;
            let mut endpoint = self.checked_endpoint(&other, Some(value), "")?;
            endpoint.order = networking.next_order();
            networking.endpoints.insert(other.name.clone(), endpoint);
        }
        for link in host_config.links.iter().flatten() {
            if !record.default_bridge {
                break;
            }
            let (name, _) = parse_link(link);
            self.container(&name).await.map_err(|_| {
                EngineError::InvalidParameter(format!("could not get container for {name}"))
            })?;
        }
        Ok(networking)
    }

    fn checked_endpoint(
        &self,
        network: &crate::network::record::NetworkRecord,
        settings: Option<&Value>,
        mac: &str,
    ) -> Result<EndpointRecord, EngineError> {
        let mut endpoint = endpoint_settings(settings, mac)?;
        endpoint.network_id = network.id.clone();
        if network.default_bridge {
            if endpoint.requested_ip.is_some() {
                return Err(EngineError::InvalidParameter(
                    "user specified IP address is supported on user defined networks only".into(),
                ));
            }
            if !endpoint.aliases.is_empty() {
                return Err(EngineError::InvalidParameter(
                    "network-scoped alias is supported only for containers in user defined networks".into(),
                ));
            }
        }
        if let (Some(ip), Some(subnet)) = (endpoint.requested_ip, network.subnet) {
            if !subnet.contains(&ip) {
                return Err(EngineError::InvalidParameter(format!(
                    "Invalid address {ip}: It does not belong to any of this network's subnets"
                )));
            }
        }
        if !network.has_interfaces()
            && (endpoint.requested_ip.is_some() || !endpoint.aliases.is_empty())
        {
            return Err(EngineError::InvalidParameter(format!(
                "network {} has no addresses to configure",
                network.name
            )));
        }
        Ok(endpoint)
    }

    /// The containers a `--link` names, with their address on the default
    /// bridge and exposed ports.
    pub(super) async fn link_targets(
        &self,
        record: &ContainerRecord,
    ) -> Vec<(String, String, LinkTarget)> {
        let mut targets = Vec::new();
        for link in record.host_config.links.iter().flatten() {
            let (name, alias) = parse_link(link);
            let Ok(handle) = self.container(&name).await else {
                continue;
            };
            let Ok(other) = handle.record.try_lock() else {
                continue;
            };
            let Some(address) = other
                .networking
                .endpoints
                .get("bridge")
                .and_then(|e| e.address)
                .map(|a| a.addr())
            else {
                continue;
            };
            let ports = other
                .config
                .exposed_ports
                .iter()
                .flat_map(|p| p.keys())
                .filter_map(|key| {
                    let (port, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
                    Some((Protocol::parse(protocol)?, port.parse().ok()?))
                })
                .collect();
            let env = other.config.env.clone();
            targets.push((
                other.name.clone(),
                alias,
                LinkTarget {
                    address,
                    ports,
                    env,
                },
            ));
        }
        targets
    }

    /// Addresses and host ports for a starting container (nothing plumbed).
    pub(super) async fn prepare_sandbox(
        &self,
        record: &ContainerRecord,
        links: &[(String, String, LinkTarget)],
    ) -> Result<Vec<LiveEndpoint>, EngineError> {
        let mode = record.host_config.network_mode.as_str();
        if mode_network(mode).is_none() || record.networking.endpoints.is_empty() {
            return Ok(Vec::new());
        }
        let ports = crate::network::ports::requests(
            &record.config,
            &record.host_config,
            self.networks.options.default_bind_ip,
        )
        .map_err(NetworkError::InvalidPort)?;
        let request = SandboxRequest {
            container_id: record.id.clone(),
            name: record.name.clone(),
            endpoints: record
                .networking
                .endpoints
                .iter()
                .map(|(name, e)| {
                    let key = if e.network_id.is_empty() {
                        name.clone()
                    } else {
                        e.network_id.clone()
                    };
                    (key, e.clone())
                })
                .collect(),
            ports,
            links: links.iter().map(|(_, _, t)| t.clone()).collect(),
        };
        Ok(self.networks.prepare(request).await?)
    }

    /// Plumbs the prepared sandbox into the monitor's network namespace and
    /// records the result in the container's record.
    pub(super) async fn plumb_sandbox(
        &self,
        record: &mut ContainerRecord,
        monitor_pid: u32,
    ) -> Result<(), EngineError> {
        let netns = format!("/proc/{monitor_pid}/ns/net");
        let live = self.networks.plumb(&record.id, Path::new(&netns)).await?;
        apply_live(&mut record.networking, &live);
        record.networking.sandbox_id = if live.is_empty() {
            String::new()
        } else {
            netns
        };
        record.networking.ports = self
            .networks
            .ports
            .snapshot()
            .bindings
            .into_iter()
            .filter(|b| b.container_id == record.id)
            .collect();
        Ok(())
    }

    /// Takes the sandbox back at the end of a run.
    pub(super) async fn release_sandbox(&self, record: &mut ContainerRecord) {
        match self.networks.release(&record.id).await {
            Ok(interfaces) if !interfaces.is_empty() => {
                let networks = self.networks.clone();
                tokio::spawn(async move { networks.delete_interfaces(&interfaces).await });
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(id = %record.short_id(), error = %crate::state::error_chain(&e), "network release incomplete");
            }
        }
        for endpoint in record.networking.endpoints.values_mut() {
            endpoint.clear_live();
        }
        record.networking.ports.clear();
        record.networking.sandbox_id.clear();
    }

    /// Re-registers a running container's sandbox after an engine restart.
    pub(super) async fn restore_sandbox(&self, record: &ContainerRecord) {
        if record.networking.sandbox_id.is_empty() {
            return;
        }
        let netns = Path::new(&record.networking.sandbox_id);
        if let Err(e) = self
            .networks
            .restore(
                &record.id,
                &record.name,
                netns,
                &record.networking.endpoints,
                &record.networking.ports,
            )
            .await
        {
            tracing::warn!(id = %record.short_id(), error = %e, "cannot restore the container's network");
        }
    }

    /// `POST /networks/{id}/connect`.
    pub async fn network_connect(
        self: &Arc<Self>,
        network: &str,
        container: &str,
        settings: Option<&Value>,
    ) -> Result<(), EngineError> {
        let net = self.networks.get(network).await?;
        let handle = self.container(container).await?;
        let mut record = handle.record.lock().await;
        let mode = record.host_config.network_mode.clone();
        if mode == "host" || mode == "none" || mode.starts_with("container:") {
            return Err(EngineError::Forbidden(
                "container cannot be disconnected from host network or connected to host network"
                    .into(),
            ));
        }
        if record.networking.endpoints.contains_key(&net.name) {
            return Err(NetworkError::AlreadyConnected {
                container: record.name.clone(),
                network: net.name.clone(),
            }
            .into());
        }
        let mut endpoint = self.checked_endpoint(&net, settings, "")?;
        endpoint.order = record.networking.next_order();
        if record.state.running {
            if let Some(live) = self
                .networks
                .connect(&record.id, &net.id, &endpoint)
                .await?
            {
                live.fill(&mut endpoint);
            }
        }
        record
            .networking
            .endpoints
            .insert(net.name.clone(), endpoint);
        self.save(&record)?;
        self.publish_network(&net, "connect", &record.id);
        Ok(())
    }

    /// `POST /networks/{id}/disconnect`.
    pub async fn network_disconnect(
        &self,
        network: &str,
        container: &str,
    ) -> Result<(), EngineError> {
        let net = self.networks.get(network).await?;
        let handle = self.container(container).await?;
        let mut record = handle.record.lock().await;
        if !record.networking.endpoints.contains_key(&net.name) {
            return Err(NetworkError::NotConnected {
                container: record.name.clone(),
                network: net.name.clone(),
            }
            .into());
        }
        if record.state.running {
            self.networks.disconnect(&record.id, &net.id).await?;
        }
        record.networking.endpoints.remove(&net.name);
        // The mode names the next network; off the last one it stays as
        // it was (dockerd's way), so a later connect is allowed:
        // docker-compose 1.29 disconnects and reconnects every container
        // it creates.
        if mode_network(&record.host_config.network_mode) == Some(net.name.as_str()) {
            if let Some((name, _)) = record.networking.ordered().first() {
                record.host_config.network_mode = (*name).clone();
            }
        }
        self.save(&record)?;
        self.publish_network(&net, "disconnect", &record.id);
        Ok(())
    }

    /// `DELETE /networks/{id}`.
    pub async fn network_remove(&self, key: &str) -> Result<(), EngineError> {
        let record = self.networks.remove(key).await?;
        self.publish_network(&record, "destroy", "");
        Ok(())
    }

    /// `POST /networks/prune`: user networks no running container is on.
    pub async fn network_prune(&self, labels: &[String]) -> Result<Vec<String>, EngineError> {
        let mut removed = Vec::new();
        for record in self.networks.list().await {
            if matches!(record.name.as_str(), "bridge" | "host" | "none") {
                continue;
            }
            if !labels.iter().all(|l| label_matches(&record.labels, l)) {
                continue;
            }
            if self.network_remove(&record.id).await.is_ok() {
                removed.push(record.name.clone());
            }
        }
        Ok(removed)
    }

    pub fn publish_network(
        &self,
        record: &crate::network::record::NetworkRecord,
        action: &str,
        container: &str,
    ) {
        let mut attributes = BTreeMap::from([
            ("name".to_owned(), record.name.clone()),
            ("type".to_owned(), record.driver.clone()),
        ]);
        if !container.is_empty() {
            attributes.insert("container".to_owned(), container.to_owned());
        }
        self.events
            .publish("network", action.to_owned(), &record.id, attributes);
    }
}

/// Copies the live endpoints into the record's endpoints.
fn apply_live(networking: &mut ContainerNetworking, live: &[LiveEndpoint]) {
    for endpoint in live {
        if let Some(record) = networking.endpoints.get_mut(&endpoint.network_name) {
            endpoint.fill(record);
        }
    }
}

/// Docker's link variables: `DB_NAME`, `DB_PORT`, `DB_PORT_80_TCP{,_ADDR,_PORT,_PROTO}`.
pub fn link_env(own_name: &str, links: &[(String, String, LinkTarget)]) -> Vec<String> {
    let mut env = Vec::new();
    for (_, alias, target) in links {
        let prefix: String = alias
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        env.push(format!("{prefix}_NAME=/{own_name}/{alias}"));
        let mut ports = target.ports.clone();
        ports.sort();
        for (index, (protocol, port)) in ports.iter().enumerate() {
            let (proto, address) = (protocol.as_str(), target.address);
            let url = format!("{proto}://{address}:{port}");
            if index == 0 {
                env.push(format!("{prefix}_PORT={url}"));
            }
            let base = format!("{prefix}_PORT_{port}_{}", proto.to_uppercase());
            env.push(format!("{base}={url}"));
            env.push(format!("{base}_ADDR={address}"));
            env.push(format!("{base}_PORT={port}"));
            env.push(format!("{base}_PROTO={proto}"));
        }
        // The linked container's own variables, but for what every image
        // sets (as Docker leaves them out).
        for entry in &target.env {
            let Some((key, value)) = entry.split_once('=') else {
                continue;
            };
            if key != "HOME" && key != "PATH" {
                env.push(format!("{prefix}_ENV_{key}={value}"));
            }
        }
    }
    env
}

/// `name:alias` (or `/name:/me/alias`) → (name, alias).
pub fn parse_link(link: &str) -> (String, String) {
    let (name, alias) = link.split_once(':').unwrap_or((link, link));
    let name = name.trim_start_matches('/').to_owned();
    let alias = alias.rsplit('/').next().unwrap_or(alias).to_owned();
    (name, alias)
}

fn label_matches(labels: &BTreeMap<String, String>, filter: &str) -> bool {
    match filter.split_once('=') {
        Some((key, value)) => labels.get(key).is_some_and(|v| v == value),
        None => labels.contains_key(filter),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_variables_read_like_dockers() {
        let target = LinkTarget {
            address: "172.17.0.2".parse().unwrap(),
            ports: vec![(Protocol::Tcp, 80)],
            env: vec!["PATH=/bin".into(), "FOO=1".into(), "BAR=a=b".into()],
        };
        let env = link_env("client", &[("web".into(), "db".into(), target)]);
        assert_eq!(
            env,
            [
                "DB_NAME=/client/db",
                "DB_PORT=tcp://172.17.0.2:80",
                "DB_PORT_80_TCP=tcp://172.17.0.2:80",
                "DB_PORT_80_TCP_ADDR=172.17.0.2",
                "DB_PORT_80_TCP_PORT=80",
                "DB_PORT_80_TCP_PROTO=tcp",
                "DB_ENV_FOO=1",
                "DB_ENV_BAR=a=b",
            ]
        );
    }

    #[test]
    fn links_parse_in_both_forms() {
        assert_eq!(parse_link("web:db"), ("web".into(), "db".into()));
        assert_eq!(parse_link("/web:/me/db"), ("web".into(), "db".into()));
        assert_eq!(parse_link("web"), ("web".into(), "web".into()));
    }

    #[test]
    fn endpoint_settings_read_ip_aliases_and_mac() {
        let value = serde_json::json!({
            "IPAMConfig": {"IPv4Address": "10.1.0.5"},
            "Aliases": ["db"],
            "MacAddress": "02:42:0a:01:00:05"
        });
        let e = endpoint_settings(Some(&value), "").unwrap();
        assert_eq!(e.requested_ip, Some("10.1.0.5".parse().unwrap()));
        assert_eq!(e.aliases, ["db"]);
        assert_eq!(e.requested_mac, "02:42:0a:01:00:05");
        let bad = serde_json::json!({"MacAddress": "zz"});
        assert!(endpoint_settings(Some(&bad), "").is_err());
        assert_eq!(
            endpoint_settings(None, "02:42:00:00:00:01")
                .unwrap()
                .requested_mac,
            "02:42:00:00:00:01"
        );
    }
}
