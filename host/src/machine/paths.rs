//! Where a machine's files live on the desktop.
//!
//! Durable files (config, disk, console log, daemon log) go in the platform's
//! data directory; sockets, pid and lock files in its runtime directory (both
//! from the `directories` crate). `VMCTL_HOME` moves everything under one
//! directory (`$VMCTL_HOME/data`, `$VMCTL_HOME/run`) — tests and users with
//! several setups use it. Unix socket paths are limited to 107 bytes, so the
//! runtime names are short.
//!
//! Everything is private to the desktop user ([`MachinePaths::make_private`]):
//! the disk holds every image, volume and container environment, the logs
//! what the guest printed. Directories 0700, the disk and logs 0600; the
//! runtime root too when it is the fallback under the data directory. On
//! Windows the modes do not exist: the directories are under the user's
//! profile (`%LOCALAPPDATA%`), whose inherited ACL admits the user, SYSTEM
//! and administrators only.

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::MachineError;
use crate::endpoint::{self, Endpoint, Role};

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
        self.run.join(endpoint::socket_name(Role::Docker))
    }
    /// The daemon's own socket (status, stop, guest connections for the CLI).
    pub fn daemon_socket(&self) -> PathBuf {
        self.run.join(endpoint::socket_name(Role::Daemon))
    }
    /// The forwarded Docker API as this platform serves it: the
    /// [`Self::docker_socket`] on unix, a named pipe on Windows.
    pub fn docker_endpoint(&self) -> Endpoint {
        Endpoint::for_machine(&self.run, &self.name, Role::Docker)
    }
    /// The daemon's own endpoint as this platform serves it.
    pub fn daemon_endpoint(&self) -> Endpoint {
        Endpoint::for_machine(&self.run, &self.name, Role::Daemon)
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
    /// The forward link helper's socket (`crate::link`).
    pub fn link_socket(&self) -> PathBuf {
        self.run.join("link.sock")
    }
    /// The vhost-user socket of share `index`'s virtiofsd (QEMU).
    pub fn share_socket(&self, index: usize) -> PathBuf {
        self.run.join(format!("share-{index}.sock"))
    }
    pub fn share_pid(&self, index: usize) -> PathBuf {
        self.run.join(format!("share-{index}.pid"))
    }
    /// What the daemon says about the VM (state, accelerator, boot time).
    pub fn status(&self) -> PathBuf {
        self.run.join("status.json")
    }
    /// The running VM's per-boot vsock secret (0600; [`super::secret`]).
    pub fn boot_secret(&self) -> PathBuf {
        self.run.join("vm.secret")
    }
}

/// Mode of every directory of a machine.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the disk and the logs.
pub const FILE_MODE: u32 = 0o600;

impl MachinePaths {
    /// Creates the machine's directories 0700 and makes its disk and logs
    /// 0600 (the logs are created empty, so QEMU's append keeps the mode).
    /// Fixes the modes of machines made before they were private.
    pub fn make_private(&self) -> Result<(), MachineError> {
        if let Some(root) = self.run.parent() {
            private_dir(root)?;
        }
        private_dir(&self.run)?;
        private_dir(&self.data)?;
        for log in [self.console_log(), self.daemon_log()] {
            private_file(&log, true)?;
        }
        private_file(&self.disk(), false)
    }
}

/// Creates `dir` (and its missing parents) 0700, and makes it 0700 if it was there.
fn private_dir(dir: &Path) -> Result<(), MachineError> {
    let io = |source| MachineError::Write {
        path: dir.to_owned(),
        source,
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(DIR_MODE);
    builder.create(dir).map_err(io)?;
    restrict(dir, DIR_MODE).map_err(io)
}

/// Options that create a file 0600 (on unix; Windows: see the module doc).
pub fn private_options() -> std::fs::OpenOptions {
    #[cfg(unix)]
    {
        let mut options = std::fs::OpenOptions::new();
        options.mode(FILE_MODE);
        options
    }
    #[cfg(not(unix))]
    {
        std::fs::OpenOptions::new()
    }
}

/// Sets `mode` on `path` (on unix; Windows: see the module doc).
fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = mode;
        std::fs::metadata(path).map(drop)
    }
}

/// Makes `path` 0600; creates it empty when `create` and it is missing.
pub fn private_file(path: &Path, create: bool) -> Result<(), MachineError> {
    let io = |source| MachineError::Write {
        path: path.to_owned(),
        source,
    };
    if create {
        private_options()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
    }
    match restrict(path, FILE_MODE) {
        Err(e) if !create && e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other.map_err(io),
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

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    #[cfg(unix)]
    fn machine_files_are_private_and_old_modes_are_fixed() {
        let home = tempfile::tempdir().unwrap();
        let roots = Roots {
            data: home.path().join("data"),
            run: home.path().join("data").join("run"),
        };
        let paths = roots.machine("dev");
        // A machine from before: world-readable everything.
        std::fs::create_dir_all(&paths.data).unwrap();
        std::fs::create_dir_all(&paths.run).unwrap();
        for dir in [&paths.data, &paths.run, &roots.run] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(paths.disk(), b"").unwrap();
        std::fs::write(paths.daemon_log(), b"old lines\n").unwrap();
        for file in [paths.disk(), paths.daemon_log()] {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        paths.make_private().unwrap();
        for dir in [&paths.data, &paths.run, &roots.run] {
            assert_eq!(mode(dir), 0o700, "{}", dir.display());
        }
        for file in [paths.disk(), paths.daemon_log(), paths.console_log()] {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        assert_eq!(
            std::fs::read(paths.daemon_log()).unwrap(),
            b"old lines\n",
            "kept"
        );
    }

    #[test]
    #[cfg(unix)]
    fn a_new_machine_is_private_from_the_start() {
        let home = tempfile::tempdir().unwrap();
        let roots = Roots {
            data: home.path().join("data"),
            run: home.path().join("run"),
        };
        let config = crate::machine::MachineConfig {
            disk_gib: 1,
            ..Default::default()
        };
        let machine = crate::machine::Machine::create(&roots, "dev", config).unwrap();
        let paths = &machine.paths;
        assert_eq!(mode(&paths.data), 0o700);
        assert_eq!(mode(&paths.disk()), 0o600);
        assert_eq!(mode(&paths.console_log()), 0o600);
        assert_eq!(mode(&paths.daemon_log()), 0o600);
        assert_eq!(mode(&paths.config()), 0o600);
    }
}
