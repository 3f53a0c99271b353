//! Facts learnt about this desktop that make the next start faster: an
//! accelerator that failed to boot a guest (nested KVM that dies on the
//! first instruction it cannot emulate) is not tried again until QEMU or the
//! host kernel changes.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::hypervisor::Accelerator;
use crate::machine::{store, MachineError};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostFacts {
    /// Accelerator → why it failed, under which QEMU and host kernel.
    #[serde(default)]
    pub broken: BTreeMap<String, Broken>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Broken {
    pub reason: String,
    /// What it was measured under: QEMU's version and the host kernel.
    pub under: String,
}

impl HostFacts {
    pub fn load(path: &Path) -> Self {
        store::read_json(path).ok().flatten().unwrap_or_default()
    }

    pub fn save(&self, path: &Path) -> Result<(), MachineError> {
        store::write_json(path, self)
    }

    /// Why `accel` is known not to work under `under`, if it is.
    pub fn known_broken(&self, accel: Accelerator, under: &str) -> Option<&str> {
        self.broken
            .get(accel.as_str())
            .filter(|b| b.under == under)
            .map(|b| b.reason.as_str())
    }

    pub fn mark_broken(&mut self, accel: Accelerator, under: &str, reason: &str) {
        self.broken.insert(
            accel.as_str().to_owned(),
            Broken {
                reason: reason.to_owned(),
                under: under.to_owned(),
            },
        );
    }
}

/// The host kernel's release, for [`Broken::under`] (unix: `uname -r`;
/// elsewhere the OS name, with no accelerator verdicts to key yet).
pub fn host_kernel() -> String {
    #[cfg(unix)]
    {
        nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default()
    }
    #[cfg(not(unix))]
    {
        std::env::consts::OS.to_owned()
    }
}
