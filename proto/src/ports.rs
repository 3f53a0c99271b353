//! Published-port bindings: the list the guest engine keeps and the events it
//! streams when the list changes.
//!
//! The engine owns one ordered list of every host port it has published (a
//! container's `-p` after a successful start). A consumer — the host daemon's
//! port forwarder — asks for the list, then follows the change stream:
//!
//! ```text
//! GET /vmctl/port-bindings            → PortBindingList (JSON)
//! GET /vmctl/port-bindings?watch=1    → newline-delimited PortEvent (JSON):
//!     {"type":"snapshot","generation":7,"bindings":[…]}   always first
//!     {"type":"added","generation":8,"binding":{…}}
//!     {"type":"removed","generation":9,"binding":{…}}
//!     {"type":"snapshot",…}              again whenever the consumer lagged
//! ```
//!
//! Every change bumps `generation` by one, so a consumer that sees a gap knows
//! it missed something and re-lists. Reconciling is always "make my state equal
//! the latest snapshot plus the events after it". The same JSON lines travel
//! over the guest's vsock control port once the VM path exists.

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

/// Path of the port-binding list on the engine's API socket.
pub const PORT_BINDINGS_PATH: &str = "/vmctl/port-bindings";

/// The transport protocol of a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// `tcp` or `udp`, as in Docker's `80/tcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// Parses Docker's protocol names (`tcp`, `udp`); anything else is `None`.
    pub fn parse(text: &str) -> Option<Protocol> {
        match text.to_ascii_lowercase().as_str() {
            "tcp" | "" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            _ => None,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One published port: `host_ip:host_port/protocol` → `container_ip:container_port`.
///
/// The derived order (protocol, host address, host port, …) is the order of
/// the engine's list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortBinding {
    pub protocol: Protocol,
    /// The address the port is published on; `0.0.0.0` means every address.
    pub host_ip: IpAddr,
    pub host_port: u16,
    /// Where the engine's DNAT sends the traffic.
    pub container_ip: Ipv4Addr,
    pub container_port: u16,
    /// Full id of the container that owns the binding.
    pub container_id: String,
    /// The container's name, without the leading `/`.
    pub container_name: String,
    /// Published without a `HostIp`: `host_ip` is the engine's default (in
    /// the VM, the machine's `port-bind-address`). On `127.0.0.1` the
    /// desktop then listens on `[::1]` as well, as Docker Desktop does; an
    /// address given explicitly is used exactly.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default_address: bool,
}

/// The whole list at one generation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBindingList {
    pub generation: u64,
    pub bindings: Vec<PortBinding>,
}

/// One line of the watch stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum PortEvent {
    /// The whole list: the first line, and again after the consumer lagged.
    Snapshot(PortBindingList),
    Added {
        generation: u64,
        binding: PortBinding,
    },
    Removed {
        generation: u64,
        binding: PortBinding,
    },
}

impl PortEvent {
    pub fn generation(&self) -> u64 {
        match self {
            PortEvent::Snapshot(list) => list.generation,
            PortEvent::Added { generation, .. } | PortEvent::Removed { generation, .. } => {
                *generation
            }
        }
    }
}

/// Applies `event` to `list`; `false` when it does not follow on (a gap in
/// the generations): the consumer must re-list.
pub fn apply(list: &mut PortBindingList, event: &PortEvent) -> bool {
    match event {
        PortEvent::Snapshot(snapshot) => {
            *list = snapshot.clone();
            true
        }
        PortEvent::Added {
            generation,
            binding,
        } if Some(*generation) == list.generation.checked_add(1) => {
            if let Err(at) = list.bindings.binary_search(binding) {
                list.bindings.insert(at, binding.clone());
            }
            list.generation = *generation;
            true
        }
        PortEvent::Removed {
            generation,
            binding,
        } if Some(*generation) == list.generation.checked_add(1) => {
            list.bindings.retain(|b| b != binding);
            list.generation = *generation;
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(port: u16) -> PortBinding {
        PortBinding {
            protocol: Protocol::Tcp,
            host_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            host_port: port,
            container_ip: Ipv4Addr::new(172, 17, 0, 2),
            container_port: 80,
            container_id: "c".repeat(64),
            container_name: "web".into(),
            default_address: false,
        }
    }

    #[test]
    fn events_are_one_json_line_each_with_a_type() {
        let event = PortEvent::Added {
            generation: 3,
            binding: binding(8080),
        };
        let line = serde_json::to_string(&event).unwrap();
        assert!(line.starts_with(r#"{"type":"added","generation":3,"binding":{"protocol":"tcp""#));
        assert_eq!(serde_json::from_str::<PortEvent>(&line).unwrap(), event);
        let snapshot = serde_json::to_string(&PortEvent::Snapshot(PortBindingList::default()));
        assert_eq!(
            snapshot.unwrap(),
            r#"{"type":"snapshot","generation":0,"bindings":[]}"#
        );
    }

    #[test]
    fn apply_keeps_the_list_ordered_and_detects_gaps() {
        let mut list = PortBindingList::default();
        assert!(apply(
            &mut list,
            &PortEvent::Added {
                generation: 1,
                binding: binding(9000)
            }
        ));
        assert!(apply(
            &mut list,
            &PortEvent::Added {
                generation: 2,
                binding: binding(8000)
            }
        ));
        let ports: Vec<u16> = list.bindings.iter().map(|b| b.host_port).collect();
        assert_eq!(ports, [8000, 9000]);
        assert!(!apply(
            &mut list,
            &PortEvent::Removed {
                generation: 4,
                binding: binding(8000)
            }
        ));
        assert_eq!(list.generation, 2, "a gap changes nothing");
        assert!(apply(
            &mut list,
            &PortEvent::Removed {
                generation: 3,
                binding: binding(8000)
            }
        ));
        assert_eq!(list.bindings.len(), 1);
    }

    #[test]
    fn a_snapshot_at_the_last_generation_cannot_overflow() {
        // Found with the host_guest_messages fuzz target (its corpus keeps
        // the input, seed-generation-overflow): the generation after
        // u64::MAX overflowed (a panic with overflow checks; without them,
        // generation 0 was taken as the next one).
        let mut list = PortBindingList {
            generation: u64::MAX,
            bindings: Vec::new(),
        };
        for generation in [0, u64::MAX] {
            let added = PortEvent::Added {
                generation,
                binding: binding(80),
            };
            assert!(!apply(&mut list, &added), "a gap: re-list");
        }
        assert_eq!(list.generation, u64::MAX);
        assert!(list.bindings.is_empty());
    }

    #[test]
    fn protocols_parse_like_docker() {
        assert_eq!(Protocol::parse("UDP"), Some(Protocol::Udp));
        assert_eq!(Protocol::parse(""), Some(Protocol::Tcp));
        assert_eq!(Protocol::parse("sctp"), None);
    }
}
