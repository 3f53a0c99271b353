//! Resource limits and the security profile, seen from inside the container
//! (and from the host's cgroupfs): memory and OOM, pids, capabilities, the
//! default seccomp profile, read-only rootfs, no-new-privileges, privileged
//! mode, masked and read-only paths, CPU quota.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use vmctl_tests::{require_root, Engine};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `docker run --rm FLAGS hello sh -c SCRIPT`.
fn run(engine: &Engine, flags: &[&str], script: &str) -> Output {
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["hello", "sh", "-c", script]);
    engine.docker(&args)
}

fn succeeds(engine: &Engine, flags: &[&str], script: &str) -> String {
    let out = run(engine, flags, script);
    assert!(
        out.status.success(),
        "{flags:?} {script:?} failed: {}",
        text(&out)
    );
    text(&out)
}

fn fails_with(engine: &Engine, flags: &[&str], script: &str, needle: &str) {
    let out = run(engine, flags, script);
    let all = text(&out);
    assert!(
        !out.status.success(),
        "{flags:?} {script:?} succeeded: {all}"
    );
    assert!(all.contains(needle), "{flags:?} {script:?}: {all}");
}

#[test]
fn memory_limit_ooms_with_137() {
    require_root!();
    let engine = Engine::start();
    let out = engine.docker(&[
        "run",
        "--name",
        "hog",
        "-m",
        "16m",
        "hello",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=128M",
        "count=1",
    ]);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out));
    assert_eq!(
        engine.ok(&[
            "inspect",
            "-f",
            "{{.State.OOMKilled}} {{.State.ExitCode}} {{.HostConfig.Memory}}",
            "hog"
        ]),
        "true 137 16777216"
    );
    // A container that stays below its limit is not marked.
    engine.ok(&["run", "--name", "fine", "-m", "16m", "hello", "true"]);
    assert_eq!(
        engine.ok(&["inspect", "-f", "{{.State.OOMKilled}}", "fine"]),
        "false"
    );
}

#[test]
fn pids_limit_stops_forks() {
    require_root!();
    let engine = Engine::start();
    let out = run(
        &engine,
        &["--pids-limit", "10"],
        "for i in $(seq 30); do sleep 30 & done; echo done",
    );
    assert!(text(&out).contains("can't fork"), "{}", text(&out));
    // Without the limit the same loop works.
    assert!(succeeds(
        &engine,
        &[],
        "for i in $(seq 30); do sleep 0.1 & done; wait; echo done"
    )
    .contains("done"));
}

#[test]
fn capabilities_follow_cap_add_and_drop() {
    require_root!();
    let engine = Engine::start();
    let chown = "touch /tmp/f && chown nobody /tmp/f";
    succeeds(&engine, &[], chown);
    fails_with(
        &engine,
        &["--cap-drop", "ALL"],
        chown,
        "Operation not permitted",
    );
    fails_with(
        &engine,
        &["--cap-drop", "CHOWN"],
        chown,
        "Operation not permitted",
    );
    succeeds(&engine, &["--cap-drop", "ALL", "--cap-add", "CHOWN"], chown);
    let lo_down = "ip link set lo down && ip link show lo";
    fails_with(&engine, &[], lo_down, "Operation not permitted");
    let shown = succeeds(&engine, &["--cap-add", "NET_ADMIN"], lo_down);
    assert!(!shown.contains("UP,"), "{shown}");
    // The bounding set shows in /proc: ALL dropped leaves nothing.
    let status = succeeds(
        &engine,
        &["--cap-drop", "ALL"],
        "grep CapBnd /proc/self/status",
    );
    assert!(status.contains("0000000000000000"), "{status}");
}

#[test]
fn default_seccomp_refuses_namespaces_unconfined_leaves_it_to_caps() {
    require_root!();
    let engine = Engine::start();
    // Default profile: unshare is refused (CAP_SYS_ADMIN-gated), even for a
    // user namespace, which needs no capability.
    fails_with(&engine, &[], "unshare -n true", "Operation not permitted");
    fails_with(&engine, &[], "unshare -U true", "Operation not permitted");
    // Unconfined (like Docker): no filter, so the kernel decides. A network
    // namespace still needs CAP_SYS_ADMIN, which the container lacks...
    let unconfined = ["--security-opt", "seccomp=unconfined"];
    fails_with(
        &engine,
        &unconfined,
        "unshare -n true",
        "Operation not permitted",
    );
    // ...but a user namespace needs none, when the kernel allows them.
    if user_namespaces_allowed() {
        succeeds(&engine, &unconfined, "unshare -U true");
    } else {
        eprintln!("NOTE: unprivileged user namespaces are off; unshare -U not checked");
    }
    // With CAP_SYS_ADMIN the default profile allows unshare (as Docker's does).
    succeeds(&engine, &["--cap-add", "SYS_ADMIN"], "unshare -n true");
    succeeds(&engine, &["--privileged"], "unshare -n true");
}

fn user_namespaces_allowed() -> bool {
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_owned());
    read("/proc/sys/kernel/unprivileged_userns_clone").map_or(true, |v| v == "1")
        && read("/proc/sys/user/max_user_namespaces").map_or(true, |v| v != "0")
}

/// Source of the static probe: tries `socket(AF_VSOCK)` and `socket(AF_UNIX)`
/// and prints `<family> ok` or `<family> errno <n>`.
const PROBE: &str = r#"
extern "C" {
    fn socket(domain: i32, kind: i32, protocol: i32) -> i32;
    fn close(fd: i32) -> i32;
}

fn try_family(name: &str, family: i32) {
    // SAFETY: socket(2) and close(2) with plain integer arguments.
    let fd = unsafe { socket(family, 1, 0) };
    if fd >= 0 {
        unsafe { close(fd) };
        println!("{name} ok");
    } else {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(-1);
        println!("{name} errno {errno}");
    }
}

fn main() {
    try_family("unix", 1);
    try_family("vsock", 40);
}
"#;

/// Builds the probe once per test process: a static binary, so it runs in
/// the busybox image.
fn probe() -> &'static Path {
    static PROBE_BIN: OnceLock<PathBuf> = OnceLock::new();
    PROBE_BIN.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("vmctl-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("probe dir");
        let source = dir.join("probe.rs");
        std::fs::write(&source, PROBE).expect("probe source");
        let binary = dir.join("probe");
        let out = std::process::Command::new("rustc")
            .args(["-O", "-C", "target-feature=+crt-static", "-o"])
            .arg(&binary)
            .arg(&source)
            .output()
            .expect("run rustc");
        assert!(out.status.success(), "rustc: {}", text(&out));
        binary
    })
}

#[test]
fn default_seccomp_refuses_vsock_sockets() {
    require_root!();
    let engine = Engine::start();
    let bind = format!("{}:/probe:ro", probe().display());
    let confined = engine.ok(&["run", "--rm", "-v", &bind, "hello", "/probe"]);
    assert!(confined.contains("unix ok"), "{confined}");
    assert!(
        confined.contains("vsock errno 1"),
        "EPERM expected: {confined}"
    );
    // Unconfined, the kernel answers: anything but EPERM from the filter.
    let unconfined = engine.ok(&[
        "run",
        "--rm",
        "--security-opt",
        "seccomp=unconfined",
        "-v",
        &bind,
        "hello",
        "/probe",
    ]);
    assert!(unconfined.contains("unix ok"), "{unconfined}");
    assert!(!unconfined.contains("vsock errno 1\n"), "{unconfined}");
}

#[test]
fn read_only_rootfs_with_a_tmpfs() {
    require_root!();
    let engine = Engine::start();
    fails_with(
        &engine,
        &["--read-only"],
        "touch /x",
        "Read-only file system",
    );
    succeeds(&engine, &["--read-only", "--tmpfs", "/tmp"], "touch /tmp/x");
    succeeds(&engine, &[], "touch /x");
}

#[test]
fn no_new_privileges() {
    require_root!();
    let engine = Engine::start();
    let flag = "grep NoNewPrivs /proc/self/status";
    assert!(succeeds(&engine, &[], flag).contains("NoNewPrivs:\t0"));
    let set = succeeds(&engine, &["--security-opt", "no-new-privileges"], flag);
    assert!(set.contains("NoNewPrivs:\t1"), "{set}");
}

#[test]
fn privileged_can_mount() {
    require_root!();
    let engine = Engine::start();
    let mount = "mkdir -p /mnt && mount -t tmpfs none /mnt && grep ' /mnt ' /proc/mounts";
    fails_with(&engine, &[], mount, "ermission denied");
    assert!(succeeds(&engine, &["--privileged"], mount).contains("tmpfs"));
}

#[test]
fn masked_and_read_only_proc_paths() {
    require_root!();
    let engine = Engine::start();
    // Masked files read empty; only those this kernel has (no kcore in a
    // Firecracker guest, for one).
    let masked: Vec<&str> = ["/proc/kcore", "/proc/timer_list", "/proc/keys"]
        .into_iter()
        .filter(|p| Path::new(p).exists())
        .collect();
    assert!(!masked.is_empty(), "no maskable file on this kernel");
    for path in &masked {
        let size = succeeds(&engine, &[], &format!("cat {path} | wc -c"));
        assert_eq!(size.trim(), "0", "{path} is not masked");
    }
    assert_eq!(
        succeeds(&engine, &[], "ls /sys/firmware | wc -l").trim(),
        "0"
    );
    fails_with(
        &engine,
        &[],
        "echo x > /proc/sys/kernel/domainname",
        "Read-only file system",
    );
    let mounts = succeeds(&engine, &[], "grep ' /proc/sys ' /proc/mounts");
    assert!(
        mounts.contains(" ro,") || mounts.contains(" ro "),
        "{mounts}"
    );
    // Privileged lifts both.
    let size = succeeds(
        &engine,
        &["--privileged"],
        &format!("cat {} | wc -c", masked[0]),
    );
    assert_ne!(size.trim(), "0", "{} masked when privileged", masked[0]);
    succeeds(
        &engine,
        &["--privileged"],
        "echo x > /proc/sys/kernel/domainname",
    );
}

#[test]
fn cpus_set_the_cfs_quota() {
    require_root!();
    let engine = Engine::start();
    let id = engine.ok(&["run", "-d", "--cpus", "0.5", "hello", "sleep", "100"]);
    let v1 = Path::new("/sys/fs/cgroup/cpu")
        .join(&engine.cgroup_parent)
        .join(&id);
    let v2 = Path::new("/sys/fs/cgroup")
        .join(&engine.cgroup_parent)
        .join(&id)
        .join("cpu.max");
    if v1.is_dir() {
        let read = |f: &str| {
            std::fs::read_to_string(v1.join(f))
                .unwrap_or_else(|e| panic!("{}: {e}", v1.join(f).display()))
                .trim()
                .to_owned()
        };
        assert_eq!(read("cpu.cfs_quota_us"), "50000");
        assert_eq!(read("cpu.cfs_period_us"), "100000");
    } else {
        let max = std::fs::read_to_string(&v2).expect("cpu.max");
        assert_eq!(max.trim(), "50000 100000");
    }
    assert_eq!(
        engine.ok(&["inspect", "-f", "{{.HostConfig.NanoCpus}}", &id]),
        "500000000"
    );
    engine.ok(&["rm", "-f", &id]);
    assert!(engine.cgroups().is_empty(), "{:?}", engine.cgroups());
}
