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
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use vmctl_tests::vm::VmHome;

use crate::report::{Derived, Report, Series};

pub const NAMES: [&str; 1] = ["vm-ports"];

const TRANSFER: usize = 64 << 20;
const CHUNK: usize = 256 << 10;
const MESSAGE: usize = 64;

/// The VM-side ports: TCP echo, TCP sink, vsock echo, vsock sink.
const ECHO: u16 = 7001;
const SINK: u16 = 7002;
const VSOCK_ECHO: u32 = 7003;
const VSOCK_SINK: u32 = 7004;

trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

/// The three paths, each opening (echo, sink) connections.
struct Path {
    name: &'static str,
    note: &'static str,
    open: Box<dyn Fn(bool) -> Result<Box<dyn Conn>>>,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn tcp(port: u16) -> Result<Box<dyn Conn>> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    Ok(Box::new(stream))
}

pub fn run(runs: Option<usize>, warmups: Option<usize>) -> Result<Vec<Report>> {
    if let Some(reason) = vmctl_tests::vm::missing_vm_prerequisite() {
        println!("SKIPPED vm-ports: {reason}");
        return Ok(Vec::new());
    }
    let home = VmHome::new();
    let ok = |args: &[&str], env: Option<(&str, &str)>| -> Result<String> {
        let mut command = home.vmctl_command(args);
        if let Some((key, value)) = env {
            command.env(key, value);
        }
        let out = command.output()?;
        ensure!(
            out.status.success(),
            "vmctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    ok(
        &[
            "machine", "init", "--cpus", "2", "--memory", "1024", "--disk", "2",
        ],
        None,
    )?;
    let (qemu_echo, qemu_sink) = (free_port()?, free_port()?);
    let hostfwd = format!("tcp:127.0.0.1:{qemu_echo}-:{ECHO};tcp:127.0.0.1:{qemu_sink}-:{SINK}");
    ok(
        &["machine", "start"],
        Some(("VMCTL_QEMU_HOSTFWD", hostfwd.as_str())),
    )?;
    let host = format!("unix://{}", home.docker_socket("default").display());
    let docker = |args: &[&str]| -> Result<()> {
        let out = home.docker(&host, args);
        ensure!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    let tar = vmctl_tests::netpeer::image_tar().display().to_string();
    docker(&["load", "-q", "-i", &tar])?;
    for (mode, port) in [
        ("tcp-echo", u32::from(ECHO)),
        ("tcp-sink", u32::from(SINK)),
        ("vsock-echo", VSOCK_ECHO),
        ("vsock-sink", VSOCK_SINK),
    ] {
        docker(&[
            "run",
            "-d",
            "--network",
            "host",
            // Docker's default seccomp profile refuses AF_VSOCK sockets.
            "--security-opt",
            "seccomp=unconfined",
            vmctl_tests::netpeer::IMAGE,
            mode,
            &port.to_string(),
        ])?;
    }
    let (forward_echo, forward_sink) = (free_port()?, free_port()?);
    ok(
        &[
            "port",
            "add",
            "bench-echo",
            &format!("{forward_echo}:{ECHO}"),
        ],
        None,
    )?;
    ok(
        &[
            "port",
            "add",
            "bench-sink",
            &format!("{forward_sink}:{SINK}"),
        ],
        None,
    )?;
    let vsock = home.machine_run("default").join("vm.vsock");
    let paths = vec![
        Path {
            name: "raw vsock",
            note: "CONNECT on the vhost-user socket → AF_VSOCK in the VM",
            open: Box::new(move |echo| {
                let port = if echo { VSOCK_ECHO } else { VSOCK_SINK };
                let stream = crate::vm::hybrid_connect(&vsock, port)?;
                stream.set_read_timeout(Some(Duration::from_secs(60)))?;
                Ok(Box::new(stream) as Box<dyn Conn>)
            }),
        },
        Path {
            name: "vmctl forward",
            note: "127.0.0.1 → daemon → vsock → forward service → TCP in the VM",
            open: Box::new(move |echo| tcp(if echo { forward_echo } else { forward_sink })),
        },
        Path {
            name: "QEMU hostfwd",
            note: "127.0.0.1 → QEMU user-mode net (slirp) → TCP in the VM",
            open: Box::new(move |echo| tcp(if echo { qemu_echo } else { qemu_sink })),
        },
    ];
    // Every far end answers before anything is timed.
    for path in &paths {
        let ready = vmctl_tests::eventually(Duration::from_secs(60), || {
            (path.open)(true).is_ok_and(|mut c| round_trip(c.as_mut()).is_ok())
        });
        ensure!(ready, "{}: the echo never answered", path.name);
    }

    let runs_throughput = runs.unwrap_or(5);
    let warmups_throughput = warmups.unwrap_or(1);
    let mut throughput = Vec::new();
    for path in &paths {
        let mut series = Series::new(path.name, path.note);
        for i in 0..runs_throughput + warmups_throughput {
            let mut conn = (path.open)(false)?;
            let started = Instant::now();
            transfer(conn.as_mut()).with_context(|| path.name)?;
            if i >= warmups_throughput {
                series.samples.push(started.elapsed());
            }
        }
        throughput.push(series);
    }
    let runs_latency = runs.map(|r| r * 100).unwrap_or(2000);
    let warmups_latency = warmups.map(|w| w * 100).unwrap_or(200);
    let mut latency = Vec::new();
    for path in &paths {
        let mut series = Series::new(path.name, path.note);
        let mut conn = (path.open)(true)?;
        for i in 0..runs_latency + warmups_latency {
            let started = Instant::now();
            round_trip(conn.as_mut()).with_context(|| path.name)?;
            if i >= warmups_latency {
                series.samples.push(started.elapsed());
            }
        }
        latency.push(series);
    }
    let _ = home.vmctl(&["machine", "stop"]);

    let mib_per_s =
        |series: &[Series], name: &str| (TRANSFER >> 20) as f64 / (median(series, name) / 1000.0);
    let raw = mib_per_s(&throughput, "raw vsock");
    let forward = mib_per_s(&throughput, "vmctl forward");
    let qemu = mib_per_s(&throughput, "QEMU hostfwd");
    let ratio = forward / raw;
    let throughput = Report {
        bench: "vm-ports-throughput",
        workload: format!(
            "one connection carries 64 MiB to a sink in the VM ({raw:.0} MiB/s raw vsock, \
             {forward:.0} MiB/s vmctl forward, {qemu:.0} MiB/s QEMU hostfwd)"
        ),
        runs: runs_throughput,
        warmups: warmups_throughput,
        series: throughput,
        derived: Vec::new(),
        reference: "raw vsock".into(),
        skipped: Vec::new(),
        goals: vec![format!(
            "forward ≥ 0.8× raw vsock throughput: {} ({ratio:.2}×)",
            if ratio >= 0.8 { "met" } else { "missed" }
        )],
    };
    let extra_us = (median(&latency, "vmctl forward") - median(&latency, "raw vsock")) * 1000.0;
    let latency = Report {
        bench: "vm-ports-latency",
        workload: "64-byte round trip to an echo in the VM, one warm connection".into(),
        runs: runs_latency,
        warmups: warmups_latency,
        derived: vec![Derived {
            name: "forward overhead".into(),
            note: "vmctl forward − raw vsock (medians)".into(),
            median_ms: extra_us / 1000.0,
        }],
        series: latency,
        reference: "raw vsock".into(),
        skipped: Vec::new(),
        goals: vec![format!(
            "forward ≤ raw vsock + 30 µs per round trip: {} (+{extra_us:.0} µs)",
            if extra_us <= 30.0 { "met" } else { "missed" }
        )],
    };
    Ok(vec![throughput, latency])
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
