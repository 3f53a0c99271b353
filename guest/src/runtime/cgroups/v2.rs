//! cgroup v2: one directory with every controller's files.
//!
//! Counters: `cpu.stat` (µs), `memory.current`, `memory.max`, `memory.stat`,
//! `memory.events`, `pids.current`, `pids.max`, `io.stat`
//! (`MAJ:MIN rbytes=… wbytes=… rios=… wios=…`). Limits: `memory.max`,
//! `memory.swap.max` (swap alone, where Docker counts memory plus swap),
//! `memory.low`, `cpu.weight` (from Docker's shares), `cpu.max`
//! (`QUOTA PERIOD`), `cpuset.cpus`, `cpuset.mems`, `pids.max`, `io.weight`
//! or `io.bfq.weight`.

use std::path::{Path, PathBuf};

use super::{
    device, flat_keyed, read, read_number, CgroupError, Cpu, Io, IoStat, Limits, Memory, Pids,
    Sample, Write,
};

/// The default CFS period (µs) when only a quota is given.
const DEFAULT_PERIOD: u64 = 100_000;

pub(super) fn sample(dir: &Path) -> Sample {
    Sample {
        cpu: cpu(dir).ok(),
        memory: memory(dir).ok(),
        pids: pids(dir).ok(),
        io: io(dir).ok(),
    }
}

fn cpu(dir: &Path) -> Result<Cpu, CgroupError> {
    let stat = flat_keyed(&read(&dir.join("cpu.stat"))?);
    let ns = |key: &str| stat.get(key).copied().unwrap_or(0).saturating_mul(1000);
    Ok(Cpu {
        total_ns: ns("usage_usec"),
        user_ns: ns("user_usec"),
        system_ns: ns("system_usec"),
        percpu_ns: Vec::new(),
        periods: stat.get("nr_periods").copied().unwrap_or(0),
        throttled_periods: stat.get("nr_throttled").copied().unwrap_or(0),
        throttled_ns: ns("throttled_usec"),
    })
}

fn memory(dir: &Path) -> Result<Memory, CgroupError> {
    let usage = read_number(&dir.join("memory.current"))?.unwrap_or(0);
    let limit = read_number(&dir.join("memory.max"))?.unwrap_or(u64::MAX);
    let stat = flat_keyed(&read(&dir.join("memory.stat"))?);
    let failcnt = read(&dir.join("memory.events"))
        .map(|text| flat_keyed(&text).get("oom").copied().unwrap_or(0))
        .unwrap_or(0);
    Ok(Memory {
        usage,
        max_usage: None,
        failcnt,
        limit,
        stat,
    })
}

fn pids(dir: &Path) -> Result<Pids, CgroupError> {
    Ok(Pids {
        current: read_number(&dir.join("pids.current"))?.unwrap_or(0),
        limit: read_number(&dir.join("pids.max"))?.unwrap_or(0),
    })
}

fn io(dir: &Path) -> Result<Io, CgroupError> {
    let text = read(&dir.join("io.stat"))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some((major, minor)) = fields.next().and_then(device) else {
            continue;
        };
        let mut stat = IoStat {
            major,
            minor,
            ..IoStat::default()
        };
        for field in fields {
            let Some((key, value)) = field.split_once('=') else {
                continue;
            };
            let value = value.parse().unwrap_or(0);
            match key {
                "rbytes" => stat.rbytes = value,
                "wbytes" => stat.wbytes = value,
                "rios" => stat.rios = value,
                "wios" => stat.wios = value,
                _ => {}
            }
        }
        out.push(stat);
    }
    Ok(Io::V2(out))
}

/// The weight file the kernel offers, if any.
pub(super) fn weight_file(dir: &Path) -> Option<PathBuf> {
    ["io.bfq.weight", "io.weight"]
        .into_iter()
        .map(|f| dir.join(f))
        .find(|p| p.exists())
}

/// Docker's CPU shares (2–262144) on v2's weight scale (1–10000), as runc
/// and youki convert them.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

/// Docker's block I/O weight (10–1000) on `io.weight`'s scale (1–10000).
pub fn blkio_to_io_weight(weight: u16) -> u64 {
    1 + (u64::from(weight.clamp(10, 1000)) - 10) * 9999 / 990
}

fn max_or(value: i64) -> String {
    if value <= 0 {
        "max".to_owned()
    } else {
        value.to_string()
    }
}

/// The files to write for `limits`, in a safe order.
pub(super) fn writes(dir: &Path, limits: &Limits) -> Result<Vec<Write>, CgroupError> {
    let mut out = Vec::new();
    if let Some(memory) = limits.memory {
        out.push(Write::new(dir, "memory.max", max_or(memory)));
    }
    if let Some(swap) = limits.memory_swap {
        // v2 limits swap alone; Docker's value is memory plus swap.
        let value = match (swap, limits.memory) {
            (s, _) if s < 0 => "max".to_owned(),
            (s, Some(m)) if m > 0 => s.saturating_sub(m).max(0).to_string(),
            (s, _) => s.to_string(),
        };
        if dir.join("memory.swap.max").exists() {
            out.push(Write::new(dir, "memory.swap.max", value));
        }
    }
    if let Some(reservation) = limits.memory_reservation {
        out.push(Write::new(dir, "memory.low", max_or(reservation)));
    }
    if let Some(shares) = limits.cpu_shares {
        out.push(Write::new(
            dir,
            "cpu.weight",
            shares_to_weight(shares).to_string(),
        ));
    }
    if limits.cpu_quota.is_some() || limits.cpu_period.is_some() {
        let current = read(&dir.join("cpu.max")).unwrap_or_default();
        let mut current = current.split_whitespace();
        let old_quota = current.next().unwrap_or("max").to_owned();
        let old_period = current
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(DEFAULT_PERIOD);
        let quota = limits.cpu_quota.map_or(old_quota, max_or);
        let period = limits.cpu_period.unwrap_or(old_period);
        out.push(Write::new(dir, "cpu.max", format!("{quota} {period}")));
    }
    if limits.cpu_rt_period.is_some() || limits.cpu_rt_runtime.is_some() {
        return Err(CgroupError::NoController("cpu real-time"));
    }
    if let Some(cpus) = &limits.cpuset_cpus {
        out.push(Write::new(dir, "cpuset.cpus", cpus.clone()));
    }
    if let Some(mems) = &limits.cpuset_mems {
        out.push(Write::new(dir, "cpuset.mems", mems.clone()));
    }
    if let Some(pids) = limits.pids {
        out.push(Write::new(dir, "pids.max", max_or(pids)));
    }
    if let Some(weight) = limits.blkio_weight {
        let file = weight_file(dir).ok_or(CgroupError::NoController("io weight"))?;
        let value = if file.ends_with("io.bfq.weight") {
            weight.to_string()
        } else {
            format!("default {}", blkio_to_io_weight(weight))
        };
        out.push(Write { path: file, value });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            (
                "cpu.stat",
                "usage_usec 2500\nuser_usec 1500\nsystem_usec 1000\nnr_periods 7\nnr_throttled 2\nthrottled_usec 30\n",
            ),
            ("memory.current", "1048576\n"),
            ("memory.max", "max\n"),
            (
                "memory.stat",
                "anon 4096\nfile 8192\ninactive_file 4096\npgfault 12\n",
            ),
            ("memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"),
            ("memory.swap.max", "max\n"),
            ("memory.low", "0\n"),
            ("pids.current", "3\n"),
            ("pids.max", "max\n"),
            ("cpu.max", "max 100000\n"),
            ("cpu.weight", "100\n"),
            ("cpuset.cpus", "\n"),
            ("io.weight", "default 100\n"),
            (
                "io.stat",
                "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n253:1 rbytes=1 wbytes=0 rios=1 wios=0\n",
            ),
        ];
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        dir
    }

    #[test]
    fn samples_every_controller_in_kernel_units() {
        let dir = fixture();
        let sample = sample(dir.path());
        let cpu = sample.cpu.unwrap();
        assert_eq!(
            (cpu.total_ns, cpu.user_ns, cpu.system_ns),
            (2_500_000, 1_500_000, 1_000_000)
        );
        assert_eq!(
            (cpu.periods, cpu.throttled_periods, cpu.throttled_ns),
            (7, 2, 30_000)
        );
        assert!(cpu.percpu_ns.is_empty());
        let memory = sample.memory.unwrap();
        assert_eq!(memory.usage, 1_048_576);
        assert_eq!(memory.limit, u64::MAX);
        assert_eq!(memory.failcnt, 1);
        assert_eq!(memory.max_usage, None);
        assert_eq!(memory.stat["inactive_file"], 4096);
        assert_eq!(
            sample.pids.unwrap(),
            Pids {
                current: 3,
                limit: 0
            }
        );
        let Some(Io::V2(io)) = sample.io else {
            panic!("no io")
        };
        assert_eq!(io.len(), 2);
        assert_eq!(
            (io[0].major, io[0].minor, io[0].rbytes, io[0].wbytes),
            (8, 0, 4096, 8192)
        );
    }

    #[test]
    fn a_missing_controller_is_left_out() {
        let dir = fixture();
        std::fs::remove_file(dir.path().join("pids.current")).unwrap();
        std::fs::remove_file(dir.path().join("io.stat")).unwrap();
        let sample = sample(dir.path());
        assert!(sample.pids.is_none() && sample.io.is_none());
        assert!(sample.memory.is_some());
    }

    #[test]
    fn limits_become_v2_files() {
        let dir = fixture();
        let cgroup = super::super::Cgroup::V2(dir.path().to_owned());
        cgroup
            .apply(&Limits {
                memory: Some(64 << 20),
                memory_swap: Some(128 << 20),
                cpu_shares: Some(512),
                cpu_quota: Some(50_000),
                pids: Some(50),
                blkio_weight: Some(500),
                ..Limits::default()
            })
            .unwrap();
        let file = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!(file("memory.max"), "67108864");
        assert_eq!(file("memory.swap.max"), "67108864");
        assert_eq!(file("cpu.weight"), "20");
        assert_eq!(file("cpu.max"), "50000 100000");
        assert_eq!(file("pids.max"), "50");
        assert_eq!(file("io.weight"), "default 4950");
        cgroup
            .apply(&Limits {
                cpu_quota: Some(-1),
                pids: Some(0),
                ..Limits::default()
            })
            .unwrap();
        assert_eq!(file("cpu.max"), "max 100000");
        assert_eq!(file("pids.max"), "max");
        assert!(cgroup
            .apply(&Limits {
                cpu_rt_runtime: Some(1000),
                ..Limits::default()
            })
            .is_err());
    }

    #[test]
    fn shares_and_weights_convert_as_runc_does() {
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(blkio_to_io_weight(10), 1);
        assert_eq!(blkio_to_io_weight(1000), 10_000);
    }
}
