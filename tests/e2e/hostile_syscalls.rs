//! Hostile syscalls: a container and every `docker exec` into it share one
//! confinement (seccomp filter, capabilities, no_new_privs, rlimits, cgroup,
//! ids), and neither can open AF_VSOCK, the VM's door to the desktop, by
//! any syscall form. The container is `probe` (tests/helpers/probe.rs): its
//! init prints what confines it, an exec of it prints the same for itself,
//! and `probe vsock` tries every route.

use std::time::Duration;

use vmctl_tests::probe::{self, Report};
use vmctl_tests::{eventually, require_root, Engine};

const LONG: Duration = Duration::from_secs(60);

/// An engine with `probe:latest` loaded.
fn engine() -> Engine {
    let engine = Engine::start();
    let tar = probe::image_tar().display().to_string();
    engine.ok(&["load", "-q", "-i", &tar]);
    engine
}

/// Starts `probe serve` as `name` with `flags`; answers its init's report.
fn start(engine: &Engine, name: &str, flags: &[&str]) -> Report {
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(flags);
    args.push(probe::IMAGE);
    engine.ok(&args);
    let mut logs = String::new();
    let ready = eventually(LONG, || {
        logs = engine.ok(&["logs", name]);
        logs.lines().any(|l| l == "ready")
    });
    assert!(ready, "{name} did not report:\n{logs}\n{}", engine.log());
    Report::parse(&logs)
}

/// The report of `docker exec FLAGS name /probe report`.
fn exec_report(engine: &Engine, name: &str, flags: &[&str]) -> Report {
    let mut args = vec!["exec"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[name, "/probe", "report"]);
    Report::parse(&engine.ok(&args))
}

/// Asserts that `probe vsock` output shows every AF_VSOCK route refused.
pub(crate) fn assert_vsock_refused(output: &str, from: &str) {
    let routes = probe::parse_routes(output);
    let outcome = |route: &str| -> &str {
        routes
            .iter()
            .find(|(r, _)| r == route)
            .map(|(_, o)| o.as_str())
            .unwrap_or_else(|| panic!("{from}: no {route} in\n{output}"))
    };
    assert_eq!(outcome("control-socket-unix"), "ok", "{from}:\n{output}");
    assert_eq!(outcome("control-socket-inet"), "ok", "{from}:\n{output}");
    // Where the x86-32 entry does not exist, its routes are killed, not refused.
    let ia32 = routes
        .iter()
        .any(|(r, o)| r == "control-int80-socket-unix" && o == "ok");
    let vsock: Vec<_> = routes
        .iter()
        .filter(|(r, _)| r.starts_with("vsock-"))
        .collect();
    assert!(vsock.len() >= 10, "{from}: too few routes tried:\n{output}");
    for (route, outcome) in vsock {
        let expected = match route.as_str() {
            // The multiplexer is refused whole, with ENOSYS ("not here").
            "vsock-int80-socketcall" if ia32 => "errno=38",
            r if r.starts_with("vsock-int80-") && !ia32 => "killed",
            _ => "errno=1",
        };
        assert_eq!(outcome, expected, "{from}: {route}\n{output}");
    }
    if cfg!(target_arch = "x86_64") && !ia32 {
        eprintln!("NOTE: this kernel runs no x86-32 code; the int 0x80 routes were not tried");
    }
}

#[test]
fn vsock_is_refused_from_run_and_exec() {
    require_root!();
    let engine = engine();
    let out = engine.ok(&["run", "--rm", probe::IMAGE, "vsock"]);
    assert_vsock_refused(&out, "docker run");
    let out = engine.ok(&["run", "--rm", "--cap-add", "ALL", probe::IMAGE, "vsock"]);
    assert_vsock_refused(&out, "docker run --cap-add ALL");

    start(&engine, "box", &[]);
    let out = engine.ok(&["exec", "box", "/probe", "vsock"]);
    assert_vsock_refused(&out, "docker exec");
    let out = engine.ok(&["exec", "--privileged", "box", "/probe", "vsock"]);
    assert_vsock_refused(&out, "docker exec --privileged");
    let out = engine.ok(&["exec", "-u", "1000:1000", "box", "/probe", "vsock"]);
    assert_vsock_refused(&out, "docker exec -u 1000:1000");
}

/// Asserts that an exec's report is its init's, line for line.
fn assert_same(init: &Report, exec: &Report, what: &str) {
    assert!(!init.0.is_empty(), "{what}: empty report");
    assert_eq!(
        init.0.join("\n"),
        exec.0.join("\n"),
        "{what}: the exec is not confined like the init"
    );
}

#[test]
fn exec_is_confined_like_its_init() {
    require_root!();
    let engine = engine();

    let init = start(&engine, "plain", &[]);
    assert_eq!(
        init.status("Seccomp"),
        "2",
        "a default container is filtered"
    );
    assert_eq!(init.status("Seccomp_filters"), "1");
    assert_eq!(init.status("NoNewPrivs"), "0");
    assert_same(&init, &exec_report(&engine, "plain", &[]), "default");

    let init = start(
        &engine,
        "caps",
        &["--cap-add", "NET_ADMIN", "--cap-drop", "CHOWN"],
    );
    let eff = u64::from_str_radix(&init.status("CapEff"), 16).expect("CapEff");
    assert_eq!(eff & (1 << 12), 1 << 12, "CAP_NET_ADMIN added");
    assert_eq!(eff & 1, 0, "CAP_CHOWN dropped");
    assert_same(
        &init,
        &exec_report(&engine, "caps", &[]),
        "--cap-add/--cap-drop",
    );

    let init = start(&engine, "nnp", &["--security-opt", "no-new-privileges"]);
    assert_eq!(init.status("NoNewPrivs"), "1");
    assert_eq!(init.status("Seccomp"), "2");
    assert_same(
        &init,
        &exec_report(&engine, "nnp", &[]),
        "no-new-privileges",
    );

    let init = start(&engine, "limits", &["--ulimit", "nofile=512:1024"]);
    assert!(
        init.file("limits")
            .iter()
            .any(|l| l.starts_with("limits Max open files")
                && l.split_whitespace().skip(4).take(2).eq(["512", "1024"])),
        "{:?}",
        init.file("limits")
    );
    assert_same(&init, &exec_report(&engine, "limits", &[]), "--ulimit");

    let init = start(&engine, "user", &["-u", "1000:1000"]);
    assert_eq!(init.status("CapEff"), "0000000000000000");
    assert_same(&init, &exec_report(&engine, "user", &[]), "-u 1000:1000");
    assert!(!init.file("cgroup").is_empty());
}

/// Every capability the engine can hand out, as /proc/self/status writes
/// it: the engine inherits this test's bounding set (a sandbox may lack
/// some of the kernel's).
fn all_caps() -> String {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .expect("CapBnd")
        .trim()
        .to_owned()
}

#[test]
fn exec_privileged_has_every_capability_and_the_same_filter() {
    require_root!();
    let engine = engine();
    for (name, flags) in [
        ("default", &[][..]),
        ("nnp", &["--security-opt", "no-new-privileges"][..]),
    ] {
        let init = start(&engine, name, flags);
        let exec = exec_report(&engine, name, &["--privileged"]);
        for field in ["CapEff", "CapPrm", "CapBnd"] {
            assert_eq!(exec.status(field), all_caps(), "{name}: {field}");
        }
        assert_ne!(init.status("CapEff"), all_caps(), "{name}");
        // As with Docker: the container's seccomp profile, not none.
        for field in ["Seccomp", "Seccomp_filters", "NoNewPrivs", "Uid", "Gid"] {
            assert_eq!(exec.status(field), init.status(field), "{name}: {field}");
        }
        assert_eq!(exec.file("limits"), init.file("limits"), "{name}");
        assert_eq!(exec.file("cgroup"), init.file("cgroup"), "{name}");
    }
}

#[test]
fn unconfined_containers_are_unfiltered_in_run_and_exec() {
    require_root!();
    let engine = engine();
    let init = start(&engine, "privileged", &["--privileged"]);
    assert_eq!(init.status("Seccomp"), "0");
    assert_eq!(init.status("CapEff"), all_caps());
    assert_same(
        &init,
        &exec_report(&engine, "privileged", &[]),
        "--privileged",
    );

    let init = start(
        &engine,
        "unconfined",
        &["--security-opt", "seccomp=unconfined"],
    );
    assert_eq!(init.status("Seccomp"), "0");
    assert_ne!(init.status("CapEff"), all_caps());
    assert_same(
        &init,
        &exec_report(&engine, "unconfined", &[]),
        "seccomp=unconfined",
    );
}

#[test]
fn honest_exec_keeps_user_env_workdir_and_tty() {
    require_root!();
    let engine = engine();
    start(&engine, "box", &[]);
    let out = engine.ok(&[
        "exec", "-u", "123:456", "-e", "FOO=bar", "-w", "/proc", "box", "/probe", "whoami",
    ]);
    assert_eq!(out, "123 456 /proc FOO=bar");
    assert_eq!(
        engine.ok(&["exec", "box", "/probe", "whoami"]),
        "0 0 / FOO="
    );
    // A terminal: the line ends as a tty writes it.
    let out = engine.docker(&["exec", "-t", "box", "/probe", "whoami"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0 0 / FOO=\r\n");
}
