//! localhost on `::1` too, in a real VM: a port published without an
//! address (`-p PORT:80`) answers on the desktop's `127.0.0.1` and `[::1]`
//! (Node ≥ 18, Java and others try `::1` first for `localhost`), as `curl`
//! shows; an explicit `-p 127.0.0.1:PORT:80` is IPv4 only; a `[::1]` some
//! desktop program holds leaves the IPv4 listener serving alone; `vmctl port
//! ls` names every address that listens, or why `::1` does not. Polls
//! everywhere; no fixed sleeps.

use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use vmctl_tests::vm::{text, VmHome};
use vmctl_tests::{eventually, require_vm};

/// How long anything may take to converge under TCG on a loaded CI host.
const LONG: Duration = Duration::from_secs(60);

/// `curl -g URL`: the page, when it answered.
fn curl(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sS", "-g", "--max-time", "10", url])
        .output()
        .expect("run curl");
    out.status.success().then(|| text(&out.stdout))
}

fn serves_hello(url: &str) -> bool {
    curl(url).is_some_and(|page| page.contains("Hello from vmctl"))
}

/// A TCP port free on both loopbacks now.
fn free_on_both() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        if TcpListener::bind(("::1", port)).is_ok() {
            return port;
        }
    }
}

fn accepts(address: &str) -> bool {
    TcpStream::connect(address).is_ok()
}

/// The HOST cell of `vmctl port ls` for `port`'s row.
fn host_cell(home: &VmHome, port: u16) -> String {
    let table = home.ok(&["port", "ls"]);
    let needle = format!("127.0.0.1:{port}");
    table
        .lines()
        .find(|line| {
            line.split_whitespace()
                .any(|w| w.trim_end_matches(',') == needle)
        })
        .unwrap_or_else(|| panic!("no row for {needle} in:\n{table}"))
        .to_owned()
}

#[test]
fn published_ports_answer_on_ipv6_loopback_unless_an_address_was_given() {
    require_vm!();
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("SKIPPED: this desktop has no IPv6 loopback");
        return;
    }
    let home = VmHome::new();
    home.ok(&[
        "machine", "init", "--cpus", "2", "--memory", "1024", "--disk", "2",
    ]);
    home.ok(&["machine", "start"]);
    let host = home.docker_host();

    // -p PORT:80: both loopbacks reach the container.
    let both = free_on_both();
    home.docker_ok(
        &host,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "-p",
            &format!("{both}:80"),
            "hello",
        ],
    );
    let v4 = format!("http://127.0.0.1:{both}/");
    let v6 = format!("http://[::1]:{both}/");
    assert!(
        eventually(LONG, || serves_hello(&v4)),
        "{v4}: {:?}\n{}",
        curl(&v4),
        vmctl_tests::tail(&home.daemon_log("default"), 20)
    );
    assert!(
        eventually(LONG, || serves_hello(&v6)),
        "{v6}: {:?}\n{}",
        curl(&v6),
        vmctl_tests::tail(&home.daemon_log("default"), 20)
    );
    let row = host_cell(&home, both);
    assert!(
        row.contains(&format!("127.0.0.1:{both}, [::1]:{both}")),
        "port ls names both addresses: {row}"
    );

    // -p 127.0.0.1:PORT:80 is used exactly: nothing on ::1.
    let exact = free_on_both();
    home.docker_ok(
        &host,
        &[
            "run",
            "-d",
            "--name",
            "exact",
            "-p",
            &format!("127.0.0.1:{exact}:80"),
            "hello",
        ],
    );
    assert!(eventually(LONG, || serves_hello(&format!(
        "http://127.0.0.1:{exact}/"
    ))));
    assert!(
        !accepts(&format!("[::1]:{exact}")),
        "an explicit 127.0.0.1 does not listen on ::1"
    );
    assert!(
        TcpListener::bind(("::1", exact)).is_ok(),
        "[::1]:{exact} is free"
    );
    let row = host_cell(&home, exact);
    assert!(!row.contains("[::1]"), "port ls shows IPv4 only: {row}");

    // ::1 held by a desktop program: IPv4 serves alone, and port ls says why.
    let taken = free_on_both();
    let holder = TcpListener::bind(("::1", taken)).expect("hold [::1]");
    home.docker_ok(
        &host,
        &[
            "run",
            "-d",
            "--name",
            "alone",
            "-p",
            &format!("{taken}:80"),
            "hello",
        ],
    );
    assert!(eventually(LONG, || serves_hello(&format!(
        "http://127.0.0.1:{taken}/"
    ))));
    let row = host_cell(&home, taken);
    assert!(
        row.contains(&format!(
            "127.0.0.1:{taken} (::1 unavailable: address in use)"
        )),
        "{row}"
    );
    // Once the program lets go, the daemon takes [::1] after all.
    drop(holder);
    assert!(
        eventually(LONG, || serves_hello(&format!("http://[::1]:{taken}/"))),
        "[::1]:{taken} never listened after the holder left"
    );

    // Removing the container closes both listeners.
    home.docker_ok(&host, &["rm", "-f", "web"]);
    assert!(
        eventually(LONG, || !accepts(&format!("127.0.0.1:{both}"))
            && !accepts(&format!("[::1]:{both}"))),
        "a listener of {both} outlived its container"
    );
    let json: Vec<serde_json::Value> =
        serde_json::from_str(&home.ok(&["port", "ls", "--json"])).expect("port ls --json");
    assert!(json.iter().all(|f| f["host_port"] != both), "{json:?}");
}
