//! Debian's `docker-compose` 1.29 (the Python one, docker-py underneath,
//! speaking the API itself) against an engine of the harness.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::Engine;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Why docker-compose 1.29 cannot be used here, if it cannot.
pub fn missing() -> Option<String> {
    let out = Command::new("docker-compose")
        .args(["version", "--short"])
        .output();
    match out {
        Err(_) => Some("docker-compose is not installed (apt-get install docker-compose)".into()),
        Ok(out) if !text(&out.stdout).starts_with("1.") => Some(format!(
            "docker-compose is not 1.x (the Python one that builds through the API): {}",
            text(&out.stdout).trim()
        )),
        Ok(_) => None,
    }
}

/// `docker-compose -p NAME ARGS` in `project` (builds through the API, not
/// the CLI).
pub fn run(engine: &Engine, project: &Path, name: &str, args: &[&str]) -> Output {
    let config = engine.dir.path().join("docker-config");
    run_at(&engine.docker_host(), &config, project, name, args)
}

/// [`run`] against any engine: `docker_host` as `DOCKER_HOST` gives it (a
/// VM's socket), with the client configuration in `docker_config`.
pub fn run_at(
    docker_host: &str,
    docker_config: &Path,
    project: &Path,
    name: &str,
    args: &[&str],
) -> Output {
    Command::new("docker-compose")
        .args(["--ansi", "never", "-p", name])
        .args(args)
        .current_dir(project)
        .env("DOCKER_HOST", docker_host)
        .env("DOCKER_CONFIG", docker_config)
        .env("COMPOSE_DOCKER_CLI_BUILD", "0")
        .env("DOCKER_BUILDKIT", "0")
        .stdin(Stdio::null())
        .output()
        .expect("docker-compose")
}

/// [`run`], which must succeed; answers its stdout and stderr together.
pub fn ok(engine: &Engine, project: &Path, name: &str, args: &[&str]) -> String {
    let out = run(engine, project, name, args);
    assert!(
        out.status.success(),
        "docker-compose {args:?} failed:\nstdout: {}\nstderr: {}\nengine log:\n{}",
        text(&out.stdout),
        text(&out.stderr),
        crate::tail(&engine.log(), 30)
    );
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}
