//! Which bind sources the engine accepts ([`BindPolicy`]).
//!
//! Standalone, Docker's plain semantics: any absolute path of the host.
//! In the VM a bind names a *desktop* path (`-v "$PWD":/src`): it must lie in
//! one of the machine's shares, which the VM mounts at the same paths, or be
//! one of the few VM paths containers are expected to bind ([`VM_PATHS`]).
//! Anything else would silently bind an empty directory of the VM, so it is
//! refused with one line naming the shares. The check is on the path with
//! its symlinks resolved as far as it exists, so a symlink inside a share
//! (which a container may have planted) cannot lead a bind elsewhere.

use std::path::{Path, PathBuf};

use super::VolumeError;

/// VM paths a container may bind in the VM, with what is under them: the
/// engine's socket (`-v /var/run/docker.sock:/var/run/docker.sock` reaches
/// this VM's engine, as with Docker Desktop) and the kernel's own views.
pub const VM_PATHS: [&str; 5] = [
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/proc",
    "/sys",
    "/dev",
];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum BindPolicy {
    /// Any absolute path (a standalone engine: Docker's rule).
    #[default]
    Any,
    /// Only paths in these shares or in [`VM_PATHS`] (the engine in the VM).
    Shares(Vec<PathBuf>),
}

impl BindPolicy {
    /// Whether `source` may be bound; refused with one line otherwise.
    pub fn check(&self, source: &str) -> Result<(), VolumeError> {
        let BindPolicy::Shares(shares) = self else {
            return Ok(());
        };
        // The VM's own paths as named (no container writes under them: the
        // socket is a symlink of the VM's); a share's as resolved.
        let named = PathBuf::from(super::resolve::clean(source));
        let resolved = resolve_existing(&named);
        if VM_PATHS.iter().any(|vm| named.starts_with(vm))
            || shares.iter().any(|share| resolved.starts_with(share))
        {
            return Ok(());
        }
        Err(VolumeError::NotShared {
            path: PathBuf::from(source),
            shares: if shares.is_empty() {
                "none".to_owned()
            } else {
                shares
                    .iter()
                    .map(|s| s.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        })
    }
}

/// A normal `path` with the symlinks of its longest existing ancestor
/// resolved and the rest appended.
fn resolve_existing(normal: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut existing = normal;
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            let mut out = real;
            out.extend(rest.iter().rev());
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return normal.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standalone_binds_anything() {
        assert!(BindPolicy::Any.check("/etc").is_ok());
    }

    #[test]
    fn in_the_vm_only_shares_and_vm_paths() {
        let dir = tempfile::tempdir().unwrap();
        let share = std::fs::canonicalize(dir.path()).unwrap().join("share");
        std::fs::create_dir(&share).unwrap();
        let policy = BindPolicy::Shares(vec![share.clone()]);
        let inside = share.join("src");
        assert!(policy.check(inside.to_str().unwrap()).is_ok());
        assert!(policy.check(share.to_str().unwrap()).is_ok());
        assert!(policy.check("/var/run/docker.sock").is_ok());
        assert!(policy.check("/run/./docker.sock").is_ok());
        assert!(policy.check("/sys/fs/cgroup").is_ok());
        for outside in ["/etc", "/var/lib", "/", "/devx"] {
            let refused = policy.check(outside).unwrap_err();
            let line = refused.to_string();
            assert!(line.contains(outside) && line.contains(share.to_str().unwrap()));
            assert!(!line.contains('\n'));
        }
        // `..` and symlinks out of a share are judged where they lead.
        let escape = format!("{}/../../etc", share.display());
        assert!(policy.check(&escape).is_err());
        std::os::unix::fs::symlink("/etc", share.join("etc-link")).unwrap();
        let linked = share.join("etc-link/ssl");
        assert!(policy.check(linked.to_str().unwrap()).is_err());
        // A sibling whose name starts like the share is not in it.
        let sibling = format!("{}x/y", share.display());
        assert!(policy.check(&sibling).is_err());
        assert!(BindPolicy::Shares(vec![])
            .check("/home/u")
            .unwrap_err()
            .to_string()
            .contains("none"));
    }
}
