//! macvlan networks: a container with its own MAC on the LAN (the outside
//! network, parent `ext0`), reachable from it directly, reaching it with
//! its own address, and gone without a trace when the network is.

use std::time::Duration;

use vmctl_tests::outside::in_net_namespace;
use vmctl_tests::{eventually, require_root, Engine};

const LONG: Duration = Duration::from_secs(30);
const HELLO: &str = "Hello from vmctl";
/// The outside's peer-address server in this suite.
const PEER_PORT: u16 = 19040;

#[test]
fn macvlan_container_sits_on_the_lan() {
    require_root!();
    let engine = Engine::start();
    let outside = engine.outside();
    let _server = outside.serve_peer_address(PEER_PORT);
    let links = engine.links();
    engine.ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "10.99.0.0/24",
        "--gateway",
        "10.99.0.1",
        "-o",
        "parent=ext0",
        "lan",
    ]);
    assert_eq!(
        engine.ok(&["network", "inspect", "-f", "{{.Driver}}", "lan"]),
        "macvlan"
    );
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "lan",
        "--ip",
        "10.99.0.20",
        "hello",
    ]);
    // eth0 is a macvlan of ext0 (the host's iproute2: busybox has no -d),
    // and no veth was left in the engine's namespace.
    let link = in_net_namespace(
        &engine.container_net_namespace("web"),
        &["ip", "-d", "link", "show", "eth0"],
    )
    .output()
    .expect("ip");
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(link.contains("macvlan"), "{link}");
    assert_eq!(engine.links(), links, "a macvlan container made a link");
    let addr = engine.ok(&["exec", "web", "ip", "-4", "-o", "addr", "show", "eth0"]);
    assert!(addr.contains("inet 10.99.0.20/24"), "{addr}");

    // The LAN reaches it directly, and it reaches the LAN as itself.
    assert!(eventually(LONG, || outside
        .fetch("http://10.99.0.20/")
        .is_ok_and(|b| b.contains(HELLO))));
    assert_eq!(
        engine
            .fetch_from("web", &format!("http://10.99.0.1:{PEER_PORT}/"))
            .as_deref(),
        Ok("peer=10.99.0.20\n")
    );
    // A second container on the same macvlan reaches the first. (A fixed
    // address: IPAM does not know 10.99.0.2 is the engine's, as in Docker.)
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "peer",
        "--network",
        "lan",
        "--ip",
        "10.99.0.21",
        "hello",
        "sleep",
        "1000",
    ]);
    assert!(eventually(LONG, || engine
        .fetch_from("peer", "http://10.99.0.20/")
        .is_ok_and(|b| b.contains(HELLO))));

    engine.ok(&["rm", "-f", "web", "peer"]);
    engine.ok(&["network", "rm", "lan"]);
    assert!(
        eventually(LONG, || engine.links() == links),
        "{:?}",
        engine.links()
    );
    assert!(outside.fetch("http://10.99.0.20/").is_err());
}

#[test]
fn macvlan_needs_an_existing_parent() {
    require_root!();
    let engine = Engine::start();
    let out = engine.docker(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "10.98.0.0/24",
        "-o",
        "parent=nosuchlink",
        "lan",
    ]);
    assert!(!out.status.success(), "macvlan on a missing parent");
    let networks = engine.ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(!networks.lines().any(|n| n == "lan"), "{networks}");
}
