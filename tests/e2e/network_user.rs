//! User-defined networks: create, ls, inspect, rm and prune; containers on
//! one resolve each other by name and alias through the network's DNS
//! responder, and cannot see another network; `--internal` keeps the LAN
//! out of reach; `--subnet`, `--gateway`, `--ip`; `network connect` and
//! `disconnect` on a running container; the bridge name and MTU options;
//! and the bad input Docker refuses.

use std::net::Ipv4Addr;
use std::time::Duration;

use vmctl_tests::{eventually, require_root, Engine};

const LONG: Duration = Duration::from_secs(30);
const HELLO: &str = "Hello from vmctl";
/// The outside's peer-address server in this suite.
const PEER_PORT: u16 = 19020;

/// Waits until `container` fetches the hello page from `url`.
fn reaches(engine: &Engine, container: &str, url: &str) {
    let mut last = Err(String::new());
    assert!(
        eventually(LONG, || {
            last = engine.fetch_from(container, url);
            last.as_ref().is_ok_and(|body| body.contains(HELLO))
        }),
        "{container} → {url}: {last:?}"
    );
}

/// `nslookup NAME` in `container`: the output, or why not.
fn lookup(engine: &Engine, container: &str, name: &str) -> Result<String, String> {
    let out = engine.docker(&["exec", container, "timeout", "5", "nslookup", name]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// Waits until `name` resolves to `address` in `container`.
fn resolves(engine: &Engine, container: &str, name: &str, address: &str) {
    let mut last = Err(String::new());
    assert!(
        eventually(LONG, || {
            last = lookup(engine, container, name);
            last.as_ref().is_ok_and(|text| answer_has(text, address))
        }),
        "{name} in {container}: {last:?}"
    );
}

/// Whether nslookup output answers with `address` (past the server lines).
fn answer_has(nslookup: &str, address: &str) -> bool {
    nslookup
        .split_once("Name:")
        .is_some_and(|(_, answer)| answer.contains(address))
}

/// The first IPAM subnet and gateway of a network.
fn subnet_and_gateway(engine: &Engine, network: &str) -> (String, String) {
    let text = engine.ok(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}}",
        network,
    ]);
    let (subnet, gateway) = text
        .split_once(' ')
        .unwrap_or_else(|| panic!("{network} IPAM: {text:?}"));
    (subnet.to_owned(), gateway.to_owned())
}

/// Whether `ip` lies in `cidr` (IPv4).
fn in_subnet(ip: &str, cidr: &str) -> bool {
    let (net, len) = cidr.split_once('/').expect("CIDR");
    let (Ok(ip), Ok(net), Ok(len)) = (
        ip.parse::<Ipv4Addr>(),
        net.parse::<Ipv4Addr>(),
        len.parse::<u32>(),
    ) else {
        return false;
    };
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

/// Asserts `docker ARGS` fails with `needle` in stderr.
fn refused(engine: &Engine, args: &[&str], needle: &str) {
    let out = engine.docker(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "docker {args:?} succeeded");
    assert!(
        stderr.contains(needle),
        "docker {args:?}: expected {needle:?} in {stderr}"
    );
}

fn network_names(engine: &Engine) -> Vec<String> {
    let mut names: Vec<String> = engine
        .ok(&["network", "ls", "--format", "{{.Name}}"])
        .lines()
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

#[test]
fn created_network_is_listed_and_its_ipam_matches_its_containers() {
    require_root!();
    let engine = Engine::start();
    let id = engine.ok(&["network", "create", "n1"]);
    assert_eq!(id.len(), 64, "{id}");
    assert_eq!(network_names(&engine), ["bridge", "host", "n1", "none"]);
    assert_eq!(
        engine.ok(&["network", "inspect", "-f", "{{.Driver}} {{.Scope}}", "n1"]),
        "bridge local"
    );
    let (subnet, gateway) = subnet_and_gateway(&engine, "n1");
    assert!(in_subnet(&gateway, &subnet), "{gateway} not in {subnet}");
    assert!(
        !in_subnet(&gateway, "172.17.0.0/16") && !in_subnet("172.17.0.1", &subnet),
        "{subnet} overlaps the default bridge"
    );
    let private = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];
    assert!(
        private.iter().any(|p| in_subnet(&gateway, p)),
        "{subnet} is not private"
    );

    engine.ok(&["run", "-d", "--name", "box", "--network", "n1", "hello"]);
    let ip = engine.address_on("box", "n1");
    assert!(in_subnet(&ip, &subnet), "{ip} not in {subnet}");
    assert_eq!(engine.address_on("box", "bridge"), "", "also on the bridge");
    let prefix = subnet.split_once('/').map(|(_, p)| p).unwrap_or_default();
    let inside = engine.ok(&["exec", "box", "ip", "-4", "-o", "addr", "show", "eth0"]);
    assert!(inside.contains(&format!("inet {ip}/{prefix}")), "{inside}");
    let routes = engine.ok(&["exec", "box", "ip", "route"]);
    assert!(
        routes.contains(&format!("default via {gateway}")),
        "{routes}"
    );
    let containers = engine.ok(&[
        "network",
        "inspect",
        "-f",
        "{{range .Containers}}{{.Name}} {{.IPv4Address}}{{end}}",
        "n1",
    ]);
    assert_eq!(containers, format!("box {ip}/{prefix}"));
    // A second network gets a subnet of its own.
    engine.ok(&["network", "create", "n2"]);
    let (other, _) = subnet_and_gateway(&engine, "n2");
    assert_ne!(other, subnet);
}

#[test]
fn containers_resolve_each_other_by_name_and_alias() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&["network", "create", "n1"]);
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "n1",
        "--network-alias",
        "www",
        "hello",
    ]);
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "client",
        "--network",
        "n1",
        "hello",
        "sleep",
        "1000",
    ]);
    let web = engine.address_on("web", "n1");
    resolves(&engine, "client", "web", &web);
    resolves(&engine, "client", "www", &web);
    reaches(&engine, "client", "http://web/");
    reaches(&engine, "client", "http://www/");
    // An unknown name does not resolve (and does not hang).
    let unknown = lookup(&engine, "client", "nosuchname");
    assert!(unknown.is_err(), "{unknown:?}");
    // A container that is gone is not resolved any more.
    engine.ok(&["rm", "-f", "web"]);
    assert!(eventually(LONG, || lookup(&engine, "client", "web").is_err()));
}

#[test]
fn networks_cannot_see_each_other() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&["network", "create", "n1"]);
    engine.ok(&["network", "create", "n2"]);
    engine.ok(&["run", "-d", "--name", "web", "--network", "n1", "hello"]);
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "near",
        "--network",
        "n1",
        "hello",
        "sleep",
        "1000",
    ]);
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "far",
        "--network",
        "n2",
        "hello",
        "sleep",
        "1000",
    ]);
    let web = engine.address_on("web", "n1");
    let url = format!("http://{web}/");
    // web serves, and names resolve, on its own network...
    reaches(&engine, "near", &url);
    resolves(&engine, "near", "web", &web);
    // ...but not from the other one.
    let name = lookup(&engine, "far", "web");
    assert!(
        name.as_ref().map_or(true, |text| !answer_has(text, &web)),
        "n2 resolved n1's name: {name:?}"
    );
    let fetched = engine.fetch_from("far", &url);
    assert!(fetched.is_err(), "n2 reached n1's container: {fetched:?}");
}

#[test]
fn internal_network_reaches_peers_but_not_the_lan() {
    require_root!();
    let engine = Engine::start();
    let outside = engine.outside();
    let _server = outside.serve_peer_address(PEER_PORT);
    let lan = format!("http://10.99.0.1:{PEER_PORT}/");
    engine.ok(&["network", "create", "--internal", "int"]);
    engine.ok(&["network", "create", "open"]);
    assert_eq!(
        engine.ok(&["network", "inspect", "-f", "{{.Internal}}", "int"]),
        "true"
    );
    engine.ok(&["run", "-d", "--name", "web", "--network", "int", "hello"]);
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "inner",
        "--network",
        "int",
        "hello",
        "sleep",
        "1000",
    ]);
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "free",
        "--network",
        "open",
        "hello",
        "sleep",
        "1000",
    ]);
    // The LAN server is up: a container on an ordinary network reaches it.
    assert_eq!(
        engine.fetch_from("free", &lan).as_deref(),
        Ok("peer=10.99.0.2\n")
    );
    reaches(&engine, "inner", "http://web/");
    let escaped = engine.fetch_from("inner", &lan);
    assert!(
        escaped.is_err(),
        "internal network reached the LAN: {escaped:?}"
    );
}

#[test]
fn explicit_subnet_gateway_and_ip() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&[
        "network",
        "create",
        "--subnet",
        "10.88.0.0/24",
        "--gateway",
        "10.88.0.254",
        "n3",
    ]);
    assert_eq!(
        subnet_and_gateway(&engine, "n3"),
        ("10.88.0.0/24".to_owned(), "10.88.0.254".to_owned())
    );
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "box",
        "--network",
        "n3",
        "--ip",
        "10.88.0.10",
        "hello",
    ]);
    assert_eq!(engine.address_on("box", "n3"), "10.88.0.10");
    let inside = engine.ok(&["exec", "box", "ip", "-4", "-o", "addr", "show", "eth0"]);
    assert!(inside.contains("inet 10.88.0.10/24"), "{inside}");
    let routes = engine.ok(&["exec", "box", "ip", "route"]);
    assert!(routes.contains("default via 10.88.0.254"), "{routes}");
    // The gateway is the engine's side: it answers from there.
    let bridge = engine.in_namespaces(&["ip", "-4", "-o", "addr"]);
    assert!(
        String::from_utf8_lossy(&bridge.stdout).contains("inet 10.88.0.254/24"),
        "{}",
        String::from_utf8_lossy(&bridge.stdout)
    );
    assert!(eventually(LONG, || engine
        .fetch("http://10.88.0.10/")
        .is_ok_and(|b| b.contains(HELLO))));
    // The address is taken while c lives.
    let taken = engine.docker(&[
        "run",
        "--rm",
        "--network",
        "n3",
        "--ip",
        "10.88.0.10",
        "hello",
        "true",
    ]);
    assert!(!taken.status.success(), "two containers got 10.88.0.10");
    // Dynamic addresses skip the static one and the gateway.
    engine.ok(&["run", "-d", "--name", "dyn", "--network", "n3", "hello"]);
    let d = engine.address_on("dyn", "n3");
    assert!(in_subnet(&d, "10.88.0.0/24"), "{d}");
    assert!(d != "10.88.0.10" && d != "10.88.0.254", "{d}");
}

#[test]
fn connect_adds_an_interface_and_disconnect_removes_it() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&["network", "create", "--subnet", "10.88.0.0/24", "n3"]);
    engine.ok(&["run", "-d", "--name", "c1", "hello"]);
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "peer",
        "--network",
        "n3",
        "hello",
        "sleep",
        "1000",
    ]);
    engine.ok(&[
        "network",
        "connect",
        "--ip",
        "10.88.0.50",
        "--alias",
        "extra",
        "n3",
        "c1",
    ]);
    let eth1 = engine.ok(&["exec", "c1", "ip", "-4", "-o", "addr", "show", "eth1"]);
    assert!(eth1.contains("inet 10.88.0.50/24"), "{eth1}");
    // Still on the bridge through eth0.
    let eth0 = engine.ok(&["exec", "c1", "ip", "-4", "-o", "addr", "show", "eth0"]);
    assert!(eth0.contains("inet 172.17.0."), "{eth0}");
    assert_eq!(engine.address_on("c1", "n3"), "10.88.0.50");
    assert!(engine.address_on("c1", "bridge").starts_with("172.17.0."));
    reaches(&engine, "peer", "http://10.88.0.50/");
    resolves(&engine, "peer", "extra", "10.88.0.50");
    resolves(&engine, "peer", "c1", "10.88.0.50");

    engine.ok(&["network", "disconnect", "n3", "c1"]);
    let gone = engine.docker(&["exec", "c1", "ip", "link", "show", "eth1"]);
    assert!(!gone.status.success(), "eth1 is still there");
    assert_eq!(engine.address_on("c1", "n3"), "");
    let fetched = engine.fetch_from("peer", "http://10.88.0.50/");
    assert!(fetched.is_err(), "{fetched:?}");
    // eth0 and the bridge are untouched.
    let eth0_after = engine.ok(&["exec", "c1", "ip", "-4", "-o", "addr", "show", "eth0"]);
    assert_eq!(eth0_after, eth0);
}

#[test]
fn network_rm_refuses_networks_in_use_and_prune_removes_unused_ones() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&["network", "create", "n1"]);
    engine.ok(&["run", "-d", "--name", "box", "--network", "n1", "hello"]);
    refused(&engine, &["network", "rm", "n1"], "has active endpoints");
    refused(&engine, &["network", "rm", "bridge"], "pre-defined");
    engine.ok(&["rm", "-f", "box"]);
    engine.ok(&["network", "rm", "n1"]);
    assert!(!engine
        .docker(&["network", "inspect", "n1"])
        .status
        .success());

    engine.ok(&["network", "create", "n2"]);
    engine.ok(&["network", "create", "n4"]);
    engine.ok(&["network", "create", "busy"]);
    // A running container holds its network against prune.
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "holder",
        "--network",
        "busy",
        "hello",
    ]);
    let pruned = engine.ok(&["network", "prune", "-f"]);
    assert!(
        pruned.contains("n2") && pruned.contains("n4") && !pruned.contains("busy"),
        "{pruned}"
    );
    assert_eq!(network_names(&engine), ["bridge", "busy", "host", "none"]);
}

#[test]
fn bad_network_input_is_refused() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&["network", "create", "--subnet", "10.88.0.0/24", "n1"]);
    refused(&engine, &["network", "create", "n1"], "already exists");
    let overlap = engine.docker(&["network", "create", "--subnet", "10.88.0.0/25", "n2"]);
    assert!(!overlap.status.success(), "an overlapping subnet was taken");
    let overlap = engine.docker(&["network", "create", "--subnet", "172.17.5.0/24", "n2"]);
    assert!(
        !overlap.status.success(),
        "a subnet inside the default bridge was taken"
    );
    let bad_gateway = engine.docker(&[
        "network",
        "create",
        "--subnet",
        "10.89.0.0/24",
        "--gateway",
        "10.90.0.1",
        "n2",
    ]);
    assert!(!bad_gateway.status.success(), "a gateway off its subnet");
    assert_eq!(network_names(&engine), ["bridge", "host", "n1", "none"]);

    let out = engine.docker(&[
        "run",
        "--rm",
        "--network",
        "n1",
        "--ip",
        "10.77.0.5",
        "hello",
        "true",
    ]);
    assert!(!out.status.success(), "--ip outside the subnet was taken");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("10.77.0.5"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = engine.docker(&["run", "--rm", "--ip", "172.17.0.50", "hello", "true"]);
    assert!(
        !out.status.success(),
        "--ip on the default bridge was taken"
    );
    refused(
        &engine,
        &["run", "--rm", "--network", "nosuch", "hello", "true"],
        "not found",
    );
    assert_eq!(
        engine.ok(&["ps", "-q", "--filter", "status=running"]),
        "",
        "a refused run left a running container"
    );
}

#[test]
fn bridge_name_option_names_the_link() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&[
        "network",
        "create",
        "-o",
        "com.docker.network.bridge.name=brtest",
        "nb",
    ]);
    assert!(
        engine.links().contains(&"brtest".to_owned()),
        "{:?}",
        engine.links()
    );
    engine.ok(&["run", "-d", "--name", "box", "--network", "nb", "hello"]);
    // The container's veth is enslaved to brtest.
    let ports = engine.in_namespaces(&["ip", "-o", "link", "show", "master", "brtest"]);
    assert_eq!(
        String::from_utf8_lossy(&ports.stdout).lines().count(),
        1,
        "{}",
        String::from_utf8_lossy(&ports.stdout)
    );
    engine.ok(&["rm", "-f", "box"]);
    engine.ok(&["network", "rm", "nb"]);
    assert!(
        eventually(LONG, || !engine.links().contains(&"brtest".to_owned())),
        "{:?}",
        engine.links()
    );
}

#[test]
fn mtu_option_sets_the_container_mtu() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&[
        "network",
        "create",
        "--opt",
        "com.docker.network.driver.mtu=1400",
        "nm",
    ]);
    let link = engine.ok(&[
        "run",
        "--rm",
        "--network",
        "nm",
        "hello",
        "ip",
        "link",
        "show",
        "eth0",
    ]);
    assert!(link.contains("mtu 1400"), "{link}");
    let default = engine.ok(&["run", "--rm", "hello", "ip", "link", "show", "eth0"]);
    assert!(default.contains("mtu 1500"), "{default}");
}
