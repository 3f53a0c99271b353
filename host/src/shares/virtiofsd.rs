//! The virtio-fs server of a QEMU VM's share: one `virtiofsd` per share,
//! started before QEMU (which connects to its vhost-user socket at launch
//! and maps the VM's shared memfd memory through it), supervised, stopped
//! and adopted across daemon restarts like the vsock backend
//! ([`crate::vsock::vhost_user`]). It serves one VM connection and exits
//! when QEMU does.
//!
//! Which virtiofsd: the Rust one (crates.io `virtiofsd`, 1.11 or later; the
//! tests install 1.14), not the C one QEMU 7.2 still ships in
//! `/usr/lib/qemu/virtiofsd`. The C one was dropped from QEMU in 8.0, runs
//! as root only, and has no way to own what the guest creates by the
//! desktop user; the Rust one runs unprivileged (in a user namespace) and
//! translates ids itself (`--translate-uid`).
//!
//! How it runs:
//! - `--sandbox namespace`: pivoted into the share, in its own mount, PID
//!   and network namespaces (and a user namespace when not root), so no
//!   path the guest sends, `..` or symlink, reaches past the share's root.
//! - `--translate-uid/gid squash-guest:0:<uid>:<all>`: whatever uid or gid
//!   the guest creates or chowns with, the desktop's file belongs to the user
//!   who runs vmctl. Desktop owners are shown to the guest as they are.
//! - under `vmctl __share-guard` (Linux): the filter of
//!   [`super::seccomp`] (no set-id bits, no device nodes) and every symlink
//!   it makes judged by the guard (none may lead out of the share).
//! - no `--xattr`: no file capabilities (`security.capability`) either.
//! - `--readonly` for a read-only share (the guest also mounts it `ro`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::ShareDevice;
use crate::process::{self, Owned, ProcessError};

/// The hidden subcommand that runs virtiofsd under its guard.
pub const GUARD_COMMAND: &str = "__share-guard";

/// Environment variable naming the virtiofsd binary.
pub const VIRTIOFSD_ENV: &str = "VMCTL_VIRTIOFSD";
const PROGRAM: &str = "virtiofsd";

#[derive(Debug, thiserror::Error)]
pub enum VirtiofsdError {
    #[error("{PROGRAM} was not found, and the machine shares {path} (cargo install virtiofsd --locked, or set {VIRTIOFSD_ENV}; or `vmctl machine set --mount none`)")]
    NotInstalled { path: PathBuf },
    #[error("starting {PROGRAM} for {path}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: ProcessError,
    },
    #[error("{PROGRAM} for {path} did not open {socket} (see the daemon log)")]
    NoSocket { path: PathBuf, socket: PathBuf },
}

/// The command serving `share` as the user `uid`/`gid` (this process's
/// effective ids).
pub fn command(binary: &Path, share: &ShareDevice, uid: u32, gid: u32) -> Command {
    let mut command = Command::new(binary);
    command
        .arg("--shared-dir")
        .arg(&share.path)
        .arg("--socket-path")
        .arg(&share.socket)
        .args(["--sandbox", "namespace", "--cache", "auto"])
        .arg(format!("--translate-uid=squash-guest:0:{uid}:{}", u32::MAX))
        .arg(format!("--translate-gid=squash-guest:0:{gid}:{}", u32::MAX))
        .args(["--log-level", "warn"]);
    if uid != 0 {
        // Opening by file handle needs CAP_DAC_READ_SEARCH in the init
        // namespace; an unprivileged virtiofsd keeps O_PATH descriptors.
        command.arg("--inode-file-handles=never");
    }
    if share.read_only {
        command.arg("--readonly");
    }
    command
}

/// Starts `share`'s virtiofsd, logging to `log`; returns once its socket
/// is there for QEMU.
pub fn start(share: &ShareDevice, log: &Path) -> Result<Owned, VirtiofsdError> {
    let binary = crate::binaries::find(PROGRAM, VIRTIOFSD_ENV).ok_or_else(|| {
        VirtiofsdError::NotInstalled {
            path: share.path.clone(),
        }
    })?;
    let _ = std::fs::remove_file(&share.socket);
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let served = command(&binary, share, uid, gid);
    // Under its guard: the filter, and every symlink judged (guard.rs).
    let mut command = match std::env::current_exe() {
        Ok(vmctl) if cfg!(target_os = "linux") => {
            let mut guarded = Command::new(vmctl);
            guarded
                .arg(GUARD_COMMAND)
                .arg(&share.path)
                .arg("--")
                .arg(served.get_program())
                .args(served.get_args());
            guarded
        }
        _ => served,
    };
    private_socket(&mut command);
    let owned =
        Owned::spawn(command, log, &share.pid_file).map_err(|source| VirtiofsdError::Spawn {
            path: share.path.clone(),
            source,
        })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !share.socket.exists() {
        if owned.has_exited() || Instant::now() > deadline {
            owned.forget_pid_file();
            return Err(VirtiofsdError::NoSocket {
                path: share.path.clone(),
                socket: share.socket.clone(),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(owned)
}

/// Its socket is the desktop user's alone: whoever connects serves the VM
/// the share (virtiofsd takes one connection, QEMU's).
fn private_socket(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: umask is async-signal-safe and touches no memory.
    unsafe {
        command.pre_exec(|| {
            libc::umask(0o077);
            Ok(())
        });
    }
}

/// The virtiofsd an earlier daemon started for `share`, if it still runs.
pub fn adopt(share: &ShareDevice) -> Option<Owned> {
    let pid = process::find_recorded(&share.pid_file, &share.socket)?;
    Owned::adopt(pid, &share.pid_file).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_cannot_choose_the_desktop_owner() {
        let share = ShareDevice {
            tag: "vmctl-share-0".into(),
            path: "/home/ann/src".into(),
            read_only: true,
            socket: "/r/share-0.sock".into(),
            pid_file: "/r/share-0.pid".into(),
        };
        let args: Vec<String> = command(Path::new("virtiofsd"), &share, 1000, 100)
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        assert!(joined.contains("--shared-dir /home/ann/src --socket-path /r/share-0.sock"));
        assert!(joined.contains("--translate-uid=squash-guest:0:1000:4294967295"));
        assert!(joined.contains("--translate-gid=squash-guest:0:100:4294967295"));
        assert!(joined.contains("--sandbox namespace"));
        assert!(args.contains(&"--readonly".to_owned()));
        assert!(!joined.contains("xattr"), "no file capabilities: {joined}");
        let root = command(Path::new("virtiofsd"), &share, 0, 0);
        assert!(!root
            .get_args()
            .any(|a| a.to_string_lossy().contains("inode-file-handles")));
    }
}
