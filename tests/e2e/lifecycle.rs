//! Detached containers: logs, exec, stop, restart, pause, rm, restart
//! policies, and live restore across an engine kill.

use std::time::Duration;

use vmctl_tests::{eventually, require_root, Engine};

const LONG: Duration = Duration::from_secs(60);

#[test]
fn detached_logs_exec_stop_rm() {
    require_root!();
    let engine = Engine::start();
    let id = engine.ok(&["run", "-d", "--name", "web", "hello"]);
    assert_eq!(id.len(), 64);
    let page = engine.ok(&["exec", "web", "wget", "-qO-", "http://127.0.0.1/"]);
    assert!(page.contains("vmctl"), "{page}");
    // httpd logs the request on stderr.
    assert!(eventually(LONG, || {
        let out = engine.docker(&["logs", "web"]);
        String::from_utf8_lossy(&out.stderr).contains("response:200")
    }));
    assert_eq!(
        engine.ok(&["inspect", "-f", "{{.State.Running}}", "web"]),
        "true"
    );
    engine.ok(&["stop", "-t", "1", "web"]);
    assert_eq!(
        engine.ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}}",
            "web"
        ]),
        "exited 137"
    );
    engine.ok(&["rm", "web"]);
    assert!(!engine.docker(&["inspect", "web"]).status.success());
}

#[test]
fn logs_follow_until_exit() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "count",
        "hello",
        "sh",
        "-c",
        "for i in 1 2 3; do echo line $i; sleep 0.2; done",
    ]);
    let out = engine.ok(&["logs", "-f", "count"]);
    assert_eq!(out, "line 1\nline 2\nline 3");
    assert_eq!(engine.ok(&["logs", "--tail", "1", "count"]), "line 3");
    let stamped = engine.ok(&["logs", "-t", "count"]);
    assert!(
        stamped
            .lines()
            .all(|l| l.contains('T') && l.contains("Z line")),
        "{stamped}"
    );
}

#[test]
fn exec_with_a_pty_and_exit_code() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&["run", "-d", "--name", "box", "hello", "sleep", "1000"]);
    let out = std::process::Command::new("script")
        .args([
            "-qec",
            "docker exec -it box sh -c 'tty; exit 5'",
            "/dev/null",
        ])
        .env("DOCKER_HOST", engine.docker_host())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script");
    assert!(String::from_utf8_lossy(&out.stdout).contains("/dev/pts/"));
    let code = engine
        .docker(&["exec", "box", "sh", "-c", "exit 5"])
        .status
        .code();
    assert_eq!(code, Some(5));
}

#[test]
fn pause_freezes_and_unpause_thaws() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&["run", "-d", "--name", "paused", "hello", "sleep", "1000"]);
    engine.ok(&["pause", "paused"]);
    assert_eq!(
        engine.ok(&["inspect", "-f", "{{.State.Status}}", "paused"]),
        "paused"
    );
    assert!(!engine.docker(&["exec", "paused", "true"]).status.success());
    engine.ok(&["unpause", "paused"]);
    assert_eq!(
        engine.ok(&["inspect", "-f", "{{.State.Status}}", "paused"]),
        "running"
    );
    engine.ok(&["exec", "paused", "true"]);
}

#[test]
fn restart_policy_on_failure_counts_retries() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "hello",
        "sh",
        "-c",
        "exit 1",
    ]);
    assert!(eventually(LONG, || {
        engine.ok(&[
            "inspect",
            "-f",
            "{{.RestartCount}} {{.State.Status}}",
            "flaky",
        ]) == "2 exited"
    }));
}

#[test]
fn restart_policy_always_survives_a_kill_of_the_init() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "svc",
        "--restart",
        "always",
        "hello",
        "sleep",
        "1000",
    ]);
    let pid = engine.ok(&["inspect", "-f", "{{.State.Pid}}", "svc"]);
    // SAFETY: kill(2) of the container's init, a process this test started.
    unsafe { libc::kill(pid.parse().unwrap(), libc::SIGKILL) };
    assert!(eventually(LONG, || {
        engine.ok(&[
            "inspect",
            "-f",
            "{{.RestartCount}} {{.State.Running}}",
            "svc",
        ]) == "1 true"
    }));
    // A user stop is final.
    engine.ok(&["stop", "-t", "0", "svc"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        engine.ok(&["inspect", "-f", "{{.State.Running}}", "svc"]),
        "false"
    );
}

#[test]
fn live_restore_after_engine_kill() {
    require_root!();
    let mut engine = Engine::start();
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "ticker",
        "hello",
        "sh",
        "-c",
        "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done",
    ]);
    let pid = engine.ok(&["inspect", "-f", "{{.State.Pid}}", "ticker"]);
    engine.kill_engine();
    engine.spawn_engine();
    assert_eq!(engine.ok(&["ps", "--format", "{{.Names}}"]), "ticker");
    assert_eq!(
        engine.ok(&["inspect", "-f", "{{.State.Pid}}", "ticker"]),
        pid
    );
    assert_eq!(engine.ok(&["exec", "ticker", "echo", "alive"]), "alive");
    let before = engine.ok(&["logs", "ticker"]).lines().count();
    assert!(eventually(LONG, || engine
        .ok(&["logs", "ticker"])
        .lines()
        .count()
        > before));
    engine.ok(&["stop", "-t", "1", "ticker"]);
    assert_eq!(
        engine.ok(&["inspect", "-f", "{{.State.Running}}", "ticker"]),
        "false"
    );
}

#[test]
fn rename_and_name_conflicts() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&["create", "--name", "first", "hello"]);
    let out = engine.docker(&["create", "--name", "first", "hello"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is already in use"));
    engine.ok(&["rename", "first", "second"]);
    engine.ok(&["create", "--name", "first", "hello"]);
    assert_eq!(
        engine
            .ok(&["ps", "-a", "--format", "{{.Names}}"])
            .lines()
            .count(),
        2
    );
}

#[test]
fn events_replay_since_and_stop_at_until() {
    require_root!();
    let engine = Engine::start();
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1;
    engine.ok(&["run", "--rm", "--name", "evt", "hello", "true"]);
    // A second ahead: the stream ends there by itself.
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    let out = engine.ok(&[
        "events",
        "--since",
        &start.to_string(),
        "--until",
        &until.to_string(),
        "--filter",
        "container=evt",
        "--format",
        "{{.Action}}",
    ]);
    let actions: Vec<&str> = out.lines().collect();
    for wanted in ["create", "start", "die", "destroy"] {
        assert!(actions.contains(&wanted), "{actions:?}");
    }
}

#[test]
fn kill_returns_once_the_container_has_exited() {
    require_root!();
    let engine = Engine::start();
    // As dockerd: after `docker kill` (SIGKILL) the container reads
    // exited, so `rm` without force, `commit` and `inspect` right after it
    // see it stopped — several times, to catch a race.
    for i in 0..5 {
        let name = format!("killed{i}");
        engine.ok(&["run", "-d", "--name", &name, "hello", "sleep", "1000"]);
        engine.ok(&["kill", &name]);
        assert_eq!(
            engine.ok(&[
                "inspect",
                "-f",
                "{{.State.Running}} {{.State.ExitCode}}",
                &name
            ]),
            "false 137"
        );
        engine.ok(&["commit", &name, &format!("killed:{i}")]);
        engine.ok(&["rm", &name]);
    }
    // A signal other than KILL returns at once, as dockerd's does.
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "hup",
        "hello",
        "sh",
        "-c",
        "trap '' HUP; sleep 1000",
    ]);
    engine.ok(&["kill", "-s", "HUP", "hup"]);
    assert_eq!(
        engine.ok(&["inspect", "-f", "{{.State.Running}}", "hup"]),
        "true"
    );
    engine.ok(&["rm", "-f", "hup"]);
}

#[test]
fn export_writes_the_root_filesystem_and_never_follows_links() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&[
        "run",
        "--name",
        "ex",
        "hello",
        "sh",
        "-c",
        "echo hi > /hi; rm /bin/ls; ln -s / /rootlink; mkdir /d; ln -s /proc/1/root /d/p",
    ]);
    let tar = engine.dir.path().join("ex.tar");
    engine.ok(&["export", "-o", &tar.display().to_string(), "ex"]);
    let mut archive = tar::Archive::new(std::fs::File::open(&tar).expect("export"));
    let mut names = std::collections::BTreeMap::new();
    for entry in archive.entries().expect("a tar") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("name").display().to_string();
        let mut bytes = Vec::new();
        if entry.header().entry_type().is_file() {
            std::io::Read::read_to_end(&mut entry, &mut bytes).expect("data");
        }
        let data = String::from_utf8_lossy(&bytes).into_owned();
        names.insert(
            name.trim_end_matches('/').to_owned(),
            (entry.header().entry_type(), data),
        );
    }
    assert_eq!(names.get("hi").map(|e| e.1.as_str()), Some("hi\n"));
    assert!(
        names.contains_key("bin/sh") && !names.contains_key("bin/ls"),
        "the image and the change, merged"
    );
    assert_eq!(names["rootlink"].0, tar::EntryType::Symlink);
    assert_eq!(names["d/p"].0, tar::EntryType::Symlink);
    assert!(
        !names
            .keys()
            .any(|n| n.starts_with("rootlink/") || n.starts_with("d/p/")),
        "export walked through a link"
    );
    // A running container exports too; nothing stays mounted or made.
    engine.ok(&["run", "-d", "--name", "live", "hello", "sleep", "1000"]);
    let out = engine
        .docker_cmd()
        .args(["export", "live"])
        .output()
        .expect("export");
    assert!(out.status.success() && out.stdout.len() > 10_000);
    for name in ["ex", "live"] {
        let id = engine.ok(&["inspect", "-f", "{{.Id}}", name]);
        let dir = engine.root().join("containers").join(&id);
        let left: Vec<_> = std::fs::read_dir(&dir)
            .expect("container dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("export-"))
            .collect();
        assert!(
            left.is_empty(),
            "an export's scratch was left in {}",
            dir.display()
        );
    }
    let missing = engine
        .docker_cmd()
        .args(["export", "nosuch"])
        .output()
        .expect("export");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("No such container: nosuch"));
    engine.ok(&["rm", "-f", "live", "ex"]);
}

#[test]
fn import_makes_an_image_of_an_exported_filesystem_and_refuses_hostile_tars() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&["run", "--name", "src", "hello", "sh", "-c", "echo hi > /hi"]);
    let tar = engine.dir.path().join("src.tar");
    engine.ok(&["export", "-o", &tar.display().to_string(), "src"]);
    let id = engine.ok(&[
        "import",
        "--change",
        "CMD [\"cat\", \"/hi\"]",
        "--change",
        "ENV WHO=imported",
        "-m",
        "from src",
        &tar.display().to_string(),
        "imported:1",
    ]);
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(engine.ok(&["run", "--rm", "imported:1"]), "hi");
    assert_eq!(
        engine.ok(&[
            "inspect",
            "-f",
            "{{.Comment}}|{{json .Config.Env}}|{{len .RootFS.Layers}}",
            "imported:1"
        ]),
        "from src|[\"WHO=imported\"]|1"
    );
    // Hostile tars: a device node, a path out of the layer. Each is
    // refused and leaves no image, layer or blob.
    let images_before = engine.ok(&["images", "-a", "-q"]);
    let store = engine.root().join("image");
    let count = |sub: &str| std::fs::read_dir(store.join(sub)).map_or(0, |d| d.count());
    let (layers, blobs) = (count("layers"), count("blobs/sha256"));
    for (name, kind, path) in [
        ("device", tar::EntryType::Char, "dev/mem"),
        ("climb", tar::EntryType::Regular, "../../../../escape"),
    ] {
        let file = engine.dir.path().join(format!("{name}.tar"));
        let mut builder = tar::Builder::new(std::fs::File::create(&file).expect("tar"));
        let mut header = tar::Header::new_ustar();
        header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_entry_type(kind);
        header.set_mode(0o644);
        header.set_size(0);
        if kind == tar::EntryType::Char {
            header.set_device_major(1).expect("major");
            header.set_device_minor(1).expect("minor");
        }
        header.set_cksum();
        builder.append(&header, std::io::empty()).expect("entry");
        builder.finish().expect("tar");
        let out = engine
            .docker_cmd()
            .args([
                "import",
                &file.display().to_string(),
                &format!("hostile:{name}"),
            ])
            .output()
            .expect("docker import");
        assert!(!out.status.success(), "{name}: imported");
        assert!(!String::from_utf8_lossy(&out.stderr).trim().is_empty());
    }
    assert_eq!(engine.ok(&["images", "-a", "-q"]), images_before);
    assert_eq!((count("layers"), count("blobs/sha256")), (layers, blobs));
    assert!(!engine.dir.path().join("escape").exists());
    let url = engine
        .docker_cmd()
        .args(["import", "http://example.invalid/x.tar"])
        .output()
        .expect("import");
    assert!(String::from_utf8_lossy(&url.stderr).contains("not supported"));
}
