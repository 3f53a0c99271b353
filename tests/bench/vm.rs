//! `vm-boot` and `vm-api`: the VM path.
//!
//! - `vm-boot`: `vmctl machine start` of a stopped machine until the engine
//!   in the VM answers (launch → ready; 5 runs after a first boot that
//!   formats the disk), with the accelerator the daemon chose. The floor row
//!   boots the same kernel and initramfs in the same QEMU with busybox
//!   `poweroff -f` as init: what the VMM and the kernel cost before vmctl's
//!   PID 1 and engine do anything.
//! - `vm-api`: one `GET /version` per new connection (as the docker CLI
//!   does), 200 runs after 20 warmups, through the daemon's forwarded socket,
//!   straight to the hybrid vsock socket (`CONNECT 2375`, no daemon), and
//!   against the same engine binary run standalone on the host. The
//!   forwarding overhead is forwarded − raw vsock. Two more rows time the
//!   docker CLI's `docker version` through the forwarded socket and against
//!   the standalone engine.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use vmctl_tests::vm::{vm_image_dir, VmHome};

use crate::report::{Derived, Report, Series};

pub const NAMES: [&str; 3] = ["vm", "vm-boot", "vm-api"];

/// Runs `vm`, `vm-boot` or `vm-api`.
pub fn run(which: &str, runs: Option<usize>, warmups: Option<usize>) -> Result<Vec<Report>> {
    if let Some(reason) = vmctl_tests::vm::missing_vm_prerequisite() {
        println!("SKIPPED {which}: {reason}");
        return Ok(Vec::new());
    }
    let home = VmHome::new();
    let out = home.vmctl(&[
        "machine", "init", "--cpus", "2", "--memory", "1024", "--disk", "2",
    ]);
    ensure!(
        out.status.success(),
        "machine init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    start(&home)?; // the first boot formats the data disk: not measured
    let mut reports = Vec::new();
    if which != "vm-api" {
        reports.push(boot(&home, runs.unwrap_or(5), warmups.unwrap_or(0))?);
    }
    if which != "vm-boot" {
        reports.push(api(&home, runs.unwrap_or(200), warmups.unwrap_or(20))?);
    }
    Ok(reports)
}

fn start(home: &VmHome) -> Result<Duration> {
    let started = Instant::now();
    let out = home.vmctl(&["machine", "start"]);
    let took = started.elapsed();
    if !out.status.success() {
        bail!(
            "machine start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            vmctl_tests::tail(&home.daemon_log("default"), 20)
        );
    }
    Ok(took)
}

fn status_field(home: &VmHome, field: &str) -> Option<String> {
    let out = home.vmctl(&["machine", "status"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_owned()))
}

fn boot(home: &VmHome, runs: usize, warmups: usize) -> Result<Report> {
    let accel = status_field(home, "hypervisor:").unwrap_or_default();
    let mut vmctl = Series::new("vmctl machine start", "launch → engine answers on vsock");
    let mut floor = Series::new(
        "floor: QEMU + kernel",
        "same QEMU, kernel, initramfs; init = busybox poweroff -f",
    );
    for i in 0..runs + warmups {
        let out = home.vmctl(&["machine", "stop"]);
        ensure!(out.status.success(), "machine stop failed");
        let took = start(home)?;
        let bare = bare_boot()?;
        if i >= warmups {
            vmctl.samples.push(took);
            floor.samples.push(bare);
        }
    }
    let tcg = accel.contains("tcg");
    let goal_ms = if tcg { 2500.0 } else { 1000.0 };
    let median = vmctl.summary().map(|s| s.median_ms).unwrap_or(f64::NAN);
    Ok(Report {
        bench: "vm-boot",
        workload: format!(
            "vmctl machine start of a stopped machine, 2 vCPUs, 1 GiB; accelerator: {accel}"
        ),
        runs,
        warmups,
        series: vec![floor, vmctl],
        derived: Vec::new(),
        reference: "floor: QEMU + kernel".into(),
        skipped: Vec::new(),
        goals: vec![format!(
            "boot ≤ {goal_ms} ms under {}: {} ({median:.0} ms)",
            if tcg { "TCG" } else { "KVM/HVF" },
            if median <= goal_ms { "met" } else { "missed" }
        )],
    })
}

/// QEMU launch → exit, booting the image's kernel with busybox `poweroff -f`
/// as init, in the QEMU and machine type vmctl uses for the guest's
/// architecture (`VMCTL_GUEST_ARCH`; arm64: `-M virt`, the TCG CPU vmctl picks).
fn bare_boot() -> Result<Duration> {
    let image = vm_image_dir();
    let (qemu, machine, console): (&str, &[&str], &str) = match vmctl_tests::vm::guest_arch() {
        "arm64" => (
            "qemu-system-aarch64",
            &["-machine", "virt", "-cpu", "max,pauth-impdef=on"],
            "ttyAMA0",
        ),
        _ => ("qemu-system-x86_64", &["-machine", "q35"], "ttyS0"),
    };
    let started = Instant::now();
    let status = Command::new(qemu)
        .args(machine)
        .args(["-accel", "tcg", "-smp", "2", "-m", "1024M"])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(image.join("vmlinux"))
        .arg("-initrd")
        .arg(image.join("initramfs.img"))
        .arg("-append")
        .arg(format!(
            "console={console} quiet panic=-1 rdinit=/bin/poweroff -- -f"
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| qemu.to_owned())?;
    ensure!(status.success(), "bare QEMU boot failed: {status}");
    Ok(started.elapsed())
}

const REQUEST: &[u8] = b"GET /version HTTP/1.1\r\nHost: vmctl\r\nConnection: close\r\n\r\n";

/// A connection as the benchmark speaks it: plain, or framed as the guest's
/// vsock ports want (`vmctl_proto::framing`).
enum Conn {
    Plain(UnixStream),
    Framed(UnixStream),
}

/// One `GET /version` on a fresh connection.
fn version_request(conn: Conn) -> Result<()> {
    let answer = match conn {
        Conn::Plain(mut stream) => {
            stream.write_all(REQUEST)?;
            let mut answer = Vec::with_capacity(1024);
            stream.read_to_end(&mut answer)?;
            answer
        }
        Conn::Framed(mut stream) => {
            stream.write_all(&vmctl_proto::framing::frame(REQUEST))?;
            read_frames(&mut stream)?
        }
    };
    ensure!(
        answer.starts_with(b"HTTP/1.1 200"),
        "bad answer: {}",
        String::from_utf8_lossy(&answer)
    );
    Ok(())
}

/// Payloads until the closing frame (or the end of the stream).
fn read_frames(stream: &mut UnixStream) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(1024);
    loop {
        let mut header = [0u8; 4];
        if stream.read_exact(&mut header).is_err() {
            return Ok(out);
        }
        let len = u32::from_be_bytes(header) as usize;
        if len == 0 {
            return Ok(out);
        }
        let start = out.len();
        out.resize(start + len, 0);
        stream.read_exact(&mut out[start..])?;
    }
}

pub(crate) fn hybrid_connect(path: &Path, port: u32) -> Result<UnixStream> {
    let mut stream = UnixStream::connect(path)?;
    stream.write_all(format!("CONNECT {port}\n").as_bytes())?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    // The answer line is all the guest sent so far: nothing is lost in the reader.
    reader.read_line(&mut line)?;
    ensure!(line.starts_with("OK "), "handshake: {line:?}");
    Ok(stream)
}

fn api(home: &VmHome, runs: usize, warmups: usize) -> Result<Report> {
    let forwarded = home.docker_socket("default");
    let vsock = home.machine_run("default").join("vm.vsock");
    let engine = vmctl_tests::Engine::start();
    let standalone = engine.socket.clone();
    type Open<'a> = Box<dyn Fn() -> Result<Conn> + 'a>;
    let plan: Vec<(Series, Open)> = vec![
        (
            Series::new(
                "standalone engine",
                "same engine binary on the host, unix socket",
            ),
            Box::new(|| Ok(Conn::Plain(UnixStream::connect(&standalone)?))),
        ),
        (
            Series::new("raw hybrid vsock", "CONNECT 2375 on vm.vsock, no daemon"),
            Box::new(|| {
                Ok(Conn::Framed(hybrid_connect(
                    &vsock,
                    vmctl_proto::VSOCK_PORT_API,
                )?))
            }),
        ),
        (
            Series::new("forwarded socket", "docker.sock → daemon → vsock → guest"),
            Box::new(|| Ok(Conn::Plain(UnixStream::connect(&forwarded)?))),
        ),
    ];
    let mut series = Vec::new();
    for (mut s, open) in plan {
        for i in 0..runs + warmups {
            let started = Instant::now();
            version_request(open()?).with_context(|| s.name.clone())?;
            if i >= warmups {
                s.samples.push(started.elapsed());
            }
        }
        series.push(s);
    }
    let cli_runs = runs.min(30);
    for (name, socket) in [
        ("docker version → standalone", &standalone),
        ("docker version → forwarded", &forwarded),
    ] {
        let mut s = Series::new(name, "the docker CLI, one process per call");
        let host = format!("unix://{}", socket.display());
        for i in 0..cli_runs + 3 {
            let started = Instant::now();
            let out = home.docker(&host, &["version", "--format", "{{.Server.Version}}"]);
            ensure!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            if i >= 3 {
                s.samples.push(started.elapsed());
            }
        }
        series.push(s);
    }
    drop(engine);
    let median = |name: &str| {
        series
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.summary())
            .map(|s| s.median_ms)
            .unwrap_or(f64::NAN)
    };
    let overhead = median("forwarded socket") - median("raw hybrid vsock");
    Ok(Report {
        bench: "vm-api",
        workload: "GET /version, one new connection per request".into(),
        runs,
        warmups,
        series,
        derived: vec![Derived {
            name: "forwarding overhead".into(),
            note: "forwarded − raw hybrid vsock (medians)".into(),
            median_ms: overhead,
        }],
        reference: "raw hybrid vsock".into(),
        skipped: Vec::new(),
        goals: vec![format!(
            "forwarding overhead ≤ 0.5 ms per request: {} ({overhead:.3} ms)",
            if overhead <= 0.5 { "met" } else { "missed" }
        )],
    })
}
