//! The published-port forwarder: exactly one desktop listener per published
//! binding of the guest engine, plus the machine's manual port rules.
//!
//! Three inputs change the set, all through [`Forwarder`]:
//! - the engine *reserves* a port before it starts a container (guest → host
//!   vsock 1027, [`super::host_ports`]): the listener is bound then, so a
//!   port taken on the desktop fails the start. It is *pending* until the
//!   engine's port list shows it, and dropped if that never happens;
//! - the engine's port list and its changes ([`super::watch`]): after every
//!   change, [`Forwarder::reconcile`] makes the set equal the list (plus
//!   pending reservations and rules): missing listeners are bound, stale
//!   ones closed. Any reconnect (engine restart, VM restart, daemon restart)
//!   starts with the whole list, so nothing stale survives it;
//! - `vmctl port add|rm` ([`Forwarder::add_rule`], [`Forwarder::remove_rule`]).
//!
//! Whatever the guest asks, the machine's policy ([`super::policy`]) is
//! applied on the first two paths: at reservation, at every reconcile and
//! sweep (so a changed `allow-lan-ports` closes what it now forbids), and
//! for each connection ([`super::gate`]). Manual rules are the user's own.
//!
//! A forward on `127.0.0.1` reached by default (no address given) also
//! listens on `[::1]` when it can ([`super::dual_stack`]); both sockets are
//! opened, shown and closed together.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vmctl_proto::forward::{HostPortResponse, Origin};
use vmctl_proto::ports::{PortBinding, PortBindingList, Protocol};

use super::dual_stack::{self, Twin, TwinInfo};
use super::gate::Gate;
use super::listener::{self, Listener};
pub use super::listener::{BindRefusal, IN_USE};
use super::policy::{self, TokenBucket};
use super::stats::{Stats, StatsSnapshot};
use crate::machine::port_rules::{overlaps, PortRule};
use crate::vsock::VsockTransport;

/// How many ports a reservation of "any port" tries for one that is free
/// on `[::1]` too, before it settles for IPv4 alone.
const TWIN_TRIES: usize = 8;

/// How long a reservation waits for the engine's list to show it.
const PENDING: Duration = Duration::from_secs(60);

/// A desktop socket: protocol, address, port.
type Key = (Protocol, IpAddr, u16);

enum Source {
    Published {
        binding: PortBinding,
        /// Reserved, not yet in the engine's list: dropped after this.
        pending_until: Option<Instant>,
    },
    Rule(PortRule),
}

struct Entry {
    source: Source,
    target: SocketAddr,
    stats: Arc<Stats>,
    /// Dropped with the entry, closing the socket.
    listener: Option<Listener>,
    /// Why there is no listener (the bind failed; retried by [`Forwarder::sweep`]).
    error: Option<String>,
    /// The `[::1]` twin of a default loopback forward ([`dual_stack`]);
    /// `None` when none is wanted or the IPv4 listener is missing.
    twin: Option<Twin>,
}

/// One forward as `vmctl port ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardInfo {
    /// The rule's name; empty for a published port.
    pub name: String,
    pub protocol: Protocol,
    pub host_ip: IpAddr,
    pub host_port: u16,
    /// Where the guest connects.
    pub target: SocketAddr,
    /// The publishing container's name; empty for a rule.
    pub container: String,
    #[serde(default)]
    pub pending: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The `[::1]` twin, when the forward wants one: listening, or why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twin: Option<TwinInfo>,
    pub stats: StatsSnapshot,
}

pub struct Forwarder {
    transport: Arc<dyn VsockTransport>,
    entries: Mutex<BTreeMap<Key, Entry>>,
    /// The machine's policy and the bound on concurrent forwards.
    gate: Arc<Gate>,
    /// Reservations a second ([`policy::RESERVE_RATE`]).
    bucket: Mutex<TokenBucket>,
    link: super::LinkSlot,
}

fn key_of(binding: &PortBinding) -> Key {
    (binding.protocol, binding.host_ip, binding.host_port)
}

fn target_of(binding: &PortBinding) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(binding.container_ip), binding.container_port)
}

/// `127.0.0.1:80`, `[::1]:80`.
fn address_text(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

impl Forwarder {
    /// A forwarder with the strictest policy (loopback only).
    pub fn new(transport: Arc<dyn VsockTransport>) -> Arc<Self> {
        Self::with_gate(transport, Gate::fixed(policy::Settings::default()))
    }

    /// A forwarder whose published ports pass `gate`.
    pub fn with_gate(transport: Arc<dyn VsockTransport>, gate: Arc<Gate>) -> Arc<Self> {
        Arc::new(Forwarder {
            transport,
            entries: Mutex::new(BTreeMap::new()),
            gate,
            bucket: Mutex::new(TokenBucket::reservations()),
            link: Default::default(),
        })
    }

    /// From now on, published ports and rules may take the forward link
    /// (while it is ready): every listener's route sees it, old and new.
    pub fn set_link(&self, link: Arc<crate::link::Link>) {
        let _ = self.link.set(link);
    }

    /// The machine's forward link, if it has one.
    pub fn link(&self) -> Option<Arc<crate::link::Link>> {
        self.link.get().cloned()
    }

    /// The policy's verdict on a reservation of `binding` (rate, addresses,
    /// target, count), before anything is bound.
    fn admit(
        &self,
        entries: &BTreeMap<Key, Entry>,
        binding: &PortBinding,
    ) -> Result<(), policy::Refusal> {
        let address = SocketAddr::new(binding.host_ip, binding.host_port);
        let granted = self
            .bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(Instant::now());
        if !granted {
            return Err(policy::Refusal::TooFast { address });
        }
        policy::check_binding(binding, &self.gate.settings(), &policy::local_addresses())?;
        let renewed = binding.host_port != 0 && entries.contains_key(&key_of(binding));
        if !renewed {
            policy::check_count(binding, published(entries))?;
        }
        Ok(())
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The engine asks for `binding`'s desktop port (0: any) before the
    /// container starts.
    pub fn reserve(&self, binding: &PortBinding) -> HostPortResponse {
        let mut entries = self.entries();
        if let Err(refusal) = self.admit(&entries, binding) {
            tracing::warn!(container = %binding.container_name, error = %refusal, "reservation refused by policy");
            return refused(BindRefusal {
                message: refusal.to_string(),
                taken: false,
            });
        }
        let key = key_of(binding);
        if binding.host_port != 0 {
            if let Some(entry) = entries.get_mut(&key) {
                if let Source::Published { binding: held, .. } = &entry.source {
                    if held.container_id == binding.container_id && entry.error.is_none() {
                        // The engine restarted and reserves again: same owner, same port.
                        if held != binding {
                            entry.source = Source::Published {
                                binding: binding.clone(),
                                pending_until: Some(Instant::now() + PENDING),
                            };
                        }
                        return HostPortResponse {
                            ok: true,
                            host_port: Some(binding.host_port),
                            ..Default::default()
                        };
                    }
                }
            }
            if let Some(refusal) = conflict(&entries, key, &binding.container_id) {
                return refused(refusal);
            }
        }
        let target = target_of(binding);
        let twin = dual_stack::wanted(binding.host_ip, binding.default_address);
        match self.listen_pair(&entries, key, target, Origin::Published, twin) {
            Ok((port, listener, stats, twin)) => {
                let mut binding = binding.clone();
                binding.host_port = port;
                tracing::info!(address = %address_text(binding.host_ip, port), protocol = %binding.protocol, container = %binding.container_name, ipv6_loopback = twin.as_ref().is_some_and(Twin::listening), "port reserved");
                entries.insert(
                    key_of(&binding),
                    Entry {
                        source: Source::Published {
                            binding,
                            pending_until: Some(Instant::now() + PENDING),
                        },
                        target,
                        stats,
                        listener: Some(listener),
                        error: None,
                        twin,
                    },
                );
                HostPortResponse {
                    ok: true,
                    host_port: Some(port),
                    ..Default::default()
                }
            }
            Err(refusal) => refused(refusal),
        }
    }

    /// The engine gives up a reservation (its container did not start, or stopped).
    pub fn release(&self, binding: &PortBinding) {
        let mut entries = self.entries();
        let key = key_of(binding);
        let owned = matches!(
            entries.get(&key).map(|e| &e.source),
            Some(Source::Published { binding: held, .. }) if held.container_id == binding.container_id
        );
        if owned {
            entries.remove(&key);
            tracing::info!(address = %address_text(key.1, key.2), protocol = %key.0, "port released");
        }
    }

    /// Makes the published listeners equal `list` (pending reservations and
    /// rules stay).
    pub fn reconcile(&self, list: &PortBindingList) {
        let wanted = self.allowed(list);
        let mut entries = self.entries();
        let now = Instant::now();
        entries.retain(|key, entry| match &entry.source {
            Source::Rule(_) => true,
            Source::Published {
                binding,
                pending_until,
            } => match wanted.get(key) {
                Some(want) => {
                    want.container_id == binding.container_id && target_of(want) == entry.target
                }
                None => pending_until.is_some_and(|until| until > now),
            },
        });
        for (key, binding) in wanted {
            if let Some(entry) = entries.get_mut(&key) {
                if let Source::Published { pending_until, .. } = &mut entry.source {
                    *pending_until = None;
                }
                continue;
            }
            let target = target_of(binding);
            let twin = dual_stack::wanted(binding.host_ip, binding.default_address);
            let (listener, stats, error, twin) = match self.listen_pair(
                &entries,
                key,
                target,
                Origin::Published,
                twin,
            ) {
                Ok((_, listener, stats, twin)) => (Some(listener), stats, None, twin),
                Err(refusal) => {
                    tracing::warn!(address = %address_text(key.1, key.2), error = %refusal.message, "cannot listen for a published port");
                    (None, Arc::default(), Some(refusal.message), None)
                }
            };
            entries.insert(
                key,
                Entry {
                    source: Source::Published {
                        binding: binding.clone(),
                        pending_until: None,
                    },
                    target,
                    stats,
                    listener,
                    error,
                    twin,
                },
            );
        }
    }

    /// The bindings of `list` the policy allows, at most
    /// [`policy::MAX_RESERVATIONS`] (the engine's list is checked like its
    /// reservations: a confused or compromised engine gets no more).
    fn allowed<'a>(&self, list: &'a PortBindingList) -> BTreeMap<Key, &'a PortBinding> {
        let settings = self.gate.settings();
        let local = policy::local_addresses();
        let mut wanted = BTreeMap::new();
        for binding in &list.bindings {
            if let Err(refusal) = policy::check_binding(binding, &settings, &local) {
                tracing::warn!(container = %binding.container_name, error = %refusal, "published port refused by policy");
                continue;
            }
            if wanted.len() >= policy::MAX_RESERVATIONS {
                tracing::warn!(max = policy::MAX_RESERVATIONS, "the engine lists more published ports than a machine may hold; the rest are not forwarded");
                break;
            }
            wanted.insert(key_of(binding), binding);
        }
        wanted
    }

    /// Drops expired reservations and published ports the policy now
    /// refuses (a changed `allow-lan-ports`), and retries listeners whose
    /// bind failed, `[::1]` twins whose port was taken included.
    pub fn sweep(&self) {
        let mut entries = self.entries();
        let now = Instant::now();
        let settings = self.gate.settings();
        entries.retain(|key, entry| match &entry.source {
            Source::Published { pending_until: Some(until), .. } if *until <= now => false,
            Source::Published { binding, .. } => {
                // The listener exists: its address is the desktop's own.
                let verdict = policy::check_binding(binding, &settings, &[key.1]);
                if let Err(refusal) = &verdict {
                    tracing::info!(error = %refusal, "closing a published port the policy now refuses");
                }
                verdict.is_ok()
            }
            Source::Rule(_) => true,
        });
        let failed: Vec<Key> = entries
            .iter()
            .filter(|(_, e)| e.error.is_some())
            .map(|(k, _)| *k)
            .collect();
        for key in failed {
            let Some((target, origin, twin)) = entries
                .get(&key)
                .map(|e| (e.target, e.origin(), e.wants_twin(key)))
            else {
                continue;
            };
            if let Ok((_, listener, stats, twin)) =
                self.listen_pair(&entries, key, target, origin, twin)
            {
                if let Some(entry) = entries.get_mut(&key) {
                    tracing::info!(address = %address_text(key.1, key.2), "listening at last");
                    entry.listener = Some(listener);
                    entry.stats = stats;
                    entry.error = None;
                    entry.twin = twin;
                }
            }
        }
        self.retry_twins(&mut entries);
    }

    /// Tries again the `[::1]` twins whose port was taken; quiet until one
    /// listens.
    fn retry_twins(&self, entries: &mut BTreeMap<Key, Entry>) {
        let waiting: Vec<Key> = entries
            .iter()
            .filter(|(_, e)| e.twin.as_ref().is_some_and(Twin::worth_retrying))
            .map(|(k, _)| *k)
            .collect();
        for key in waiting {
            let twin_key = (key.0, dual_stack::TWIN_IP, key.2);
            if holder(entries, twin_key, None).is_some() {
                continue;
            }
            let Some(entry) = entries.get_mut(&key) else {
                continue;
            };
            let route = self.route(SocketAddr::new(key.1, key.2), entry.target, entry.origin());
            let transport = self.transport.clone();
            if let Ok(twin) = Twin::bind(key.0, key.2, route, transport, entry.stats.clone()) {
                tracing::info!(address = %address_text(twin_key.1, key.2), "localhost on IPv6 listening at last");
                entry.twin = Some(twin);
            }
        }
    }

    /// Adds a manual rule and listens for it at once.
    pub fn add_rule(&self, rule: PortRule) -> Result<(), BindRefusal> {
        let mut entries = self.entries();
        let key = (rule.protocol, rule.host_ip, rule.host_port);
        if let Some(refusal) = conflict(&entries, key, "") {
            return Err(refusal);
        }
        let target = rule.target();
        let twin = dual_stack::wanted(rule.host_ip, rule.default_address);
        let (_, listener, stats, twin) =
            self.listen_pair(&entries, key, target, Origin::Rule, twin)?;
        tracing::info!(rule = %rule.name, address = %address_text(key.1, key.2), ipv6_loopback = twin.as_ref().is_some_and(Twin::listening), "port rule added");
        entries.insert(
            key,
            Entry {
                source: Source::Rule(rule),
                target,
                stats,
                listener: Some(listener),
                error: None,
                twin,
            },
        );
        Ok(())
    }

    /// Removes the rule named `name`; whether there was one.
    pub fn remove_rule(&self, name: &str) -> bool {
        let mut entries = self.entries();
        let before = entries.len();
        entries.retain(|_, e| !matches!(&e.source, Source::Rule(rule) if rule.name == name));
        before != entries.len()
    }

    pub fn list(&self) -> Vec<ForwardInfo> {
        self.entries()
            .iter()
            .map(|((protocol, host_ip, host_port), entry)| {
                let (name, container, pending) = match &entry.source {
                    Source::Rule(rule) => (rule.name.clone(), String::new(), false),
                    Source::Published {
                        binding,
                        pending_until,
                    } => (
                        String::new(),
                        binding.container_name.clone(),
                        pending_until.is_some(),
                    ),
                };
                ForwardInfo {
                    name,
                    protocol: *protocol,
                    host_ip: *host_ip,
                    host_port: *host_port,
                    target: entry.target,
                    container,
                    pending,
                    error: entry.error.clone(),
                    twin: entry.twin.as_ref().map(|twin| twin.info(*host_port)),
                    stats: entry.stats.snapshot(),
                }
            })
            .collect()
    }

    /// What a listener on `listen` passes its connections to.
    fn route(&self, listen: SocketAddr, target: SocketAddr, origin: Origin) -> super::Route {
        super::Route {
            listen,
            target,
            origin,
            gate: self.gate.clone(),
            link: self.link.clone(),
        }
    }

    /// Binds the desktop socket for `key` (port 0: any free one) and starts
    /// serving it; with `twin`, also `[::1]` on the same port when it can
    /// be had (see [`dual_stack`]). A reservation of any port looks a few
    /// times for one free on both.
    fn listen_pair(
        &self,
        entries: &BTreeMap<Key, Entry>,
        key: Key,
        target: SocketAddr,
        origin: Origin,
        twin: bool,
    ) -> Result<(u16, Listener, Arc<Stats>, Option<Twin>), BindRefusal> {
        let (protocol, ip, port) = key;
        let tries = if twin && port == 0 { TWIN_TRIES } else { 1 };
        for attempt in 1..=tries {
            let stats = Arc::new(Stats::default());
            let route = self.route(SocketAddr::new(ip, port), target, origin);
            let (bound, listener) =
                listener::open(protocol, route, self.transport.clone(), stats.clone())
                    .map_err(|e| listener::refusal(ip, port, e))?;
            if !twin {
                return Ok((bound, listener, stats, None));
            }
            let twin_key = (protocol, dual_stack::TWIN_IP, bound);
            let pair = match holder(entries, twin_key, None) {
                Some(by) => Twin::unavailable(format!("held by {by}"), true),
                None => Twin::open(
                    protocol,
                    bound,
                    self.route(SocketAddr::new(ip, bound), target, origin),
                    self.transport.clone(),
                    stats.clone(),
                ),
            };
            if pair.listening() || !pair.worth_retrying() || attempt == tries {
                return Ok((bound, listener, stats, Some(pair)));
            }
        }
        unreachable!("the last try returns")
    }
}

impl Entry {
    fn origin(&self) -> Origin {
        match self.source {
            Source::Published { .. } => Origin::Published,
            Source::Rule(_) => Origin::Rule,
        }
    }

    /// Whether this forward, on `key`, wants a `[::1]` twin.
    fn wants_twin(&self, key: Key) -> bool {
        let default_address = match &self.source {
            Source::Published { binding, .. } => binding.default_address,
            Source::Rule(rule) => rule.default_address,
        };
        dual_stack::wanted(key.1, default_address)
    }

    /// The desktop sockets this forward holds, on `key`: its own and its
    /// twin's.
    fn held(&self, key: Key) -> impl Iterator<Item = Key> {
        let twin = self
            .twin
            .as_ref()
            .filter(|t| t.listening())
            .map(|_| (key.0, dual_stack::TWIN_IP, key.2));
        std::iter::once(key).chain(twin)
    }
}

/// Who holds a socket that `key` would collide with, other than the
/// forward of `owner` (a container id, on that very key).
fn holder(entries: &BTreeMap<Key, Entry>, key: Key, owner: Option<&str>) -> Option<String> {
    entries.iter().find_map(|(own_key, entry)| {
        let collides = entry.held(*own_key).any(|held| overlaps(held, key));
        if !collides {
            return None;
        }
        match &entry.source {
            Source::Published { binding, .. }
                if Some(binding.container_id.as_str()) == owner && *own_key == key =>
            {
                None
            }
            Source::Published { binding, .. } => {
                Some(format!("container {}", binding.container_name))
            }
            Source::Rule(rule) => Some(format!("port rule {}", rule.name)),
        }
    })
}

/// Published ports held now (pending ones included).
fn published(entries: &BTreeMap<Key, Entry>) -> usize {
    entries
        .values()
        .filter(|e| matches!(e.source, Source::Published { .. }))
        .count()
}

fn refused(refusal: BindRefusal) -> HostPortResponse {
    HostPortResponse {
        ok: false,
        host_port: None,
        error: Some(refusal.message),
        taken: refusal.taken,
    }
}

/// A held socket that `key` would collide with (another owner's).
fn conflict(entries: &BTreeMap<Key, Entry>, key: Key, owner: &str) -> Option<BindRefusal> {
    let by = holder(entries, key, Some(owner))?;
    Some(BindRefusal {
        message: format!(
            "Bind for {} failed: port is already allocated (by {by})",
            address_text(key.1, key.2)
        ),
        taken: true,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_utils::NoGuest;
    use super::*;

    fn binding(container: &str, port: u16) -> PortBinding {
        PortBinding {
            protocol: Protocol::Tcp,
            host_ip: "127.0.0.1".parse().unwrap(),
            host_port: port,
            container_ip: "172.17.0.2".parse().unwrap(),
            container_port: 80,
            container_id: container.repeat(64),
            container_name: container.into(),
            default_address: false,
        }
    }

    #[tokio::test]
    async fn reserve_listens_and_a_second_owner_is_refused() {
        let forwarder = Forwarder::new(Arc::new(NoGuest));
        let answer = forwarder.reserve(&binding("a", 0));
        assert!(answer.ok, "{answer:?}");
        let port = answer.host_port.unwrap();
        assert_ne!(port, 0);
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err());
        let again = forwarder.reserve(&binding("a", port));
        assert!(again.ok, "the same owner may reserve again");
        let other = forwarder.reserve(&binding("b", port));
        assert!(!other.ok && other.taken);
        assert!(other
            .error
            .unwrap()
            .contains("port is already allocated (by container a)"),);
        forwarder.release(&binding("a", port));
        assert!(forwarder.list().is_empty());
        tokio::task::yield_now().await;
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
    }

    #[tokio::test]
    async fn a_desktop_port_in_use_is_refused_without_naming_its_holder() {
        let forwarder = Forwarder::new(Arc::new(NoGuest));
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let answer = forwarder.reserve(&binding("a", port));
        assert!(!answer.ok && answer.taken);
        let message = answer.error.unwrap();
        assert_eq!(
            message,
            format!("Bind for 127.0.0.1:{port} failed: port is already in use on the desktop"),
            "the guest learns no desktop process"
        );
        assert!(forwarder.list().is_empty(), "nothing left behind");
    }

    fn strict() -> Arc<Forwarder> {
        Forwarder::with_gate(
            Arc::new(NoGuest),
            Gate::fixed(policy::Settings {
                allow_lan: false,
                bind_address: "127.0.0.1".parse().unwrap(),
                nic_subnet: Some("10.0.2.0/24".parse().unwrap()),
            }),
        )
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("0.0.0.0:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn the_forged_reservation_of_the_issue_is_refused_and_binds_nothing() {
        let forwarder = strict();
        let port = free_port();
        // {"op":"reserve","binding":{"host_ip":"0.0.0.0","container_ip":"10.0.2.2",…}}
        let mut forged = binding("evil", port);
        forged.host_ip = "0.0.0.0".parse().unwrap();
        forged.container_ip = "10.0.2.2".parse().unwrap();
        let answer = forwarder.reserve(&forged);
        assert!(!answer.ok && !answer.taken, "{answer:?}");
        assert!(answer.error.unwrap().contains("10.0.2.2"));
        for target in ["10.0.2.15", "127.0.0.1"] {
            let mut loopback = binding("evil", port);
            loopback.container_ip = target.parse().unwrap();
            assert!(!forwarder.reserve(&loopback).ok, "{target}");
        }
        let mut lan = binding("lan", port);
        lan.host_ip = "0.0.0.0".parse().unwrap();
        let answer = forwarder.reserve(&lan);
        assert!(answer.error.unwrap().contains("allow-lan-ports is off"));
        assert!(forwarder.list().is_empty());
        assert!(
            std::net::TcpListener::bind(("0.0.0.0", port)).is_ok(),
            "nothing listens"
        );
        // The engine's list is held to the same rules.
        forwarder.reconcile(&PortBindingList {
            generation: 1,
            bindings: vec![forged, lan],
        });
        assert!(forwarder.list().is_empty(), "the list path is filtered too");
        assert!(
            forwarder.reserve(&binding("ok", port)).ok,
            "loopback still works"
        );
    }

    #[tokio::test]
    async fn a_flood_of_reservations_is_cut_off() {
        let forwarder = strict();
        // A bucket of 5 that never refills: the cut-off, whatever the speed.
        *forwarder.bucket.lock().unwrap() = TokenBucket::new(0.0, 5.0, Instant::now());
        let answers: Vec<HostPortResponse> = (0..6)
            .map(|n| {
                let mut b = binding("f", 0);
                b.container_id = format!("{n:064}");
                forwarder.reserve(&b)
            })
            .collect();
        assert!(answers[..5].iter().all(|a| a.ok), "{answers:?}");
        let refused = answers[5].error.clone().unwrap_or_default();
        assert!(
            refused.contains("too many port reservations a second"),
            "{refused}"
        );
        assert_eq!(forwarder.list().len(), 5, "the refused one binds nothing");
    }

    #[tokio::test]
    async fn reconcile_binds_the_missing_and_closes_the_stale() {
        let forwarder = Forwarder::new(Arc::new(NoGuest));
        let free = |_: ()| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let (p1, p2) = (free(()), free(()));
        forwarder.reconcile(&PortBindingList {
            generation: 1,
            bindings: vec![binding("a", p1), binding("b", p2)],
        });
        assert_eq!(forwarder.list().len(), 2);
        forwarder.reconcile(&PortBindingList {
            generation: 2,
            bindings: vec![binding("b", p2)],
        });
        let list = forwarder.list();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].container, "b");
        tokio::task::yield_now().await;
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", p1)).is_ok(),
            "stale listener closed"
        );
        // A pending reservation survives a list that does not show it yet.
        let reserved = forwarder.reserve(&binding("c", 0));
        forwarder.reconcile(&PortBindingList {
            generation: 3,
            bindings: vec![binding("b", p2)],
        });
        assert_eq!(forwarder.list().len(), 2);
        assert!(forwarder
            .list()
            .iter()
            .any(|f| f.pending && Some(f.host_port) == reserved.host_port));
    }

    #[tokio::test]
    async fn rules_conflict_with_published_ports() {
        let forwarder = Forwarder::new(Arc::new(NoGuest));
        let reserved = forwarder.reserve(&binding("a", 0)).host_port.unwrap();
        let rule = PortRule {
            name: "web".into(),
            protocol: Protocol::Tcp,
            host_ip: "0.0.0.0".parse().unwrap(),
            host_port: reserved,
            guest_port: 80,
            default_address: false,
        };
        let refusal = forwarder.add_rule(rule.clone()).unwrap_err();
        assert!(
            refusal.message.contains("by container a"),
            "{}",
            refusal.message
        );
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        forwarder
            .add_rule(PortRule {
                host_ip: "127.0.0.1".parse().unwrap(),
                host_port: free,
                ..rule
            })
            .unwrap();
        assert!(forwarder.remove_rule("web"));
        assert!(!forwarder.remove_rule("web"));
    }

    /// Whether this desktop has an IPv6 loopback; the `[::1]` tests skip
    /// loudly without one.
    fn ipv6_loopback() -> bool {
        let there = std::net::TcpListener::bind("[::1]:0").is_ok();
        if !there {
            eprintln!("SKIPPED: no IPv6 loopback on this desktop");
        }
        there
    }

    /// A port free on both loopbacks, for `protocol`.
    fn free_on_both(protocol: Protocol) -> u16 {
        loop {
            let port = match protocol {
                Protocol::Tcp => std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port(),
                Protocol::Udp => std::net::UdpSocket::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port(),
            };
            if bindable(protocol, "[::1]", port) {
                return port;
            }
        }
    }

    fn bindable(protocol: Protocol, ip: &str, port: u16) -> bool {
        let address = format!("{ip}:{port}");
        match protocol {
            Protocol::Tcp => std::net::TcpListener::bind(&address).is_ok(),
            Protocol::Udp => std::net::UdpSocket::bind(&address).is_ok(),
        }
    }

    fn by_default(container: &str, port: u16, protocol: Protocol) -> PortBinding {
        PortBinding {
            protocol,
            default_address: true,
            ..binding(container, port)
        }
    }

    #[tokio::test]
    async fn a_default_loopback_port_listens_on_ipv6_loopback_too() {
        if !ipv6_loopback() {
            return;
        }
        let forwarder = Forwarder::new(Arc::new(NoGuest));
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            let port = free_on_both(protocol);
            let answer = forwarder.reserve(&by_default("a", port, protocol));
            assert!(answer.ok, "{answer:?}");
            assert!(!bindable(protocol, "127.0.0.1", port), "{protocol}");
            assert!(!bindable(protocol, "[::1]", port), "{protocol}: the twin");
            let listed = forwarder.list();
            let shown = listed.iter().find(|f| f.protocol == protocol).unwrap();
            let twin = shown.twin.clone().expect("a twin");
            assert_eq!(twin.error, None);
            assert_eq!(
                dual_stack::addresses_text(SocketAddr::new(shown.host_ip, port), Some(&twin)),
                format!("127.0.0.1:{port}, [::1]:{port}")
            );
            // Closing the port closes both.
            forwarder.release(&by_default("a", port, protocol));
            tokio::task::yield_now().await;
            assert!(
                eventually(
                    || bindable(protocol, "127.0.0.1", port) && bindable(protocol, "[::1]", port)
                )
                .await,
                "{protocol}: both closed"
            );
        }
        // Any port: one free on both is found.
        let any = forwarder.reserve(&by_default("b", 0, Protocol::Tcp));
        let port = any.host_port.unwrap();
        assert!(!bindable(Protocol::Tcp, "[::1]", port));
        assert_eq!(forwarder.list()[0].twin.as_ref().unwrap().error, None);
    }

    /// Polls `check` (each task switch lets aborted listeners close).
    async fn eventually(check: impl Fn() -> bool) -> bool {
        for _ in 0..500 {
            if check() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn an_explicit_address_is_used_exactly() {
        if !ipv6_loopback() {
            return;
        }
        let forwarder = Forwarder::new(Arc::new(NoGuest));
        let port = free_on_both(Protocol::Tcp);
        assert!(forwarder.reserve(&binding("a", port)).ok);
        assert!(!bindable(Protocol::Tcp, "127.0.0.1", port));
        assert!(bindable(Protocol::Tcp, "[::1]", port), "no twin");
        assert_eq!(forwarder.list()[0].twin, None);
        // Nor anything but 127.0.0.1 reached by default: never `::`.
        let wide = Forwarder::with_gate(
            Arc::new(NoGuest),
            Gate::fixed(policy::Settings {
                allow_lan: true,
                bind_address: "0.0.0.0".parse().unwrap(),
                nic_subnet: None,
            }),
        );
        let port = free_on_both(Protocol::Tcp);
        let mut any = by_default("w", port, Protocol::Tcp);
        any.host_ip = "0.0.0.0".parse().unwrap();
        assert!(wide.reserve(&any).ok);
        // (A listener on `::` would hold `[::1]` too.)
        assert!(
            bindable(Protocol::Tcp, "[::1]", port),
            "nothing on :: or ::1"
        );
        assert_eq!(wide.list()[0].twin, None);
    }

    #[tokio::test]
    async fn ipv6_loopback_taken_leaves_ipv4_serving_alone_and_says_so() {
        if !ipv6_loopback() {
            return;
        }
        let forwarder = Forwarder::new(Arc::new(NoGuest));
        let port = free_on_both(Protocol::Tcp);
        let blocker = std::net::TcpListener::bind(("::1", port)).unwrap();
        let answer = forwarder.reserve(&by_default("a", port, Protocol::Tcp));
        assert!(answer.ok, "IPv4 alone is enough: {answer:?}");
        assert!(!bindable(Protocol::Tcp, "127.0.0.1", port));
        let shown = forwarder.list().remove(0);
        let twin = shown.twin.clone().unwrap();
        assert_eq!(twin.error.as_deref(), Some("address in use"));
        assert_eq!(
            dual_stack::addresses_text(SocketAddr::new(shown.host_ip, port), Some(&twin)),
            format!("127.0.0.1:{port} (::1 unavailable: address in use)")
        );
        // The port comes free: the sweep takes it.
        drop(blocker);
        forwarder.sweep();
        assert_eq!(forwarder.list()[0].twin.as_ref().unwrap().error, None);
        assert!(!bindable(Protocol::Tcp, "[::1]", port));
    }

    #[tokio::test]
    async fn the_twin_is_held_against_other_owners_and_rules_get_one_too() {
        if !ipv6_loopback() {
            return;
        }
        let forwarder = Forwarder::new(Arc::new(NoGuest));
        let port = free_on_both(Protocol::Tcp);
        assert!(forwarder.reserve(&by_default("a", port, Protocol::Tcp)).ok);
        let mut six = binding("b", port);
        six.host_ip = "::1".parse().unwrap();
        let refused = forwarder.reserve(&six);
        assert!(!refused.ok && refused.taken);
        assert!(
            refused.error.unwrap().contains("by container a"),
            "refused by name"
        );
        // The engine's list opens the twin as a reservation does.
        let listed = free_on_both(Protocol::Tcp);
        forwarder.reconcile(&PortBindingList {
            generation: 1,
            bindings: vec![
                by_default("a", port, Protocol::Tcp),
                by_default("c", listed, Protocol::Tcp),
            ],
        });
        assert!(!bindable(Protocol::Tcp, "[::1]", listed));
        let rule_port = free_on_both(Protocol::Tcp);
        forwarder
            .add_rule(PortRule {
                name: "web".into(),
                protocol: Protocol::Tcp,
                host_ip: "127.0.0.1".parse().unwrap(),
                host_port: rule_port,
                guest_port: 80,
                default_address: true,
            })
            .unwrap();
        assert!(
            !bindable(Protocol::Tcp, "[::1]", rule_port),
            "the rule's twin"
        );
        assert!(forwarder.remove_rule("web"));
        assert!(eventually(|| bindable(Protocol::Tcp, "[::1]", rule_port)).await);
    }
}
