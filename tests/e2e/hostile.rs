//! Hostile containers against the standalone engine: files a container
//! puts where the engine looks (a FIFO `/etc/group`, `/dev/zero` as
//! `/etc/passwd`, symlinks out of the root), commits of links, a data disk
//! that fills up, bridge names that are not ours, prune racing create, and
//! an attached client that stops reading. Each try must fail or be
//! harmless, with the engine still answering and nothing else changed.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, PruneImagesOptions,
    PruneVolumesOptions, RemoveContainerOptionsBuilder, RemoveVolumeOptions,
};
use bollard::Docker;
use vmctl_tests::{eventually, require_root, Engine};

const LONG: Duration = Duration::from_secs(60);

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The engine answers `docker ps` and `docker version`.
fn assert_answers(engine: &Engine) {
    engine.ok(&["ps", "-a", "-q"]);
    engine.ok(&["version", "--format", "{{.Server.Version}}"]);
}

/// What a docker command said, on stdout and stderr (an exec that could
/// not start says why on its stream, as in Docker).
fn said(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_fifo_group_file_hangs_neither_exec_nor_rm_nor_the_api() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&["run", "-d", "--name", "fifo", "hello", "sleep", "100000"]);
    engine.ok(&[
        "exec",
        "fifo",
        "sh",
        "-c",
        "rm -f /etc/group && mkfifo /etc/group",
    ]);
    // Nobody ever writes the FIFO: reading it would block forever.
    let out = engine.docker(&["exec", "-u", "nobody", "fifo", "id"]);
    assert_eq!(out.status.code(), Some(126), "exec -u: {}", said(&out));
    let err = said(&out);
    assert!(err.contains("not a regular file"), "{err}");
    // A numeric user needs no name lookup, but the group file is still read
    // for memberships: the same clear refusal, never a hang.
    let out = engine.docker(&["exec", "-u", "0", "fifo", "true"]);
    assert!(
        out.status.success() || said(&out).contains("not a regular file"),
        "{}",
        said(&out)
    );
    // While one exec is refused, another container's exec and the API work.
    engine.ok(&["run", "-d", "--name", "honest", "hello", "sleep", "100000"]);
    assert_eq!(engine.ok(&["exec", "honest", "echo", "fine"]), "fine");
    assert_answers(&engine);
    engine.ok(&["rm", "-f", "fifo"]);
    assert_eq!(engine.ok(&["ps", "--format", "{{.Names}}"]), "honest");
    engine.ok(&["rm", "-f", "honest"]);
    assert_answers(&engine);
}

#[test]
fn dev_zero_as_passwd_with_a_restart_policy_leaves_the_engine_alive() {
    require_root!();
    let engine = Engine::start();
    let before = rss_kib(engine.pid());
    assert!(before > 0, "no VmRSS for the engine");
    // First run: replace /etc/passwd with /dev/zero's node, then exit so
    // the restart policy starts it again, reading that passwd.
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "zero",
        "--restart",
        "always",
        "hello",
        "sh",
        "-c",
        "rm -f /etc/passwd && mknod /etc/passwd c 1 5 && exit 3",
    ]);
    let stopped = eventually(LONG, || {
        engine
            .ok(&[
                "inspect",
                "-f",
                "{{.State.Status}} {{.State.Error}}",
                "zero",
            ])
            .starts_with("exited")
            && engine
                .ok(&["inspect", "-f", "{{.State.Error}}", "zero"])
                .contains("not a regular file")
    });
    assert!(
        stopped,
        "the restart did not fail cleanly: {}\n{}",
        engine.ok(&["inspect", "-f", "{{json .State}}", "zero"]),
        vmctl_tests::tail(&engine.log(), 20)
    );
    let after = rss_kib(engine.pid());
    assert!(
        after < before + 64 * 1024,
        "engine RSS grew from {before} to {after} KiB"
    );
    assert_answers(&engine);
    // A start by hand fails the same way, and the container can go.
    let out = engine.docker(&["start", "zero"]);
    assert!(!out.status.success());
    assert!(said(&out).contains("not a regular file"), "{}", said(&out));
    engine.ok(&["rm", "-f", "zero"]);
    assert_answers(&engine);
}

#[test]
fn passwd_symlinks_resolve_inside_the_container_only() {
    require_root!();
    let engine = Engine::start();
    // A passwd file on the engine's side that a link climbing out of the
    // container's root would reach.
    let outside = tempfile::Builder::new()
        .prefix("hostile-passwd")
        .tempdir_in("/tmp")
        .expect("tempdir");
    std::fs::write(
        outside.path().join("passwd"),
        "escaper:x:4242:4242::/:/bin/sh\n",
    )
    .expect("write");
    let relative = outside.path().strip_prefix("/").expect("absolute");
    let climb = format!(
        "../../../../../../../../../../{}/passwd",
        relative.display()
    );
    engine.ok(&["run", "-d", "--name", "links", "hello", "sleep", "100000"]);
    // Inside the container the same path holds another user.
    let inside = format!("/{}", relative.display());
    engine.ok(&[
        "exec",
        "links",
        "sh",
        "-c",
        &format!(
            "mkdir -p {inside} && echo 'inner:x:777:777::/:/bin/sh' > {inside}/passwd \
             && ln -sf '{climb}' /etc/passwd"
        ),
    ]);
    assert_eq!(
        engine.ok(&["exec", "-u", "inner", "links", "id", "-u"]),
        "777"
    );
    let out = engine.docker(&["exec", "-u", "escaper", "links", "id", "-u"]);
    assert!(!out.status.success(), "the link reached the engine's file");
    assert!(
        said(&out).contains("unable to find user escaper"),
        "{}",
        said(&out)
    );

    // A link to /proc/1/environ names the container's own (unmounted in
    // the engine's view) proc, never the engine's environment.
    engine.ok(&[
        "exec",
        "links",
        "ln",
        "-sf",
        "/proc/1/environ",
        "/etc/passwd",
    ]);
    let out = engine.docker(&["exec", "-u", "root", "links", "true"]);
    assert!(!out.status.success());
    let err = said(&out);
    assert!(err.contains("unable to find user root"), "{err}");
    assert!(
        !err.contains("PATH="),
        "the engine's environment leaked: {err}"
    );
    engine.ok(&["rm", "-f", "links"]);
    assert_answers(&engine);
}

#[test]
fn commit_stores_symlinks_and_fifos_as_themselves() {
    require_root!();
    let engine = Engine::start();
    // A file on the engine's side that a followed link would copy in.
    let outside = tempfile::Builder::new()
        .prefix("hostile-secret")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let secret = format!("engine-secret-{}", std::process::id());
    std::fs::write(outside.path().join("secret"), &secret).expect("write");
    let script = format!(
        "ln -s /proc/1/environ /a && ln -s ../../../../etc/shadow /b && mkfifo /f \
         && ln -s {}/secret /c",
        outside.path().display()
    );
    engine.ok(&["run", "--name", "maker", "hello", "sh", "-c", &script]);
    engine.ok(&["commit", "maker", "linked"]);
    let seen = engine.ok(&[
        "run",
        "--rm",
        "linked",
        "sh",
        "-c",
        "readlink /a; readlink /b; [ -p /f ] && echo fifo; [ -L /a ] && [ -L /c ] && echo links",
    ]);
    assert_eq!(
        seen, "/proc/1/environ\n../../../../etc/shadow\nfifo\nlinks",
        "the commit did not keep the links"
    );
    // The stored layer holds the links, and nowhere in the store is the
    // engine-side file's content.
    let root = engine.root().display().to_string();
    let found = engine.in_namespaces(&["find", &root, "-path", "*/layers/*", "-name", "c"]);
    let links: Vec<String> = String::from_utf8_lossy(&found.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(!links.is_empty(), "no layer has /c");
    for link in &links {
        let meta = std::fs::symlink_metadata(link).expect("stat the layer's /c");
        assert!(meta.file_type().is_symlink(), "{link} is not a link");
    }
    let grep = engine.in_namespaces(&["grep", "-r", "-D", "skip", "-l", &secret, &root]);
    assert_eq!(
        String::from_utf8_lossy(&grep.stdout),
        "",
        "the engine-side file was copied into the store"
    );
    engine.ok(&["rm", "maker"]);
    assert_answers(&engine);
}

/// Every path under the engine's root, seen from its mount namespace.
fn store_paths(engine: &Engine) -> Vec<String> {
    let root = engine.root().display().to_string();
    let out = engine.in_namespaces(&[
        "find",
        &root,
        "-path",
        &format!("{root}/containers"),
        "-prune",
        "-o",
        "-print",
    ]);
    let mut paths: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.ends_with(".log"))
        .map(str::to_owned)
        .collect();
    paths.sort();
    paths
}

#[test]
fn a_full_data_disk_fails_commit_and_load_cleanly() {
    require_root!();
    let mut engine = Engine::start();
    // An image whose layer alone is bigger than what will be free.
    engine.ok(&[
        "run",
        "--name",
        "big",
        "hello",
        "sh",
        "-c",
        "dd if=/dev/urandom of=/big bs=1048576 count=48 2>/dev/null",
    ]);
    engine.ok(&["commit", "big", "bigimage"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("big.tar");
    engine.ok(&["save", "-o", &archive.display().to_string(), "bigimage"]);

    // The same engine again, its root now a 64 MiB tmpfs.
    engine.kill_engine();
    let root = engine.root().display().to_string();
    let mounted = engine.in_namespaces(&["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", &root]);
    assert!(mounted.status.success(), "{}", said(&mounted));
    engine.spawn_engine();
    assert_answers(&engine);

    let images = engine.ok(&["images", "-q", "--no-trunc"]);
    let before = store_paths(&engine);
    let out = engine.docker(&["load", "-i", &archive.display().to_string()]);
    assert!(
        !out.status.success(),
        "a 48 MiB layer loaded into what is left of 64 MiB"
    );
    assert!(
        said(&out).contains("No space left on device"),
        "{}",
        said(&out)
    );
    assert_eq!(store_paths(&engine), before, "load left something behind");
    assert_eq!(engine.ok(&["images", "-q", "--no-trunc"]), images);
    assert_answers(&engine);

    // A container writes 24 MiB that does not compress; its commit needs
    // the blob and the unpacked layer besides: more than is left.
    engine.ok(&[
        "run",
        "--name",
        "filler",
        "hello",
        "sh",
        "-c",
        "dd if=/dev/urandom of=/filler bs=1048576 count=24 2>/dev/null",
    ]);
    let before = store_paths(&engine);
    let out = engine.docker(&["commit", "filler", "toobig"]);
    assert!(
        !out.status.success(),
        "a commit bigger than the disk worked"
    );
    assert!(
        said(&out).contains("No space left on device"),
        "{}",
        said(&out)
    );
    assert_eq!(store_paths(&engine), before, "commit left something behind");
    assert_eq!(engine.ok(&["images", "-q", "--no-trunc"]), images);
    assert_answers(&engine);
    // With the space back, the engine works as before.
    engine.ok(&["rm", "filler"]);
    assert_eq!(engine.ok(&["run", "--rm", "hello", "echo", "ok"]), "ok");
}

#[test]
fn bridge_names_that_are_not_ours_are_refused_and_nothing_is_deleted() {
    require_root!();
    let engine = Engine::start();
    // Stand-ins for the VM's eth0 (a veth: this kernel may lack dummy)
    // and some other pair of interfaces.
    for args in [
        vec![
            "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "vmnic",
        ],
        vec![
            "ip",
            "link",
            "add",
            "vethmine0",
            "type",
            "veth",
            "peer",
            "name",
            "vethmine1",
        ],
    ] {
        let out = engine.in_namespaces(&args);
        assert!(out.status.success(), "{args:?}: {}", said(&out));
    }
    engine.ok(&[
        "network",
        "create",
        "-o",
        "com.docker.network.bridge.name=brtheirs",
        "theirs",
    ]);
    engine.ok(&["run", "-d", "--name", "peer", "hello", "sleep", "100000"]);
    let links = engine.links();
    let container_veth = links
        .iter()
        .find(|l| l.starts_with("veth") && !l.starts_with("vethmine"))
        .cloned()
        .expect("the container's veth");
    let networks = engine.ok(&["network", "ls", "-q"]);
    for name in ["eth0", "lo", "brtheirs", &container_veth, "vethmine0"] {
        let out = engine.docker(&[
            "network",
            "create",
            "-o",
            &format!("com.docker.network.bridge.name={name}"),
            "hijack",
        ]);
        assert!(!out.status.success(), "bridge name {name} was accepted");
        let err = said(&out);
        assert!(err.contains(name), "{name}: {err}");
        assert_eq!(engine.links(), links, "{name}: an interface changed");
        assert_eq!(engine.ok(&["network", "ls", "-q"]), networks);
    }
    // The container still runs, its veth untouched (the links above).
    assert_eq!(
        engine.ok(&["inspect", "-f", "{{.State.Running}}", "peer"]),
        "true"
    );
    engine.ok(&["rm", "-f", "peer"]);
    engine.ok(&["network", "rm", "theirs"]);
    assert_answers(&engine);
}

fn client(engine: &Engine) -> Docker {
    Docker::connect_with_unix(
        &engine.socket.display().to_string(),
        120,
        bollard::API_DEFAULT_VERSION,
    )
    .expect("bollard client")
}

fn filters(key: &str, value: &str) -> Option<HashMap<String, Vec<String>>> {
    Some(HashMap::from([(key.to_owned(), vec![value.to_owned()])]))
}

#[test]
fn prune_and_volume_rm_cannot_race_a_create() {
    require_root!();
    let engine = Engine::start();
    // Keeps hello (the base of every round's image) in use.
    engine.ok(&["create", "--name", "base", "hello", "true"]);
    let docker = client(&engine);
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    let mut created = 0;
    for round in 0..50 {
        let image = format!("race:{round}");
        let volume = format!("racevol{round}");
        engine.ok(&["commit", "base", &image]);
        engine.ok(&["volume", "create", &volume]);
        let name = format!("racer{round}");
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            cmd: Some(vec!["true".into()]),
            host_config: Some(HostConfig {
                binds: Some(vec![format!("{volume}:/data")]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (create, images, volumes, removed) = runtime.block_on(async {
            let options = CreateContainerOptionsBuilder::default().name(&name).build();
            tokio::join!(
                docker.create_container(Some(options), body),
                docker.prune_images(Some(PruneImagesOptions {
                    filters: filters("dangling", "false"),
                })),
                docker.prune_volumes(Some(PruneVolumesOptions {
                    filters: filters("all", "true"),
                })),
                docker.remove_volume(&volume, None::<RemoveVolumeOptions>),
            )
        });
        images.expect("image prune");
        volumes.expect("volume prune");
        // The volume may be removed, refused as in use, or already pruned.
        if let Err(e) = removed {
            let text = e.to_string();
            assert!(
                text.contains("in use") || text.contains("no such volume"),
                "volume rm: {text}"
            );
        }
        match create {
            Ok(_) => {
                created += 1;
                let inspect = runtime
                    .block_on(docker.inspect_container(&name, None::<InspectContainerOptions>))
                    .expect("inspect the new container");
                let image_id = inspect.image.expect("image id");
                runtime
                    .block_on(docker.inspect_image(&image_id))
                    .unwrap_or_else(|e| panic!("round {round}: {name} lost its image: {e}"));
                runtime
                    .block_on(docker.inspect_volume(&volume))
                    .unwrap_or_else(|e| panic!("round {round}: {name} lost its volume: {e}"));
                // And it runs.
                engine.ok(&["start", "-a", &name]);
                let options = RemoveContainerOptionsBuilder::default().v(true).build();
                runtime
                    .block_on(docker.remove_container(&name, Some(options)))
                    .expect("remove");
            }
            Err(e) => {
                // The prune won: a clean "no such image", nothing recorded.
                let text = e.to_string();
                assert!(text.contains("No such image"), "round {round}: {text}");
                let out = engine.docker(&["inspect", &name]);
                assert!(!out.status.success(), "a failed create left {name}");
            }
        }
        let _ = engine.docker(&["volume", "rm", &volume]);
    }
    eprintln!("{created} of 50 creates won their race");
    assert_eq!(engine.ok(&["ps", "-a", "--format", "{{.Names}}"]), "base");
    assert_answers(&engine);
}

/// Opens a raw attach stream to `container` and reads only the HTTP
/// answer's head: the stream is then left unread.
fn stalled_attach(socket: &Path, container: &str) -> UnixStream {
    hijacked(
        socket,
        &format!("/containers/{container}/attach?stream=1&stdout=1&stderr=1"),
        "",
    )
}

/// `POST path` with `body` (JSON) upgraded to a raw stream, returned unread
/// once the engine answered 101.
fn hijacked(socket: &Path, path: &str, body: &str) -> UnixStream {
    let mut stream = UnixStream::connect(socket).expect("connect");
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: engine\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("answer head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream
}

#[test]
fn an_attached_client_that_stops_reading_costs_bounded_memory() {
    require_root!();
    let engine = Engine::start();
    // 128 MiB of output without a newline (16 KiB and more per log entry).
    engine.ok(&[
        "create",
        "--name",
        "loud",
        "hello",
        "sh",
        "-c",
        "head -c 134217728 /dev/zero | tr '\\0' a; sleep 100000",
    ]);
    let _stalled = stalled_attach(&engine.socket, "loud");
    engine.ok(&["start", "loud"]);
    // All of the output reaches the log although the client reads nothing.
    let log_path = engine.ok(&["inspect", "-f", "{{.LogPath}}", "loud"]);
    let logged = || std::fs::metadata(&log_path).map_or(0, |m| m.len());
    let finished = eventually(Duration::from_secs(600), || logged() > 128 << 20);
    assert!(
        finished,
        "the output was held up by the stalled client: {} bytes logged",
        logged()
    );
    let monitors = engine.monitors();
    assert_eq!(monitors.len(), 1, "{monitors:?}");
    let monitor_rss = rss_kib(monitors[0]);
    assert!(
        monitor_rss < 64 * 1024,
        "the monitor holds {monitor_rss} KiB for a stalled client"
    );
    let engine_rss = rss_kib(engine.pid());
    assert!(
        engine_rss < 128 * 1024,
        "the engine holds {engine_rss} KiB for a stalled client"
    );
    eprintln!("stalled client: monitor {monitor_rss} KiB, engine {engine_rss} KiB");
    // The monitor let the client go rather than queue for it.
    let id = engine.ok(&["inspect", "-f", "{{.Id}}", "loud"]);
    let monitor_log = engine
        .root()
        .join("containers")
        .join(&id)
        .join("monitor.log");
    let monitor_log = std::fs::read_to_string(&monitor_log).unwrap_or_default();
    assert!(
        monitor_log.contains("stopped reading"),
        "the stalled client was never dropped:\n{monitor_log}"
    );
    // The API answers, the log's end included.
    let last = engine.ok(&["logs", "--tail", "1", "loud"]);
    assert!(
        !last.is_empty() && last.bytes().all(|b| b == b'a'),
        "the last log line: {} bytes",
        last.len()
    );
    assert_answers(&engine);
    engine.ok(&["rm", "-f", "loud"]);
    assert_answers(&engine);
}

/// Starts exec `id` on a raw hijacked stream and returns it unread.
fn stalled_exec(socket: &Path, id: &str) -> UnixStream {
    hijacked(
        socket,
        &format!("/exec/{id}/start"),
        r#"{"Detach":false,"Tty":false}"#,
    )
}

/// An exec whose client stops reading is held, as under Docker (its process
/// waits in `write` on a full pipe): the monitor queues a bounded amount for
/// it, nothing is dropped, and the rest of the API answers meanwhile.
#[test]
fn an_exec_client_that_stops_reading_holds_the_exec_not_memory() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&["run", "-d", "--name", "quiet", "hello", "sleep", "100000"]);
    const TOTAL: usize = 128 << 20;
    let created = vmctl_tests::http::json(
        &engine.socket,
        "POST",
        "/containers/quiet/exec",
        &serde_json::json!({
            "AttachStdout": true,
            "AttachStderr": true,
            "Cmd": ["head", "-c", TOTAL.to_string(), "/dev/zero"],
        }),
    )
    .expect("exec create");
    assert_eq!(created.status, 201, "{}", created.message());
    let id = created.json()["Id"].as_str().expect("exec id").to_owned();
    let mut stalled = stalled_exec(&engine.socket, &id);
    // The exec has started, and stays running while nobody reads.
    let running = || {
        vmctl_tests::http::request(&engine.socket, "GET", &format!("/exec/{id}/json"), "", b"")
            .map(|a| a.json()["Running"] == true)
            .unwrap_or(false)
    };
    assert!(eventually(LONG, running), "the exec never ran");
    std::thread::sleep(Duration::from_secs(3));
    assert!(running(), "the exec ended although its client read nothing");
    let monitors = engine.monitors();
    assert_eq!(monitors.len(), 1, "{monitors:?}");
    let monitor_rss = rss_kib(monitors[0]);
    assert!(
        monitor_rss < 64 * 1024,
        "the monitor holds {monitor_rss} KiB for a stalled exec client"
    );
    let engine_rss = rss_kib(engine.pid());
    assert!(
        engine_rss < 128 * 1024,
        "the engine holds {engine_rss} KiB for a stalled exec client"
    );
    eprintln!("stalled exec client: monitor {monitor_rss} KiB, engine {engine_rss} KiB");
    assert_answers(&engine);
    // Reading now gets every byte: stdout frames (8-byte headers), then the
    // exit.
    let mut payload = 0usize;
    let mut header = [0u8; 8];
    while stalled.read_exact(&mut header).is_ok() {
        let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let mut frame = vec![0u8; len];
        stalled.read_exact(&mut frame).expect("frame");
        if header[0] == 1 {
            assert!(frame.iter().all(|&b| b == 0));
            payload += len;
        }
    }
    assert_eq!(payload, TOTAL, "bytes lost on the way");
    assert!(eventually(LONG, || !running()));
    engine.ok(&["rm", "-f", "quiet"]);
    assert_answers(&engine);
}

#[test]
fn diff_lists_links_as_links_and_never_walks_out() {
    require_root!();
    let engine = Engine::start();
    // Links to the host's root and to /proc lead nowhere: `docker diff`
    // lists them as added entries and does not walk below them; a running
    // container swapping a directory for a link to / while diffs are taken
    // makes them list at most that link.
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "links",
        "hello",
        "sh",
        "-c",
        "ln -s / /evil; mkdir -p /d; ln -s /proc/1/root /d/proc1; \
         while true; do rm -rf /swap; mkdir /swap; touch /swap/f; rm -rf /swap; ln -s / /swap; done",
    ]);
    let host_only = engine.dir.path().join("host-only-marker");
    std::fs::write(&host_only, "x").expect("marker");
    for _ in 0..20 {
        let out = engine
            .docker_cmd()
            .args(["diff", "links"])
            .output()
            .expect("docker diff");
        let listed = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            !listed.contains("host-only-marker")
                && !listed.contains("/evil/")
                && !listed.contains("/d/proc1/"),
            "docker diff walked out of the container:\n{listed}"
        );
        if out.status.success() {
            for line in ["A /evil", "A /d", "A /d/proc1"] {
                assert!(
                    listed.lines().any(|l| l == line),
                    "{line} missing:\n{listed}"
                );
            }
        }
    }
    engine.ok(&["rm", "-f", "links"]);
    assert_answers(&engine);
}
