//! The default bridge: the engine's `vmctl0` at 172.17.0.1/16, one veth per
//! container with an address from 172.17.0.0/16 and a default route via the
//! gateway, what `docker inspect` says about it, container to container
//! traffic by address, and MASQUERADE towards the LAN.

use std::time::Duration;

use vmctl_tests::{eventually, require_root, Engine};

const LONG: Duration = Duration::from_secs(30);
/// The outside's peer-address server in this suite.
const PEER_PORT: u16 = 19010;

fn inspect(engine: &Engine, container: &str, template: &str) -> String {
    engine.ok(&["inspect", "-f", template, container])
}

#[test]
fn engine_creates_the_default_bridge_with_its_gateway() {
    require_root!();
    let engine = Engine::start();
    assert!(
        eventually(LONG, || engine.links().contains(&"vmctl0".to_owned())),
        "links: {:?}",
        engine.links()
    );
    let addr = engine.in_namespaces(&["ip", "-4", "-o", "addr", "show", "dev", "vmctl0"]);
    let addr = String::from_utf8_lossy(&addr.stdout);
    assert!(addr.contains("inet 172.17.0.1/16"), "{addr}");
    let forward = engine.in_namespaces(&["cat", "/proc/sys/net/ipv4/ip_forward"]);
    assert_eq!(String::from_utf8_lossy(&forward.stdout).trim(), "1");
    let subnet = engine.ok(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}}",
        "bridge",
    ]);
    assert_eq!(subnet, "172.17.0.0/16 172.17.0.1");
}

#[test]
fn bridge_container_gets_an_address_and_a_default_route() {
    require_root!();
    let engine = Engine::start();
    let addr = engine.ok(&[
        "run", "--rm", "hello", "ip", "-4", "-o", "addr", "show", "eth0",
    ]);
    assert!(addr.contains("inet 172.17.0."), "{addr}");
    assert!(addr.contains("/16"), "{addr}");
    let routes = engine.ok(&["run", "--rm", "hello", "ip", "route"]);
    assert!(
        routes
            .lines()
            .any(|l| l.starts_with("default via 172.17.0.1")),
        "{routes}"
    );
    // eth0 and lo, nothing else.
    let links = engine.ok(&["run", "--rm", "hello", "ip", "-o", "link"]);
    assert_eq!(links.lines().count(), 2, "{links}");
}

#[test]
fn inspect_shows_the_bridge_address_gateway_and_mac() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&["run", "-d", "--name", "web", "hello"]);
    let ip = inspect(&engine, "web", "{{.NetworkSettings.IPAddress}}");
    assert!(ip.starts_with("172.17.0."), "{ip}");
    assert_eq!(
        inspect(&engine, "web", "{{.NetworkSettings.Gateway}}"),
        "172.17.0.1"
    );
    assert_eq!(
        inspect(&engine, "web", "{{.NetworkSettings.IPPrefixLen}}"),
        "16"
    );
    assert_eq!(
        inspect(
            &engine,
            "web",
            "{{.NetworkSettings.Networks.bridge.IPAddress}} {{.NetworkSettings.Networks.bridge.Gateway}}"
        ),
        format!("{ip} 172.17.0.1")
    );
    let mac = inspect(&engine, "web", "{{.NetworkSettings.MacAddress}}");
    assert!(mac.starts_with("02:42:ac:11:"), "{mac}");
    assert_eq!(
        inspect(
            &engine,
            "web",
            "{{.NetworkSettings.Networks.bridge.MacAddress}}"
        ),
        mac
    );
    // What inspect says is what the container has.
    let inside = engine.ok(&["exec", "web", "ip", "-4", "-o", "addr", "show", "eth0"]);
    assert!(inside.contains(&format!("inet {ip}/16")), "{inside}");
    assert_eq!(
        engine.ok(&["exec", "web", "cat", "/sys/class/net/eth0/address"]),
        mac
    );
}

#[test]
fn bridge_containers_get_different_addresses_and_reach_each_other() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&["run", "-d", "--name", "alpha", "hello"]);
    engine.ok(&["run", "-d", "--name", "beta", "hello"]);
    let a = inspect(&engine, "alpha", "{{.NetworkSettings.IPAddress}}");
    let b = inspect(&engine, "beta", "{{.NetworkSettings.IPAddress}}");
    assert_ne!(a, b);
    assert!(
        a.starts_with("172.17.0.") && b.starts_with("172.17.0."),
        "{a} {b}"
    );
    for (from, to) in [("alpha", &b), ("beta", &a)] {
        let url = format!("http://{to}/");
        let mut last = Err(String::new());
        assert!(
            eventually(LONG, || {
                last = engine.fetch_from(from, &url);
                last.as_ref()
                    .is_ok_and(|body| body.contains("Hello from vmctl"))
            }),
            "{from} → {url}: {last:?}"
        );
    }
    // The engine's namespace (the host of the bridge) reaches them too.
    assert!(engine
        .fetch(&format!("http://{a}/"))
        .is_ok_and(|body| body.contains("Hello from vmctl")));
}

#[test]
fn masquerade_shows_the_engine_address_to_the_lan() {
    require_root!();
    let engine = Engine::start();
    let outside = engine.outside();
    let _server = outside.serve_peer_address(PEER_PORT);
    let url = format!("http://10.99.0.1:{PEER_PORT}/");
    let seen = engine.ok(&[
        "run", "--rm", "hello", "timeout", "5", "wget", "-q", "-O-", &url,
    ]);
    assert_eq!(seen, "peer=10.99.0.2");
}

#[test]
fn containers_hold_distinct_addresses_only_while_running() {
    require_root!();
    let engine = Engine::start();
    for n in 0..20 {
        let name = format!("c{n}");
        engine.ok(&["run", "-d", "--name", &name, "hello", "sleep", "1000"]);
    }
    let mut addresses: Vec<String> = (0..20)
        .map(|n| inspect(&engine, &format!("c{n}"), "{{.NetworkSettings.IPAddress}}"))
        .collect();
    assert!(
        addresses.iter().all(|a| a.starts_with("172.17.0.")),
        "{addresses:?}"
    );
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 20, "{addresses:?}");
    // A stopped container gives its address back, and gets one again on start.
    engine.ok(&["stop", "-t", "0", "c0"]);
    assert_eq!(inspect(&engine, "c0", "{{.NetworkSettings.IPAddress}}"), "");
    engine.ok(&["start", "c0"]);
    let again = inspect(&engine, "c0", "{{.NetworkSettings.IPAddress}}");
    assert!(again.starts_with("172.17.0."), "{again}");
    let inside = engine.ok(&["exec", "c0", "ip", "-4", "-o", "addr", "show", "eth0"]);
    assert!(inside.contains(&format!("inet {again}/16")), "{inside}");
}
