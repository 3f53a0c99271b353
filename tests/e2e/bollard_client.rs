//! bollard as a second, independent client: it speaks the API from its own
//! reading of the spec, so what the docker CLI tolerates it may not.

use std::collections::HashMap;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, ExecConfig, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, EventsOptionsBuilder,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StartContainerOptions, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use vmctl_tests::{require_root, Engine};

const LONG: Duration = Duration::from_secs(60);

fn client(engine: &Engine) -> Docker {
    Docker::connect_with_unix(
        &engine.socket.display().to_string(),
        120,
        bollard::API_DEFAULT_VERSION,
    )
    .expect("bollard client")
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Runtime::new()
        .expect("tokio")
        .block_on(future)
}

fn body(cmd: &[&str]) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some("hello".into()),
        cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    }
}

/// Collects a log stream into (stdout, stderr).
async fn collect(
    mut stream: impl futures::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Unpin,
) -> (String, String) {
    let (mut out, mut err) = (String::new(), String::new());
    while let Some(item) = stream.next().await {
        match item.expect("log frame") {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                out.push_str(&String::from_utf8_lossy(&message))
            }
            LogOutput::StdErr { message } => err.push_str(&String::from_utf8_lossy(&message)),
            LogOutput::StdIn { .. } => {}
        }
    }
    (out, err)
}

#[test]
fn ping_and_version() {
    require_root!();
    let engine = Engine::start();
    block_on(async {
        let docker = client(&engine);
        assert_eq!(docker.ping().await.expect("ping"), "OK");
        let version = docker.version().await.expect("version");
        assert_eq!(version.os.as_deref(), Some("linux"));
        assert!(version.api_version.is_some());
        let docker = docker.negotiate_version().await.expect("negotiate");
        docker.info().await.expect("info");
    });
}

#[test]
fn create_start_wait_logs_inspect_list_remove() {
    require_root!();
    let engine = Engine::start();
    block_on(async {
        let docker = client(&engine);
        let mut config = body(&["sh", "-c", "echo out $GREETING; echo err >&2; exit 4"]);
        config.env = Some(vec!["GREETING=hi".into()]);
        config.labels = Some(HashMap::from([("suite".into(), "bollard".into())]));
        config.host_config = Some(HostConfig {
            memory: Some(64 << 20),
            ..Default::default()
        });
        let id = docker
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name("b1").build()),
                config,
            )
            .await
            .expect("create")
            .id;
        // Another container, unlabelled, for the filter.
        docker
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name("b2").build()),
                body(&["true"]),
            )
            .await
            .expect("create b2");
        let mut wait =
            docker.wait_container(&id, None::<bollard::query_parameters::WaitContainerOptions>);
        docker
            .start_container(&id, None::<StartContainerOptions>)
            .await
            .expect("start");
        match wait.next().await.expect("wait answer") {
            Err(bollard::errors::Error::DockerContainerWaitError { code, .. }) => {
                assert_eq!(code, 4)
            }
            other => panic!("wait: {other:?}"),
        }
        let logs = docker.logs(
            &id,
            Some(LogsOptionsBuilder::new().stdout(true).stderr(true).build()),
        );
        assert_eq!(collect(logs).await, ("out hi\n".into(), "err\n".into()));
        let only_err = docker.logs(&id, Some(LogsOptionsBuilder::new().stderr(true).build()));
        assert_eq!(collect(only_err).await, (String::new(), "err\n".into()));

        let inspect = docker
            .inspect_container(
                &id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .expect("inspect");
        assert_eq!(inspect.name.as_deref(), Some("/b1"));
        let state = inspect.state.expect("state");
        assert_eq!(state.exit_code, Some(4));
        assert_eq!(state.running, Some(false));
        assert_eq!(inspect.host_config.and_then(|h| h.memory), Some(64 << 20));
        let config = inspect.config.expect("config");
        assert!(config
            .env
            .unwrap_or_default()
            .contains(&"GREETING=hi".to_owned()));
        assert_eq!(
            config
                .labels
                .unwrap_or_default()
                .get("suite")
                .map(String::as_str),
            Some("bollard")
        );

        let filters = HashMap::from([("label", vec!["suite=bollard"])]);
        let listed = docker
            .list_containers(Some(
                ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id.as_deref(), Some(id.as_str()));
        let filters = HashMap::from([("status", vec!["exited"])]);
        let exited = docker
            .list_containers(Some(
                ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .expect("list exited");
        assert_eq!(exited.len(), 1);
        let all = docker
            .list_containers(Some(ListContainersOptionsBuilder::new().all(true).build()))
            .await
            .expect("list all");
        assert_eq!(all.len(), 2);

        for name in ["b1", "b2"] {
            docker
                .remove_container(
                    name,
                    None::<bollard::query_parameters::RemoveContainerOptions>,
                )
                .await
                .expect("remove");
        }
        let gone = docker
            .inspect_container(
                "b1",
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await;
        assert!(
            matches!(
                gone,
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404,
                    ..
                })
            ),
            "{gone:?}"
        );
    });
}

#[test]
fn exec_attached_and_exit_code() {
    require_root!();
    let engine = Engine::start();
    block_on(async {
        let docker = client(&engine);
        let id = docker
            .create_container(
                None::<bollard::query_parameters::CreateContainerOptions>,
                body(&["sleep", "100"]),
            )
            .await
            .expect("create")
            .id;
        docker
            .start_container(&id, None::<StartContainerOptions>)
            .await
            .expect("start");
        let exec = docker
            .create_exec(
                &id,
                ExecConfig {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    env: Some(vec!["X=42".into()]),
                    cmd: Some(vec![
                        "sh".into(),
                        "-c".into(),
                        "echo x=$X; echo e >&2; exit 7".into(),
                    ]),
                    ..Default::default()
                },
            )
            .await
            .expect("create exec")
            .id;
        let started = docker
            .start_exec(&exec, Some(StartExecOptions::default()))
            .await
            .expect("start exec");
        let StartExecResults::Attached { output, .. } = started else {
            panic!("exec started detached");
        };
        assert_eq!(collect(output).await, ("x=42\n".into(), "e\n".into()));
        let inspected = docker.inspect_exec(&exec).await.expect("inspect exec");
        assert_eq!(inspected.exit_code, Some(7));
        assert_eq!(inspected.running, Some(false));
        docker
            .remove_container(
                &id,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await
            .expect("rm -f");
    });
}

#[test]
fn attach_to_a_running_container() {
    require_root!();
    let engine = Engine::start();
    block_on(async {
        let docker = client(&engine);
        let mut config = body(&["sh", "-c", "read line; echo got $line; echo bye >&2"]);
        config.open_stdin = Some(true);
        config.stdin_once = Some(true);
        config.attach_stdin = Some(true);
        let id = docker
            .create_container(
                None::<bollard::query_parameters::CreateContainerOptions>,
                config,
            )
            .await
            .expect("create")
            .id;
        docker
            .start_container(&id, None::<StartContainerOptions>)
            .await
            .expect("start");
        let attached = docker
            .attach_container(
                &id,
                Some(
                    AttachContainerOptionsBuilder::new()
                        .stream(true)
                        .stdin(true)
                        .stdout(true)
                        .stderr(true)
                        .build(),
                ),
            )
            .await
            .expect("attach");
        let mut input = attached.input;
        input.write_all(b"hello\n").await.expect("write stdin");
        input.flush().await.expect("flush");
        let collected = tokio::time::timeout(LONG, collect(attached.output))
            .await
            .expect("attach output ended");
        assert_eq!(collected, ("got hello\n".into(), "bye\n".into()));
        let mut wait = docker.wait_container(
            &id,
            Some(
                WaitContainerOptionsBuilder::new()
                    .condition("not-running")
                    .build(),
            ),
        );
        assert_eq!(
            wait.next()
                .await
                .expect("wait")
                .expect("exit 0")
                .status_code,
            0
        );
        docker
            .remove_container(
                &id,
                None::<bollard::query_parameters::RemoveContainerOptions>,
            )
            .await
            .expect("rm");
    });
}

#[test]
fn events_stream_follows_a_life() {
    require_root!();
    let engine = Engine::start();
    block_on(async {
        let docker = client(&engine);
        let filters = HashMap::from([("type", vec!["container"])]);
        let mut events = docker.events(Some(EventsOptionsBuilder::new().filters(&filters).build()));
        // The stream is open once the engine has answered the request; make
        // sure by waiting for the first event after it, so start it first.
        let life = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let id = docker
                .create_container(
                    None::<bollard::query_parameters::CreateContainerOptions>,
                    body(&["true"]),
                )
                .await
                .expect("create")
                .id;
            let mut wait =
                docker.wait_container(&id, None::<bollard::query_parameters::WaitContainerOptions>);
            docker
                .start_container(&id, None::<StartContainerOptions>)
                .await
                .expect("start");
            let _ = wait.next().await;
            docker
                .remove_container(
                    &id,
                    None::<bollard::query_parameters::RemoveContainerOptions>,
                )
                .await
                .expect("rm");
            id
        };
        let seen = async {
            let mut actions = Vec::new();
            while let Some(event) = events.next().await {
                let event = event.expect("event");
                let id = event.actor.and_then(|a| a.id).unwrap_or_default();
                actions.push((id, event.action.unwrap_or_default()));
                if actions.last().is_some_and(|(_, a)| a == "destroy") {
                    break;
                }
            }
            actions
        };
        let (id, actions) = tokio::join!(life, tokio::time::timeout(LONG, seen));
        let actions = actions.expect("no destroy event");
        let mine: Vec<&str> = actions
            .iter()
            .filter(|(i, _)| *i == id)
            .map(|(_, a)| a.as_str())
            .collect();
        let order: Vec<&str> = mine
            .iter()
            .copied()
            .filter(|a| ["create", "start", "die", "destroy"].contains(a))
            .collect();
        assert_eq!(order, ["create", "start", "die", "destroy"], "{actions:?}");
    });
}

#[test]
fn bollard_pulls_pushes_commits_and_reads_disk_usage() {
    use bollard::query_parameters::{
        CommitContainerOptionsBuilder, CreateImageOptionsBuilder, PushImageOptionsBuilder,
        TagImageOptionsBuilder,
    };
    use vmctl_tests::registry::{self, Registry};
    require_root!();
    let engine = Engine::start();
    let _registry = Registry::start(&engine);
    let hello = format!(
        "docker-archive:{}",
        vmctl_tests::builtin_images().join("hello.tar").display()
    );
    registry::push(&engine, &hello, "viabollard:1", &["--format", "oci"]);
    let docker = client(&engine);
    block_on(async {
        // Pull: every progress item parses; the last status names the image.
        let options = CreateImageOptionsBuilder::new()
            .from_image(&registry::image("viabollard"))
            .tag("1")
            .build();
        let mut statuses = Vec::new();
        let mut stream = docker.create_image(Some(options), None, None);
        while let Some(item) = stream.next().await {
            let info = item.expect("a progress item");
            assert!(info.error_detail.is_none(), "{info:?}");
            statuses.extend(info.status);
        }
        assert!(
            statuses
                .iter()
                .any(|s| s == "Status: Downloaded newer image for 127.0.0.1:5000/viabollard:1"),
            "{statuses:?}"
        );
        // An unknown tag is an error of the request itself (404).
        let options = CreateImageOptionsBuilder::new()
            .from_image(&registry::image("viabollard"))
            .tag("nope")
            .build();
        let first = docker
            .create_image(Some(options), None, None)
            .next()
            .await
            .expect("an answer");
        match first {
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code,
                message,
            }) => {
                assert_eq!(status_code, 404);
                assert!(message.contains("manifest unknown"), "{message}");
            }
            other => panic!("expected a 404, got {other:?}"),
        }

        // Commit a container, tag, push; disk usage sees both images.
        let created = docker
            .create_container(
                None::<bollard::query_parameters::CreateContainerOptions>,
                body(&["sh", "-c", "echo b > /b"]),
            )
            .await
            .expect("create");
        docker
            .start_container(&created.id, None::<StartContainerOptions>)
            .await
            .expect("start");
        let mut wait = docker.wait_container(
            &created.id,
            None::<bollard::query_parameters::WaitContainerOptions>,
        );
        while let Some(item) = wait.next().await {
            item.expect("wait");
        }
        let commit = CommitContainerOptionsBuilder::new()
            .container(&created.id)
            .repo("committed")
            .tag("bollard")
            .build();
        let id = docker
            .commit_container(commit, bollard::models::ContainerConfig::default())
            .await
            .expect("commit");
        assert!(id.id.starts_with("sha256:"), "{id:?}");
        let tag = TagImageOptionsBuilder::new()
            .repo(&registry::image("committed"))
            .tag("bollard")
            .build();
        docker
            .tag_image("committed:bollard", Some(tag))
            .await
            .expect("tag");
        let push = PushImageOptionsBuilder::new().tag("bollard").build();
        let mut stream = docker.push_image(&registry::image("committed"), Some(push), None);
        let mut digest = None;
        while let Some(item) = stream.next().await {
            let info = item.expect("a push progress item");
            assert!(info.error_detail.is_none(), "{info:?}");
            if let Some(status) = info.status.filter(|s| s.contains("digest: sha256:")) {
                digest = Some(status);
            }
        }
        assert!(digest.is_some(), "push reported no digest");
        let usage = docker
            .df(None::<bollard::query_parameters::DataUsageOptions>)
            .await
            .expect("df");
        let images = usage.images.expect("images");
        assert!(images.len() >= 3, "{images:?}");
        assert!(usage.layers_size.unwrap_or_default() > 0);
    });
}

#[test]
fn attach_with_logs_and_without_stream_answers_the_output_so_far() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&[
        "run",
        "--name",
        "done",
        "hello",
        "sh",
        "-c",
        "echo out; echo err >&2",
    ]);
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "live",
        "hello",
        "sh",
        "-c",
        "echo up; sleep 1000",
    ]);
    assert!(vmctl_tests::eventually(LONG, || engine
        .ok(&["logs", "live"])
        == "up"));
    let docker = client(&engine);
    block_on(async {
        let attach = |logs: bool| {
            AttachContainerOptionsBuilder::new()
                .logs(logs)
                .stream(false)
                .stdout(true)
                .stderr(true)
                .build()
        };
        // An exited container: its output, then the end (dockerd's
        // answer; the SDKs' `attach(stream=False, logs=True)`).
        for (name, logs, want) in [
            ("done", true, ("out\n", "err\n")),
            ("live", true, ("up\n", "")),
            ("done", false, ("", "")),
        ] {
            let attached = docker
                .attach_container(name, Some(attach(logs)))
                .await
                .expect("attach");
            let got = tokio::time::timeout(LONG, collect(attached.output))
                .await
                .unwrap_or_else(|_| panic!("attach to {name} (logs={logs}, stream=0) did not end"));
            assert_eq!((got.0.as_str(), got.1.as_str()), want, "{name} logs={logs}");
        }
    });
    // The live container was only read, not stopped.
    assert_eq!(
        engine.ok(&["inspect", "-f", "{{.State.Running}}", "live"]),
        "true"
    );
    engine.ok(&["rm", "-f", "live", "done"]);
}
