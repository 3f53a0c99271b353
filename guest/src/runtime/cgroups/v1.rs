//! cgroup v1: a directory per controller.
//!
//! Counters: `cpuacct.usage` and `cpuacct.usage_percpu` (ns),
//! `cpuacct.stat` (`user`/`system` in USER_HZ ticks), `cpu.stat`
//! (`throttled_time` in ns), `memory.{usage,max_usage,limit}_in_bytes`,
//! `memory.failcnt`, `memory.stat`, `pids.current`, `pids.max`, and the
//! `blkio.*` files: the CFQ `*_recursive` set where the scheduler keeps it,
//! else the throttle counters (as containerd reads them for dockerd).
//! Limits: `memory.limit_in_bytes`, `memory.memsw.limit_in_bytes` (memory
//! plus swap, as Docker counts), `memory.soft_limit_in_bytes`, `cpu.shares`,
//! `cpu.cfs_{quota,period}_us`, `cpu.rt_{period,runtime}_us`,
//! `cpuset.{cpus,mems}`, `pids.max`, `blkio.weight` or `blkio.bfq.weight`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{
    device, flat_keyed, read, read_number, BlkioEntry, CgroupError, Cpu, Io, Limits, Memory, Pids,
    Sample, Write,
};

/// The controllers whose mounts matter here.
pub const CONTROLLERS: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "freezer", "devices",
];

/// USER_HZ: the unit of `cpuacct.stat`.
const TICKS_PER_SECOND: u64 = 100;

/// The CFQ files, by Docker's name for them, read when
/// `blkio.io_serviced_recursive` exists.
const CFQ_FILES: &[(&str, &str)] = &[
    ("sectors_recursive", "blkio.sectors_recursive"),
    (
        "io_service_bytes_recursive",
        "blkio.io_service_bytes_recursive",
    ),
    ("io_serviced_recursive", "blkio.io_serviced_recursive"),
    ("io_queue_recursive", "blkio.io_queued_recursive"),
    (
        "io_service_time_recursive",
        "blkio.io_service_time_recursive",
    ),
    ("io_wait_time_recursive", "blkio.io_wait_time_recursive"),
    ("io_merged_recursive", "blkio.io_merged_recursive"),
    ("io_time_recursive", "blkio.time_recursive"),
];

/// The throttle counters, the fallback.
const THROTTLE_FILES: &[(&str, &str)] = &[
    ("io_serviced_recursive", "blkio.throttle.io_serviced"),
    (
        "io_service_bytes_recursive",
        "blkio.throttle.io_service_bytes",
    ),
];

type Dirs = BTreeMap<String, PathBuf>;

fn dir<'a>(dirs: &'a Dirs, controller: &'static str) -> Result<&'a Path, CgroupError> {
    dirs.get(controller)
        .map(PathBuf::as_path)
        .ok_or(CgroupError::NoController(controller))
}

pub(super) fn sample(dirs: &Dirs) -> Sample {
    Sample {
        cpu: cpu(dirs).ok(),
        memory: memory(dirs).ok(),
        pids: pids(dirs).ok(),
        io: io(dirs).ok(),
    }
}

fn cpu(dirs: &Dirs) -> Result<Cpu, CgroupError> {
    let acct = dir(dirs, "cpuacct")?;
    let total_ns = read_number(&acct.join("cpuacct.usage"))?.unwrap_or(0);
    let percpu_ns = read(&acct.join("cpuacct.usage_percpu"))?
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    let stat = flat_keyed(&read(&acct.join("cpuacct.stat"))?);
    let ticks = |key: &str| {
        stat.get(key)
            .copied()
            .unwrap_or(0)
            .saturating_mul(1_000_000_000)
            / TICKS_PER_SECOND
    };
    let throttling = dir(dirs, "cpu")
        .and_then(|cpu| read(&cpu.join("cpu.stat")))
        .map(|text| flat_keyed(&text))
        .unwrap_or_default();
    let throttled = |key: &str| throttling.get(key).copied().unwrap_or(0);
    Ok(Cpu {
        total_ns,
        user_ns: ticks("user"),
        system_ns: ticks("system"),
        percpu_ns,
        periods: throttled("nr_periods"),
        throttled_periods: throttled("nr_throttled"),
        throttled_ns: throttled("throttled_time"),
    })
}

fn memory(dirs: &Dirs) -> Result<Memory, CgroupError> {
    let dir = dir(dirs, "memory")?;
    let number = |file: &str| read_number(&dir.join(file)).map(|n| n.unwrap_or(0));
    Ok(Memory {
        usage: number("memory.usage_in_bytes")?,
        max_usage: Some(number("memory.max_usage_in_bytes")?),
        failcnt: number("memory.failcnt")?,
        limit: number("memory.limit_in_bytes")?,
        stat: flat_keyed(&read(&dir.join("memory.stat"))?),
    })
}

fn pids(dirs: &Dirs) -> Result<Pids, CgroupError> {
    let dir = dir(dirs, "pids")?;
    Ok(Pids {
        current: read_number(&dir.join("pids.current"))?.unwrap_or(0),
        limit: read_number(&dir.join("pids.max"))?.unwrap_or(0),
    })
}

fn io(dirs: &Dirs) -> Result<Io, CgroupError> {
    let dir = dir(dirs, "blkio")?;
    let read_set = |files: &[(&'static str, &str)]| -> Result<_, CgroupError> {
        let mut out = BTreeMap::new();
        for (name, file) in files {
            out.insert(*name, blkio_entries(&dir.join(file))?);
        }
        Ok(out)
    };
    if dir.join("blkio.io_serviced_recursive").exists() {
        let cfq = read_set(CFQ_FILES)?;
        if cfq.values().any(|entries| !entries.is_empty()) {
            return Ok(Io::V1(cfq));
        }
    }
    // No CFQ for this cgroup's devices: the throttle counters.
    read_set(THROTTLE_FILES).map(Io::V1)
}

/// Parses `MAJ:MIN Op value` lines (`MAJ:MIN value` for the files without an
/// operation), skipping the `Total` line.
fn blkio_entries(path: &Path) -> Result<Vec<BlkioEntry>, CgroupError> {
    let text = read(path)?;
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let bad = || CgroupError::Format {
            path: path.to_owned(),
            line: line.to_owned(),
        };
        let (dev, op, value) = match fields.as_slice() {
            [] | ["Total", _] => continue,
            [dev, op, value] => (*dev, *op, *value),
            [dev, value] => (*dev, "", *value),
            _ => return Err(bad()),
        };
        let (major, minor) = device(dev).ok_or_else(bad)?;
        out.push(BlkioEntry {
            major,
            minor,
            op: op.to_owned(),
            value: value.parse().map_err(|_| bad())?,
        });
    }
    Ok(out)
}

/// The weight file the kernel offers, if any.
pub(super) fn weight_file(dirs: &Dirs) -> Option<PathBuf> {
    let dir = dirs.get("blkio")?;
    ["blkio.weight", "blkio.bfq.weight"]
        .into_iter()
        .map(|f| dir.join(f))
        .find(|p| p.exists())
}

fn unlimited_as_minus_one(value: i64) -> String {
    if value <= 0 {
        "-1".to_owned()
    } else {
        value.to_string()
    }
}

/// The files to write for `limits`, in an order the kernel accepts.
pub(super) fn writes(dirs: &Dirs, limits: &Limits) -> Result<Vec<Write>, CgroupError> {
    let mut out = Vec::new();
    if limits.memory.is_some()
        || limits.memory_swap.is_some()
        || limits.memory_reservation.is_some()
    {
        memory_writes(dir(dirs, "memory")?, limits, &mut out);
    }
    if limits.cpu_shares.is_some()
        || limits.cpu_quota.is_some()
        || limits.cpu_period.is_some()
        || limits.cpu_rt_period.is_some()
        || limits.cpu_rt_runtime.is_some()
    {
        let cpu = dir(dirs, "cpu")?;
        if let Some(shares) = limits.cpu_shares {
            out.push(Write::new(cpu, "cpu.shares", shares.to_string()));
        }
        if let Some(period) = limits.cpu_period {
            out.push(Write::new(cpu, "cpu.cfs_period_us", period.to_string()));
        }
        if let Some(quota) = limits.cpu_quota {
            out.push(Write::new(
                cpu,
                "cpu.cfs_quota_us",
                unlimited_as_minus_one(quota),
            ));
        }
        if let Some(period) = limits.cpu_rt_period {
            out.push(Write::new(cpu, "cpu.rt_period_us", period.to_string()));
        }
        if let Some(runtime) = limits.cpu_rt_runtime {
            out.push(Write::new(cpu, "cpu.rt_runtime_us", runtime.to_string()));
        }
    }
    if limits.cpuset_cpus.is_some() || limits.cpuset_mems.is_some() {
        let cpuset = dir(dirs, "cpuset")?;
        if let Some(cpus) = &limits.cpuset_cpus {
            out.push(Write::new(cpuset, "cpuset.cpus", cpus.clone()));
        }
        if let Some(mems) = &limits.cpuset_mems {
            out.push(Write::new(cpuset, "cpuset.mems", mems.clone()));
        }
    }
    if let Some(pids) = limits.pids {
        let value = if pids > 0 {
            pids.to_string()
        } else {
            "max".to_owned()
        };
        out.push(Write::new(dir(dirs, "pids")?, "pids.max", value));
    }
    if let Some(weight) = limits.blkio_weight {
        let path = weight_file(dirs).ok_or(CgroupError::NoController("blkio weight"))?;
        out.push(Write {
            path,
            value: weight.to_string(),
        });
    }
    Ok(out)
}

/// Memory, then memory plus swap, or the other way round when the new total
/// is above the current memory limit (the kernel keeps memsw >= memory at
/// every step).
fn memory_writes(dir: &Path, limits: &Limits, out: &mut Vec<Write>) {
    let memory = limits
        .memory
        .map(|m| Write::new(dir, "memory.limit_in_bytes", unlimited_as_minus_one(m)));
    let swap = limits
        .memory_swap
        .filter(|_| dir.join("memory.memsw.limit_in_bytes").exists())
        .map(|s| {
            Write::new(
                dir,
                "memory.memsw.limit_in_bytes",
                unlimited_as_minus_one(s),
            )
        });
    let current = read_number(&dir.join("memory.limit_in_bytes"))
        .ok()
        .flatten()
        .unwrap_or(u64::MAX);
    let swap_first = limits
        .memory_swap
        .is_some_and(|s| s < 0 || u64::try_from(s).is_ok_and(|s| current < s));
    if swap_first {
        out.extend(swap);
        out.extend(memory);
    } else {
        out.extend(memory);
        out.extend(swap);
    }
    if let Some(reservation) = limits.memory_reservation {
        out.push(Write::new(
            dir,
            "memory.soft_limit_in_bytes",
            unlimited_as_minus_one(reservation),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v1 tree with cpu and cpuacct co-mounted, as many distributions do.
    fn fixture() -> (tempfile::TempDir, Dirs) {
        let root = tempfile::tempdir().unwrap();
        let mut dirs = Dirs::new();
        let files: &[(&str, &str, &str)] = &[
            ("cpu,cpuacct", "cpuacct.usage", "3000000000\n"),
            ("cpu,cpuacct", "cpuacct.usage_percpu", "1000000000 2000000000 \n"),
            ("cpu,cpuacct", "cpuacct.stat", "user 150\nsystem 50\n"),
            (
                "cpu,cpuacct",
                "cpu.stat",
                "nr_periods 10\nnr_throttled 4\nthrottled_time 123456\n",
            ),
            ("cpu,cpuacct", "cpu.shares", "1024\n"),
            ("cpu,cpuacct", "cpu.cfs_quota_us", "-1\n"),
            ("cpu,cpuacct", "cpu.cfs_period_us", "100000\n"),
            ("memory", "memory.usage_in_bytes", "2097152\n"),
            ("memory", "memory.max_usage_in_bytes", "4194304\n"),
            ("memory", "memory.failcnt", "5\n"),
            ("memory", "memory.limit_in_bytes", "9223372036854771712\n"),
            ("memory", "memory.memsw.limit_in_bytes", "9223372036854771712\n"),
            ("memory", "memory.soft_limit_in_bytes", "9223372036854771712\n"),
            (
                "memory",
                "memory.stat",
                "cache 8192\nrss 4096\ntotal_inactive_file 4096\nhierarchical_memory_limit 9223372036854771712\n",
            ),
            ("pids", "pids.current", "2\n"),
            ("pids", "pids.max", "max\n"),
            (
                "blkio",
                "blkio.throttle.io_service_bytes",
                "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Async 12288\n8:0 Discard 0\n8:0 Total 12288\nTotal 12288\n",
            ),
            (
                "blkio",
                "blkio.throttle.io_serviced",
                "8:0 Read 1\n8:0 Write 2\nTotal 3\n",
            ),
            ("blkio", "blkio.weight", "500\n"),
        ];
        for (mount, file, content) in files {
            let dir = root.path().join(mount).join("vmctl/c1");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(file), content).unwrap();
        }
        for (controller, mount) in [
            ("cpu", "cpu,cpuacct"),
            ("cpuacct", "cpu,cpuacct"),
            ("memory", "memory"),
            ("pids", "pids"),
            ("blkio", "blkio"),
        ] {
            dirs.insert(controller.into(), root.path().join(mount).join("vmctl/c1"));
        }
        (root, dirs)
    }

    #[test]
    fn samples_every_controller_in_kernel_units() {
        let (_root, dirs) = fixture();
        let sample = sample(&dirs);
        let cpu = sample.cpu.unwrap();
        assert_eq!(cpu.total_ns, 3_000_000_000);
        assert_eq!(cpu.percpu_ns, [1_000_000_000, 2_000_000_000]);
        // USER_HZ ticks to ns.
        assert_eq!((cpu.user_ns, cpu.system_ns), (1_500_000_000, 500_000_000));
        assert_eq!(
            (cpu.periods, cpu.throttled_periods, cpu.throttled_ns),
            (10, 4, 123_456)
        );
        let memory = sample.memory.unwrap();
        assert_eq!(
            (memory.usage, memory.max_usage, memory.failcnt),
            (2_097_152, Some(4_194_304), 5)
        );
        assert_eq!(memory.limit, 9_223_372_036_854_771_712);
        assert_eq!(memory.stat["total_inactive_file"], 4096);
        assert_eq!(
            sample.pids.unwrap(),
            Pids {
                current: 2,
                limit: 0
            }
        );
        let Some(Io::V1(io)) = sample.io else {
            panic!("no io")
        };
        let bytes = &io["io_service_bytes_recursive"];
        assert_eq!(bytes.len(), 6, "the Total line is skipped: {bytes:?}");
        assert_eq!(
            bytes[0],
            BlkioEntry {
                major: 8,
                minor: 0,
                op: "Read".into(),
                value: 4096
            }
        );
        assert_eq!(io["io_serviced_recursive"][1].value, 2);
    }

    #[test]
    fn cfq_counters_win_when_they_have_entries() {
        let (_root, dirs) = fixture();
        let blkio = &dirs["blkio"];
        for (_, file) in CFQ_FILES {
            std::fs::write(blkio.join(file), "").unwrap();
        }
        // Present but empty: the throttle counters still answer.
        let Some(Io::V1(io)) = sample(&dirs).io else {
            panic!("no io")
        };
        assert_eq!(io.len(), 2);
        std::fs::write(blkio.join("blkio.sectors_recursive"), "8:0 16\n").unwrap();
        let Some(Io::V1(io)) = sample(&dirs).io else {
            panic!("no io")
        };
        assert_eq!(io.len(), CFQ_FILES.len());
        assert_eq!(io["sectors_recursive"][0].op, "");
        assert_eq!(io["sectors_recursive"][0].value, 16);
    }

    #[test]
    fn a_missing_controller_is_left_out() {
        let (_root, mut dirs) = fixture();
        dirs.remove("pids");
        let sample = sample(&dirs);
        assert!(sample.pids.is_none());
        assert!(sample.cpu.is_some());
    }

    #[test]
    fn limits_become_v1_files_with_memsw_ordered() {
        let (_root, dirs) = fixture();
        let cgroup = super::super::Cgroup::V1(dirs.clone());
        let file = |c: &str, name: &str| std::fs::read_to_string(dirs[c].join(name)).unwrap();
        cgroup
            .apply(&Limits {
                memory: Some(64 << 20),
                memory_swap: Some(128 << 20),
                cpu_quota: Some(50_000),
                cpu_period: Some(100_000),
                pids: Some(50),
                blkio_weight: Some(300),
                ..Limits::default()
            })
            .unwrap();
        assert_eq!(file("memory", "memory.limit_in_bytes"), "67108864");
        assert_eq!(file("memory", "memory.memsw.limit_in_bytes"), "134217728");
        assert_eq!(file("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(file("pids", "pids.max"), "50");
        assert_eq!(file("blkio", "blkio.weight"), "300");
        // Raising both above the current memory limit: memsw goes first.
        let writes = writes(
            &dirs,
            &Limits {
                memory: Some(256 << 20),
                memory_swap: Some(512 << 20),
                ..Limits::default()
            },
        )
        .unwrap();
        assert!(writes[0].path.ends_with("memory.memsw.limit_in_bytes"));
        assert!(writes[1].path.ends_with("memory.limit_in_bytes"));
        // Lowering: memory first.
        let writes = writes_lower(&dirs);
        assert!(writes[0].path.ends_with("memory.limit_in_bytes"));
    }

    fn writes_lower(dirs: &Dirs) -> Vec<Write> {
        writes(
            dirs,
            &Limits {
                memory: Some(16 << 20),
                memory_swap: Some(32 << 20),
                ..Limits::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn a_missing_controller_fails_the_whole_update() {
        let (_root, mut dirs) = fixture();
        dirs.remove("cpuset");
        let cgroup = super::super::Cgroup::V1(dirs.clone());
        let before = std::fs::read_to_string(dirs["pids"].join("pids.max")).unwrap();
        assert!(cgroup
            .apply(&Limits {
                pids: Some(10),
                cpuset_cpus: Some("0".into()),
                ..Limits::default()
            })
            .is_err());
        assert_eq!(
            std::fs::read_to_string(dirs["pids"].join("pids.max")).unwrap(),
            before
        );
    }
}
