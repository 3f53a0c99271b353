//! Bad input is refused with Docker's status codes and messages, and a
//! refused request leaves nothing behind: no record, mount, cgroup, monitor
//! or volume. Raw HTTP for what the CLI never sends, the CLI for the rest.

use std::io::Write;

use serde_json::json;
use vmctl_tests::http::{self, Answer};
use vmctl_tests::{require_root, Engine};

/// Asserts the engine holds no container, volume or container resource.
fn assert_clean(engine: &Engine, after: &str) {
    assert_eq!(
        engine.ok(&["ps", "-aq"]),
        "",
        "container left after {after}"
    );
    assert_eq!(
        engine.ok(&["volume", "ls", "-q"]),
        "",
        "volume left after {after}"
    );
    let left = engine.leftovers();
    assert!(left.is_empty(), "left after {after}: {left:#?}");
}

fn post(engine: &Engine, path: &str, body: serde_json::Value) -> Answer {
    http::json(&engine.socket, "POST", path, &body).expect("request")
}

/// Runs `docker ARGS`, asserts it fails with `needle` in stderr.
fn refused(engine: &Engine, args: &[&str], needle: &str) {
    let out = engine.docker(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "docker {args:?} succeeded");
    assert!(
        stderr.contains(needle),
        "docker {args:?}: expected {needle:?} in {stderr}"
    );
    assert_clean(engine, &format!("{args:?}"));
}

#[test]
fn malformed_create_bodies_are_400() {
    require_root!();
    let engine = Engine::start();
    for body in [&b"{not json"[..], b"", b"[1,2]", b"{\"Image\": 5}"] {
        let answer = http::request(
            &engine.socket,
            "POST",
            "/v1.44/containers/create",
            "application/json",
            body,
        )
        .expect("request");
        assert_eq!(answer.status, 400, "{:?}", String::from_utf8_lossy(body));
        assert!(!answer.message().is_empty(), "{answer:?}");
        assert_clean(&engine, "malformed JSON");
    }
    let answer = post(&engine, "/containers/create", json!({}));
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_clean(&engine, "empty config");
    let answer = post(
        &engine,
        "/containers/create?name=a%2Fb%20c",
        json!({"Image": "hello"}),
    );
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_clean(&engine, "bad name");
}

#[test]
fn unknown_image_is_404() {
    require_root!();
    let engine = Engine::start();
    let answer = post(
        &engine,
        "/v1.44/containers/create",
        json!({"Image": "nope"}),
    );
    assert_eq!(answer.status, 404);
    assert_eq!(answer.message(), "No such image: nope:latest");
    assert_clean(&engine, "unknown image");
    let answer = http::request(
        &engine.socket,
        "GET",
        "/images/nope/json",
        "text/plain",
        b"",
    )
    .expect("request");
    assert_eq!(answer.status, 404, "{answer:?}");
}

#[test]
fn name_conflict_is_409_and_keeps_the_first() {
    require_root!();
    let engine = Engine::start();
    let first = post(
        &engine,
        "/containers/create?name=dup",
        json!({"Image": "hello"}),
    );
    assert_eq!(first.status, 201, "{first:?}");
    let second = post(
        &engine,
        "/containers/create?name=dup",
        json!({"Image": "hello", "Volumes": {"/anon": {}}}),
    );
    assert_eq!(second.status, 409, "{second:?}");
    assert!(second.message().contains("is already in use"), "{second:?}");
    assert_eq!(engine.ok(&["ps", "-aq"]).lines().count(), 1);
    assert_eq!(
        engine.ok(&["volume", "ls", "-q"]),
        "",
        "anonymous volume leaked"
    );
    engine.ok(&["rm", "dup"]);
    assert_clean(&engine, "rm of the first");
}

#[test]
fn unknown_container_is_404_everywhere() {
    require_root!();
    let engine = Engine::start();
    for (method, path) in [
        ("GET", "/containers/x/json"),
        ("POST", "/containers/x/start"),
        ("POST", "/containers/x/stop"),
        ("POST", "/containers/x/kill"),
        ("POST", "/containers/x/wait"),
        ("DELETE", "/containers/x"),
        ("GET", "/containers/x/logs?stdout=1"),
        ("POST", "/containers/x/exec"),
    ] {
        let answer = http::request(&engine.socket, method, path, "application/json", b"{}")
            .expect("request");
        assert_eq!(answer.status, 404, "{method} {path}: {answer:?}");
        assert_eq!(answer.message(), "No such container: x", "{method} {path}");
    }
    for verb in [
        &["container", "inspect", "x"][..],
        &["start", "x"],
        &["stop", "x"],
        &["rm", "x"],
        &["logs", "x"],
    ] {
        refused(&engine, verb, "No such container: x");
    }
}

#[test]
fn impossible_limits_and_options_are_400() {
    require_root!();
    let engine = Engine::start();
    let cases: &[(&[&str], &str)] = &[
        (&["-m", "1k"], "Minimum memory limit allowed is 6MB"),
        (&["--cpus", "1000"], "Range of CPUs is from 0.01 to"),
        (
            &["--cpu-quota", "10"],
            "CPU cfs quota can not be less than 1ms",
        ),
        (&["--restart", "sometimes"], "invalid restart policy"),
        (&["--cap-add", "FOO"], "FOO"),
        (&["--security-opt", "foo"], "invalid --security-opt"),
        (
            &["--cpuset-cpus", "999"],
            "Requested CPUs are not available",
        ),
        (
            &["-v", "vol-from-bad-create:/data", "--cap-add", "FOO"],
            "FOO",
        ),
    ];
    for (flags, needle) in cases {
        let mut args = vec!["create"];
        args.extend_from_slice(flags);
        args.push("hello");
        let out = engine.docker(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "docker {args:?} succeeded");
        // The CLI prints the engine's message after "Error response from daemon".
        if stderr.contains("Error response from daemon") {
            assert!(stderr.contains(needle), "{args:?}: {stderr}");
        }
        assert_clean(&engine, &format!("{args:?}"));
    }
    // The same through the API: the status is 400.
    for host_config in [
        json!({"Memory": 1024}),
        json!({"NanoCpus": 1_000_000_000_000_i64}),
        json!({"CpuQuota": 10}),
        json!({"RestartPolicy": {"Name": "sometimes"}}),
        json!({"CapAdd": ["FOO"]}),
        json!({"SecurityOpt": ["foo"]}),
        json!({"Binds": ["apivol:/data"], "CapAdd": ["FOO"]}),
    ] {
        let answer = post(
            &engine,
            "/containers/create",
            json!({"Image": "hello", "HostConfig": host_config}),
        );
        assert_eq!(answer.status, 400, "{host_config}: {answer:?}");
        assert!(!answer.message().is_empty());
        assert_clean(&engine, &host_config.to_string());
    }
    let answer = post(
        &engine,
        "/containers/create",
        json!({"Image": "hello", "HostConfig": {"Memory": 1024}}),
    );
    assert_eq!(answer.message(), "Minimum memory limit allowed is 6MB");
}

/// A docker-archive holding one image whose single layer is `layer`.
fn archive_with_layer(layer: &[u8], tag: &str) -> Vec<u8> {
    vmctl_tests::netpeer::load_archive(layer, json!({"Cmd": ["/bin/sh"]}), tag)
}

/// Writes a raw ustar header + data; `tar::Builder` refuses `..` in names.
pub(crate) fn raw_entry(out: &mut Vec<u8>, name: &str, kind: u8, link: &str, data: &[u8]) {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    header[100..107].copy_from_slice(b"0000644");
    header[108..115].copy_from_slice(b"0000000");
    header[116..123].copy_from_slice(b"0000000");
    header[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
    header[136..147].copy_from_slice(b"00000000000");
    header[156] = kind;
    header[157..157 + link.len()].copy_from_slice(link.as_bytes());
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

pub(crate) fn finish(mut tar: Vec<u8>) -> Vec<u8> {
    tar.extend_from_slice(&[0u8; 1024]);
    tar
}

#[test]
fn malicious_layers_are_refused_and_write_nothing_outside() {
    require_root!();
    let engine = Engine::start();
    let images_before = engine.ok(&["images", "-q", "--no-trunc"]);
    let outside = engine.dir.path().join("escape");
    let victim = engine.dir.path().join("victim");
    std::fs::create_dir(&victim).expect("victim dir");
    let victim_link = victim.display().to_string();

    let mut dotdot = Vec::new();
    raw_entry(&mut dotdot, "ok", b'0', "", b"fine\n");
    raw_entry(
        &mut dotdot,
        "../../../../../../../../escape",
        b'0',
        "",
        b"pwned\n",
    );
    raw_entry(
        &mut dotdot,
        &format!(
            "../../../../../../../..{}/escape",
            engine.dir.path().display()
        ),
        b'0',
        "",
        b"pwned\n",
    );
    let dotdot = finish(dotdot);

    // A symlink to a host directory, then a file written "through" it.
    let mut through_link = Vec::new();
    raw_entry(&mut through_link, "evil", b'2', &victim_link, b"");
    raw_entry(&mut through_link, "evil/escape", b'0', "", b"pwned\n");
    let through_link = finish(through_link);

    // A relative symlink climbing out, then a file through it.
    let mut relative_link = Vec::new();
    raw_entry(
        &mut relative_link,
        "up",
        b'2',
        "../../../../../../../../tmp",
        b"",
    );
    raw_entry(
        &mut relative_link,
        "up/vmctl-e2e-escape",
        b'0',
        "",
        b"pwned\n",
    );
    let relative_link = finish(relative_link);

    // A hard link to a host file.
    let mut hard_link = Vec::new();
    raw_entry(&mut hard_link, "passwd", b'1', "/etc/passwd", b"");
    let hard_link = finish(hard_link);

    for (what, layer) in [
        ("dot-dot", &dotdot),
        ("symlink parent", &through_link),
        ("relative symlink parent", &relative_link),
        ("hard link out", &hard_link),
    ] {
        let archive = archive_with_layer(layer, &format!("evil-{}:latest", what.len()));
        let answer = http::request(
            &engine.socket,
            "POST",
            "/v1.44/images/load?quiet=1",
            "application/x-tar",
            &archive,
        )
        .expect("load");
        let text = String::from_utf8_lossy(&answer.body);
        // Docker answers 200 with an error in the stream for some archives;
        // we refuse up front.
        assert_eq!(answer.status, 400, "{what}: {text}");
        assert!(!answer.message().is_empty(), "{what}: {text}");
        assert_eq!(
            engine.ok(&["images", "-q", "--no-trunc"]),
            images_before,
            "{what} added an image"
        );
        assert!(!outside.exists(), "{what} wrote {}", outside.display());
        assert!(
            std::fs::read_dir(&victim).expect("victim").next().is_none(),
            "{what} wrote into {}",
            victim.display()
        );
        assert!(
            !std::path::Path::new("/tmp/vmctl-e2e-escape").exists(),
            "{what}"
        );
        assert_clean(&engine, what);
    }
    // Also via the CLI.
    let file = engine.dir.path().join("evil.tar");
    std::fs::File::create(&file)
        .and_then(|mut f| f.write_all(&archive_with_layer(&dotdot, "evil:cli")))
        .expect("write archive");
    let out = engine.docker(&["load", "-i", &file.display().to_string()]);
    assert!(!out.status.success());
    assert_eq!(engine.ok(&["images", "-q", "--no-trunc"]), images_before);
    assert!(!outside.exists());
    // A well-formed archive built the same way loads: the refusals above are
    // about the layers, not the archive builder.
    let mut fine = Vec::new();
    raw_entry(&mut fine, "hello.txt", b'0', "", b"hi\n");
    let answer = http::request(
        &engine.socket,
        "POST",
        "/images/load?quiet=1",
        "application/x-tar",
        &archive_with_layer(&finish(fine), "fine:latest"),
    )
    .expect("load");
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert!(engine
        .ok(&["images", "--format", "{{.Repository}}"])
        .contains("fine"));
}

#[test]
fn swarm_requests_are_refused_and_change_nothing() {
    require_root!();
    let engine = Engine::start();
    // The family answers as a dockerd in no swarm (the differential suite
    // compares the CLI's words); init and join say this engine has no
    // swarm mode, and the node stays out of any swarm.
    for (method, path, status, words) in [
        (
            "GET",
            "/v1.44/swarm",
            503,
            "This node is not a swarm manager.",
        ),
        (
            "GET",
            "/v1.44/tasks?filters=%7B%7D",
            503,
            "This node is not a swarm manager.",
        ),
        (
            "DELETE",
            "/v1.44/secrets/s1",
            503,
            "This node is not a swarm manager.",
        ),
        (
            "POST",
            "/v1.44/swarm/leave?force=1",
            503,
            "This node is not part of a swarm",
        ),
        (
            "POST",
            "/v1.44/swarm/init",
            503,
            "swarm mode is not supported",
        ),
        (
            "POST",
            "/v1.44/swarm/join",
            503,
            "swarm mode is not supported",
        ),
        ("GET", "/v1.44/plugins/nope/json", 404, "plugin not found"),
    ] {
        let answer = http::request(&engine.socket, method, path, "application/json", b"{}")
            .expect("request");
        assert_eq!(answer.status, status, "{method} {path}: {answer:?}");
        assert!(
            answer.message().contains(words),
            "{method} {path}: {answer:?}"
        );
    }
    let init = engine
        .docker_cmd()
        .args(["swarm", "init"])
        .output()
        .expect("docker swarm init");
    assert!(!init.status.success());
    assert!(
        String::from_utf8_lossy(&init.stderr).contains("swarm mode is not supported"),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    assert_eq!(
        engine.ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"]),
        "inactive"
    );
    assert_eq!(engine.ok(&["plugin", "ls", "-q"]), "");
    assert_clean(&engine, "swarm requests");
}
