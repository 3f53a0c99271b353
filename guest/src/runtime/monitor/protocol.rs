//! The engine ↔ monitor protocol, over the monitor's unix socket.
//!
//! Each connection starts with one JSON line from the engine (a [`Request`])
//! and one JSON line back (a [`Reply`]). `Attach` and `Exec` connections then
//! carry a byte stream: from the monitor, frames in Docker's multiplexed format
//! (`[kind, 0, 0, 0, len:be32] payload`, kind 1 stdout, 2 stderr, and
//! [`FRAME_EXIT`] for the final JSON [`ExitInfo`] of an exec); to the monitor,
//! raw stdin bytes, with half-close meaning stdin EOF. `Wait` answers a second
//! line, an [`ExitInfo`], when the container's init exits.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::state::stream::{frame, FRAME_EXIT};

/// What the engine hands the monitor (as `monitor.json`) to run a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MonitorConfig {
    pub id: String,
    /// The container's state directory.
    pub container_dir: PathBuf,
    /// Holds `monitor.sock` and the console socket.
    pub run_dir: PathBuf,
    /// libcontainer's state root.
    pub runtime_root: PathBuf,
    /// OCI bundle (with `config.json`).
    pub bundle: PathBuf,
    /// Overlay: lower dirs lowest first, upper, work, and the mount point.
    pub lower: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub rootfs: PathBuf,
    pub log_path: PathBuf,
    pub tty: bool,
    pub open_stdin: bool,
    pub stdin_once: bool,
    /// Program and environment, for the executable lookup before start.
    pub args: Vec<String>,
    pub env: Vec<String>,
    /// The memory cgroup of the container relative to the hierarchy root, for OOM detection.
    pub cgroups_path: String,
    /// Make a new network namespace (with `lo` up) for the container.
    #[serde(default)]
    pub new_netns: bool,
}

/// A process to run inside the container (`docker exec`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExecSpec {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub tty: bool,
    pub stdin: bool,
    pub privileged: bool,
    /// The bytes that detach the client from the exec's stdin (none: never).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detach_keys: Vec<u8>,
}

/// A request from the engine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Start the created container.
    Start,
    /// Answer with the exit once the init has exited.
    Wait,
    /// Stream output (and take stdin) from now on.
    Attach {
        stdin: bool,
        stdout: bool,
        stderr: bool,
        /// The bytes in stdin that detach this client (none: never): the
        /// connection ends, the container's stdin stays open.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        detach_keys: Vec<u8>,
    },
    /// Send a signal to the container's init.
    Kill {
        signal: i32,
    },
    /// Set the terminal size of the init (`exec_id: None`) or an exec.
    Resize {
        exec_id: Option<String>,
        height: u16,
        width: u16,
    },
    Pause,
    Resume,
    /// Run a process in the container; the connection becomes its stream.
    Exec {
        exec_id: String,
        spec: ExecSpec,
    },
    /// Health and pid of the init.
    Status,
    /// Send a signal to an exec's process while it runs (a health probe
    /// past its timeout); refused once the process was reaped.
    KillExec {
        pid: i32,
        signal: i32,
    },
}

/// The first answer to a request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    #[serde(default)]
    pub pid: i32,
    #[serde(default)]
    pub paused: bool,
}

impl Reply {
    pub fn ok() -> Self {
        Self {
            ok: true,
            ..Self::default()
        }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: message.into(),
            ..Self::default()
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ExitInfo {
    pub exit_code: i64,
    #[serde(default)]
    pub oom_killed: bool,
    /// RFC 3339.
    pub finished_at: String,
    #[serde(default)]
    pub error: String,
}

/// The first line the monitor prints on its stdout: the container was created
/// and waits for `Start`, or it could not be.
pub const READY: &str = "ready";
/// Prefix of the failure line.
pub const FAILED: &str = "error: ";
