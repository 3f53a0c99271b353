//! A container's cgroup as the engine sees it from outside: where its
//! directories are, what it has used (for `docker stats`), and changing its
//! limits while it runs (for `docker update`).
//!
//! libcontainer creates and deletes the cgroup in the monitor; this module
//! only reads the counters and rewrites limit files, which is plain file I/O
//! and safe from the engine's threads.
//!
//! Primer: on cgroup v2 one directory holds every controller's files
//! (`cpu.stat`, `memory.current`, `io.stat`, `pids.current`); on v1 each
//! controller is its own mount (`/sys/fs/cgroup/memory`, `…/cpuacct`), found
//! in `/proc/self/mountinfo`, and the container has a directory in each. A
//! hybrid machine (v1 controllers plus an empty cgroup2 at
//! `/sys/fs/cgroup/unified`) is v1, as libcontainer sees it.
//!
//! Every path starts at a root passed in, so the tests read and write fixture
//! trees in a tempdir.

pub mod v1;
pub mod v2;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Errors of reading or writing cgroup files.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {value:?} to {}", path.display())]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unexpected content in {}: {line:?}", path.display())]
    Format { path: PathBuf, line: String },
    #[error("the {0} controller is not available")]
    NoController(&'static str),
}

/// Where the cgroup hierarchies of this machine are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// cgroup v2: the mount point of the unified hierarchy.
    V2(PathBuf),
    /// cgroup v1: each controller's mount point.
    V1(BTreeMap<String, PathBuf>),
}

impl Hierarchy {
    /// This machine's hierarchy, from `/proc/self/mountinfo`.
    pub fn detect() -> Self {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Self::from_mountinfo(&mountinfo)
    }

    /// The hierarchy a mount table describes: v2 when a cgroup2 file system
    /// is mounted at `/sys/fs/cgroup`, else the v1 controllers' mounts.
    pub fn from_mountinfo(mountinfo: &str) -> Self {
        let mut controllers = BTreeMap::new();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount_point) = left.split_whitespace().nth(4) else {
                continue;
            };
            let mut right = right.split_whitespace();
            let (fstype, options) = (right.next(), right.nth(1).unwrap_or_default());
            match fstype {
                Some("cgroup2") if mount_point == "/sys/fs/cgroup" => {
                    return Self::V2(PathBuf::from(mount_point));
                }
                Some("cgroup") => {
                    for option in options.split(',') {
                        if v1::CONTROLLERS.contains(&option) {
                            controllers.insert(option.to_owned(), PathBuf::from(mount_point));
                        }
                    }
                }
                _ => {}
            }
        }
        if controllers.is_empty() {
            // Nothing mounted that we know: assume the VM's layout.
            return Self::V2(PathBuf::from("/sys/fs/cgroup"));
        }
        Self::V1(controllers)
    }

    /// The cgroup at `path` (as in the OCI spec: `/parent/id`).
    pub fn cgroup(&self, path: &str) -> Cgroup {
        let relative = path.trim_start_matches('/');
        match self {
            Self::V2(root) => Cgroup::V2(root.join(relative)),
            Self::V1(mounts) => Cgroup::V1(
                mounts
                    .iter()
                    .map(|(name, root)| (name.clone(), root.join(relative)))
                    .collect(),
            ),
        }
    }
}

impl Hierarchy {
    /// Whether block I/O weights can be set: v1 with a proportional I/O
    /// scheduler (`blkio.weight` at the root), v2 with the `io` controller.
    pub fn has_blkio_weight(&self) -> bool {
        match self {
            Self::V2(root) => std::fs::read_to_string(root.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "io")),
            Self::V1(mounts) => v1::weight_file(mounts).is_some(),
        }
    }

    /// Whether real-time CPU time can be given (v1 with `CONFIG_RT_GROUP_SCHED`).
    pub fn has_cpu_realtime(&self) -> bool {
        match self {
            Self::V2(_) => false,
            Self::V1(mounts) => mounts
                .get("cpu")
                .is_some_and(|d| d.join("cpu.rt_period_us").exists()),
        }
    }
}

/// One cgroup's directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    V2(PathBuf),
    /// Controller name to the cgroup's directory in that controller's mount.
    V1(BTreeMap<String, PathBuf>),
}

impl Cgroup {
    /// What the cgroup has used so far; a controller that is absent or whose
    /// files cannot be read is left out.
    pub fn sample(&self) -> Sample {
        match self {
            Self::V2(dir) => v2::sample(dir),
            Self::V1(dirs) => v1::sample(dirs),
        }
    }

    /// Writes `limits`, all or nothing: on the first failed write the files
    /// already written get their old content back.
    pub fn apply(&self, limits: &Limits) -> Result<(), CgroupError> {
        let writes = match self {
            Self::V2(dir) => v2::writes(dir, limits)?,
            Self::V1(dirs) => v1::writes(dirs, limits)?,
        };
        write_all(&writes)
    }
}

/// What a cgroup has used, in the kernel's units converted to bytes and
/// nanoseconds; each part `None` when its controller is not there.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub cpu: Option<Cpu>,
    pub memory: Option<Memory>,
    pub pids: Option<Pids>,
    pub io: Option<Io>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cpu {
    pub total_ns: u64,
    pub user_ns: u64,
    pub system_ns: u64,
    /// Per CPU, v1 only.
    pub percpu_ns: Vec<u64>,
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_ns: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    pub usage: u64,
    /// The high-water mark, v1 only.
    pub max_usage: Option<u64>,
    /// v1 `memory.failcnt`, v2 the `oom` count of `memory.events`.
    pub failcnt: u64,
    /// The limit; `u64::MAX` or the kernel's huge v1 value when unlimited.
    pub limit: u64,
    /// `memory.stat`, every key.
    pub stat: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pids {
    pub current: u64,
    /// 0 when unlimited.
    pub limit: u64,
}

/// Block I/O counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Io {
    /// v1: each `blkio.*` file read, by Docker's name for it
    /// (`io_service_bytes_recursive`, …).
    V1(BTreeMap<&'static str, Vec<BlkioEntry>>),
    /// v2: the lines of `io.stat`.
    V2(Vec<IoStat>),
}

/// One line of a v1 `blkio.*` file: `MAJOR:MINOR Op value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlkioEntry {
    pub major: u64,
    pub minor: u64,
    pub op: String,
    pub value: u64,
}

/// One device of v2 `io.stat`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoStat {
    pub major: u64,
    pub minor: u64,
    pub rbytes: u64,
    pub wbytes: u64,
    pub rios: u64,
    pub wios: u64,
}

/// Limits to change; `None` leaves a limit as it is. Values are Docker's
/// (`HostConfig`), converted per version by the backends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// The memory limit in bytes; -1 for none.
    pub memory: Option<i64>,
    /// Memory plus swap in bytes (Docker's `MemorySwap`); -1 for no limit.
    pub memory_swap: Option<i64>,
    /// The soft limit in bytes.
    pub memory_reservation: Option<i64>,
    pub cpu_shares: Option<u64>,
    /// CFS quota and period in µs; quota -1 for none.
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpu_rt_period: Option<u64>,
    pub cpu_rt_runtime: Option<i64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    /// The most tasks; 0 or -1 for none.
    pub pids: Option<i64>,
    /// Docker's 10–1000 block I/O weight.
    pub blkio_weight: Option<u16>,
}

/// One file to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Write {
    pub path: PathBuf,
    pub value: String,
}

impl Write {
    pub fn new(dir: &Path, file: &str, value: impl Into<String>) -> Self {
        Self {
            path: dir.join(file),
            value: value.into(),
        }
    }
}

/// Writes each file in order; on a failure, puts back what the written ones
/// held, last first, and reports the failure.
fn write_all(writes: &[Write]) -> Result<(), CgroupError> {
    let mut done: Vec<(PathBuf, String)> = Vec::new();
    for write in writes {
        let old = std::fs::read_to_string(&write.path).map_err(|source| CgroupError::Read {
            path: write.path.clone(),
            source,
        });
        let result = old.and_then(|old| {
            std::fs::write(&write.path, &write.value)
                .map(|()| old)
                .map_err(|source| CgroupError::Write {
                    path: write.path.clone(),
                    value: write.value.clone(),
                    source,
                })
        });
        match result {
            Ok(old) => done.push((write.path.clone(), old)),
            Err(e) => {
                for (path, old) in done.iter().rev() {
                    if let Err(undo) = std::fs::write(path, old.trim_end()) {
                        tracing::warn!(path = %path.display(), error = %undo, "cannot restore a cgroup limit");
                    }
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Reads a file whose content is one number (or `max`, read as `None`).
pub(crate) fn read_number(path: &Path) -> Result<Option<u64>, CgroupError> {
    let text = read(path)?;
    let text = text.trim();
    if text == "max" {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| CgroupError::Format {
        path: path.to_owned(),
        line: text.to_owned(),
    })
}

pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Parses `key value` lines (`memory.stat`, `cpu.stat`, `memory.events`);
/// lines that are not a key and a number are skipped.
pub(crate) fn flat_keyed(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let key = parts.next()?;
            let value = parts.next()?.parse().ok()?;
            Some((key.to_owned(), value))
        })
        .collect()
}

/// Parses `MAJOR:MINOR`.
pub(crate) fn device(text: &str) -> Option<(u64, u64)> {
    let (major, minor) = text.split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_machines_are_v1_with_comounted_controllers() {
        let Hierarchy::V1(mounts) = Hierarchy::from_mountinfo(HYBRID) else {
            panic!("not v1");
        };
        assert_eq!(mounts["cpu"], Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(mounts["cpuacct"], Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(mounts["memory"], Path::new("/sys/fs/cgroup/memory"));
        assert!(!mounts.contains_key("name=systemd"));
        let Cgroup::V1(dirs) = Hierarchy::V1(mounts).cgroup("/vmctl/c1") else {
            panic!("not v1");
        };
        assert_eq!(dirs["pids"], Path::new("/sys/fs/cgroup/pids/vmctl/c1"));
    }

    #[test]
    fn unified_machines_are_v2() {
        let info = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let hierarchy = Hierarchy::from_mountinfo(info);
        assert_eq!(hierarchy, Hierarchy::V2(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(
            hierarchy.cgroup("/vmctl/c1"),
            Cgroup::V2(PathBuf::from("/sys/fs/cgroup/vmctl/c1"))
        );
    }

    #[test]
    fn a_failed_write_restores_the_files_written_before_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "1\n").unwrap();
        std::fs::write(dir.path().join("b"), "2\n").unwrap();
        // A directory cannot be written as a file.
        std::fs::create_dir(dir.path().join("c")).unwrap();
        let writes = [
            Write::new(dir.path(), "a", "10"),
            Write::new(dir.path(), "b", "20"),
            Write::new(dir.path(), "c", "30"),
        ];
        assert!(write_all(&writes).is_err());
        assert_eq!(std::fs::read_to_string(dir.path().join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(dir.path().join("b")).unwrap(), "2");
        write_all(&writes[..2]).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("b")).unwrap(), "20");
    }
}
