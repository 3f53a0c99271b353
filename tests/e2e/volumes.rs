//! Volumes and mounts: named volumes outlive containers, anonymous ones go
//! with `rm -v` and `--rm`, binds honour `ro`, tmpfs mounts, `--volumes-from`,
//! copy-up from the image on first use, and `docker volume` verbs.

use vmctl_tests::{require_root, Engine};

#[test]
fn named_volume_persists_across_containers() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&[
        "run",
        "--rm",
        "-v",
        "data:/data",
        "hello",
        "sh",
        "-c",
        "echo kept > /data/f",
    ]);
    assert_eq!(engine.ok(&["volume", "ls", "-q"]), "data");
    assert_eq!(
        engine.ok(&["run", "--rm", "-v", "data:/data", "hello", "cat", "/data/f"]),
        "kept"
    );
    // --rm does not remove named volumes.
    assert_eq!(engine.ok(&["volume", "ls", "-q"]), "data");
}

#[test]
fn anonymous_volumes_go_with_rm_v_and_auto_remove() {
    require_root!();
    let engine = Engine::start();
    let id = engine.ok(&["create", "-v", "/data", "hello", "true"]);
    let volume = engine.ok(&["volume", "ls", "-q"]);
    assert_eq!(volume.len(), 64, "{volume}");
    assert_eq!(
        engine.ok(&[
            "inspect",
            "-f",
            "{{range .Mounts}}{{.Name}} {{.Destination}}{{end}}",
            &id
        ]),
        format!("{volume} /data")
    );
    engine.ok(&["rm", "-v", &id]);
    assert_eq!(engine.ok(&["volume", "ls", "-q"]), "");

    // Plain rm keeps it (like Docker).
    let id = engine.ok(&["create", "-v", "/data", "hello", "true"]);
    engine.ok(&["rm", &id]);
    assert_eq!(engine.ok(&["volume", "ls", "-q"]).lines().count(), 1);
    engine.ok(&["volume", "prune", "-f", "-a"]);
    assert_eq!(engine.ok(&["volume", "ls", "-q"]), "");

    engine.ok(&["run", "--rm", "-v", "/data", "hello", "touch", "/data/x"]);
    assert_eq!(
        engine.ok(&["volume", "ls", "-q"]),
        "",
        "--rm kept the anonymous volume"
    );
    // A named volume used with --rm stays.
    engine.ok(&[
        "run",
        "--rm",
        "-v",
        "named:/data",
        "-v",
        "/anon",
        "hello",
        "true",
    ]);
    assert_eq!(engine.ok(&["volume", "ls", "-q"]), "named");
}

#[test]
fn bind_mounts_honour_read_only() {
    require_root!();
    let engine = Engine::start();
    let host = engine.dir.path().join("shared");
    std::fs::create_dir(&host).expect("host dir");
    std::fs::write(host.join("in"), "from host\n").expect("write");
    let ro = format!("{}:/x:ro", host.display());
    let rw = format!("{}:/x", host.display());
    assert_eq!(
        engine.ok(&["run", "--rm", "-v", &ro, "hello", "cat", "/x/in"]),
        "from host"
    );
    let out = engine.docker(&["run", "--rm", "-v", &ro, "hello", "touch", "/x/new"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Read-only file system"));
    assert!(!host.join("new").exists());
    engine.ok(&[
        "run",
        "--rm",
        "-v",
        &rw,
        "hello",
        "sh",
        "-c",
        "echo back > /x/out",
    ]);
    assert_eq!(
        std::fs::read_to_string(host.join("out")).expect("out"),
        "back\n"
    );
    // --mount type=bind,readonly says the same.
    let mount = format!("type=bind,source={},target=/y,readonly", host.display());
    let out = engine.docker(&["run", "--rm", "--mount", &mount, "hello", "touch", "/y/new"]);
    assert!(!out.status.success());
    // A missing source is an error for --mount, created for -v.
    let missing = engine.dir.path().join("missing");
    let mount = format!("type=bind,source={},target=/y", missing.display());
    let out = engine.docker(&["run", "--rm", "--mount", &mount, "hello", "true"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bind source path does not exist"));
    let bind = format!("{}:/y", missing.display());
    engine.ok(&["run", "--rm", "-v", &bind, "hello", "true"]);
    assert!(missing.is_dir());
}

#[test]
fn tmpfs_mounts() {
    require_root!();
    let engine = Engine::start();
    let out = engine.ok(&[
        "run",
        "--rm",
        "--mount",
        "type=tmpfs,target=/scratch,tmpfs-size=1m",
        "hello",
        "sh",
        "-c",
        "grep ' /scratch ' /proc/mounts; touch /scratch/f",
    ]);
    assert!(out.contains("tmpfs /scratch tmpfs"), "{out}");
    assert!(out.contains("size=1024k"), "{out}");
    let out = engine.ok(&[
        "run",
        "--rm",
        "--tmpfs",
        "/t:size=2m,mode=1777",
        "hello",
        "stat",
        "-c",
        "%a",
        "/t",
    ]);
    assert_eq!(out, "1777");
    assert_eq!(engine.ok(&["volume", "ls", "-q"]), "");
}

#[test]
fn volumes_from_shares_mounts() {
    require_root!();
    let engine = Engine::start();
    let host = engine.dir.path().join("bind");
    std::fs::create_dir(&host).expect("host dir");
    let bind = format!("{}:/b", host.display());
    engine.ok(&[
        "create",
        "--name",
        "src",
        "-v",
        "shared:/s",
        "-v",
        "/anon",
        "-v",
        &bind,
        "hello",
    ]);
    engine.ok(&[
        "run",
        "--rm",
        "--volumes-from",
        "src",
        "hello",
        "sh",
        "-c",
        "echo 1 > /s/f && echo 2 > /anon/f && echo 3 > /b/f",
    ]);
    assert_eq!(
        std::fs::read_to_string(host.join("f")).expect("bind"),
        "3\n"
    );
    let out = engine.ok(&["run", "--rm", "-v", "shared:/s", "hello", "cat", "/s/f"]);
    assert_eq!(out, "1");
    let out = engine.docker(&[
        "run",
        "--rm",
        "--volumes-from",
        "src:ro",
        "hello",
        "touch",
        "/s/g",
    ]);
    assert!(!out.status.success());
    // The anonymous volume is the source's: the --rm consumer did not remove it.
    assert_eq!(engine.ok(&["volume", "ls", "-q"]).lines().count(), 2);
    // An unknown source is a 404 (which the CLI, like Docker's, takes for a
    // missing image and tries to pull), so ask the API directly.
    let answer = vmctl_tests::http::json(
        &engine.socket,
        "POST",
        "/containers/create",
        &serde_json::json!({"Image": "hello", "HostConfig": {"VolumesFrom": ["nope"]}}),
    )
    .expect("create");
    assert_eq!(answer.status, 404, "{answer:?}");
    assert_eq!(answer.message(), "No such container: nope");
}

#[test]
fn new_volumes_are_seeded_from_the_image() {
    require_root!();
    let engine = Engine::start();
    let page = engine.ok(&[
        "run",
        "--rm",
        "-v",
        "site:/www",
        "hello",
        "cat",
        "/www/index.html",
    ]);
    assert!(page.contains("Hello from vmctl"), "{page}");
    // Only on first use: once changed, the volume keeps its content.
    engine.ok(&[
        "run",
        "--rm",
        "-v",
        "site:/www",
        "hello",
        "sh",
        "-c",
        "echo mine > /www/index.html",
    ]);
    assert_eq!(
        engine.ok(&[
            "run",
            "--rm",
            "-v",
            "site:/www",
            "hello",
            "cat",
            "/www/index.html"
        ]),
        "mine"
    );
    // Anonymous volumes are seeded too; nocopy skips it.
    let page = engine.ok(&["run", "--rm", "-v", "/www", "hello", "ls", "/www"]);
    assert_eq!(page, "index.html");
    let page = engine.ok(&[
        "run",
        "--rm",
        "-v",
        "empty:/www:nocopy",
        "hello",
        "ls",
        "/www",
    ]);
    assert_eq!(page, "");
    // Binds are never seeded.
    let host = engine.dir.path().join("www");
    std::fs::create_dir(&host).expect("host dir");
    let bind = format!("{}:/www", host.display());
    assert_eq!(
        engine.ok(&["run", "--rm", "-v", &bind, "hello", "ls", "/www"]),
        ""
    );
}

#[test]
fn volume_verbs_and_in_use_conflict() {
    require_root!();
    let engine = Engine::start();
    assert_eq!(
        engine.ok(&["volume", "create", "--label", "k=v", "v1"]),
        "v1"
    );
    engine.ok(&["volume", "create", "v2"]);
    let mut listed: Vec<String> = engine
        .ok(&["volume", "ls", "-q"])
        .lines()
        .map(str::to_owned)
        .collect();
    listed.sort();
    assert_eq!(listed, ["v1", "v2"]);
    assert_eq!(
        engine.ok(&["volume", "ls", "-q", "--filter", "label=k=v"]),
        "v1"
    );
    assert_eq!(
        engine.ok(&[
            "volume",
            "inspect",
            "-f",
            "{{.Name}} {{.Driver}} {{.Labels.k}}",
            "v1"
        ]),
        "v1 local v"
    );
    let mountpoint = engine.ok(&["volume", "inspect", "-f", "{{.Mountpoint}}", "v1"]);
    assert!(
        mountpoint.starts_with(&engine.dir.path().display().to_string()),
        "{mountpoint}"
    );

    engine.ok(&[
        "run", "-d", "--name", "user", "-v", "v1:/data", "hello", "sleep", "100",
    ]);
    let out = engine.docker(&["volume", "rm", "v1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("volume is in use"),
        "{:?}",
        out
    );
    let answer =
        vmctl_tests::http::request(&engine.socket, "DELETE", "/volumes/v1", "text/plain", b"")
            .expect("request");
    assert_eq!(answer.status, 409, "{answer:?}");
    // Prune keeps used volumes (and named ones without -a).
    engine.ok(&["volume", "prune", "-f"]);
    assert_eq!(engine.ok(&["volume", "ls", "-q"]).lines().count(), 2);
    engine.ok(&["rm", "-f", "user"]);
    engine.ok(&["volume", "rm", "v1"]);
    let out = engine.docker(&["volume", "rm", "v1"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no such volume"),
        "{out:?}"
    );
    let pruned = engine.ok(&["volume", "prune", "-f", "-a"]);
    assert!(pruned.contains("v2"), "{pruned}");
    assert_eq!(engine.ok(&["volume", "ls", "-q"]), "");
}
