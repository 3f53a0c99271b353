//! The VM's vsock services answer only the host, end to end in one real VM
//! (hybrid vsock, TCG): every stream must prove the per-boot secret the
//! daemon hands the guest through QEMU's fw_cfg.
//!
//! - From the desktop, the hybrid vsock socket (`CONNECT 2375` / 1025 /
//!   1026) without the secret gets the guest's hello and a closed stream —
//!   no `/_ping` answer, no health, no forward — while the engine keeps
//!   answering through the daemon.
//! - From inside the VM, a container with `AF_VSOCK` (seccomp unconfined,
//!   so only the secret stands in the way) sends the host's port service
//!   (host vsock 1027) a forged reservation of `0.0.0.0:18998`: refused, and
//!   nothing listens on the desktop; its connections to the guest's own
//!   services get nothing either.
//! - The secret is nowhere a container looks: not in `/proc/cmdline`, and
//!   `/sys/firmware` is masked (and `qemu_fw_cfg` unloaded, so even
//!   `systempaths=unconfined` finds nothing).
//! - The secret and the vsock sockets on the desktop are 0600.
//! - Under the VM's default seccomp profile no container opens `AF_VSOCK`
//!   by any route (`probe vsock`: run, run `--cap-add ALL`, exec), on the
//!   VM's own kernel and architecture (`tests/arm64` runs this on arm64).
//!
//! Polls only; one boot.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use vmctl_tests::vm::{mode, text, VmHome};
use vmctl_tests::{eventually, require_vm};

/// How long anything may take under TCG on a loaded CI host (also the read
/// limit on a refused stream, which the guest closes after its 10 s
/// handshake limit at most).
const LONG: Duration = Duration::from_secs(60);

/// The desktop port the forged reservation asks for.
const FORGED_PORT: u16 = 18998;

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// What a desktop process without the secret gets from guest `port`:
/// `CONNECT`, `OK`, then `request` (framed, as the daemon would send it);
/// answers the bytes the guest sent after `OK` until it closed.
fn without_secret(socket: &Path, port: u32, request: &[u8]) -> Vec<u8> {
    let mut stream =
        UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    stream.set_read_timeout(Some(LONG)).unwrap();
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut ok = String::new();
    reader.read_line(&mut ok).unwrap();
    assert!(ok.starts_with("OK "), "CONNECT {port}: {ok:?}");
    reader.get_mut().write_all(&frame(request)).unwrap();
    let mut got = Vec::new();
    reader
        .read_to_end(&mut got)
        .unwrap_or_else(|e| panic!("port {port}: the guest neither answered nor closed: {e}"));
    got
}

/// The guest's hello: one frame of `vma1` and a 32-byte nonce, nothing else.
fn assert_only_hello(port: u32, got: &[u8]) {
    assert_eq!(
        got.len(),
        4 + 36,
        "port {port}: the guest sent more than its hello: {:?}",
        String::from_utf8_lossy(got)
    );
    assert_eq!(
        &got[..8],
        &[0, 0, 0, 36, b'v', b'm', b'a', b'1'],
        "port {port}"
    );
}

/// Whether anything listens on TCP `port` of the desktop (any address), by
/// the kernel's tables.
fn desktop_listens(port: u16) -> bool {
    let needle = format!(":{port:04X} ");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                // local_address is field 1, st 0A is LISTEN.
                fields.len() > 3
                    && format!("{} ", fields[1]).ends_with(&needle)
                    && fields[3] == "0A"
            })
    })
}

/// `netpeer vsock-forge CID PORT MESSAGE` in a container that may open
/// AF_VSOCK; its report.
fn forge_from_container(home: &VmHome, host: &str, cid: u32, port: u32, message: &str) -> String {
    home.docker_ok(
        host,
        &[
            "run",
            "--rm",
            "--security-opt",
            "seccomp=unconfined",
            "--entrypoint",
            "/netpeer",
            "netpeer:latest",
            "vsock-forge",
            &cid.to_string(),
            &port.to_string(),
            message,
        ],
    )
}

#[test]
fn vsock_services_answer_only_the_host() {
    require_vm!();
    let home = VmHome::new();
    home.ok(&[
        "machine", "init", "--cpus", "2", "--memory", "1024", "--disk", "2",
    ]);
    home.ok(&["machine", "start"]);
    let host = home.docker_host();
    let run = home.machine_run("default");

    // The secret and the sockets that reach the guest are the user's alone.
    let vsock = run.join("vm.vsock");
    for file in [
        vsock.clone(),
        run.join("vm.vsock_1027"),
        run.join("vm.secret"),
    ] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    let secret = std::fs::read(run.join("vm.secret")).expect("the boot's secret");
    assert_eq!(secret.len(), 32);
    let secret_hex = hex::encode(&secret);

    // (a) The desktop side without the secret: hello, then closed.
    let ping =
        b"GET /_ping HTTP/1.1\r\nHost: docker\r\nUser-Agent: vm-hostile/1.0\r\nAccept: */*\r\n\r\n";
    let got = without_secret(&vsock, 2375, ping);
    assert_only_hello(2375, &got);
    // Shorter than a proof: the guest waits out its limit, then closes.
    let got = without_secret(&vsock, 1025, b"{\"op\":\"health\"}\n");
    assert_only_hello(1025, &got);
    // A forward header (version 1, TCP, IPv4 10.0.2.2, port 22).
    let header = [1, 0, 4, 10, 0, 2, 2, 0, 22];
    let got = without_secret(&vsock, 1026, &header);
    assert_only_hello(1026, &got);
    // The daemon, which holds the secret, still gets through.
    assert_eq!(
        home.docker_ok(&host, &["version", "--format", "{{.Server.Os}}"]),
        "linux"
    );

    // (b) A container with AF_VSOCK forges a reservation on the host.
    let netpeer = vmctl_tests::netpeer::image_tar().display().to_string();
    home.docker_ok(&host, &["load", "-q", "-i", &netpeer]);
    let forged = format!(
        "{{\"op\":\"reserve\",\"binding\":{{\"protocol\":\"tcp\",\"host_ip\":\"0.0.0.0\",\"host_port\":{FORGED_PORT},\"container_ip\":\"10.0.2.2\",\"container_port\":18999,\"container_id\":\"forged\",\"container_name\":\"forged\"}}}}\n"
    );
    let report = forge_from_container(&home, &host, 2, vmctl_proto::VSOCK_PORT_HOST_PORTS, &forged);
    eprintln!("forged reservation, host vsock 1027:\n{report}");
    assert!(
        report.contains("connected") && report.contains("first-frame 36 766d6131"),
        "the container should reach the host's port service (only the secret in the way):\n{report}"
    );
    assert!(report.contains("answer-bytes 0"), "{report}");
    assert!(!report.contains("\"ok\""), "{report}");
    assert!(
        eventually(LONG, || home.daemon_log("default").contains(
            "closed a guest connection that did not prove the VM's secret"
        )),
        "the daemon should say it refused the forger:\n{}",
        vmctl_tests::tail(&home.daemon_log("default"), 20)
    );
    assert!(
        !desktop_listens(FORGED_PORT),
        "the forged reservation bound {FORGED_PORT}"
    );
    assert!(TcpStream::connect(("127.0.0.1", FORGED_PORT)).is_err());
    let ports = home.ok(&["port", "ls", "--json"]);
    assert!(!ports.contains(&FORGED_PORT.to_string()), "{ports}");

    // The same container against the guest's own API, by the VM's CID (3 on
    // vhost-device-vsock) and the local CID: nothing served either way.
    for cid in [3, 1] {
        let out = home.docker(
            &host,
            &[
                "run",
                "--rm",
                "--security-opt",
                "seccomp=unconfined",
                "--entrypoint",
                "/netpeer",
                "netpeer:latest",
                "vsock-forge",
                &cid.to_string(),
                "2375",
                "GET /_ping HTTP/1.1\r\nHost: docker\r\nUser-Agent: vm-hostile/1.0\r\n\r\n",
            ],
        );
        let report = format!("{}\n{}", text(&out.stdout), text(&out.stderr));
        eprintln!("the guest's own API by CID {cid}:\n{report}");
        assert!(!report.contains("HTTP/1.1"), "CID {cid}: {report}");
        if report.contains("connected") {
            assert!(report.contains("answer-bytes 0"), "CID {cid}: {report}");
        }
    }

    // (c) Nothing a container can read holds the secret.
    let cmdline = home.docker_ok(&host, &["run", "--rm", "hello", "cat", "/proc/cmdline"]);
    assert!(cmdline.contains("console="), "{cmdline}");
    assert!(
        !cmdline.contains(&secret_hex) && !cmdline.contains("secret"),
        "{cmdline}"
    );
    let firmware = home.docker_ok(
        &host,
        &["run", "--rm", "hello", "ls", "-A", "/sys/firmware"],
    );
    assert_eq!(firmware, "", "/sys/firmware is masked in containers");
    let unmasked = home.docker(
        &host,
        &[
            "run",
            "--rm",
            "--security-opt",
            "systempaths=unconfined",
            "hello",
            "ls",
            "/sys/firmware/qemu_fw_cfg",
        ],
    );
    assert!(
        !unmasked.status.success(),
        "qemu_fw_cfg should be unloaded once PID 1 read the secret: {}",
        text(&unmasked.stdout)
    );
    let console = home.console_log("default");
    assert!(!console.contains(&secret_hex));
    assert!(!console.contains("refusing to serve"), "{console}");

    // (d) Without `seccomp=unconfined`, no container opens AF_VSOCK at all,
    // by any route the probe knows, on the VM's own kernel and architecture
    // (`tests/arm64` runs this on the arm64 guest).
    let probe = vmctl_tests::probe::image_tar().display().to_string();
    home.docker_ok(&host, &["load", "-q", "-i", &probe]);
    for flags in [&[][..], &["--cap-add", "ALL"][..]] {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[vmctl_tests::probe::IMAGE, "vsock"]);
        let out = home.docker_ok(&host, &args);
        crate::hostile_syscalls::assert_vsock_refused(&out, &format!("in the VM: docker {args:?}"));
    }
    home.docker_ok(
        &host,
        &["run", "-d", "--name", "probe", vmctl_tests::probe::IMAGE],
    );
    let out = home.docker_ok(&host, &["exec", "probe", "/probe", "vsock"]);
    crate::hostile_syscalls::assert_vsock_refused(&out, "in the VM: docker exec");
    home.docker_ok(&host, &["rm", "-f", "probe"]);

    // (e) The engine is unchanged and answers.
    assert_eq!(
        home.docker_ok(&host, &["run", "--rm", "hello", "echo", "still here"]),
        "still here"
    );
    home.ok(&["machine", "stop"]);
    assert!(
        !run.join("vm.secret").exists(),
        "a stopped machine keeps no secret"
    );
}
