//! `stats`: a container's resource use in Docker's `StatsJSON` document,
//! once or once a second.
//!
//! As in dockerd, sampling is shared: one sampler task per container reads
//! the cgroup (through [`crate::runtime::cgroups`]), `/proc/stat` and the
//! container's `/proc/<pid>/net/dev` once a second and publishes the result
//! on a watch channel; every request for that container subscribes to it, so
//! a client opening many streams costs the engine no more reads. The sampler
//! ends when its last subscriber leaves or the container stops.
//!
//! Each subscriber keeps the previous sample to fill `precpu_stats` and
//! `preread`. `stream=false` answers the second sample it sees (so CPU
//! percentages have a base), or the first with `one-shot=true`. A container
//! that is not running gets dockerd's empty document (only `name` and `id`
//! set); a stream ends when the container stops.

mod document;

pub use document::*;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::{ContainerHandle, Engine, EngineError};
use crate::runtime::cgroups::Hierarchy;

/// How often a sampler reads the counters (dockerd's default interval).
const INTERVAL: Duration = Duration::from_secs(1);

/// The most of a container's `/proc/<pid>/net/dev` read per sample (about
/// 8000 interfaces).
const NET_DEV_LIMIT: u64 = 1 << 20;

/// What one sampler publishes each second.
#[derive(Debug)]
enum Tick {
    Sample(Box<Stats>),
    /// The container is not running (any more).
    Stopped,
}

type Feed = watch::Receiver<Option<Arc<Tick>>>;

/// The live samplers, by container id.
static FEEDS: LazyLock<Mutex<HashMap<String, Feed>>> = LazyLock::new(Default::default);

/// What a sampler needs from the record each tick.
struct Target {
    pid: i64,
    host_network: bool,
}

/// Reads everything for one document (blocking file reads).
fn collect(hierarchy: &Hierarchy, cgroups_path: &str, target: &Target) -> Stats {
    let sample = hierarchy.cgroup(cgroups_path).sample();
    let (system_cpu_ns, online_cpus) = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| system_cpu(&s))
        .unwrap_or((0, 0));
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| mem_total(&s))
        .unwrap_or(0);
    let host = Host {
        system_cpu_ns,
        online_cpus,
        memory,
    };
    let mut stats = document(&sample, &host, matches!(hierarchy, Hierarchy::V2(_)));
    stats.read = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    if !target.host_network && target.pid > 0 {
        stats.networks = read_bounded(&format!("/proc/{}/net/dev", target.pid))
            .map(|text| net_dev(&text))
            .unwrap_or_default();
    }
    stats
}

/// Reads at most [`NET_DEV_LIMIT`] bytes: a container with `NET_ADMIN` makes
/// as many interfaces as it likes.
fn read_bounded(path: &str) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(NET_DEV_LIMIT)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// Subscribes to the container's sampler, starting it when none runs.
fn subscribe(handle: &Arc<ContainerHandle>, id: &str, cgroups_path: String) -> Feed {
    let mut feeds = FEEDS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(feed) = feeds.get(id) {
        return feed.clone();
    }
    let (tx, rx) = watch::channel(None);
    feeds.insert(id.to_owned(), rx.clone());
    tokio::spawn(sample_loop(handle.clone(), id.to_owned(), cgroups_path, tx));
    rx
}

/// One container's sampler: samples each [`INTERVAL`] until nobody listens
/// (only the registry's receiver is left) or the container stops.
async fn sample_loop(
    handle: Arc<ContainerHandle>,
    id: String,
    cgroups_path: String,
    tx: watch::Sender<Option<Arc<Tick>>>,
) {
    let hierarchy = Arc::new(Hierarchy::detect());
    let cgroups_path = Arc::new(cgroups_path);
    loop {
        let target = {
            let record = handle.record.lock().await;
            (record.state.running && record.state.status != "restarting").then(|| Target {
                pid: record.state.pid,
                host_network: record.host_config.network_mode == "host",
            })
        };
        let tick = match target {
            Some(target) => {
                let (hierarchy, path) = (hierarchy.clone(), cgroups_path.clone());
                match tokio::task::spawn_blocking(move || collect(&hierarchy, &path, &target)).await
                {
                    Ok(stats) => Tick::Sample(Box::new(stats)),
                    Err(_) => Tick::Stopped,
                }
            }
            None => Tick::Stopped,
        };
        let stopped = matches!(tick, Tick::Stopped);
        let _ = tx.send(Some(Arc::new(tick)));
        if stopped {
            FEEDS.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
            return;
        }
        tokio::time::sleep(INTERVAL).await;
        // Subscribing takes the same lock, so nobody joins between the
        // count and the removal.
        let mut feeds = FEEDS.lock().unwrap_or_else(|e| e.into_inner());
        if tx.receiver_count() <= 1 {
            feeds.remove(&id);
            return;
        }
    }
}

/// How a request wants its stats.
#[derive(Debug, Clone, Copy)]
pub struct StatsOptions {
    pub stream: bool,
    pub one_shot: bool,
}

fn line(stats: &Stats) -> Bytes {
    let mut bytes = serde_json::to_vec(stats).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

impl Engine {
    /// `GET /containers/{id}/stats`: JSON documents, one a line.
    pub async fn stats(
        &self,
        key: &str,
        options: StatsOptions,
    ) -> Result<mpsc::Receiver<Bytes>, EngineError> {
        let handle = self.container(key).await?;
        let (id, name, running) = {
            let record = handle.record.lock().await;
            (
                record.id.clone(),
                record.name.clone(),
                record.state.running && record.state.status != "restarting",
            )
        };
        let (tx, rx) = mpsc::channel(1);
        if !running {
            let _ = tx.try_send(line(&Stats::empty(&name, &id)));
            return Ok(rx);
        }
        let cgroups_path = format!("/{}/{}", self.options.cgroup_parent.trim_matches('/'), id);
        let mut feed = subscribe(&handle, &id, cgroups_path);
        tokio::spawn(async move {
            let mut previous: Option<(CpuStats, String)> = None;
            let mut prime = !options.stream && !options.one_shot;
            loop {
                tokio::select! {
                    changed = feed.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
                let tick = feed.borrow_and_update().clone();
                let mut stats = match tick.as_deref() {
                    Some(Tick::Sample(stats)) => (**stats).clone(),
                    Some(Tick::Stopped) => {
                        if !options.stream {
                            let _ = tx.send(line(&Stats::empty(&name, &id))).await;
                        }
                        return;
                    }
                    None => continue,
                };
                stats.name = format!("/{name}");
                stats.id.clone_from(&id);
                if let Some((cpu, read)) = previous.take() {
                    stats.precpu_stats = cpu;
                    stats.preread = read;
                }
                previous = Some((stats.cpu_stats.clone(), stats.read.clone()));
                if prime {
                    prime = false;
                    continue;
                }
                if tx.send(line(&stats)).await.is_err() || !options.stream {
                    return;
                }
            }
        });
        Ok(rx)
    }
}
