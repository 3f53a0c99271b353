//! `docker run` in the foreground: output, exit codes, stdin, TTY.

use std::io::Write;
use std::process::Stdio;

use vmctl_tests::{require_root, Engine};

#[test]
fn run_prints_output_and_removes_with_rm() {
    require_root!();
    let engine = Engine::start();
    assert_eq!(engine.ok(&["run", "--rm", "hello", "echo", "ok"]), "ok");
    assert_eq!(engine.ok(&["ps", "-aq"]), "", "--rm left a container");
}

#[test]
fn exit_codes_follow_docker() {
    require_root!();
    let engine = Engine::start();
    let code = |args: &[&str]| engine.docker(args).status.code();
    assert_eq!(
        code(&["run", "--rm", "hello", "sh", "-c", "exit 3"]),
        Some(3)
    );
    assert_eq!(
        code(&["run", "--rm", "hello", "no-such-program"]),
        Some(127)
    );
    assert_eq!(code(&["run", "--rm", "hello", "/etc/passwd"]), Some(126));
    // Behind --init, the shell is not PID 1, so a SIGKILL reaches it.
    assert_eq!(
        // Not PID 1 (which ignores signals it has no handler for): under --init.
        code(&["run", "--rm", "--init", "hello", "sh", "-c", "kill -9 $$"]),
        Some(137)
    );
    let out = engine.docker(&["run", "--rm", "hello", "no-such-program"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("executable file not found in $PATH"),
        "{stderr}"
    );
    // A failed --rm start leaves nothing behind.
    assert_eq!(engine.ok(&["ps", "-aq"]), "");
}

#[test]
fn stdout_and_stderr_stay_apart() {
    require_root!();
    let engine = Engine::start();
    let out = engine.docker(&["run", "--rm", "hello", "sh", "-c", "echo out; echo err >&2"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
}

#[test]
fn stdin_is_piped_and_closed() {
    require_root!();
    let engine = Engine::start();
    let mut child = engine
        .docker_cmd()
        .args(["run", "--rm", "-i", "hello", "sh", "-c", "cat; echo end"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("docker run -i");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"from stdin\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from stdin\nend\n");
}

#[test]
fn tty_gives_a_terminal() {
    require_root!();
    let engine = Engine::start();
    // `script` gives the docker CLI a pty, as a user's terminal would.
    let host = engine.docker_host();
    let out = std::process::Command::new("script")
        .args([
            "-qec",
            "docker run --rm -t hello sh -c 'tty; echo $TERM'",
            "/dev/null",
        ])
        .env("DOCKER_HOST", host)
        .stdin(Stdio::null())
        .output()
        .expect("script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/0"), "{text}");
    assert!(text.contains("xterm"), "{text}");
}

#[test]
fn init_reaps_and_is_pid_one() {
    require_root!();
    let engine = Engine::start();
    let ps = engine.ok(&["run", "--rm", "--init", "hello", "ps", "-o", "pid,comm"]);
    let first = ps.lines().nth(1).unwrap_or_default();
    assert!(first.contains('1') && first.contains("docker-init"), "{ps}");
}

/// Containers and execs start with no signal ignored, as under Docker: the
/// engine's own ignored SIGPIPE must not reach them, or `yes | head` never
/// ends (`yes` lives on, writing to a closed pipe).
#[test]
fn processes_start_with_default_signal_dispositions() {
    require_root!();
    let engine = Engine::start();
    // Bits of SigIgn for signals 1-31 (glibc keeps 32 and 33 for itself).
    let ignored = |text: &str| {
        let mask = text
            .lines()
            .find_map(|l| l.strip_prefix("SigIgn:"))
            .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
            .unwrap();
        mask & 0x7fff_ffff
    };
    let run = engine.ok(&[
        "run",
        "--rm",
        "hello",
        "grep",
        "SigIgn",
        "/proc/self/status",
    ]);
    assert_eq!(ignored(&run), 0, "{run}");
    engine.ok(&["run", "-d", "--name", "sig", "hello"]);
    let exec = engine.ok(&["exec", "sig", "grep", "SigIgn", "/proc/self/status"]);
    assert_eq!(ignored(&exec), 0, "{exec}");
    let piped = engine.ok(&[
        "exec",
        "sig",
        "sh",
        "-c",
        "yes | head -c 5; echo; echo ended",
    ]);
    assert_eq!(piped, "y\ny\ny\nended");
}
