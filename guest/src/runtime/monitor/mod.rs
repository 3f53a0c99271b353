//! The per-container monitor: one single-threaded process per container run
//! (like containerd's shim or conmon), the same binary as the engine.
//!
//! It mounts the rootfs, creates the container with libcontainer, waits for
//! `Start`, then owns the container's init: its stdio (into the json-file log
//! and to attached clients), signals, terminal size, pause, `exec`, and its
//! exit status, which it writes to `exit.json` before releasing the cgroup
//! and the rootfs. Because it is not part of the engine process, the engine
//! can be killed and restarted without touching running containers; the new
//! engine finds the monitor again through its socket.
//!
//! libcontainer forks with raw `clone3` and runs Rust in the child, so it is
//! only ever called from this single-threaded process (see VM-RECIPE.md).

pub mod client;
pub mod fdio;
pub mod output;
pub mod protocol;
mod serve;
pub mod stdio;

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::Path;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;

use super::rootfs::{self, RootfsError};
use protocol::{ExitInfo, MonitorConfig, FAILED, READY};
use stdio::{Stdio, StdioError};

/// Errors of setting a container up.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("cannot read monitor config {}", path.display())]
    Config {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid monitor config")]
    ConfigFormat(#[source] serde_json::Error),
    #[error("cannot listen on {}", path.display())]
    Listen {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Stdio(#[from] StdioError),
    #[error("failed to create the container")]
    Create(#[source] libcontainer::error::LibcontainerError),
    #[error("cannot set up the container's network namespace")]
    Netns(#[source] nix::Error),
    #[error("cannot start the runtime loop")]
    Runtime(#[source] std::io::Error),
}

/// A created container, waiting for `Start`.
pub struct Created {
    pub config: MonitorConfig,
    pub container: Container,
    pub stdio: Stdio,
    pub listener: UnixListener,
}

/// Entry point of `vmctl-guest monitor CONFIG`. Reports `ready` or `error: …`
/// on stdout, then serves until the container has exited.
pub fn main(config_path: &Path) -> i32 {
    tracing::debug!(config = %config_path.display(), "monitor starting");
    // Leave the engine's session: signals to its process group must not reach us.
    let _ = nix::unistd::setsid();
    let mut ready = std::io::stdout();
    let config = match read_config(config_path) {
        Ok(config) => config,
        Err(e) => {
            let _ = writeln!(ready, "{FAILED}{}", crate::state::error_chain(&e));
            return 1;
        }
    };
    let created = match setup(&config) {
        Ok(created) => created,
        Err(e) => {
            let message = crate::state::error_chain(&e);
            tracing::error!(id = %config.id, error = %message, "container setup failed");
            release(&config, None);
            let _ = writeln!(ready, "{FAILED}{message}");
            return 1;
        }
    };
    tracing::debug!(id = %config.id, "container created");
    let _ = writeln!(ready, "{READY}");
    let _ = ready.flush();
    // The engine may go away; never die of a closed stdout.
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 1);
    }
    let id = config.id.clone();
    match serve::run(created) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(id = %id, error = %crate::state::error_chain(&e), "monitor failed");
            1
        }
    }
}

fn read_config(path: &Path) -> Result<MonitorConfig, MonitorError> {
    let bytes = std::fs::read(path).map_err(|source| MonitorError::Config {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(MonitorError::ConfigFormat)
}

/// Mounts the rootfs, checks the program, creates the container.
fn setup(config: &MonitorConfig) -> Result<Created, MonitorError> {
    std::fs::create_dir_all(&config.run_dir).map_err(|source| MonitorError::Listen {
        path: config.run_dir.clone(),
        source,
    })?;
    let socket = config.run_dir.join("monitor.sock");
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).map_err(|source| MonitorError::Listen {
        path: socket.clone(),
        source,
    })?;
    // The engine mounted the rootfs; from here on, it is ours to unmount.
    if config.new_netns {
        // The container inherits the monitor's namespace; exec'd processes
        // are forked from here too, so they land in it as well.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(MonitorError::Netns)?;
        super::loopback::up().map_err(|e| {
            MonitorError::Netns(nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
        })?;
    }
    rootfs::check_executable(
        &config.rootfs,
        &spec_binds(&config.bundle),
        &config.args,
        &config.env,
    )?;
    tracing::debug!(id = %config.id, "namespace and rootfs ready");
    let child = stdio::prepare(
        config.tty,
        config.open_stdin,
        &config.run_dir.join("console.sock"),
    )?;
    let builder = ContainerBuilder::new(config.id.clone(), SyscallType::default())
        .with_root_path(&config.runtime_root)
        .map_err(MonitorError::Create)?;
    let (builder, pending) = child.apply(builder);
    let container = with_default_signals(|| {
        builder
            .as_init(&config.bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()
    })
    .map_err(MonitorError::Create)?;
    let stdio = pending.finish()?;
    Ok(Created {
        config: config.clone(),
        container,
        stdio,
        listener,
    })
}

/// Runs `fork`, a libcontainer build that forks a container's process,
/// with every signal this monitor ignores back at its default. An ignored
/// signal stays ignored across `exec`, and Rust ignores SIGPIPE (as may
/// whoever started the engine SIGINT and SIGQUIT): without this a
/// container's `yes | head -1` never ends, where under Docker `yes` dies
/// of SIGPIPE. Handlers are left alone (the loop's SIGCHLD must not miss
/// a child); the monitor is single-threaded, so nothing else runs between.
pub(super) fn with_default_signals<T>(fork: impl FnOnce() -> T) -> T {
    let mut ignored = Vec::new();
    for signal in 1..=libc::SIGRTMAX() {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: an all-zero `sigaction` is a valid value to be written over.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: only reads the disposition (no new action) into `old`.
        let read = unsafe { libc::sigaction(signal, std::ptr::null(), &mut old) };
        if read == 0 && old.sa_sigaction == libc::SIG_IGN {
            // SAFETY: sets the default action; put back below.
            if unsafe { libc::signal(signal, libc::SIG_DFL) } != libc::SIG_ERR {
                ignored.push(signal);
            }
        }
    }
    let result = fork();
    for signal in ignored {
        // SAFETY: restores the ignored disposition read above.
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
    result
}

/// The bind mounts of the bundle's spec (binds, volumes, `/etc` files), for
/// the executable check; none when the spec cannot be read (libcontainer
/// will report that).
pub(super) fn spec_binds(bundle: &Path) -> Vec<rootfs::Bind> {
    let spec = match oci_spec::runtime::Spec::load(bundle.join("config.json")) {
        Ok(spec) => spec,
        Err(e) => {
            tracing::warn!(bundle = %bundle.display(), error = %e, "cannot read the spec's mounts");
            return Vec::new();
        }
    };
    spec.mounts()
        .iter()
        .flatten()
        .filter(|m| {
            m.typ().as_deref() == Some("bind")
                || m.options()
                    .iter()
                    .flatten()
                    .any(|o| o == "bind" || o == "rbind")
        })
        .filter_map(|m| {
            Some(rootfs::Bind {
                destination: m.destination().clone(),
                source: m.source().clone()?,
            })
        })
        .collect()
}

/// Frees what a run holds: the libcontainer state and cgroup, the rootfs
/// mount, the run directory. Keeps going on errors and logs them.
pub fn release(config: &MonitorConfig, container: Option<Container>) {
    let container =
        container.or_else(|| Container::load(config.runtime_root.join(&config.id)).ok());
    if let Some(mut container) = container {
        if let Err(e) = container.delete(true) {
            tracing::warn!(id = %config.id, error = %e, "cannot delete the container state");
        }
    }
    if let Err(e) = rootfs::unmount(&config.rootfs) {
        tracing::warn!(id = %config.id, error = %e, "cannot unmount the rootfs");
    }
    let _ = std::fs::remove_dir_all(&config.run_dir);
}

/// Whether the memory cgroup saw an OOM kill (cgroup v1 `memory.oom_control`
/// or v2 `memory.events`).
pub fn oom_killed(cgroups_path: &str) -> bool {
    let relative = cgroups_path.trim_start_matches('/');
    let candidates = [
        Path::new("/sys/fs/cgroup/memory")
            .join(relative)
            .join("memory.oom_control"),
        Path::new("/sys/fs/cgroup")
            .join(relative)
            .join("memory.events"),
    ];
    candidates.iter().any(|path| {
        std::fs::read_to_string(path).is_ok_and(|text| {
            text.lines().any(|line| {
                line.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
        })
    })
}

/// Writes `exit.json` for the engine.
pub fn write_exit(config: &MonitorConfig, exit: &ExitInfo) {
    let path = config.container_dir.join("exit.json");
    match serde_json::to_vec(exit) {
        Ok(bytes) => {
            if let Err(e) = crate::state::files::write_atomic(&path, &bytes) {
                tracing::error!(id = %config.id, error = %e, "cannot write exit.json");
            }
        }
        Err(e) => tracing::error!(id = %config.id, error = %e, "cannot encode exit status"),
    }
}
