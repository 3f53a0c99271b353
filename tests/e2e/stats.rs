//! `docker stats` and `docker update`: a container's use as the CLI and
//! bollard read it, and limits changed while it runs, seen in its cgroup
//! files, in inspect, and across a stop and start.

use std::path::PathBuf;
use std::time::Duration;

use bollard::query_parameters::StatsOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;
use vmctl_tests::{eventually, require_root, Engine};

const LONG: Duration = Duration::from_secs(60);

fn id_of(engine: &Engine, name: &str) -> String {
    engine.ok(&["inspect", "-f", "{{.Id}}", name])
}

/// The first of `files` found in the container's cgroup directories (one
/// per hierarchy on v1, one in all on v2), trimmed.
fn cgroup_file(engine: &Engine, name: &str, files: &[&str]) -> Option<String> {
    let id = id_of(engine, name);
    let dirs: Vec<PathBuf> = engine
        .cgroups()
        .into_iter()
        .filter(|d| d.ends_with(&id))
        .collect();
    files.iter().find_map(|file| {
        dirs.iter()
            .find_map(|d| std::fs::read_to_string(d.join(file)).ok())
            .map(|s| s.trim().to_owned())
    })
}

fn memory_limit(engine: &Engine, name: &str) -> String {
    cgroup_file(engine, name, &["memory.limit_in_bytes", "memory.max"]).unwrap_or_default()
}

/// The CFS quota in µs (`-1`/`max` when none).
fn cpu_quota(engine: &Engine, name: &str) -> String {
    if let Some(v1) = cgroup_file(engine, name, &["cpu.cfs_quota_us"]) {
        return v1;
    }
    cgroup_file(engine, name, &["cpu.max"])
        .and_then(|v| v.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

fn pids_max(engine: &Engine, name: &str) -> String {
    cgroup_file(engine, name, &["pids.max"]).unwrap_or_default()
}

/// `docker stats --no-stream` of one container with a Go template.
fn stats_row(engine: &Engine, name: &str, format: &str) -> String {
    engine.ok(&["stats", "--no-stream", "--format", format, name])
}

#[test]
fn stats_no_stream_shows_cpu_memory_pids_and_network() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-m",
        "64m",
        "hello",
        "sh",
        "-c",
        "sleep 1000 & sleep 1000 & wait",
    ]);
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "busy",
        "hello",
        "sh",
        "-c",
        "while :; do :; done",
    ]);
    // Traffic in the container's namespace: pings to the bridge.
    let gateway = engine.ok(&["inspect", "-f", "{{.NetworkSettings.Gateway}}", "web"]);
    let _ = engine.docker(&["exec", "web", "ping", "-c", "2", "-W", "1", &gateway]);
    assert!(eventually(LONG, || {
        stats_row(&engine, "web", "{{.PIDs}}") == "3"
    }));
    let row = stats_row(
        &engine,
        "web",
        "{{.Name}}|{{.CPUPerc}}|{{.MemUsage}}|{{.PIDs}}|{{.NetIO}}",
    );
    let cells: Vec<&str> = row.split('|').collect();
    assert_eq!(cells.len(), 5, "{row}");
    assert_eq!(cells[0], "web");
    assert!(cells[1].ends_with('%'), "{row}");
    assert!(cells[2].ends_with("/ 64MiB"), "limit is --memory: {row}");
    assert!(!cells[2].starts_with("0B"), "memory is used: {row}");
    assert_eq!(cells[3], "3", "sh and two sleeps: {row}");
    assert_ne!(cells[4], "0B / 0B", "traffic was counted: {row}");

    // A busy loop uses CPU.
    assert!(eventually(LONG, || {
        let cpu = stats_row(&engine, "busy", "{{.CPUPerc}}");
        cpu.trim_end_matches('%')
            .parse::<f64>()
            .is_ok_and(|p| p > 0.0)
    }));

    // The CLI's JSON row.
    let json: serde_json::Value =
        serde_json::from_str(&stats_row(&engine, "busy", "{{json .}}")).expect("json row");
    for key in [
        "BlockIO",
        "CPUPerc",
        "Container",
        "ID",
        "MemPerc",
        "MemUsage",
        "Name",
        "NetIO",
        "PIDs",
    ] {
        assert!(json.get(key).is_some(), "no {key} in {json}");
    }
    assert_eq!(json["Name"], "busy");

    // A stopped container: dockerd's empty row.
    engine.ok(&["rm", "-f", "busy"]);
    engine.ok(&["stop", "-t", "1", "web"]);
    assert_eq!(
        stats_row(&engine, "web", "{{.CPUPerc}} {{.MemUsage}} {{.PIDs}}"),
        "0.00% 0B / 0B 0"
    );
}

#[test]
fn stats_stream_follows_the_container_until_it_stops() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&[
        "run", "-d", "--name", "streamed", "-m", "32m", "hello", "sleep", "1000",
    ]);
    let docker = Docker::connect_with_unix(
        &engine.socket.display().to_string(),
        120,
        bollard::API_DEFAULT_VERSION,
    )
    .expect("bollard client");
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    runtime.block_on(async {
        // One document, no priming, as one-shot asks.
        let mut once = docker.stats(
            "streamed",
            Some(
                StatsOptionsBuilder::default()
                    .stream(false)
                    .one_shot(true)
                    .build(),
            ),
        );
        let first = once.next().await.expect("a document").expect("valid stats");
        assert!(once.next().await.is_none(), "stream=false sends one");
        assert_eq!(first.name.as_deref(), Some("/streamed"));
        assert_eq!(
            first.memory_stats.as_ref().and_then(|m| m.limit),
            Some(32 << 20)
        );

        let mut stream = docker.stats(
            "streamed",
            Some(StatsOptionsBuilder::default().stream(true).build()),
        );
        let mut reads = Vec::new();
        for _ in 0..3 {
            let stats = tokio::time::timeout(LONG, stream.next())
                .await
                .expect("a document each second")
                .expect("stream open")
                .expect("valid stats");
            assert!(stats.pids_stats.and_then(|p| p.current).unwrap_or(0) >= 1);
            let cpu = stats.cpu_stats.expect("cpu_stats");
            assert!(cpu.system_cpu_usage.unwrap_or(0) > 0);
            assert!(cpu.online_cpus.unwrap_or(0) > 0);
            reads.push(stats.read.expect("read"));
        }
        assert!(reads.windows(2).all(|w| w[0] < w[1]), "{reads:?}");

        let stopper = {
            let socket = engine.docker_host();
            std::thread::spawn(move || {
                std::process::Command::new("docker")
                    .args(["-H", &socket, "stop", "-t", "1", "streamed"])
                    .output()
                    .expect("docker stop")
            })
        };
        let ended = tokio::time::timeout(LONG, async {
            while let Some(item) = stream.next().await {
                item.expect("valid stats");
            }
        })
        .await;
        assert!(ended.is_ok(), "the stream ends when the container stops");
        assert!(stopper.join().expect("stop").status.success());

        // Not running: one empty document, stream or not.
        let mut stopped = docker.stats(
            "streamed",
            Some(StatsOptionsBuilder::default().stream(true).build()),
        );
        let empty = stopped.next().await.expect("a document").expect("valid");
        assert_eq!(empty.name.as_deref(), Some("/streamed"));
        assert!(empty.memory_stats.and_then(|m| m.usage).is_none());
        assert!(stopped.next().await.is_none());
    });
}

#[test]
fn update_changes_the_live_cgroup_inspect_and_the_next_start() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&["run", "-d", "--name", "upd", "hello", "sleep", "1000"]);
    engine.ok(&[
        "update",
        "--memory",
        "64m",
        "--memory-swap",
        "128m",
        "--cpus",
        "0.5",
        "--pids-limit",
        "50",
        "upd",
    ]);
    let check = |engine: &Engine| {
        assert_eq!(memory_limit(engine, "upd"), "67108864");
        assert_eq!(cpu_quota(engine, "upd"), "50000");
        assert_eq!(pids_max(engine, "upd"), "50");
        assert_eq!(
            engine.ok(&[
                "inspect",
                "-f",
                "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}}",
                "upd"
            ]),
            "67108864 134217728 500000000 50"
        );
    };
    check(&engine);
    // `docker stats` reports the new limit.
    assert!(stats_row(&engine, "upd", "{{.MemUsage}}").ends_with("/ 64MiB"));

    engine.ok(&["stop", "-t", "1", "upd"]);
    engine.ok(&["start", "upd"]);
    check(&engine);

    // A paused container is updated too.
    engine.ok(&["pause", "upd"]);
    engine.ok(&["update", "--pids-limit", "60", "upd"]);
    assert_eq!(pids_max(&engine, "upd"), "60");
    engine.ok(&["unpause", "upd"]);
    // -1 lifts the limit.
    engine.ok(&["update", "--pids-limit", "-1", "upd"]);
    assert_eq!(pids_max(&engine, "upd"), "max");

    // A stopped container: the record only, used by the next start.
    engine.ok(&["stop", "-t", "1", "upd"]);
    engine.ok(&["update", "--cpus", "1.5", "upd"]);
    engine.ok(&["start", "upd"]);
    assert_eq!(cpu_quota(&engine, "upd"), "150000");

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let until = (now + 1).to_string();
    let events = engine.ok(&[
        "events",
        "--since",
        "1",
        "--until",
        &until,
        "--filter",
        "event=update",
        "--format",
        "{{.Action}} {{.Actor.Attributes.name}}",
    ]);
    assert!(
        events.lines().count() >= 4 && events.lines().all(|l| l == "update upd"),
        "{events}"
    );
}

#[test]
fn update_refuses_with_dockerds_words_and_changes_nothing() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "upd",
        "--pids-limit",
        "40",
        "hello",
        "sleep",
        "1000",
    ]);
    engine.ok(&[
        "run", "-d", "--rm", "--name", "rmd", "hello", "sleep", "1000",
    ]);
    let memory_before = memory_limit(&engine, "upd");
    let refused = |args: &[&str], needle: &str| {
        let out = engine.docker(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    };
    refused(
        &["update", "--memory", "64m", "upd"],
        "Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time",
    );
    refused(
        &["update", "--memory", "1m", "--memory-swap", "2m", "upd"],
        "Minimum memory limit allowed is 6MB",
    );
    refused(
        &["update", "--memory", "64m", "--memory-swap", "32m", "upd"],
        "Minimum memoryswap limit should be larger than memory limit, see usage",
    );
    refused(
        &["update", "--cpus", "1", "--cpu-quota", "50000", "upd"],
        "Conflicting options: Nano CPUs and CPU Quota cannot both be set",
    );
    refused(
        &[
            "update",
            "--cpuset-cpus",
            "0-a",
            "--pids-limit",
            "10",
            "upd",
        ],
        "Invalid value 0-a for cpuset cpus: invalid format: 0-a",
    );
    refused(
        &["update", "--restart", "always", "rmd"],
        "Restart policy cannot be updated because AutoRemove is enabled for the container",
    );
    refused(
        &["update", "--memory", "64m", "nosuch"],
        "No such container: nosuch",
    );
    assert_eq!(memory_limit(&engine, "upd"), memory_before);
    assert_eq!(pids_max(&engine, "upd"), "40");
    assert_eq!(
        engine.ok(&[
            "inspect",
            "-f",
            "{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}}",
            "upd"
        ]),
        "0 40"
    );
    assert_eq!(
        engine.ok(&["inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", "rmd"]),
        "no"
    );
}

#[test]
fn a_restart_policy_added_by_update_restarts_the_container() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "hello",
        "sh",
        "-c",
        "while [ ! -e /go ]; do sleep 0.1; done; exit 3",
    ]);
    engine.ok(&["update", "--restart", "on-failure:2", "flaky"]);
    engine.ok(&["exec", "flaky", "touch", "/go"]);
    assert!(
        eventually(LONG, || {
            engine.ok(&[
                "inspect",
                "-f",
                "{{.RestartCount}} {{.State.Status}}",
                "flaky",
            ]) == "2 exited"
        }),
        "{}",
        engine.ok(&[
            "inspect",
            "-f",
            "{{.RestartCount}} {{.State.Status}}",
            "flaky"
        ])
    );
    assert_eq!(
        engine.ok(&[
            "inspect",
            "-f",
            "{{.HostConfig.RestartPolicy.Name}}:{{.HostConfig.RestartPolicy.MaximumRetryCount}}",
            "flaky"
        ]),
        "on-failure:2"
    );
}

#[test]
fn many_stats_streams_neither_hang_the_engine_nor_leave_anything_behind() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&["run", "-d", "--name", "watched", "hello", "sleep", "1000"]);
    let fds_before = engine.fd_count();
    let docker = Docker::connect_with_unix(
        &engine.socket.display().to_string(),
        120,
        bollard::API_DEFAULT_VERSION,
    )
    .expect("bollard client");
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    runtime.block_on(async {
        let mut streams: Vec<_> = (0..200)
            .map(|_| {
                docker
                    .stats(
                        "watched",
                        Some(StatsOptionsBuilder::default().stream(true).build()),
                    )
                    .boxed()
            })
            .collect();
        for stream in &mut streams {
            let first = tokio::time::timeout(LONG, stream.next())
                .await
                .expect("every stream gets a document")
                .expect("open")
                .expect("valid stats");
            assert_eq!(first.name.as_deref(), Some("/watched"));
        }
        // The engine still answers everybody else.
        let ps = std::process::Command::new("docker")
            .args(["-H", &engine.docker_host(), "ps", "--format", "{{.Names}}"])
            .output()
            .expect("docker ps");
        assert_eq!(String::from_utf8_lossy(&ps.stdout).trim(), "watched");
        drop(streams);
    });
    drop(docker);
    assert!(
        eventually(LONG, || engine.fd_count() <= fds_before + 2),
        "{} fds open, {} before",
        engine.fd_count(),
        fds_before
    );
}

/// The VM mounts cgroup v2 only: the same rows and live limits there.
#[test]
fn vm_stats_and_update_on_cgroup_v2() {
    vmctl_tests::require_vm!();
    let home = vmctl_tests::vm::VmHome::new();
    home.ok(&[
        "machine", "init", "--cpus", "2", "--memory", "1024", "--disk", "2",
    ]);
    home.ok(&["machine", "start"]);
    let host = home.docker_host();
    let docker = |args: &[&str]| home.docker_ok(&host, args);
    docker(&[
        "run",
        "-d",
        "--name",
        "web",
        "-m",
        "64m",
        "hello",
        "sh",
        "-c",
        "sleep 1000 & sleep 1000 & while :; do :; done",
    ]);
    let id = docker(&["inspect", "-f", "{{.Id}}", "web"]);
    let row = || {
        docker(&[
            "stats",
            "--no-stream",
            "--format",
            "{{.CPUPerc}}|{{.MemUsage}}|{{.PIDs}}",
            "web",
        ])
    };
    assert!(
        eventually(LONG, || {
            let row = row();
            let cells: Vec<&str> = row.split('|').collect();
            cells.len() == 3
                && cells[0]
                    .trim_end_matches('%')
                    .parse::<f64>()
                    .is_ok_and(|p| p > 0.0)
                && cells[1].ends_with("/ 64MiB")
                && cells[2] == "3"
        }),
        "{}",
        row()
    );
    docker(&[
        "update",
        "--memory",
        "96m",
        "--memory-swap",
        "192m",
        "--cpus",
        "0.5",
        "--pids-limit",
        "50",
        "web",
    ]);
    let cgroup_file = |file: &str| {
        let path = format!("/sys/fs/cgroup/vmctl/{id}/{file}");
        let out = home.vmctl(&["machine", "ssh", "--", "cat", &path]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(cgroup_file("memory.max"), "100663296");
    assert_eq!(cgroup_file("cpu.max"), "50000 100000");
    assert_eq!(cgroup_file("pids.max"), "50");
    assert!(row().contains("/ 96MiB"), "{}", row());
    docker(&["stop", "-t", "1", "web"]);
    docker(&["start", "web"]);
    assert_eq!(cgroup_file("memory.max"), "100663296");
    assert_eq!(cgroup_file("pids.max"), "50");
    docker(&["rm", "-f", "web"]);
    home.ok(&["machine", "rm", "--force"]);
}
