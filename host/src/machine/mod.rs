//! Named machines: their settings, files and state on the desktop.
//!
//! A machine is a directory (see [`paths`]) holding `config.json`
//! ([`config::MachineConfig`]) and a sparse raw data disk the guest formats
//! on first boot. `default` exists implicitly: starting it creates it.
//! Running one is the daemon's business ([`crate::daemon`]); this module
//! only creates, reads and removes.

pub mod config;
pub mod lock;
pub mod paths;
pub mod port_rules;
pub mod secret;
pub mod status;
pub mod store;

use std::path::PathBuf;

pub use config::{MachineConfig, SizeFlags};
pub use paths::{MachinePaths, Roots};

/// The machine used when none is named.
pub const DEFAULT_MACHINE: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error("cannot find a home directory for vmctl's files (set VMCTL_HOME)")]
    NoHomeDirectory,
    #[error("machine name {0:?} is not valid: use letters, digits, '-', '_' or '.', up to 32")]
    BadName(String),
    #[error("{0}")]
    BadFlag(String),
    #[error("machine {0} does not exist (create it with `vmctl machine init {0}`)")]
    NotFound(String),
    #[error("machine {0} already exists")]
    Exists(String),
    #[error("machine {0} is running: stop it first, or pass --force")]
    Running(String),
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is corrupt")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// One machine: where it lives and how it is set up.
#[derive(Debug, Clone)]
pub struct Machine {
    pub paths: MachinePaths,
    pub config: MachineConfig,
}

impl Machine {
    /// Reads machine `name`.
    pub fn load(roots: &Roots, name: &str) -> Result<Self, MachineError> {
        paths::validate_name(name)?;
        let paths = roots.machine(name);
        let config = store::read_json(&paths.config())?
            .ok_or_else(|| MachineError::NotFound(name.to_owned()))?;
        Ok(Self { paths, config })
    }

    /// Reads machine `name`; `default` is created on first use.
    pub fn load_or_default(roots: &Roots, name: &str) -> Result<Self, MachineError> {
        match Self::load(roots, name) {
            Err(MachineError::NotFound(_)) if name == DEFAULT_MACHINE => {
                Self::create(roots, name, MachineConfig::default())
            }
            other => other,
        }
    }

    /// Creates machine `name`: its directories, config and empty disk.
    pub fn create(roots: &Roots, name: &str, config: MachineConfig) -> Result<Self, MachineError> {
        paths::validate_name(name)?;
        let paths = roots.machine(name);
        if paths.config().exists() {
            return Err(MachineError::Exists(name.to_owned()));
        }
        let machine = Self { paths, config };
        let made = machine
            .paths
            .make_private()
            .and_then(|()| machine.size_disk())
            .and_then(|()| machine.save());
        if made.is_err() {
            let _ = std::fs::remove_dir_all(&machine.paths.data);
        }
        made.map(|()| machine)
    }

    pub fn save(&self) -> Result<(), MachineError> {
        store::write_json(&self.paths.config(), &self.config)
    }

    /// Makes the sparse disk file as large as the config says (it only grows;
    /// the guest's file system sees the new size at its next format only).
    pub fn size_disk(&self) -> Result<(), MachineError> {
        let path = self.paths.disk();
        let io = |source| MachineError::Write {
            path: path.clone(),
            source,
        };
        self.paths.make_private()?;
        let file = paths::private_options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        paths::private_file(&path, false)?;
        let want = self.config.disk_gib * 1024 * 1024 * 1024;
        if file.metadata().map_err(io)?.len() < want {
            file.set_len(want).map_err(io)?;
        }
        Ok(())
    }

    /// Deletes the machine's files (the caller made sure it is stopped).
    pub fn remove(self) -> Result<(), MachineError> {
        for dir in [&self.paths.run, &self.paths.data] {
            match std::fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(MachineError::Write {
                        path: dir.clone(),
                        source,
                    })
                }
            }
        }
        Ok(())
    }
}

/// Names of all machines, sorted.
pub fn list(roots: &Roots) -> Result<Vec<String>, MachineError> {
    let dir = roots.machines_dir();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(MachineError::Read { path: dir, source }),
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join("config.json").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_load_remove() {
        let dir = tempfile::tempdir().unwrap();
        let roots = Roots {
            data: dir.path().join("data"),
            run: dir.path().join("run"),
        };
        assert!(matches!(
            Machine::load(&roots, "dev"),
            Err(MachineError::NotFound(_))
        ));
        let config = MachineConfig {
            cpus: 1,
            memory_mib: 512,
            disk_gib: 2,
            ..MachineConfig::default()
        };
        let made = Machine::create(&roots, "dev", config.clone()).unwrap();
        assert_eq!(std::fs::metadata(made.paths.disk()).unwrap().len(), 2 << 30);
        assert!(matches!(
            Machine::create(&roots, "dev", config.clone()),
            Err(MachineError::Exists(_))
        ));
        assert_eq!(Machine::load(&roots, "dev").unwrap().config, config);
        assert_eq!(list(&roots).unwrap(), vec!["dev".to_owned()]);
        Machine::load_or_default(&roots, DEFAULT_MACHINE).unwrap();
        made.remove().unwrap();
        assert_eq!(list(&roots).unwrap(), vec!["default".to_owned()]);
    }
}
