//! The desktop's directories in the VM: virtio-fs shares mounted at the
//! same absolute path as on the desktop, so `-v "$PWD":/src` works as is.
//!
//! The host names each share on the kernel command line as
//! `vmctl.share=<tag>:<path>[:ro]` (the format is `vmctl_proto::share`'s).
//! PID 1 mounts each one (`virtiofs`, `nosuid,nodev`, read-only when
//! marked) after the data disk; the engine takes the same list as its bind
//! policy ([`from_cmdline`]). A path that would
//! cover what the VM itself needs (`/`, `/proc`, `/sys`, `/dev`, `/run`,
//! `/tmp`, the engine's state) is refused. This module does not load the
//! `virtiofs` kernel module (the image's module list does) nor decide
//! which directories are shared (the host does).

use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, MsFlags};
use vmctl_proto::control::DATA_MOUNT;
use vmctl_proto::share::{ShareWord, ShareWordError};

/// Paths a share may not cover (nor sit under).
const RESERVED: [&str; 6] = ["/proc", "/sys", "/dev", "/run", "/tmp", DATA_MOUNT];

/// One share to mount.
pub type Share = ShareWord;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShareError {
    #[error(transparent)]
    Word(#[from] ShareWordError),
    #[error("share path {path} is not absolute and normal")]
    Path { path: PathBuf },
    #[error("share path {path} would cover the VM's own {reserved}")]
    Reserved { path: PathBuf, reserved: String },
}

/// Every `vmctl.share=` word of `cmdline`, each parsed and checked on its own.
pub fn parse(cmdline: &str) -> Vec<Result<Share, ShareError>> {
    vmctl_proto::share::parse_all(cmdline)
        .into_iter()
        .map(|word| {
            let share = word?;
            check_path(&share.path)?;
            Ok(share)
        })
        .collect()
}

/// The shares of this VM's command line that pass the checks (what
/// [`mount_all`] mounts): the engine's bind policy.
pub fn from_cmdline() -> Vec<Share> {
    parse(&super::cmdline::read())
        .into_iter()
        .filter_map(Result::ok)
        .collect()
}

#[cfg(test)]
fn parse_one(value: &str) -> Result<Share, ShareError> {
    let share = ShareWord::parse(value)?;
    check_path(&share.path)?;
    Ok(share)
}

/// Absolute, no `.`/`..`, not `/`, nothing the VM needs for itself.
fn check_path(path: &Path) -> Result<(), ShareError> {
    let normal = path.is_absolute()
        && path.components().count() > 1
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && !path.as_os_str().as_encoded_bytes().contains(&0);
    if !normal {
        return Err(ShareError::Path {
            path: path.to_owned(),
        });
    }
    match RESERVED.iter().find(|reserved| path.starts_with(reserved)) {
        Some(reserved) => Err(ShareError::Reserved {
            path: path.to_owned(),
            reserved: (*reserved).to_owned(),
        }),
        None => Ok(()),
    }
}

/// Mounts every share of `cmdline`; each failure is logged with its tag
/// and path, and the boot goes on without that share. Returns how many
/// were mounted.
pub fn mount_all(cmdline: &str) -> usize {
    let mut mounted = 0;
    for share in parse(cmdline) {
        let share = match share {
            Ok(share) => share,
            Err(e) => {
                tracing::error!(error = %e, "share refused");
                continue;
            }
        };
        if let Err(e) = std::fs::create_dir_all(&share.path) {
            tracing::error!(tag = share.tag, path = %share.path.display(), error = %e, "cannot make the share's mount point");
            continue;
        }
        let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        if share.read_only {
            flags |= MsFlags::MS_RDONLY;
        }
        match mount(
            Some(share.tag.as_str()),
            &share.path,
            Some("virtiofs"),
            flags,
            None::<&str>,
        ) {
            Ok(()) => {
                tracing::info!(tag = share.tag, path = %share.path.display(), read_only = share.read_only, "share mounted");
                mounted += 1;
            }
            Err(e) => {
                tracing::error!(tag = share.tag, path = %share.path.display(), error = %e, "cannot mount the share")
            }
        }
    }
    mounted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_come_from_the_command_line() {
        let line = "console=hvc0 vmctl.share=vmctl-home:/Users/ann quiet \
                    vmctl.share=work:/Volumes/Big%20Disk/src%25x:ro vmctl.shares=x:/y";
        assert_eq!(
            parse(line),
            vec![
                Ok(Share {
                    tag: "vmctl-home".into(),
                    path: "/Users/ann".into(),
                    read_only: false,
                }),
                Ok(Share {
                    tag: "work".into(),
                    path: "/Volumes/Big Disk/src%x".into(),
                    read_only: true,
                }),
            ]
        );
        assert!(parse("console=ttyS0 quiet").is_empty());
        // Bytes that are not UTF-8 survive.
        let odd = parse_one("t:/home/caf%E9").unwrap();
        assert_eq!(odd.path.as_os_str().as_encoded_bytes(), b"/home/caf\xe9");
    }

    #[test]
    fn bad_shares_are_refused_one_by_one() {
        let refused = |value: &str| parse_one(value).unwrap_err();
        assert!(matches!(refused("no-colon"), ShareError::Word(_)));
        assert!(matches!(refused(":/Users/ann"), ShareError::Word(_)));
        for path in ["t:relative", "t:/", "t:/a/../proc", "t:/a%00b"] {
            assert!(matches!(refused(path), ShareError::Path { .. }), "{path}");
        }
        for path in ["t:/proc", "t:/dev/shm", "t:/var/lib/vmctl/x", "t:/run"] {
            assert!(
                matches!(refused(path), ShareError::Reserved { .. }),
                "{path}"
            );
        }
        assert!(parse_one("t:/var/lib/other").is_ok());
        let mixed = parse("vmctl.share=bad vmctl.share=ok:/home/u");
        assert!(
            mixed[0].is_err() && mixed[1].is_ok(),
            "one bad share spoils no other"
        );
    }
}
