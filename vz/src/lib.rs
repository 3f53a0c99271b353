//! `vmctl-vz`: the per-machine VMM process of Apple's Virtualization.framework.
//!
//! A VZ VM lives and dies with the process that created it, so the daemon
//! does not create it: it writes a [`config::VzConfig`] and starts `vmctl
//! __vmm-vz <config.json>`, which runs [`run_vmm`]. That process owns the VM
//! and offers its vsock ports on a unix socket with the hybrid vsock
//! protocol the daemon already speaks ([`protocol`]); guest connections to
//! host port P go to `<socket>_P`; the per-boot secret reaches the guest
//! on a one-shot vsock port ([`secret`]). A restarted daemon adopts the
//! process through the same socket, so the VM and its forwards survive it.
//!
//! Modules: [`config`] (the VM as a plain description, from the daemon's
//! machine), [`protocol`] (the socket), [`secret`] (the handoff), [`vmm`]
//! (the process's serve loop) are platform-neutral and tested on Linux;
//! `vm` (the framework's objects, all touched on the VM's serial dispatch
//! queue) compiles only for Apple targets — elsewhere [`run_vmm`] returns
//! [`VmmError::Unsupported`].

pub mod config;
// The VMM socket is a unix socket: the VMM runs only on macOS, and is
// type-checked and tested on every unix.
#[cfg(unix)]
pub mod protocol;
pub mod secret;
#[cfg(target_vendor = "apple")]
mod vm;
#[cfg(unix)]
pub mod vmm;

use std::path::{Path, PathBuf};

pub use config::{ConfigError, VzConfig, VzParts};

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("Virtualization.framework is only on macOS")]
    Unsupported,
    #[error("cannot read the VM configuration {path}")]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the VM configuration {path} is malformed")]
    ParseConfig {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the VM configuration")]
    Config(#[from] ConfigError),
    #[error("the per-boot secret")]
    Secret(#[from] secret::SecretError),
    #[cfg(unix)]
    #[error("the VMM socket")]
    Serve(#[from] vmm::ServeError),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[cfg(target_vendor = "apple")]
    #[error("Virtualization.framework")]
    Vm(#[from] vm::VmError),
    #[error("the VM stopped with an error: {0}")]
    Failed(String),
}

/// Reads the configuration the daemon wrote.
pub fn read_config(path: &Path) -> Result<VzConfig, VmmError> {
    let text = std::fs::read_to_string(path).map_err(|source| VmmError::ReadConfig {
        path: path.to_owned(),
        source,
    })?;
    VzConfig::from_json(&text).map_err(|source| VmmError::ParseConfig {
        path: path.to_owned(),
        source,
    })
}

/// Whether this desktop can run Virtualization.framework VMs (macOS on a
/// Mac whose CPU virtualizes; never elsewhere).
pub fn available() -> bool {
    #[cfg(target_vendor = "apple")]
    {
        vm::is_supported()
    }
    #[cfg(not(target_vendor = "apple"))]
    {
        false
    }
}

/// The VMM process's main: reads the configuration, boots the VM, serves
/// its socket, and returns when the VM stops (an error if it failed).
pub fn run_vmm(config_path: &Path) -> Result<(), VmmError> {
    let config = read_config(config_path)?;
    #[cfg(target_vendor = "apple")]
    {
        vm::run(config)
    }
    #[cfg(not(target_vendor = "apple"))]
    {
        let _ = config;
        Err(VmmError::Unsupported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vmm_reads_its_config_and_says_where_vz_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vz.json");
        assert!(matches!(run_vmm(&path), Err(VmmError::ReadConfig { .. })));
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(run_vmm(&path), Err(VmmError::ParseConfig { .. })));
        let parts = VzParts {
            name: "t",
            cpus: 1,
            memory_mib: 512,
            kernel: Path::new("/k"),
            initramfs: Path::new("/i"),
            cmdline: "quiet",
            disk: Path::new("/d"),
            console_log: Path::new("/c"),
            socket: Path::new("/s"),
            secret: Path::new("/x"),
            shares: &[],
            host_ports: &[],
        };
        let config = VzConfig::from_parts(&parts).unwrap();
        std::fs::write(&path, config.to_json().unwrap()).unwrap();
        assert_eq!(read_config(&path).unwrap(), config);
        #[cfg(not(target_vendor = "apple"))]
        assert!(matches!(run_vmm(&path), Err(VmmError::Unsupported)));
    }
}
