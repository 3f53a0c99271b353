//! Per-container network options (`--dns*`, `--add-host`, `-h`,
//! `--mac-address`, `--link`) and the engine's bridge flags (`--icc=false`,
//! `--bip`, `--fixed-cidr`, `--default-gateway`, `--mtu`, `--ip-masq=false`,
//! `--bridge none`).

use std::time::Duration;

use vmctl_tests::{eventually, require_root, Engine};

const LONG: Duration = Duration::from_secs(30);
const HELLO: &str = "Hello from vmctl";
/// The outside's peer-address server in this suite.
const PEER_PORT: u16 = 19030;

/// Whether `hosts` (an /etc/hosts) maps `name` to `address`.
fn maps(hosts: &str, address: &str, name: &str) -> bool {
    hosts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        fields.next() == Some(address) && fields.any(|f| f == name)
    })
}

#[test]
fn dns_flags_write_resolv_conf() {
    require_root!();
    let engine = Engine::start();
    let resolv = engine.ok(&[
        "run",
        "--rm",
        "--dns",
        "10.99.0.1",
        "--dns-search",
        "example.com",
        "--dns-option",
        "ndots:2",
        "hello",
        "cat",
        "/etc/resolv.conf",
    ]);
    let lines: Vec<&str> = resolv.lines().map(str::trim).collect();
    for wanted in [
        "nameserver 10.99.0.1",
        "search example.com",
        "options ndots:2",
    ] {
        assert!(lines.contains(&wanted), "{wanted:?} not in {resolv}");
    }
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("nameserver")).count(),
        1,
        "{resolv}"
    );
}

#[test]
fn add_host_writes_etc_hosts_and_host_gateway_is_the_bridge_gateway() {
    require_root!();
    let engine = Engine::start();
    let hosts = engine.ok(&[
        "run",
        "--rm",
        "--add-host",
        "db:10.1.2.3",
        "--add-host",
        "gw:host-gateway",
        "hello",
        "cat",
        "/etc/hosts",
    ]);
    assert!(maps(&hosts, "10.1.2.3", "db"), "{hosts}");
    assert!(maps(&hosts, "172.17.0.1", "gw"), "{hosts}");
    assert!(maps(&hosts, "127.0.0.1", "localhost"), "{hosts}");
}

#[test]
fn hostname_flag_names_the_container_and_its_address() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&["run", "-d", "--name", "box", "-h", "myhost", "hello"]);
    assert_eq!(engine.ok(&["exec", "box", "hostname"]), "myhost");
    assert_eq!(
        engine.ok(&["exec", "box", "cat", "/etc/hostname"]),
        "myhost"
    );
    let ip = engine.ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "box"]);
    let hosts = engine.ok(&["exec", "box", "cat", "/etc/hosts"]);
    assert!(maps(&hosts, &ip, "myhost"), "{hosts}");
    // Without -h: the short id, mapped the same way.
    let id = engine.ok(&["run", "-d", "hello"]);
    let short = &id[..12];
    assert_eq!(engine.ok(&["exec", short, "hostname"]), short);
    let ip = engine.ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", short]);
    let hosts = engine.ok(&["exec", short, "cat", "/etc/hosts"]);
    assert!(maps(&hosts, &ip, short), "{hosts}");
}

#[test]
fn mac_address_flag_sets_the_eth0_mac() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "box",
        "--mac-address",
        "02:42:ac:11:00:99",
        "hello",
    ]);
    assert_eq!(
        engine.ok(&["exec", "box", "cat", "/sys/class/net/eth0/address"]),
        "02:42:ac:11:00:99"
    );
    assert_eq!(
        engine.ok(&["inspect", "-f", "{{.NetworkSettings.MacAddress}}", "box"]),
        "02:42:ac:11:00:99"
    );
    // Reachable with it.
    let ip = engine.ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "box"]);
    assert!(eventually(LONG, || engine
        .fetch(&format!("http://{ip}/"))
        .is_ok_and(|b| b.contains(HELLO))));
}

#[test]
fn icc_false_isolates_containers_but_links_open_exposed_ports() {
    require_root!();
    let engine = Engine::start_with(&["--icc=false"]);
    // web serves the page on 80 (exposed) and on 81 (not exposed).
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--expose",
        "80",
        "hello",
        "sh",
        "-c",
        "httpd -p 81 -h /www && exec httpd -f -p 80 -h /www",
    ]);
    let web = engine.ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "web"]);
    // The engine (the host) still reaches it, on both ports.
    for port in [80, 81] {
        let url = format!("http://{web}:{port}/");
        assert!(
            eventually(LONG, || engine.fetch(&url).is_ok_and(|b| b.contains(HELLO))),
            "{url} from the engine"
        );
    }
    engine.ok(&["run", "-d", "--name", "other", "hello", "sleep", "1000"]);
    let blocked = engine.fetch_from("other", &format!("http://{web}/"));
    assert!(
        blocked.is_err(),
        "icc=false let a container through: {blocked:?}"
    );

    engine.ok(&[
        "run", "-d", "--name", "client", "--link", "web:db", "hello", "sleep", "1000",
    ]);
    let hosts = engine.ok(&["exec", "client", "cat", "/etc/hosts"]);
    assert!(maps(&hosts, &web, "db"), "{hosts}");
    assert!(eventually(LONG, || engine
        .fetch_from("client", "http://db/")
        .is_ok_and(|b| b.contains(HELLO))));
    let unexposed = engine.fetch_from("client", "http://db:81/");
    assert!(
        unexposed.is_err(),
        "a link opened a port not exposed: {unexposed:?}"
    );
    // The link is one way, and only for client.
    let still = engine.fetch_from("other", &format!("http://{web}/"));
    assert!(still.is_err(), "{still:?}");
}

#[test]
fn links_resolve_on_the_default_bridge() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&["run", "-d", "--name", "web", "hello"]);
    let web = engine.ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "web"]);
    engine.ok(&[
        "run", "-d", "--name", "client", "--link", "web:db", "hello", "sleep", "1000",
    ]);
    let hosts = engine.ok(&["exec", "client", "cat", "/etc/hosts"]);
    assert!(
        maps(&hosts, &web, "db") && maps(&hosts, &web, "web"),
        "{hosts}"
    );
    let env = engine.ok(&["exec", "client", "env"]);
    assert!(
        env.lines()
            .any(|l| l == format!("DB_PORT_80_TCP_ADDR={web}")),
        "{env}"
    );
    assert!(eventually(LONG, || engine
        .fetch_from("client", "http://db/")
        .is_ok_and(|b| b.contains(HELLO))));
}

#[test]
fn bip_sets_the_default_bridge_subnet() {
    require_root!();
    let engine = Engine::start_with(&["--bip", "10.55.0.1/24"]);
    let addr = engine.ok(&[
        "run", "--rm", "hello", "ip", "-4", "-o", "addr", "show", "eth0",
    ]);
    assert!(
        addr.contains("inet 10.55.0.") && addr.contains("/24"),
        "{addr}"
    );
    let routes = engine.ok(&["run", "--rm", "hello", "ip", "route"]);
    assert!(routes.contains("default via 10.55.0.1"), "{routes}");
    assert_eq!(
        engine.ok(&[
            "network",
            "inspect",
            "-f",
            "{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}}",
            "bridge",
        ]),
        "10.55.0.0/24 10.55.0.1"
    );
    let bridge = engine.in_namespaces(&["ip", "-4", "-o", "addr", "show", "dev", "vmctl0"]);
    let bridge = String::from_utf8_lossy(&bridge.stdout);
    assert!(bridge.contains("inet 10.55.0.1/24"), "{bridge}");
}

#[test]
fn fixed_cidr_and_default_gateway_shape_container_addresses() {
    require_root!();
    let engine = Engine::start_with(&[
        "--bip",
        "10.55.0.1/24",
        "--fixed-cidr",
        "10.55.0.128/25",
        "--default-gateway",
        "10.55.0.254",
    ]);
    engine.ok(&["run", "-d", "--name", "box", "hello", "sleep", "1000"]);
    let ip = engine.ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "box"]);
    let last: u8 = ip
        .strip_prefix("10.55.0.")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{ip} not in 10.55.0.0/24"));
    assert!(last >= 128, "{ip} is outside --fixed-cidr");
    // The whole bridge subnet is on the link; only allocation is narrowed.
    let addr = engine.ok(&["exec", "box", "ip", "-4", "-o", "addr", "show", "eth0"]);
    assert!(addr.contains(&format!("inet {ip}/24")), "{addr}");
    let routes = engine.ok(&["exec", "box", "ip", "route"]);
    assert!(routes.contains("default via 10.55.0.254"), "{routes}");
}

#[test]
fn mtu_flag_sets_the_default_bridge_mtu() {
    require_root!();
    let engine = Engine::start_with(&["--mtu", "1400"]);
    let link = engine.ok(&["run", "--rm", "hello", "ip", "link", "show", "eth0"]);
    assert!(link.contains("mtu 1400"), "{link}");
}

#[test]
fn ip_masq_false_keeps_container_source_addresses() {
    require_root!();
    let engine = Engine::start_with(&["--ip-masq=false"]);
    let outside = engine.outside();
    // Without NAT the LAN needs a route back to the containers.
    let route = outside.run(&["ip", "route", "add", "172.17.0.0/16", "via", "10.99.0.2"]);
    assert!(route.status.success());
    let _server = outside.serve_peer_address(PEER_PORT);
    engine.ok(&["run", "-d", "--name", "box", "hello", "sleep", "1000"]);
    let ip = engine.ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "box"]);
    let seen = engine.fetch_from("box", &format!("http://10.99.0.1:{PEER_PORT}/"));
    assert_eq!(seen, Ok(format!("peer={ip}\n")));
}

#[test]
fn bridge_none_makes_no_default_bridge() {
    require_root!();
    let engine = Engine::start_with(&["--bridge", "none"]);
    assert!(
        !engine.links().contains(&"vmctl0".to_owned()),
        "{:?}",
        engine.links()
    );
    let networks = engine.ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(!networks.lines().any(|n| n == "bridge"), "{networks}");
    // A plain run gets a namespace with only its loopback.
    let links = engine.ok(&["run", "--rm", "hello", "ip", "-o", "link"]);
    assert_eq!(links.lines().count(), 1, "{links}");
    // User networks still work.
    engine.ok(&["network", "create", "n1"]);
    let addr = engine.ok(&[
        "run",
        "--rm",
        "--network",
        "n1",
        "hello",
        "ip",
        "-4",
        "-o",
        "addr",
        "show",
        "eth0",
    ]);
    assert!(addr.contains("inet "), "{addr}");
}
