//! `network-throughput`: TCP throughput (`iperf3`, one stream and eight)
//! into a container, three ways, from two places, in one run.
//!
//! ```text
//!   outside netns                 engine netns (private)            container netns
//!   eth0 10.99.0.1/24 <-veth->    ext0 10.99.0.2/24
//!   10.200/16 via 10.99.0.2       vmctl0 10.200.0.1/16 <-veth->     eth0 10.200.0.2/16
//!                                 nftables table `vmctl`            iperf3 -s -p 5201
//!                                 socat :15202 → 10.200.0.2:5201
//! ```
//!
//! The engine's side is made by the engine's code: the bridge and the
//! container's veth by `Netlink`, `ip_forward` and `route_localnet` on the
//! bridge by `sysctl`, and the table by `Firewall::apply` with one
//! published port, `15201 → 10.200.0.2:5201` (DNAT, masquerade). The
//! outside namespace (standing in for the LAN) is wired with `ip`.
//!
//! Rows, each with `-P 1` and `-P 8`, from the engine's namespace and from
//! the outside:
//! - **direct**: to `10.200.0.2:5201` (from the outside, routed through the
//!   engine's namespace): the reference.
//! - **published**: to the published port: `127.0.0.1:15201` from the
//!   engine's namespace (DNAT in the output chain: what `docker run -p`
//!   users hit on the engine's host), `10.99.0.2:15201` from the outside
//!   (DNAT in prerouting, then forwarded).
//! - **socat**: to a `socat TCP-LISTEN:15202,fork,reuseaddr` proxy beside the
//!   engine: a userspace proxy such as Docker's `docker-proxy`.
//!
//! Each row: a warmup of 1 s, then 3 runs of 3 s, interleaved (one run of
//! every row per round, in a rotating order); `iperf3 -J`, the receiver's
//! sum in Gbit/s. The ratio is to the direct row of the same origin and
//! stream count.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use tokio::runtime::Runtime;
use vmctl_guest::network::netlink::{mac_for, veth_name, InterfaceConfig, Netlink, VethSpec};
use vmctl_guest::network::nft::{Firewall, FirewallState, NetworkRules, PortRule, Protocol};
use vmctl_guest::network::sysctl;

use crate::machine::on_path;
use crate::network::{self, run_ok, Holder, BRIDGE, GATEWAY, MTU, PREFIX};

const SERVER_PORT: u16 = 5201;
const PUBLISHED_PORT: u16 = 15201;
const SOCAT_PORT: u16 = 15202;
const SECONDS: u32 = 3;
const WARMUP_SECONDS: u32 = 1;
const RUNS: usize = 3;
const STREAMS: [u32; 2] = [1, 8];
/// The goal of issue 3: published port ≥ 0.9× direct.
const GOAL_RATIO: f64 = 0.9;

/// The outside network (see the module doc).
const OUTSIDE_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const ENGINE_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
const ENGINE_LINK: &str = "ext0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Engine,
    Outside,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Direct,
    Published,
    Socat,
}

/// One row of the table: its samples in Gbit/s.
#[derive(Debug, Clone)]
struct Row {
    origin: Origin,
    route: Route,
    streams: u32,
    samples: Vec<f64>,
}

/// The outcome of the throughput part.
pub struct Throughput {
    rows: Vec<Row>,
    skipped: Vec<(String, String)>,
    goals: Vec<String>,
}

/// A process killed (and reaped) when dropped.
struct Background(Child);

impl Background {
    /// Spawns `command` with null stdio.
    fn spawn(command: &mut Command) -> std::io::Result<Background> {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Background(child))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The namespaces and processes of the part, alive while it runs.
struct Setup {
    _container: Holder,
    outside: Holder,
    container_ip: Ipv4Addr,
    _server: Background,
    _socat: Option<Background>,
}

/// Runs the part in the calling thread's (private) network namespace.
pub fn run(rt: &Runtime) -> Result<Throughput> {
    let mut skipped = Vec::new();
    if let Some(tool) = ["iperf3", "ip", "nsenter", "ss"]
        .into_iter()
        .find(|tool| !on_path(tool))
    {
        skipped.push((
            "every row".to_owned(),
            format!("{tool} is not on PATH (apt-get install iperf3 iproute2 util-linux)"),
        ));
        return Ok(Throughput {
            rows: Vec::new(),
            skipped,
            goals: Vec::new(),
        });
    }
    let with_socat = on_path("socat");
    if !with_socat {
        skipped.push((
            "socat".to_owned(),
            "socat is not on PATH (apt-get install socat)".to_owned(),
        ));
    }
    let setup = set_up(rt, with_socat)?;
    let mut rows = Vec::new();
    for origin in [Origin::Engine, Origin::Outside] {
        for streams in STREAMS {
            for route in [Route::Direct, Route::Published, Route::Socat] {
                if route != Route::Socat || with_socat {
                    rows.push(Row {
                        origin,
                        route,
                        streams,
                        samples: Vec::new(),
                    });
                }
            }
        }
    }
    for round in 0..=RUNS {
        let seconds = if round == 0 { WARMUP_SECONDS } else { SECONDS };
        for k in 0..rows.len() {
            let index = (round + k) % rows.len();
            let row = &rows[index];
            let gbps = setup
                .iperf3(row.origin, row.route, row.streams, seconds)
                .with_context(|| format!("{} failed in round {round}", row.name()))?;
            if round > 0 {
                rows[index].samples.push(gbps);
            }
        }
    }
    let goals = goals(&rows);
    Ok(Throughput {
        rows,
        skipped,
        goals,
    })
}

/// Makes the engine's side with the engine's code, the outside with `ip`,
/// and starts the iperf3 server and socat.
fn set_up(rt: &Runtime, with_socat: bool) -> Result<Setup> {
    let _context = rt.enter();
    run_ok(Command::new("ip").args(["link", "set", "lo", "up"]))?;
    let netlink = Netlink::new().context("cannot open a netlink socket")?;
    let bridge = rt
        .block_on(netlink.ensure_bridge(&network::bridge_spec()?))
        .context("cannot create the bridge")?;
    sysctl::set("net.ipv4.ip_forward", "1")?;
    sysctl::set_path(&["net", "ipv4", "conf", BRIDGE, "route_localnet"], "1")?;
    let container = Holder::spawn()?;
    let container_ip = network::container_ip(0);
    rt.block_on(engine_side(&netlink, bridge, &container, container_ip))
        .context("cannot set up the container's network")?;
    let outside = Holder::spawn()?;
    wire_outside(&outside)?;

    let mut server = container.command("iperf3");
    server.args(["-s", "-p", &SERVER_PORT.to_string()]);
    let server = Background::spawn(&mut server).context("cannot start iperf3 -s")?;
    wait_listening(container.command("ss"), SERVER_PORT)?;
    let socat = if with_socat {
        let listen = format!("TCP-LISTEN:{SOCAT_PORT},fork,reuseaddr");
        let connect = format!("TCP:{container_ip}:{SERVER_PORT}");
        let socat = Background::spawn(Command::new("socat").args([&listen, &connect]));
        let socat = socat.context("cannot start socat")?;
        wait_listening(Command::new("ss"), SOCAT_PORT)?;
        Some(socat)
    } else {
        None
    };
    Ok(Setup {
        _container: container,
        outside,
        container_ip,
        _server: server,
        _socat: socat,
    })
}

/// The container's interface and the published port, as the engine makes
/// them: `add_veth`, `configure` inside, then the firewall.
async fn engine_side(
    netlink: &Netlink,
    bridge: u32,
    container: &Holder,
    container_ip: Ipv4Addr,
) -> Result<()> {
    let file = std::fs::File::open(container.netns())?;
    netlink
        .add_veth(&VethSpec {
            host_name: &veth_name("throughput", "bench"),
            bridge,
            mtu: Some(MTU),
            netns: file.as_fd(),
            peer_name: "eth0",
            peer_mac: mac_for(container_ip),
        })
        .await?;
    let inside = Netlink::in_netns(&container.netns())?;
    let config = InterfaceConfig {
        name: "eth0".to_owned(),
        address: format!("{container_ip}/{PREFIX}").parse()?,
        gateway: Some(GATEWAY),
        mtu: Some(MTU),
    };
    inside.configure(&config).await?;
    let state = FirewallState {
        networks: vec![NetworkRules {
            bridge: BRIDGE.to_owned(),
            subnet: format!("{GATEWAY}/{PREFIX}").parse()?,
            internal: false,
            masquerade: true,
            icc: true,
        }],
        ports: vec![PortRule {
            bridge: BRIDGE.to_owned(),
            protocol: Protocol::Tcp,
            host_ip: None,
            host_port: PUBLISHED_PORT,
            container_ip,
            container_port: SERVER_PORT,
        }],
        links: Vec::new(),
        ..Default::default()
    };
    Firewall::default().apply(&state).await?;
    Ok(())
}

/// The outside namespace: a veth to the engine's, addresses, and a route
/// to the containers' subnet through the engine (as a LAN router would).
fn wire_outside(outside: &Holder) -> Result<()> {
    let pid = outside.pid().to_string();
    let engine_cidr = format!("{ENGINE_ADDRESS}/24");
    let outside_cidr = format!("{OUTSIDE_ADDRESS}/24");
    let subnet = format!("{}/{PREFIX}", Ipv4Addr::from(u32::from(GATEWAY) - 1));
    let engine_address = ENGINE_ADDRESS.to_string();
    let here: [&[&str]; 3] = [
        &[
            "link",
            "add",
            ENGINE_LINK,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &pid,
        ],
        &["addr", "add", &engine_cidr, "dev", ENGINE_LINK],
        &["link", "set", ENGINE_LINK, "up"],
    ];
    for args in here {
        run_ok(Command::new("ip").args(args))?;
    }
    let inside: [&[&str]; 4] = [
        &["link", "set", "lo", "up"],
        &["addr", "add", &outside_cidr, "dev", "eth0"],
        &["link", "set", "eth0", "up"],
        &["route", "add", &subnet, "via", &engine_address],
    ];
    for args in inside {
        run_ok(outside.command("ip").args(args))?;
    }
    Ok(())
}

/// Waits until `ss` (in some namespace) shows a TCP listener on `port`.
/// (A test connection would disturb iperf3's server.)
fn wait_listening(mut ss: Command, port: u16) -> Result<()> {
    ss.args(["-Hltn", &format!("sport = :{port}")]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if !run_ok(&mut ss)?.stdout.is_empty() {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Setup {
    /// One `iperf3 -c` run: the receiver's throughput in Gbit/s.
    fn iperf3(&self, origin: Origin, route: Route, streams: u32, seconds: u32) -> Result<f64> {
        let target = match (origin, route) {
            (_, Route::Direct) => SocketAddrV4::new(self.container_ip, SERVER_PORT),
            (Origin::Engine, Route::Published) => {
                SocketAddrV4::new(Ipv4Addr::LOCALHOST, PUBLISHED_PORT)
            }
            (Origin::Engine, Route::Socat) => SocketAddrV4::new(Ipv4Addr::LOCALHOST, SOCAT_PORT),
            (Origin::Outside, Route::Published) => {
                SocketAddrV4::new(ENGINE_ADDRESS, PUBLISHED_PORT)
            }
            (Origin::Outside, Route::Socat) => SocketAddrV4::new(ENGINE_ADDRESS, SOCAT_PORT),
        };
        // The server takes one test at a time and a moment to get ready
        // for the next; it says "busy" until then.
        for _ in 0..20 {
            let mut command = match origin {
                Origin::Engine => Command::new("timeout"),
                Origin::Outside => self.outside.command("timeout"),
            };
            command.args([
                (seconds + 30).to_string(),
                "iperf3".into(),
                "-c".into(),
                target.ip().to_string(),
                "-p".into(),
                target.port().to_string(),
                "-t".into(),
                seconds.to_string(),
                "-P".into(),
                streams.to_string(),
                "-J".into(),
            ]);
            let out = command
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .context("cannot run iperf3")?;
            let report: Value = serde_json::from_slice(&out.stdout)
                .with_context(|| format!("iperf3 to {target} ({}) wrote no JSON", out.status))?;
            if let Some(error) = report["error"].as_str() {
                if error.contains("busy") {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                bail!("iperf3 to {target}: {error}");
            }
            ensure!(out.status.success(), "iperf3 to {target}: {}", out.status);
            let bits = report["end"]["sum_received"]["bits_per_second"].as_f64();
            return Ok(bits.context("iperf3 JSON without end.sum_received")? / 1e9);
        }
        bail!("iperf3's server in the container stayed busy")
    }
}

/// One goal line per published row: its median against the direct row's.
fn goals(rows: &[Row]) -> Vec<String> {
    let mut goals = Vec::new();
    for row in rows.iter().filter(|r| r.route == Route::Published) {
        let (Some(published), Some(direct)) = (median(&row.samples), direct_of(rows, row)) else {
            continue;
        };
        let ratio = published / direct;
        let verdict = if ratio >= GOAL_RATIO { "MET" } else { "MISSED" };
        goals.push(format!(
            "published ≥ {GOAL_RATIO}× direct, {}: {verdict} ({ratio:.2}×: {published:.2} vs {direct:.2} Gbit/s)",
            row.group()
        ));
    }
    goals
}

/// The median of the direct row of `row`'s origin and stream count.
fn direct_of(rows: &[Row], row: &Row) -> Option<f64> {
    rows.iter()
        .find(|r| r.route == Route::Direct && r.origin == row.origin && r.streams == row.streams)
        .and_then(|r| median(&r.samples))
}

fn median(samples: &[f64]) -> Option<f64> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

impl Row {
    /// `from the engine ns, -P 1` or `from outside, -P 8`.
    fn group(&self) -> String {
        let origin = match self.origin {
            Origin::Engine => "from the engine ns",
            Origin::Outside => "from outside",
        };
        format!("{origin}, -P {}", self.streams)
    }

    fn name(&self) -> String {
        let route = match self.route {
            Route::Direct => "direct",
            Route::Published => "published",
            Route::Socat => "socat",
        };
        let origin = match self.origin {
            Origin::Engine => "engine",
            Origin::Outside => "outside",
        };
        format!("{origin} -P{}: {route}", self.streams)
    }

    fn note(&self) -> &'static str {
        match (self.origin, self.route) {
            (_, Route::Direct) => "10.200.0.2:5201 (container IP)",
            (Origin::Engine, Route::Published) => "127.0.0.1:15201, DNAT in output",
            (Origin::Outside, Route::Published) => "10.99.0.2:15201, DNAT in prerouting",
            (Origin::Engine, Route::Socat) => "127.0.0.1:15202, socat → 10.200.0.2:5201",
            (Origin::Outside, Route::Socat) => "10.99.0.2:15202, socat → 10.200.0.2:5201",
        }
    }
}

impl Throughput {
    /// The table, as printed on stdout.
    pub fn table(&self) -> String {
        let mut out = format!(
            "\n== network-throughput — iperf3 TCP into a container, Gbit/s \
             ({RUNS} runs of {SECONDS} s after a {WARMUP_SECONDS} s warmup, interleaved)\n"
        );
        out += &format!(
            "{:<28} {:>9} {:>9} {:>9} {:>9}  {}\n",
            "contender", "median", "min", "max", "×direct", "what"
        );
        for row in &self.rows {
            let mut sorted = row.samples.clone();
            sorted.sort_by(f64::total_cmp);
            let (Some(median), Some(min), Some(max)) =
                (median(&sorted), sorted.first(), sorted.last())
            else {
                continue;
            };
            let ratio = direct_of(&self.rows, row)
                .filter(|d| *d > 0.0)
                .map_or_else(|| "-".to_owned(), |d| format!("{:.2}", median / d));
            out += &format!(
                "{:<28} {:>9.2} {:>9.2} {:>9.2} {:>9}  {}\n",
                row.name(),
                median,
                min,
                max,
                ratio,
                row.note()
            );
        }
        for (peer, why) in &self.skipped {
            out += &format!("SKIPPED {peer}: {why}\n");
        }
        for goal in &self.goals {
            out += &format!("goal: {goal}\n");
        }
        out
    }

    /// The JSON object of this part.
    pub fn json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                let median = median(&row.samples);
                json!({
                    "name": row.name(),
                    "note": row.note(),
                    "streams": row.streams,
                    "median_gbps": median,
                    "min_gbps": row.samples.iter().copied().reduce(f64::min),
                    "max_gbps": row.samples.iter().copied().reduce(f64::max),
                    "ratio_to_direct": median.zip(direct_of(&self.rows, row)).map(|(m, d)| m / d),
                    "samples_gbps": row.samples,
                })
            })
            .collect();
        json!({
            "bench": "network-throughput",
            "workload": "iperf3 TCP into a container: direct, published port, socat",
            "runs": RUNS,
            "seconds_per_run": SECONDS,
            "warmups": 1,
            "warmup_seconds": WARMUP_SECONDS,
            "reference": "direct (same origin and stream count)",
            "results": rows,
            "skipped": self
                .skipped
                .iter()
                .map(|(peer, why)| json!({ "peer": peer, "reason": why }))
                .collect::<Vec<_>>(),
            "goals": self.goals,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(origin: Origin, route: Route, streams: u32, samples: &[f64]) -> Row {
        Row {
            origin,
            route,
            streams,
            samples: samples.to_vec(),
        }
    }

    #[test]
    fn ratios_and_goals_compare_to_the_direct_row_of_the_same_group() {
        let rows = vec![
            row(Origin::Engine, Route::Direct, 1, &[10.0, 12.0, 11.0]),
            row(Origin::Engine, Route::Published, 1, &[10.0, 9.5, 10.5]),
            row(Origin::Engine, Route::Socat, 1, &[2.0, 2.2, 2.1]),
            row(Origin::Outside, Route::Direct, 8, &[20.0]),
            row(Origin::Outside, Route::Published, 8, &[15.0]),
        ];
        let goals = goals(&rows);
        assert_eq!(goals.len(), 2);
        assert!(
            goals[0].contains("from the engine ns, -P 1: MET (0.91×"),
            "{goals:?}"
        );
        assert!(
            goals[1].contains("from outside, -P 8: MISSED (0.75×"),
            "{goals:?}"
        );
        let table = Throughput {
            rows,
            skipped: Vec::new(),
            goals,
        }
        .table();
        assert!(table.contains("engine -P1: socat"), "{table}");
        assert!(table.contains("0.19"), "{table}");
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
