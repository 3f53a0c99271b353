//! Network modes other than a bridge: `--network none` (loopback only),
//! `--network host` (the engine's own interfaces and ports) and
//! `--network container:NAME` (another container's namespace, localhost
//! included).
//!
//! Host port 18100.

use std::time::Duration;

use vmctl_tests::{eventually, require_root, Engine};

const LONG: Duration = Duration::from_secs(30);
const HELLO: &str = "Hello from vmctl";

#[test]
fn network_none_has_only_loopback() {
    require_root!();
    let engine = Engine::start();
    let links = engine.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "hello",
        "ip",
        "-o",
        "link",
    ]);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo:"), "{links}");
    let addrs = engine.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "hello",
        "ip",
        "-4",
        "-o",
        "addr",
    ]);
    assert!(
        addrs.contains("inet 127.0.0.1/8") && addrs.lines().count() == 1,
        "{addrs}"
    );
    let before = engine.links();
    engine.ok(&["run", "-d", "--name", "box", "--network", "none", "hello"]);
    assert_eq!(
        engine.ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "box"]),
        ""
    );
    assert_eq!(engine.links(), before, "--network none made a link");
    // Its own loopback works.
    assert!(eventually(LONG, || engine
        .fetch_from("box", "http://127.0.0.1/")
        .is_ok_and(|b| b.contains(HELLO))));
}

#[test]
fn network_host_uses_the_engine_interfaces_and_ports() {
    require_root!();
    let engine = Engine::start();
    let outside = engine.outside();
    let addrs = engine.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "hello",
        "ip",
        "-4",
        "-o",
        "addr",
        "show",
        "ext0",
    ]);
    assert!(addrs.contains("inet 10.99.0.2/24"), "{addrs}");
    let before = engine.links();
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "host",
        "hello",
        "httpd",
        "-f",
        "-p",
        "18100",
        "-h",
        "/www",
    ]);
    assert!(eventually(LONG, || outside
        .fetch("http://10.99.0.2:18100/")
        .is_ok_and(|b| b.contains(HELLO))));
    assert_eq!(engine.links(), before, "--network host made a link");
    assert_eq!(
        engine.ok(&["inspect", "-f", "{{.HostConfig.NetworkMode}}", "web"]),
        "host"
    );
}

#[test]
fn container_mode_shares_the_network_namespace_and_localhost() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "c1",
        "hello",
        "httpd",
        "-f",
        "-p",
        "127.0.0.1:8000",
        "-h",
        "/www",
    ]);
    assert!(eventually(LONG, || engine
        .fetch_from("c1", "http://127.0.0.1:8000/")
        .is_ok_and(|b| b.contains(HELLO))));
    let page = engine.ok(&[
        "run",
        "--rm",
        "--network",
        "container:c1",
        "hello",
        "timeout",
        "5",
        "wget",
        "-q",
        "-O-",
        "http://127.0.0.1:8000/",
    ]);
    assert!(page.contains(HELLO), "{page}");
    // The same eth0 and address as c1.
    let ip = engine.ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "c1"]);
    let addrs = engine.ok(&[
        "run",
        "--rm",
        "--network",
        "container:c1",
        "hello",
        "ip",
        "-4",
        "-o",
        "addr",
        "show",
        "eth0",
    ]);
    assert!(addrs.contains(&format!("inet {ip}/")), "{addrs}");
    // Only a running container has a namespace to join.
    engine.ok(&["create", "--name", "idle", "hello"]);
    let out = engine.docker(&[
        "run",
        "--rm",
        "--network",
        "container:idle",
        "hello",
        "true",
    ]);
    assert!(
        !out.status.success(),
        "joined a container that is not running"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("non running container"), "{stderr}");
}
