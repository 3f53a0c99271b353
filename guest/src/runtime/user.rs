//! Who a container's process runs as: `Config.User` resolved against the
//! image's own `/etc/passwd` and `/etc/group`, the way Docker does it.
//!
//! `User` is `""` (root), `name`, `uid`, `name:group`, `uid:gid` or any mix.
//! A name must exist in the container's passwd (group) file; a number needs
//! no entry. A matched user gets its primary group and home from passwd and,
//! when no group is given, supplementary groups from its memberships in the
//! group file. `HostConfig.GroupAdd` entries (names or numbers) are added.
//!
//! The files are read through [`super::in_root`]: resolved inside the
//! rootfs (a symlink can never lead out of it), only when they are regular
//! files, at most [`in_root::MAX_FILE`] bytes. A FIFO or a device node
//! there is an error, never a hang or an endless read.

use std::path::{Path, PathBuf};

use super::in_root;

/// The largest id Docker accepts.
const MAX_ID: u64 = i32::MAX as u64;

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
    #[error("cannot read {} of the container", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: in_root::InRootError,
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
/// `/` (see [`super::in_root`]); `None` when it does not exist.
pub fn read_in_root(rootfs: &Path, relative: &str) -> Result<Option<String>, UserError> {
    let bytes =
        in_root::read(rootfs, relative, in_root::MAX_FILE).map_err(|source| UserError::Read {
            path: Path::new("/").join(relative),
            source,
        })?;
    Ok(bytes.map(|b| String::from_utf8_lossy(&b).into_owned()))
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

    #[test]
    fn symlinked_passwd_resolves_inside_the_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::write(
            dir.path().join("data/passwd"),
            "inside:x:7:7::/in:/bin/sh\n",
        )
        .unwrap();
        std::os::unix::fs::symlink("../../../data/passwd", dir.path().join("etc/passwd")).unwrap();
        let user = resolve(dir.path(), "inside", &[]).unwrap();
        assert_eq!((user.uid, user.gid, user.home.as_str()), (7, 7, "/in"));
    }

    #[test]
    fn a_fifo_group_file_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), "app:x:7:7::/in:/bin/sh\n").unwrap();
        nix::unistd::mkfifo(
            &dir.path().join("etc/group"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let err = resolve(dir.path(), "app", &[]).unwrap_err();
        assert!(!err.is_invalid_input());
        assert!(
            crate::state::error_chain(&err).contains("not a regular file"),
            "{err:?}"
        );
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
