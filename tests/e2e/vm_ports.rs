//! Published ports desktop → VM → container, end to end in a real VM: the
//! host daemon listens on the desktop for every published port, each
//! connection or UDP flow crosses vsock to the guest's forward service, and
//! the set of listeners follows the engine through container removal,
//! engine and daemon kills and a machine restart. Manual rules (`vmctl port`)
//! change live. Polls everywhere; no fixed sleeps.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use vmctl_tests::vm::{listening, text, VmHome};
use vmctl_tests::{eventually, require_vm};

/// How long anything may take to converge under TCG on a loaded CI host.
const LONG: Duration = Duration::from_secs(60);

/// `GET /` on 127.0.0.1:`port`; the whole answer.
fn http_get(port: u16) -> std::io::Result<String> {
    http_get_at(&format!("127.0.0.1:{port}"))
}

/// `GET /` on `address` (`[::1]:8080`); the whole answer.
fn http_get_at(address: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

fn serves_hello(port: u16) -> bool {
    http_get(port).is_ok_and(|page| page.contains("Hello from vmctl"))
}

/// One datagram to 127.0.0.1:`port` from `socket`; the answer, if one came.
fn udp_round_trip(socket: &UdpSocket, port: u16, message: &str) -> Option<String> {
    socket
        .send_to(message.as_bytes(), ("127.0.0.1", port))
        .ok()?;
    let mut buffer = [0u8; 2048];
    let (n, _) = socket.recv_from(&mut buffer).ok()?;
    Some(String::from_utf8_lossy(&buffer[..n]).into_owned())
}

/// One short connection through a TCP echo: `message` out, half-close,
/// the same bytes back, EOF.
fn echo_once(port: u16, message: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(message)?;
    stream.shutdown(Shutdown::Write)?;
    let mut back = Vec::new();
    stream.read_to_end(&mut back)?;
    Ok(back)
}

/// The port `docker port NAME PRIVATE` reports (`127.0.0.1:49153` → 49153).
fn docker_port(home: &VmHome, host: &str, name: &str, private: &str) -> (String, u16) {
    let line = home.docker_ok(host, &["port", name, private]);
    let first = line.lines().next().unwrap_or_default().to_owned();
    let (ip, port) = first
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("docker port said {line:?}"));
    (ip.to_owned(), port.parse().expect("port number"))
}

/// `vmctl port ls --json`.
fn forwards(home: &VmHome) -> Vec<serde_json::Value> {
    let out = home.ok(&["port", "ls", "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("port ls --json: {e}: {out}"))
}

fn forward_on(home: &VmHome, port: u16) -> Option<serde_json::Value> {
    forwards(home).into_iter().find(|f| f["host_port"] == port)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The pid of the guest engine (`/init vm-engine`: the same binary as PID 1
/// with that argument — not this very shell, whose command line has it too).
fn guest_engine_pid(home: &VmHome) -> Option<String> {
    let out = home.vmctl(&[
        "machine",
        "ssh",
        "--",
        "sh",
        "-c",
        "init=$(readlink /proc/1/exe); for p in /proc/[0-9]*; do [ \"$(readlink $p/exe)\" = \"$init\" ] && grep -q vm-engine $p/cmdline 2>/dev/null && echo ${p#/proc/}; done",
    ]);
    text(&out.stdout)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
}

/// A started machine (2 CPUs, 1 GiB) with netpeer loaded; its docker host.
fn started_with_netpeer() -> (VmHome, String) {
    let home = VmHome::new();
    home.ok(&[
        "machine", "init", "--cpus", "2", "--memory", "1024", "--disk", "2",
    ]);
    home.ok(&["machine", "start"]);
    let host = home.docker_host();
    let netpeer = vmctl_tests::netpeer::image_tar().display().to_string();
    home.docker_ok(&host, &["load", "-q", "-i", &netpeer]);
    (home, host)
}

#[test]
fn published_ports_reach_containers_and_follow_every_reset() {
    require_vm!();
    let (home, host) = started_with_netpeer();

    // The headline: vmctl run -p, the desktop's 127.0.0.1 reaches the container.
    home.ok(&["run", "-d", "--name", "web", "-p", "18080:80", "hello"]);
    assert!(
        eventually(LONG, || serves_hello(18080)),
        "127.0.0.1:18080 never served the page: {:?}\n{}",
        http_get(18080),
        vmctl_tests::tail(&home.daemon_log("default"), 20)
    );
    // An empty HostIp means the machine's port-bind-address, 127.0.0.1.
    assert_eq!(
        home.docker_ok(&host, &["port", "web", "80"]),
        "127.0.0.1:18080"
    );
    let web = forward_on(&home, 18080).expect("port ls shows the published port");
    assert_eq!(web["container"], "web");
    assert_eq!(web["host_ip"], "127.0.0.1");
    assert!(web["stats"]["bytes_out"].as_u64().unwrap_or(0) > 0, "{web}");

    // A random desktop port, reported by docker port.
    home.docker_ok(
        &host,
        &["run", "-d", "--name", "rnd", "-p", "127.0.0.1::80", "hello"],
    );
    let (ip, random) = docker_port(&home, &host, "rnd", "80/tcp");
    assert_eq!(ip, "127.0.0.1");
    assert_ne!(random, 0);
    assert!(
        eventually(LONG, || serves_hello(random)),
        "random port {random}"
    );

    // A HostIp is used exactly: all IPv4 interfaces, one address, IPv6
    // loopback (where the desktop has it); an address the desktop does not
    // have is refused by name.
    let ipv6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    for (i, (spec, shown, connect)) in [
        ("0.0.0.0:18086:80", "0.0.0.0:18086", "127.0.0.1:18086"),
        ("127.0.0.2:18087:80", "127.0.0.2:18087", "127.0.0.2:18087"),
        ("[::1]:18088:80", "[::1]:18088", "[::1]:18088"),
    ]
    .into_iter()
    .enumerate()
    {
        if spec.starts_with('[') && !ipv6 {
            eprintln!("no IPv6 loopback on this desktop: {spec} not tried");
            continue;
        }
        let name = format!("addr{i}");
        home.docker_ok(&host, &["run", "-d", "--name", &name, "-p", spec, "hello"]);
        assert_eq!(home.docker_ok(&host, &["port", &name, "80"]), shown);
        assert!(
            eventually(LONG, || http_get_at(connect)
                .is_ok_and(|page| page.contains("Hello from vmctl"))),
            "{spec}: no page at {connect}"
        );
        if spec.starts_with("127.0.0.2") {
            assert!(!listening(18087), "127.0.0.2 only, not 127.0.0.1");
        }
        home.docker_ok(&host, &["rm", "-f", &name]);
    }
    let foreign = home.docker(
        &host,
        &[
            "run",
            "-d",
            "--name",
            "foreign",
            "-p",
            "192.0.2.1:18089:80",
            "hello",
        ],
    );
    assert!(!foreign.status.success());
    assert!(
        text(&foreign.stderr).contains("192.0.2.1 is not an address of this desktop"),
        "{}",
        text(&foreign.stderr)
    );
    home.docker_ok(&host, &["rm", "foreign"]);

    // UDP: datagrams round-trip, two clients are two flows.
    home.docker_ok(
        &host,
        &[
            "run",
            "-d",
            "--name",
            "echo",
            "-p",
            "15353:5353/udp",
            "netpeer:latest",
            "udp-echo",
            "5353",
        ],
    );
    let client = UdpSocket::bind("127.0.0.1:0").expect("udp client");
    client
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let other = UdpSocket::bind("127.0.0.1:0").expect("udp client");
    other
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    assert!(
        eventually(LONG, || udp_round_trip(&client, 15353, "ping").as_deref()
            == Some("echo:ping")),
        "no UDP echo through 127.0.0.1:15353"
    );
    assert_eq!(
        udp_round_trip(&other, 15353, "pong").as_deref(),
        Some("echo:pong")
    );
    assert_eq!(
        udp_round_trip(&client, 15353, "again").as_deref(),
        Some("echo:again")
    );
    let echo = forward_on(&home, 15353).expect("udp forward listed");
    assert_eq!(echo["protocol"], "udp");
    assert!(echo["stats"]["connections"].as_u64() >= Some(2), "{echo}");

    // A second container on a published port fails cleanly…
    let before = forwards(&home).len();
    let clash = home.docker(
        &host,
        &["run", "-d", "--name", "web2", "-p", "18080:80", "hello"],
    );
    assert!(!clash.status.success());
    let message = text(&clash.stderr);
    assert!(
        message.contains("127.0.0.1:18080") && message.contains("already allocated"),
        "{message}"
    );
    assert_eq!(forwards(&home).len(), before, "nothing left behind");
    assert!(serves_hello(18080), "the first owner still serves");
    home.docker_ok(&host, &["rm", "web2"]);
    // …and so does one whose port a desktop process holds, naming it.
    let holder = TcpListener::bind("127.0.0.1:0").expect("hold a port");
    let held = holder.local_addr().expect("addr").port();
    let clash = home.docker(
        &host,
        &[
            "run",
            "-d",
            "--name",
            "held",
            "-p",
            &format!("{held}:80"),
            "hello",
        ],
    );
    assert!(!clash.status.success());
    let message = text(&clash.stderr);
    assert!(
        message.contains(&format!("127.0.0.1:{held}")) && message.contains("in use on the desktop"),
        "{message}"
    );
    assert!(
        !message.contains("(pid "),
        "the guest learns no desktop process: {message}"
    );
    assert_eq!(forwards(&home).len(), before, "nothing left behind");
    home.docker_ok(&host, &["rm", "held"]);
    // `vmctl run` runs on the desktop: it names the holder itself.
    let clash = home.vmctl(&[
        "run",
        "-d",
        "--name",
        "held2",
        "-p",
        &format!("{held}:80"),
        "hello",
    ]);
    assert!(!clash.status.success());
    let message = text(&clash.stderr);
    assert!(
        message.contains("in use on the desktop")
            && message.contains(&format!("(pid {})", std::process::id())),
        "{message}"
    );
    home.docker_ok(&host, &["rm", "held2"]);
    drop(holder);

    // docker rm -f: the listener goes with the container.
    home.docker_ok(&host, &["rm", "-f", "rnd"]);
    assert!(
        eventually(LONG, || !listening(random)),
        "127.0.0.1:{random} still listens after rm -f"
    );
    assert!(forward_on(&home, random).is_none());

    // A manual rule to a process in the VM (not published by a container),
    // live, then removed live.
    home.docker_ok(
        &host,
        &[
            "run",
            "-d",
            "--name",
            "vmweb",
            "--network",
            "host",
            "hello",
            "httpd",
            "-f",
            "-p",
            "8081",
            "-h",
            "/www",
        ],
    );
    let added = home.ok(&["port", "add", "18081:8081"]);
    assert!(added.contains("tcp-18081"), "{added}");
    assert!(
        eventually(LONG, || serves_hello(18081)),
        "rule 18081 → 8081"
    );
    let listed = home.ok(&["port", "ls"]);
    assert!(
        listed.lines().any(|l| l.starts_with("tcp-18081")),
        "{listed}"
    );
    let dup = home.vmctl(&["port", "add", "18081:8081"]);
    assert_eq!(dup.status.code(), Some(1));
    assert_eq!(
        text(&dup.stderr).lines().count(),
        1,
        "{}",
        text(&dup.stderr)
    );
    home.ok(&["port", "rm", "18081"]);
    assert!(!listening(18081), "port rm closes the listener at once");
    let missing = home.vmctl(&["port", "rm", "18081"]);
    assert_eq!(missing.status.code(), Some(1));

    // The guest engine killed: init restarts it and the forwards converge.
    let engine = guest_engine_pid(&home).expect("guest engine pid");
    // The shell runs under the control service of the engine it kills, so
    // its answer may be cut short (EOF); what counts is the new engine below.
    let _ = home.vmctl(&["machine", "ssh", "--", "kill", "-9", &engine]);
    assert!(
        eventually(LONG, || guest_engine_pid(&home)
            .is_some_and(|p| p != engine)),
        "the guest engine did not come back"
    );
    assert!(
        eventually(LONG, || serves_hello(18080)),
        "18080 after the engine restart"
    );
    assert!(eventually(LONG, || udp_round_trip(&client, 15353, "x")
        .as_deref()
        == Some("echo:x")));

    // The host daemon killed: its keeper starts it again, the new daemon
    // adopts the VM and the listeners come back, no command needed.
    let daemon = home.pid("default", "daemon.pid").expect("daemon pid");
    // SAFETY: kill of a pid just read; the worst case is ESRCH.
    unsafe { libc::kill(daemon as i32, libc::SIGKILL) };
    assert!(
        eventually(LONG, || home
            .pid("default", "daemon.pid")
            .is_some_and(|p| p != daemon)
            && serves_hello(18080)),
        "18080 after the daemon was killed:\n{}",
        vmctl_tests::tail(&home.daemon_log("default"), 20)
    );
    assert!(eventually(LONG, || udp_round_trip(&client, 15353, "y")
        .as_deref()
        == Some("echo:y")));

    // Load: 200 connections at once through one forward, then 10 000 short
    // ones in a row; none lost, and the daemon holds no more descriptors
    // afterwards than before.
    home.docker_ok(
        &host,
        &[
            "run",
            "-d",
            "--name",
            "tcpecho",
            "-p",
            "18083:7",
            "netpeer:latest",
            "tcp-echo",
            "7",
        ],
    );
    assert!(eventually(LONG, || echo_once(18083, b"warm")
        .is_ok_and(|b| b == b"warm")));
    let daemon = home.pid("default", "daemon.pid").expect("daemon pid");
    let baseline = open_fds(daemon);
    let concurrent: Vec<_> = (0..200)
        .map(|i| {
            std::thread::spawn(move || {
                let message = format!("concurrent {i} ").repeat(100);
                echo_once(18083, message.as_bytes()).map(|back| back == message.as_bytes())
            })
        })
        .collect();
    let lost: Vec<String> = concurrent
        .into_iter()
        .enumerate()
        .filter_map(|(i, t)| match t.join().expect("thread") {
            Ok(true) => None,
            Ok(false) => Some(format!("{i}: wrong bytes")),
            Err(e) => Some(format!("{i}: {e}")),
        })
        .collect();
    assert!(lost.is_empty(), "lost among 200 concurrent: {lost:?}");
    for i in 0..10_000u32 {
        let message = i.to_be_bytes();
        let back = echo_once(18083, &message);
        assert!(
            back.as_ref().is_ok_and(|b| b == &message),
            "sequential connection {i}: {back:?}"
        );
    }
    assert!(
        eventually(LONG, || open_fds(daemon) <= baseline),
        "daemon fds: {} before, {} after",
        baseline,
        open_fds(daemon)
    );
    let load = forward_on(&home, 18083).expect("echo forward");
    assert!(
        load["stats"]["connections"].as_u64() >= Some(10_201),
        "{load}"
    );

    // A machine restart: a restart-policy container comes back, so does its
    // forward; containers without one are not forwarded any more.
    home.docker_ok(
        &host,
        &[
            "run",
            "-d",
            "--name",
            "keep",
            "--restart",
            "always",
            "-p",
            "18082:80",
            "hello",
        ],
    );
    assert!(eventually(LONG, || serves_hello(18082)));
    home.ok(&["port", "add", "again", "18084:8081"]);
    home.ok(&["machine", "restart"]);
    assert!(
        eventually(LONG, || serves_hello(18082)),
        "18082 after the machine restart"
    );
    assert!(
        eventually(LONG, || !listening(18080)),
        "web has no restart policy"
    );
    assert!(
        forward_on(&home, 18084).is_some(),
        "rules persist across a restart"
    );
    assert!(listening(18084));

    // A stop closes every desktop listener.
    home.ok(&["machine", "stop"]);
    for port in [18082, 18083, 18084] {
        assert!(!listening(port), "{port} after stop");
    }
    let stopped = home.ok(&["port", "ls"]);
    assert!(stopped.contains("again"), "{stopped}");
    home.ok(&["machine", "rm", "--force"]);
    assert!(home.processes().is_empty(), "{:?}", home.processes());
}

/// The first line a connection to 127.0.0.1:`port` is told.
fn first_line(port: u16) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut said = String::new();
    stream.read_to_string(&mut said)?;
    Ok(said.lines().next().unwrap_or_default().to_owned())
}

/// `size` bytes of a pattern through the TCP echo on 127.0.0.1:`port`, both
/// directions at once, half-closed at the end; whether all came back intact.
fn echo_bulk(port: u16, size: usize) -> std::io::Result<bool> {
    let pattern = |at: usize| (at % 251) as u8;
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut writer = stream.try_clone()?;
    let sending = std::thread::spawn(move || -> std::io::Result<()> {
        let chunk: Vec<u8> = (0..size).map(pattern).collect();
        for piece in chunk.chunks(256 * 1024) {
            writer.write_all(piece)?;
        }
        writer.shutdown(Shutdown::Write)
    });
    let mut back = Vec::with_capacity(size);
    (&stream).read_to_end(&mut back)?;
    sending.join().expect("writer")?;
    Ok(back.len() == size && back.iter().enumerate().all(|(at, b)| *b == pattern(at)))
}

/// A container connects to the link's desktop-side address at the port of
/// `listener` (`place`): it gets no answer, and nothing arrives.
fn knock_unanswered(home: &VmHome, host: &str, listener: &TcpListener, place: &str) {
    listener.set_nonblocking(true).expect("non-blocking");
    let port = listener.local_addr().expect("its port").port();
    let target = format!("{}:{port}", vmctl_proto::forward::LINK_HOST);
    let knock = home.docker_ok(
        host,
        &[
            "run",
            "--rm",
            vmctl_tests::netpeer::IMAGE,
            "tcp-get",
            &target,
        ],
    );
    assert!(
        knock.starts_with("error"),
        "{place} answered through the link: {knock}"
    );
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a container reached {place} through the link"
    );
}

/// A TCP listener and a UDP socket at the forward link's desktop-side
/// address, in the helper's network namespace (where the daemon's sockets
/// to the guest live): what no container may reach. `None` unless root.
fn in_link_namespace(home: &VmHome) -> Option<(TcpListener, UdpSocket)> {
    use std::os::fd::AsRawFd;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let socket = home.machine_run("default").join("link.sock");
    let helper = std::fs::read_dir("/proc").ok()?.flatten().find(|entry| {
        std::fs::read(entry.path().join("cmdline")).is_ok_and(|line| {
            let line = String::from_utf8_lossy(&line).replace('\0', " ");
            line.contains("__forward-link") && line.contains(&*socket.to_string_lossy())
        })
    })?;
    let namespace = std::fs::File::open(helper.path().join("ns/net")).ok()?;
    let address = vmctl_proto::forward::LINK_HOST;
    std::thread::spawn(move || {
        // SAFETY: a namespace file this thread holds open; only this thread
        // (which ends here) moves.
        let entered = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
        let tcp = TcpListener::bind((address, 0)).expect("a listener on the link");
        let udp = UdpSocket::bind((address, 0)).expect("a UDP socket on the link");
        Some((tcp, udp))
    })
    .join()
    .expect("the namespace thread")
}

/// Published ports go through the forward link (the VM's second NIC,
/// `vmctl::link`): the container's peer is the link's desktop side, for
/// TCP, UDP and a `vmctl port` rule (also to a server only on the VM's
/// loopback); bulk both ways at once arrives whole, half-close kept. And
/// the link is a dead end for a container: neither a listener the desktop
/// has on all its addresses nor one at the link's own desktop-side address
/// (in its namespace) is reached through it, by TCP or UDP.
#[test]
fn published_ports_take_the_forward_link_which_leads_nowhere_else() {
    require_vm!();
    let (home, host) = started_with_netpeer();
    let image = vmctl_tests::netpeer::IMAGE;

    let link_host = vmctl_proto::forward::LINK_HOST;
    home.docker_ok(
        &host,
        &[
            "run",
            "-d",
            "-p",
            "127.0.0.1:18190:7",
            image,
            "tcp-peer",
            "7",
        ],
    );
    let mut said = String::new();
    assert!(
        eventually(LONG, || {
            said = first_line(18190).unwrap_or_default();
            said.starts_with(&format!("peer {link_host}:"))
        }),
        "the container's peer was not the link ({said:?})\n{}",
        vmctl_tests::tail(&home.daemon_log("default"), 20)
    );

    let status = home.ok(&["machine", "status"]);
    assert!(
        status.contains("forwards:     the forward link"),
        "machine status does not say the link carries the forwards:\n{status}"
    );

    // A `vmctl port` rule to a port of the VM itself: through the link too.
    home.docker_ok(
        &host,
        &["run", "-d", "--network", "host", image, "tcp-peer", "7107"],
    );
    home.ok(&["port", "add", "peer", "18193:7107"]);
    assert!(
        eventually(LONG, || {
            said = first_line(18193).unwrap_or_default();
            said.starts_with(&format!("peer {link_host}:"))
        }),
        "the rule's connection did not come through the link ({said:?})"
    );
    // A rule to a server on the VM's loopback only: the guest maps the
    // link's address to its loopback.
    home.docker_ok(
        &host,
        &[
            "run",
            "-d",
            "--network",
            "host",
            "hello",
            "httpd",
            "-f",
            "-p",
            "127.0.0.1:7108",
            "-h",
            "/www",
        ],
    );
    home.ok(&["port", "add", "loopback", "18194:7108"]);
    assert!(
        eventually(LONG, || serves_hello(18194)),
        "a rule to the VM's loopback: {:?}\n{}",
        http_get(18194),
        vmctl_tests::tail(&home.daemon_log("default"), 20)
    );

    // UDP: each client's flow has its own socket on the link.
    home.docker_ok(
        &host,
        &[
            "run",
            "-d",
            "-p",
            "127.0.0.1:18192:7/udp",
            image,
            "udp-peer",
            "7",
        ],
    );
    let client = UdpSocket::bind("127.0.0.1:0").expect("a UDP client");
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut answer = None;
    assert!(
        eventually(LONG, || {
            answer = udp_round_trip(&client, 18192, "who");
            answer
                .as_deref()
                .is_some_and(|a| a.starts_with(&format!("peer {link_host}:")))
        }),
        "UDP did not come through the link: {answer:?}"
    );

    home.docker_ok(
        &host,
        &[
            "run",
            "-d",
            "-p",
            "127.0.0.1:18191:7",
            image,
            "tcp-echo",
            "7",
        ],
    );
    assert!(
        eventually(LONG, || echo_once(18191, b"ping")
            .is_ok_and(|b| b == b"ping")),
        "the echo never answered"
    );
    assert!(
        echo_bulk(18191, 64 << 20).expect("64 MiB through the echo"),
        "64 MiB did not come back intact"
    );
    let echo = forward_on(&home, 18191).expect("port ls shows the echo");
    assert!(
        echo["stats"]["bytes_out"].as_u64().unwrap_or(0) >= 64 << 20,
        "{echo}"
    );

    // Hostile: a container knocks on the link's desktop side at a port the
    // desktop listens on (all addresses): nothing answers, nothing arrives.
    let desktop = TcpListener::bind("0.0.0.0:0").expect("a desktop listener");
    knock_unanswered(&home, &host, &desktop, "the desktop");
    // The link's own far end: the VM routes there and would masquerade a
    // container's packets; its firewall lets no new flow out of the link.
    if let Some((tcp, udp)) = in_link_namespace(&home) {
        let udp_port = udp.local_addr().expect("port").port();
        knock_unanswered(&home, &host, &tcp, "the link's far end");
        let sent = home.docker_ok(
            &host,
            &[
                "run",
                "--rm",
                image,
                "udp-send",
                &format!("{link_host}:{udp_port}"),
            ],
        );
        assert_eq!(sent, "sent 3", "the container could not send its datagrams");
        udp.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut buffer = [0u8; 64];
        let got = udp.recv_from(&mut buffer);
        assert!(
            got.is_err(),
            "a container's datagram reached the link's far end: {got:?}"
        );
    }
    home.ok(&["machine", "stop"]);
}

#[test]
fn port_rules_are_vm_only_and_bad_specs_refused() {
    require_vm!();
    let home = VmHome::new();
    home.ok(&["machine", "init"]);
    for (args, needle) in [
        (vec!["port", "add", "80"], "HOSTPORT:GUESTPORT"),
        (vec!["port", "add", "0:80"], "0"),
        (vec!["port", "add", "70000:80"], "70000"),
        (vec!["port", "add", "80:80/sctp"], "sctp"),
        (vec!["port", "add", "bad name!", "18085:80"], "bad name!"),
        (vec!["port", "rm", "nosuch"], "nosuch"),
    ] {
        let out = home.vmctl(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let message = text(&out.stderr);
        assert_eq!(message.lines().count(), 1, "{args:?}: {message}");
        assert!(message.contains(needle), "{args:?}: {message}");
    }
    // A stopped machine's rules are edited offline and kept.
    home.ok(&["port", "add", "web", "18085:80"]);
    let listed = home.ok(&["port", "ls"]);
    assert!(
        listed.contains("web") && listed.contains("18085"),
        "{listed}"
    );
    assert!(!listening(18085), "nothing listens while stopped");
    home.ok(&["port", "rm", "web"]);
    assert!(!home.ok(&["port", "ls"]).contains("web"));
    // Standalone engines have no VM to forward into.
    let standalone = home.vmctl(&["--host", "unix:///tmp/nosuch.sock", "port", "ls"]);
    assert_eq!(standalone.status.code(), Some(1));
    assert!(
        text(&standalone.stderr).contains("VM"),
        "{}",
        text(&standalone.stderr)
    );
}
