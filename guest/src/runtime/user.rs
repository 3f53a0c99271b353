//! Who a container's process runs as: `Config.User` resolved against the
//! image's own `/etc/passwd` and `/etc/group`, the way Docker does it.
//!
//! `User` is `""` (root), `name`, `uid`, `name:group`, `uid:gid` or any mix.
//! A name must exist in the container's passwd (group) file; a number needs
//! no entry. A matched user gets its primary group and home from passwd and,
//! when no group is given, supplementary groups from its memberships in the
//! group file. `HostConfig.GroupAdd` entries (names or numbers) are added.
//!
//! The files are read from inside the rootfs with `openat2(RESOLVE_IN_ROOT)`:
//! a symlinked `/etc/passwd` is followed as the container would see it and
//! can never lead out of the rootfs. On kernels without `openat2` (before
//! 5.6) the path is resolved by hand, one symlink at a time, kept inside the
//! rootfs the same way.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// The largest id Docker accepts.
const MAX_ID: u64 = i32::MAX as u64;

/// The most symlinks followed while resolving one path by hand.
const MAX_SYMLINKS: usize = 40;

/// A resolved `Config.User`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: memberships, then `GroupAdd`, without repeats.
    pub additional_gids: Vec<u32>,
    /// The home directory from passwd (`/` when there is no entry), for `HOME`.
    pub home: String,
}

/// Errors of user resolution. The messages are Docker's.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoSuchUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    NoSuchGroup(String),
    #[error("Unable to find group {0}: no matching entries in group file")]
    NoSuchAddedGroup(String),
    #[error("uids and gids must be in range 0-{MAX_ID}")]
    Range,
    #[error("cannot read {} in the container's rootfs", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl UserError {
    /// Whether the error is the user's input (as opposed to an io failure).
    pub fn is_invalid_input(&self) -> bool {
        !matches!(self, Self::Read { .. })
    }
}

/// One passwd entry.
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

/// One group entry.
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).map_or(String::new(), |h| h.to_string()),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// A numeric id, checked against Docker's range; `None` when not a number.
fn numeric(arg: &str) -> Option<Result<u32, UserError>> {
    let n: u64 = arg.parse().ok()?;
    Some(if n > MAX_ID {
        Err(UserError::Range)
    } else {
        Ok(n as u32)
    })
}

/// Resolves `spec` (`Config.User`) and `group_add` against the files of
/// the rootfs at `rootfs`.
pub fn resolve(rootfs: &Path, spec: &str, group_add: &[String]) -> Result<ResolvedUser, UserError> {
    let passwd = read_in_root(rootfs, "etc/passwd")?.unwrap_or_default();
    let group = read_in_root(rootfs, "etc/group")?.unwrap_or_default();
    resolve_with(&passwd, &group, spec, group_add)
}

/// [`resolve`] on the text of the passwd and group files.
fn resolve_with(
    passwd: &str,
    group: &str,
    spec: &str,
    group_add: &[String],
) -> Result<ResolvedUser, UserError> {
    let (user_arg, group_arg) = spec.split_once(':').unwrap_or((spec, ""));
    let users = parse_passwd(passwd);
    let groups = parse_group(group);
    let mut out = ResolvedUser {
        uid: 0,
        gid: 0,
        additional_gids: Vec::new(),
        home: "/".into(),
    };

    let uid_arg = numeric(user_arg).transpose()?;
    let matched = users.iter().find(|u| match (user_arg, uid_arg) {
        ("", _) => u.uid == 0,
        (_, Some(uid)) => u.uid == uid,
        (name, None) => u.name == name,
    });
    match (matched, uid_arg) {
        (Some(entry), _) => {
            out.uid = entry.uid;
            out.gid = entry.gid;
            out.home = entry.home.clone();
        }
        (None, Some(uid)) => out.uid = uid,
        (None, None) if user_arg.is_empty() => {}
        (None, None) => return Err(UserError::NoSuchUser(user_arg.into())),
    }

    if !group_arg.is_empty() {
        let gid_arg = numeric(group_arg).transpose()?;
        let found = groups.iter().find(|g| match gid_arg {
            Some(gid) => g.gid == gid,
            None => g.name == group_arg,
        });
        out.gid = match (found, gid_arg) {
            (Some(entry), _) => entry.gid,
            (None, Some(gid)) => gid,
            (None, None) => return Err(UserError::NoSuchGroup(group_arg.into())),
        };
    } else if let Some(entry) = matched {
        // Memberships count only when the group is implicit, as in Docker.
        out.additional_gids = groups
            .iter()
            .filter(|g| g.members.contains(&entry.name))
            .map(|g| g.gid)
            .collect();
    }

    for added in group_add {
        let gid = match groups.iter().find(|g| g.name == *added) {
            Some(entry) => entry.gid,
            None => match numeric(added) {
                Some(gid) => gid?,
                None => return Err(UserError::NoSuchAddedGroup(added.clone())),
            },
        };
        if !out.additional_gids.contains(&gid) {
            out.additional_gids.push(gid);
        }
    }
    Ok(out)
}

/// The text of `relative` inside `rootfs`, resolved as if `rootfs` were
/// `/`; `None` when it does not exist.
pub fn read_in_root(rootfs: &Path, relative: &str) -> Result<Option<String>, UserError> {
    let shown = rootfs.join(relative);
    let err = |source| UserError::Read {
        path: shown.clone(),
        source,
    };
    let root = File::open(rootfs).map_err(err)?;
    let file = match open_in_root(&root, relative) {
        Ok(file) => Ok(file),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            match resolve_by_hand(rootfs, Path::new(relative)) {
                Ok(path) => File::open(path),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    let mut file = match file {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e)),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(err)?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// `struct open_how` of `openat2(2)`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `RESOLVE_IN_ROOT` and `RESOLVE_NO_MAGICLINKS` of `openat2(2)`.
const RESOLVE_IN_ROOT: u64 = 0x10;
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;

/// Opens `relative` below the directory `root` with `openat2`, every
/// symlink resolved inside `root`.
fn open_in_root(root: &File, relative: &str) -> io::Result<File> {
    let path = CString::new(relative).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `path` is a NUL-terminated string and `how` a valid open_how
    // that both outlive the call; the size passed is the struct's own size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else
    // owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    Ok(File::from(fd))
}

/// Resolves `relative` inside `rootfs` by hand (for kernels without
/// `openat2`): `..` stops at the rootfs, absolute symlink targets start over
/// at the rootfs. Returns the host path of the result.
fn resolve_by_hand(rootfs: &Path, relative: &Path) -> io::Result<PathBuf> {
    let mut done = PathBuf::new();
    let mut todo: Vec<std::ffi::OsString> = components(relative);
    todo.reverse();
    let mut links = 0;
    while let Some(part) = todo.pop() {
        if part.as_bytes() == b".." {
            done.pop();
            continue;
        }
        let candidate = done.join(&part);
        let host = rootfs.join(&candidate);
        match std::fs::symlink_metadata(&host) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = std::fs::read_link(&host)?;
                if target.is_absolute() {
                    done = PathBuf::new();
                }
                let mut more = components(&target);
                more.reverse();
                todo.extend(more);
            }
            Ok(_) => done = candidate,
            Err(e) if e.kind() == io::ErrorKind::NotFound => done = candidate,
            Err(e) => return Err(e),
        }
    }
    Ok(rootfs.join(done))
}

/// The normal and `..` components of a path; `/` and `.` dropped.
fn components(path: &Path) -> Vec<std::ffi::OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        # comment\n\
        app:x:1000:1000:App:/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\n\
        daemon:x:1:\n\
        wheel:x:10:app,other\n\
        audio:x:29:app\n\
        app:x:1000:\n\
        docker:x:999:\n";

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn resolve_text(spec: &str, add: &[&str]) -> Result<ResolvedUser, UserError> {
        resolve_with(PASSWD, GROUP, spec, &strings(add))
    }

    #[test]
    fn empty_user_is_root() {
        let user = resolve_text("", &[]).unwrap();
        assert_eq!((user.uid, user.gid, user.home.as_str()), (0, 0, "/root"));
        let user = resolve_with("", "", "", &[]).unwrap();
        assert_eq!((user.uid, user.gid, user.home.as_str()), (0, 0, "/"));
    }

    #[test]
    fn name_gives_ids_home_and_memberships() {
        let user = resolve_text("app", &[]).unwrap();
        assert_eq!((user.uid, user.gid), (1000, 1000));
        assert_eq!(user.home, "/home/app");
        assert_eq!(user.additional_gids, vec![10, 29]);
    }

    #[test]
    fn numeric_user_matches_entry_or_stands_alone() {
        let user = resolve_text("1000", &[]).unwrap();
        assert_eq!((user.uid, user.gid), (1000, 1000));
        let user = resolve_text("4242", &[]).unwrap();
        assert_eq!((user.uid, user.gid, user.home.as_str()), (4242, 0, "/"));
        assert!(user.additional_gids.is_empty());
    }

    #[test]
    fn explicit_group_replaces_memberships() {
        let user = resolve_text("app:docker", &[]).unwrap();
        assert_eq!((user.uid, user.gid), (1000, 999));
        assert!(user.additional_gids.is_empty());
        let user = resolve_text("4242:4343", &[]).unwrap();
        assert_eq!((user.uid, user.gid), (4242, 4343));
        let user = resolve_text("daemon:0", &[]).unwrap();
        assert_eq!((user.uid, user.gid), (1, 0));
    }

    #[test]
    fn group_add_by_name_or_number() {
        let user = resolve_text("app", &["docker", "5000", "audio"]).unwrap();
        assert_eq!(user.additional_gids, vec![10, 29, 999, 5000]);
    }

    #[test]
    fn unknown_names_fail_with_dockers_messages() {
        let err = resolve_text("nobody", &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to find user nobody: no matching entries in passwd file"
        );
        assert!(err.is_invalid_input());
        let err = resolve_text("app:nogroup", &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to find group nogroup: no matching entries in group file"
        );
        assert!(resolve_text("app", &["nogroup"]).is_err());
        let err = resolve_text("4294967296", &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "uids and gids must be in range 0-2147483647"
        );
    }

    fn rootfs_with_link(target: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        std::fs::create_dir_all(rootfs.join("data")).unwrap();
        std::fs::write(rootfs.join("data/passwd"), "inside:x:7:7::/in:/bin/sh\n").unwrap();
        std::fs::write(dir.path().join("passwd"), "outside:x:9:9::/out:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink(target, rootfs.join("etc/passwd")).unwrap();
        dir
    }

    #[test]
    fn symlinks_resolve_inside_the_rootfs() {
        // An absolute link means the container's /data/passwd, and a link
        // climbing out with .. stops at the rootfs.
        for target in ["/data/passwd", "../../../data/passwd", "../../passwd"] {
            let dir = rootfs_with_link(target);
            let rootfs = dir.path().join("rootfs");
            let text = read_in_root(&rootfs, "etc/passwd").unwrap();
            if target == "../../passwd" {
                assert_eq!(text, None, "{target} must not reach the host file");
            } else {
                assert!(text.unwrap().starts_with("inside:"), "{target}");
            }
            let by_hand = resolve_by_hand(&rootfs, Path::new("etc/passwd")).unwrap();
            assert!(by_hand.starts_with(&rootfs), "{target}: {by_hand:?}");
        }
        let dir = rootfs_with_link("/data/passwd");
        let user = resolve(&dir.path().join("rootfs"), "inside", &[]).unwrap();
        assert_eq!((user.uid, user.gid, user.home.as_str()), (7, 7, "/in"));
    }

    #[test]
    fn missing_files_allow_numeric_ids_only() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_in_root(dir.path(), "etc/passwd").unwrap(), None);
        let user = resolve(dir.path(), "33:44", &[]).unwrap();
        assert_eq!((user.uid, user.gid), (33, 44));
        assert!(resolve(dir.path(), "www-data", &[]).is_err());
    }
}
