//! `network-setup`: the time to give one container its interface on the
//! default bridge, by the engine's own netlink code and by its two peers,
//! the `ip` tool run once per step and `ip -batch`.
//!
//! Every contender makes the same end state from a fresh network namespace
//! (a [`Holder`], spawned before any clock starts) on the bridge `vmctl0`
//! (`10.200.0.1/16`) of a private namespace standing in for the engine's:
//!
//! ```text
//!   vethXXXXXXXXXXX  up, MTU 1500, port of vmctl0, hairpin on
//!   eth0 (inside)    MAC 02:42:<ip>, MTU 1500, up, 10.200.x.y/16
//!   lo (inside)      up
//!   default route    via 10.200.0.1 (inside)
//! ```
//!
//! - **vmctl**: what `Sandbox` does per container: open `/proc/PID/ns/net`,
//!   `Netlink::add_veth` (one request for the pair, one for hairpin),
//!   `Netlink::in_netns`, `Netlink::configure` (one lookup, one datagram),
//!   on a current-thread runtime. Also timed step by step, with the thread's
//!   CPU time (`CLOCK_THREAD_CPUTIME_ID`) and its system share (`getrusage`).
//! - **ip commands**: three `ip` runs on the host side (`link add … netns
//!   PID`, `link set … master vmctl0 up`, `link set … type bridge_slave
//!   hairpin on`) and four `nsenter -t PID -n ip …` inside (`lo` up,
//!   address, `eth0` up, default route).
//! - **ip -batch**: the same lines, one `ip -batch -` for the host side and
//!   one `nsenter -t PID -n ip -batch -` for the inside.
//! - **floor**: `ip -V` and `nsenter -t PID -n ip -V`: the two process
//!   starts of `ip -batch`, with no netlink work.
//!
//! Teardown is timed apart: `Netlink::delete_link` and `ip link del`
//! (deleting the host end deletes the pair). The end state is checked with
//! `ip -j` after the first and the last round of each contender. Rounds are
//! interleaved (one of each contender, in a rotating order); the holders are
//! all killed at the end, so no namespace cleanup runs during the rounds.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use tokio::runtime::Runtime;
use vmctl_guest::network::netlink::{mac_for, veth_name, InterfaceConfig, Netlink, VethSpec};

use crate::machine::on_path;
use crate::network::{self, run_ok, Holder, BRIDGE, GATEWAY, MTU, PREFIX};
use crate::report::{Derived, Report, Series, Summary};

/// The goal of issue 3: the engine's setup of one container, by median.
const GOAL_MS: f64 = 0.5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    Vmctl,
    IpCommands,
    IpBatch,
    Floor,
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::Vmctl => "vmctl",
            Contender::IpCommands => "ip commands",
            Contender::IpBatch => "ip -batch",
            Contender::Floor => "floor: ip + nsenter ip",
        }
    }
}

/// One container's interface: where and what.
struct Target<'a> {
    holder: &'a Holder,
    host: String,
    ip: Ipv4Addr,
}

/// The series of the table, by position.
const TOTAL: usize = 0;
const ADD_VETH: usize = 1;
const IN_NETNS: usize = 2;
const CONFIGURE: usize = 3;
const IP_COMMANDS: usize = 4;
const IP_BATCH: usize = 5;
const FLOOR: usize = 6;
const DELETE_LINK: usize = 7;
const IP_LINK_DEL: usize = 8;

/// The engine's steps for one container, timed.
struct VmctlTimes {
    add_veth: Duration,
    in_netns: Duration,
    configure: Duration,
    total: Duration,
    /// CPU time of this thread (the one talking netlink) over the total and
    /// over `add_veth`, and the system/user split over the total.
    cpu_total: Duration,
    cpu_add_veth: Duration,
    usage: Usage,
}

/// Where the engine's time goes, per container: CPU time of the calling
/// thread (exact) and its system/user split (getrusage, summed).
#[derive(Default)]
struct Cpu {
    total: Vec<Duration>,
    add_veth: Vec<Duration>,
    delete_link: Vec<Duration>,
    usage: Usage,
}

/// Runs the benchmark in the calling thread's (private) network namespace:
/// the setup report, then the teardown report.
pub fn run(rt: &Runtime, runs: usize, warmups: usize) -> Result<(Report, Report)> {
    let _context = rt.enter();
    let netlink = Netlink::new().context("cannot open a netlink socket")?;
    let bridge = rt
        .block_on(netlink.ensure_bridge(&network::bridge_spec()?))
        .context("cannot create the bridge")?;
    let mut skipped = Vec::new();
    let mut contenders = vec![Contender::Vmctl];
    match ["ip", "nsenter"].into_iter().find(|tool| !on_path(tool)) {
        Some(tool) => skipped.push((
            "ip, ip -batch".to_owned(),
            format!("{tool} is not on PATH (apt-get install iproute2 util-linux)"),
        )),
        None => contenders.extend([Contender::IpCommands, Contender::IpBatch, Contender::Floor]),
    }
    let total = warmups + runs;
    let mut fresh = VecDeque::new();
    for _ in 0..total * contenders.len() {
        fresh.push_back(Holder::spawn()?);
    }
    // Killed at the end, not after their round: the cleanup of a namespace
    // runs in the background and would disturb the rounds still to come.
    let mut used = Vec::with_capacity(fresh.len());
    let mut bench = Bench {
        rt,
        netlink,
        bridge,
        series: vec![
            Series::new("vmctl", "open netns + add_veth + in_netns + configure"),
            Series::new(
                "vmctl: add_veth",
                "veth pair into the netns, on the bridge, hairpin",
            ),
            Series::new("vmctl: in_netns", "netlink socket inside (helper thread)"),
            Series::new("vmctl: configure", "lo up, eth0 up, address, default route"),
            Series::new("ip commands", "3 ip + 4 nsenter ip, one per step"),
            Series::new("ip -batch", "ip -batch + nsenter ip -batch"),
            Series::new(
                "floor: ip + nsenter ip",
                "ip -V + nsenter -t PID -n ip -V: no work",
            ),
            Series::new("vmctl delete_link", "Netlink::delete_link of the host end"),
            Series::new("ip link del", "ip link del (after both ip peers)"),
        ],
        cpu: Cpu::default(),
    };
    let n = contenders.len();
    for round in 0..total {
        for k in 0..n {
            let contender = contenders[(round + k) % n];
            let number = round * n + k;
            let holder = fresh.pop_front().context("out of holders")?;
            let target = Target {
                holder: &holder,
                host: veth_name(&format!("bench-{number}"), "network-setup"),
                ip: network::container_ip(number),
            };
            let (measured, check) = (round >= warmups, round == 0 || round + 1 == total);
            bench
                .once(contender, &target, measured, check)
                .with_context(|| format!("{} failed in round {round}", contender.name()))?;
            used.push(holder);
        }
    }
    drop(used);
    report(bench.series, &bench.cpu, runs, warmups, skipped)
}

/// What the rounds share: the engine's socket, the bridge, the results.
struct Bench<'a> {
    rt: &'a Runtime,
    netlink: Netlink,
    bridge: u32,
    series: Vec<Series>,
    cpu: Cpu,
}

impl Bench<'_> {
    /// One contender on one target: setup, the end-state check if asked,
    /// teardown; the samples kept when `measured`.
    fn once(
        &mut self,
        contender: Contender,
        target: &Target<'_>,
        measured: bool,
        check: bool,
    ) -> Result<()> {
        let mut samples: Vec<(usize, Duration)> = Vec::new();
        match contender {
            Contender::Vmctl => {
                let times = self
                    .rt
                    .block_on(vmctl_once(&self.netlink, self.bridge, target))?;
                samples.extend([
                    (TOTAL, times.total),
                    (ADD_VETH, times.add_veth),
                    (IN_NETNS, times.in_netns),
                    (CONFIGURE, times.configure),
                ]);
                if measured {
                    self.cpu.total.push(times.cpu_total);
                    self.cpu.add_veth.push(times.cpu_add_veth);
                    self.cpu.usage = self.cpu.usage.plus(times.usage);
                }
            }
            Contender::IpCommands => samples.push((IP_COMMANDS, ip_commands(target)?)),
            Contender::IpBatch => samples.push((IP_BATCH, ip_batch(target)?)),
            Contender::Floor => {
                let start = Instant::now();
                run_ok(Command::new("ip").arg("-V"))?;
                run_ok(nsenter_ip(target).arg("-V"))?;
                samples.push((FLOOR, start.elapsed()));
            }
        }
        // The floor made nothing: nothing to check or tear down.
        if contender != Contender::Floor {
            if check {
                check_end_state(target)?;
            }
            samples.push(self.teardown(contender, target, measured)?);
        }
        if measured {
            for (row, took) in samples {
                self.series[row].samples.push(took);
            }
        }
        Ok(())
    }

    /// Deletes the target's veth pair the contender's way: the row and time.
    fn teardown(
        &mut self,
        contender: Contender,
        target: &Target<'_>,
        measured: bool,
    ) -> Result<(usize, Duration)> {
        let (start, cpu_start) = (Instant::now(), thread_cpu());
        if contender != Contender::Vmctl {
            run_ok(Command::new("ip").args(["link", "del", &target.host]))?;
            return Ok((IP_LINK_DEL, start.elapsed()));
        }
        let deleted = self.rt.block_on(self.netlink.delete_link(&target.host));
        ensure!(deleted?, "{} was already gone", target.host);
        let took = start.elapsed();
        if measured {
            self.cpu.delete_link.push(thread_cpu() - cpu_start);
        }
        Ok((DELETE_LINK, took))
    }
}

/// Builds the two reports: setup with its CPU rows and the goal, teardown.
fn report(
    mut series: Vec<Series>,
    cpu: &Cpu,
    runs: usize,
    warmups: usize,
    skipped: Vec<(String, String)>,
) -> Result<(Report, Report)> {
    let teardown_series = series.split_off(DELETE_LINK);
    let median = |samples: &[Duration]| Summary::of(samples).map_or(0.0, |s| s.median_ms);
    let mean = |total: Duration| total.as_secs_f64() * 1e3 / runs.max(1) as f64;
    let derived = |name: &str, note: &str, median_ms: f64| Derived {
        name: name.to_owned(),
        note: note.to_owned(),
        median_ms,
    };
    let mut report = Report {
        bench: "network-setup",
        workload: "one container's interface on the bridge: veth pair, eth0 with MAC, \
                   address, lo + eth0 up, default route"
            .into(),
        runs,
        warmups,
        series,
        derived: vec![
            derived(
                "vmctl: thread CPU",
                "median; CPU time of the netlink thread over the total",
                median(&cpu.total),
            ),
            derived(
                "vmctl: system CPU",
                "mean; kernel share of that (getrusage)",
                mean(cpu.usage.system),
            ),
            derived(
                "vmctl: user CPU",
                "mean; user share of that (getrusage)",
                mean(cpu.usage.user),
            ),
            derived(
                "vmctl: add_veth thread CPU",
                "median; CPU time of the thread in add_veth",
                median(&cpu.add_veth),
            ),
        ],
        reference: "vmctl".into(),
        skipped: skipped.clone(),
        goals: Vec::new(),
    };
    let teardown = Report {
        bench: "network-teardown",
        workload: "delete the host end of the container's veth pair (both ends go)".into(),
        runs,
        warmups,
        series: teardown_series,
        derived: vec![derived(
            "vmctl delete_link: CPU",
            "median; CPU time of the thread in delete_link",
            median(&cpu.delete_link),
        )],
        reference: "vmctl delete_link".into(),
        skipped,
        goals: Vec::new(),
    };
    let vmctl = report.median("vmctl").context("no vmctl sample")?;
    let verdict = if vmctl <= GOAL_MS { "MET" } else { "MISSED" };
    report.goals.push(format!(
        "vmctl ≤ {GOAL_MS} ms per container (median): {verdict} ({vmctl:.3} ms)"
    ));
    Ok((report, teardown))
}

/// The engine's steps, as `Sandbox` runs them for one container.
async fn vmctl_once(netlink: &Netlink, bridge: u32, target: &Target<'_>) -> Result<VmctlTimes> {
    let netns = target.holder.netns();
    let address = format!("{}/{PREFIX}", target.ip).parse()?;
    let config = InterfaceConfig {
        name: "eth0".to_owned(),
        address,
        gateway: Some(GATEWAY),
        mtu: Some(MTU),
    };
    let (cpu_start, usage_start) = (thread_cpu(), Usage::now());
    let start = Instant::now();
    let file = File::open(&netns)?;
    netlink
        .add_veth(&VethSpec {
            host_name: &target.host,
            bridge,
            mtu: Some(MTU),
            netns: file.as_fd(),
            peer_name: "eth0",
            peer_mac: mac_for(target.ip),
        })
        .await?;
    let (veth_done, veth_cpu) = (Instant::now(), thread_cpu());
    let inside = Netlink::in_netns(&netns)?;
    let connected = Instant::now();
    inside.configure(&config).await?;
    let end = Instant::now();
    Ok(VmctlTimes {
        add_veth: veth_done - start,
        in_netns: connected - veth_done,
        configure: end - connected,
        total: end - start,
        cpu_total: thread_cpu() - cpu_start,
        cpu_add_veth: veth_cpu - cpu_start,
        usage: Usage::now().minus(usage_start),
    })
}

/// The host-side and inside lines both `ip` peers run.
fn ip_lines(target: &Target<'_>) -> (Vec<String>, Vec<String>) {
    let (host, pid, ip) = (&target.host, target.holder.pid(), target.ip);
    let mac = mac_for(ip).map(|b| format!("{b:02x}")).join(":");
    let host_side = vec![
        format!(
            "link add {host} mtu {MTU} type veth peer name eth0 mtu {MTU} address {mac} netns {pid}"
        ),
        format!("link set {host} master {BRIDGE} up"),
        format!("link set {host} type bridge_slave hairpin on"),
    ];
    let inside = vec![
        "link set lo up".to_owned(),
        format!("addr add {ip}/{PREFIX} dev eth0"),
        "link set eth0 up".to_owned(),
        format!("route add default via {GATEWAY}"),
    ];
    (host_side, inside)
}

/// `nsenter -t PID -n ip`, for the inside of a target.
fn nsenter_ip(target: &Target<'_>) -> Command {
    let mut command = Command::new("nsenter");
    let pid = target.holder.pid().to_string();
    command.args(["-t", &pid, "-n", "ip"]);
    command
}

/// Separate `ip` runs, one per step; the wall time of all of them.
fn ip_commands(target: &Target<'_>) -> Result<Duration> {
    let (host_side, inside) = ip_lines(target);
    let start = Instant::now();
    for line in &host_side {
        run_ok(Command::new("ip").args(line.split(' ')))?;
    }
    for line in &inside {
        run_ok(nsenter_ip(target).args(line.split(' ')))?;
    }
    Ok(start.elapsed())
}

/// `ip -batch -` on the host side, then `nsenter … ip -batch -` inside.
fn ip_batch(target: &Target<'_>) -> Result<Duration> {
    let (host_side, inside) = ip_lines(target);
    let start = Instant::now();
    batch(Command::new("ip"), &host_side)?;
    batch(nsenter_ip(target), &inside)?;
    Ok(start.elapsed())
}

/// Runs `ip … -batch -` with `lines` on its stdin.
fn batch(mut ip: Command, lines: &[String]) -> Result<()> {
    let mut child = ip
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run ip -batch")?;
    let mut stdin = child.stdin.take().context("ip -batch without stdin")?;
    stdin.write_all((lines.join("\n") + "\n").as_bytes())?;
    drop(stdin);
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "ip -batch failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Checks the end state with `ip -j` (see the module doc).
fn check_end_state(target: &Target<'_>) -> Result<()> {
    let json = |command: &mut Command| -> Result<Value> {
        Ok(serde_json::from_slice(&run_ok(command)?.stdout)?)
    };
    let host = json(Command::new("ip").args(["-j", "-d", "link", "show", &target.host]))?;
    let host = &host[0];
    ensure!(host["master"] == BRIDGE, "host end not on {BRIDGE}: {host}");
    ensure!(is_up(host), "host end is down: {host}");
    ensure!(host["mtu"] == MTU, "host end MTU: {host}");
    let hairpin = &host["linkinfo"]["info_slave_data"]["hairpin"];
    ensure!(*hairpin == true, "hairpin is off: {host}");

    let links = json(nsenter_ip(target).args(["-j", "addr", "show"]))?;
    let links = links.as_array().context("ip -j addr: not a list")?;
    let link = |name: &str| links.iter().find(|l| l["ifname"] == name);
    let lo = link("lo").context("no lo inside")?;
    ensure!(is_up(lo), "lo is down inside");
    let eth0 = link("eth0").context("no eth0 inside")?;
    let mac = mac_for(target.ip).map(|b| format!("{b:02x}")).join(":");
    ensure!(eth0["address"] == mac.as_str(), "eth0 MAC: {eth0}");
    ensure!(
        is_up(eth0) && eth0["mtu"] == MTU,
        "eth0 down or MTU: {eth0}"
    );
    let has_address = eth0["addr_info"].as_array().is_some_and(|list| {
        list.iter().any(|a| {
            a["family"] == "inet"
                && a["local"] == target.ip.to_string().as_str()
                && a["prefixlen"] == PREFIX
        })
    });
    ensure!(has_address, "eth0 lacks {}/{PREFIX}: {eth0}", target.ip);

    let routes = json(nsenter_ip(target).args(["-j", "route", "show"]))?;
    let default = routes.as_array().and_then(|routes| {
        routes.iter().find(|r| {
            r["dst"] == "default"
                && r["gateway"] == GATEWAY.to_string().as_str()
                && r["dev"] == "eth0"
        })
    });
    ensure!(
        default.is_some(),
        "no default route via {GATEWAY}: {routes}"
    );
    Ok(())
}

fn is_up(link: &Value) -> bool {
    link["flags"]
        .as_array()
        .is_some_and(|flags| flags.iter().any(|f| f == "UP"))
}

/// CPU time of the calling thread (exact: the scheduler's runtime).
fn thread_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// System and user CPU of the calling thread (`getrusage(RUSAGE_THREAD)`:
/// the thread's exact runtime, split by sampled ticks).
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    system: Duration,
    user: Duration,
}

impl Usage {
    fn now() -> Usage {
        // SAFETY: an all-zero rusage is a valid value of the C struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage writes into the rusage we own.
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
        let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        Usage {
            system: time(usage.ru_stime),
            user: time(usage.ru_utime),
        }
    }

    fn minus(self, earlier: Usage) -> Usage {
        Usage {
            system: self.system.saturating_sub(earlier.system),
            user: self.user.saturating_sub(earlier.user),
        }
    }

    fn plus(self, other: Usage) -> Usage {
        Usage {
            system: self.system + other.system,
            user: self.user + other.user,
        }
    }
}
