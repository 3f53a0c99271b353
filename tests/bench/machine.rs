//! Facts about the machine and the versions of the tools a run compared, so
//! that every result can be traced to what produced it.

use std::process::{Command, Stdio};

use serde_json::{json, Value};

/// The first line a command prints (stdout, else stderr), or `None` when it
/// cannot be run or fails.
pub fn first_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .map(|l| l.trim().to_owned())
}

/// Whether `program` can be found on `PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Kernel, cores, CPU model, and the version of every tool the benchmarks use.
pub fn facts() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        });
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let version = |program: &str, args: &[&str]| {
        if on_path(program) {
            first_line(program, args)
        } else {
            None
        }
    };
    json!({
        "kernel": first_line("uname", &["-r"]),
        "cores": cores,
        "cpu": cpu,
        "cgroups": cgroup_layout(),
        "loadavg": loadavg(),
        "vmctl": format!("{} ({})", env!("CARGO_PKG_VERSION"),
            first_line("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown commit".into())),
        "runc": version("runc", &["--version"]),
        "crun": version("crun", &["--version"]),
        "dockerd": version("dockerd", &["--version"]),
        "containerd": version("containerd", &["--version"]),
        "docker_cli": version("docker", &["--version"]),
        "busybox": version("busybox", &[]).or_else(|| first_line("/bin/busybox", &["--help"])),
    })
}

/// The 1, 5 and 15 minute load averages: other work on the machine skews
/// every contender, so a run records how busy the machine was.
pub fn loadavg() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// `v1`, `v2` or `hybrid`, from what is mounted under `/sys/fs/cgroup`.
fn cgroup_layout() -> &'static str {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let v1 = info.lines().any(|l| l.contains(" - cgroup "));
    let v2 = info.lines().any(|l| l.contains(" - cgroup2 "));
    match (v1, v2) {
        (true, true) => "hybrid",
        (true, false) => "v1",
        (false, true) => "v2",
        (false, false) => "none",
    }
}

/// The facts as a few lines for the top of the table output.
pub fn describe(facts: &Value) -> String {
    let field = |k: &str| facts[k].as_str().unwrap_or("missing").to_owned();
    format!(
        "machine: {} cores, {}, kernel {}, cgroups {}, load {}\nvmctl {}\nrunc: {}\ncrun: {}\ndockerd: {} / {}\ndocker CLI: {}\n",
        facts["cores"],
        field("cpu"),
        field("kernel"),
        field("cgroups"),
        field("loadavg"),
        field("vmctl"),
        field("runc"),
        field("crun"),
        field("dockerd"),
        field("containerd"),
        field("docker_cli"),
    )
}
