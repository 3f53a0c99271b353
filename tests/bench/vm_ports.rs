//! `vm-ports`: a desktop port forward into the VM against its ceiling and
//! its peer, on the same VM in the same run. The far end is `netpeer` (see
//! `vmctl_tests::netpeer`) in host-network containers of the VM:
//!
//! - **vmctl forward**: `vmctl port add` rules, desktop 127.0.0.1 → host
//!   daemon → vsock → the guest's forward service → 127.0.0.1:7001/7002 in
//!   the VM (the same path as a published container port, minus the bridge);
//! - **raw vsock** (the ceiling): the desktop connects straight to the
//!   vhost-user vsock socket (`CONNECT 7003/7004`), netpeer listens on
//!   AF_VSOCK in the VM — no daemon, no forward service, no TCP in the VM;
//! - **QEMU hostfwd** (the peer, what Lima and Podman machine use in some
//!   setups): QEMU's user-mode network forwards 127.0.0.1 → the VM's
//!   10.0.2.15:7001/7002 (`VMCTL_QEMU_HOSTFWD`).
//!
//! Two workloads per path: **throughput**, one connection carrying 64 MiB
//! to a sink that answers when it has them all (runs × 1 transfer); and
//! **latency**, 64-byte round trips to an echo on one warm connection.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use vmctl_tests::vm::VmHome;

use crate::report::{Derived, Report, Series};

pub const NAMES: [&str; 3] = ["vm-ports", "vm-ports-ideas", "vm-ports-soak"];

const TRANSFER: usize = 64 << 20;
const CHUNK: usize = 256 << 10;
const MESSAGE: usize = 64;

/// The VM-side ports: TCP echo, TCP sink, vsock echo, vsock sink.
const ECHO: u16 = 7001;
const SINK: u16 = 7002;
const VSOCK_ECHO: u32 = 7003;
const VSOCK_SINK: u32 = 7004;
const UDP_ECHO: u16 = 7005;
const UDP_SINK: u16 = 7006;

/// The UDP throughput row: datagrams of this size, this many bytes in all.
const DATAGRAM: usize = 1400;
const UDP_TRANSFER: usize = 16 << 20;

/// Round trips timed per path before the next path takes its turn.
const LATENCY_BLOCK: usize = 100;

trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

/// One way from the desktop to the far end, opening echo (`true`) or sink
/// (`false`) connections.
struct Path {
    name: String,
    note: String,
    open: Box<dyn Fn(bool) -> Result<Box<dyn Conn>>>,
}

impl Path {
    fn new(name: &str, note: &str, open: impl Fn(bool) -> Result<Box<dyn Conn>> + 'static) -> Path {
        Path {
            name: name.into(),
            note: note.into(),
            open: Box::new(open),
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn tcp(port: u16) -> Result<Box<dyn Conn>> {
    tcp_to(std::net::Ipv4Addr::LOCALHOST, port)
}

fn tcp_to(address: std::net::Ipv4Addr, port: u16) -> Result<Box<dyn Conn>> {
    let stream = TcpStream::connect((address, port))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    Ok(Box::new(stream))
}

/// One VM of the bench: a private home, its machine started, netpeer loaded.
struct Machine {
    home: VmHome,
    docker_host: String,
    /// Another vmctl binary to run this machine with (an earlier build).
    vmctl: Option<PathBuf>,
}

/// The forwarded ports of a [`Machine`] (echo, sink) and the bridged
/// containers' addresses (echo, sink).
struct Forwards {
    rule: (u16, u16),
    published: (u16, u16),
    bridged: Vec<String>,
}

impl Machine {
    /// Inits and starts a machine (from `image`, else the default image),
    /// with QEMU's `hostfwd` rules where given, and loads netpeer.
    fn start(
        image: Option<PathBuf>,
        vmctl: Option<PathBuf>,
        hostfwd: &str,
        env: Option<(String, String)>,
    ) -> Result<Machine> {
        let machine = Machine {
            home: VmHome::new(),
            docker_host: String::new(),
            vmctl,
        };
        let init = [
            "machine", "init", "--cpus", "2", "--memory", "1024", "--disk", "2",
        ];
        let with = |command: &mut std::process::Command| {
            if let Some(image) = &image {
                command.env("VMCTL_VM_IMAGE", image);
            }
            if !hostfwd.is_empty() {
                command.env("VMCTL_QEMU_HOSTFWD", hostfwd);
            }
            if let Some((key, value)) = &env {
                command.env(key, value);
            }
        };
        machine.vmctl(&init, with)?;
        machine.vmctl(&["machine", "start"], with)?;
        let docker_host = format!("unix://{}", machine.home.docker_socket("default").display());
        let machine = Machine {
            docker_host,
            ..machine
        };
        let tar = vmctl_tests::netpeer::image_tar().display().to_string();
        machine.docker(&["load", "-q", "-i", &tar])?;
        Ok(machine)
    }

    fn vmctl(&self, args: &[&str], with: impl Fn(&mut std::process::Command)) -> Result<String> {
        let mut command = self.home.vmctl_command(args);
        if let Some(binary) = &self.vmctl {
            let mut other = std::process::Command::new(binary);
            other.args(args).stdin(std::process::Stdio::null());
            for (key, value) in command.get_envs() {
                if let Some(value) = value {
                    other.env(key, value);
                }
            }
            command = other;
        }
        with(&mut command);
        let out = command.output()?;
        ensure!(
            out.status.success(),
            "vmctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn docker(&self, args: &[&str]) -> Result<String> {
        let out = self.home.docker(&self.docker_host, args);
        ensure!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// A host-network netpeer: `--security-opt seccomp=unconfined` because
    /// Docker's default profile refuses AF_VSOCK sockets.
    fn peer(&self, env: &[&str], args: &[&str]) -> Result<String> {
        let mut all = vec![
            "run",
            "-d",
            "--network",
            "host",
            "--security-opt",
            "seccomp=unconfined",
        ];
        for e in env {
            all.extend(["-e", e]);
        }
        all.push(vmctl_tests::netpeer::IMAGE);
        all.extend(args);
        self.docker(&all)
    }

    /// A UDP echo and sink in bridged containers behind published ports.
    fn publish_udp(&self) -> Result<(u16, u16)> {
        let published = (free_port()?, free_port()?);
        for (mode, port, on) in [
            ("udp-echo", UDP_ECHO, published.0),
            ("udp-sink", UDP_SINK, published.1),
        ] {
            self.published_peer(&format!("127.0.0.1:{on}:{port}/udp"), mode, port)?;
        }
        Ok(published)
    }

    /// netpeer `mode` on `port` in a bridged container published as
    /// `publish`; its id.
    fn published_peer(&self, publish: &str, mode: &str, port: u16) -> Result<String> {
        self.docker(&[
            "run",
            "-d",
            "-p",
            publish,
            vmctl_tests::netpeer::IMAGE,
            mode,
            &port.to_string(),
        ])
    }

    /// The TCP echo and sink on the VM's loopback behind two `vmctl port`
    /// rules, and the same in two bridged containers behind published ports.
    fn forwards(&self) -> Result<Forwards> {
        for (mode, port) in [("tcp-echo", ECHO), ("tcp-sink", SINK)] {
            self.peer(&[], &[mode, &port.to_string()])?;
        }
        let rule = (free_port()?, free_port()?);
        for (name, from, to) in [("bench-echo", rule.0, ECHO), ("bench-sink", rule.1, SINK)] {
            self.vmctl(&["port", "add", name, &format!("{from}:{to}")], |_| ())?;
        }
        let published = (free_port()?, free_port()?);
        let mut bridged = Vec::new();
        for (mode, port, on) in [
            ("tcp-echo", ECHO, published.0),
            ("tcp-sink", SINK, published.1),
        ] {
            let id = self.published_peer(&format!("127.0.0.1:{on}:{port}"), mode, port)?;
            bridged.push(self.docker(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", &id])?);
        }
        Ok(Forwards {
            rule,
            published,
            bridged,
        })
    }
}

/// `vm-ports`: raw vsock, the two vmctl forwards (a `vmctl port` rule, a
/// published container port) and QEMU hostfwd. `vm-ports-ideas` adds bare
/// relays in the VM (netpeer's `vsock-relay`) reached over raw vsock, each
/// one idea for the forward's guest side, and raw vsock with a larger buffer.
pub fn run(name: &str, runs: Option<usize>, warmups: Option<usize>) -> Result<Vec<Report>> {
    if let Some(reason) = vmctl_tests::vm::missing_vm_prerequisite() {
        println!("SKIPPED {name}: {reason}");
        return Ok(Vec::new());
    }
    let ideas = name == "vm-ports-ideas";
    let (qemu_echo, qemu_sink) = (free_port()?, free_port()?);
    let (qemu_udp_echo, qemu_udp_sink) = (free_port()?, free_port()?);
    let hostfwd = format!(
        "tcp:127.0.0.1:{qemu_echo}-:{ECHO};tcp:127.0.0.1:{qemu_sink}-:{SINK};\
         udp:127.0.0.1:{qemu_udp_echo}-:{UDP_ECHO};udp:127.0.0.1:{qemu_udp_sink}-:{UDP_SINK}"
    );
    let machine = Machine::start(None, None, &hostfwd, None)?;
    let home = &machine.home;
    for (mode, port) in [
        ("vsock-echo", VSOCK_ECHO),
        ("vsock-sink", VSOCK_SINK),
        ("udp-echo", u32::from(UDP_ECHO)),
        ("udp-sink", u32::from(UDP_SINK)),
    ] {
        machine.peer(&[], &[mode, &port.to_string()])?;
    }
    let Forwards {
        rule: (forward_echo, forward_sink),
        published: (published_echo, published_sink),
        bridged,
    } = machine.forwards()?;
    // `VMCTL_BENCH_BEFORE=DIR`: a second VM from the image in DIR (an
    // earlier guest; `-`: this one), run by `VMCTL_BENCH_BEFORE_VMCTL` (an
    // earlier vmctl) where given, with `VMCTL_BENCH_BEFORE_ENV=KEY=VALUE` in
    // its environment (`VMCTL_LINK=0`: published ports over vsock), whose
    // two forwards join the same interleaved runs.
    let before = match std::env::var_os("VMCTL_BENCH_BEFORE") {
        Some(dir) if !ideas => {
            let vmctl = std::env::var_os("VMCTL_BENCH_BEFORE_VMCTL").map(PathBuf::from);
            let image = (dir != "-").then(|| PathBuf::from(dir));
            let env = std::env::var("VMCTL_BENCH_BEFORE_ENV").ok().and_then(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
            });
            let before = Machine::start(image, vmctl, "", env)?;
            let forwards = before.forwards()?;
            Some((before, forwards))
        }
        _ => None,
    };
    let vsock = home.machine_run("default").join("vm.vsock");
    let raw = move |port: u32| -> Result<Box<dyn Conn>> {
        let stream = crate::vm::hybrid_connect(&vsock, port)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Box::new(stream))
    };
    let raw = std::rc::Rc::new(raw);
    let on = |echo_port: u32, sink_port: u32| {
        let raw = raw.clone();
        move |echo: bool| raw(if echo { echo_port } else { sink_port })
    };
    let mut paths = vec![
        Path::new(
            "raw vsock",
            "CONNECT on the vhost-user socket → AF_VSOCK in the VM",
            on(VSOCK_ECHO, VSOCK_SINK),
        ),
        Path::new(
            "vmctl port rule",
            "127.0.0.1 → daemon → forward link (or vsock → forward service) → 127.0.0.1 in the VM",
            move |echo| tcp(if echo { forward_echo } else { forward_sink }),
        ),
        Path::new(
            "vmctl published",
            "docker run -p: 127.0.0.1 → daemon → forward link (or vsock → forward service) → container",
            move |echo| tcp(if echo { published_echo } else { published_sink }),
        ),
        Path::new(
            "QEMU hostfwd",
            "127.0.0.1 → QEMU user-mode net (slirp) → TCP in the VM",
            move |echo| tcp(if echo { qemu_echo } else { qemu_sink }),
        ),
    ];
    // The guest's forward service reached straight over raw vsock, as the
    // daemon reaches it (secret, framing, header), without the daemon.
    let secret = std::fs::read(home.machine_run("default").join("vm.secret"))?;
    let secret = vmctl_proto::auth::Secret::from_bytes(&secret)?;
    let vsock = home.machine_run("default").join("vm.vsock");
    let console = home.machine_data("default").join("console.log");
    paths.insert(
        1,
        Path::new(
            "forward service",
            "raw vsock → the guest's forward service → 127.0.0.1 in the VM (no daemon)",
            move |echo| {
                let port = if echo { ECHO } else { SINK };
                let stream = crate::vm::hybrid_connect(&vsock, vmctl_proto::VSOCK_PORT_FORWARD)?;
                stream.set_read_timeout(Some(Duration::from_secs(60)))?;
                let mut conn = vmctl_proto::framing::FramedSync::new(stream);
                vmctl_proto::auth::connect_blocking(
                    &mut conn,
                    &secret,
                    vmctl_proto::VSOCK_PORT_FORWARD,
                )
                .with_context(|| {
                    let log = std::fs::read_to_string(&console).unwrap_or_default();
                    format!("the guest's console:\n{}", vmctl_tests::tail(&log, 15))
                })?;
                let header = vmctl_proto::forward::ForwardHeader {
                    protocol: vmctl_proto::ports::Protocol::Tcp,
                    target: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                    origin: vmctl_proto::forward::Origin::Rule,
                };
                conn.write_all(&header.encode())?;
                let mut reply = [0u8; 1];
                conn.read_exact(&mut reply)?;
                ensure!(reply[0] == 0, "the forward service refused");
                Ok(Box::new(conn) as Box<dyn Conn>)
            },
        ),
    );
    if let Some((_, forwards)) = &before {
        let (echo, sink) = forwards.rule;
        paths.push(Path::new(
            "before: vmctl port rule",
            "the same rule on a VM of the earlier guest ($VMCTL_BENCH_BEFORE)",
            move |e| tcp(if e { echo } else { sink }),
        ));
        let (echo, sink) = forwards.published;
        paths.push(Path::new(
            "before: vmctl published",
            "the same published port on that VM",
            move |e| tcp(if e { echo } else { sink }),
        ));
    }
    if ideas {
        // Each relay listens on vsock (echo, sink) and joins to the peers.
        let (one, two) = (
            "NETPEER_VSOCK_BUFFER=1048576",
            "NETPEER_VSOCK_BUFFER=2097152",
        );
        // (row, note, netpeer's environment, first vsock port, relay, to)
        type Idea<'a> = (&'a str, &'a str, &'a [&'a str], u32, &'a str, &'a str);
        let plan: [Idea; 6] = [
            (
                "raw vsock, 2 MiB buffer",
                "raw vsock, SO_VM_SOCKETS_BUFFER_SIZE 2 MiB in the VM",
                &[two],
                7010,
                "",
                "",
            ),
            (
                "relay: copy",
                "raw vsock → read/write relay → 127.0.0.1 in the VM",
                &[],
                7020,
                "copy",
                "127.0.0.1",
            ),
            (
                "relay: copy, 1 MiB buffer",
                "the same, vsock buffer 1 MiB",
                &[one],
                7060,
                "copy",
                "127.0.0.1",
            ),
            (
                "relay: copy, 2 MiB buffer",
                "the same, vsock buffer 2 MiB",
                &[two],
                7030,
                "copy",
                "127.0.0.1",
            ),
            (
                "relay: splice, 2 MiB buffer",
                "raw vsock → splice(2) through a pipe → 127.0.0.1, vsock buffer 2 MiB",
                &[two],
                7040,
                "splice",
                "127.0.0.1",
            ),
            (
                "relay: copy → bridge, 2 MiB",
                "read/write relay to the bridged containers' addresses",
                &[two],
                7050,
                "copy",
                "bridge",
            ),
        ];
        for (name, note, env, base, how, to) in plan {
            let (echo_port, sink_port) = (base + 1, base + 2);
            if how.is_empty() {
                machine.peer(env, &["vsock-echo", &echo_port.to_string()])?;
                machine.peer(env, &["vsock-sink", &sink_port.to_string()])?;
            } else {
                for (port, target_port, index) in [(echo_port, ECHO, 0), (sink_port, SINK, 1)] {
                    let address = if to == "bridge" {
                        bridged[index].as_str()
                    } else {
                        to
                    };
                    let target = format!("{address}:{target_port}");
                    machine.peer(env, &["vsock-relay", &port.to_string(), &target, how])?;
                }
            }
            paths.push(Path::new(name, note, on(echo_port, sink_port)));
        }
    }
    // VMCTL_BENCH_NIC=ADDRESS (vm-ports-ideas): the VM's second NIC, a
    // QEMU `-netdev tap` that a $VMCTL_QEMU wrapper added (BENCHMARKS.md),
    // gets ADDRESS/24 and MTU 65520, and a row reaches the VM's echo and
    // sink through it: published ports through the NIC, with the host
    // kernel's TCP standing in for a user-space TCP/IP stack in the daemon
    // (what vpnkit and gvisor-tap-vsock are), at its best.
    if let (true, Ok(address)) = (ideas, std::env::var("VMCTL_BENCH_NIC")) {
        let tar = vmctl_tests::builtin_images().join("hello.tar");
        machine.docker(&["load", "-q", "-i", &tar.display().to_string()])?;
        let setup = format!("ip link set eth1 mtu 65520 up && ip addr add {address}/24 dev eth1");
        machine.docker(&[
            "run",
            "--rm",
            "--privileged",
            "--network",
            "host",
            "hello:latest",
            "sh",
            "-c",
            &setup,
        ])?;
        let address: std::net::Ipv4Addr = address.parse().context("VMCTL_BENCH_NIC")?;
        paths.push(Path::new(
            "NIC: tap, host TCP",
            "host kernel TCP → tap → QEMU virtio-net (MTU 65520) → TCP in the VM",
            move |echo| tcp_to(address, if echo { ECHO } else { SINK }),
        ));
    }
    // Every far end answers before anything is timed.
    for path in &paths {
        let ready = vmctl_tests::eventually(Duration::from_secs(60), || {
            (path.open)(true).is_ok_and(|mut c| round_trip(c.as_mut()).is_ok())
        });
        ensure!(ready, "{}: the echo never answered", path.name);
    }

    if name == "vm-ports-soak" {
        let daemon = home
            .pid("default", "daemon.pid")
            .context("the daemon's pid")?;
        let report = soak(daemon, published_echo);
        let _ = home.vmctl(&["machine", "stop"]);
        drop(before);
        return Ok(vec![report?]);
    }

    // Throughput: each round runs every path once, starting one further on.
    let runs_throughput = runs.unwrap_or(5);
    let warmups_throughput = warmups.unwrap_or(1);
    let mut throughput: Vec<Series> = paths
        .iter()
        .map(|p| Series::new(&p.name, &p.note))
        .collect();
    for round in 0..runs_throughput + warmups_throughput {
        for k in 0..paths.len() {
            let i = (round + k) % paths.len();
            let mut conn = (paths[i].open)(false)?;
            let started = Instant::now();
            transfer(conn.as_mut()).with_context(|| paths[i].name.clone())?;
            if round >= warmups_throughput {
                throughput[i].samples.push(started.elapsed());
            }
        }
    }
    // Latency: one warm connection per path, blocks of round trips in turn.
    let blocks = runs.unwrap_or(20);
    let warmup_blocks = warmups.unwrap_or(2);
    let mut latency: Vec<Series> = paths
        .iter()
        .map(|p| Series::new(&p.name, &p.note))
        .collect();
    let mut conns = paths
        .iter()
        .map(|p| (p.open)(true))
        .collect::<Result<Vec<_>>>()?;
    for block in 0..blocks + warmup_blocks {
        for k in 0..paths.len() {
            let i = (block + k) % paths.len();
            for _ in 0..LATENCY_BLOCK {
                let started = Instant::now();
                round_trip(conns[i].as_mut()).with_context(|| paths[i].name.clone())?;
                if block >= warmup_blocks {
                    latency[i].samples.push(started.elapsed());
                }
            }
        }
    }
    drop(conns);
    // New connections: open, one round trip, close; blocks of ten in turn.
    let connect_blocks = runs.map(|r| r * 2).unwrap_or(10);
    let mut connect: Vec<Series> = paths
        .iter()
        .map(|p| Series::new(&p.name, &p.note))
        .collect();
    for block in 0..connect_blocks + 1 {
        for k in 0..paths.len() {
            let i = (block + k) % paths.len();
            for _ in 0..10 {
                let started = Instant::now();
                let mut conn = (paths[i].open)(true)?;
                round_trip(conn.as_mut()).with_context(|| paths[i].name.clone())?;
                drop(conn);
                if block >= 1 {
                    connect[i].samples.push(started.elapsed());
                }
            }
        }
    }
    let udp_rows = if ideas {
        None
    } else {
        let published = machine.publish_udp()?;
        Some(udp(
            &[
                (
                    "vmctl published",
                    "docker run -p …/udp: 127.0.0.1 → daemon → forward link (or vsock → forward service) → container",
                    published,
                ),
                (
                    "QEMU hostfwd",
                    "127.0.0.1 → QEMU user-mode net (slirp) → UDP in the VM",
                    (qemu_udp_echo, qemu_udp_sink),
                ),
            ],
            runs,
            warmups,
            median(&throughput, "raw vsock"),
            median(&latency, "raw vsock"),
        )?)
    };
    let _ = home.vmctl(&["machine", "stop"]);
    if let Some((before, _)) = before {
        let _ = before.vmctl(&["machine", "stop"], |_| ());
    }

    let mib_per_s =
        |series: &[Series], name: &str| (TRANSFER >> 20) as f64 / (median(series, name) / 1000.0);
    let raw = mib_per_s(&throughput, "raw vsock");
    let qemu = mib_per_s(&throughput, "QEMU hostfwd");
    let mut goals = Vec::new();
    let mut rates = format!("{raw:.0} MiB/s raw vsock, {qemu:.0} MiB/s QEMU hostfwd");
    for forward in ["vmctl port rule", "vmctl published"] {
        let rate = mib_per_s(&throughput, forward);
        rates += &format!(", {rate:.0} MiB/s {forward}");
        goals.push(format!(
            "{forward} ≥ 0.8× raw vsock and > QEMU hostfwd: {} ({:.2}× raw, {:.2}× hostfwd)",
            if rate >= 0.8 * raw && rate > qemu {
                "met"
            } else {
                "missed"
            },
            rate / raw,
            rate / qemu,
        ));
    }
    let throughput = Report {
        bench: "vm-ports-throughput",
        workload: format!("one connection carries 64 MiB to a sink in the VM ({rates})"),
        runs: runs_throughput,
        warmups: warmups_throughput,
        series: throughput,
        derived: Vec::new(),
        reference: "raw vsock".into(),
        skipped: Vec::new(),
        goals,
    };
    let raw_ms = median(&latency, "raw vsock");
    let qemu_ms = median(&latency, "QEMU hostfwd");
    let mut derived = Vec::new();
    let mut goals = Vec::new();
    for forward in ["vmctl port rule", "vmctl published"] {
        let ms = median(&latency, forward);
        derived.push(Derived {
            name: format!("{forward} overhead"),
            note: format!("{forward} − raw vsock (medians)"),
            median_ms: ms - raw_ms,
        });
        goals.push(format!(
            "{forward} ≤ raw vsock + 100 µs and < QEMU hostfwd per round trip: {} (+{:.0} µs over raw, {:.2}× hostfwd)",
            if ms - raw_ms <= 0.1 && ms < qemu_ms { "met" } else { "missed" },
            (ms - raw_ms) * 1000.0,
            ms / qemu_ms,
        ));
    }
    let latency = Report {
        bench: "vm-ports-latency",
        workload: format!(
            "64-byte round trip to an echo in the VM, one warm connection per path \
             ({LATENCY_BLOCK} at a time, paths in turn)"
        ),
        runs: blocks * LATENCY_BLOCK,
        warmups: warmup_blocks * LATENCY_BLOCK,
        derived,
        series: latency,
        reference: "raw vsock".into(),
        skipped: Vec::new(),
        goals,
    };
    let raw_ms = median(&connect, "raw vsock");
    let connect = Report {
        bench: "vm-ports-connect",
        workload: "a new connection, one 64-byte round trip, close (ten at a time, paths in turn)"
            .into(),
        runs: connect_blocks * 10,
        warmups: 10,
        derived: ["vmctl port rule", "vmctl published"]
            .iter()
            .map(|forward| Derived {
                name: format!("{forward} overhead"),
                note: format!("{forward} − raw vsock (medians)"),
                median_ms: median(&connect, forward) - raw_ms,
            })
            .collect(),
        series: connect,
        reference: "raw vsock".into(),
        skipped: Vec::new(),
        goals: Vec::new(),
    };
    let mut reports = vec![throughput, latency, connect];
    if let Some(udp) = udp_rows {
        reports.extend(udp);
    }
    Ok(reports)
}

/// A UDP socket connected to 127.0.0.1:`port`, answers awaited `limit`.
fn udp_socket(port: u16, limit: Duration) -> Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    socket.connect(("127.0.0.1", port))?;
    socket.set_read_timeout(Some(limit))?;
    Ok(socket)
}

/// 64 bytes out, "echo:" and the same 64 back (netpeer's udp-echo).
fn udp_round_trip(socket: &std::net::UdpSocket) -> Result<()> {
    let message = [0x42u8; MESSAGE];
    socket.send(&message)?;
    let mut back = [0u8; 128];
    let n = socket.recv(&mut back)?;
    ensure!(
        back[..n].ends_with(&message) && n == MESSAGE + 5,
        "the echo changed the datagram"
    );
    Ok(())
}

/// What the sink counted so far (asked until it answers).
fn udp_count(socket: &std::net::UdpSocket) -> Result<u64> {
    for _ in 0..50 {
        socket.send(b"?")?;
        let mut answer = [0u8; 8];
        if let Ok(8) = socket.recv(&mut answer) {
            return Ok(u64::from_be_bytes(answer));
        }
    }
    anyhow::bail!("the UDP sink never answered")
}

/// Sends [`UDP_TRANSFER`] bytes as fast as the socket takes them; returns
/// how long until the sink's count stopped growing, and what it counted.
fn udp_blast(port: u16) -> Result<(Duration, u64)> {
    let socket = udp_socket(port, Duration::from_millis(200))?;
    // A reset the sink has seen: its count reads zero.
    loop {
        socket.send(b"!")?;
        if udp_count(&socket)? == 0 {
            break;
        }
    }
    let datagram = vec![0x5au8; DATAGRAM];
    let started = Instant::now();
    for _ in 0..UDP_TRANSFER / DATAGRAM {
        socket.send(&datagram)?;
    }
    let (mut last, mut last_at) = (0, started.elapsed());
    let mut still = 0;
    while still < 5 {
        std::thread::sleep(Duration::from_millis(20));
        let count = udp_count(&socket)?;
        if count != last {
            (last, last_at, still) = (count, started.elapsed(), 0);
        } else {
            still += 1;
        }
    }
    Ok((last_at, last))
}

/// The UDP rows: throughput (datagrams sent as fast as they go, what
/// arrived over the time it took) and 64-byte round trips; the goals as
/// for TCP, against raw vsock's TCP figures (`raw_ms` for 64 MiB,
/// `raw_rtt_ms`): vsock carries no datagrams of its own.
fn udp(
    paths: &[(&str, &str, (u16, u16))],
    runs: Option<usize>,
    warmups: Option<usize>,
    raw_ms: f64,
    raw_rtt_ms: f64,
) -> Result<Vec<Report>> {
    let mut sockets = Vec::new();
    for (name, _, (echo, _)) in paths {
        let socket = udp_socket(*echo, Duration::from_secs(2))?;
        let ready =
            vmctl_tests::eventually(Duration::from_secs(60), || udp_round_trip(&socket).is_ok());
        ensure!(ready, "{name}: the UDP echo never answered");
        sockets.push(socket);
    }
    let (runs_throughput, warmups_throughput) = (runs.unwrap_or(5), warmups.unwrap_or(1));
    let mut rates: Vec<Vec<(f64, f64)>> = vec![Vec::new(); paths.len()];
    for round in 0..runs_throughput + warmups_throughput {
        for k in 0..paths.len() {
            let i = (round + k) % paths.len();
            let (took, counted) = udp_blast(paths[i].2 .1)?;
            if round >= warmups_throughput {
                let rate = counted as f64 / (1 << 20) as f64 / took.as_secs_f64();
                rates[i].push((rate, counted as f64 / UDP_TRANSFER as f64));
            }
        }
    }
    let mut latency: Vec<Series> = paths
        .iter()
        .map(|(n, note, _)| Series::new(n, note))
        .collect();
    let (blocks, warmup_blocks) = (runs.unwrap_or(20), warmups.unwrap_or(2));
    for block in 0..blocks + warmup_blocks {
        for k in 0..paths.len() {
            let i = (block + k) % paths.len();
            for _ in 0..LATENCY_BLOCK {
                let started = Instant::now();
                udp_round_trip(&sockets[i]).with_context(|| paths[i].0.to_owned())?;
                if block >= warmup_blocks {
                    latency[i].samples.push(started.elapsed());
                }
            }
        }
    }
    // Throughput as time per 64 MiB delivered, so the table reads as TCP's.
    let raw_rate = (TRANSFER >> 20) as f64 / (raw_ms / 1000.0);
    let mut throughput = Vec::new();
    let mut words = Vec::new();
    for (i, (name, note, _)) in paths.iter().enumerate() {
        let mut series = Series::new(name, note);
        for (rate, _) in &rates[i] {
            series.samples.push(Duration::from_secs_f64(64.0 / rate));
        }
        let mut delivered: Vec<f64> = rates[i].iter().map(|r| r.1).collect();
        delivered.sort_by(f64::total_cmp);
        words.push(format!(
            "{name}: {:.0} MiB/s, {:.1} % delivered",
            64.0 / (median(std::slice::from_ref(&series), name) / 1000.0),
            100.0 * delivered.get(delivered.len() / 2).copied().unwrap_or(0.0)
        ));
        throughput.push(series);
    }
    let rate_of = |name: &str| 64.0 / (median(&throughput, name) / 1000.0);
    let forward = rate_of("vmctl published");
    let qemu = rate_of("QEMU hostfwd");
    let throughput_goal = format!(
        "vmctl published (udp) ≥ 0.8× raw vsock and > QEMU hostfwd: {} ({:.2}× raw, {:.2}× hostfwd)",
        if forward >= 0.8 * raw_rate && forward > qemu { "met" } else { "missed" },
        forward / raw_rate,
        forward / qemu
    );
    let throughput_report = Report {
        bench: "vm-ports-udp-throughput",
        workload: format!(
            "{} MiB in {DATAGRAM}-byte datagrams, sent as fast as they go, to a sink in the VM; \
             time per 64 MiB delivered ({}; raw vsock {raw_rate:.0} MiB/s on TCP's row)",
            UDP_TRANSFER >> 20,
            words.join(", ")
        ),
        runs: runs_throughput,
        warmups: warmups_throughput,
        series: throughput,
        derived: Vec::new(),
        reference: "QEMU hostfwd".into(),
        skipped: Vec::new(),
        goals: vec![throughput_goal],
    };
    let ms = median(&latency, "vmctl published");
    let qemu_ms = median(&latency, "QEMU hostfwd");
    let latency_report = Report {
        bench: "vm-ports-udp-latency",
        workload: format!(
            "64-byte datagram to an echo in the VM and its answer, one flow per path \
             ({LATENCY_BLOCK} at a time, paths in turn; raw vsock {raw_rtt_ms:.2} ms on TCP's row)"
        ),
        runs: blocks * LATENCY_BLOCK,
        warmups: warmup_blocks * LATENCY_BLOCK,
        derived: Vec::new(),
        series: latency,
        reference: "QEMU hostfwd".into(),
        skipped: Vec::new(),
        goals: vec![format!(
            "vmctl published (udp) ≤ raw vsock + 100 µs and < QEMU hostfwd: {} (+{:.0} µs over raw, {:.2}× hostfwd)",
            if ms - raw_rtt_ms <= 0.1 && ms < qemu_ms { "met" } else { "missed" },
            (ms - raw_rtt_ms) * 1000.0,
            ms / qemu_ms
        )],
    };
    Ok(vec![throughput_report, latency_report])
}

/// Connections of the churn, and the threads opening them.
const CHURN: usize = 10_000;
const CHURN_THREADS: usize = 8;

/// Bytes echoed through one connection, checked on their way back.
const SOAK_TRANSFER: usize = 1 << 30;

/// `ss` lines of TCP and unix sockets holding unread or unsent bytes (for a
/// stalled transfer: which hop holds the data).
fn queued_sockets() -> String {
    let mut out = String::new();
    for family in ["-tanp", "-xanp"] {
        let Ok(ss) = std::process::Command::new("ss").arg(family).output() else {
            continue;
        };
        for line in String::from_utf8_lossy(&ss.stdout).lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // unix: Netid State Recv-Q Send-Q …; tcp: State Recv-Q Send-Q …
            let queues = if family == "-xanp" {
                fields.get(2..4)
            } else {
                fields.get(1..3)
            };
            if queues.is_some_and(|q| q.iter().any(|v| v.parse::<u64>().is_ok_and(|n| n > 0))) {
                out += line;
                out.push('\n');
            }
        }
    }
    out
}

/// The daemon's resident memory (KiB) and open descriptors.
fn daemon_usage(pid: u32) -> Result<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    Ok((rss, fds))
}

/// `vm-ports-soak`: [`CHURN`] short connections (open, one 64-byte round
/// trip, close) and then one connection echoing 1 GiB, checked byte for
/// byte, through a published port; the daemon's memory and descriptors
/// before, at the peak and after.
fn soak(daemon: u32, port: u16) -> Result<Report> {
    // VMCTL_BENCH_SOAK_CHURN=N: N connections per round instead (0: the
    // echo alone, to chase a stall quickly).
    let churn_count = match std::env::var("VMCTL_BENCH_SOAK_CHURN") {
        Ok(n) => n
            .parse()
            .context("VMCTL_BENCH_SOAK_CHURN: a number of connections")?,
        Err(_) => CHURN,
    };
    // The baseline after a first few connections (lazy allocations).
    for i in 0..50 {
        round_trip(tcp(port)?.as_mut()).with_context(|| format!("warm-up connection {i}"))?;
    }
    std::thread::sleep(Duration::from_secs(2));
    let (rss_before, fds_before) = daemon_usage(daemon)?;
    let mut peak = (rss_before, fds_before);
    let failed = std::sync::atomic::AtomicUsize::new(0);
    let started = Instant::now();
    let mut churn = || {
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..CHURN_THREADS)
                .map(|_| {
                    scope.spawn(|| {
                        let mut samples = Vec::new();
                        for _ in 0..churn_count / CHURN_THREADS {
                            let began = Instant::now();
                            match tcp(port).and_then(|mut c| round_trip(c.as_mut())) {
                                Ok(()) => samples.push(began.elapsed()),
                                Err(_) => {
                                    failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                }
                            }
                        }
                        samples
                    })
                })
                .collect();
            while workers.iter().any(|w| !w.is_finished()) {
                if let Ok((rss, fds)) = daemon_usage(daemon) {
                    peak = (peak.0.max(rss), peak.1.max(fds));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("churn thread"))
                .collect::<Vec<_>>()
        })
    };
    let samples = churn();
    let churn_took = started.elapsed();
    // A second churn: memory that grows again is a leak, memory that
    // stays is the allocator keeping what it was given.
    std::thread::sleep(Duration::from_secs(2));
    let (rss_churn, _) = daemon_usage(daemon)?;
    let _ = churn();
    std::thread::sleep(Duration::from_secs(2));
    let (rss_churn2, _) = daemon_usage(daemon)?;
    let failed = failed.into_inner();

    // 1 GiB out and back on one connection, a pattern checked on return.
    let pattern = |offset: usize, out: &mut [u8]| {
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = ((offset + i) % 253) as u8;
        }
    };
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = stream.try_clone()?;
    let started = Instant::now();
    let writer = std::thread::spawn(move || -> Result<()> {
        let mut stream = stream;
        let mut chunk = vec![0u8; CHUNK];
        let mut sent = 0;
        while sent < SOAK_TRANSFER {
            pattern(sent, &mut chunk);
            stream.write_all(&chunk)?;
            sent += CHUNK;
        }
        stream.shutdown(std::net::Shutdown::Write)?;
        Ok(())
    });
    let mut got = 0usize;
    let mut buffer = vec![0u8; CHUNK];
    let mut expected = vec![0u8; CHUNK];
    let mut intact = true;
    loop {
        let n = reader.read(&mut buffer).with_context(|| {
            format!(
                "1 GiB echo, after {got} bytes back; sockets with queued bytes on the desktop:\n{}",
                queued_sockets()
            )
        })?;
        if n == 0 {
            break;
        }
        pattern(got, &mut expected[..n]);
        intact &= buffer[..n] == expected[..n];
        got += n;
        if got % (64 << 20) < n {
            if let Ok((rss, fds)) = daemon_usage(daemon) {
                peak = (peak.0.max(rss), peak.1.max(fds));
            }
        }
    }
    writer
        .join()
        .expect("writer thread")
        .context("1 GiB echo, writing")?;
    let echo_took = started.elapsed();
    drop(reader);
    std::thread::sleep(Duration::from_secs(2));
    let (rss_after, fds_after) = daemon_usage(daemon)?;

    let mut churn = Series::new(
        "connection",
        "connect, one 64-byte round trip, close (8 threads at once)",
    );
    churn.samples = samples;
    let mut echo = Series::new("1 GiB echo", "out and back on one connection, checked");
    echo.samples.push(echo_took);
    let ok = 2 * (churn_count / CHURN_THREADS * CHURN_THREADS) - failed;
    Ok(Report {
        bench: "vm-ports-soak",
        workload: format!(
            "{churn_count} connections through a published port in {:.1} s ({:.0}/s), twice, then 1 GiB echoed \
             ({:.0} MiB/s each way); the host daemon's memory and descriptors",
            churn_took.as_secs_f64(),
            churn_count as f64 / churn_took.as_secs_f64(),
            1024.0 / echo_took.as_secs_f64(),
        ),
        runs: 1,
        warmups: 0,
        series: vec![churn, echo],
        derived: Vec::new(),
        reference: "connection".into(),
        skipped: Vec::new(),
        goals: vec![
            format!(
                "churn: {ok} of {} connections answered (two rounds): {}",
                2 * churn_count,
                if failed == 0 { "met" } else { "missed" }
            ),
            format!(
                "daemon memory after each churn: {rss_churn} KiB, then {rss_churn2} KiB ({:+} KiB for the second {churn_count})",
                rss_churn2 as i64 - rss_churn as i64
            ),
            format!(
                "1 GiB echo: {got} bytes back, {}: {}",
                if intact { "intact" } else { "CHANGED" },
                if intact && got == SOAK_TRANSFER { "met" } else { "missed" }
            ),
            format!(
                "daemon descriptors: {fds_before} before, {} at the peak, {fds_after} after: {}",
                peak.1,
                if fds_after <= fds_before { "back to baseline" } else { "NOT back" }
            ),
            format!(
                "daemon memory: {rss_before} KiB before, {} KiB at the peak, {rss_after} KiB after ({:+} KiB)",
                peak.0,
                rss_after as i64 - rss_before as i64
            ),
        ],
    })
}

/// The median of the series `name`, in ms (NaN if it has no samples).
fn median(series: &[Series], name: &str) -> f64 {
    series
        .iter()
        .find(|s| s.name == name)
        .and_then(|s| s.summary())
        .map(|s| s.median_ms)
        .unwrap_or(f64::NAN)
}

/// Length, 64 MiB, then the sink's answer (the same length).
fn transfer(conn: &mut dyn Conn) -> Result<()> {
    conn.write_all(&(TRANSFER as u64).to_be_bytes())?;
    let chunk = vec![0x5au8; CHUNK];
    let mut left = TRANSFER;
    while left > 0 {
        let n = left.min(CHUNK);
        conn.write_all(&chunk[..n])?;
        left -= n;
    }
    let mut answer = [0u8; 8];
    conn.read_exact(&mut answer)?;
    ensure!(
        u64::from_be_bytes(answer) == TRANSFER as u64,
        "the sink counted {}",
        u64::from_be_bytes(answer)
    );
    Ok(())
}

/// 64 bytes out, the same 64 back.
fn round_trip(conn: &mut dyn Conn) -> Result<()> {
    let message = [0x42u8; MESSAGE];
    conn.write_all(&message)?;
    let mut back = [0u8; MESSAGE];
    conn.read_exact(&mut back)?;
    ensure!(back == message, "the echo changed the bytes");
    Ok(())
}
