//! The desktop decides what it binds, end to end in one real VM: a machine
//! made with `--allow-lan-ports=false` refuses `-p 0.0.0.0:…` (the docker
//! CLI shows why, nothing listens) and serves `-p 127.0.0.1:…`;
//! `vmctl machine set --allow-lan-ports` changes it while the machine runs,
//! closing what it now forbids; the engine refuses a network over the VM's
//! own NIC subnet (QEMU's 10.0.2.0/24, where the desktop is); the machine's
//! directories, disk and logs are private to the desktop user, also for a
//! machine whose files were world-readable before; containers do not reach
//! the desktop's loopback through the VM's network (the VM does). And
//! `icc=false` networks isolate their containers in the VM too, the only
//! thing that turns the bridge's ip hooks on there. One boot per test;
//! polls only.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use vmctl_tests::vm::{free_port, listening, mode, text, VmHome};
use vmctl_tests::{eventually, require_vm};

/// How long anything may take to converge under TCG on a loaded CI host.
const LONG: Duration = Duration::from_secs(60);

fn serves_hello(port: u16) -> bool {
    let get = || -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    };
    get().is_ok_and(|page| page.contains("Hello from vmctl"))
}

#[test]
fn the_desktop_decides_what_it_binds() {
    require_vm!();
    let home = VmHome::new();
    let made = home.ok(&[
        "machine",
        "init",
        "--cpus",
        "2",
        "--memory",
        "1024",
        "--disk",
        "2",
        "--allow-lan-ports=false",
    ]);
    assert!(made.contains("allow-lan-ports false"), "{made}");
    let status = home.ok(&["machine", "status"]);
    assert!(
        status.contains("refused (allow-lan-ports=false)"),
        "{status}"
    );

    // A machine from before files were private: world-readable everything.
    let data = home.machine_data("default");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(
        data.join("disk.raw"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    home.ok(&["machine", "start"]);
    let host = home.docker_host();

    // Files on the desktop: directories 0700, disk and logs 0600.
    assert_eq!(mode(&data), 0o700, "machine data directory");
    assert_eq!(
        mode(&home.machine_run("default")),
        0o700,
        "machine run directory"
    );
    for file in ["disk.raw", "console.log", "daemon.log", "config.json"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }

    // LAN publishing is off: 0.0.0.0 is refused with the reason, nothing listens.
    let lan = free_port();
    let refused = home.docker(
        &host,
        &[
            "run",
            "-d",
            "--name",
            "lan",
            "-p",
            &format!("0.0.0.0:{lan}:80"),
            "hello",
        ],
    );
    assert!(!refused.status.success(), "0.0.0.0 was published");
    let message = text(&refused.stderr);
    assert!(
        message.contains(&format!("0.0.0.0:{lan}")) && message.contains("allow-lan-ports is off"),
        "{message}"
    );
    assert!(
        !listening(lan),
        "the desktop listens on {lan} after a refusal"
    );
    home.docker_ok(&host, &["rm", "lan"]);

    // Loopback still works.
    let local = free_port();
    home.docker_ok(
        &host,
        &[
            "run",
            "-d",
            "--name",
            "lo",
            "-p",
            &format!("127.0.0.1:{local}:80"),
            "hello",
        ],
    );
    assert!(
        eventually(LONG, || serves_hello(local)),
        "127.0.0.1:{local} never served the page\n{}",
        vmctl_tests::tail(&home.daemon_log("default"), 20)
    );

    // The setting changes while the machine runs: on, 0.0.0.0 is served…
    home.ok(&["machine", "set", "--allow-lan-ports=true"]);
    let opened = free_port();
    assert!(
        eventually(LONG, || home
            .docker(
                &host,
                &[
                    "run",
                    "-d",
                    "--name",
                    "open",
                    "-p",
                    &format!("0.0.0.0:{opened}:80"),
                    "hello"
                ],
            )
            .status
            .success()
            || {
                let _ = home.docker(&host, &["rm", "-f", "open"]);
                false
            }),
        "0.0.0.0 still refused after --allow-lan-ports=true"
    );
    assert!(
        eventually(LONG, || serves_hello(opened)),
        "0.0.0.0:{opened}"
    );
    // …off again, its listener is closed; loopback stays.
    home.ok(&["machine", "set", "--allow-lan-ports=false"]);
    assert!(
        eventually(LONG, || !listening(opened)),
        "0.0.0.0:{opened} still listens after --allow-lan-ports=false"
    );
    assert!(serves_hello(local), "loopback survives the change");

    // The engine keeps user networks off the VM's own NIC subnet.
    let overlap = home.docker(
        &host,
        &["network", "create", "--subnet", "10.0.2.0/24", "x"],
    );
    assert!(
        !overlap.status.success(),
        "a network over 10.0.2.0/24 was made"
    );
    let message = text(&overlap.stderr);
    assert!(
        message.contains("10.0.2.0/24") && message.contains("the VM's own network"),
        "{message}"
    );
    let wider = home.docker(
        &host,
        &["network", "create", "--subnet", "10.0.0.0/16", "y"],
    );
    assert!(
        !wider.status.success(),
        "a network around 10.0.2.0/24 was made"
    );
    let networks = home.docker_ok(&host, &["network", "ls", "--format", "{{.Name}}"]);
    assert!(
        !networks.lines().any(|n| n == "x" || n == "y"),
        "{networks}"
    );
    home.docker_ok(
        &host,
        &["network", "create", "--subnet", "10.0.3.0/24", "z"],
    );

    // A service on the desktop's loopback only: a `--network host` container
    // (the VM's own network) reaches it at 10.0.2.2, QEMU's alias for the
    // desktop's loopback; no container on a bridge does, on the default
    // bridge or a user network.
    let netpeer = vmctl_tests::netpeer::image_tar().display().to_string();
    home.docker_ok(&host, &["load", "-q", "-i", &netpeer]);
    let (service, hits) = loopback_service();
    let target = format!("10.0.2.2:{service}");
    let get = |network: &str| {
        home.docker_ok(
            &host,
            &[
                "run",
                "--rm",
                "--network",
                network,
                "netpeer:latest",
                "tcp-get",
                &target,
            ],
        )
    };
    let from_vm = get("host");
    assert!(from_vm.contains("desktop-only"), "the VM: {from_vm}");
    let seen = hits.load(std::sync::atomic::Ordering::SeqCst);
    for network in ["bridge", "z"] {
        let report = get(network);
        assert!(
            report.starts_with("error") && !report.contains("desktop-only"),
            "a container on {network} reached the desktop's loopback: {report}"
        );
    }
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        seen,
        "a container's connection reached the desktop's loopback service"
    );
    home.docker_ok(&host, &["network", "rm", "z"]);
}

/// An HTTP service on the desktop's 127.0.0.1 only, answering `desktop-only`;
/// its port and the count of connections it took.
fn loopback_service() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let _ =
                stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 13\r\n\r\ndesktop-only\n");
        }
    });
    (port, hits)
}

/// `net.bridge.bridge-nf-call-iptables` in the VM, read by a privileged
/// container on the VM's network.
fn bridge_hook(home: &VmHome, host: &str) -> String {
    home.docker_ok(
        host,
        &[
            "run",
            "--rm",
            "--privileged",
            "--network",
            "host",
            "hello",
            "cat",
            "/proc/sys/net/bridge/bridge-nf-call-iptables",
        ],
    )
}

/// `wget` of `url` from container `from`, five seconds at most.
fn fetch_from(home: &VmHome, host: &str, from: &str, url: &str) -> Option<String> {
    let out = home.docker(
        host,
        &["exec", from, "timeout", "5", "wget", "-q", "-O-", url],
    );
    let page = text(&out.stdout);
    (out.status.success() && page.contains("Hello from vmctl")).then_some(page)
}

/// In the VM the engine passes bridged traffic through the ip hooks
/// (`br_netfilter`) only while a network has `icc=false`: off by default
/// (every packet to a container would pay a second conntrack pass), on
/// while such a network exists, where containers are then isolated from
/// each other while their published ports and the VM still reach them, and
/// off again once it is gone. Containers of an ordinary network keep
/// talking to each other with the hook off.
#[test]
fn icc_false_isolates_in_the_vm_and_only_it_turns_the_bridge_hook_on() {
    require_vm!();
    let home = VmHome::new();
    home.ok(&[
        "machine", "init", "--cpus", "2", "--memory", "1024", "--disk", "2",
    ]);
    home.ok(&["machine", "start"]);
    let host = home.docker_host();
    assert_eq!(bridge_hook(&home, &host), "0", "the hook is on by default");

    // The default bridge (icc on): containers reach each other.
    home.docker_ok(&host, &["run", "-d", "--name", "web", "hello"]);
    home.docker_ok(
        &host,
        &["run", "-d", "--name", "peer", "hello", "sleep", "600"],
    );
    let web = home.docker_ok(
        &host,
        &["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "web"],
    );
    assert!(
        eventually(LONG, || fetch_from(
            &home,
            &host,
            "peer",
            &format!("http://{web}/")
        )
        .is_some()),
        "containers on the default bridge do not reach each other"
    );

    // icc=false: on while the network exists.
    home.docker_ok(
        &host,
        &[
            "network",
            "create",
            "-o",
            "com.docker.network.bridge.enable_icc=false",
            "quiet",
        ],
    );
    assert_eq!(bridge_hook(&home, &host), "1", "icc=false without the hook");
    let port = free_port();
    home.docker_ok(
        &host,
        &[
            "run",
            "-d",
            "--name",
            "qweb",
            "--network",
            "quiet",
            "-p",
            &format!("127.0.0.1:{port}:80"),
            "hello",
        ],
    );
    home.docker_ok(
        &host,
        &[
            "run",
            "-d",
            "--name",
            "qpeer",
            "--network",
            "quiet",
            "hello",
            "sleep",
            "600",
        ],
    );
    let qweb = home.docker_ok(
        &host,
        &[
            "inspect",
            "-f",
            "{{(index .NetworkSettings.Networks \"quiet\").IPAddress}}",
            "qweb",
        ],
    );
    let url = format!("http://{qweb}/");
    // Up: the desktop's published port and the VM itself reach it.
    assert!(
        eventually(LONG, || serves_hello(port)),
        "the published port of an icc=false network"
    );
    let from_vm = home.docker(
        &host,
        &[
            "run",
            "--rm",
            "--network",
            "host",
            "hello",
            "timeout",
            "5",
            "wget",
            "-q",
            "-O-",
            &url,
        ],
    );
    assert!(
        text(&from_vm.stdout).contains("Hello from vmctl"),
        "the VM does not reach {url}"
    );
    // Isolated: its neighbour on the bridge gets nothing.
    let through = fetch_from(&home, &host, "qpeer", &url);
    assert!(
        through.is_none(),
        "icc=false let a container through: {through:?}"
    );

    // Gone: off again.
    home.docker_ok(&host, &["rm", "-f", "qweb", "qpeer"]);
    home.docker_ok(&host, &["network", "rm", "quiet"]);
    assert_eq!(bridge_hook(&home, &host), "0", "the hook stayed on");
    assert!(
        fetch_from(&home, &host, "peer", &format!("http://{web}/")).is_some(),
        "containers on the default bridge lost each other"
    );
}
