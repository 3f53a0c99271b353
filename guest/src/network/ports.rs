//! Published ports: what a container asks for (`PortBindings`, `-P` with
//! `ExposedPorts`), the host ports it gets, and the engine's ordered list of
//! every current binding with its change stream (the wire types live in
//! `vmctl_proto::ports`).
//!
//! A host port is *reserved* by binding a socket to it in the engine's
//! network namespace (TCP: bound, never listening; UDP: bound) and keeping the
//! socket for as long as the binding exists. The kernel then refuses the port
//! to anyone else — another container or any program — and a port someone
//! else holds fails our bind: that is Docker's "port is already allocated".
//! Traffic never reaches these sockets: the nftables DNAT rewrites it first.
//!
//! Inside the VM the ports belong to the desktop: [`PortAuthority::Host`]
//! asks the host daemon to listen instead ([`super::host_ports`]), so a port
//! taken on the desktop fails the start the same way. Ports published
//! without a host IP get the engine's default address (dockerd's `--ip`;
//! in the VM the machine's `port-bind-address`).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::Mutex;

use vmctl_proto::ports::{PortBinding, PortBindingList, PortEvent, Protocol};

use crate::model::{Config, HostConfig};

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("invalid port specification: {0:?}")]
    InvalidSpec(String),
    #[error("invalid host IP address {0:?} in port binding")]
    InvalidHostIp(String),
    #[error("Bind for {address}:{port} failed: port is already allocated")]
    Allocated { address: IpAddr, port: u16 },
    /// The host daemon's refusal, in Docker's words.
    #[error("{0}")]
    Host(String),
    #[error("cannot reserve host port {address}:{port}")]
    Reserve {
        address: IpAddr,
        port: u16,
        #[source]
        source: nix::Error,
    },
}

/// One host port a container asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRequest {
    pub protocol: Protocol,
    pub container_port: u16,
    pub host_ip: IpAddr,
    /// `0..=0` asks for any free port.
    pub host_ports: std::ops::RangeInclusive<u16>,
    /// No `HostIp` was given: `host_ip` is the engine's default.
    pub default_address: bool,
}

/// Parses `80`, `80/udp` or `8000-8001/tcp` into ports and a protocol.
fn parse_port_key(key: &str) -> Result<(Vec<u16>, Protocol), PortError> {
    let invalid = || PortError::InvalidSpec(key.to_owned());
    let (ports, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
    let protocol = Protocol::parse(protocol).ok_or_else(invalid)?;
    let range = parse_range(ports).ok_or_else(invalid)?;
    if *range.start() == 0 {
        return Err(invalid());
    }
    Ok((range.collect(), protocol))
}

fn parse_range(text: &str) -> Option<std::ops::RangeInclusive<u16>> {
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let (low, high): (u16, u16) = (low.parse().ok()?, high.parse().ok()?);
    (low <= high).then_some(low..=high)
}

fn parse_host_ip(text: &str, default: IpAddr) -> Result<IpAddr, PortError> {
    if text.is_empty() {
        return Ok(default);
    }
    text.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| PortError::InvalidHostIp(text.to_owned()))
}

/// Every host port the container asks for, in a stable order; `default_ip`
/// for bindings without a host IP.
pub fn requests(
    config: &Config,
    host_config: &HostConfig,
    default_ip: IpAddr,
) -> Result<Vec<PortRequest>, PortError> {
    let mut list = Vec::new();
    let mut bound = BTreeSet::new();
    for (key, bindings) in &host_config.port_bindings {
        let (ports, protocol) = parse_port_key(key)?;
        for port in ports {
            bound.insert((port, protocol));
            for binding in bindings.iter().flatten() {
                let host_ports = if binding.host_port.is_empty() {
                    0..=0
                } else {
                    parse_range(&binding.host_port)
                        .ok_or_else(|| PortError::InvalidSpec(binding.host_port.clone()))?
                };
                list.push(PortRequest {
                    protocol,
                    container_port: port,
                    host_ip: parse_host_ip(&binding.host_ip, default_ip)?,
                    host_ports,
                    default_address: binding.host_ip.is_empty(),
                });
            }
        }
    }
    if host_config.publish_all_ports {
        for key in config.exposed_ports.iter().flat_map(|p| p.keys()) {
            let (ports, protocol) = parse_port_key(key)?;
            for port in ports
                .into_iter()
                .filter(|p| !bound.contains(&(*p, protocol)))
            {
                list.push(PortRequest {
                    protocol,
                    container_port: port,
                    host_ip: default_ip,
                    host_ports: 0..=0,
                    default_address: true,
                });
            }
        }
    }
    Ok(list)
}

/// Checks a container's port specification at create time.
pub fn validate(config: &Config, host_config: &HostConfig) -> Result<(), PortError> {
    requests(config, host_config, IpAddr::V4(Ipv4Addr::UNSPECIFIED)).map(|_| ())
}

/// Who holds published host ports.
#[derive(Debug, Clone, Default)]
pub enum PortAuthority {
    /// This machine: a socket bound in the engine's namespace (standalone).
    #[default]
    Local,
    /// The desktop, through the host daemon (inside the VM).
    Host(super::host_ports::HostPorts),
}

/// A held host port.
#[derive(Debug)]
pub struct Reservation {
    pub protocol: Protocol,
    pub address: IpAddr,
    pub port: u16,
    _socket: Option<OwnedFd>,
    _lease: Option<HostLease>,
}

/// A port the host daemon holds for us; released when dropped.
#[derive(Debug)]
struct HostLease {
    client: super::host_ports::HostPorts,
    binding: PortBinding,
}

impl Drop for HostLease {
    fn drop(&mut self) {
        self.client.release_later(self.binding.clone());
    }
}

/// Binds a socket to `address:port` (`port` 0: the kernel picks a free one).
fn bind(protocol: Protocol, address: IpAddr, port: u16) -> Result<Reservation, PortError> {
    use nix::sys::socket::{
        bind, getsockname, socket, AddressFamily, SockFlag, SockType, SockaddrStorage,
    };
    let family = match address {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    let kind = match protocol {
        Protocol::Tcp => SockType::Stream,
        Protocol::Udp => SockType::Datagram,
    };
    let error = |source| PortError::Reserve {
        address,
        port,
        source,
    };
    let socket = socket(family, kind, SockFlag::SOCK_CLOEXEC, None).map_err(error)?;
    let target = SockaddrStorage::from(SocketAddr::new(address, port));
    use std::os::fd::AsRawFd;
    match bind(socket.as_raw_fd(), &target) {
        Ok(()) => {}
        Err(nix::Error::EADDRINUSE) => return Err(PortError::Allocated { address, port }),
        Err(e) => return Err(error(e)),
    }
    let local: SockaddrStorage = getsockname(socket.as_raw_fd()).map_err(error)?;
    let port = local
        .as_sockaddr_in()
        .map(|a| a.port())
        .or_else(|| local.as_sockaddr_in6().map(|a| a.port()))
        .unwrap_or(port);
    Ok(Reservation {
        protocol,
        address,
        port,
        _socket: Some(socket),
        _lease: None,
    })
}

/// Reserves a host port for `request`, the first free one of its range, for
/// `binding` (whose `host_port` is filled in here).
pub fn reserve(
    authority: &PortAuthority,
    request: &PortRequest,
    binding: &PortBinding,
) -> Result<Reservation, PortError> {
    match authority {
        PortAuthority::Local => reserve_locally(request),
        PortAuthority::Host(client) => reserve_on_host(client, request, binding),
    }
}

fn reserve_on_host(
    client: &super::host_ports::HostPorts,
    request: &PortRequest,
    binding: &PortBinding,
) -> Result<Reservation, PortError> {
    let mut last = None;
    for port in request.host_ports.clone() {
        let mut wanted = binding.clone();
        wanted.host_port = port;
        match client.reserve(&wanted) {
            Ok(answer) if answer.ok => {
                wanted.host_port = answer.host_port.unwrap_or(port);
                return Ok(Reservation {
                    protocol: request.protocol,
                    address: request.host_ip,
                    port: wanted.host_port,
                    _socket: None,
                    _lease: Some(HostLease {
                        client: client.clone(),
                        binding: wanted,
                    }),
                });
            }
            Ok(answer) => {
                let message = answer.error.unwrap_or_else(|| "refused".into());
                if !answer.taken {
                    return Err(PortError::Host(message));
                }
                last = Some(PortError::Host(message));
            }
            Err(e) => {
                // No daemon (it restarts): hold the port in the VM; the
                // daemon lists the bindings and listens when it is back.
                tracing::warn!(error = %e, port, "the host daemon is unreachable; reserving in the VM");
                return reserve_locally(request);
            }
        }
    }
    Err(last.unwrap_or(PortError::Allocated {
        address: request.host_ip,
        port: *request.host_ports.start(),
    }))
}

fn reserve_locally(request: &PortRequest) -> Result<Reservation, PortError> {
    let mut last = None;
    for port in request.host_ports.clone() {
        match bind(request.protocol, request.host_ip, port) {
            Ok(reservation) => return Ok(reservation),
            Err(e @ PortError::Allocated { .. }) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(PortError::Allocated {
        address: request.host_ip,
        port: *request.host_ports.start(),
    }))
}

/// The engine's ordered list of current bindings and its watchers.
pub struct PortTable {
    list: Mutex<PortBindingList>,
    events: tokio::sync::broadcast::Sender<PortEvent>,
}

impl Default for PortTable {
    fn default() -> Self {
        PortTable {
            list: Mutex::new(PortBindingList::default()),
            events: tokio::sync::broadcast::channel(256).0,
        }
    }
}

impl PortTable {
    pub fn snapshot(&self) -> PortBindingList {
        self.list.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The current list and a receiver of every change after it.
    pub fn watch(&self) -> (PortBindingList, tokio::sync::broadcast::Receiver<PortEvent>) {
        match self.list.lock() {
            Ok(list) => (list.clone(), self.events.subscribe()),
            Err(_) => (PortBindingList::default(), self.events.subscribe()),
        }
    }

    /// The next change for `receiver` (from [`PortTable::watch`]). A
    /// receiver that fell behind is subscribed afresh and gets the whole
    /// list instead. `None`: the table is gone.
    pub async fn next(
        &self,
        receiver: &mut tokio::sync::broadcast::Receiver<PortEvent>,
    ) -> Option<PortEvent> {
        use tokio::sync::broadcast::error::RecvError;
        match receiver.recv().await {
            Ok(event) => Some(event),
            Err(RecvError::Lagged(_)) => {
                let (snapshot, fresh) = self.watch();
                *receiver = fresh;
                Some(PortEvent::Snapshot(snapshot))
            }
            Err(RecvError::Closed) => None,
        }
    }

    pub fn add(&self, bindings: &[PortBinding]) {
        self.change(bindings, true);
    }

    pub fn remove(&self, bindings: &[PortBinding]) {
        self.change(bindings, false);
    }

    fn change(&self, bindings: &[PortBinding], add: bool) {
        let Ok(mut list) = self.list.lock() else {
            return;
        };
        for binding in bindings {
            let position = list.bindings.binary_search(binding);
            let generation = list.generation + 1;
            let event = match (add, position) {
                (true, Err(at)) => {
                    list.bindings.insert(at, binding.clone());
                    PortEvent::Added {
                        generation,
                        binding: binding.clone(),
                    }
                }
                (false, Ok(at)) => {
                    list.bindings.remove(at);
                    PortEvent::Removed {
                        generation,
                        binding: binding.clone(),
                    }
                }
                _ => continue,
            };
            list.generation = generation;
            tracing::info!(
                port = binding.host_port,
                protocol = binding.protocol.as_str(),
                container = %&binding.container_id[..12.min(binding.container_id.len())],
                added = add,
                "port binding changed"
            );
            let _ = self.events.send(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PortBinding as HostPort;
    use std::collections::BTreeMap;

    const ANY: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

    fn host_config(bindings: &[(&str, &str, &str)]) -> HostConfig {
        let mut port_bindings: BTreeMap<String, Option<Vec<HostPort>>> = BTreeMap::new();
        for (key, ip, port) in bindings {
            port_bindings
                .entry((*key).to_owned())
                .or_insert_with(|| Some(Vec::new()))
                .as_mut()
                .unwrap()
                .push(HostPort {
                    host_ip: (*ip).to_owned(),
                    host_port: (*port).to_owned(),
                });
        }
        HostConfig {
            port_bindings,
            ..Default::default()
        }
    }

    #[test]
    fn every_form_of_the_docker_cli_parses() {
        let hc = host_config(&[
            ("80/tcp", "", "8080"),
            ("80/tcp", "127.0.0.1", ""),
            ("53/udp", "", "5353"),
            ("81/tcp", "", "9000-9010"),
        ]);
        let got = requests(&Config::default(), &hc, ANY).unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(got[2].host_ip, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(got[2].host_ports, 0..=0);
        assert!(
            !got[2].default_address,
            "an explicit HostIp is kept as given"
        );
        assert!(got[1].default_address && got[1].host_ip == ANY);
        assert_eq!(got[3].host_ports, 9000..=9010);
        assert_eq!(got[0].protocol, Protocol::Udp);
        let bad = host_config(&[("http/tcp", "", "80")]);
        assert!(requests(&Config::default(), &bad, ANY).is_err());
        let bad = host_config(&[("80/tcp", "localhost", "80")]);
        assert!(matches!(
            requests(&Config::default(), &bad, ANY),
            Err(PortError::InvalidHostIp(_))
        ));
    }

    #[test]
    fn publish_all_adds_exposed_ports_without_a_binding() {
        let mut hc = host_config(&[("80/tcp", "", "8080")]);
        hc.publish_all_ports = true;
        let config = Config {
            exposed_ports: Some(BTreeMap::from([
                ("80/tcp".to_owned(), BTreeMap::new()),
                ("443/tcp".to_owned(), BTreeMap::new()),
            ])),
            ..Default::default()
        };
        let got = requests(&config, &hc, ANY).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].container_port, 443);
        assert_eq!(got[1].host_ports, 0..=0);
        assert!(
            got[1].default_address,
            "-P publishes on the default address"
        );
    }

    #[test]
    fn a_reserved_port_is_refused_to_the_next_taker() {
        let request = PortRequest {
            protocol: Protocol::Tcp,
            container_port: 80,
            host_ip: "127.0.0.1".parse().unwrap(),
            host_ports: 0..=0,
            default_address: false,
        };
        let first = reserve_locally(&request).unwrap();
        assert_ne!(first.port, 0, "the kernel picked a port");
        let again = PortRequest {
            host_ports: first.port..=first.port,
            ..request.clone()
        };
        let error = reserve_locally(&again).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "Bind for 127.0.0.1:{} failed: port is already allocated",
                first.port
            )
        );
        assert!(std::net::TcpListener::bind(("127.0.0.1", first.port)).is_err());
        drop(first);
        assert!(reserve_locally(&again).is_ok(), "released with the socket");
    }

    #[test]
    fn the_table_stays_ordered_and_streams_changes() {
        let table = PortTable::default();
        let (snapshot, mut events) = table.watch();
        assert_eq!(snapshot.generation, 0);
        let binding = |port| PortBinding {
            protocol: Protocol::Tcp,
            host_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            host_port: port,
            container_ip: Ipv4Addr::new(172, 17, 0, 2),
            container_port: 80,
            container_id: "a".repeat(64),
            container_name: "web".into(),
            default_address: false,
        };
        table.add(&[binding(9000), binding(8000)]);
        table.add(&[binding(8000)]);
        table.remove(&[binding(9000)]);
        let list = table.snapshot();
        assert_eq!(list.generation, 3);
        assert_eq!(list.bindings, vec![binding(8000)]);
        let mut mirror = snapshot;
        while let Ok(event) = events.try_recv() {
            assert!(vmctl_proto::ports::apply(&mut mirror, &event));
        }
        assert_eq!(mirror, list);
    }

    #[tokio::test]
    async fn a_watcher_that_fell_behind_gets_the_whole_list() {
        let table = PortTable::default();
        let (_, mut events) = table.watch();
        let binding = |port| PortBinding {
            protocol: Protocol::Udp,
            host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            host_port: port,
            container_ip: Ipv4Addr::new(172, 17, 0, 3),
            container_port: 53,
            container_id: "b".repeat(64),
            container_name: "dns".into(),
            default_address: false,
        };
        for port in 1000..1400 {
            table.add(&[binding(port)]);
        }
        match table.next(&mut events).await {
            Some(PortEvent::Snapshot(list)) => assert_eq!(list, table.snapshot()),
            other => panic!("expected a snapshot after the lag, got {other:?}"),
        }
        table.remove(&[binding(1000)]);
        assert!(!matches!(
            table.next(&mut events).await,
            Some(PortEvent::Snapshot(_)) | None
        ));
    }
}
