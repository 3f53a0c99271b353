//! The files the engine provides inside every container: `/etc/hostname`,
//! `/etc/hosts` and `/etc/resolv.conf`.

use std::path::Path;

use crate::model::{Config, HostConfig};

/// `/etc/hostname`.
pub fn hostname(config: &Config) -> String {
    format!("{}\n", config.hostname)
}

/// `/etc/hosts`: loopback names, the container's own name, `--add-host` entries.
pub fn hosts(config: &Config, host_config: &HostConfig) -> String {
    let mut text = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for entry in host_config.extra_hosts.iter().flatten() {
        if let Some((name, address)) = entry.split_once(':') {
            text.push_str(&format!("{address}\t{name}\n"));
        }
    }
    if !config.hostname.is_empty() && host_config.network_mode != "host" {
        text.push_str(&format!("127.0.1.1\t{}\n", config.hostname));
    }
    text
}

/// `/etc/resolv.conf`: the host's, without loopback name servers (they do not
/// answer inside a network namespace), with `--dns*` options applied.
pub fn resolv_conf(host_resolv: &Path, host_config: &HostConfig) -> String {
    let host = std::fs::read_to_string(host_resolv).unwrap_or_default();
    let host_network = host_config.network_mode == "host";
    let mut servers: Vec<String> = Vec::new();
    let mut search: Vec<String> = Vec::new();
    let mut options: Vec<String> = Vec::new();
    for line in host.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(server) = words.next() {
                    let loopback = server.starts_with("127.") || server == "::1";
                    if host_network || !loopback {
                        servers.push(server.to_owned());
                    }
                }
            }
            Some("search") | Some("domain") => search = words.map(str::to_owned).collect(),
            Some("options") => options = words.map(str::to_owned).collect(),
            _ => {}
        }
    }
    if let Some(dns) = host_config.dns.as_ref().filter(|d| !d.is_empty()) {
        servers = dns.clone();
    }
    if let Some(dns_search) = host_config.dns_search.as_ref().filter(|d| !d.is_empty()) {
        search = dns_search.iter().filter(|s| *s != ".").cloned().collect();
    }
    if let Some(dns_options) = host_config.dns_options.as_ref().filter(|d| !d.is_empty()) {
        options = dns_options.clone();
    }
    let mut text = String::new();
    if !search.is_empty() {
        text.push_str(&format!("search {}\n", search.join(" ")));
    }
    for server in servers {
        text.push_str(&format!("nameserver {server}\n"));
    }
    if !options.is_empty() {
        text.push_str(&format!("options {}\n", options.join(" ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_servers_are_dropped_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(
            &path,
            "nameserver 127.0.0.53\nnameserver 10.0.0.1\nsearch lan\n",
        )
        .unwrap();
        let text = resolv_conf(&path, &HostConfig::default());
        assert_eq!(text, "search lan\nnameserver 10.0.0.1\n");
        let host_config = HostConfig {
            dns: Some(vec!["1.1.1.1".into()]),
            dns_options: Some(vec!["ndots:2".into()]),
            ..Default::default()
        };
        let text = resolv_conf(&path, &host_config);
        assert!(text.contains("nameserver 1.1.1.1\n"));
        assert!(text.contains("options ndots:2\n"));
        assert!(!text.contains("10.0.0.1"));
    }

    #[test]
    fn hosts_has_loopback_and_extra_hosts() {
        let config = Config {
            hostname: "abc".into(),
            ..Default::default()
        };
        let host_config = HostConfig {
            extra_hosts: Some(vec!["db:10.1.2.3".into()]),
            ..Default::default()
        };
        let text = hosts(&config, &host_config);
        assert!(text.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(text.contains("10.1.2.3\tdb\n"));
        assert!(text.contains("127.0.1.1\tabc\n"));
    }
}
