//! The container engine: the registry of containers, their lifecycle verbs
//! (one file each), events, and the stores it owns.
//!
//! State is on disk under [`Layout`]; the in-memory registry is rebuilt from it
//! at start (live restore: containers whose monitor still runs are adopted).

pub mod archive;
pub mod attach;
pub mod commit;
pub mod create;
pub mod error;
pub mod etc;
pub use crate::state::events;
pub mod exec;
pub mod health;
pub mod inspect;
pub mod layout;
pub mod list;
pub mod logs;
pub mod names;
pub mod network;
pub mod pause;
pub mod record;
pub mod remove;
pub mod restore;
pub mod start;
pub mod stats;
pub mod stop;
pub mod stream;
pub mod update;

pub use error::{EngineError, ErrorKind};
pub use layout::Layout;
pub use record::ContainerRecord;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{Mutex, RwLock};

use crate::image::ImageStore;
use crate::volume::VolumeStore;
use events::EventBus;

/// Options the engine is started with.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub root: PathBuf,
    pub exec_root: PathBuf,
    /// The cgroup (relative to each hierarchy's root) containers are put under.
    pub cgroup_parent: String,
    /// Directory with built-in image tarballs loaded at start when missing.
    pub builtin_images: Option<PathBuf>,
    /// The `vmctl-guest` binary, run as each container's monitor.
    pub self_exe: PathBuf,
    /// Bridge, addresses and firewall flags.
    pub network: crate::network::NetworkOptions,
    /// Registry mirrors and insecure registries.
    pub registry: crate::image::registry::RegistryOptions,
    /// Which bind sources containers may use (in the VM: the shares).
    pub binds: crate::volume::policy::BindPolicy,
}

/// One container: its record behind a lock, and a signal fired on each change
/// of state so waiters wake up.
pub struct ContainerHandle {
    pub record: Mutex<ContainerRecord>,
    pub changed: tokio::sync::watch::Sender<u64>,
    /// Attach clients waiting for the next start.
    pub pending_attaches: std::sync::Mutex<Vec<attach::PendingAttach>>,
}

impl ContainerHandle {
    pub fn new(record: ContainerRecord) -> Arc<Self> {
        Arc::new(Self {
            record: Mutex::new(record),
            changed: tokio::sync::watch::channel(0).0,
            pending_attaches: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Wakes everybody watching this container.
    pub fn notify(&self) {
        self.changed.send_modify(|n| *n += 1);
    }
}

/// Containers by id, and names to ids.
#[derive(Default)]
pub struct Registry {
    pub by_id: HashMap<String, Arc<ContainerHandle>>,
    pub names: HashMap<String, String>,
}

impl Registry {
    /// Finds a container by full id, unique id prefix, or name (with or without `/`).
    pub fn find(&self, key: &str) -> Result<Arc<ContainerHandle>, EngineError> {
        let name = key.strip_prefix('/').unwrap_or(key);
        if let Some(found) = self.by_id.get(key) {
            return Ok(found.clone());
        }
        if let Some(id) = self.names.get(name) {
            if let Some(found) = self.by_id.get(id) {
                return Ok(found.clone());
            }
        }
        if !key.is_empty() && key.chars().all(|c| c.is_ascii_hexdigit()) {
            let mut matches = self.by_id.iter().filter(|(id, _)| id.starts_with(key));
            if let Some((_, first)) = matches.next() {
                if matches.next().is_some() {
                    return Err(EngineError::InvalidParameter(format!(
                        "multiple IDs found with provided prefix: {key}"
                    )));
                }
                return Ok(first.clone());
            }
        }
        Err(EngineError::NoSuchContainer(key.to_owned()))
    }
}

/// The engine.
pub struct Engine {
    pub options: EngineOptions,
    pub layout: Layout,
    pub images: Arc<ImageStore>,
    pub puller: Arc<crate::image::pull::Puller>,
    pub volumes: VolumeStore,
    pub containers: RwLock<Registry>,
    pub events: EventBus,
    pub started: chrono::DateTime<chrono::Utc>,
    /// The static init bind-mounted for `--init`.
    pub init_binary: Option<PathBuf>,
    pub execs: exec::ExecRegistry,
    pub networks: Arc<crate::network::Networks>,
}

impl Engine {
    /// Opens (creating when needed) the state under `options.root`.
    pub async fn open(options: EngineOptions) -> Result<Arc<Self>, EngineError> {
        let layout = Layout::new(options.root.clone(), options.exec_root.clone());
        for dir in [
            layout.root.clone(),
            layout.containers(),
            layout.exec_root.clone(),
        ] {
            std::fs::create_dir_all(&dir).map_err(|e| EngineError::io("create", &dir, e))?;
        }
        let images = ImageStore::open(&layout.images())?;
        crate::build::context::clean_leftovers(&layout.builds());
        if let Some(dir) = &options.builtin_images {
            if let Err(e) = images.load_builtin(dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "built-in images not loaded");
            }
        }
        let volumes = VolumeStore::open(&layout.volumes())?;
        let init_dir = layout.root.join("bin");
        let init_binary = std::fs::create_dir_all(&init_dir)
            .and_then(|()| crate::runtime::init::install(&init_dir))
            .map_err(|e| EngineError::io("install the init in", &init_dir, e))?;
        let networks =
            crate::network::Networks::open(options.network.clone(), &layout.root).await?;
        let puller = Arc::new(crate::image::pull::Puller::new(options.registry.clone()));
        let engine = Arc::new(Self {
            options,
            layout,
            images: Arc::new(images),
            puller,
            volumes,
            containers: RwLock::new(Registry::default()),
            events: EventBus::default(),
            started: chrono::Utc::now(),
            init_binary: Some(init_binary),
            execs: exec::ExecRegistry::default(),
            networks,
        });
        engine.restore().await?;
        engine.networks.reconcile().await?;
        Ok(engine)
    }

    /// Every container, as of now (the registry lock is not held after).
    pub async fn handles(&self) -> Vec<Arc<ContainerHandle>> {
        self.containers
            .read()
            .await
            .by_id
            .values()
            .cloned()
            .collect()
    }

    /// Volume names to the ids of the containers that mount them.
    pub async fn volume_users(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        let mut users: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for handle in self.handles().await {
            let record = handle.record.lock().await;
            for mount in record.mounts.iter().filter(|m| m.kind == "volume") {
                users
                    .entry(mount.name.clone())
                    .or_default()
                    .push(record.id.clone());
            }
        }
        users
    }

    /// Looks a container up by id, id prefix or name.
    pub async fn container(&self, key: &str) -> Result<Arc<ContainerHandle>, EngineError> {
        self.containers.read().await.find(key)
    }
}
