//! Where a machine's files live on the desktop.
//!
//! Durable files (config, disk, console log, daemon log) go in the platform's
//! data directory; sockets, pid and lock files in its runtime directory (both
//! from the `directories` crate). `VMCTL_HOME` moves everything under one
//! directory (`$VMCTL_HOME/data`, `$VMCTL_HOME/run`) — tests and users with
//! several setups use it. Unix socket paths are limited to 107 bytes, so the
//! runtime names are short.

use std::path::{Path, PathBuf};

use super::MachineError;

/// The directories of one named machine.
#[derive(Debug, Clone)]
pub struct MachinePaths {
    pub name: String,
    /// Config, disk and logs.
    pub data: PathBuf,
    /// Sockets, pid and lock files.
    pub run: PathBuf,
}

/// The roots all machines live under.
#[derive(Debug, Clone)]
pub struct Roots {
    pub data: PathBuf,
    pub run: PathBuf,
}

impl Roots {
    /// `$VMCTL_HOME`, else the platform's directories.
    pub fn discover() -> Result<Self, MachineError> {
        if let Some(home) = std::env::var_os("VMCTL_HOME").filter(|h| !h.is_empty()) {
            let home = PathBuf::from(home);
            return Ok(Self {
                data: home.join("data"),
                run: home.join("run"),
            });
        }
        let dirs =
            directories::ProjectDirs::from("", "", "vmctl").ok_or(MachineError::NoHomeDirectory)?;
        let data = dirs.data_dir().to_owned();
        let run = dirs
            .runtime_dir()
            .map(Path::to_owned)
            .unwrap_or_else(|| data.join("run"));
        Ok(Self { data, run })
    }

    pub fn machines_dir(&self) -> PathBuf {
        self.data.join("machines")
    }

    /// The paths of machine `name` (which [`validate_name`] accepted).
    pub fn machine(&self, name: &str) -> MachinePaths {
        MachinePaths {
            name: name.to_owned(),
            data: self.machines_dir().join(name),
            run: self.run.join(name),
        }
    }

    /// Where the host keeps facts learnt about this desktop (e.g. that KVM
    /// does not boot guests here).
    pub fn host_facts(&self) -> PathBuf {
        self.data.join("host-facts.json")
    }
}

impl MachinePaths {
    pub fn config(&self) -> PathBuf {
        self.data.join("config.json")
    }
    /// The manual port rules (`vmctl port add`).
    pub fn port_rules(&self) -> PathBuf {
        self.data.join("ports.json")
    }
    pub fn disk(&self) -> PathBuf {
        self.data.join("disk.raw")
    }
    pub fn console_log(&self) -> PathBuf {
        self.data.join("console.log")
    }
    pub fn daemon_log(&self) -> PathBuf {
        self.data.join("daemon.log")
    }
    /// The forwarded Docker API socket.
    pub fn docker_socket(&self) -> PathBuf {
        self.run.join("docker.sock")
    }
    /// The daemon's own socket (status, stop, guest connections for the CLI).
    pub fn daemon_socket(&self) -> PathBuf {
        self.run.join("daemon.sock")
    }
    /// Held (flock) by the daemon for its whole life.
    pub fn lock(&self) -> PathBuf {
        self.run.join("daemon.lock")
    }
    pub fn daemon_pid(&self) -> PathBuf {
        self.run.join("daemon.pid")
    }
    pub fn vmm_pid(&self) -> PathBuf {
        self.run.join("vmm.pid")
    }
    pub fn vsock_backend_pid(&self) -> PathBuf {
        self.run.join("vsock.pid")
    }
    pub fn qmp_socket(&self) -> PathBuf {
        self.run.join("qmp.sock")
    }
    /// The vhost-user control socket QEMU connects to.
    pub fn vhost_socket(&self) -> PathBuf {
        self.run.join("vhost.sock")
    }
    /// The hybrid-vsock socket the host connects to (`CONNECT <port>`).
    pub fn vsock_socket(&self) -> PathBuf {
        self.run.join("vm.vsock")
    }
    /// What the daemon says about the VM (state, accelerator, boot time).
    pub fn status(&self) -> PathBuf {
        self.run.join("status.json")
    }
}

/// Machine names: what a docker context or a directory name can hold.
pub fn validate_name(name: &str) -> Result<(), MachineError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(MachineError::BadName(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("default").is_ok());
        assert!(validate_name("dev-2.x_y").is_ok());
        for bad in ["", "-x", "a/b", "..", &"x".repeat(33)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
