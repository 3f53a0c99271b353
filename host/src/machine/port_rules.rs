//! Manual VM port rules (`vmctl port add|rm|ls`, the `VBoxManage --natpf`
//! of boot2docker, but live): a desktop address forwarded to a port of the
//! VM itself, kept in the machine's `ports.json`.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};
use vmctl_proto::ports::Protocol;

use super::{store, MachineError, MachinePaths};

/// One rule: `host_ip:host_port/protocol` on the desktop → `guest_port` of the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRule {
    pub name: String,
    pub protocol: Protocol,
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub guest_port: u16,
    /// Made without `--host-ip`: `host_ip` is the machine's
    /// `port-bind-address`, and on `127.0.0.1` the rule listens on `[::1]`
    /// too (`crate::forward::dual_stack`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default_address: bool,
}

impl PortRule {
    /// Where the guest forwarder connects: the VM's own loopback, so a
    /// program listening on any of the VM's addresses is reached.
    pub fn target(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), self.guest_port)
    }
}

/// Parses `HOSTPORT:GUESTPORT[/udp]` (as `vmctl port add` takes it).
pub fn parse_spec(spec: &str) -> Result<(u16, u16, Protocol), MachineError> {
    let bad = |why: &str| {
        MachineError::BadFlag(format!(
            "{spec:?}: {why} (give HOSTPORT:GUESTPORT or HOSTPORT:GUESTPORT/udp)"
        ))
    };
    let (ports, protocol) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let protocol = match protocol.to_ascii_lowercase().as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => return Err(bad("the protocol is tcp or udp")),
    };
    let (host, guest) = ports.split_once(':').ok_or_else(|| bad("no ':'"))?;
    let port = |text: &str| text.parse::<u16>().ok().filter(|p| *p != 0);
    let host = port(host).ok_or_else(|| bad("the host port is 1-65535"))?;
    let guest = port(guest).ok_or_else(|| bad("the guest port is 1-65535"))?;
    Ok((host, guest, protocol))
}

/// Checks a rule name: letters, digits, `-`, `_`, `.`; not all digits (a
/// number names a host port in `vmctl port rm`).
pub fn validate_name(name: &str) -> Result<(), MachineError> {
    let fine = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !name.chars().all(|c| c.is_ascii_digit());
    if fine {
        Ok(())
    } else {
        Err(MachineError::BadFlag(format!(
            "port rule name {name:?} is not valid: use letters, digits, '-', '_' or '.' (not only digits), up to 64"
        )))
    }
}

pub fn load(paths: &MachinePaths) -> Result<Vec<PortRule>, MachineError> {
    Ok(store::read_json(&paths.port_rules())?.unwrap_or_default())
}

pub fn save(paths: &MachinePaths, rules: &[PortRule]) -> Result<(), MachineError> {
    store::write_json(&paths.port_rules(), &rules)
}

/// Splits `rules` into those `target` names (a rule name, or a host port)
/// and the rest.
pub fn split_matching(rules: Vec<PortRule>, target: &str) -> (Vec<PortRule>, Vec<PortRule>) {
    let port = target.parse::<u16>().ok();
    rules
        .into_iter()
        .partition(|r| r.name == target || Some(r.host_port) == port)
}

/// Whether two rules (or a rule and a forward) would need the same desktop
/// socket: same protocol and port, and addresses that overlap.
pub fn overlaps(a: (Protocol, IpAddr, u16), b: (Protocol, IpAddr, u16)) -> bool {
    a.0 == b.0
        && a.2 == b.2
        && (a.1 == b.1
            || (a.1.is_unspecified() && a.1.is_ipv4() == b.1.is_ipv4())
            || (b.1.is_unspecified() && a.1.is_ipv4() == b.1.is_ipv4()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_say_why() {
        assert_eq!(parse_spec("18081:80").unwrap(), (18081, 80, Protocol::Tcp));
        assert_eq!(parse_spec("53:53/udp").unwrap(), (53, 53, Protocol::Udp));
        for bad in ["80", "0:80", "80:70000", "80:80/sctp", "a:b"] {
            let error = parse_spec(bad).unwrap_err().to_string();
            assert!(error.contains("HOSTPORT:GUESTPORT"), "{error}");
        }
    }

    #[test]
    fn names_and_overlaps() {
        assert!(validate_name("web-1.dev").is_ok());
        assert!(validate_name("8080").is_err());
        assert!(validate_name("a b").is_err());
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let six: IpAddr = "::".parse().unwrap();
        assert!(overlaps(
            (Protocol::Tcp, any, 80),
            (Protocol::Tcp, local, 80)
        ));
        assert!(!overlaps(
            (Protocol::Udp, any, 80),
            (Protocol::Tcp, local, 80)
        ));
        assert!(!overlaps(
            (Protocol::Tcp, six, 80),
            (Protocol::Tcp, local, 80)
        ));
        assert!(!overlaps(
            (Protocol::Tcp, local, 81),
            (Protocol::Tcp, local, 80)
        ));
    }

    #[test]
    fn rules_persist() {
        let dir = tempfile::tempdir().unwrap();
        let roots = crate::machine::Roots {
            data: dir.path().join("data"),
            run: dir.path().join("run"),
        };
        let paths = roots.machine("dev");
        assert!(load(&paths).unwrap().is_empty());
        let rule = PortRule {
            name: "web".into(),
            protocol: Protocol::Tcp,
            host_ip: "127.0.0.1".parse().unwrap(),
            host_port: 18081,
            guest_port: 80,
            default_address: true,
        };
        std::fs::create_dir_all(&paths.data).unwrap();
        save(&paths, std::slice::from_ref(&rule)).unwrap();
        assert_eq!(load(&paths).unwrap(), vec![rule]);
    }
}
