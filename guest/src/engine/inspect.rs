//! `inspect` and `top`: a container as Docker describes it.

use serde_json::{json, Value};

use super::record::ContainerRecord;
use super::{Engine, EngineError};

/// The network settings of a container (no networks with addresses yet: the
/// bridge comes with the networking work).
fn network_settings(record: &ContainerRecord) -> Value {
    let mode = match record.host_config.network_mode.as_str() {
        "default" | "" => "bridge",
        other => other,
    };
    let mut ports = serde_json::Map::new();
    for port in record.config.exposed_ports.iter().flatten().map(|(p, _)| p) {
        ports.insert(port.clone(), Value::Null);
    }
    let networks = if mode.starts_with("container:") {
        json!({})
    } else {
        json!({ mode: {
            "IPAMConfig": null, "Links": null, "Aliases": null, "MacAddress": "",
            "NetworkID": "", "EndpointID": "", "Gateway": "", "IPAddress": "",
            "IPPrefixLen": 0, "IPv6Gateway": "", "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0, "DriverOpts": null, "DNSNames": null,
        }})
    };
    json!({
        "Bridge": "",
        "SandboxID": "",
        "SandboxKey": "",
        "Ports": ports,
        "HairpinMode": false,
        "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0,
        "SecondaryIPAddresses": null,
        "SecondaryIPv6Addresses": null,
        "EndpointID": "",
        "Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "IPAddress": "",
        "IPPrefixLen": 0,
        "IPv6Gateway": "",
        "MacAddress": "",
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
            processes.push(vec![
                field("Uid:"),
                pid.to_string(),
                field("PPid:"),
                "0".to_owned(),
                "-".to_owned(),
                "?".to_owned(),
                "00:00:00".to_owned(),
                cmd,
            ]);
        }
        Ok(json!({
            "Titles": ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"],
            "Processes": processes,
        }))
    }
}
