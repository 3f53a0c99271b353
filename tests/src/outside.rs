//! The "outside" of an engine for the networking suites: a network namespace
//! standing in for the LAN and the internet, wired to the engine's namespace
//! by a veth pair, plus the probes the suites run from any namespace (a
//! busybox `wget`, small python3 servers and clients).
//!
//! ```text
//!   engine netns                        outside netns
//!   ext0 10.99.0.2/24  <-- veth -->     eth0 10.99.0.1/24
//!   default via 10.99.0.1
//! ```
//!
//! Traffic only ever goes to namespaces a test created: the machine's own
//! network is never touched. The `ip` commands run here, in the harness;
//! the engine itself must not shell out.
//!
//! Not here: the engine's own view (links, nftables): see
//! [`Engine::links`](crate::Engine::links) and
//! [`Engine::nft_ruleset`](crate::Engine::nft_ruleset).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::{eventually, wait_for_first_child, Engine, BUSYBOX};

/// The outside's address (`eth0` in the outside namespace): the engine's
/// default gateway.
pub const OUTSIDE_ADDRESS: &str = "10.99.0.1";
/// The engine's address on the outside network (`ext0`): what the LAN
/// connects to for published ports, and what masqueraded traffic comes from.
pub const ENGINE_ADDRESS: &str = "10.99.0.2";
/// The outside network.
pub const OUTSIDE_SUBNET: &str = "10.99.0.0/24";
/// The engine's side of the veth pair.
pub const ENGINE_LINK: &str = "ext0";

/// How long a server started here may take to answer.
const READY: Duration = Duration::from_secs(30);

/// A network namespace wired to an engine's: see the module doc. Dropping
/// it ends the namespace, which removes both ends of the veth pair.
pub struct Outside {
    holder: Child,
    pid: u32,
}

impl Engine {
    /// Attaches an [`Outside`] network to this engine.
    pub fn outside(&self) -> Outside {
        Outside::attach(self)
    }

    /// Fetches `url` from inside a running container (its busybox `wget`
    /// through `docker exec`, giving up after 5 s): the body, or why not.
    pub fn fetch_from(&self, container: &str, url: &str) -> Result<String, String> {
        fetched(&self.docker(&["exec", container, "timeout", "5", "wget", "-q", "-O-", url]))
    }

    /// A container's address on `network` (empty when it has none).
    pub fn address_on(&self, container: &str, network: &str) -> String {
        let template = format!(
            "{{{{with index .NetworkSettings.Networks {network:?}}}}}{{{{.IPAddress}}}}{{{{end}}}}"
        );
        self.ok(&["inspect", "-f", &template, container])
    }
}

impl Outside {
    /// Creates the outside namespace and the veth pair, and routes the
    /// engine's namespace through it.
    pub fn attach(engine: &Engine) -> Outside {
        let holder = Command::new("unshare")
            .args(["-n", "--fork", "--kill-child", "sleep", "infinity"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        let pid = wait_for_first_child(&holder);
        let outside = Outside { holder, pid };
        let engine_ns = engine.net_namespace();
        let pid = pid.to_string();
        let prefix = "/24";
        let engine_cidr = format!("{ENGINE_ADDRESS}{prefix}");
        let outside_cidr = format!("{OUTSIDE_ADDRESS}{prefix}");
        must(&mut in_net_namespace(
            &engine_ns,
            &[
                "ip",
                "link",
                "add",
                ENGINE_LINK,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &pid,
            ],
        ));
        for args in [
            &["ip", "addr", "add", &engine_cidr, "dev", ENGINE_LINK][..],
            &["ip", "link", "set", ENGINE_LINK, "up"],
            &["ip", "route", "add", "default", "via", OUTSIDE_ADDRESS],
        ] {
            must(&mut in_net_namespace(&engine_ns, args));
        }
        for args in [
            &["ip", "link", "set", "lo", "up"][..],
            &["ip", "addr", "add", &outside_cidr, "dev", "eth0"],
            &["ip", "link", "set", "eth0", "up"],
        ] {
            must(&mut in_net_namespace(&outside.net_namespace(), args));
        }
        outside
    }

    /// The outside's own address, [`OUTSIDE_ADDRESS`].
    pub fn address(&self) -> &'static str {
        OUTSIDE_ADDRESS
    }

    /// The engine's address as the outside sees it, [`ENGINE_ADDRESS`].
    pub fn engine_address(&self) -> &'static str {
        ENGINE_ADDRESS
    }

    /// The outside's network namespace, for `nsenter --net=`.
    pub fn net_namespace(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.pid))
    }

    /// Runs a command in the outside namespace (the machine's mounts).
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        in_net_namespace(&self.net_namespace(), args)
            .output()
            .expect("nsenter")
    }

    /// Starts a server in the outside namespace; killed when dropped.
    pub fn spawn<S: AsRef<OsStr>>(&self, args: &[S]) -> Background {
        Background::spawn(&mut in_net_namespace(&self.net_namespace(), args))
    }

    /// Fetches `url` from the outside: the body, or why not.
    pub fn fetch(&self, url: &str) -> Result<String, String> {
        fetched(&self.run(&wget(url)))
    }

    /// Starts a [`peer_address_server`] on `port` of the outside and waits
    /// until it answers.
    pub fn serve_peer_address(&self, port: u16) -> Background {
        let server = self.spawn(&peer_address_server(port));
        let url = format!("http://127.0.0.1:{port}/");
        assert!(
            eventually(READY, || self.fetch(&url).is_ok()),
            "the peer-address server on the outside's port {port} did not come up"
        );
        server
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        // --kill-child: the namespace's sleep dies with the holder.
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// A background process (a server, a listener), killed when dropped.
pub struct Background(Child);

impl Background {
    /// Starts `command` with null stdio.
    pub fn spawn(command: &mut Command) -> Background {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn a background process");
        Background(child)
    }

    /// The process's pid.
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A command running `args` in the network namespace `ns` (nsenter execs
/// it: the child is the command itself).
pub fn in_net_namespace<S: AsRef<OsStr>>(ns: &Path, args: &[S]) -> Command {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net={}", ns.display()))
        .arg("--")
        .args(args)
        .stdin(Stdio::null());
    command
}

/// Runs `command`, panics with its stderr if it fails.
fn must(command: &mut Command) {
    let out = command.output().expect("run");
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The arguments fetching `url` with busybox `wget` (the body on stdout),
/// giving up after 5 s (this busybox's wget has no `-T`).
pub fn wget(url: &str) -> Vec<String> {
    [BUSYBOX, "timeout", "5", BUSYBOX, "wget", "-q", "-O-", url]
        .map(str::to_owned)
        .to_vec()
}

/// What a fetch gave: stdout when the command succeeded, else its status
/// and stderr.
pub fn fetched(out: &Output) -> Result<String, String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The machine's python3 interpreter (resolved once, past any shim).
pub fn python3() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 is needed by the networking suites");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    })
}

const PEER_ADDRESS_SERVER: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(64)
while True:
    c, peer = s.accept()
    c.settimeout(5)
    try:
        c.recv(4096)
        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\npeer=" + peer[0].encode() + b"\n")
    except OSError:
        pass
    c.close()
"#;

const UDP_ECHO_SERVER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
while True:
    data, peer = s.recvfrom(65535)
    s.sendto(b"echo:" + data, peer)
"#;

const UDP_REQUEST: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))
print(s.recvfrom(65535)[0].decode())
"#;

const TCP_LISTENER: &str = r#"
import socket, sys, time
s = socket.socket()
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(64)
while True:
    time.sleep(3600)
"#;

const TCP_CONNECT: &str = r#"
import socket, sys
socket.create_connection((sys.argv[1], int(sys.argv[2])), 2).close()
"#;

fn python(script: &str, args: &[&str]) -> Vec<String> {
    let mut command = vec![python3().to_owned(), "-c".into(), script.to_owned()];
    command.extend(args.iter().map(|a| a.to_string()));
    command
}

/// A python3 HTTP server on `port` (all addresses) answering every request
/// with `peer=ADDRESS`: the client's address as the server sees it.
pub fn peer_address_server(port: u16) -> Vec<String> {
    python(PEER_ADDRESS_SERVER, &[&port.to_string()])
}

/// A python3 UDP server on `port` answering each datagram with `echo:`
/// and the datagram.
pub fn udp_echo_server(port: u16) -> Vec<String> {
    python(UDP_ECHO_SERVER, &[&port.to_string()])
}

/// A python3 client sending `text` to UDP `address:port` and printing the
/// answer; fails when none comes within 2 s.
pub fn udp_request(address: &str, port: u16, text: &str) -> Vec<String> {
    python(UDP_REQUEST, &[address, &port.to_string(), text])
}

/// A python3 plain TCP listener on `port` (all addresses) that never
/// accepts: it only holds the port.
pub fn tcp_listener(port: u16) -> Vec<String> {
    python(TCP_LISTENER, &[&port.to_string()])
}

/// A python3 client that connects to TCP `address:port` and closes at
/// once (so the server side keeps no TIME_WAIT); fails within 2 s when
/// nothing listens.
pub fn tcp_connect(address: &str, port: u16) -> Vec<String> {
    python(TCP_CONNECT, &[address, &port.to_string()])
}
