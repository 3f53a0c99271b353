//! `runtime`: start-to-exit latency of `/bin/true` in a new container, through
//! vmctl's runtime path (the real `vmctl-guest monitor`) and through runc and
//! crun, on the same busybox rootfs and the same OCI spec.
//!
//! The spec is the one vmctl's engine writes for `docker run --network none`
//! (built by `vmctl_guest::runtime::spec::build`: pid, mount, ipc, uts
//! namespaces, Docker's capabilities, seccomp profile, masked paths, `/etc`
//! binds, a cgroup under a parent of this run). vmctl's monitor makes the
//! container's network namespace itself (with `lo` up), as in the engine; the
//! peers get a `network` namespace entry in the same spec instead.
//!
//! What each row times:
//! - vmctl: spawn of the monitor → `ready` → `Start` → the `Wait` answer
//!   (sent after the monitor has deleted the container and unmounted the
//!   rootfs); a second row until the monitor process is gone. The rootfs bind
//!   mount (the engine's overlay mount) is made before the clock starts.
//! - runc: `runc run` until it exits (it deletes the container first).
//! - crun refuses the hybrid cgroup layout, so it runs in a private mount
//!   namespace without `/sys/fs/cgroup/unified` (VM-RECIPE.md). "crun" is
//!   timed inside a long-lived helper already in such a namespace (no wrapper
//!   cost); "crun+wrapper" pays `unshare` + `umount` on every run.
//! - two floors: the wrapper alone, and bare `unshare -m -n -p -i -u -f /bin/true`.
//!
//! Runs are interleaved (one of each contender per round, in a rotating
//! order), so load from elsewhere on the machine hits all of them alike.

use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use vmctl_guest::model::container::{Config, HostConfig};
use vmctl_guest::runtime::monitor::protocol::{ExitInfo, MonitorConfig, Reply, Request, READY};
use vmctl_guest::runtime::spec::{self, EtcFiles, NetNs, SpecInput};

use crate::crun::CrunHelper;
use crate::machine::on_path;
use crate::report::{Derived, Report, Series};

const BUSYBOX: &str = "/bin/busybox";
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The shell line that makes crun usable here (VM-RECIPE.md).
const CRUN_WRAPPER: &str = "umount /sys/fs/cgroup/unified 2>/dev/null; exec \"$0\" \"$@\"";

/// The contenders, in the order of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    Vmctl,
    Runc,
    Crun,
    CrunWrapped,
    Wrapper,
    Floor,
}

/// Everything a run of the benchmark shares: the rootfs, the spec, the peers.
struct Bench {
    dir: tempfile::TempDir,
    rootfs: PathBuf,
    cgroup_parent: String,
    guest: PathBuf,
    etc: EtcFiles,
    crun: Option<CrunHelper>,
}

/// Runs the benchmark; `guest` is the `vmctl-guest` binary to drive.
pub fn run(guest: &Path, runs: usize, warmups: usize) -> Result<Report> {
    let mut skipped = Vec::new();
    let mut contenders = vec![Contender::Vmctl];
    if on_path("runc") {
        contenders.push(Contender::Runc);
    } else {
        skipped.push(("runc".to_owned(), "runc is not on PATH".to_owned()));
    }
    let dir = tempfile::Builder::new()
        .prefix("vmctl-bench-runtime")
        .tempdir_in("/tmp")
        .context("cannot create the work dir")?;
    let rootfs = build_rootfs(&dir.path().join("rootfs"))?;
    let etc = write_etc_files(&dir.path().join("etc"))?;
    let crun = if !on_path("crun") {
        skipped.push(("crun".to_owned(), "crun is not on PATH".to_owned()));
        None
    } else {
        match CrunHelper::start() {
            Ok(helper) => Some(helper),
            Err(e) => {
                skipped.push(("crun".to_owned(), format!("{e:#}")));
                None
            }
        }
    };
    if crun.is_some() {
        contenders.extend([Contender::Crun, Contender::CrunWrapped, Contender::Wrapper]);
    }
    contenders.push(Contender::Floor);
    let mut bench = Bench {
        cgroup_parent: format!("vmctl-bench-{}", std::process::id()),
        dir,
        rootfs,
        guest: guest.to_owned(),
        etc,
        crun,
    };

    let mut series: Vec<Series> = vec![
        Series::new("vmctl", "monitor spawn → Wait answer (container deleted)"),
        Series::new("vmctl (monitor gone)", "… until the monitor process exited"),
    ];
    for contender in &contenders[1..] {
        series.push(Series::new(
            contender.name(),
            match contender {
                Contender::Runc => "runc run, until it exits",
                Contender::Crun => "crun run, timed inside the private mount ns",
                Contender::CrunWrapped => "unshare -m + umount unified + crun run",
                Contender::Wrapper => "unshare -m + umount unified + /bin/true",
                _ => "unshare -m -n -p -i -u -f /bin/true",
            },
        ));
    }
    let total = warmups + runs;
    for round in 0..total {
        for k in 0..contenders.len() {
            let contender = contenders[(round + k) % contenders.len()];
            let id = format!("b{}-{}-{round}", std::process::id(), contender.tag());
            let times = bench
                .once(contender, &id)
                .with_context(|| format!("{} failed in round {round}", contender.name()))?;
            if round < warmups {
                continue;
            }
            match contender {
                Contender::Vmctl => {
                    series[0].samples.push(times[0]);
                    series[1].samples.push(times[1]);
                }
                other => {
                    if let Some(s) = series.iter_mut().find(|s| s.name == other.name()) {
                        s.samples.push(times[0]);
                    }
                }
            }
        }
    }
    let leftovers = bench.leftovers();
    bench.cleanup();

    let mut report = Report {
        bench: "runtime",
        workload: "/bin/true in a new container (busybox rootfs, vmctl's Docker spec)".into(),
        runs,
        warmups,
        series,
        derived: Vec::new(),
        reference: if contenders.contains(&Contender::Crun) {
            "crun".into()
        } else {
            "vmctl".into()
        },
        skipped,
        goals: Vec::new(),
    };
    if let (Some(wrapped), Some(wrapper)) =
        (report.median("crun+wrapper"), report.median("wrapper only"))
    {
        report.derived.push(Derived {
            name: "crun+wrapper − wrapper".into(),
            note: "difference of the two medians".into(),
            median_ms: wrapped - wrapper,
        });
    }
    if let (Some(vmctl), Some(crun)) = (report.median("vmctl"), report.median("crun")) {
        let verdict = if vmctl <= 2.0 * crun { "MET" } else { "MISSED" };
        report.goals.push(format!(
            "vmctl ≤ 2× crun: {verdict} ({vmctl:.2} ms vs 2 × {crun:.2} ms = {:.2} ms)",
            2.0 * crun
        ));
    }
    if !leftovers.is_empty() {
        report
            .goals
            .push(format!("WARNING leftovers after the runs: {leftovers:?}"));
    }
    Ok(report)
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::Vmctl => "vmctl",
            Contender::Runc => "runc",
            Contender::Crun => "crun",
            Contender::CrunWrapped => "crun+wrapper",
            Contender::Wrapper => "wrapper only",
            Contender::Floor => "floor: bare unshare",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Contender::Vmctl => "vmctl",
            Contender::Runc => "runc",
            Contender::Crun => "crun",
            Contender::CrunWrapped => "crunw",
            Contender::Wrapper => "wrap",
            Contender::Floor => "floor",
        }
    }
}

impl Bench {
    /// One run of one contender: its timings (vmctl has two).
    fn once(&mut self, contender: Contender, id: &str) -> Result<Vec<Duration>> {
        let state = self.dir.path().join("state");
        match contender {
            Contender::Vmctl => {
                let (answered, gone) = self.vmctl_once(id)?;
                Ok(vec![answered, gone])
            }
            Contender::Runc => {
                let bundle = self.peer_bundle(id)?;
                let mut command = Command::new("runc");
                command
                    .arg("--root")
                    .arg(state.join("runc"))
                    .args(["run", "--bundle"])
                    .arg(&bundle)
                    .arg(id);
                let took = time_command(&mut command)?;
                let _ = std::fs::remove_dir_all(&bundle);
                Ok(vec![took])
            }
            Contender::Crun => {
                let bundle = self.peer_bundle(id)?;
                let helper = self.crun.as_mut().context("no crun helper")?;
                let took = helper.run(&state.join("crun"), &bundle, id)?;
                let _ = std::fs::remove_dir_all(&bundle);
                Ok(vec![took])
            }
            Contender::CrunWrapped => {
                let bundle = self.peer_bundle(id)?;
                let mut command = Command::new("unshare");
                command
                    .args(["-m", "--propagation", "private", "sh", "-c", CRUN_WRAPPER])
                    .arg("crun")
                    .arg("--root")
                    .arg(state.join("crun"))
                    .args(["run", "--bundle"])
                    .arg(&bundle)
                    .arg(id);
                let took = time_command(&mut command)?;
                let _ = std::fs::remove_dir_all(&bundle);
                Ok(vec![took])
            }
            Contender::Wrapper => {
                let mut command = Command::new("unshare");
                command.args([
                    "-m",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    CRUN_WRAPPER,
                    "/bin/true",
                ]);
                Ok(vec![time_command(&mut command)?])
            }
            Contender::Floor => {
                let mut command = Command::new("unshare");
                command.args(["-m", "-n", "-p", "-i", "-u", "-f", "/bin/true"]);
                Ok(vec![time_command(&mut command)?])
            }
        }
    }

    /// The spec vmctl's engine would write for this container, as JSON.
    fn spec(&self, id: &str, root: &Path) -> Result<Value> {
        let config = Config {
            hostname: id.chars().take(12).collect(),
            ..Config::default()
        };
        let host_config = HostConfig {
            network_mode: "none".into(),
            ..HostConfig::default()
        };
        let spec = spec::build(&SpecInput {
            id,
            config: &config,
            host_config: &host_config,
            args: vec!["/bin/true".into()],
            env: vec![PATH_ENV.into(), format!("HOSTNAME={}", config.hostname)],
            rootfs: self.rootfs.clone(),
            mounts: &[],
            etc_files: self.etc.clone(),
            cgroups_path: format!("/{}/{id}", self.cgroup_parent),
            netns: NetNs::FromMonitor,
            init_binary: None,
        })
        .context("cannot build the spec")?;
        let mut value = serde_json::to_value(&spec)?;
        value["root"]["path"] = json!(root);
        Ok(value)
    }

    /// A bundle for runc or crun: the shared rootfs, plus a network namespace.
    fn peer_bundle(&self, id: &str) -> Result<PathBuf> {
        let bundle = self.dir.path().join("bundles").join(id);
        std::fs::create_dir_all(&bundle)?;
        let mut spec = self.spec(id, &self.rootfs)?;
        let namespaces = spec["linux"]["namespaces"]
            .as_array_mut()
            .context("spec without namespaces")?;
        namespaces.push(json!({ "type": "network" }));
        std::fs::write(bundle.join("config.json"), serde_json::to_vec(&spec)?)?;
        Ok(bundle)
    }

    /// vmctl's runtime path: the monitor, driven over `monitor.sock` as the
    /// engine drives it. Answers (until the `Wait` answer, until the monitor exited).
    fn vmctl_once(&self, id: &str) -> Result<(Duration, Duration)> {
        let base = self.dir.path().join("vmctl").join(id);
        let bundle = base.join("bundle");
        let rootfs = base.join("rootfs");
        std::fs::create_dir_all(&bundle)?;
        std::fs::create_dir_all(&rootfs)?;
        let spec = self.spec(id, &rootfs)?;
        std::fs::write(bundle.join("config.json"), serde_json::to_vec(&spec)?)?;
        let config = MonitorConfig {
            id: id.to_owned(),
            container_dir: base.clone(),
            run_dir: base.join("run"),
            runtime_root: self.dir.path().join("state").join("vmctl"),
            bundle,
            lower: Vec::new(),
            upper: base.join("upper"),
            work: base.join("work"),
            rootfs: rootfs.clone(),
            log_path: base.join("container.log"),
            tty: false,
            open_stdin: false,
            stdin_once: false,
            args: vec!["/bin/true".into()],
            env: vec![PATH_ENV.into()],
            cgroups_path: format!("/{}/{id}", self.cgroup_parent),
            new_netns: true,
        };
        let config_path = base.join("monitor.json");
        std::fs::write(&config_path, serde_json::to_vec(&config)?)?;
        // The engine mounts the overlay before it spawns the monitor.
        bind_mount(&self.rootfs, &rootfs)?;
        let log = std::fs::File::create(base.join("monitor.log"))?;

        let start = Instant::now();
        let mut child = Command::new(&self.guest)
            .arg("monitor")
            .arg(&config_path)
            .env("VMCTL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("cannot run vmctl-guest monitor")?;
        let exit = drive_monitor(&mut child, &config.run_dir.join("monitor.sock"));
        let answered = start.elapsed();
        let status = child.wait()?;
        let gone = start.elapsed();
        let exit = exit.with_context(|| {
            let log = std::fs::read_to_string(base.join("monitor.log")).unwrap_or_default();
            format!("monitor log:\n{}", vmctl_tests::tail(&log, 20))
        })?;
        ensure!(
            exit.exit_code == 0 && status.success(),
            "container exited {} (monitor {status}): {}",
            exit.exit_code,
            exit.error
        );
        let _ = std::fs::remove_dir_all(&base);
        Ok((answered, gone))
    }

    /// Mounts and cgroups of this run still present (there should be none).
    fn leftovers(&self) -> Vec<String> {
        let mut found = Vec::new();
        let root = self.dir.path().display().to_string();
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        found.extend(
            info.lines()
                .filter(|l| l.contains(&root))
                .map(|l| format!("mount {l}")),
        );
        for hierarchy in cgroup_hierarchies() {
            let parent = hierarchy.join(&self.cgroup_parent);
            for child in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
                if child.path().is_dir() {
                    found.push(format!("cgroup {}", child.path().display()));
                }
            }
        }
        found
    }

    /// Stops the crun helper and removes the cgroup parents (the work dir
    /// goes with `self.dir`).
    fn cleanup(&mut self) {
        if let Some(helper) = self.crun.take() {
            helper.stop();
        }
        for hierarchy in cgroup_hierarchies() {
            let parent = hierarchy.join(&self.cgroup_parent);
            for child in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
                let _ = std::fs::remove_dir(child.path());
            }
            let _ = std::fs::remove_dir(&parent);
        }
    }
}

/// Reads `ready`, opens `Wait`, sends `Start`, and reads the exit.
fn drive_monitor(child: &mut Child, socket: &Path) -> Result<ExitInfo> {
    let stdout = child.stdout.take().context("monitor without stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    ensure!(
        line.trim_end() == READY,
        "monitor said {:?}",
        line.trim_end()
    );
    // Wait first: the monitor answers waiters that are connected at the exit.
    let mut wait = BufReader::new(UnixStream::connect(socket)?);
    request(&mut wait, &Request::Wait)?;
    let mut start = BufReader::new(UnixStream::connect(socket)?);
    request(&mut start, &Request::Start)?;
    let mut line = String::new();
    ensure!(
        wait.read_line(&mut line)? > 0,
        "the monitor closed Wait without an answer"
    );
    Ok(serde_json::from_str(&line)?)
}

/// Sends one request line and reads the first answer.
fn request(stream: &mut BufReader<UnixStream>, request: &Request) -> Result<Reply> {
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.get_mut().write_all(&line)?;
    let mut answer = String::new();
    stream.read_line(&mut answer)?;
    let reply: Reply = serde_json::from_str(&answer)
        .with_context(|| format!("bad answer to {request:?}: {answer:?}"))?;
    ensure!(reply.ok, "{request:?} refused: {}", reply.error);
    Ok(reply)
}

/// Runs a command with null stdio; its wall time, or an error if it failed.
fn time_command(command: &mut Command) -> Result<Duration> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let out = command.output()?;
    let took = start.elapsed();
    ensure!(
        out.status.success(),
        "{command:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(took)
}

/// A busybox rootfs: `/bin/busybox` with every applet linked in `/bin`, the
/// mount points and `/etc` files the spec binds over.
fn build_rootfs(root: &Path) -> Result<PathBuf> {
    ensure!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} (busybox-static) is missing"
    );
    for dir in ["bin", "dev", "etc", "proc", "sys", "tmp"] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    std::fs::copy(BUSYBOX, root.join("bin/busybox"))?;
    // Inside a chroot, so the links point at /bin/busybox of the rootfs.
    let out = Command::new("chroot")
        .arg(root)
        .args(["/bin/busybox", "--install", "-s", "/bin"])
        .output()
        .context("cannot run chroot")?;
    ensure!(
        out.status.success(),
        "busybox --install failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    std::fs::write(root.join("etc/group"), "root:x:0:\n")?;
    for file in ["hostname", "hosts", "resolv.conf"] {
        std::fs::write(root.join("etc").join(file), "")?;
    }
    Ok(root.to_owned())
}

/// The host files bound over the container's `/etc/{hostname,hosts,resolv.conf}`.
fn write_etc_files(dir: &Path) -> Result<EtcFiles> {
    std::fs::create_dir_all(dir)?;
    let write = |name: &str, text: &str| -> Result<PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    };
    Ok(EtcFiles {
        hostname: write("hostname", "bench\n")?,
        hosts: write("hosts", "127.0.0.1\tlocalhost\n")?,
        resolv_conf: write("resolv.conf", "")?,
    })
}

fn bind_mount(source: &Path, target: &Path) -> Result<()> {
    let source_c = CString::new(source.as_os_str().as_bytes())?;
    let target_c = CString::new(target.as_os_str().as_bytes())?;
    // SAFETY: both paths are valid NUL-terminated strings; fstype and data may be null.
    let rc = unsafe {
        libc::mount(
            source_c.as_ptr(),
            target_c.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        bail!(
            "cannot bind {} onto {}: {}",
            source.display(),
            target.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// The cgroup v1 hierarchies and the v2 mount, where runtimes make cgroups.
fn cgroup_hierarchies() -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect()
}
