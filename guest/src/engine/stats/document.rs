//! Docker's `StatsJSON` document and what it is made of: a cgroup sample in
//! dockerd's words (the memory keys it passes on v1 and v2, v2's `io.stat` as
//! read/write entries, the limit clamped to the machine's memory), the
//! machine's CPU time as dockerd sums `/proc/stat`, and the interfaces of a
//! network namespace from `/proc/<pid>/net/dev`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::runtime::cgroups::{self, Sample};

/// Go's zero `time.Time`, as dockerd writes an unset `read`/`preread`.
pub(super) const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// USER_HZ: the unit of `/proc/stat`.
const TICKS_PER_SECOND: u64 = 100;

/// The `memory.stat` keys dockerd passes on cgroup v1, in its order.
const V1_MEMORY_KEYS: &[&str] = &[
    "cache",
    "rss",
    "rss_huge",
    "mapped_file",
    "dirty",
    "writeback",
    "pgpgin",
    "pgpgout",
    "pgfault",
    "pgmajfault",
    "inactive_anon",
    "active_anon",
    "inactive_file",
    "active_file",
    "unevictable",
    "hierarchical_memory_limit",
    "hierarchical_memsw_limit",
    "total_cache",
    "total_rss",
    "total_rss_huge",
    "total_mapped_file",
    "total_dirty",
    "total_writeback",
    "total_pgpgin",
    "total_pgpgout",
    "total_pgfault",
    "total_pgmajfault",
    "total_inactive_anon",
    "total_active_anon",
    "total_inactive_file",
    "total_active_file",
    "total_unevictable",
];

/// The `memory.stat` keys dockerd passes on cgroup v2.
const V2_MEMORY_KEYS: &[&str] = &[
    "anon",
    "file",
    "kernel_stack",
    "slab",
    "sock",
    "shmem",
    "file_mapped",
    "file_dirty",
    "file_writeback",
    "anon_thp",
    "inactive_anon",
    "active_anon",
    "inactive_file",
    "active_file",
    "unevictable",
    "slab_reclaimable",
    "slab_unreclaimable",
    "pgfault",
    "pgmajfault",
    "workingset_refault",
    "workingset_activate",
    "workingset_nodereclaim",
    "pgrefill",
    "pgscan",
    "pgsteal",
    "pgactivate",
    "pgdeactivate",
    "pglazyfree",
    "pglazyfreed",
    "thp_fault_alloc",
    "thp_collapse_alloc",
];

/// Docker's `StatsJSON`.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub read: String,
    pub preread: String,
    pub pids_stats: PidsStats,
    pub blkio_stats: BlkioStats,
    pub num_procs: u32,
    pub storage_stats: StorageStats,
    pub cpu_stats: CpuStats,
    pub precpu_stats: CpuStats,
    pub memory_stats: MemoryStats,
    pub name: String,
    pub id: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, NetworkStats>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PidsStats {
    #[serde(skip_serializing_if = "is_zero")]
    pub current: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub limit: u64,
}

/// Every list is `null` when not measured, as Go writes a nil slice.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BlkioStats {
    pub io_service_bytes_recursive: Option<Vec<BlkioStatEntry>>,
    pub io_serviced_recursive: Option<Vec<BlkioStatEntry>>,
    pub io_queue_recursive: Option<Vec<BlkioStatEntry>>,
    pub io_service_time_recursive: Option<Vec<BlkioStatEntry>>,
    pub io_wait_time_recursive: Option<Vec<BlkioStatEntry>>,
    pub io_merged_recursive: Option<Vec<BlkioStatEntry>>,
    pub io_time_recursive: Option<Vec<BlkioStatEntry>>,
    pub sectors_recursive: Option<Vec<BlkioStatEntry>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlkioStatEntry {
    pub major: u64,
    pub minor: u64,
    pub op: String,
    pub value: u64,
}

/// Windows only; always `{}` on Linux.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StorageStats {}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CpuStats {
    pub cpu_usage: CpuUsage,
    #[serde(skip_serializing_if = "is_zero")]
    pub system_cpu_usage: u64,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub online_cpus: u32,
    pub throttling_data: ThrottlingData,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CpuUsage {
    pub total_usage: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu_usage: Vec<u64>,
    pub usage_in_kernelmode: u64,
    pub usage_in_usermode: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ThrottlingData {
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_time: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct MemoryStats {
    #[serde(skip_serializing_if = "is_zero")]
    pub usage: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub max_usage: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub stats: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "is_zero")]
    pub failcnt: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub limit: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NetworkStats {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

impl Stats {
    /// dockerd's document for a container that is not running.
    pub fn empty(name: &str, id: &str) -> Self {
        Self {
            read: ZERO_TIME.to_owned(),
            preread: ZERO_TIME.to_owned(),
            pids_stats: PidsStats::default(),
            blkio_stats: BlkioStats::default(),
            num_procs: 0,
            storage_stats: StorageStats {},
            cpu_stats: CpuStats::default(),
            precpu_stats: CpuStats::default(),
            memory_stats: MemoryStats::default(),
            name: format!("/{name}"),
            id: id.to_owned(),
            networks: BTreeMap::new(),
        }
    }
}

/// The machine-wide numbers a sample is set against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Host {
    /// All CPUs' time since boot in ns, as dockerd sums `/proc/stat`.
    pub system_cpu_ns: u64,
    pub online_cpus: u32,
    /// `MemTotal` in bytes: the limit reported for an unlimited container.
    pub memory: u64,
}

/// dockerd's system CPU usage: the first seven fields of the `cpu` line of
/// `/proc/stat` (user … softirq, in USER_HZ ticks) in ns, and the number of
/// `cpuN` lines.
pub fn system_cpu(proc_stat: &str) -> Option<(u64, u32)> {
    let mut total = None;
    let mut cpus = 0;
    for line in proc_stat.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            break;
        };
        if rest.starts_with(' ') {
            let fields: Vec<u64> = rest
                .split_whitespace()
                .take(7)
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            if fields.len() < 7 {
                return None;
            }
            let ticks: u64 = fields.iter().sum();
            total = Some(ticks.saturating_mul(1_000_000_000) / TICKS_PER_SECOND);
        } else if rest.starts_with(|c: char| c.is_ascii_digit()) {
            cpus += 1;
        }
    }
    Some((total?, cpus))
}

/// `MemTotal` of `/proc/meminfo` in bytes.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The interfaces of `/proc/<pid>/net/dev`, without `lo` (dockerd reports
/// the sandbox's interfaces only).
pub fn net_dev(text: &str) -> BTreeMap<String, NetworkStats> {
    let mut out = BTreeMap::new();
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        let n: Vec<u64> = counters
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if name == "lo" || n.len() < 16 {
            continue;
        }
        out.insert(
            name.to_owned(),
            NetworkStats {
                rx_bytes: n[0],
                rx_packets: n[1],
                rx_errors: n[2],
                rx_dropped: n[3],
                tx_bytes: n[8],
                tx_packets: n[9],
                tx_errors: n[10],
                tx_dropped: n[11],
            },
        );
    }
    out
}

/// A cgroup sample in dockerd's words: the document without name, id,
/// networks and the `pre` fields.
pub fn document(sample: &Sample, host: &Host, v2: bool) -> Stats {
    let mut stats = Stats::empty("", "");
    stats.name.clear();
    if let Some(cpu) = &sample.cpu {
        stats.cpu_stats.cpu_usage = CpuUsage {
            total_usage: cpu.total_ns,
            percpu_usage: cpu.percpu_ns.clone(),
            usage_in_kernelmode: cpu.system_ns,
            usage_in_usermode: cpu.user_ns,
        };
        stats.cpu_stats.throttling_data = ThrottlingData {
            periods: cpu.periods,
            throttled_periods: cpu.throttled_periods,
            throttled_time: cpu.throttled_ns,
        };
    }
    stats.cpu_stats.system_cpu_usage = host.system_cpu_ns;
    stats.cpu_stats.online_cpus = host.online_cpus;
    if let Some(memory) = &sample.memory {
        let keys = if v2 { V2_MEMORY_KEYS } else { V1_MEMORY_KEYS };
        let mut limit = memory.limit;
        if host.memory > 0 && limit > host.memory {
            limit = host.memory;
        }
        stats.memory_stats = MemoryStats {
            usage: memory.usage,
            max_usage: memory.max_usage.unwrap_or(0),
            stats: keys
                .iter()
                .map(|k| ((*k).to_owned(), memory.stat.get(*k).copied().unwrap_or(0)))
                .collect(),
            failcnt: memory.failcnt,
            limit,
        };
    }
    if let Some(pids) = &sample.pids {
        stats.pids_stats = PidsStats {
            current: pids.current,
            limit: pids.limit,
        };
    }
    match &sample.io {
        Some(cgroups::Io::V2(devices)) => {
            let entry = |d: &cgroups::IoStat, op: &str, value| BlkioStatEntry {
                major: d.major,
                minor: d.minor,
                op: op.to_owned(),
                value,
            };
            stats.blkio_stats.io_service_bytes_recursive = Some(
                devices
                    .iter()
                    .flat_map(|d| [entry(d, "read", d.rbytes), entry(d, "write", d.wbytes)])
                    .collect(),
            )
            .filter(|v: &Vec<_>| !v.is_empty());
        }
        Some(cgroups::Io::V1(files)) => {
            let b = &mut stats.blkio_stats;
            for (name, entries) in files {
                let list = Some(
                    entries
                        .iter()
                        .map(|e| BlkioStatEntry {
                            major: e.major,
                            minor: e.minor,
                            op: e.op.clone(),
                            value: e.value,
                        })
                        .collect(),
                );
                match *name {
                    "io_service_bytes_recursive" => b.io_service_bytes_recursive = list,
                    "io_serviced_recursive" => b.io_serviced_recursive = list,
                    "io_queue_recursive" => b.io_queue_recursive = list,
                    "io_service_time_recursive" => b.io_service_time_recursive = list,
                    "io_wait_time_recursive" => b.io_wait_time_recursive = list,
                    "io_merged_recursive" => b.io_merged_recursive = list,
                    "io_time_recursive" => b.io_time_recursive = list,
                    "sectors_recursive" => b.sectors_recursive = list,
                    _ => {}
                }
            }
        }
        None => {}
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_cpu_sums_seven_fields_in_ns_and_counts_cpus() {
        let text = "cpu  100 20 30 400 5 6 7 8 0 0\n\
                    cpu0 50 10 15 200 2 3 3 4 0 0\n\
                    cpu1 50 10 15 200 3 3 4 4 0 0\n\
                    intr 1 2 3\n\
                    cpu9 is not counted after the cpu block\n";
        // (100+20+30+400+5+6+7) ticks = 568 ticks = 5.68 s.
        assert_eq!(system_cpu(text), Some((5_680_000_000, 2)));
        assert_eq!(system_cpu("cpu  1 2 3\n"), None);
        assert_eq!(system_cpu("intr 1\n"), None);
    }

    #[test]
    fn two_documents_give_the_cli_its_cpu_percentage() {
        // The docker CLI: (container delta / system delta) x online CPUs x 100,
        // from `cpu_stats` and `precpu_stats`. Both counters must be in ns.
        let at = |cgroup_usec: u64, proc_stat: &str| {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(
                dir.path().join("cpu.stat"),
                format!("usage_usec {cgroup_usec}\nuser_usec 0\nsystem_usec 0\n"),
            )
            .unwrap();
            let (system_cpu_ns, online_cpus) = system_cpu(proc_stat).unwrap();
            let host = Host {
                system_cpu_ns,
                online_cpus,
                memory: 0,
            };
            document(
                &cgroups::Cgroup::V2(dir.path().into()).sample(),
                &host,
                true,
            )
            .cpu_stats
        };
        // One second of both CPUs passes (200 ticks); the container used
        // one of them (1 s of cgroup time).
        let pre = at(1_000_000, "cpu  1000 0 0 1000 0 0 0\ncpu0 x\ncpu1 x\n");
        let now = at(2_000_000, "cpu  1100 0 0 1100 0 0 0\ncpu0 x\ncpu1 x\n");
        let cpu_delta = now.cpu_usage.total_usage - pre.cpu_usage.total_usage;
        let system_delta = now.system_cpu_usage - pre.system_cpu_usage;
        let percent = cpu_delta as f64 / system_delta as f64 * f64::from(now.online_cpus) * 100.0;
        assert!((percent - 100.0).abs() < 1e-9, "{percent}");
    }

    #[test]
    fn net_dev_skips_lo_and_reads_both_directions() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  \
eth0:    1500      10    1    2    0     0          0         0      700       5    3    4    0     0       0          0\n";
        let nets = net_dev(text);
        assert_eq!(nets.len(), 1);
        assert_eq!(
            nets["eth0"],
            NetworkStats {
                rx_bytes: 1500,
                rx_packets: 10,
                rx_errors: 1,
                rx_dropped: 2,
                tx_bytes: 700,
                tx_packets: 5,
                tx_errors: 3,
                tx_dropped: 4,
            }
        );
    }

    #[test]
    fn mem_total_is_in_bytes() {
        assert_eq!(
            mem_total("MemTotal:        2048 kB\nMemFree: 1 kB\n"),
            Some(2 << 20)
        );
    }

    fn sample(v2: bool) -> Sample {
        let mut stat = BTreeMap::new();
        stat.insert("inactive_file".to_owned(), 4096);
        stat.insert("total_inactive_file".to_owned(), 8192);
        stat.insert("not_passed_on".to_owned(), 1);
        Sample {
            cpu: Some(cgroups::Cpu {
                total_ns: 10,
                user_ns: 6,
                system_ns: 4,
                percpu_ns: if v2 { vec![] } else { vec![4, 6] },
                periods: 1,
                throttled_periods: 0,
                throttled_ns: 0,
            }),
            memory: Some(cgroups::Memory {
                usage: 1 << 20,
                max_usage: (!v2).then_some(2 << 20),
                failcnt: 0,
                limit: u64::MAX,
                stat,
            }),
            pids: Some(cgroups::Pids {
                current: 3,
                limit: 0,
            }),
            io: Some(if v2 {
                cgroups::Io::V2(vec![cgroups::IoStat {
                    major: 8,
                    minor: 0,
                    rbytes: 1,
                    wbytes: 2,
                    ..Default::default()
                }])
            } else {
                cgroups::Io::V1(BTreeMap::from([(
                    "io_service_bytes_recursive",
                    vec![cgroups::BlkioEntry {
                        major: 8,
                        minor: 0,
                        op: "Read".into(),
                        value: 1,
                    }],
                )]))
            }),
        }
    }

    #[test]
    fn v2_documents_carry_dockerds_v2_keys_and_clamp_the_limit() {
        let host = Host {
            system_cpu_ns: 99,
            online_cpus: 2,
            memory: 1 << 30,
        };
        let stats = document(&sample(true), &host, true);
        let json = serde_json::to_value(&stats).unwrap();
        let memory = &json["memory_stats"];
        assert_eq!(memory["limit"], 1u64 << 30);
        assert!(memory.get("max_usage").is_none());
        let keys = memory["stats"].as_object().unwrap();
        assert_eq!(keys.len(), V2_MEMORY_KEYS.len());
        assert_eq!(keys["inactive_file"], 4096);
        assert!(!keys.contains_key("total_inactive_file"));
        assert_eq!(json["cpu_stats"]["system_cpu_usage"], 99);
        assert_eq!(json["cpu_stats"]["online_cpus"], 2);
        assert!(json["cpu_stats"]["cpu_usage"].get("percpu_usage").is_none());
        let io = &json["blkio_stats"]["io_service_bytes_recursive"];
        assert_eq!(io[0]["op"], "read");
        assert_eq!(io[1]["op"], "write");
        assert_eq!(io[1]["value"], 2);
        assert!(json["blkio_stats"]["io_serviced_recursive"].is_null());
        assert_eq!(json["pids_stats"]["current"], 3);
        assert!(json["pids_stats"].get("limit").is_none());
    }

    #[test]
    fn v1_documents_carry_max_usage_percpu_and_v1_keys() {
        let stats = document(&sample(false), &Host::default(), false);
        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(json["memory_stats"]["max_usage"], 2u64 << 20);
        let keys = json["memory_stats"]["stats"].as_object().unwrap();
        assert_eq!(keys.len(), V1_MEMORY_KEYS.len());
        assert_eq!(keys["total_inactive_file"], 8192);
        assert_eq!(json["cpu_stats"]["cpu_usage"]["percpu_usage"][1], 6);
        assert_eq!(json["cpu_stats"]["cpu_usage"]["usage_in_kernelmode"], 4);
        assert_eq!(
            json["blkio_stats"]["io_service_bytes_recursive"][0]["op"],
            "Read"
        );
    }

    #[test]
    fn a_stopped_container_gets_dockerds_empty_document() {
        let json = serde_json::to_value(Stats::empty("web", "abc")).unwrap();
        assert_eq!(json["name"], "/web");
        assert_eq!(json["read"], ZERO_TIME);
        assert_eq!(json["pids_stats"], serde_json::json!({}));
        assert_eq!(json["memory_stats"], serde_json::json!({}));
        assert_eq!(json["storage_stats"], serde_json::json!({}));
        assert!(json["blkio_stats"]["sectors_recursive"].is_null());
        assert_eq!(json["cpu_stats"]["cpu_usage"]["total_usage"], 0);
        assert!(json.get("networks").is_none());
    }
}
