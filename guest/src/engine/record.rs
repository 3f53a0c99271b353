//! A container's record: what `inspect` shows and what survives an engine
//! restart, saved atomically as `container.json`.

use serde::{Deserialize, Serialize};

use crate::model::{Config, HostConfig, MountPoint, State};

/// Everything the engine knows about one container.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerRecord {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    pub created: String,
    pub path: String,
    pub args: Vec<String>,
    pub config: Config,
    pub host_config: HostConfig,
    pub state: State,
    /// Image id (`sha256:…`).
    pub image: String,
    pub restart_count: i64,
    pub mounts: Vec<MountPoint>,
    /// Unpacked image layers, lowest first, as resolved at create.
    pub layers: Vec<std::path::PathBuf>,
    /// Set by `stop`/`kill` from a user, so `unless-stopped` and `always` do
    /// not bring the container back.
    pub manually_stopped: bool,
    /// Pid of the monitor process of the current run (0 when none).
    pub monitor_pid: i64,
    /// Networks, addresses and published ports.
    pub networking: crate::network::record::ContainerNetworking,
}

impl ContainerRecord {
    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }

    pub fn is_running(&self) -> bool {
        self.state.running
    }

    /// Sets the state to `status`, keeping the booleans in step.
    pub fn set_status(&mut self, status: &str) {
        self.state.status = status.to_owned();
        self.state.running = matches!(status, "running" | "paused" | "restarting");
        self.state.paused = status == "paused";
        self.state.restarting = status == "restarting";
        self.state.dead = status == "dead";
    }
}

pub use crate::state::time::{now_rfc3339, ZERO_TIME};
