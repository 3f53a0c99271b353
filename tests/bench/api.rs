//! `api`: `docker run --rm --network none hello true` end to end, through the
//! real `docker` CLI, against vmctl-guest and against Debian's dockerd.
//!
//! vmctl-guest runs as the e2e harness runs it ([`vmctl_tests::Engine`]: its
//! own mount and network namespaces, a state dir in a tempdir, the built-in
//! `hello` image). dockerd runs sandboxed as VM-RECIPE.md describes: its own
//! data root, exec root, pidfile and socket, in a private mount and network
//! namespace (so it never touches the machine's network), with the same
//! `hello` tarball loaded. Both get the same CLI binary and a fresh
//! `DOCKER_CONFIG`. Runs are interleaved, one of each per round, in a
//! rotating order. Two floor rows time `docker version` against each engine:
//! what the CLI and one API round trip cost before any container work.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::machine::{first_line, on_path};
use crate::report::{Report, Series};

/// The measured command.
const RUN: [&str; 6] = ["run", "--rm", "--network", "none", "hello", "true"];
/// The CLI floor: the docker binary and one API call.
const VERSION: [&str; 3] = ["version", "--format", "{{.Server.Version}}"];

/// Runs the benchmark.
pub fn run(runs: usize, warmups: usize) -> Result<Report> {
    let args = &RUN[..];
    let mut skipped = Vec::new();
    let engine = vmctl_tests::Engine::start();
    let dockerd = if !on_path("dockerd") {
        skipped.push((
            "dockerd".to_owned(),
            "dockerd is not on PATH (apt-get install docker.io)".to_owned(),
        ));
        None
    } else {
        match Dockerd::start() {
            Ok(dockerd) => Some(dockerd),
            Err(e) => {
                skipped.push(("dockerd".to_owned(), format!("{e:#}")));
                None
            }
        }
    };
    // (series name, what, which engine, which command); the CLI floors time
    // the docker binary plus one API round trip (`docker version`).
    let mut plan: Vec<(&str, &str, bool, &[&str])> =
        vec![("vmctl", "vmctl-guest serve, harness-style", true, args)];
    if dockerd.is_some() {
        plan.push(("dockerd", "Debian dockerd + containerd + runc", false, args));
    }
    plan.push((
        "floor: CLI → vmctl",
        "docker version (CLI + one API call)",
        true,
        &VERSION,
    ));
    if dockerd.is_some() {
        plan.push((
            "floor: CLI → dockerd",
            "docker version (CLI + one API call)",
            false,
            &VERSION,
        ));
    }
    let mut series: Vec<Series> = plan
        .iter()
        .map(|(name, note, ..)| Series::new(name, note))
        .collect();
    let outcome = (|| -> Result<()> {
        if let Some(dockerd) = &dockerd {
            dockerd.load(&vmctl_tests::builtin_images().join("hello.tar"))?;
        }
        for round in 0..warmups + runs {
            for k in 0..plan.len() {
                let index = (round + k) % plan.len();
                let (name, _, ours, command) = plan[index];
                let docker = match (&dockerd, ours) {
                    (_, true) => engine.docker_cmd(),
                    (Some(dockerd), false) => dockerd.docker_cmd(),
                    (None, false) => continue,
                };
                let took = time_docker(docker, command).context(name)?;
                if round >= warmups {
                    series[index].samples.push(took);
                }
            }
        }
        Ok(())
    })();
    let server_version = dockerd.as_ref().and_then(|d| {
        first_line_of(
            d.docker_cmd(),
            &["version", "--format", "{{.Server.Version}}"],
        )
    });
    let storage = dockerd
        .as_ref()
        .and_then(|d| first_line_of(d.docker_cmd(), &["info", "--format", "{{.Driver}}"]));
    if let Some(dockerd) = dockerd {
        dockerd.stop();
    }
    drop(engine);
    let _ = std::fs::remove_dir_all(vmctl_tests::builtin_images());
    outcome?;

    let mut report = Report {
        bench: "api",
        workload: "docker run --rm --network none hello true (docker CLI, end to end)".into(),
        runs,
        warmups,
        series,
        derived: Vec::new(),
        reference: if skipped.is_empty() {
            "dockerd".into()
        } else {
            "vmctl".into()
        },
        skipped,
        goals: Vec::new(),
    };
    if let Some(vmctl) = report.median("vmctl") {
        let verdict = if vmctl <= 40.0 { "MET" } else { "MISSED" };
        report
            .goals
            .push(format!("vmctl ≤ 40 ms median: {verdict} ({vmctl:.2} ms)"));
        if let Some(dockerd) = report.median("dockerd") {
            let speedup = dockerd / vmctl;
            let verdict = if speedup >= 4.0 { "MET" } else { "MISSED" };
            report.goals.push(format!(
                "vmctl ≥ 4× faster than dockerd: {verdict} ({speedup:.2}×; dockerd {dockerd:.2} ms, server {}, storage driver {})",
                server_version.as_deref().unwrap_or("?"),
                storage.as_deref().unwrap_or("?"),
            ));
        }
    }
    if let Some(cli) = first_line("docker", &["--version"]) {
        report.goals.push(format!("client: {cli}"));
    }
    Ok(report)
}

/// Times one `docker ARGS` and checks it succeeded.
fn time_docker(mut command: Command, args: &[&str]) -> Result<Duration> {
    command
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let out = command.output().context("cannot run docker")?;
    let took = start.elapsed();
    ensure!(
        out.status.success(),
        "docker {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(took)
}

fn first_line_of(mut command: Command, args: &[&str]) -> Option<String> {
    let out = command.args(args).output().ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    })
}

/// Debian's dockerd in a sandbox of its own: a private mount and network
/// namespace held by `unshare`, every path under one tempdir.
struct Dockerd {
    dir: tempfile::TempDir,
    holder: Child,
}

impl Dockerd {
    fn start() -> Result<Dockerd> {
        let dir = tempfile::Builder::new()
            .prefix("vmctl-bench-dockerd")
            .tempdir_in("/tmp")?;
        let d = dir.path().display().to_string();
        let script = format!(
            "ip link set lo up; exec dockerd --data-root {d}/data --exec-root {d}/exec \
             --pidfile {d}/pid -H unix://{d}/sock --iptables=false --ip-forward=false \
             --ip-masq=false --bridge=none"
        );
        let log = std::fs::File::create(dir.path().join("dockerd.log"))?;
        let holder = Command::new("unshare")
            .args(["-m", "-n", "--propagation", "private", "--fork"])
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start dockerd")?;
        let dockerd = Dockerd { dir, holder };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = dockerd
                .docker_cmd()
                .args(["version", "--format", "{{.Server.Version}}"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(dockerd);
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(dockerd.dir.path().join("dockerd.log"))
                    .unwrap_or_default();
                dockerd.stop();
                bail!(
                    "dockerd did not come up in 60 s:\n{}",
                    vmctl_tests::tail(&log, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn docker_cmd(&self) -> Command {
        let mut command = Command::new("docker");
        command
            .env(
                "DOCKER_HOST",
                format!("unix://{}", self.dir.path().join("sock").display()),
            )
            .env("DOCKER_CONFIG", self.dir.path().join("docker-config"))
            .stdin(Stdio::null());
        command
    }

    fn load(&self, tarball: &Path) -> Result<()> {
        let out = self
            .docker_cmd()
            .arg("load")
            .arg("-i")
            .arg(tarball)
            .output()?;
        ensure!(
            out.status.success(),
            "docker load into dockerd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Stops dockerd (SIGTERM, then SIGKILL), then every process left that
    /// mentions the sandbox (its containerd and shims), then the holder.
    fn stop(mut self) {
        let pid = std::fs::read_to_string(self.dir.path().join("pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        if let Some(pid) = pid {
            // SAFETY: kill(2) of the dockerd this benchmark started (pid from its pidfile).
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        for pid in processes_mentioning(self.dir.path()) {
            // SAFETY: kill(2) of a process whose command line names this sandbox.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        let left = processes_mentioning(self.dir.path());
        if !left.is_empty() {
            eprintln!("WARNING: dockerd sandbox processes still alive: {left:?}");
        }
    }
}

/// Pids of processes whose command line contains `path`.
fn processes_mentioning(path: &Path) -> Vec<i32> {
    let needle = path.display().to_string();
    let me = std::process::id();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid as u32 == me {
            continue;
        }
        let cmdline = std::fs::read(PathBuf::from("/proc").join(pid.to_string()).join("cmdline"))
            .unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            pids.push(pid);
        }
    }
    pids
}
