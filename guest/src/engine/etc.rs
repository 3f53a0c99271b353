//! The files the engine provides inside every container: `/etc/hostname`,
//! `/etc/hosts` and `/etc/resolv.conf`.

use std::net::Ipv4Addr;
use std::path::Path;

use crate::model::{Config, HostConfig};

/// `/etc/hostname`.
pub fn hostname(config: &Config) -> String {
    format!("{}\n", config.hostname)
}

/// What `/etc/hosts` is made of.
pub struct HostsInput<'a> {
    pub config: &'a Config,
    pub host_config: &'a HostConfig,
    /// The container's address on its first network.
    pub own: Option<Ipv4Addr>,
    /// `--link`s: (address, alias, name).
    pub links: Vec<(Ipv4Addr, String, String)>,
    /// What `host-gateway` in `--add-host` stands for.
    pub host_gateway: Option<Ipv4Addr>,
}

/// `/etc/hosts`: loopback names, `--add-host` entries, links, and the
/// container's own name on its address (127.0.1.1 without one).
pub fn hosts(input: &HostsInput) -> String {
    let (config, host_config) = (input.config, input.host_config);
    let mut text = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for entry in host_config.extra_hosts.iter().flatten() {
        // `name:address`; the address may itself be IPv6 with colons.
        if let Some((name, address)) = entry.split_once(':').or_else(|| entry.split_once('=')) {
            let address = match (address, input.host_gateway) {
                ("host-gateway", Some(gateway)) => gateway.to_string(),
                _ => address.to_owned(),
            };
            text.push_str(&format!("{address}\t{name}\n"));
        }
    }
    for (address, alias, name) in &input.links {
        if alias == name {
            text.push_str(&format!("{address}\t{name}\n"));
        } else {
            text.push_str(&format!("{address}\t{alias} {name}\n"));
        }
    }
    if !config.hostname.is_empty() && host_config.network_mode != "host" {
        let address = input.own.map_or("127.0.1.1".to_owned(), |a| a.to_string());
        text.push_str(&format!("{address}\t{}\n", config.hostname));
    }
    text
}

/// `/etc/resolv.conf`: the host's, without loopback name servers (they do not
/// answer inside a network namespace), with `--dns*` options applied. On a
/// user network (`network_dns`) the engine's DNS server on the gateway,
/// unless `--dns` names servers explicitly.
pub fn resolv_conf(
    host_resolv: &Path,
    host_config: &HostConfig,
    network_dns: Option<Ipv4Addr>,
) -> String {
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
    } else if let Some(gateway) = network_dns {
        servers = vec![gateway.to_string()];
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
        let text = resolv_conf(&path, &HostConfig::default(), None);
        assert_eq!(text, "search lan\nnameserver 10.0.0.1\n");
        let text = resolv_conf(
            &path,
            &HostConfig::default(),
            Some(Ipv4Addr::new(172, 18, 0, 1)),
        );
        assert_eq!(text, "search lan\nnameserver 172.18.0.1\n");
        let host_config = HostConfig {
            dns: Some(vec!["1.1.1.1".into()]),
            dns_options: Some(vec!["ndots:2".into()]),
            ..Default::default()
        };
        let text = resolv_conf(&path, &host_config, None);
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
            extra_hosts: Some(vec!["db:10.1.2.3".into(), "gw:host-gateway".into()]),
            ..Default::default()
        };
        let mut input = HostsInput {
            config: &config,
            host_config: &host_config,
            own: None,
            links: Vec::new(),
            host_gateway: Some(Ipv4Addr::new(172, 17, 0, 1)),
        };
        let text = hosts(&input);
        assert!(text.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(text.contains("10.1.2.3\tdb\n"));
        assert!(text.contains("172.17.0.1\tgw\n"));
        assert!(text.contains("127.0.1.1\tabc\n"));
        input.own = Some(Ipv4Addr::new(172, 17, 0, 2));
        input.links = vec![(Ipv4Addr::new(172, 17, 0, 3), "db".into(), "web".into())];
        let text = hosts(&input);
        assert!(text.contains("172.17.0.2\tabc\n"));
        assert!(text.contains("172.17.0.3\tdb web\n"));
    }
}
