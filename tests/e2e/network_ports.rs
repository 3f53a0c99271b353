//! Published ports: `-p HOST:CONTAINER` answers on the engine's LAN address
//! and on its loopback, `docker port` tells the bindings, `127.0.0.1::80`
//! takes a random port the LAN cannot reach, `-P` maps every exposed port,
//! ranges map one to one, UDP round trips, a container reaches a published
//! port of another (hairpin), and a port already taken (by a container or a
//! plain listener) refuses the start and leaves no link or rule behind.
//!
//! Host ports 18080-18099 and 15353.

use std::time::Duration;

use vmctl_tests::outside::{in_net_namespace, tcp_connect, tcp_listener, udp_echo_server};
use vmctl_tests::outside::{udp_request, Background};
use vmctl_tests::{eventually, require_root, Engine};

const LONG: Duration = Duration::from_secs(30);
const HELLO: &str = "Hello from vmctl";

/// Waits until `fetch` gives the hello page; panics with the last answer.
fn serves_hello(what: &str, mut fetch: impl FnMut() -> Result<String, String>) {
    let mut last = Err(String::new());
    assert!(
        eventually(LONG, || {
            last = fetch();
            last.as_ref().is_ok_and(|body| body.contains(HELLO))
        }),
        "{what} did not serve the page: {last:?}"
    );
}

/// The host port `docker port CONTAINER PORT` shows bound on `address`.
fn host_port(engine: &Engine, container: &str, port: &str, address: &str) -> u16 {
    let shown = engine.ok(&["port", container, port]);
    let prefix = format!("{address}:");
    shown
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no {address} binding for {container} {port}: {shown:?}"))
}

/// Asserts `docker ARGS` fails with "port is already allocated".
fn already_allocated(engine: &Engine, args: &[&str]) {
    let out = engine.docker(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "docker {args:?} succeeded");
    assert!(
        stderr.contains("port is already allocated"),
        "docker {args:?}: {stderr}"
    );
}

#[test]
fn published_port_serves_the_lan_and_the_engine_loopback() {
    require_root!();
    let engine = Engine::start();
    let outside = engine.outside();
    engine.ok(&["run", "-d", "--name", "web", "-p", "18080:80", "hello"]);
    serves_hello("10.99.0.2:18080 from the LAN", || {
        outside.fetch("http://10.99.0.2:18080/")
    });
    serves_hello("127.0.0.1:18080 from the engine", || {
        engine.fetch("http://127.0.0.1:18080/")
    });
    let ports = engine.ok(&["port", "web"]);
    assert!(
        ports.lines().any(|l| l == "80/tcp -> 0.0.0.0:18080"),
        "{ports}"
    );
    assert_eq!(host_port(&engine, "web", "80/tcp", "0.0.0.0"), 18080);
    let bindings = engine.ok(&["inspect", "-f", "{{json .NetworkSettings.Ports}}", "web"]);
    assert!(bindings.contains(r#""HostPort":"18080""#), "{bindings}");
    // Only what is published: another port of the engine stays closed.
    assert!(outside.fetch("http://10.99.0.2:18081/").is_err());
}

#[test]
fn loopback_binding_takes_a_random_port_hidden_from_the_lan() {
    require_root!();
    let engine = Engine::start();
    let outside = engine.outside();
    engine.ok(&["run", "-d", "--name", "web", "-p", "127.0.0.1::80", "hello"]);
    let port = host_port(&engine, "web", "80", "127.0.0.1");
    assert_ne!(port, 0);
    serves_hello("the random loopback port", || {
        engine.fetch(&format!("http://127.0.0.1:{port}/"))
    });
    let lan = outside.fetch(&format!("http://10.99.0.2:{port}/"));
    assert!(lan.is_err(), "the LAN reached a 127.0.0.1 binding: {lan:?}");
}

#[test]
fn publish_all_maps_every_exposed_port() {
    require_root!();
    let engine = Engine::start();
    let outside = engine.outside();
    engine.ok(&[
        "run", "-d", "--name", "web", "-P", "--expose", "80", "--expose", "81", "hello",
    ]);
    let http = host_port(&engine, "web", "80/tcp", "0.0.0.0");
    let other = host_port(&engine, "web", "81/tcp", "0.0.0.0");
    assert!(http != 0 && other != 0 && http != other, "{http} {other}");
    serves_hello("the -P port", || {
        outside.fetch(&format!("http://10.99.0.2:{http}/"))
    });
}

#[test]
fn port_range_maps_one_to_one() {
    require_root!();
    let engine = Engine::start();
    let outside = engine.outside();
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "18090-18091:80-81",
        "hello",
        "sh",
        "-c",
        "mkdir -p /www81 && echo port81 > /www81/index.html && \
         httpd -p 81 -h /www81 && exec httpd -f -p 80 -h /www",
    ]);
    let ports = engine.ok(&["port", "web"]);
    for line in ["80/tcp -> 0.0.0.0:18090", "81/tcp -> 0.0.0.0:18091"] {
        assert!(ports.lines().any(|l| l == line), "{line} not in {ports}");
    }
    serves_hello("18090", || outside.fetch("http://10.99.0.2:18090/"));
    assert!(eventually(LONG, || outside
        .fetch("http://10.99.0.2:18091/")
        .is_ok_and(|body| body == "port81\n")));
}

#[test]
fn udp_published_port_round_trips() {
    require_root!();
    let engine = Engine::start();
    let outside = engine.outside();
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "dns",
        "-p",
        "15353:5353/udp",
        "hello",
    ]);
    let ports = engine.ok(&["port", "dns"]);
    assert!(
        ports.lines().any(|l| l == "5353/udp -> 0.0.0.0:15353"),
        "{ports}"
    );
    // The image has no UDP server: python3 in the container's netns is one.
    let _echo = Background::spawn(&mut in_net_namespace(
        &engine.container_net_namespace("dns"),
        &udp_echo_server(5353),
    ));
    let request = udp_request("10.99.0.2", 15353, "ping");
    let mut answer = String::new();
    assert!(
        eventually(LONG, || {
            let out = outside.run(&request);
            answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            out.status.success()
        }),
        "no UDP answer through 10.99.0.2:15353"
    );
    assert_eq!(answer, "echo:ping");
    // TCP on the same number is not published.
    assert!(outside.fetch("http://10.99.0.2:15353/").is_err());
}

#[test]
fn hairpin_reaches_a_published_port_from_another_container() {
    require_root!();
    let engine = Engine::start();
    let _outside = engine.outside();
    engine.ok(&["run", "-d", "--name", "web", "-p", "18082:80", "hello"]);
    serves_hello("127.0.0.1:18082", || {
        engine.fetch("http://127.0.0.1:18082/")
    });
    engine.ok(&["run", "-d", "--name", "client", "hello", "sleep", "1000"]);
    for url in ["http://10.99.0.2:18082/", "http://172.17.0.1:18082/"] {
        serves_hello(url, || engine.fetch_from("client", url));
    }
    // Hairpin back into the same container, too.
    serves_hello("web to itself", || {
        engine.fetch_from("web", "http://10.99.0.2:18082/")
    });
}

#[test]
fn port_conflict_fails_the_start_and_leaves_no_link_or_rule() {
    require_root!();
    let engine = Engine::start();
    let outside = engine.outside();
    engine.ok(&["run", "-d", "--name", "web1", "-p", "18083:80", "hello"]);
    serves_hello("web1", || outside.fetch("http://10.99.0.2:18083/"));
    let links = engine.links();
    let rules = engine.nft_ruleset();

    already_allocated(
        &engine,
        &["run", "-d", "--name", "web2", "-p", "18083:80", "hello"],
    );
    assert_eq!(engine.links(), links, "the failed start left a link");
    assert_eq!(engine.nft_ruleset(), rules, "the failed start left rules");
    // Docker keeps the container it created; only its start failed.
    assert_eq!(
        engine.ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.Running}}",
            "web2"
        ]),
        "created false"
    );
    assert_eq!(
        engine.ok(&[
            "ps",
            "-a",
            "--filter",
            "name=web2",
            "--format",
            "{{.Status}}"
        ]),
        "Created"
    );
    let running = engine.ok(&["ps", "--format", "{{.Names}}"]);
    assert_eq!(running, "web1");
    serves_hello("web1 after the conflict", || {
        outside.fetch("http://10.99.0.2:18083/")
    });

    // Once web1 is gone the port is free: for web2, then for a new one.
    engine.ok(&["rm", "-f", "web1"]);
    engine.ok(&["start", "web2"]);
    serves_hello("web2", || outside.fetch("http://10.99.0.2:18083/"));
    engine.ok(&["rm", "-f", "web2"]);
    engine.ok(&["run", "-d", "--name", "web3", "-p", "18083:80", "hello"]);
    serves_hello("web3", || outside.fetch("http://10.99.0.2:18083/"));
}

#[test]
fn port_held_by_a_plain_listener_is_already_allocated() {
    require_root!();
    let engine = Engine::start();
    let outside = engine.outside();
    let listener = engine.spawn_in_namespaces(&tcp_listener(18085));
    assert!(eventually(LONG, || engine
        .in_namespaces(&tcp_connect("127.0.0.1", 18085))
        .status
        .success()));
    let links = engine.links();
    let rules = engine.nft_ruleset();
    // Docker says "port is already allocated" for its own ports and "address
    // already in use" when the bind itself fails: either names the cause.
    let args = ["run", "-d", "--name", "web", "-p", "18085:80", "hello"];
    let out = engine.docker(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "docker {args:?} succeeded");
    assert!(
        stderr.contains("port is already allocated") || stderr.contains("address already in use"),
        "docker {args:?}: {stderr}"
    );
    assert_eq!(engine.links(), links);
    assert_eq!(engine.nft_ruleset(), rules);
    drop(listener);
    engine.ok(&["start", "web"]);
    serves_hello("web once the listener is gone", || {
        outside.fetch("http://10.99.0.2:18085/")
    });
}

#[test]
fn stopped_container_releases_its_port() {
    require_root!();
    let engine = Engine::start();
    let outside = engine.outside();
    engine.ok(&["run", "-d", "--name", "first", "-p", "18086:80", "hello"]);
    serves_hello("first", || outside.fetch("http://10.99.0.2:18086/"));
    engine.ok(&["stop", "-t", "0", "first"]);
    assert!(outside.fetch("http://10.99.0.2:18086/").is_err());
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "second",
        "-p",
        "18086:80",
        "hello",
        "sh",
        "-c",
        "mkdir /w && echo second > /w/index.html && exec httpd -f -p 80 -h /w",
    ]);
    assert!(eventually(LONG, || outside
        .fetch("http://10.99.0.2:18086/")
        .is_ok_and(|body| body == "second\n")));
    // Now the first cannot have it back.
    already_allocated(&engine, &["start", "first"]);
}

#[test]
fn a_restarted_container_serves_its_published_port_again() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--restart",
        "always",
        "-p",
        "18098:80",
        "hello",
    ]);
    serves_hello("before the restart", || {
        engine.fetch("http://127.0.0.1:18098/")
    });
    let pid = engine.ok(&["inspect", "-f", "{{.State.Pid}}", "web"]);
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    assert!(
        eventually(LONG, || {
            let now = engine.ok(&["inspect", "-f", "{{.State.Pid}} {{.RestartCount}}", "web"]);
            now.split_whitespace().next() != Some(pid.as_str()) && now.ends_with(" 1")
        }),
        "the restart policy did not bring the container back"
    );
    serves_hello("after the restart", || {
        engine.fetch("http://127.0.0.1:18098/")
    });
    assert_eq!(
        engine.ok(&["port", "web", "80/tcp"]).lines().next(),
        Some("0.0.0.0:18098")
    );
    engine.ok(&["rm", "-f", "web"]);
}
