//! Networking leaves nothing behind: after hundreds of published lives, after
//! lives on a user network and the network's removal, and across a SIGKILL
//! of the engine and a restart, the engine's namespace is back to the same
//! links and nftables ruleset, the engine holds no more descriptors, and no
//! record, mount, cgroup or monitor is left.
//!
//! Host ports 18180-18189.

use std::time::Duration;

use vmctl_tests::{eventually, require_root, Engine};

const LONG: Duration = Duration::from_secs(60);
const HELLO: &str = "Hello from vmctl";
/// How many more descriptors than at the start the engine may hold: a few
/// pooled connections and lazily opened sockets, not one per container.
const FD_SLACK: usize = 8;

/// What the engine's namespace looks like with no container.
struct Baseline {
    links: Vec<String>,
    rules: String,
    fds: usize,
}

fn baseline(engine: &Engine) -> Baseline {
    assert_eq!(engine.ok(&["ps", "-aq"]), "", "baseline with containers");
    // The kernel drops a removed container's veth when its namespace goes,
    // which it does on a workqueue after `rm` answers: a baseline taken
    // before that counts a dying veth as part of the machine.
    let settled = eventually(LONG, || {
        !engine.links().iter().any(|l| l.starts_with("veth"))
    });
    assert!(
        settled,
        "veths left with no container: {:?}",
        engine.links()
    );
    Baseline {
        links: engine.links(),
        rules: engine.nft_ruleset(),
        fds: engine.fd_count(),
    }
}

/// Lines of `after` missing from `before` (+) and the other way (-).
fn diff(before: &str, after: &str) -> String {
    let mut text = String::new();
    for line in after.lines().filter(|l| !before.lines().any(|b| b == *l)) {
        text.push_str(&format!("+ {line}\n"));
    }
    for line in before.lines().filter(|l| !after.lines().any(|a| a == *l)) {
        text.push_str(&format!("- {line}\n"));
    }
    text
}

/// Waits until the engine is back to `base` (descriptors only when
/// `check_fds`: a restarted engine is another process); panics with what
/// differs.
fn assert_back_to(engine: &Engine, base: &Baseline, check_fds: bool, after: &str) {
    assert_eq!(
        engine.ok(&["ps", "-aq"]),
        "",
        "containers left after {after}"
    );
    let mut state = String::new();
    let clean = eventually(LONG, || {
        let links = engine.links();
        let rules = engine.nft_ruleset();
        let left = engine.leftovers();
        let fds = engine.fd_count();
        let fds_ok = !check_fds || fds <= base.fds + FD_SLACK;
        state = format!(
            "links {:?} (were {:?})\nrules:\n{}leftovers {left:#?}\nfds {fds} (were {})",
            links,
            base.links,
            diff(&base.rules, &rules),
            base.fds
        );
        links == base.links && rules == base.rules && left.is_empty() && fds_ok
    });
    assert!(clean, "not clean after {after}:\n{state}");
}

/// Waits until `fetch` gives the hello page.
fn serves(what: &str, mut fetch: impl FnMut() -> Result<String, String>) {
    let mut last = Err(String::new());
    assert!(
        eventually(LONG, || {
            last = fetch();
            last.as_ref().is_ok_and(|b| b.contains(HELLO))
        }),
        "{what}: {last:?}"
    );
}

#[test]
fn two_hundred_published_lives_leave_no_link_or_rule() {
    require_root!();
    let engine = Engine::start();
    let outside = engine.outside();
    // Warm up: the engine's own chains and lazily opened sockets are not leaks.
    for _ in 0..3 {
        let id = engine.ok(&["run", "-d", "-p", "18180:80", "hello"]);
        engine.ok(&["rm", "-f", &id]);
    }
    let base = baseline(&engine);
    for n in 0..200 {
        let id = if n % 2 == 0 {
            engine.ok(&["run", "-d", "-p", "18180:80", "hello"])
        } else {
            let id = engine.ok(&["create", "-p", "18180:80", "hello"]);
            engine.ok(&["start", &id]);
            id
        };
        if n % 50 == 0 {
            serves(&format!("life {n}"), || {
                outside.fetch("http://10.99.0.2:18180/")
            });
        }
        engine.ok(&["rm", "-f", &id]);
    }
    assert!(outside.fetch("http://10.99.0.2:18180/").is_err());
    assert_back_to(&engine, &base, true, "200 published lives");
}

#[test]
fn user_network_lives_and_the_network_leave_nothing() {
    require_root!();
    let engine = Engine::start();
    let outside = engine.outside();
    let id = engine.ok(&["run", "-d", "-p", "18181:80", "hello"]);
    engine.ok(&["rm", "-f", &id]);
    let base = baseline(&engine);

    engine.ok(&["network", "create", "n1"]);
    for n in 0..50 {
        let id = engine.ok(&[
            "run",
            "-d",
            "--network",
            "n1",
            "--network-alias",
            "web",
            "-p",
            "18181:80",
            "hello",
        ]);
        if n % 25 == 0 {
            serves(&format!("life {n}"), || {
                outside.fetch("http://10.99.0.2:18181/")
            });
        }
        engine.ok(&["rm", "-f", &id]);
    }
    // Connect and disconnect on a running container, then remove it.
    for _ in 0..10 {
        let id = engine.ok(&["run", "-d", "hello"]);
        engine.ok(&["network", "connect", "n1", &id]);
        engine.ok(&["network", "disconnect", "n1", &id]);
        engine.ok(&["network", "connect", "n1", &id]);
        engine.ok(&["rm", "-f", &id]);
    }
    engine.ok(&["network", "rm", "n1"]);
    assert_back_to(&engine, &base, true, "lives on n1 and its removal");
}

#[test]
fn engine_kill_keeps_published_ports_and_restart_duplicates_nothing() {
    require_root!();
    let mut engine = Engine::start();
    let outside = engine.outside();
    let id = engine.ok(&["run", "-d", "-p", "18182:80", "hello"]);
    engine.ok(&["rm", "-f", &id]);
    let base = baseline(&engine);

    engine.ok(&["network", "create", "n1"]);
    let subnet = engine.ok(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
        "n1",
    ]);
    engine.ok(&["run", "-d", "--name", "web", "-p", "18182:80", "hello"]);
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "app",
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
        "client",
        "--network",
        "n1",
        "hello",
        "sleep",
        "1000",
    ]);
    serves("web before the kill", || {
        outside.fetch("http://10.99.0.2:18182/")
    });
    let links = engine.links();
    let rules = engine.nft_ruleset();

    engine.kill_engine();
    engine.spawn_engine();
    serves("web after the restart", || {
        outside.fetch("http://10.99.0.2:18182/")
    });
    assert_eq!(
        engine.ok(&["port", "web", "80/tcp"]).lines().next(),
        Some("0.0.0.0:18182")
    );
    assert_eq!(engine.links(), links, "the restart changed the links");
    let after = engine.nft_ruleset();
    assert!(
        after == rules,
        "the restart changed the rules:\n{}",
        diff(&rules, &after)
    );
    // The user network, its names and its addresses survive too.
    assert_eq!(
        engine.ok(&[
            "network",
            "inspect",
            "-f",
            "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
            "n1",
        ]),
        subnet
    );
    let app = engine.address_on("app", "n1");
    assert!(eventually(LONG, || {
        let out = engine.docker(&["exec", "client", "timeout", "5", "nslookup", "app"]);
        String::from_utf8_lossy(&out.stdout)
            .split_once("Name:")
            .is_some_and(|(_, answer)| answer.contains(&app))
    }));
    // New containers get fresh addresses and ports after the restart.
    engine.ok(&["run", "-d", "--name", "late", "-p", "18183:80", "hello"]);
    serves("late", || outside.fetch("http://10.99.0.2:18183/"));
    let late = engine.ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "late"]);
    let web = engine.ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "web"]);
    assert_ne!(late, web);

    engine.ok(&["rm", "-f", "web", "app", "client", "late"]);
    engine.ok(&["network", "rm", "n1"]);
    assert_back_to(&engine, &base, false, "a kill, a restart and rm -f");
}

#[test]
fn a_run_that_ends_while_the_engine_is_down_is_reconciled_at_start() {
    require_root!();
    let mut engine = Engine::start();
    let base = baseline(&engine);
    engine.ok(&["run", "-d", "--name", "web", "-p", "18183:80", "hello"]);
    let pid = engine.ok(&["inspect", "-f", "{{.State.Pid}}", "web"]);
    assert!(engine.nft_ruleset().contains("18183"));

    // The container ends while no engine is there to see it: its rule and
    // binding are left behind until the next start reconciles them.
    engine.kill_engine();
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    engine.spawn_engine();
    assert!(
        eventually(LONG, || engine.ok(&[
            "inspect",
            "-f",
            "{{.State.Status}}",
            "web"
        ]) == "exited"),
        "the restarted engine did not see the exit"
    );
    assert!(
        !engine.nft_ruleset().contains("18183"),
        "a stale DNAT rule survived the restart:\n{}",
        engine.nft_ruleset()
    );
    let list = vmctl_tests::http::request(
        &engine.socket,
        "GET",
        "/vmctl/port-bindings",
        "application/json",
        b"",
    )
    .expect("list")
    .json();
    assert_eq!(list["bindings"], serde_json::json!([]), "{list}");
    engine.ok(&["rm", "web"]);
    assert_back_to(
        &engine,
        &base,
        false,
        "a run that ended while the engine was down",
    );
}
