//! What every forwarded TCP connection and UDP flow passes before the
//! daemon opens a vsock stream for it: the machine's policy, checked again
//! with its settings of now ([`super::policy`]; defense in depth behind the
//! check at reservation), and the daemon-wide bound on concurrent forwards
//! ([`MAX_FORWARDS`]). The machine's settings are re-read when
//! `config.json` changes, so `vmctl machine set --allow-lan-ports` applies
//! to a running machine.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ipnet::Ipv4Net;
use vmctl_proto::forward::Origin;

use super::policy::{self, Settings};
use crate::machine::MachineConfig;

/// Concurrent forwarded connections and UDP flows per daemon.
pub const MAX_FORWARDS: usize = 8192;

/// How often the settings file is looked at, at most.
const RECHECK: Duration = Duration::from_secs(1);

/// Where the settings come from.
enum Source {
    Fixed(Settings),
    /// The machine's `config.json`, re-read when its mtime changes.
    File {
        path: PathBuf,
        nic_subnet: Option<Ipv4Net>,
        cached: Mutex<Cached>,
    },
}

struct Cached {
    settings: Settings,
    modified: Option<SystemTime>,
    checked: Option<Instant>,
}

pub struct Gate {
    source: Source,
    active: AtomicUsize,
    max: usize,
    /// Whether the "too many forwards" line was logged since the last time
    /// there was room (one line per episode, not per refused connection).
    full: AtomicBool,
}

/// One admitted forward; its slot is given back when dropped.
pub struct Permit(Arc<Gate>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gate {
    /// A gate with settings that never change (tests, and the strict default).
    pub fn fixed(settings: Settings) -> Arc<Self> {
        Self::build(Source::Fixed(settings), MAX_FORWARDS)
    }

    /// A gate that follows the machine's `config.json`; `config` is its
    /// content now, `nic_subnet` the VM NIC's subnet from the backend.
    pub fn following(
        path: PathBuf,
        config: &MachineConfig,
        nic_subnet: Option<Ipv4Net>,
    ) -> Arc<Self> {
        let settings = settings_of(config, nic_subnet);
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        Self::build(
            Source::File {
                path,
                nic_subnet,
                cached: Mutex::new(Cached {
                    settings,
                    modified,
                    checked: Some(Instant::now()),
                }),
            },
            MAX_FORWARDS,
        )
    }

    fn build(source: Source, max: usize) -> Arc<Self> {
        Arc::new(Gate {
            source,
            active: AtomicUsize::new(0),
            max,
            full: AtomicBool::new(false),
        })
    }

    /// The machine's settings now.
    pub fn settings(&self) -> Settings {
        let (path, nic_subnet, cached) = match &self.source {
            Source::Fixed(settings) => return settings.clone(),
            Source::File {
                path,
                nic_subnet,
                cached,
            } => (path, *nic_subnet, cached),
        };
        let mut cached = cached.lock().unwrap_or_else(|e| e.into_inner());
        if cached.checked.is_some_and(|at| at.elapsed() < RECHECK) {
            return cached.settings.clone();
        }
        cached.checked = Some(Instant::now());
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if modified != cached.modified {
            match crate::machine::store::read_json::<MachineConfig>(path) {
                Ok(Some(config)) => {
                    cached.settings = settings_of(&config, nic_subnet);
                    cached.modified = modified;
                    tracing::info!(
                        allow_lan_ports = cached.settings.allow_lan,
                        "machine settings changed"
                    );
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %crate::error_chain(&e), "cannot re-read the machine's settings; keeping the last ones")
                }
            }
        }
        cached.settings.clone()
    }

    /// Admits one forward from the desktop listener `listen` to `target`,
    /// or says why not (logged here).
    pub fn admit(
        self: &Arc<Self>,
        listen: SocketAddr,
        target: SocketAddr,
        origin: Origin,
    ) -> Option<Permit> {
        if origin == Origin::Published {
            let settings = self.settings();
            if let Some(why) = policy::forbidden_target(target, origin, &settings) {
                tracing::warn!(%listen, %target, why, "forward refused by policy");
                return None;
            }
            // The listener exists, so its address is the desktop's: only
            // the loopback/LAN choice can have changed since it was bound.
            if let Err(refusal) =
                policy::check_listen(listen.ip(), listen.port(), &settings, &[listen.ip()])
            {
                tracing::warn!(%listen, %target, error = %refusal, "forward refused by policy");
                return None;
            }
        }
        let taken = self.active.fetch_add(1, Ordering::AcqRel);
        if taken >= self.max {
            self.active.fetch_sub(1, Ordering::AcqRel);
            if !self.full.swap(true, Ordering::AcqRel) {
                tracing::warn!(max = self.max, %listen, "too many forwarded connections: refusing new ones until some end");
            }
            return None;
        }
        if taken + 1 < self.max / 2 {
            self.full.store(false, Ordering::Release);
        }
        Some(Permit(self.clone()))
    }

    /// Forwards open now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }
}

/// The policy's view of a machine's config.
pub fn settings_of(config: &MachineConfig, nic_subnet: Option<Ipv4Net>) -> Settings {
    Settings {
        allow_lan: config.allow_lan_ports,
        bind_address: config.port_bind_address,
        nic_subnet,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> Settings {
        Settings {
            allow_lan: true,
            bind_address: "127.0.0.1".parse().unwrap(),
            nic_subnet: Some("10.0.2.0/24".parse().unwrap()),
        }
    }

    #[test]
    fn each_connection_is_checked_and_counted() {
        let gate = Gate::build(Source::Fixed(on()), 2);
        let listen: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let container: SocketAddr = "172.17.0.2:80".parse().unwrap();
        assert!(gate
            .admit(listen, "10.0.2.2:80".parse().unwrap(), Origin::Published)
            .is_none());
        assert!(gate
            .admit(listen, "127.0.0.1:80".parse().unwrap(), Origin::Published)
            .is_none());
        let rule = gate.admit(listen, "127.0.0.1:80".parse().unwrap(), Origin::Rule);
        assert!(rule.is_some(), "the user's own rule reaches the VM");
        let second = gate.admit(listen, container, Origin::Published);
        assert!(second.is_some());
        assert!(
            gate.admit(listen, container, Origin::Published).is_none(),
            "over the cap"
        );
        drop(rule);
        assert_eq!(gate.active(), 1);
        assert!(gate.admit(listen, container, Origin::Published).is_some());
    }

    #[test]
    fn a_listener_left_from_before_lan_was_turned_off_forwards_nothing() {
        let gate = Gate::fixed(Settings {
            allow_lan: false,
            ..on()
        });
        let container: SocketAddr = "172.17.0.2:80".parse().unwrap();
        assert!(gate
            .admit(
                "0.0.0.0:8080".parse().unwrap(),
                container,
                Origin::Published
            )
            .is_none());
        assert!(gate
            .admit(
                "127.0.0.1:8080".parse().unwrap(),
                container,
                Origin::Published
            )
            .is_some());
    }

    #[test]
    fn settings_follow_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let mut config = MachineConfig::default();
        crate::machine::store::write_json(&path, &config).unwrap();
        let gate = Gate::following(path.clone(), &config, None);
        assert!(
            gate.settings().allow_lan,
            "on by default, as Docker users expect"
        );
        config.allow_lan_ports = false;
        // A different mtime for certain, however coarse the file system's clock.
        crate::machine::store::write_json(&path, &config).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() + Duration::from_secs(5))
            .unwrap();
        if let Source::File { cached, .. } = &gate.source {
            cached.lock().unwrap().checked = None;
        }
        assert!(!gate.settings().allow_lan);
    }
}
