//! Paths and file status as dockerd's archive endpoints see them: the
//! lexical rules of Go's `filepath` (clean, split, base, and
//! `PreserveTrailingDotOrSeparator`), and `os.FileMode` bits for the
//! `X-Docker-Container-Path-Stat` header, from which the CLI decides
//! whether a path is a directory, a link or a file.
//!
//! Everything here is pure: no file is touched.

use serde::{Deserialize, Serialize};

/// Go's `os.FileMode` type bits (`io/fs`), as they appear in the stat header.
pub mod mode {
    pub const DIR: u32 = 1 << 31;
    pub const SYMLINK: u32 = 1 << 27;
    pub const DEVICE: u32 = 1 << 26;
    pub const NAMED_PIPE: u32 = 1 << 25;
    pub const SOCKET: u32 = 1 << 24;
    pub const SETUID: u32 = 1 << 23;
    pub const SETGID: u32 = 1 << 22;
    pub const CHAR_DEVICE: u32 = 1 << 21;
    pub const STICKY: u32 = 1 << 20;
}

/// `types.ContainerPathStat`: what `HEAD /containers/{id}/archive` answers,
/// base64 of this JSON in `X-Docker-Container-Path-Stat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathStat {
    pub name: String,
    pub size: i64,
    pub mode: u32,
    pub mtime: String,
    #[serde(rename = "linkTarget")]
    pub link_target: String,
}

impl PathStat {
    /// The header's value: base64 of the JSON document.
    pub fn header_value(&self) -> String {
        use base64::Engine as _;
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::STANDARD.encode(json)
    }
}

/// Go's `os.FileMode` of a Unix `st_mode`: the permission bits, the type
/// as one of Go's type bits, setuid, setgid and sticky as Go's own bits.
pub fn go_file_mode(st_mode: u32) -> u32 {
    let mut mode = st_mode & 0o777;
    mode |= match st_mode & libc::S_IFMT {
        libc::S_IFDIR => mode::DIR,
        libc::S_IFLNK => mode::SYMLINK,
        libc::S_IFBLK => mode::DEVICE,
        libc::S_IFCHR => mode::DEVICE | mode::CHAR_DEVICE,
        libc::S_IFIFO => mode::NAMED_PIPE,
        libc::S_IFSOCK => mode::SOCKET,
        _ => 0,
    };
    if st_mode & libc::S_ISUID != 0 {
        mode |= mode::SETUID;
    }
    if st_mode & libc::S_ISGID != 0 {
        mode |= mode::SETGID;
    }
    if st_mode & libc::S_ISVTX != 0 {
        mode |= mode::STICKY;
    }
    mode
}

/// A time as Go's `time.Time` marshals to JSON in UTC: RFC 3339 with the
/// fraction's trailing zeros dropped (`…:00Z` for whole seconds).
pub fn go_time(secs: i64, nanos: i64) -> String {
    let time = chrono::DateTime::from_timestamp(secs, nanos.clamp(0, 999_999_999) as u32)
        .unwrap_or_default();
    let mut text = time.format("%Y-%m-%dT%H:%M:%S").to_string();
    if nanos > 0 {
        let fraction = format!("{:09}", nanos.min(999_999_999));
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push('Z');
    text
}

/// Go's `filepath.Clean` of a slash path: no `.`, `..` resolved lexically
/// (kept at the start of a relative path, dropped at `/`), single slashes,
/// no trailing slash; `.` for an empty result.
pub fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            part => parts.push(part),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// Go's `filepath.Base`: the last element, trailing slashes ignored; `/`
/// for the root, `.` for an empty path.
pub fn base(path: &str) -> &str {
    if path.is_empty() {
        return ".";
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/";
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed)
}

/// Go's `filepath.Split`: everything up to and including the last slash,
/// and the rest.
pub fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => ("", path),
    }
}

/// The path a request names, as an absolute path in the container: `path`
/// joined to `/` and cleaned, with a trailing `/.` or `/` of the original
/// kept (dockerd's `PreserveTrailingDotOrSeparator`), because they mean
/// "the directory's contents" and "follow the last link" to the CLI.
pub fn absolute(path: &str) -> String {
    let mut cleaned = clean(&format!("/{path}"));
    let names_current_dir = |p: &str| base(p) == ".";
    if !names_current_dir(&cleaned) && names_current_dir(path) {
        if !cleaned.ends_with('/') {
            cleaned.push('/');
        }
        cleaned.push('.');
    }
    if !cleaned.ends_with('/') && path.ends_with('/') {
        cleaned.push('/');
    }
    cleaned
}

/// Whether `path` (absolute, clean) is `destination` or below it (the
/// volume layer's `HasResource`).
pub fn is_within(path: &str, destination: &str) -> bool {
    let destination = destination.trim_end_matches('/');
    destination.is_empty()
        || path == destination
        || path
            .strip_prefix(destination)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The name a tar entry of the walk gets: `top` for the walked path itself
/// (with a slash for a directory), `top/relative` below it. A `top` of
/// `/` (the root was asked for) gives `/bin`, as dockerd's rebase does.
pub fn entry_name(top: &str, relative: &str, dir: bool) -> String {
    let mut name = if relative.is_empty() {
        top.to_owned()
    } else {
        format!("{}/{relative}", top.trim_end_matches('/'))
    };
    if dir && !name.ends_with('/') {
        name.push('/');
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_file_modes_match_dockerd() {
        // Numbers from dockerd 20.10's headers: a 0755 directory, a
        // symlink, a 0644 file.
        assert_eq!(go_file_mode(libc::S_IFDIR | 0o755), 2147484141);
        assert_eq!(go_file_mode(libc::S_IFLNK | 0o777), 134218239);
        assert_eq!(go_file_mode(libc::S_IFREG | 0o644), 420);
        assert_eq!(
            go_file_mode(libc::S_IFREG | libc::S_ISUID | 0o750),
            mode::SETUID | 0o750
        );
        assert_eq!(
            go_file_mode(libc::S_IFCHR | 0o666),
            mode::DEVICE | mode::CHAR_DEVICE | 0o666
        );
        assert_eq!(
            go_file_mode(libc::S_IFDIR | libc::S_ISVTX | 0o777),
            mode::DIR | mode::STICKY | 0o777
        );
        assert_eq!(
            go_file_mode(libc::S_IFIFO | 0o600),
            mode::NAMED_PIPE | 0o600
        );
    }

    #[test]
    fn stat_header_is_base64_json_in_dockerds_order() {
        let stat = PathStat {
            name: "passwd".into(),
            size: 82,
            mode: 420,
            mtime: go_time(0, 0),
            link_target: String::new(),
        };
        // dockerd 20.10's header for the same file.
        assert_eq!(
            stat.header_value(),
            "eyJuYW1lIjoicGFzc3dkIiwic2l6ZSI6ODIsIm1vZGUiOjQyMCwibXRpbWUiOiIxOTcwLTAxLTAxVDAwOjAwOjAwWiIsImxpbmtUYXJnZXQiOiIifQ=="
        );
    }

    #[test]
    fn times_drop_trailing_zeros_like_go() {
        assert_eq!(go_time(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            go_time(1_796_478_159, 554_438_415),
            "2026-12-05T13:42:39.554438415Z"
        );
        assert_eq!(
            go_time(1_796_478_159, 500_000_000),
            "2026-12-05T13:42:39.5Z"
        );
    }

    #[test]
    fn paths_keep_a_trailing_dot_or_slash() {
        assert_eq!(absolute("/etc/passwd"), "/etc/passwd");
        assert_eq!(absolute("etc/passwd"), "/etc/passwd");
        assert_eq!(absolute("/etc/"), "/etc/");
        assert_eq!(absolute("/etc/."), "/etc/.");
        assert_eq!(absolute("/etc/./"), "/etc/./");
        assert_eq!(absolute("/"), "/");
        assert_eq!(absolute("."), "/.");
        assert_eq!(absolute("/a/../../b/"), "/b/");
        assert_eq!(absolute("//x//y"), "/x/y");
    }

    #[test]
    fn split_and_base_follow_go() {
        assert_eq!(split("/etc/passwd"), ("/etc/", "passwd"));
        assert_eq!(split("/etc/"), ("/etc/", ""));
        assert_eq!(split("/etc/."), ("/etc/", "."));
        assert_eq!(base("/etc/."), ".");
        assert_eq!(base("/etc/"), "etc");
        assert_eq!(base("/"), "/");
        assert_eq!(base("x"), "x");
    }

    #[test]
    fn clean_keeps_leading_dotdot_of_relative_paths() {
        assert_eq!(clean("../../escape"), "../../escape");
        assert_eq!(clean("a/../../x"), "../x");
        assert_eq!(clean("./a//b/."), "a/b");
        assert_eq!(clean("/../a"), "/a");
        assert_eq!(clean(""), ".");
        assert_eq!(clean("./"), ".");
    }

    #[test]
    fn resources_within_mounts() {
        assert!(is_within("/data", "/data"));
        assert!(is_within("/data/x", "/data/"));
        assert!(!is_within("/database", "/data"));
        assert!(is_within("/anything", "/"));
    }

    #[test]
    fn entry_names_rebase_on_the_top() {
        assert_eq!(entry_name("d", "", true), "d/");
        assert_eq!(entry_name("d", "sub/b", false), "d/sub/b");
        assert_eq!(entry_name(".", "a", false), "./a");
        assert_eq!(entry_name("/", "", true), "/");
        assert_eq!(entry_name("/", "bin", true), "/bin/");
        assert_eq!(entry_name("hostname", "", false), "hostname");
    }
}
