//! Where the engine keeps its state on disk.
//!
//! ```text
//! <root>/image/...                 image store (blobs, layers, repositories)
//! <root>/volumes/<name>/...        volume store
//! <root>/containers/<id>/          one directory per container:
//!     container.json               the record (written atomically)
//!     bundle/config.json           the OCI spec of the current run
//!     upper/ work/                 the overlayfs upper and work dirs
//!     rootfs/                      the overlay mount point while running
//!     container.log                json-file log (one JSON object per line)
//!     hostname hosts resolv.conf   files bind-mounted into the container
//!     exit.json                    written by the monitor when the run ends
//! <exec_root>/<id12>/monitor.sock  the monitor's control socket
//! <exec_root>/rt/<id>/             libcontainer's state
//! ```
//!
//! Unix socket paths are limited to 108 bytes, so sockets live under the
//! (short) exec root and are named by the first 12 characters of the id.

use std::path::PathBuf;

pub use crate::state::files::{dir_size, write_atomic};

/// The paths of one engine instance.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
    pub exec_root: PathBuf,
}

impl Layout {
    pub fn new(root: PathBuf, exec_root: PathBuf) -> Self {
        Self { root, exec_root }
    }

    pub fn images(&self) -> PathBuf {
        self.root.join("image")
    }

    pub fn volumes(&self) -> PathBuf {
        self.root.join("volumes")
    }

    pub fn containers(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// The scratch directories of builds in progress.
    pub fn builds(&self) -> PathBuf {
        self.root.join("build")
    }

    pub fn container(&self, id: &str) -> PathBuf {
        self.containers().join(id)
    }

    /// The run directory of a container: its monitor socket and console socket.
    pub fn container_run(&self, id: &str) -> PathBuf {
        self.exec_root.join(&id[..id.len().min(12)])
    }

    pub fn monitor_socket(&self, id: &str) -> PathBuf {
        self.container_run(id).join("monitor.sock")
    }

    /// libcontainer's state root.
    pub fn runtime_root(&self) -> PathBuf {
        self.exec_root.join("rt")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_stay_short() {
        let layout = Layout::new("/var/lib/vmctl".into(), "/run/vmctl".into());
        let id = "a".repeat(64);
        assert_eq!(
            layout.monitor_socket(&id),
            PathBuf::from("/run/vmctl/aaaaaaaaaaaa/monitor.sock")
        );
    }
}
