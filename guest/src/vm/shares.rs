//! The desktop's directories in the VM: virtio-fs shares mounted at the
//! same absolute path as on the desktop, so `-v "$PWD":/src` works as is.
//!
//! The host names each share on the kernel command line as
//! `vmctl.share=<tag>:<path>` (`vmctl_proto::control::CMDLINE_SHARE`): the
//! virtio-fs tag (`[A-Za-z0-9_-]`, at most 36 bytes) and the path with
//! bytes outside `[A-Za-z0-9/._~+@,-]` percent-encoded (`%20` for a space),
//! as `vmctl-vz`'s `config::encode_path` writes it. PID 1 mounts each one
//! (`virtiofs`, `nosuid,nodev`) after the data disk. A path that would
//! cover what the VM itself needs (`/`, `/proc`, `/sys`, `/dev`, `/run`,
//! `/tmp`, the engine's state) is refused. This module does not load the
//! `virtiofs` kernel module (the image's module list does) nor decide
//! which directories are shared (the host does).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, MsFlags};
use vmctl_proto::control::{CMDLINE_SHARE, DATA_MOUNT};

/// The longest virtio-fs tag.
const MAX_TAG: usize = 36;

/// Paths a share may not cover (nor sit under).
const RESERVED: [&str; 6] = ["/proc", "/sys", "/dev", "/run", "/tmp", DATA_MOUNT];

/// One share to mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub tag: String,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShareError {
    #[error("share {word:?} is not <tag>:<path>")]
    Form { word: String },
    #[error("share tag {tag:?} is not 1 to {MAX_TAG} bytes of [A-Za-z0-9_-]")]
    Tag { tag: String },
    #[error("share path {path:?} has a bad %-escape")]
    Escape { path: String },
    #[error("share path {path} is not absolute and normal")]
    Path { path: PathBuf },
    #[error("share path {path} would cover the VM's own {reserved}")]
    Reserved { path: PathBuf, reserved: String },
}

/// Every `vmctl.share=` word of `cmdline`, each parsed on its own.
pub fn parse(cmdline: &str) -> Vec<Result<Share, ShareError>> {
    let key = format!("{CMDLINE_SHARE}=");
    cmdline
        .split_whitespace()
        .filter_map(|word| word.strip_prefix(&key))
        .map(parse_one)
        .collect()
}

fn parse_one(value: &str) -> Result<Share, ShareError> {
    let (tag, encoded) = value.split_once(':').ok_or_else(|| ShareError::Form {
        word: value.to_owned(),
    })?;
    let tag_ok = !tag.is_empty()
        && tag.len() <= MAX_TAG
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !tag_ok {
        return Err(ShareError::Tag {
            tag: tag.to_owned(),
        });
    }
    let path = decode(encoded)?;
    check_path(&path)?;
    Ok(Share {
        tag: tag.to_owned(),
        path,
    })
}

/// Undoes the host's percent-encoding.
fn decode(encoded: &str) -> Result<PathBuf, ShareError> {
    let bad = || ShareError::Escape {
        path: encoded.to_owned(),
    };
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(PathBuf::from(OsString::from_vec(out)))
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
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        match mount(
            Some(share.tag.as_str()),
            &share.path,
            Some("virtiofs"),
            flags,
            None::<&str>,
        ) {
            Ok(()) => {
                tracing::info!(tag = share.tag, path = %share.path.display(), "share mounted");
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
                    vmctl.share=work:/Volumes/Big%20Disk/src%25x vmctl.shares=x:/y";
        assert_eq!(
            parse(line),
            vec![
                Ok(Share {
                    tag: "vmctl-home".into(),
                    path: "/Users/ann".into()
                }),
                Ok(Share {
                    tag: "work".into(),
                    path: "/Volumes/Big Disk/src%x".into()
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
        assert!(matches!(refused("no-colon"), ShareError::Form { .. }));
        assert!(matches!(refused(":/Users/ann"), ShareError::Tag { .. }));
        assert!(matches!(refused("a b:/x"), ShareError::Tag { .. }));
        let long = format!("{}:/x", "t".repeat(MAX_TAG + 1));
        assert!(matches!(refused(&long), ShareError::Tag { .. }));
        for escape in ["t:/x%", "t:/x%2", "t:/x%zz"] {
            assert!(
                matches!(refused(escape), ShareError::Escape { .. }),
                "{escape}"
            );
        }
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
