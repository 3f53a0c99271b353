//! Debian's docker-compose 1.29 running a project against a standalone
//! engine: a user network with a service alias, `depends_on`, a named
//! volume, a bind mount, a published port, `exec`, `logs` (and `-f`), `scale`,
//! `restart`, and `down -v` leaving nothing; `depends_on` with
//! `condition: service_healthy` waiting for the engine's health checks.

use std::path::Path;
use std::time::Duration;

use vmctl_tests::compose::{missing, ok, run};
use vmctl_tests::{eventually, require_root, Engine};

const PROJECT: &str = r#"version: "3.8"
services:
  db:
    image: hello
    command: sh -c 'echo db-up > /data/mark; echo db-up; sleep 1000'
    networks:
      back:
        aliases: [database]
    volumes:
      - data:/data
  worker:
    image: hello
    command: sh -c 'echo worker-up; sleep 1000'
    depends_on: [db]
    networks: [back]
  web:
    image: hello
    command: sh -c 'ping -c1 -W5 database >/dev/null && echo reached-db; echo bind=$$(cat /srv/host.txt); exec httpd -f -p 80 -h /srv'
    depends_on: [db]
    networks: [back]
    ports: ["127.0.0.1:18088:80"]
    volumes:
      - ./site:/srv:ro
networks:
  back: {}
volumes:
  data: {}
"#;

fn names(engine: &Engine) -> Vec<String> {
    let mut names: Vec<String> = engine
        .ok(&["ps", "-a", "--format", "{{.Names}}"])
        .lines()
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

#[test]
fn a_project_with_a_user_network_aliases_volumes_and_ports_comes_up_and_goes() {
    require_root!();
    if let Some(reason) = missing() {
        eprintln!("SKIPPED: {reason}");
        return;
    }
    let engine = Engine::start();
    let project = engine.dir.path().join("project");
    std::fs::create_dir_all(project.join("site")).expect("project");
    std::fs::write(project.join("docker-compose.yml"), PROJECT).expect("compose file");
    std::fs::write(project.join("site/host.txt"), "from-host\n").expect("site");
    let compose = |args: &[&str]| ok(&engine, &project, "proj", args);

    compose(&["up", "-d"]);
    assert_eq!(names(&engine), ["proj_db_1", "proj_web_1", "proj_worker_1"]);
    // The alias resolves on the project network; the bind and the volume
    // are there.
    assert!(
        eventually(Duration::from_secs(30), || {
            let logs = String::from_utf8_lossy(
                &run(&engine, &project, "proj", &["logs", "--no-color", "web"]).stdout,
            )
            .into_owned();
            logs.contains("reached-db") && logs.contains("bind=from-host")
        }),
        "web never reached the db by its alias:\n{}",
        compose(&["logs", "--no-color"])
    );
    assert_eq!(
        compose(&["exec", "-T", "db", "cat", "/data/mark"]).trim(),
        "db-up"
    );
    // Service to service by name, and the published port from the host
    // (the engine's namespace).
    let page = compose(&[
        "exec",
        "-T",
        "worker",
        "wget",
        "-qO-",
        "http://web/host.txt",
    ]);
    assert_eq!(page.trim(), "from-host");
    let published = engine.fetch("http://127.0.0.1:18088/host.txt");
    assert_eq!(published.as_deref().map(str::trim), Ok("from-host"));

    // Scale, restart.
    compose(&["up", "-d", "--scale", "worker=3"]);
    assert_eq!(
        names(&engine),
        [
            "proj_db_1",
            "proj_web_1",
            "proj_worker_1",
            "proj_worker_2",
            "proj_worker_3"
        ]
    );
    compose(&["restart", "worker"]);
    let running = engine.ok(&[
        "ps",
        "--filter",
        "name=proj_worker",
        "--format",
        "{{.Status}}",
    ]);
    assert_eq!(
        running.lines().filter(|l| l.starts_with("Up")).count(),
        3,
        "{running}"
    );

    // `logs -f` follows until the services stop.
    let follow = std::process::Command::new("docker-compose")
        .args([
            "--ansi",
            "never",
            "-p",
            "proj",
            "logs",
            "-f",
            "--no-color",
            "db",
        ])
        .current_dir(&project)
        .env("DOCKER_HOST", engine.docker_host())
        .env("DOCKER_CONFIG", engine.dir.path().join("docker-config"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("docker-compose logs -f");
    std::thread::sleep(Duration::from_secs(2));

    // Down with volumes leaves no container, network or volume.
    compose(&["down", "-v", "-t", "1"]);
    let followed = follow
        .wait_with_output()
        .expect("logs -f ends with the services");
    assert!(
        String::from_utf8_lossy(&followed.stdout).contains("db-up"),
        "{}",
        String::from_utf8_lossy(&followed.stdout)
    );
    assert!(names(&engine).is_empty());
    assert!(!engine
        .ok(&["network", "ls", "--format", "{{.Name}}"])
        .contains("proj_"));
    assert!(!engine.ok(&["volume", "ls", "-q"]).contains("proj_data"));
    assert_project_files_kept(&project);
}

/// The project's own files stay as they were.
fn assert_project_files_kept(project: &Path) {
    assert_eq!(
        std::fs::read_to_string(project.join("site/host.txt")).expect("bind source"),
        "from-host\n"
    );
}

const HEALTHY_PROJECT: &str = r#"services:
  db:
    image: hello
    command: sh -c 'sleep 3; touch /tmp/ready; exec sleep 1000'
    healthcheck:
      test: ["CMD-SHELL", "test -f /tmp/ready"]
      interval: 1s
      retries: 30
  web:
    image: hello
    command: sh -c 'echo web-up; exec sleep 1000'
    depends_on:
      db:
        condition: service_healthy
  broken:
    image: hello
    command: sleep 1000
    healthcheck:
      test: ["CMD", "false"]
      interval: 1s
      retries: 1
    profiles: [broken]
  waiter:
    image: hello
    command: sleep 1000
    depends_on:
      broken:
        condition: service_healthy
    profiles: [broken]
"#;

/// The first time a probe of `name` succeeded, and when `other` started.
fn times(engine: &Engine, name: &str, other: &str) -> (String, String) {
    let healthy = engine.ok(&[
        "inspect",
        "-f",
        "{{range .State.Health.Log}}{{if eq .ExitCode 0}}{{.End}} {{end}}{{end}}",
        name,
    ]);
    let started = engine.ok(&["inspect", "-f", "{{.State.StartedAt}}", other]);
    (
        healthy
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned(),
        started,
    )
}

#[test]
fn depends_on_service_healthy_waits_for_the_health_check() {
    require_root!();
    if let Some(reason) = missing() {
        eprintln!("SKIPPED: {reason}");
        return;
    }
    let engine = Engine::start();
    let project = engine.dir.path().join("healthy");
    std::fs::create_dir_all(&project).expect("project");
    std::fs::write(project.join("docker-compose.yml"), HEALTHY_PROJECT).expect("compose file");
    let compose = |args: &[&str]| ok(&engine, &project, "hp", args);

    compose(&["up", "-d"]);
    assert_eq!(
        engine.ok(&["inspect", "-f", "{{.State.Health.Status}}", "hp_db_1"]),
        "healthy"
    );
    // web was created only once db had passed its check.
    let (healthy, started) = times(&engine, "hp_db_1", "hp_web_1");
    assert!(!healthy.is_empty());
    assert!(
        started > healthy,
        "web started {started}, db healthy {healthy}"
    );
    let ps = engine.ok(&["ps", "--filter", "name=hp_db_1", "--format", "{{.Status}}"]);
    assert!(ps.ends_with("(healthy)"), "{ps}");

    // A dependency that turns unhealthy stops `up` with compose's error.
    let out = run(
        &engine,
        &project,
        "hp",
        &["--profile", "broken", "up", "-d"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unhealthy"), "{stderr}");
    assert_eq!(
        engine.ok(&["inspect", "-f", "{{.State.Health.Status}}", "hp_broken_1"]),
        "unhealthy"
    );
    assert!(!engine.docker(&["inspect", "hp_waiter_1"]).status.success());

    compose(&["--profile", "broken", "down", "-v", "-t", "1"]);
    assert!(names(&engine).is_empty());
}
