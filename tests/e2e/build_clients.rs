//! The classic builder (`POST /build`) as the other clients drive it, and
//! the build options, each shown from inside a `RUN` step.
//!
//! - docker-compose 1.29 (Debian's, docker-py 5 underneath) builds a
//!   service (`build:` with `args`, `target`, `image`) and runs it.
//! - The Docker SDK for Python (`docker` 7 from PyPI, in a virtualenv under
//!   target/: Debian's compose breaks when docker ≥ 7 is in the system
//!   Python) builds with args, target and labels, plain and gzip, and turns
//!   a failing step into `docker.errors.BuildError`.
//! - bollard sends a tar (plain and gzip) it made itself and reads the
//!   stream: the step output, the `aux` image id, the error.
//! - The docker CLI's options: `--add-host`, `--network none` and the
//!   default bridge, `--memory`, `--shm-size`, `--cpuset-cpus`, `-q`,
//!   `--rm=false`, `--force-rm`, `--pull`, `--compress`, a Dockerfile from
//!   outside the context (`-f ../x`, `-f -`) and `docker build -`.
//!
//! The builder itself (instructions, cache, failures, hostile contexts) is
//! `build.rs`'s.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use bollard::query_parameters::BuildImageOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;
use vmctl_tests::{eventually, require_root, Engine};

/// A directory under the engine's holding `files` as (path, text).
fn context(engine: &Engine, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = engine.dir.path().join(name);
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).expect("context dir");
        std::fs::write(&path, text).expect("context file");
    }
    dir
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `docker build ARGS` with the classic builder, run in `dir`, `stdin`
/// written to it.
fn build_in(engine: &Engine, dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = engine
        .docker_cmd()
        .env("DOCKER_BUILDKIT", "0")
        .current_dir(dir)
        .arg("build")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker build");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("docker build")
}

/// `docker build ARGS` (in `dir`), which must succeed; answers its stdout.
fn build_ok(engine: &Engine, dir: &Path, args: &[&str]) -> String {
    let out = build_in(engine, dir, args, "");
    built(engine, args, &out)
}

fn built(engine: &Engine, args: &[&str], out: &Output) -> String {
    assert!(
        out.status.success(),
        "docker build {args:?} failed:\nstdout: {}\nstderr: {}\nengine log:\n{}",
        text(&out.stdout),
        text(&out.stderr),
        vmctl_tests::tail(&engine.log(), 30)
    );
    text(&out.stdout)
}

/// The text a step printed after `marker=` (up to the line's end).
fn shown<'a>(out: &'a str, marker: &str) -> &'a str {
    let key = format!("{marker}=");
    out.lines()
        .find_map(|line| line.strip_prefix(&key))
        .unwrap_or_else(|| panic!("no {key} line in:\n{out}"))
        .trim()
}

// ---------------------------------------------------------------------------
// docker-compose 1.29

const COMPOSE_APP: &str = r#"FROM hello AS base
ARG GREETING=none
RUN echo "built with $GREETING" > /greeting
CMD ["sh", "-c", "cat /greeting && exec sleep 1000"]

FROM base AS extra
RUN echo never-built > /extra
"#;

/// `docker-compose -p built ARGS` in `project`.
fn compose(engine: &Engine, project: &Path, args: &[&str]) -> Output {
    vmctl_tests::compose::run(engine, project, "built", args)
}

fn compose_ok(engine: &Engine, project: &Path, args: &[&str]) -> String {
    vmctl_tests::compose::ok(engine, project, "built", args)
}

/// A compose project whose service `web` is built from `./app` (with an
/// arg and a target) into `composed/web:1`; `service_extra` is added to
/// the service's keys.
fn compose_build_and_up(engine: &Engine, service_extra: &str) {
    let project = context(
        engine,
        "project",
        &[
            ("app/Dockerfile", COMPOSE_APP),
            (
                "docker-compose.yml",
                &format!(
                    "version: \"3.7\"\nservices:\n  web:\n    build:\n      context: ./app\n      args:\n        GREETING: from-compose\n      target: base\n    image: composed/web:1\n{service_extra}"
                ),
            ),
        ],
    );

    // `build`: the target stage only, with the arg, tagged as `image:`.
    let out = compose_ok(engine, &project, &["build"]);
    assert!(out.contains("Successfully tagged composed/web:1"), "{out}");
    assert!(!out.contains("never-built"), "{out}");
    let built = engine.ok(&["image", "inspect", "-f", "{{.Id}}", "composed/web:1"]);

    // `up -d --build`: built again (from the cache), then run.
    let out = compose_ok(engine, &project, &["up", "-d", "--build"]);
    assert!(out.contains("Using cache"), "{out}");
    let container = engine.ok(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        "label=com.docker.compose.service=web",
    ]);
    assert!(!container.is_empty(), "no web container: {out}");
    assert_eq!(
        engine.ok(&["inspect", "-f", "{{.Image}}", &container]),
        built
    );
    assert!(
        eventually(Duration::from_secs(60), || text(
            &compose(engine, &project, &["logs", "--no-color", "web"]).stdout
        )
        .contains("built with from-compose")),
        "the service never printed its built file: {}",
        compose_ok(engine, &project, &["logs", "--no-color", "web"])
    );
    let exec = compose(engine, &project, &["exec", "-T", "web", "cat", "/greeting"]);
    assert_eq!(text(&exec.stdout), "built with from-compose\n");

    // `down`: the container goes, the built image stays.
    compose_ok(engine, &project, &["down", "-t", "1"]);
    assert_eq!(engine.ok(&["ps", "-a", "-q"]), "");
    assert_eq!(
        engine.ok(&["image", "inspect", "-f", "{{.Id}}", "composed/web:1"]),
        built
    );
}

#[test]
fn compose_builds_a_service_and_runs_it() {
    require_root!();
    if let Some(reason) = vmctl_tests::compose::missing() {
        eprintln!("SKIPPED: {reason}");
        return;
    }
    let engine = Engine::start();
    // On the default bridge: compose's own project network is the next test's.
    compose_build_and_up(&engine, "    network_mode: bridge\n");
}

#[test]
fn compose_builds_a_service_and_runs_it_on_the_project_network() {
    require_root!();
    if let Some(reason) = vmctl_tests::compose::missing() {
        eprintln!("SKIPPED: {reason}");
        return;
    }
    let engine = Engine::start();
    compose_build_and_up(&engine, "");
}

// ---------------------------------------------------------------------------
// The Docker SDK for Python

/// Builds with the SDK (argv: engine URL, context dir) and prints what it
/// saw as one JSON object.
const SDK_SCRIPT: &str = r#"
import io, json, sys
import docker

client = docker.DockerClient(base_url=sys.argv[1])
report = {}
image, logs = client.images.build(
    path=sys.argv[2], tag="sdk:1", buildargs={"WHO": "sdk"}, target="base",
    labels={"via": "sdk"}, rm=True)
logs = list(logs)
report["id"] = image.id
report["tags"] = image.tags
report["labels"] = image.labels
report["cmd"] = image.attrs["Config"]["Cmd"]
report["aux"] = [line["aux"]["ID"] for line in logs if "aux" in line]
report["stream"] = "".join(line.get("stream", "") for line in logs)

def output(tag):
    container = client.containers.run(tag, detach=True)
    container.wait()
    text = container.logs().decode()
    container.remove()
    return text

report["run"] = output("sdk:1")
client.images.build(
    path=sys.argv[2], tag="sdk:gzip", gzip=True, buildargs={"WHO": "gzip"},
    target="base", rm=True)
report["gzip_run"] = output("sdk:gzip")
try:
    client.images.build(
        fileobj=io.BytesIO(b"FROM hello\nRUN echo bad-step && exit 7\n"),
        tag="sdk:bad", rm=True, forcerm=True)
    report["error"] = None
except docker.errors.BuildError as e:
    log = list(e.build_log)
    report["error"] = e.msg
    report["error_code"] = log[-1].get("errorDetail", {}).get("code")
    report["error_stream"] = "".join(line.get("stream", "") for line in log)
report["containers"] = [c.id for c in client.containers.list(all=True)]
print(json.dumps(report))
"#;

#[test]
fn python_sdk_builds_with_args_target_labels_and_gzip_and_raises_build_error() {
    require_root!();
    let python = match vmctl_tests::sdk::python() {
        Ok(python) => python,
        Err(reason) => {
            eprintln!("SKIPPED: no virtualenv with the Docker SDK for Python: {reason}");
            return;
        }
    };
    let engine = Engine::start();
    let ctx = context(
        &engine,
        "ctx",
        &[(
            "Dockerfile",
            "FROM hello AS base\nARG WHO=nobody\nRUN echo \"$WHO\" > /who\nCMD [\"cat\", \"/who\"]\n\nFROM base AS other\nRUN echo never-built\n",
        )],
    );
    let report = vmctl_tests::sdk::report(&python, SDK_SCRIPT, &engine, &[ctx.as_os_str()]);

    let id = report["id"].as_str().expect("id");
    assert_eq!(report["aux"], serde_json::json!([id]), "{report}");
    assert_eq!(
        id,
        engine.ok(&["image", "inspect", "-f", "{{.Id}}", "sdk:1"])
    );
    assert_eq!(report["tags"], serde_json::json!(["sdk:1"]));
    assert_eq!(report["labels"], serde_json::json!({"via": "sdk"}));
    assert_eq!(report["cmd"], serde_json::json!(["cat", "/who"]));
    let stream = report["stream"].as_str().expect("stream");
    assert!(stream.contains("Successfully tagged sdk:1"), "{stream}");
    assert!(!stream.contains("never-built"), "{stream}");
    assert_eq!(report["run"], "sdk\n");
    assert_eq!(report["gzip_run"], "gzip\n");

    assert_eq!(
        report["error"],
        "The command '/bin/sh -c echo bad-step && exit 7' returned a non-zero code: 7"
    );
    assert_eq!(report["error_code"], 7);
    assert!(
        report["error_stream"]
            .as_str()
            .is_some_and(|s| s.contains("bad-step")),
        "{report}"
    );
    assert!(!engine
        .docker(&["image", "inspect", "sdk:bad"])
        .status
        .success());
    // rm=True (and forcerm=True for the failure): no step container left.
    assert_eq!(report["containers"], serde_json::json!([]), "{report}");
}

// ---------------------------------------------------------------------------
// bollard

fn bollard(engine: &Engine) -> Docker {
    Docker::connect_with_unix(
        &engine.socket.display().to_string(),
        120,
        bollard::API_DEFAULT_VERSION,
    )
    .expect("bollard client")
}

/// A tar of `files` as (path, text), made with the `tar` crate.
fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, path, content.as_bytes())
            .expect("tar entry");
    }
    builder.into_inner().expect("tar")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

/// What a build stream said: its `stream` text, its `aux` ids, and the
/// error that ended it.
#[derive(Default)]
struct Streamed {
    stream: String,
    aux: Vec<String>,
    error: Option<String>,
}

async fn stream_build(docker: &Docker, tag: &str, who: &str, body: Vec<u8>) -> Streamed {
    let options = BuildImageOptionsBuilder::new()
        .t(tag)
        .buildargs(&HashMap::from([("WHO", who)]))
        .rm(true)
        .forcerm(true)
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(body.into())));
    let mut seen = Streamed::default();
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                seen.stream
                    .push_str(info.stream.as_deref().unwrap_or_default());
                if let Some(id) = info.aux.and_then(|aux| aux.id) {
                    seen.aux.push(id);
                }
            }
            Err(e) => seen.error = Some(e.to_string()),
        }
    }
    seen
}

#[test]
fn bollard_streams_a_build_of_its_own_tar_plain_and_gzip() {
    require_root!();
    let engine = Engine::start();
    let files = [
        (
            "Dockerfile",
            "FROM hello\nARG WHO\nCOPY app.txt /app.txt\nRUN echo \"step sees $WHO and $(cat /app.txt)\" | tee /out\nCMD [\"cat\", \"/out\"]\n",
        ),
        ("app.txt", "app-data"),
    ];
    let plain = tar_of(&files);
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    let docker = bollard(&engine);

    for (tag, who, body) in [
        ("bollard:plain", "plain", plain.clone()),
        ("bollard:gzip", "gzip", gzip(&plain)),
    ] {
        let seen = runtime.block_on(stream_build(&docker, tag, who, body));
        assert_eq!(seen.error, None, "{}", seen.stream);
        assert!(
            seen.stream
                .contains(&format!("step sees {who} and app-data\n")),
            "{}",
            seen.stream
        );
        assert!(
            seen.stream.contains(&format!("Successfully tagged {tag}")),
            "{}",
            seen.stream
        );
        let image = runtime
            .block_on(docker.inspect_image(tag))
            .expect("inspect the built image");
        assert_eq!(seen.aux, vec![image.id.clone().expect("image id")]);
        assert_eq!(
            engine.ok(&["run", "--rm", tag]),
            format!("step sees {who} and app-data")
        );
    }

    // A failing step ends the stream with its error; nothing is tagged.
    let broken = tar_of(&[("Dockerfile", "FROM hello\nRUN echo bollard-bad && exit 5\n")]);
    let seen = runtime.block_on(stream_build(&docker, "bollard:bad", "x", broken));
    assert!(seen.stream.contains("bollard-bad"), "{}", seen.stream);
    let error = seen.error.expect("the build's error");
    assert!(
        error.contains(
            "The command '/bin/sh -c echo bollard-bad && exit 5' returned a non-zero code: 5"
        ),
        "{error}"
    );
    assert!(runtime
        .block_on(docker.inspect_image("bollard:bad"))
        .is_err());
    assert_eq!(engine.ok(&["ps", "-a", "-q"]), "");
}

// ---------------------------------------------------------------------------
// The docker CLI's build options, seen from a RUN step

/// Prints, one `name=value` line each, what a step sees of its hosts
/// file, network, memory and CPU limits and /dev/shm (cgroup v2 or v1).
const PROBE: &str = r#"FROM hello
RUN echo "hosts=$(grep -w probe-host /etc/hosts)" \
 && echo "links=$(ls /sys/class/net | tr '\n' ' ')" \
 && echo "memory=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes)" \
 && echo "cpus=$(cat /sys/fs/cgroup/cpuset.cpus.effective 2>/dev/null || cat /sys/fs/cgroup/cpuset/cpuset.cpus)" \
 && echo "shm=$(df -k /dev/shm | tail -1 | awk '{print $2}')" \
 && echo "fetched=$(timeout 5 wget -q -O- "http://$SERVER:8080/" 2>&1 || echo failed)"
"#;

#[test]
fn run_steps_get_the_hosts_network_and_limits_asked_for() {
    require_root!();
    let engine = Engine::start();
    // Something on the bridge for the steps to reach.
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "server",
        "hello",
        "sh",
        "-c",
        "mkdir -p /tmp/www && echo served > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
    ]);
    let server = engine.ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "server"]);
    assert!(
        eventually(Duration::from_secs(30), || engine
            .fetch(&format!("http://{server}:8080/"))
            .is_ok()),
        "the server never answered"
    );
    let ctx = context(
        &engine,
        "probe",
        &[("Dockerfile", &PROBE.replace("$SERVER", &server))],
    );

    // Defaults: eth0 on the bridge, no limits, Docker's 64 MiB /dev/shm.
    let out = build_ok(&engine, &ctx, &["--no-cache", "."]);
    assert_eq!(shown(&out, "hosts"), "");
    assert_eq!(shown(&out, "links"), "eth0 lo");
    assert_eq!(shown(&out, "fetched"), "served");
    assert_eq!(shown(&out, "shm"), "65536");
    let unlimited = shown(&out, "memory");
    assert!(
        unlimited == "max" || unlimited.parse::<u64>().is_ok_and(|m| m > 1 << 40),
        "{unlimited}"
    );

    // Every option at once.
    let out = build_ok(
        &engine,
        &ctx,
        &[
            "--no-cache",
            "--add-host",
            "probe-host:1.2.3.4",
            "--memory",
            "64m",
            "--shm-size",
            "16m",
            "--cpuset-cpus",
            "0",
            ".",
        ],
    );
    assert_eq!(shown(&out, "hosts"), "1.2.3.4\tprobe-host");
    assert_eq!(shown(&out, "memory"), "67108864");
    assert_eq!(shown(&out, "cpus"), "0");
    assert_eq!(shown(&out, "shm"), "16384");

    // --network none: loopback only, the bridge out of reach.
    let out = build_ok(&engine, &ctx, &["--no-cache", "--network", "none", "."]);
    assert_eq!(shown(&out, "links"), "lo");
    assert_ne!(shown(&out, "fetched"), "served");

    // The steps' containers are gone; only the server runs.
    assert_eq!(engine.ok(&["ps", "-a", "--format", "{{.Names}}"]), "server");
}

#[test]
fn quiet_prints_only_the_id_and_rm_force_rm_decide_what_stays() {
    require_root!();
    let engine = Engine::start();
    let ctx = context(
        &engine,
        "ctx",
        &[
            ("Dockerfile", "FROM hello\nRUN echo step-output > /x\n"),
            (
                "failing.Dockerfile",
                "FROM hello\nRUN echo failing && exit 3\n",
            ),
        ],
    );

    // -q: stdout is the image id alone, the step's output nowhere.
    let out = build_in(&engine, &ctx, &["-q", "-t", "quiet:1", "."], "");
    let stdout = built(&engine, &["-q"], &out);
    let id = engine.ok(&["image", "inspect", "-f", "{{.Id}}", "quiet:1"]);
    assert_eq!(stdout, format!("{id}\n"));
    assert!(!text(&out.stderr).contains("step-output"));

    let containers = || {
        engine.ok(&[
            "ps",
            "-a",
            "--no-trunc",
            "--format",
            "{{.Command}} {{.Status}}",
        ])
    };
    // --rm=false: the successful step's container stays, exited.
    build_ok(&engine, &ctx, &["--no-cache", "--rm=false", "."]);
    let left = containers();
    assert!(
        left.contains("echo step-output > /x") && left.contains("Exited (0)"),
        "{left}"
    );
    assert_eq!(left.lines().count(), 1, "{left}");

    // --rm=false with a failing step: that container stays too.
    let out = build_in(
        &engine,
        &ctx,
        &["--rm=false", "-f", "failing.Dockerfile", "."],
        "",
    );
    assert!(!out.status.success());
    let left = containers();
    assert_eq!(left.lines().count(), 2, "{left}");
    assert!(left.contains("Exited (3)"), "{left}");

    // --force-rm removes the failing step's container whatever --rm says.
    for args in [
        ["--force-rm", "--rm=false", "-f", "failing.Dockerfile", "."],
        ["--force-rm", "--rm=true", "-f", "failing.Dockerfile", "."],
    ] {
        let out = build_in(&engine, &ctx, &args, "");
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains("returned a non-zero code: 3"),
            "{}",
            text(&out.stderr)
        );
        assert_eq!(
            containers().lines().count(),
            2,
            "{args:?}: {}",
            containers()
        );
    }
}

#[test]
fn pull_of_a_base_that_is_only_local_fails_with_the_registry_error() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&["tag", "hello", "only-here:1"]);
    let ctx = context(
        &engine,
        "ctx",
        &[("Dockerfile", "FROM only-here:1\nRUN echo never-run\n")],
    );
    // Without --pull the local image is the base.
    build_ok(&engine, &ctx, &["-t", "local-base:1", "."]);

    // With --pull the registry is asked, and it is out of reach here.
    let out = build_in(
        &engine,
        &ctx,
        &["--pull", "--no-cache", "-t", "pulled:1", "."],
        "",
    );
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(stdout.contains("Step 1/2 : FROM only-here:1"), "{stdout}");
    assert!(!stdout.contains("never-run"), "{stdout}");
    assert!(
        stderr.contains("library/only-here/manifests/1"),
        "the error names the registry request: {stderr}"
    );
    assert!(!engine
        .docker(&["image", "inspect", "pulled:1"])
        .status
        .success());
    assert_eq!(engine.ok(&["ps", "-a", "-q"]), "");
}

#[test]
fn dockerfile_on_stdin_without_a_context_and_a_compressed_context() {
    require_root!();
    let engine = Engine::start();
    let dir = context(&engine, "empty", &[]);
    std::fs::create_dir_all(&dir).expect("dir");

    // `docker build -`: the Dockerfile is the whole context.
    let args = ["-t", "stdin:1", "-"];
    let out = build_in(
        &engine,
        &dir,
        &args,
        "FROM hello\nRUN echo from-stdin > /s\nCMD [\"cat\", \"/s\"]\n",
    );
    built(&engine, &args, &out);
    assert_eq!(engine.ok(&["run", "--rm", "stdin:1"]), "from-stdin");
    // With no context, a COPY has nothing to read.
    let out = build_in(&engine, &dir, &["-"], "FROM hello\nCOPY x /x\n");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("COPY failed: file not found in build context"),
        "{}",
        text(&out.stderr)
    );

    // --compress: the CLI gzips the context.
    let ctx = context(
        &engine,
        "ctx",
        &[
            ("Dockerfile", "FROM hello\nCOPY data.txt /data.txt\n"),
            ("data.txt", "compressed-context\n"),
        ],
    );
    build_ok(&engine, &ctx, &["--compress", "-t", "compressed:1", "."]);
    assert_eq!(
        engine.ok(&["run", "--rm", "compressed:1", "cat", "/data.txt"]),
        "compressed-context"
    );
}

#[test]
fn dockerfile_from_outside_the_context() {
    require_root!();
    let engine = Engine::start();
    let base = context(
        &engine,
        "project",
        &[
            (
                "other.Dockerfile",
                "FROM hello\nCOPY a.txt /a.txt\nRUN cat /a.txt\n",
            ),
            ("ctx/a.txt", "from-the-context\n"),
        ],
    );
    let ctx = base.join("ctx");

    // -f ../other.Dockerfile: the CLI sends it in the tar under a made-up
    // name (and adds that name to .dockerignore).
    let out = build_ok(
        &engine,
        &ctx,
        &["-f", "../other.Dockerfile", "-t", "outside:1", "."],
    );
    assert!(out.contains("from-the-context"), "{out}");
    assert_eq!(
        engine.ok(&["run", "--rm", "outside:1", "cat", "/a.txt"]),
        "from-the-context"
    );
    let listing = engine.ok(&["run", "--rm", "outside:1", "ls", "-a", "/"]);
    assert!(!listing.contains(".dockerfile."), "{listing}");

    // -f -: the Dockerfile on stdin, the context from the directory.
    let args = ["-f", "-", "-t", "stdin-file:1", "."];
    let out = build_in(&engine, &ctx, &args, "FROM hello\nCOPY a.txt /b.txt\n");
    built(&engine, &args, &out);
    assert_eq!(
        engine.ok(&["run", "--rm", "stdin-file:1", "cat", "/b.txt"]),
        "from-the-context"
    );
}
