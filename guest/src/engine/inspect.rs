//! `inspect` and `top`: a container as Docker describes it.

use serde_json::{json, Value};

use super::record::ContainerRecord;
use super::{Engine, EngineError};
use crate::network::record::EndpointRecord;

/// One network of a container, as `NetworkSettings.Networks` shows it.
pub fn endpoint_json(endpoint: &EndpointRecord, running: bool) -> Value {
    let address = endpoint.address.filter(|_| running);
    json!({
        "IPAMConfig": endpoint.requested_ip.map(|ip| json!({"IPv4Address": ip.to_string()})),
        "Links": null,
        "Aliases": if endpoint.aliases.is_empty() { Value::Null } else { json!(endpoint.aliases) },
        // The address in use, else the one asked for (a created container).
        "MacAddress": if endpoint.mac.is_empty() { &endpoint.requested_mac } else { &endpoint.mac },
        "DriverOpts": if endpoint.driver_opts.is_empty() { Value::Null } else { json!(endpoint.driver_opts) },
        "NetworkID": endpoint.network_id,
        "EndpointID": endpoint.endpoint_id,
        "Gateway": endpoint.gateway.filter(|_| address.is_some()).map(|g| g.to_string()).unwrap_or_default(),
        "IPAddress": address.map(|a| a.addr().to_string()).unwrap_or_default(),
        "IPPrefixLen": address.map_or(0, |a| a.prefix_len()),
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "DNSNames": null,
    })
}

/// `NetworkSettings.Ports`: every exposed or published port, with its host
/// bindings while the container runs (`null` when it has none).
fn ports_json(record: &ContainerRecord) -> Value {
    let mut ports = serde_json::Map::new();
    if record.state.running && !record.networking.sandbox_id.is_empty() {
        for port in record.config.exposed_ports.iter().flatten().map(|(p, _)| p) {
            ports.insert(port.clone(), Value::Null);
        }
    }
    for binding in &record.networking.ports {
        let key = format!("{}/{}", binding.container_port, binding.protocol.as_str());
        let entry = ports.entry(key).or_insert_with(|| json!([]));
        if entry.is_null() {
            *entry = json!([]);
        }
        if let Some(list) = entry.as_array_mut() {
            list.push(json!({"HostIp": binding.host_ip.to_string(), "HostPort": binding.host_port.to_string()}));
        }
    }
    Value::Object(ports)
}

/// The network settings of a container.
fn network_settings(record: &ContainerRecord) -> Value {
    let running = record.state.running;
    let networks: serde_json::Map<String, Value> = record
        .networking
        .ordered()
        .into_iter()
        .map(|(name, endpoint)| (name.clone(), endpoint_json(endpoint, running)))
        .collect();
    let mut networks = Value::Object(networks);
    let mode = match record.host_config.network_mode.as_str() {
        "default" | "" => "bridge",
        other => other,
    };
    if record.networking.endpoints.is_empty() && !mode.starts_with("container:") {
        // Docker shows the mode's network, empty, when it gave no address.
        networks = json!({ mode: endpoint_json(&EndpointRecord::default(), false) });
    }
    let bridge = record
        .networking
        .endpoints
        .get("bridge")
        .filter(|_| running);
    let text = |f: &dyn Fn(&EndpointRecord) -> String| bridge.map(f).unwrap_or_default();
    json!({
        "Bridge": "",
        "SandboxID": record.networking.sandbox_id,
        "SandboxKey": record.networking.sandbox_id,
        "Ports": ports_json(record),
        "HairpinMode": false,
        "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0,
        "SecondaryIPAddresses": null,
        "SecondaryIPv6Addresses": null,
        "EndpointID": text(&|e| e.endpoint_id.clone()),
        "Gateway": text(&|e| e.gateway.map(|g| g.to_string()).unwrap_or_default()),
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "IPAddress": text(&|e| e.address.map(|a| a.addr().to_string()).unwrap_or_default()),
        "IPPrefixLen": bridge.and_then(|e| e.address).map_or(0, |a| a.prefix_len()),
        "IPv6Gateway": "",
        "MacAddress": text(&|e| e.mac.clone()),
        "Networks": networks,
    })
}

impl Engine {
    /// The inspect document of a record.
    pub fn inspect_record(&self, record: &ContainerRecord) -> Value {
        let dir = self.layout.container(&record.id);
        let lower: Vec<String> = record
            .layers
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        let execs: Vec<String> = Vec::new();
        json!({
            "Id": record.id,
            "Created": record.created,
            "Path": record.path,
            "Args": record.args,
            "State": record.state,
            "Image": record.image,
            "ResolvConfPath": dir.join("resolv.conf"),
            "HostnamePath": dir.join("hostname"),
            "HostsPath": dir.join("hosts"),
            "LogPath": dir.join("container.log"),
            "Name": format!("/{}", record.name),
            "RestartCount": record.restart_count,
            "Driver": "overlay2",
            "Platform": "linux",
            "MountLabel": "",
            "ProcessLabel": "",
            "AppArmorProfile": "",
            "ExecIDs": if execs.is_empty() { Value::Null } else { json!(execs) },
            "HostConfig": record.host_config,
            "GraphDriver": {
                "Data": {
                    "LowerDir": lower.join(":"),
                    "MergedDir": dir.join("rootfs"),
                    "UpperDir": dir.join("upper"),
                    "WorkDir": dir.join("work"),
                },
                "Name": "overlay2",
            },
            "Mounts": record.mounts,
            "Config": record.config,
            "NetworkSettings": network_settings(record),
        })
    }

    /// `GET /containers/{id}/json`.
    pub async fn inspect(&self, key: &str) -> Result<Value, EngineError> {
        let handle = self.container(key).await?;
        let record = handle.record.lock().await;
        Ok(self.inspect_record(&record))
    }

    /// `GET /containers/{id}/changes` (`docker diff`): what the container
    /// changed on its image's files, running or not.
    pub async fn changes(
        &self,
        key: &str,
    ) -> Result<Vec<crate::image::changes::Change>, EngineError> {
        let handle = self.container(key).await?;
        let (id, image) = {
            let record = handle.record.lock().await;
            (record.id.clone(), record.image.clone())
        };
        let layers = self.images.resolve(&image)?.layers;
        let upper = self.layout.container(&id).join("upper");
        tokio::task::spawn_blocking(move || crate::image::changes::changes(&upper, &layers))
            .await
            .map_err(|e| EngineError::Runtime(e.to_string()))?
            .map_err(EngineError::from)
    }

    /// `GET /containers/{id}/top`: the processes of the container's cgroup.
    pub async fn top(&self, key: &str) -> Result<Value, EngineError> {
        let handle = self.container(key).await?;
        let record = handle.record.lock().await;
        if !record.state.running {
            return Err(EngineError::Conflict(format!(
                "Container {} is not running",
                record.id
            )));
        }
        let cgroup = format!(
            "{}/{}",
            self.options.cgroup_parent.trim_matches('/'),
            record.id
        );
        let candidates = [
            format!("/sys/fs/cgroup/pids/{cgroup}/cgroup.procs"),
            format!("/sys/fs/cgroup/memory/{cgroup}/cgroup.procs"),
            format!("/sys/fs/cgroup/{cgroup}/cgroup.procs"),
        ];
        let procs = candidates
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        let mut processes = Vec::new();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.split_whitespace().next())
                    .unwrap_or("")
                    .to_owned()
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = cmdline
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ");
            let times = ProcessTimes::read(pid);
            processes.push(vec![
                user_name(&field("Uid:")),
                pid.to_string(),
                field("PPid:"),
                times.cpu_percent.to_string(),
                times.start,
                "?".to_owned(),
                times.cpu,
                cmd,
            ]);
        }
        Ok(json!({
            "Titles": ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"],
            "Processes": processes,
        }))
    }
}

/// The name `ps` shows for a uid: the engine's own `/etc/passwd` entry, as
/// `ps -ef` on Docker's host does, else the number.
fn user_name(uid: &str) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == uid)
        .map_or_else(|| uid.to_owned(), |f| f[0].to_owned())
}

/// The `C`, `STIME` and `TIME` columns of `ps -ef` for one process.
struct ProcessTimes {
    cpu_percent: u64,
    start: String,
    cpu: String,
}

impl ProcessTimes {
    fn read(pid: u32) -> ProcessTimes {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the parenthesised comm: state is field 3.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<u64> = rest
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let at = |n: usize| fields.get(n - 4).copied().unwrap_or(0);
        // SAFETY: sysconf has no preconditions.
        let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
            .ok()
            .filter(|h| *h > 0)
            .unwrap_or(100);
        let cpu_secs = (at(14) + at(15)) / hz;
        let uptime: f64 = std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|u| u.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        let started_after_boot = at(22) / hz;
        let elapsed = (uptime as u64).saturating_sub(started_after_boot).max(1);
        let now = chrono::Utc::now();
        let start = now - chrono::Duration::seconds(i64::try_from(elapsed).unwrap_or(0));
        let start = if now.date_naive() == start.date_naive() {
            start.format("%H:%M").to_string()
        } else {
            start.format("%b%d").to_string()
        };
        ProcessTimes {
            cpu_percent: cpu_secs * 100 / elapsed,
            start,
            cpu: format!(
                "{:02}:{:02}:{:02}",
                cpu_secs / 3600,
                cpu_secs / 60 % 60,
                cpu_secs % 60
            ),
        }
    }
}
