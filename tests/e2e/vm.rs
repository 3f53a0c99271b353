//! The VM path end to end: `vmctl machine` boots the real VM image (QEMU,
//! TCG here), the real docker CLI talks to the engine inside it through the
//! forwarded socket and vsock, state survives a restart, a stop leaves
//! nothing behind, and faults (a killed QEMU, a killed daemon) are noticed.

use std::process::Command;
use std::time::Duration;

use vmctl_tests::vm::VmHome;
use vmctl_tests::{eventually, require_vm};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

#[test]
fn machine_runs_containers_keeps_volumes_and_stops_clean() {
    require_vm!();
    let home = VmHome::new();
    home.ok(&[
        "machine", "init", "--cpus", "2", "--memory", "1024", "--disk", "2",
    ]);
    let started = home.ok(&["machine", "start"]);
    assert!(started.contains("is running"), "{started}");

    let again = home.vmctl(&["machine", "start"]);
    assert!(again.status.success());
    assert!(
        stdout(&again).contains("already running"),
        "{}",
        stdout(&again)
    );

    let status = home.ok(&["machine", "status"]);
    for field in [
        "state:        running",
        "hypervisor:   qemu",
        "boot time:",
        "socket:       unix://",
    ] {
        assert!(status.contains(field), "{field} missing from:\n{status}");
    }

    let host = home.docker_host();
    assert_eq!(
        host,
        format!("unix://{}", home.docker_socket("default").display())
    );
    assert_eq!(
        home.docker_ok(&host, &["run", "--rm", "hello", "echo", "ok"]),
        "ok"
    );

    let id = home.docker_ok(
        &host,
        &[
            "run",
            "-d",
            "--name",
            "bg",
            "hello",
            "sh",
            "-c",
            "echo started; sleep 1000",
        ],
    );
    assert_eq!(id.len(), 64, "{id}");
    assert!(eventually(Duration::from_secs(30), || {
        stdout(&home.docker(&host, &["logs", "bg"])) == "started"
    }));
    assert_eq!(home.docker_ok(&host, &["exec", "bg", "echo", "hi"]), "hi");
    let code = home.docker(&host, &["exec", "bg", "sh", "-c", "exit 7"]);
    assert_eq!(code.status.code(), Some(7));
    home.docker_ok(&host, &["rm", "-f", "bg"]);

    // `docker build` from the desktop: the context goes in over the
    // forwarded socket; the COPY of a directory reads it from the kept
    // tar, and its layer is the step's upper on the VM's own disk.
    let context = home.dir.path().join("build-context");
    for d in 0..4 {
        std::fs::create_dir_all(context.join(format!("src/d{d}"))).expect("context dir");
        for f in 0..50 {
            std::fs::write(context.join(format!("src/d{d}/f{f}")), format!("{d}/{f}\n"))
                .expect("context file");
        }
    }
    std::fs::write(
        context.join("Dockerfile"),
        "FROM hello\nCOPY src/ /src/\nRUN find /src -type f | wc -l > /count\n",
    )
    .expect("Dockerfile");
    let built = Command::new("docker")
        .args(["build", "-q", "-t", "vm-built"])
        .arg(&context)
        .env("DOCKER_HOST", &host)
        .env("DOCKER_BUILDKIT", "0")
        .env("DOCKER_CONFIG", home.dir.path().join("docker-config"))
        .output()
        .expect("docker build");
    assert!(
        built.status.success(),
        "docker build in the VM: {}",
        stderr(&built)
    );
    assert_eq!(
        home.docker_ok(
            &host,
            &[
                "run",
                "--rm",
                "vm-built",
                "sh",
                "-c",
                "cat /count; cat /src/d3/f49"
            ]
        ),
        "200\n3/49"
    );

    // A file in a named volume outlives the VM.
    home.docker_ok(
        &host,
        &[
            "run",
            "--rm",
            "-v",
            "keep:/data",
            "hello",
            "sh",
            "-c",
            "echo persisted > /data/f",
        ],
    );
    home.ok(&["machine", "restart"]);
    assert_eq!(
        home.docker_ok(
            &host,
            &["run", "--rm", "-v", "keep:/data", "hello", "cat", "/data/f"]
        ),
        "persisted"
    );
    let console = home.console_log("default");
    assert!(
        console.contains("vmctl-guest: ready"),
        "{}",
        vmctl_tests::tail(&console, 40)
    );

    // A shell in the VM itself, over vsock.
    let uname = home.ok(&["machine", "ssh", "--", "uname", "-r"]);
    let arch = vmctl_tests::vm::guest_arch();
    assert!(uname.trim().ends_with(&format!("-{arch}")), "{uname}");

    // The docker context exists and points at the socket.
    let context = home.docker(
        "",
        &[
            "context",
            "inspect",
            "vmctl",
            "--format",
            "{{.Endpoints.docker.Host}}",
        ],
    );
    assert_eq!(stdout(&context), host, "{}", stderr(&context));

    container_verbs(&home);

    // `vmctl run` starts a stopped machine by itself.
    home.ok(&["machine", "stop"]);
    assert_eq!(
        home.ok(&["run", "--rm", "hello", "echo", "auto"]).trim(),
        "auto"
    );

    let daemon = home.pid("default", "daemon.pid").expect("daemon pid");
    home.ok(&["machine", "stop"]);
    let status = home.ok(&["machine", "status"]);
    assert!(status.contains("state:        stopped"), "{status}");
    assert!(!vmctl_tests_alive(daemon), "the daemon outlived the stop");
    assert_eq!(
        home.processes(),
        Vec::<String>::new(),
        "processes outlived the stop"
    );
    let left: Vec<_> = std::fs::read_dir(home.machine_run("default"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sock") || name.contains(".vsock") || name.ends_with(".pid"))
        .collect();
    assert!(left.is_empty(), "left behind after stop: {left:?}");
}

/// vmctl's own container verbs, through the machine's socket.
fn container_verbs(home: &VmHome) {
    assert_eq!(
        home.ok(&["run", "--rm", "hello", "echo", "ok"]).trim(),
        "ok"
    );
    assert_eq!(
        home.vmctl(&["run", "--rm", "hello", "sh", "-c", "exit 3"])
            .status
            .code(),
        Some(3)
    );
    let mut piped = home.vmctl_command(&["run", "-i", "--rm", "hello", "cat"]);
    piped
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = piped.spawn().expect("vmctl run -i");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"through stdin\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(stdout(&out), "through stdin", "input closed, output kept");

    let id = home.ok(&[
        "run", "-d", "--name", "web", "-p", "8080:80", "-e", "A=b", "hello",
    ]);
    assert_eq!(id.trim().len(), 64, "{id}");
    let ps = home.ok(&["ps"]);
    assert!(
        ps.contains("web") && ps.contains("127.0.0.1:8080->80/tcp"),
        "{ps}"
    );
    assert_eq!(home.ok(&["exec", "web", "sh", "-c", "echo $A"]).trim(), "b");
    assert_eq!(
        home.vmctl(&["exec", "web", "sh", "-c", "exit 4"])
            .status
            .code(),
        Some(4)
    );
    let page = home.ok(&[
        "machine",
        "ssh",
        "--",
        "wget",
        "-qO-",
        "http://127.0.0.1:8080/",
    ]);
    assert!(page.contains("Hello from vmctl"), "{page}");
    assert!(home.ok(&["images"]).contains("hello"));
    assert_eq!(home.ok(&["stop", "web"]).trim(), "web");
    assert_eq!(home.ok(&["rm", "web"]).trim(), "web");
    let missing = home.vmctl(&["rm", "nosuch"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("No such container: nosuch"),
        "{}",
        stderr(&missing)
    );
}

fn vmctl_tests_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z")
}

#[test]
fn machine_faults_are_noticed_and_bad_flags_refused() {
    require_vm!();
    let home = VmHome::new();

    let bad = home.vmctl(&["machine", "init", "--memory", "1"]);
    assert_eq!(bad.status.code(), Some(1));
    let message = stderr(&bad);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.contains("--memory 1"), "{message}");
    let unknown = home.vmctl(&["machine", "status", "nosuch"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        stderr(&unknown).contains("machine nosuch does not exist"),
        "{}",
        stderr(&unknown)
    );
    assert!(!home.machine_data("nosuch").exists());

    home.ok(&[
        "machine", "init", "--cpus", "1", "--memory", "768", "--disk", "1",
    ]);
    home.ok(&["machine", "start"]);
    let host = home.docker_host();

    // The daemon dies: its keeper starts it again and it adopts the running VM.
    let daemon = home.pid("default", "daemon.pid").expect("daemon pid");
    let vmm = home.pid("default", "vmm.pid").expect("vmm pid");
    // SAFETY: kill of a pid we just read; the worst case is ESRCH.
    unsafe { libc::kill(daemon as i32, libc::SIGKILL) };
    assert!(eventually(Duration::from_secs(10), || !vmctl_tests_alive(
        daemon
    )));
    // Its keeper starts it again; a command meanwhile sees it starting.
    assert!(
        eventually(Duration::from_secs(30), || home
            .ok(&["machine", "status"])
            .contains("state:        running")),
        "{}",
        home.ok(&["machine", "status"])
    );
    assert_eq!(
        home.pid("default", "vmm.pid"),
        Some(vmm),
        "the VM was adopted, not rebooted"
    );
    // The docker socket is back once the new daemon has adopted the VM.
    assert!(eventually(Duration::from_secs(30), || home
        .docker(&host, &["version", "--format", "{{.Server.Version}}"])
        .status
        .success()));
    assert_eq!(
        home.docker_ok(&host, &["run", "--rm", "hello", "echo", "adopted"]),
        "adopted"
    );

    // QEMU dies: status says stopped (not hung), and start works again.
    // SAFETY: as above.
    unsafe { libc::kill(vmm as i32, libc::SIGKILL) };
    // The daemon notices, records why, and exits.
    let noticed = eventually(Duration::from_secs(20), || {
        let status = home.ok(&["machine", "status"]);
        status.contains("state:        stopped") && status.contains("exited on its own")
    });
    assert!(
        noticed,
        "{}\ndaemon log:\n{}",
        home.ok(&["machine", "status"]),
        vmctl_tests::tail(&home.daemon_log("default"), 12)
    );
    assert!(
        eventually(Duration::from_secs(10), || home.processes().is_empty()),
        "{:?}",
        home.processes()
    );
    home.ok(&["machine", "start"]);
    assert_eq!(
        home.docker_ok(&host, &["run", "--rm", "hello", "echo", "back"]),
        "back"
    );

    let resize = home.vmctl(&["machine", "start", "--memory", "2G"]);
    assert_eq!(resize.status.code(), Some(1));
    assert!(
        stderr(&resize).contains("stop it before changing"),
        "{}",
        stderr(&resize)
    );
    let rm = home.vmctl(&["machine", "rm"]);
    assert_eq!(
        rm.status.code(),
        Some(1),
        "rm of a running machine needs --force"
    );
    home.ok(&["machine", "rm", "--force"]);
    assert!(home.processes().is_empty(), "{:?}", home.processes());
    assert!(!home.machine_data("default").exists());
}
