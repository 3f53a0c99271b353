//! The desktop's directories in the VM: a machine's shares (`vmctl machine
//! init|set --mount PATH[:ro]`, kept in its `config.json`), each mounted by
//! the guest at the same absolute path so `-v "$PWD":/src` works unchanged.
//!
//! Defaults: the user's home read-write, and on macOS also `/private/tmp`
//! and `/var/folders` (where temporary directories live), as Docker Desktop
//! shares them. A share must be an existing directory, not `/` nor over a
//! path the VM needs for itself, and not inside another share.
//!
//! How a share reaches the guest is the backend's: Virtualization.framework
//! has its own virtio-fs device; QEMU gets one `vhost-user-fs-pci` device
//! per share, served by a `virtiofsd` the daemon starts ([`virtiofsd`]).
//! Either way the guest learns the list from the kernel command line
//! (`vmctl_proto::share`) and mounts it at boot; its engine refuses binds
//! outside it.

#[cfg(target_os = "linux")]
pub mod guard;
#[cfg(target_os = "linux")]
pub mod seccomp;
#[cfg(unix)]
pub mod virtiofsd;

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use vmctl_proto::share::ShareWord;

use crate::machine::MachinePaths;

/// The most shares a machine takes (each is a PCI device and a process).
pub const MAX_SHARES: usize = 16;

/// Paths of the VM's own that a share may neither be nor lie under (the
/// guest refuses them too: `guest/src/vm/shares.rs`).
const VM_PATHS: [&str; 6] = ["/proc", "/sys", "/dev", "/run", "/tmp", "/var/lib/vmctl"];

/// One shared directory, as the machine's config keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// The desktop directory, absolute; the guest mounts it at the same path.
    pub path: PathBuf,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

impl std::fmt::Display for Mount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.read_only {
            f.write_str(" (read-only)")?;
        }
        Ok(())
    }
}

/// The list in one line (`/home/ann, /srv/data (read-only)`, or `none`).
pub fn describe(mounts: &[Mount]) -> String {
    if mounts.is_empty() {
        return "none".into();
    }
    mounts
        .iter()
        .map(Mount::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The shares a machine gets when none are given.
pub fn default_mounts() -> Vec<Mount> {
    let mut mounts: Vec<Mount> = directories::BaseDirs::new()
        .map(|dirs| dirs.home_dir().to_owned())
        .filter(|home| check_one(home).is_ok())
        .map(|path| Mount {
            path,
            read_only: false,
        })
        .into_iter()
        .collect();
    if cfg!(target_os = "macos") {
        for path in ["/private/tmp", "/var/folders"] {
            mounts.push(Mount {
                path: path.into(),
                read_only: false,
            });
        }
    }
    mounts
}

/// Parses one `--mount` value: `PATH`, `PATH:ro` or `PATH:rw`; `none` is
/// the empty list (`None` here). The path is made absolute and its symlinks
/// resolved, so it names the directory the desktop really shares.
pub fn parse_flag(text: &str) -> Result<Option<Mount>, String> {
    if text == "none" {
        return Ok(None);
    }
    let (path, read_only) = match text.rsplit_once(':') {
        Some((path, "ro")) => (path, true),
        Some((path, "rw")) => (path, false),
        _ => (text, false),
    };
    if path.is_empty() {
        return Err(format!("--mount {text}: give a directory, PATH[:ro]"));
    }
    let path = std::path::absolute(path).map_err(|e| format!("--mount {text}: {e}"))?;
    let real = std::fs::canonicalize(&path)
        .map_err(|e| format!("--mount {text}: {}: {e}", path.display()))?;
    if !real.is_dir() {
        return Err(format!(
            "--mount {text}: {} is not a directory",
            real.display()
        ));
    }
    check_one(&real).map_err(|why| format!("--mount {text}: {why}"))?;
    Ok(Some(Mount {
        path: real,
        read_only,
    }))
}

/// The `--mount` values as the machine's new list (`none` alone: no shares).
pub fn parse_flags(values: &[String]) -> Result<Vec<Mount>, String> {
    let mut mounts = Vec::new();
    for value in values {
        match parse_flag(value)? {
            Some(mount) => mounts.push(mount),
            None if values.len() == 1 => {}
            None => return Err("--mount none means no shares: give it alone".into()),
        }
    }
    check_list(&mounts)?;
    Ok(mounts)
}

/// Absolute, normal, not `/`, clear of the VM's own paths.
fn check_one(path: &Path) -> Result<(), String> {
    let normal = path.is_absolute()
        && path.components().count() > 1
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !normal {
        return Err(format!(
            "{} is not an absolute path below /",
            path.display()
        ));
    }
    if let Some(vm) = VM_PATHS.iter().find(|vm| path.starts_with(vm)) {
        return Err(format!(
            "{} would cover the VM's own {vm}; share another directory",
            path.display()
        ));
    }
    Ok(())
}

/// No share twice nor inside another; at most [`MAX_SHARES`].
pub fn check_list(mounts: &[Mount]) -> Result<(), String> {
    if mounts.len() > MAX_SHARES {
        return Err(format!(
            "{} shares: a machine takes at most {MAX_SHARES}",
            mounts.len()
        ));
    }
    for (i, a) in mounts.iter().enumerate() {
        for b in &mounts[i + 1..] {
            if a.path.starts_with(&b.path) || b.path.starts_with(&a.path) {
                return Err(format!(
                    "--mount {} and {} overlap: share one or the other",
                    a.path.display(),
                    b.path.display()
                ));
            }
        }
    }
    Ok(())
}

/// One share of a VM being started: the device the backend gives the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareDevice {
    /// The virtio-fs tag (`vmctl-share-N`).
    pub tag: String,
    pub path: PathBuf,
    pub read_only: bool,
    /// QEMU: the vhost-user socket its virtiofsd listens on.
    pub socket: PathBuf,
    /// QEMU: its virtiofsd's pid file.
    pub pid_file: PathBuf,
}

impl ShareDevice {
    /// What the guest is told: `vmctl.share=<tag>:<path>[:ro]`.
    pub fn word(&self) -> String {
        ShareWord {
            tag: self.tag.clone(),
            path: self.path.clone(),
            read_only: self.read_only,
        }
        .word()
    }
}

/// The devices of `mounts`, with their files under the machine's run
/// directory.
pub fn devices(mounts: &[Mount], paths: &MachinePaths) -> Vec<ShareDevice> {
    mounts
        .iter()
        .enumerate()
        .map(|(i, mount)| ShareDevice {
            tag: format!("vmctl-share-{i}"),
            path: mount.path.clone(),
            read_only: mount.read_only,
            socket: paths.share_socket(i),
            pid_file: paths.share_pid(i),
        })
        .collect()
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn mount(path: &str) -> Mount {
        Mount {
            path: path.into(),
            read_only: false,
        }
    }

    #[test]
    fn flags_name_existing_directories_resolved() {
        // Not under /tmp, which is the VM's own.
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        let link = real.join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let given = format!("{}:ro", link.display());
        assert_eq!(
            parse_flag(&given).unwrap(),
            Some(Mount {
                path: real.clone(),
                read_only: true
            })
        );
        assert_eq!(parse_flag("none").unwrap(), None);
        let file = real.join("f");
        std::fs::write(&file, b"").unwrap();
        for bad in [
            file.display().to_string(),
            real.join("missing").display().to_string(),
            "/".into(),
            "/proc".into(),
            "/var/lib/vmctl".into(),
            ":ro".into(),
        ] {
            let refused = parse_flag(&bad);
            assert!(refused.is_err(), "{bad} was taken");
            assert!(!refused.unwrap_err().contains('\n'), "one line");
        }
    }

    #[test]
    fn lists_refuse_overlaps_and_none_among_others() {
        assert!(check_list(&[mount("/a/b"), mount("/a/bc")]).is_ok());
        assert!(check_list(&[mount("/a"), mount("/a/b")]).is_err());
        assert!(check_list(&[mount("/a/b"), mount("/a")]).is_err());
        assert!(check_list(&[mount("/a"), mount("/a")]).is_err());
        let many: Vec<Mount> = (0..=MAX_SHARES).map(|i| mount(&format!("/s{i}"))).collect();
        assert!(check_list(&many).is_err());
        assert_eq!(parse_flags(&["none".into()]).unwrap(), vec![]);
        assert!(parse_flags(&["none".into(), "/tmp".into()]).is_err());
    }

    #[test]
    fn devices_are_tagged_in_order_and_named_to_the_guest() {
        let roots = crate::machine::Roots {
            data: "/d".into(),
            run: "/r".into(),
        };
        let paths = roots.machine("m");
        let mounts = vec![
            mount("/home/ann"),
            Mount {
                path: "/srv/my data".into(),
                read_only: true,
            },
        ];
        let devices = devices(&mounts, &paths);
        assert_eq!(devices[0].tag, "vmctl-share-0");
        assert_eq!(
            devices[1].word(),
            "vmctl.share=vmctl-share-1:/srv/my%20data:ro"
        );
        assert_ne!(devices[0].socket, devices[1].socket);
    }
}
