//! Many short lives leave nothing behind: after hundreds of create, start,
//! wait and rm cycles (and `run --rm` of a failing command) the engine holds
//! no record, run dir, runtime state, mount, cgroup or monitor, and its file
//! descriptor count stays flat.

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    RemoveContainerOptionsBuilder, StartContainerOptions, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use vmctl_tests::{require_root, Engine};

/// How many more descriptors than at the start the engine may hold: a few
/// pooled connections and lazily opened files, not one per container.
const FD_SLACK: usize = 8;

fn client(engine: &Engine) -> Docker {
    Docker::connect_with_unix(
        &engine.socket.display().to_string(),
        120,
        bollard::API_DEFAULT_VERSION,
    )
    .expect("bollard client")
}

/// One life: create, start, wait for the exit, remove (with volumes).
async fn cycle(docker: &Docker, cmd: &[&str]) -> i64 {
    let body = ContainerCreateBody {
        image: Some("hello".into()),
        cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    };
    let id = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            body,
        )
        .await
        .expect("create")
        .id;
    docker
        .start_container(&id, None::<StartContainerOptions>)
        .await
        .expect("start");
    // bollard sends the request when the stream is first polled, maybe after
    // the exit: `not-running` (not `next-exit`) answers at once then.
    let mut wait = docker.wait_container(
        &id,
        Some(
            WaitContainerOptionsBuilder::new()
                .condition("not-running")
                .build(),
        ),
    );
    let code = match wait.next().await.expect("wait answer") {
        Ok(answer) => answer.status_code,
        Err(bollard::errors::Error::DockerContainerWaitError { code, .. }) => code,
        Err(e) => panic!("wait {id}: {e}"),
    };
    drop(wait);
    docker
        .remove_container(
            &id,
            Some(RemoveContainerOptionsBuilder::new().v(true).build()),
        )
        .await
        .expect("rm");
    code
}

fn assert_clean(engine: &Engine, after: &str) {
    assert_eq!(
        engine.ok(&["ps", "-aq"]),
        "",
        "containers left after {after}"
    );
    let left = engine.leftovers();
    assert!(left.is_empty(), "left after {after}: {left:#?}");
}

#[test]
fn two_hundred_lives_leave_nothing() {
    require_root!();
    let engine = Engine::start();
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    let docker = client(&engine);
    // Warm up: lazily opened files (image store, logs) are not leaks.
    runtime.block_on(async {
        for _ in 0..5 {
            assert_eq!(cycle(&docker, &["true"]).await, 0);
        }
    });
    let fds_before = engine.fd_count();
    runtime.block_on(async {
        for n in 0..200 {
            let cmd: &[&str] = match n % 4 {
                0 => &["true"],
                1 => &["sh", "-c", "echo out; echo err >&2"],
                2 => &["sh", "-c", "exit 3"],
                _ => &["false"],
            };
            let expected = match n % 4 {
                2 => 3,
                3 => 1,
                _ => 0,
            };
            assert_eq!(cycle(&docker, cmd).await, expected, "cycle {n}");
        }
    });
    // A few through the CLI, with an anonymous volume and a tty.
    for _ in 0..5 {
        let id = engine.ok(&["create", "-v", "/data", "-t", "hello", "true"]);
        engine.ok(&["start", "-a", &id]);
        engine.ok(&["rm", "-v", &id]);
    }
    assert_clean(&engine, "200 cycles");
    assert_eq!(
        engine.ok(&["volume", "ls", "-q"]),
        "",
        "anonymous volumes left"
    );
    let fds_after = engine.fd_count();
    assert!(
        fds_after <= fds_before + FD_SLACK,
        "engine fds grew from {fds_before} to {fds_after}"
    );
}

#[test]
fn failing_run_rm_leaves_nothing() {
    require_root!();
    let engine = Engine::start();
    let code = engine
        .docker(&["run", "--rm", "hello", "no-such-program"])
        .status
        .code();
    assert_eq!(code, Some(127));
    let fds_before = engine.fd_count();
    for n in 0..50 {
        let out = engine.docker(&["run", "--rm", "hello", "no-such-program"]);
        assert_eq!(out.status.code(), Some(127), "run {n}");
    }
    assert_clean(&engine, "50 failed runs");
    let fds_after = engine.fd_count();
    assert!(
        fds_after <= fds_before + FD_SLACK,
        "engine fds grew from {fds_before} to {fds_after}"
    );
}
