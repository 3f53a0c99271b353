//! HEALTHCHECK: probes from `--health-*` and from the image, `State.Health`,
//! `docker ps` showing `(healthy)`, the `health` filter, `health_status`
//! events, a probe past its timeout killed, a flooding probe cut, and the
//! probing going on across an engine restart.

use std::time::Duration;

use serde_json::Value;
use vmctl_tests::{eventually, require_root, Engine};

const LONG: Duration = Duration::from_secs(60);

fn health(engine: &Engine, name: &str) -> Value {
    let text = engine.ok(&["inspect", "-f", "{{json .State.Health}}", name]);
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn status_of(engine: &Engine, name: &str) -> String {
    health(engine, name)["Status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn wait_status(engine: &Engine, name: &str, want: &str) {
    assert!(
        eventually(LONG, || status_of(engine, name) == want),
        "{name} never became {want}: {}\nengine log:\n{}",
        health(engine, name),
        vmctl_tests::tail(&engine.log(), 30)
    );
}

#[test]
fn probes_make_containers_healthy_and_unhealthy_with_events() {
    require_root!();
    let engine = Engine::start();
    let start = unix_now();
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--health-cmd",
        "echo probing; test -f /tmp/ok",
        "--health-interval",
        "1s",
        "--health-retries",
        "2",
        "hello",
    ]);
    let config = engine.ok(&["inspect", "-f", "{{json .Config.Healthcheck}}", "web"]);
    let config: Value = serde_json::from_str(&config).unwrap();
    assert_eq!(
        config["Test"],
        serde_json::json!(["CMD-SHELL", "echo probing; test -f /tmp/ok"])
    );
    assert_eq!(config["Interval"], 1_000_000_000i64);
    wait_status(&engine, "web", "unhealthy");
    let state = health(&engine, "web");
    assert!(state["FailingStreak"].as_i64().unwrap() >= 2, "{state}");
    let last = state["Log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["ExitCode"], 1, "{state}");
    assert_eq!(last["Output"], "probing\n", "{state}");
    let ps = engine.ok(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(
        ps.starts_with("web Up") && ps.ends_with("(unhealthy)"),
        "{ps}"
    );
    assert_eq!(
        engine
            .ok(&["ps", "-q", "--filter", "health=unhealthy"])
            .len(),
        12
    );
    assert_eq!(engine.ok(&["ps", "-q", "--filter", "health=healthy"]), "");

    engine.ok(&["exec", "web", "touch", "/tmp/ok"]);
    wait_status(&engine, "web", "healthy");
    let state = health(&engine, "web");
    assert_eq!(state["FailingStreak"], 0, "{state}");
    assert!(state["Log"].as_array().unwrap().len() <= 5, "{state}");
    let ps = engine.ok(&["ps", "--format", "{{.Status}}"]);
    assert!(ps.ends_with("(healthy)"), "{ps}");
    assert_eq!(
        engine.ok(&["ps", "-q", "--filter", "health=healthy"]).len(),
        12
    );
    // A container without a probe is `none`.
    engine.ok(&["run", "-d", "--name", "plain", "hello"]);
    assert_eq!(
        engine.ok(&["ps", "--filter", "health=none", "--format", "{{.Names}}"]),
        "plain"
    );
    assert_eq!(
        engine.ok(&["inspect", "-f", "{{json .State.Health}}", "plain"]),
        "null"
    );
    let bad = engine.docker(&["ps", "--filter", "health=sick"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("Unrecognised filter value for health: sick"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    assert_eq!(
        health_events(&engine, &start),
        ["health_status: unhealthy", "health_status: healthy"]
    );
    // The probes' exec instances are not kept.
    let execs = engine.ok(&["inspect", "-f", "{{len .ExecIDs}}", "web"]);
    assert!(execs == "0" || execs == "1", "{execs}");

    // A stop keeps the last verdict; a start begins again from `starting`,
    // so becoming healthy again is a new event.
    engine.ok(&["stop", "-t", "1", "web"]);
    assert_eq!(status_of(&engine, "web"), "healthy");
    let ps = engine.ok(&[
        "ps",
        "-a",
        "--filter",
        "name=web",
        "--format",
        "{{.Status}}",
    ]);
    assert!(ps.starts_with("Exited"), "{ps}");
    engine.ok(&["start", "web"]);
    assert!(eventually(LONG, || health_events(&engine, &start).len() == 3));
    assert_eq!(status_of(&engine, "web"), "healthy");
}

/// Now as `docker events --since` takes it (Unix seconds).
fn unix_now() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string()
}

fn health_events(engine: &Engine, since: &str) -> Vec<String> {
    let until = (unix_now().parse::<u64>().unwrap() + 1).to_string();
    engine
        .ok(&[
            "events",
            "--since",
            since,
            "--until",
            &until,
            "--filter",
            "event=health_status",
            "--format",
            "{{.Action}}",
        ])
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_image_healthcheck_merges_with_the_flags_and_can_be_turned_off() {
    require_root!();
    let engine = Engine::start();
    let dir = engine.dir.path().join("ctx");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM hello\nHEALTHCHECK --interval=1s --retries=1 CMD [\"sh\", \"-c\", \"echo from-image; exit 3\"]\n",
    )
    .unwrap();
    let out = engine
        .docker_cmd()
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "-t", "checked"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let image = engine.ok(&[
        "image",
        "inspect",
        "-f",
        "{{json .Config.Healthcheck}}",
        "checked",
    ]);
    let image: Value = serde_json::from_str(&image).unwrap();
    assert_eq!(image["Test"][0], "CMD", "{image}");

    engine.ok(&["run", "-d", "--name", "ca", "checked"]);
    wait_status(&engine, "ca", "unhealthy");
    let last = health(&engine, "ca")["Log"][0].clone();
    assert_eq!(last["ExitCode"], 3);
    assert_eq!(last["Output"], "from-image\n");

    // Flags override what they name; the image gives the rest.
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "cb",
        "--health-cmd",
        "true",
        "checked",
    ]);
    let config = engine.ok(&["inspect", "-f", "{{json .Config.Healthcheck}}", "cb"]);
    let config: Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["Test"], serde_json::json!(["CMD-SHELL", "true"]));
    assert_eq!(config["Interval"], 1_000_000_000i64, "{config}");
    wait_status(&engine, "cb", "healthy");

    // `--no-healthcheck`: no probe, no health, no suffix.
    engine.ok(&["run", "-d", "--name", "cc", "--no-healthcheck", "checked"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        engine.ok(&["inspect", "-f", "{{json .State.Health}}", "cc"]),
        "null"
    );
    let ps = engine.ok(&["ps", "--filter", "name=cc", "--format", "{{.Status}}"]);
    assert!(!ps.contains('('), "{ps}");

    // A committed container keeps its health check in the image.
    engine.ok(&["commit", "cb", "committed"]);
    let committed = engine.ok(&[
        "image",
        "inspect",
        "-f",
        "{{json .Config.Healthcheck.Test}}",
        "committed",
    ]);
    assert_eq!(committed, r#"["CMD-SHELL","true"]"#);

    // Bad durations: Docker's 400, nothing created.
    let before = engine.ok(&["ps", "-aq"]);
    let out = engine.docker(&[
        "run",
        "-d",
        "--health-interval",
        "10us",
        "--health-cmd",
        "true",
        "hello",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Interval in Healthcheck cannot be less than 1ms"),
        "{stderr}"
    );
    assert_eq!(engine.ok(&["ps", "-aq"]), before);
}

#[test]
fn a_hung_probe_is_killed_and_a_flooding_one_is_cut() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "hung",
        "--health-cmd",
        "echo started; sleep 1000",
        "--health-interval",
        "1s",
        "--health-timeout",
        "1s",
        "--health-retries",
        "3",
        "hello",
    ]);
    wait_status(&engine, "hung", "unhealthy");
    let state = health(&engine, "hung");
    let last = state["Log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["ExitCode"], -1, "{state}");
    assert_eq!(
        last["Output"], "Health check exceeded timeout (1s): started\n",
        "{state}"
    );
    // Three probes ran; their sleeps did not pile up.
    let top = engine.ok(&["top", "hung"]);
    let sleeping = top.lines().filter(|l| l.contains("sleep 1000")).count();
    assert!(sleeping <= 1, "{top}");

    engine.ok(&[
        "run",
        "-d",
        "--name",
        "flood",
        "--health-cmd",
        "yes probe | head -c 300000",
        "--health-interval",
        "1s",
        "hello",
    ]);
    wait_status(&engine, "flood", "healthy");
    let output = health(&engine, "flood")["Log"][0]["Output"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(output.len(), 4096 + 3, "{}", output.len());
    assert!(output.ends_with("..."));
}

#[test]
fn probing_goes_on_across_an_engine_restart() {
    require_root!();
    let mut engine = Engine::start();
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--health-cmd",
        "test -f /tmp/ok",
        "--health-interval",
        "1s",
        "--health-retries",
        "1",
        "hello",
    ]);
    wait_status(&engine, "web", "unhealthy");
    engine.kill_engine();
    engine.spawn_engine();
    assert_eq!(status_of(&engine, "web"), "unhealthy");
    engine.ok(&["exec", "web", "touch", "/tmp/ok"]);
    wait_status(&engine, "web", "healthy");
}
