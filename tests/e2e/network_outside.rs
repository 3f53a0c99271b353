//! The networking harness itself: the outside namespace reaches the
//! engine's and back, its probes (wget, python3 servers and clients) work,
//! `links` and `nft_ruleset` read the engine's namespace, and
//! `Engine::start_with` keeps its flags across a respawn. These need nothing
//! of the engine's networking.

use std::time::Duration;

use vmctl_tests::outside::{peer_address_server, udp_echo_server, udp_request};
use vmctl_tests::{eventually, require_root, Engine};

const LONG: Duration = Duration::from_secs(30);

#[test]
fn outside_and_engine_namespaces_reach_each_other() {
    require_root!();
    let engine = Engine::start();
    let outside = engine.outside();
    let links = engine.links();
    assert!(
        links.contains(&"ext0".to_owned()) && links.contains(&"lo".to_owned()),
        "{links:?}"
    );
    let routes = engine.in_namespaces(&["ip", "route"]);
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(
        routes.contains("default via 10.99.0.1 dev ext0"),
        "{routes}"
    );

    let ping = outside.run(&["/bin/busybox", "ping", "-c", "1", "-W", "5", "10.99.0.2"]);
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );

    // A busybox httpd in the engine's namespace, fetched from the outside.
    let www = engine.dir.path().join("www");
    std::fs::create_dir_all(&www).expect("www");
    std::fs::write(www.join("index.html"), "from the engine namespace\n").expect("index");
    let www = www.display().to_string();
    let _httpd =
        engine.spawn_in_namespaces(&["/bin/busybox", "httpd", "-f", "-p", "18000", "-h", &www]);
    assert!(eventually(LONG, || outside
        .fetch("http://10.99.0.2:18000/")
        .is_ok_and(|body| body == "from the engine namespace\n")));

    // And the other way: the outside's server sees the engine's address.
    let _server = outside.serve_peer_address(19000);
    assert_eq!(
        engine.fetch("http://10.99.0.1:19000/").as_deref(),
        Ok("peer=10.99.0.2\n")
    );
}

#[test]
fn outside_probes_tell_failures_and_udp_round_trips() {
    require_root!();
    let engine = Engine::start();
    let outside = engine.outside();
    // Nothing listens: the fetch fails rather than hangs.
    let refused = outside.fetch("http://10.99.0.2:18001/");
    assert!(refused.is_err(), "{refused:?}");

    let _echo = engine.spawn_in_namespaces(&udp_echo_server(18002));
    let request = udp_request("10.99.0.2", 18002, "ping");
    let mut answer = String::new();
    assert!(
        eventually(LONG, || {
            let out = outside.run(&request);
            answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            out.status.success()
        }),
        "no UDP answer"
    );
    assert_eq!(answer, "echo:ping");

    // A plain listener in the engine's namespace, seen from its loopback.
    let _listener = engine.spawn_in_namespaces(&peer_address_server(18003));
    assert!(eventually(LONG, || engine
        .fetch("http://127.0.0.1:18003/")
        .is_ok_and(|body| body == "peer=127.0.0.1\n")));
}

#[test]
fn dropping_the_outside_removes_its_link_and_route() {
    require_root!();
    let engine = Engine::start();
    let before = engine.links();
    let outside = engine.outside();
    assert_ne!(engine.links(), before);
    drop(outside);
    assert!(
        eventually(LONG, || engine.links() == before),
        "{:?}",
        engine.links()
    );
    let routes = engine.in_namespaces(&["ip", "route"]);
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(
        !routes.contains("default") && !routes.contains("ext0"),
        "{routes}"
    );
}

#[test]
fn outside_harness_reads_the_engine_nft_ruleset_without_counters() {
    require_root!();
    let engine = Engine::start();
    let before = engine.nft_ruleset();
    let nft = |args: &[&str]| {
        let mut command = vec!["nft"];
        command.extend_from_slice(args);
        let out = engine.in_namespaces(&command);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    nft(&["add", "table", "inet", "probe"]);
    nft(&[
        "add", "chain", "inet", "probe", "input", "{", "type", "filter", "hook", "input",
        "priority", "0", ";", "}",
    ]);
    nft(&["add", "rule", "inet", "probe", "input", "counter"]);
    let ruleset = engine.nft_ruleset();
    assert!(ruleset.contains("table inet probe"), "{ruleset}");
    assert!(
        ruleset.contains("counter") && !ruleset.contains("packets"),
        "{ruleset}"
    );
    // Traffic moves the counter; the normalised text does not move.
    let _ = engine.fetch("http://127.0.0.1:18004/");
    assert_eq!(engine.nft_ruleset(), ruleset);
    nft(&["delete", "table", "inet", "probe"]);
    assert_eq!(engine.nft_ruleset(), before);
}

#[test]
fn outside_harness_start_with_keeps_flags_across_a_respawn() {
    require_root!();
    // --exec-root is a flag the engine has today: a respawn without it would
    // look for the monitor's socket in the wrong place.
    let exec_root = tempfile::Builder::new()
        .prefix("vmctl-e2e-exec")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let exec = exec_root.path().display().to_string();
    let mut engine = Engine::start_with(&["--exec-root", &exec]);
    let id = engine.ok(&["run", "-d", "--name", "box", "hello", "sleep", "1000"]);
    assert!(exec_root.path().join("rt").join(&id).exists());
    engine.kill_engine();
    engine.spawn_engine();
    assert_eq!(engine.ok(&["exec", "box", "echo", "alive"]), "alive");
    engine.ok(&["rm", "-f", "box"]);
    assert!(!exec_root.path().join("rt").join(&id).exists());
}
