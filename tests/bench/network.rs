//! `network`: container networking against its peers, in two parts, each in
//! a private network namespace of its own.
//!
//! - [`network_setup`](crate::network_setup): one container's interface set
//!   up by the engine's netlink code, by separate `ip` commands and by
//!   `ip -batch` (and torn down again).
//! - [`network_throughput`](crate::network_throughput): TCP throughput to a
//!   container directly, through a published port (the engine's nftables
//!   DNAT) and through a `socat` userspace proxy.
//!
//! This file holds what both parts share: the thread that leaves the
//! machine's network namespace for a private one (the machine's network is
//! never touched: every link, address, route, sysctl and nftables table of
//! a run lives in namespaces the run created and that vanish with it), the
//! holder processes that keep a "container" namespace alive, the versions
//! of the tools, and the combined output.

use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use vmctl_guest::network::netlink::{mac_for, BridgeSpec};

use crate::machine::{first_line, on_path};
use crate::network_throughput::Throughput;
use crate::report::Report;
use crate::{network_setup, network_throughput};

/// The bridge of both parts, named and addressed like the engine's default
/// network would be on a `10.200.0.0/16` subnet.
pub const BRIDGE: &str = "vmctl0";
/// The bridge's address: the containers' gateway.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
/// The subnet's prefix length.
pub const PREFIX: u8 = 16;
/// The MTU the engine gives a default bridge and its veths.
pub const MTU: u32 = 1500;

/// The bridge as the engine's network manager creates it.
pub fn bridge_spec() -> Result<BridgeSpec> {
    Ok(BridgeSpec {
        name: BRIDGE.to_owned(),
        address: format!("{GATEWAY}/{PREFIX}").parse()?,
        mtu: Some(MTU),
        mac: Some(mac_for(GATEWAY)),
    })
}

/// The `n`th container address: `10.200.0.2` and up.
pub fn container_ip(n: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(GATEWAY) + 1 + n as u32)
}

/// The names `vmctl-bench` accepts for this benchmark and its two parts.
pub const NAMES: [&str; 3] = ["network", "network-setup", "network-throughput"];

/// What a run of `network` (or one of its parts) measured.
pub struct NetworkReport {
    versions: Value,
    /// Setup and teardown.
    setup: Vec<Report>,
    throughput: Option<Throughput>,
}

/// Runs `which` (one of [`NAMES`]). `runs` and `warmups` override the
/// setup part's defaults (200 after 20); the throughput part always makes
/// 3 runs of 3 s after a 1 s warmup per row.
pub fn run(which: &str, runs: Option<usize>, warmups: Option<usize>) -> Result<NetworkReport> {
    let versions = versions();
    let setup = if which == "network-throughput" {
        Vec::new()
    } else {
        let (runs, warmups) = (runs.unwrap_or(200), warmups.unwrap_or(20));
        let (setup, teardown) = in_private_netns(move |rt| network_setup::run(rt, runs, warmups))?;
        vec![setup, teardown]
    };
    let throughput = if which == "network-setup" {
        None
    } else {
        Some(in_private_netns(network_throughput::run)?)
    };
    Ok(NetworkReport {
        versions,
        setup,
        throughput,
    })
}

impl NetworkReport {
    /// The tables, as printed on stdout.
    pub fn table(&self) -> String {
        let field = |k: &str| self.versions[k].as_str().unwrap_or("missing").to_owned();
        let mut out = format!(
            "\nnetwork tools: {}; iperf3 {}; socat {}; {}\n",
            field("iproute2"),
            field("iperf3"),
            field("socat"),
            field("nft"),
        );
        for report in &self.setup {
            out += &report.table();
        }
        if let Some(throughput) = &self.throughput {
            out += &throughput.table();
        }
        out
    }

    /// One JSON object per part, each with the tool versions.
    pub fn json(&self) -> Vec<Value> {
        let mut parts = Vec::new();
        for report in &self.setup {
            let mut value = report.json();
            value["versions"] = self.versions.clone();
            parts.push(value);
        }
        if let Some(throughput) = &self.throughput {
            let mut value = throughput.json();
            value["versions"] = self.versions.clone();
            parts.push(value);
        }
        parts
    }
}

/// The versions of the tools the two parts run.
fn versions() -> Value {
    let version = |program: &str, args: &[&str]| {
        if on_path(program) {
            first_line(program, args)
        } else {
            None
        }
    };
    // `socat -V` starts with a credits line; the version is on the second.
    let socat = on_path("socat")
        .then(|| Command::new("socat").arg("-V").output().ok())
        .flatten()
        .and_then(|out| {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let line = text.lines().find(|l| l.starts_with("socat version"))?;
            Some(line.trim_start_matches("socat version ").to_owned())
        });
    json!({
        "kernel": first_line("uname", &["-r"]),
        "iproute2": version("ip", &["-V"]),
        "iperf3": version("iperf3", &["--version"]),
        "socat": socat,
        "nft": version("nft", &["--version"]),
        "util_linux": version("nsenter", &["--version"]),
    })
}

/// Runs `body` on a thread of its own that has left the machine's network
/// namespace for a fresh one, with a current-thread tokio runtime (the
/// engine's netlink and nftables code need one). Everything the thread
/// creates, sets or spawns (links, sysctls, nftables, `ip`, `iperf3`)
/// lands in that namespace, which disappears with the thread and its
/// children. Refuses to run `body` anywhere else.
pub fn in_private_netns<T: Send + 'static>(
    body: impl FnOnce(&tokio::runtime::Runtime) -> Result<T> + Send + 'static,
) -> Result<T> {
    let thread = std::thread::Builder::new().name("bench-netns".into());
    let thread = thread.spawn(move || -> Result<T> {
        // SAFETY: unshare with a flag and no pointers; it only affects the
        // calling thread (network namespaces are per thread).
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        if rc != 0 {
            bail!(
                "cannot create a private network namespace: {}",
                std::io::Error::last_os_error()
            );
        }
        let machine = netns_inode(Path::new("/proc/self/ns/net"))?;
        let here = netns_inode(Path::new("/proc/thread-self/ns/net"))?;
        ensure!(
            machine != here,
            "the bench thread is still in the machine's network namespace"
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot build a tokio runtime")?;
        body(&runtime)
    });
    let thread = thread.context("cannot start the private-namespace thread")?;
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The inode of a network namespace file: equal inodes, same namespace.
fn netns_inode(path: &Path) -> Result<u64> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot stat {}", path.display()));
    Ok(meta?.ino())
}

/// A fresh network namespace kept alive by `unshare -n sleep infinity`:
/// a container's namespace before its interface is made. Killed on drop.
pub struct Holder {
    child: Child,
}

impl Holder {
    /// Starts a holder and waits until it is in its own namespace.
    pub fn spawn() -> Result<Holder> {
        let child = Command::new("unshare")
            .args(["-n", "sleep", "infinity"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run unshare -n sleep infinity")?;
        let holder = Holder { child };
        let home = netns_inode(Path::new("/proc/thread-self/ns/net"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        // unshare -n execs sleep in the same process once it has unshared.
        while netns_inode(&holder.netns()).ok() == Some(home) {
            ensure!(
                Instant::now() < deadline,
                "holder {} did not unshare",
                holder.pid()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(holder)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `/proc/PID/ns/net`.
    pub fn netns(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.pid()))
    }

    /// `nsenter --net=/proc/PID/ns/net program…`: a command inside.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.netns().display()))
            .arg(program);
        command
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `command` to completion; its output, or an error with its stderr.
pub fn run_ok(command: &mut Command) -> Result<Output> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    ensure!(
        out.status.success(),
        "{command:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(out)
}
