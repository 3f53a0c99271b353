//! Validation tests, and tests that apply rulesets for real: each runs on a
//! thread that has unshared a fresh network namespace, so the machine's own
//! ruleset is never touched (checked: it is identical before and during).

use std::future::Future;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;

use super::*;

/// Three networks: `br-a` with icc off and a link, `br-b` internal, `br-c`
/// plain; tcp and udp ports, with and without a host address.
pub(super) fn full_state() -> FirewallState {
    let net = |bridge: &str, subnet: &str, internal, icc| NetworkRules {
        bridge: bridge.into(),
        subnet: subnet.parse().unwrap(),
        internal,
        masquerade: true,
        icc,
    };
    let port = |bridge: &str, protocol, host_ip: Option<&str>, hp, cip: &str, cp| PortRule {
        bridge: bridge.into(),
        protocol,
        host_ip: host_ip.map(|ip| ip.parse().unwrap()),
        host_port: hp,
        container_ip: cip.parse().unwrap(),
        container_port: cp,
    };
    let link = |bridge: &str, from: &str, to: &str| LinkRule {
        bridge: bridge.into(),
        from: from.parse().unwrap(),
        to: to.parse().unwrap(),
        protocol: Protocol::Tcp,
        port: 5432,
    };
    FirewallState {
        networks: vec![
            net("br-c", "172.20.0.0/16", false, true),
            net("br-a", "172.18.0.0/16", false, false),
            net("br-b", "172.19.0.0/16", true, true),
        ],
        ports: vec![
            port("br-c", Protocol::Udp, None, 5353, "172.20.0.2", 53),
            port(
                "br-a",
                Protocol::Tcp,
                Some("10.0.0.5"),
                8443,
                "172.18.0.3",
                443,
            ),
            port("br-a", Protocol::Tcp, None, 8080, "172.18.0.2", 80),
            port("br-b", Protocol::Tcp, None, 9000, "172.19.0.2", 9000),
        ],
        links: vec![
            link("br-a", "172.18.0.2", "172.18.0.3"),
            link("br-c", "172.20.0.2", "172.20.0.3"),
        ],
        ..Default::default()
    }
}

/// What `nft list table ip vmctl_test` prints for [`full_state`], each line
/// trimmed.
const FULL_LISTING: &str = r#"table ip vmctl_test {
chain prerouting {
type nat hook prerouting priority dstnat; policy accept;
fib daddr type local jump ports
}
chain output {
type nat hook output priority -100; policy accept;
fib daddr type local jump ports
}
chain postrouting {
type nat hook postrouting priority srcnat; policy accept;
ip saddr 172.18.0.0/16 oifname != "br-a" masquerade
oifname "br-a" ip saddr 127.0.0.0/8 masquerade
oifname "br-a" ip saddr 172.18.0.0/16 ct status dnat masquerade
oifname "br-b" ip saddr 127.0.0.0/8 masquerade
oifname "br-b" ip saddr 172.19.0.0/16 ct status dnat masquerade
ip saddr 172.20.0.0/16 oifname != "br-c" masquerade
oifname "br-c" ip saddr 127.0.0.0/8 masquerade
oifname "br-c" ip saddr 172.20.0.0/16 ct status dnat masquerade
}
chain forward {
type filter hook forward priority filter; policy accept;
iifname "br-a" oifname { "br-b", "br-c" } drop
iifname "br-a" oifname "br-a" ip saddr 172.18.0.2 ip daddr 172.18.0.3 tcp dport 5432 accept
iifname "br-a" oifname "br-a" ip saddr 172.18.0.3 ip daddr 172.18.0.2 tcp sport 5432 accept
iifname "br-a" oifname "br-a" drop
iifname "br-b" oifname != "br-b" drop
oifname "br-b" iifname != "br-b" drop
iifname "br-c" oifname { "br-a", "br-b" } drop
}
chain ports {
tcp dport 8080 dnat to 172.18.0.2:80
ip daddr 10.0.0.5 tcp dport 8443 dnat to 172.18.0.3:443
udp dport 5353 dnat to 172.20.0.2:53
}
}"#;

fn trimmed(listing: &str) -> String {
    let lines: Vec<&str> = listing
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join("\n")
}

/// Rules in a listing: lines that are not chain headers, hooks or braces.
fn rule_count(listing: &str) -> usize {
    trimmed(listing)
        .lines()
        .filter(|l| !l.ends_with('{') && *l != "}" && !l.starts_with("type "))
        .count()
}

// ---- validation ----------------------------------------------------------

#[test]
fn full_state_is_valid() {
    full_state().validate().unwrap();
}

#[test]
fn validate_rejects_bad_and_duplicate_bridges() {
    for bad in ["", "br*", "@set", "br a", "a-very-long-bridge-name"] {
        let mut state = full_state();
        state.networks[0].bridge = bad.into();
        assert!(
            matches!(state.validate(), Err(NftError::InvalidBridge(b)) if b == bad),
            "{bad:?} accepted"
        );
    }
    let mut state = full_state();
    state.networks[0].bridge = "br-a".into();
    assert!(matches!(state.validate(), Err(NftError::DuplicateBridge(b)) if b == "br-a"));
}

#[test]
fn validate_rejects_ports_and_links_on_unknown_bridges() {
    let mut state = full_state();
    state.ports[0].bridge = "br-x".into();
    assert!(matches!(
        state.validate(),
        Err(NftError::UnknownBridge { what: "published port", bridge }) if bridge == "br-x"
    ));
    let mut state = full_state();
    state.links[0].bridge = "br-y".into();
    assert!(matches!(
        state.validate(),
        Err(NftError::UnknownBridge { what: "link", .. })
    ));
}

#[test]
fn validate_rejects_a_host_port_published_twice() {
    let mut state = full_state();
    let mut clash = state.ports[1].clone(); // tcp 10.0.0.5:8443
    clash.host_ip = None;
    clash.container_ip = "172.18.0.9".parse().unwrap();
    state.ports.push(clash);
    assert!(matches!(
        state.validate(),
        Err(NftError::PortConflict {
            protocol: Protocol::Tcp,
            host_port: 8443
        })
    ));
    // Other address, other protocol, or an exact duplicate: fine.
    let mut state = full_state();
    let mut other = state.ports[1].clone();
    other.host_ip = Some(Ipv4Addr::new(10, 0, 0, 6));
    state.ports.push(other);
    let mut udp = state.ports[1].clone();
    udp.protocol = Protocol::Udp;
    state.ports.push(udp);
    state.ports.push(state.ports[0].clone());
    let mut unspecified = state.ports[0].clone(); // same as None
    unspecified.host_ip = Some(Ipv4Addr::UNSPECIFIED);
    state.ports.push(unspecified);
    state.validate().unwrap();
}

#[tokio::test]
async fn apply_refuses_an_invalid_table_name() {
    let firewall = Firewall::new("bad name").with_nft("/nonexistent/nft");
    let state = FirewallState::default();
    assert!(matches!(
        firewall.apply(&state).await,
        Err(NftError::InvalidTable(_))
    ));
    assert!(matches!(
        firewall.delete().await,
        Err(NftError::InvalidTable(_))
    ));
}

#[tokio::test]
async fn missing_nft_is_an_apply_error() {
    let firewall = Firewall::new("vmctl").with_nft("/nonexistent/nft");
    let err = firewall.apply(&FirewallState::default()).await.unwrap_err();
    assert!(
        matches!(
            &err,
            NftError::Apply {
                source: RunError::Spawn { .. },
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn failing_nft_carries_its_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("nft");
    std::fs::write(
        &fake,
        "#!/bin/sh\ncat >/dev/null\necho 'Error: boom' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let firewall = Firewall::new("vmctl").with_nft(&fake);
    let err = firewall.apply(&full_state()).await.unwrap_err();
    match &err {
        NftError::Apply {
            table,
            source: RunError::Failed { stderr, status, .. },
        } => {
            assert_eq!(table, "vmctl");
            assert_eq!(stderr, "Error: boom");
            assert_eq!(status.code(), Some(1));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(err.to_string(), "cannot apply the ruleset of table vmctl");
}

// ---- in a fresh network namespace ----------------------------------------

/// Runs `body` on a thread of its own in a new network namespace, on a
/// current-thread runtime so every `nft` child is spawned from that thread
/// and inherits the namespace. Skips loudly unless root with `nft`.
fn in_netns<F, Fut>(test: &str, body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED {test}: needs root to create a network namespace");
        return;
    }
    if Command::new(Firewall::new("t").nft)
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED {test}: no nft binary");
        return;
    }
    let thread = std::thread::spawn(move || {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).expect("unshare a network namespace");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(body());
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// The network namespace of the process's main thread, which never unshares:
/// the machine's (or at least the one `cargo test` started in).
fn machine_netns() -> String {
    format!("/proc/{}/ns/net", std::process::id())
}

/// `nft list ruleset` of the machine, read from inside the test namespace.
fn machine_ruleset() -> String {
    let nft = Firewall::new("t").nft;
    let out = Command::new("nsenter")
        .arg(format!("--net={}", machine_netns()))
        .arg(nft)
        .args(["list", "ruleset"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn assert_in_own_netns() {
    let own = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    let machine = std::fs::read_link(machine_netns()).unwrap();
    assert_ne!(own, machine, "test thread is still in the machine's netns");
}

#[test]
fn apply_list_replace_and_delete_in_a_netns() {
    in_netns("apply_list_replace_and_delete_in_a_netns", || async {
        assert_in_own_netns();
        let before = machine_ruleset();
        let firewall = Firewall::new("vmctl_test");
        firewall
            .delete()
            .await
            .expect("deleting a missing table is fine");
        let missing = firewall.list().await.unwrap_err();
        assert!(matches!(
            missing,
            NftError::List {
                source: RunError::Failed { .. },
                ..
            }
        ));

        firewall.apply(&FirewallState::default()).await.unwrap();
        let empty = firewall.list().await.unwrap();
        assert_eq!(rule_count(&empty), 2, "{empty}");
        assert!(empty.contains("chain forward") && empty.contains("chain ports"));

        let started = Instant::now();
        firewall.apply(&full_state()).await.unwrap();
        eprintln!("apply of the full state: {:?}", started.elapsed());
        let full = firewall.list().await.unwrap();
        assert_eq!(trimmed(&full), FULL_LISTING, "\n{full}");

        let during = machine_ruleset();
        assert!(
            !during.contains("vmctl_test"),
            "the table leaked to the machine"
        );
        assert_eq!(before, during, "the machine's ruleset changed");

        firewall.apply(&full_state()).await.unwrap();
        assert_eq!(
            firewall.list().await.unwrap(),
            full,
            "re-apply is not idempotent"
        );

        let mut smaller = full_state();
        smaller.networks.retain(|n| n.bridge == "br-c");
        smaller.ports.retain(|p| p.bridge == "br-c");
        smaller.links.retain(|l| l.bridge == "br-c");
        firewall.apply(&smaller).await.unwrap();
        let small = firewall.list().await.unwrap();
        assert_eq!(rule_count(&small), 6, "{small}");
        assert!(rule_count(&small) < rule_count(&full));
        assert!(
            !small.contains("br-a") && !small.contains("br-b"),
            "{small}"
        );

        // The guard of the VM's own network, as nft reads it back.
        let mut guarded = full_state();
        guarded.guarded = vec!["10.0.2.0/24".parse().unwrap()];
        guarded.resolvers = vec![Ipv4Addr::new(10, 0, 2, 3)];
        firewall.apply(&guarded).await.unwrap();
        let listing = trimmed(&firewall.list().await.unwrap());
        for rule in [
            "iifname { \"br-a\", \"br-c\" } ip daddr 10.0.2.3 udp dport 53 accept",
            "iifname { \"br-a\", \"br-c\" } ip daddr 10.0.2.3 tcp dport 53 accept",
            "iifname { \"br-a\", \"br-b\", \"br-c\" } ip daddr 10.0.2.0/24 drop",
        ] {
            assert!(listing.contains(rule), "{rule} not in\n{listing}");
        }

        firewall.delete().await.unwrap();
        assert!(firewall.list().await.is_err());
        firewall.delete().await.unwrap();
    });
}

#[test]
fn apply_time_is_one_nft_run() {
    in_netns("apply_time_is_one_nft_run", || async {
        let firewall = Firewall::new("vmctl_bench");
        let state = full_state();
        firewall.apply(&state).await.unwrap();
        let mut times: Vec<Duration> = Vec::new();
        for _ in 0..20 {
            let started = Instant::now();
            firewall.apply(&state).await.unwrap();
            times.push(started.elapsed());
        }
        times.sort();
        eprintln!(
            "apply (full state, 20 runs): min {:?} median {:?} max {:?}",
            times[0], times[10], times[19]
        );
        firewall.delete().await.unwrap();
    });
}

/// Runs a command (tests only), failing the test with its stderr.
fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A child process (tests only), killed and reaped on drop.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A "container": a process in a network namespace of its own.
struct Peer(Killed);

impl Peer {
    fn ns(&self) -> String {
        format!("--net=/proc/{}/ns/net", self.0 .0.id())
    }

    /// Serves one TCP connection on port 80 with `reply`.
    fn serve_once(&self, reply: &str) -> Killed {
        let ns = self.ns();
        let args = [
            ns.as_str(),
            "busybox",
            "nc",
            "-l",
            "-p",
            "80",
            "-e",
            "echo",
            reply,
        ];
        Killed(Command::new("nsenter").args(args).spawn().unwrap())
    }

    /// Connects from inside the peer to `host port`; what it answered.
    fn connect(&self, host: &str, port: &str) -> std::io::Result<String> {
        let out = Command::new("nsenter")
            .args([&self.ns(), "busybox", "nc", "-w", "3", host, port])
            .stdin(std::process::Stdio::null())
            .output()?;
        let reply = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if reply.is_empty() {
            return Err(std::io::Error::other("no reply"));
        }
        Ok(reply)
    }
}

/// Retries `attempt` until it answers (the listener may not be up yet).
fn fetch(attempt: impl Fn() -> std::io::Result<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match attempt() {
            Ok(reply) => return reply,
            Err(e) if Instant::now() > deadline => panic!("no answer: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Connects from the test namespace to `addr`; what it answered.
fn connect(addr: &str) -> std::io::Result<String> {
    use std::io::Read;
    let addr = addr.parse().map_err(std::io::Error::other)?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply.trim().to_owned())
}

/// Bridge `br-t` 10.77.0.1/24 with one peer at 10.77.0.2 behind a veth.
fn bridge_with_peer() -> Peer {
    sh(&["ip", "link", "set", "lo", "up"]);
    sh(&["ip", "link", "add", "br-t", "type", "bridge"]);
    sh(&["ip", "addr", "add", "10.77.0.1/24", "dev", "br-t"]);
    sh(&["ip", "link", "set", "br-t", "up"]);
    let sleeper = Command::new("unshare").args(["-n", "sleep", "60"]).spawn();
    let peer = Peer(Killed(sleeper.unwrap()));
    let pid = peer.0 .0.id().to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    // Wait until `unshare` has moved the peer into its own namespace.
    while std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()
        == std::fs::read_link("/proc/thread-self/ns/net").ok()
    {
        assert!(Instant::now() < deadline, "peer never unshared");
        std::thread::sleep(Duration::from_millis(10));
    }
    sh(&[
        "ip", "link", "add", "veth-t", "type", "veth", "peer", "name", "veth-c", "netns", &pid,
    ]);
    sh(&["ip", "link", "set", "veth-t", "master", "br-t", "up"]);
    // Docker sets hairpin mode so a container can reach its own published port.
    sh(&[
        "ip",
        "link",
        "set",
        "veth-t",
        "type",
        "bridge_slave",
        "hairpin",
        "on",
    ]);
    let ns = peer.ns();
    sh(&["nsenter", &ns, "ip", "link", "set", "lo", "up"]);
    sh(&[
        "nsenter",
        &ns,
        "ip",
        "addr",
        "add",
        "10.77.0.2/24",
        "dev",
        "veth-c",
    ]);
    sh(&["nsenter", &ns, "ip", "link", "set", "veth-c", "up"]);
    sh(&[
        "nsenter",
        &ns,
        "ip",
        "route",
        "add",
        "default",
        "via",
        "10.77.0.1",
    ]);
    sh(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    sh(&["sysctl", "-qw", "net.ipv4.conf.br-t.route_localnet=1"]);
    peer
}

#[test]
fn published_port_reaches_the_container_in_a_netns() {
    in_netns(
        "published_port_reaches_the_container_in_a_netns",
        || async {
            assert_in_own_netns();
            let peer = bridge_with_peer();
            let firewall = Firewall::new("vmctl_traffic");
            let state = FirewallState {
                networks: vec![NetworkRules {
                    bridge: "br-t".into(),
                    subnet: "10.77.0.0/24".parse().unwrap(),
                    internal: false,
                    masquerade: true,
                    icc: true,
                }],
                ports: vec![PortRule {
                    bridge: "br-t".into(),
                    protocol: Protocol::Tcp,
                    host_ip: None,
                    host_port: 18080,
                    container_ip: Ipv4Addr::new(10, 77, 0, 2),
                    container_port: 80,
                }],
                links: vec![],
                ..Default::default()
            };
            firewall.apply(&state).await.unwrap();

            // localhost → output DNAT → masquerade onto the bridge.
            let server = peer.serve_once("via-localhost");
            assert_eq!(fetch(|| connect("127.0.0.1:18080")), "via-localhost");
            drop(server);

            // A host address, from the host: output DNAT.
            let server = peer.serve_once("via-bridge-ip");
            assert_eq!(fetch(|| connect("10.77.0.1:18080")), "via-bridge-ip");
            drop(server);

            // Hairpin: the container reaches its own published port through the
            // host address (prerouting DNAT + `ct status dnat` masquerade).
            let server = peer.serve_once("hairpin");
            assert_eq!(fetch(|| peer.connect("10.77.0.1", "18080")), "hairpin");
            drop(server);

            firewall.delete().await.unwrap();
        },
    );
}
