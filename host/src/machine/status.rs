//! What a machine is doing now, as the CLI sees it.
//!
//! The daemon writes `status.json` at every state change; the CLI trusts it
//! only together with the liveness facts: the daemon holds `daemon.lock`
//! ([`super::lock`]) for its whole life, and the VMM's pid is in `vmm.pid`. A daemon
//! killed with SIGKILL leaves a `running` status behind but frees the lock,
//! so the CLI can tell "running" from "VM alive, daemon gone" from "stopped".

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::paths::MachinePaths;
use super::store;
use super::MachineError;

/// The daemon's view of the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Starting,
    Running,
    Stopping,
    Stopped,
    Failed,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Failed => "failed",
        })
    }
}

/// `status.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmStatus {
    pub state: State,
    /// The hypervisor backend (`qemu`).
    #[serde(default)]
    pub hypervisor: String,
    /// The accelerator the VM runs with (`kvm`, `hvf`, `whpx`, `tcg`).
    #[serde(default)]
    pub accelerator: Option<String>,
    /// Why a faster accelerator was not used.
    #[serde(default)]
    pub accelerator_note: Option<String>,
    /// Launch → engine answering, in milliseconds.
    #[serde(default)]
    pub boot_ms: Option<u64>,
    /// Unix seconds when the VM was launched.
    #[serde(default)]
    pub started_at: Option<u64>,
    #[serde(default)]
    pub vmm_pid: Option<u32>,
    /// The guest's NIC address.
    #[serde(default)]
    pub guest_address: Option<String>,
    /// The guest kernel's release.
    #[serde(default)]
    pub guest_kernel: Option<String>,
    /// What published ports and rules go through now (the daemon fills it
    /// in when asked; not saved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwards: Option<String>,
    /// Why the machine failed or stopped unexpectedly.
    #[serde(default)]
    pub error: Option<String>,
}

impl VmStatus {
    pub fn new(state: State) -> Self {
        Self {
            state,
            hypervisor: String::new(),
            accelerator: None,
            accelerator_note: None,
            boot_ms: None,
            started_at: None,
            vmm_pid: None,
            guest_address: None,
            guest_kernel: None,
            forwards: None,
            error: None,
        }
    }

    pub fn load(paths: &MachinePaths) -> Result<Option<Self>, MachineError> {
        store::read_json(&paths.status())
    }

    pub fn save(&self, paths: &MachinePaths) -> Result<(), MachineError> {
        store::write_json(&paths.status(), self)
    }
}

/// What is alive for a machine, from the lock and the pid files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    pub daemon: bool,
    pub vmm: Option<u32>,
}

/// Looks at the lock and the VMM pid without disturbing a running daemon.
pub fn liveness(paths: &MachinePaths) -> Liveness {
    Liveness {
        daemon: lock_is_held(&paths.lock()),
        vmm: read_pid(&paths.vmm_pid()).filter(|&pid| pid_alive(pid)),
    }
}

/// Whether some process holds the lock on `path`.
pub fn lock_is_held(path: &Path) -> bool {
    super::lock::is_held(path)
}

pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether `pid` names a live process (not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    crate::process::alive(pid)
}
