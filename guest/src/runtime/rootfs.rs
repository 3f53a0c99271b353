//! The container's root filesystem: an overlayfs of the image layers (read
//! only) under a per-container upper dir, and the executable lookup inside it
//! before anything starts (so a missing program gives Docker's message).

use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Errors of preparing or releasing a rootfs.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("cannot create {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot mount overlay at {}", target.display())]
    Mount {
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("overlay options for {} exceed one page ({len} bytes): too many layers", target.display())]
    OptionsTooLong { target: PathBuf, len: usize },
    #[error("cannot unmount {}", target.display())]
    Unmount {
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("exec: \"{0}\": executable file not found in $PATH")]
    NotInPath(String),
    #[error("exec: \"{0}\": stat {0}: no such file or directory")]
    NoSuchFile(String),
    #[error("exec: \"{0}\": permission denied")]
    NotExecutable(String),
    #[error("no command specified")]
    NoCommand,
}

/// Mounts `lower` (lowest first) + `upper` at `target`.
pub fn mount_overlay(
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), RootfsError> {
    for dir in [upper, work, target] {
        std::fs::create_dir_all(dir).map_err(|source| RootfsError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
    }
    // An image without layers still needs one lower dir.
    let empty = work.with_file_name("empty");
    let lowers: Vec<String> = if lower.is_empty() {
        std::fs::create_dir_all(&empty).map_err(|source| RootfsError::CreateDir {
            path: empty.clone(),
            source,
        })?;
        vec![empty.display().to_string()]
    } else {
        // overlayfs lists the top-most layer first.
        lower
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect()
    };
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        upper.display(),
        work.display()
    );
    mount_overlayfs(&options, target, MsFlags::empty())
}

/// Mounts overlayfs with `options` at `target`.
fn mount_overlayfs(options: &str, target: &Path, flags: MsFlags) -> Result<(), RootfsError> {
    if options.len() >= 4096 {
        return Err(RootfsError::OptionsTooLong {
            target: target.to_owned(),
            len: options.len(),
        });
    }
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        flags,
        Some(options),
    )
    .map_err(|source| RootfsError::Mount {
        target: target.to_owned(),
        source,
    })
}

/// Mounts `lower` (lowest first, at least two: overlayfs wants two
/// without an upper directory) read-only at `target`: a view of a layer
/// stack nothing writes to.
pub fn mount_overlay_readonly(lower: &[PathBuf], target: &Path) -> Result<(), RootfsError> {
    std::fs::create_dir_all(target).map_err(|source| RootfsError::CreateDir {
        path: target.to_owned(),
        source,
    })?;
    let lowers: Vec<String> = lower
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let options = format!("lowerdir={}", lowers.join(":"));
    mount_overlayfs(&options, target, MsFlags::MS_RDONLY)
}

/// Unmounts `target` (lazily, so a stray open file cannot keep it busy);
/// not mounted is fine.
pub fn unmount(target: &Path) -> Result<(), RootfsError> {
    match umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => Ok(()),
        Err(source) => Err(RootfsError::Unmount {
            target: target.to_owned(),
            source,
        }),
    }
}

/// Resolves `path` (absolute, as seen in the container) inside `root`,
/// following symlinks as the container would, never leaving `root`.
pub fn resolve_in_root(root: &Path, path: &str) -> PathBuf {
    let mut resolved = PathBuf::from("/");
    let mut pending: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .rev()
        .map(str::to_owned)
        .collect();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "." => continue,
            ".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let candidate = resolved.join(&part);
        let host = root.join(candidate.strip_prefix("/").unwrap_or(&candidate));
        match std::fs::read_link(&host) {
            Ok(target) if hops < 40 => {
                hops += 1;
                let target = target.to_string_lossy().into_owned();
                if target.starts_with('/') {
                    resolved = PathBuf::from("/");
                }
                pending.extend(
                    target
                        .split('/')
                        .filter(|s| !s.is_empty())
                        .rev()
                        .map(str::to_owned),
                );
            }
            _ => resolved = candidate,
        }
    }
    let relative: PathBuf = resolved
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    root.join(relative)
}

fn is_executable(path: &Path) -> Option<bool> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// A bind mount of the container: `destination` inside shows `source` on the host.
#[derive(Debug, Clone)]
pub struct Bind {
    pub destination: PathBuf,
    pub source: PathBuf,
}

/// The host path of `path` (absolute, in the container): through the bind
/// mounted deepest over it (so a bind-mounted program is found, as runc finds
/// it after mounting), else inside the rootfs.
fn locate(root: &Path, binds: &[Bind], path: &str) -> PathBuf {
    let in_root = resolve_in_root(root, path);
    let inside = Path::new("/").join(in_root.strip_prefix(root).unwrap_or(&in_root));
    binds
        .iter()
        .filter(|b| inside.starts_with(&b.destination))
        .max_by_key(|b| b.destination.components().count())
        .map_or(in_root.clone(), |b| {
            // Joining an empty rest would add a trailing slash, which a file refuses.
            match inside.strip_prefix(&b.destination) {
                Ok(rest) if !rest.as_os_str().is_empty() => b.source.join(rest),
                _ => b.source.clone(),
            }
        })
}

/// Checks that `args[0]` exists in the rootfs (or in a bind over it) and is
/// executable, using the container's `PATH` for a bare name, with Docker's
/// error messages.
pub fn check_executable(
    root: &Path,
    binds: &[Bind],
    args: &[String],
    env: &[String],
) -> Result<(), RootfsError> {
    let program = args.first().ok_or(RootfsError::NoCommand)?;
    if program.is_empty() {
        return Err(RootfsError::NoCommand);
    }
    if program.contains('/') {
        let absolute = if program.starts_with('/') {
            program.clone()
        } else {
            format!("/{program}")
        };
        return match is_executable(&locate(root, binds, &absolute)) {
            Some(true) => Ok(()),
            Some(false) => Err(RootfsError::NotExecutable(program.clone())),
            None => Err(RootfsError::NoSuchFile(program.clone())),
        };
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let mut found_not_executable = false;
    for dir in path.split(':').filter(|d| d.starts_with('/')) {
        match is_executable(&locate(root, binds, &format!("{dir}/{program}"))) {
            Some(true) => return Ok(()),
            Some(false) => found_not_executable = true,
            None => {}
        }
    }
    if found_not_executable {
        Err(RootfsError::NotExecutable(program.clone()))
    } else {
        Err(RootfsError::NotInPath(program.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("busybox"), b"#!").unwrap();
        std::fs::set_permissions(bin.join("busybox"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        symlink("/bin/busybox", bin.join("sh")).unwrap();
        std::fs::write(bin.join("data"), b"x").unwrap();
        symlink("../../../../etc", dir.path().join("escape")).unwrap();
        dir
    }

    #[test]
    fn finds_programs_through_absolute_symlinks() {
        let root = rootfs();
        let env = vec!["PATH=/bin".to_owned()];
        check_executable(root.path(), &[], &["sh".into()], &env).unwrap();
        check_executable(root.path(), &[], &["/bin/sh".into()], &env).unwrap();
    }

    #[test]
    fn docker_messages_for_missing_programs() {
        let root = rootfs();
        let env = vec!["PATH=/bin".to_owned()];
        let err = check_executable(root.path(), &[], &["nope".into()], &env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "exec: \"nope\": executable file not found in $PATH"
        );
        let err = check_executable(root.path(), &[], &["/bin/nope".into()], &env).unwrap_err();
        assert!(err.to_string().contains("no such file or directory"));
        let err = check_executable(root.path(), &[], &["/bin/data".into()], &env).unwrap_err();
        assert!(err.to_string().contains("permission denied"));
    }

    #[test]
    fn programs_in_binds_are_found() {
        let root = rootfs();
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("probe"), b"#!").unwrap();
        std::fs::set_permissions(
            host.path().join("probe"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let env = vec!["PATH=/bin:/tools".to_owned()];
        let binds = [
            Bind {
                destination: "/probe".into(),
                source: host.path().join("probe"),
            },
            Bind {
                destination: "/tools".into(),
                source: host.path().to_owned(),
            },
        ];
        check_executable(root.path(), &binds, &["/probe".into()], &env).unwrap();
        check_executable(root.path(), &binds, &["probe".into()], &env).unwrap();
        check_executable(root.path(), &[], &["/probe".into()], &env).unwrap_err();
    }

    #[test]
    fn symlinks_never_leave_the_root() {
        let root = rootfs();
        let resolved = resolve_in_root(root.path(), "/escape/passwd");
        assert_eq!(resolved, root.path().join("etc/passwd"));
    }
}
