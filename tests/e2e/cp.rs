//! `docker cp` (`HEAD`/`GET`/`PUT /containers/{id}/archive`): files and
//! directories both ways, `dir/.`, stopped containers, volumes and binds,
//! owners and modes, dockerd's errors, and hostile containers: links to
//! `/` or `/proc/1/root`, tars that climb out, a container swapping a
//! directory for a link while copies run. Nothing may reach the engine's
//! files, and no mount or process may outlive a copy.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use vmctl_tests::{eventually, require_root, Engine};

/// What a raw API request answered.
struct Answer {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The decoded `X-Docker-Container-Path-Stat` header.
    fn stat(&self) -> serde_json::Value {
        let line = self
            .headers
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .starts_with("x-docker-container-path-stat:")
                    .then(|| l.split_once(':').map(|(_, v)| v.trim().to_owned()))
                    .flatten()
            })
            .unwrap_or_else(|| panic!("no stat header in:\n{}", self.headers));
        let json = base64_decode(&line);
        serde_json::from_slice(&json).expect("stat JSON")
    }
}

/// Standard base64 (the stat header), without a crate for it.
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|c| *c != b'=') {
        let value = ALPHABET.iter().position(|a| *a == c).expect("base64") as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

/// One HTTP/1.0 request on the engine's socket (the body read to its end).
fn request(engine: &Engine, method: &str, path: &str, body: &[u8]) -> Answer {
    let mut stream = UnixStream::connect(&engine.socket).expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: x\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write");
    stream.write_all(body).expect("write body");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read");
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let headers = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    Answer {
        status,
        headers,
        body: answer[split + 4..].to_vec(),
    }
}

/// The entries (name, link target) of a tar.
fn entries(tar_bytes: &[u8]) -> Vec<(String, Option<String>)> {
    let mut archive = tar::Archive::new(tar_bytes);
    archive
        .entries()
        .expect("tar")
        .map(|e| {
            let e = e.expect("entry");
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let link = e
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned());
            (name, link)
        })
        .collect()
}

/// A tar of `(name, kind, data or link target)` entries, names as given.
fn tar_of(items: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, kind, data) in items {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(*kind);
        header.set_mode(0o644);
        header.set_mtime(0);
        let raw = &mut header.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        if kind.is_symlink() || kind.is_hard_link() {
            let link = &mut header.as_old_mut().linkname;
            link[..data.len()].copy_from_slice(data.as_bytes());
            header.set_size(0);
            header.set_cksum();
            builder.append(&header, std::io::empty()).expect("tar");
        } else {
            header.set_size(data.len() as u64);
            header.set_cksum();
            builder.append(&header, data.as_bytes()).expect("tar");
        }
    }
    builder.into_inner().expect("tar")
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

/// No copy process of this engine is left.
fn cp_processes(engine: &Engine) -> Vec<u32> {
    let root = engine.dir.path().display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("\0cp\0") && cmdline.contains(&root) {
            found.push(pid);
        }
    }
    found
}

fn assert_clean(engine: &Engine) {
    let quiet = eventually(Duration::from_secs(30), || cp_processes(engine).is_empty());
    assert!(quiet, "cp processes left: {:?}", cp_processes(engine));
    let left = engine.leftovers();
    assert!(left.is_empty(), "leftovers: {left:#?}");
}

#[test]
fn files_and_directories_copy_both_ways() {
    require_root!();
    let engine = Engine::start();
    let host = tempfile::tempdir().expect("tempdir");
    let h = |p: &str| host.path().join(p).display().to_string();
    std::fs::write(h("file"), "from the host\n").unwrap();
    std::fs::create_dir_all(h("dir/sub")).unwrap();
    std::fs::write(h("dir/a"), "a\n").unwrap();
    std::fs::write(h("dir/sub/b"), "b\n").unwrap();
    std::os::unix::fs::symlink("a", h("dir/link")).unwrap();
    engine.ok(&["run", "-d", "--name", "box", "hello", "sleep", "100000"]);
    engine.ok(&[
        "exec",
        "box",
        "sh",
        "-c",
        "mkdir -p /real /into && ln -s /real /link",
    ]);

    // In: a file, a directory, a directory's contents, through a link
    // resolved inside the container's root.
    engine.ok(&["cp", &h("file"), "box:/tmp/"]);
    engine.ok(&["cp", &h("dir"), "box:/tmp/dir"]);
    engine.ok(&["cp", &format!("{}/.", h("dir")), "box:/into"]);
    engine.ok(&["cp", &h("file"), "box:/link/"]);
    assert_eq!(
        engine.ok(&[
            "exec",
            "box",
            "cat",
            "/tmp/file",
            "/tmp/dir/sub/b",
            "/into/a",
            "/real/file"
        ]),
        "from the host\nb\na\nfrom the host"
    );
    assert_eq!(
        engine.ok(&["exec", "box", "readlink", "/tmp/dir/link"]),
        "a"
    );

    // Out: a file, a directory, its contents, a link as a link.
    engine.ok(&["exec", "box", "sh", "-c", "echo made > /tmp/dir/made"]);
    engine.ok(&["cp", "box:/tmp/file", &h("back")]);
    engine.ok(&["cp", "box:/tmp/dir", &h("dirback")]);
    std::fs::create_dir(h("contents")).unwrap();
    engine.ok(&["cp", "box:/tmp/dir/.", &h("contents")]);
    engine.ok(&["cp", "box:/link", &h("linkback")]);
    assert_eq!(
        std::fs::read_to_string(h("back")).unwrap(),
        "from the host\n"
    );
    assert_eq!(
        std::fs::read_to_string(h("dirback/made")).unwrap(),
        "made\n"
    );
    assert_eq!(std::fs::read_to_string(h("dirback/sub/b")).unwrap(), "b\n");
    assert_eq!(std::fs::read_to_string(h("contents/a")).unwrap(), "a\n");
    assert_eq!(
        std::fs::read_link(h("linkback")).unwrap(),
        Path::new("/real")
    );
    // -L follows it (inside the container).
    engine.ok(&["cp", "-L", "box:/link", &h("followed")]);
    assert!(Path::new(&h("followed/file")).is_file());

    // A compressed upload is taken as dockerd takes it.
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(&tar_of(&[("zipped", tar::EntryType::Regular, "z")]))
        .unwrap();
    let answer = request(
        &engine,
        "PUT",
        "/containers/box/archive?path=/tmp",
        &gzip.finish().unwrap(),
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(engine.ok(&["exec", "box", "cat", "/tmp/zipped"]), "z");

    // The tar names its top entry after the path, `.` for `dir/.`.
    let answer = request(
        &engine,
        "GET",
        "/containers/box/archive?path=/tmp/dir/.",
        b"",
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    let names: Vec<String> = entries(&answer.body).into_iter().map(|e| e.0).collect();
    assert!(
        names.contains(&"./".to_owned()) && names.contains(&"./sub/b".to_owned()),
        "{names:?}"
    );
    let stat = request(&engine, "HEAD", "/containers/box/archive?path=/link", b"").stat();
    assert_eq!(stat["name"], "link");
    assert_eq!(stat["linkTarget"], "/real");
    assert_eq!(stat["mode"].as_u64(), Some((1 << 27) | 0o777));
    let stat = request(
        &engine,
        "HEAD",
        "/containers/box/archive?path=/tmp/dir",
        b"",
    )
    .stat();
    assert_eq!(stat["mode"].as_u64().map(|m| m >> 31), Some(1), "{stat}");

    // dockerd's events for each direction.
    // (Until a second from now: events of this second are then all in.)
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    let events = engine.ok(&[
        "events",
        "--since",
        "0",
        "--until",
        &until.to_string(),
        "--filter",
        "type=container",
        "--format",
        "{{.Action}}",
    ]);
    assert!(
        events.contains("archive-path") && events.contains("extract-to-dir"),
        "{events}"
    );
    engine.ok(&["rm", "-f", "box"]);
    assert_clean(&engine);
}

#[test]
fn stopped_containers_volumes_and_binds() {
    require_root!();
    let engine = Engine::start();
    let bind = tempfile::tempdir().expect("tempdir");
    let host = tempfile::tempdir().expect("tempdir");
    std::fs::write(host.path().join("f"), "payload\n").unwrap();
    let file = host.path().join("f").display().to_string();
    let bind_spec = format!("{}:/bound", bind.path().display());
    engine.ok(&[
        "create",
        "--name",
        "stopped",
        "-v",
        "vol:/data",
        "-v",
        &bind_spec,
        "hello",
        "sh",
        "-c",
        "cat /data/f /bound/f /root-f",
    ]);
    // Never started: the root, a named volume and a bind all take files.
    engine.ok(&["cp", &file, "stopped:/data/f"]);
    engine.ok(&["cp", &file, "stopped:/bound/f"]);
    engine.ok(&["cp", &file, "stopped:/root-f"]);
    assert_eq!(
        std::fs::read_to_string(bind.path().join("f")).unwrap(),
        "payload\n"
    );
    engine.ok(&["start", "-a", "stopped"]);
    assert_eq!(engine.ok(&["logs", "stopped"]), "payload\npayload\npayload");
    // Exited: out of each of them, and the volume seen by another container.
    engine.ok(&[
        "cp",
        "stopped:/data/f",
        &host.path().join("from-volume").display().to_string(),
    ]);
    engine.ok(&[
        "cp",
        "stopped:/bound",
        &host.path().join("from-bind").display().to_string(),
    ]);
    assert_eq!(
        std::fs::read_to_string(host.path().join("from-volume")).unwrap(),
        "payload\n"
    );
    assert!(host.path().join("from-bind/f").is_file());
    assert_eq!(
        engine.ok(&["run", "--rm", "-v", "vol:/v", "hello", "cat", "/v/f"]),
        "payload"
    );
    // A running container's volume, through its destination.
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "live",
        "-v",
        "vol:/data",
        "hello",
        "sleep",
        "100000",
    ]);
    engine.ok(&["cp", &file, "live:/data/again"]);
    assert_eq!(
        engine.ok(&["run", "--rm", "-v", "vol:/v", "hello", "cat", "/v/again"]),
        "payload"
    );
    // A paused one answers as dockerd does (copies work).
    engine.ok(&["pause", "live"]);
    engine.ok(&[
        "cp",
        "live:/data/again",
        &host.path().join("paused").display().to_string(),
    ]);
    engine.ok(&["unpause", "live"]);
    engine.ok(&["rm", "-f", "stopped", "live"]);
    assert_clean(&engine);
}

#[test]
fn owners_modes_and_copy_uid_gid() {
    require_root!();
    let engine = Engine::start();
    let host = tempfile::tempdir().expect("tempdir");
    let owned = host.path().join("owned");
    std::fs::write(&owned, "x").unwrap();
    std::os::unix::fs::chown(&owned, Some(1234), Some(2345)).unwrap();
    std::fs::set_permissions(&owned, std::fs::Permissions::from_mode(0o4750)).unwrap();
    let owned = owned.display().to_string();
    engine.ok(&["run", "-d", "--name", "box", "hello", "sleep", "100000"]);
    engine.ok(&["cp", &owned, "box:/tmp/"]);
    assert_eq!(
        engine.ok(&["exec", "box", "stat", "-c", "%u %g %a", "/tmp/owned"]),
        "1234 2345 4750"
    );
    // Out again: the owner and the setuid bit travel in the tar (the CLI
    // itself then writes the file as its own user, as with dockerd).
    let answer = request(
        &engine,
        "GET",
        "/containers/box/archive?path=/tmp/owned",
        b"",
    );
    let mut archive = tar::Archive::new(&answer.body[..]);
    let entry = archive.entries().unwrap().next().unwrap().unwrap();
    let header = entry.header();
    assert_eq!(
        (
            header.uid().unwrap(),
            header.gid().unwrap(),
            header.mode().unwrap()
        ),
        (1234, 2345, 0o4750)
    );
    engine.ok(&[
        "cp",
        "box:/tmp/owned",
        &host.path().join("back").display().to_string(),
    ]);
    let back = std::fs::metadata(host.path().join("back")).unwrap();
    assert_eq!(back.mode() & 0o7777, 0o4750);

    // -a: the container's user owns what comes in.
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "user",
        "--user",
        "1000:1000",
        "hello",
        "sleep",
        "100000",
    ]);
    engine.ok(&["cp", "-a", &owned, "user:/tmp/"]);
    assert_eq!(
        engine.ok(&["exec", "user", "stat", "-c", "%u %g", "/tmp/owned"]),
        "1000 1000"
    );
    engine.ok(&["rm", "-f", "box", "user"]);
    assert_clean(&engine);
}

#[test]
fn errors_are_dockerds() {
    require_root!();
    let engine = Engine::start();
    let host = tempfile::tempdir().expect("tempdir");
    let file = host.path().join("f");
    std::fs::write(&file, "x").unwrap();
    let file = file.display().to_string();
    let ro_bind = format!("{}:/robind:ro", host.path().display());
    engine.ok(&["run", "-d", "--name", "box", "hello", "sleep", "100000"]);
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "ro",
        "--read-only",
        "-v",
        "vol:/vol",
        "-v",
        &ro_bind,
        "hello",
        "sleep",
        "100000",
    ]);

    let out = engine.docker(&[
        "cp",
        "box:/nope",
        &host.path().join("x").display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "Error response from daemon: Could not find the file /nope in container box"
    );
    let out = engine.docker(&["cp", &file, "box:/etc/passwd/x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("extraction point is not a directory"),
        "{}",
        stderr(&out)
    );
    let out = engine.docker(&["cp", &file, "ro:/tmp/"]);
    assert!(
        stderr(&out).contains("container rootfs is marked read-only"),
        "{}",
        stderr(&out)
    );
    let out = engine.docker(&["cp", &file, "ro:/robind/"]);
    assert!(
        stderr(&out).contains("mounted volume is marked read-only"),
        "{}",
        stderr(&out)
    );
    // A writable volume inside a read-only root takes it.
    engine.ok(&["cp", &file, "ro:/vol/"]);
    assert_eq!(engine.ok(&["exec", "ro", "cat", "/vol/f"]), "x");

    // The API's own answers.
    let answer = request(&engine, "GET", "/containers/box/archive", b"");
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.text(),
        r#"{"message":"bad parameter: pathcannot be empty"}"#
    );
    let answer = request(&engine, "HEAD", "/containers/box/archive?path=/nope", b"");
    assert_eq!(answer.status, 404);
    let answer = request(
        &engine,
        "PUT",
        "/containers/box/archive?path=/nope",
        &tar_of(&[]),
    );
    assert_eq!(answer.status, 404);
    assert_eq!(
        answer.text(),
        r#"{"message":"Could not find the file /nope in container box"}"#
    );
    let answer = request(
        &engine,
        "PUT",
        "/containers/box/archive?path=/etc/passwd",
        &tar_of(&[]),
    );
    assert_eq!(answer.status, 400, "{}", answer.text());
    let answer = request(&engine, "GET", "/containers/nosuch/archive?path=/", b"");
    assert_eq!(answer.status, 404);
    // A corrupt tar: a clear error.
    let answer = request(
        &engine,
        "PUT",
        "/containers/box/archive?path=/tmp",
        &[7u8; 1024],
    );
    assert_eq!(answer.status, 500, "{}", answer.text());
    assert!(answer.text().contains("tar"), "{}", answer.text());
    // noOverwriteDirNonDir: a file may not replace /tmp.
    let answer = request(
        &engine,
        "PUT",
        "/containers/box/archive?path=/&noOverwriteDirNonDir=true",
        &tar_of(&[("tmp", tar::EntryType::Regular, "x")]),
    );
    assert_eq!(answer.status, 500);
    assert!(
        answer.text().contains("cannot overwrite directory"),
        "{}",
        answer.text()
    );
    assert!(engine
        .ok(&["exec", "box", "ls", "-d", "/tmp"])
        .contains("/tmp"));
    engine.ok(&["rm", "-f", "box", "ro"]);
    assert_clean(&engine);
}

#[test]
fn links_out_of_the_root_lead_into_the_container() {
    require_root!();
    let engine = Engine::start();
    // A secret on the engine's side, at a path the container also names.
    let outside = tempfile::Builder::new()
        .prefix("cp-secret")
        .tempdir_in("/tmp")
        .expect("tempdir");
    std::fs::write(outside.path().join("secret"), "the engine's\n").unwrap();
    let dir = outside.path().display().to_string();
    engine.ok(&["run", "-d", "--name", "evil", "hello", "sleep", "100000"]);
    engine.ok(&[
        "exec",
        "evil",
        "sh",
        "-c",
        &format!(
            "ln -s / /evil && ln -s /proc/1/root /evil2 && ln -s ../../../../../../.. /evil3 \
             && mkdir -p {dir} && echo inner > {dir}/secret && echo mine > /etc/mine"
        ),
    ]);
    for link in ["/evil", "/evil3"] {
        let answer = request(
            &engine,
            "GET",
            &format!("/containers/evil/archive?path={link}{dir}/secret"),
            b"",
        );
        assert_eq!(answer.status, 200, "{}", answer.text());
        let mut archive = tar::Archive::new(&answer.body[..]);
        let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
        let mut text = String::new();
        entry.read_to_string(&mut text).unwrap();
        assert_eq!(text, "inner\n", "{link} read the engine's file");
    }
    // /proc/1/root is no magic link here: the container's /proc is not in
    // the copy's view.
    let answer = request(
        &engine,
        "GET",
        "/containers/evil/archive?path=/evil2/etc/mine",
        b"",
    );
    assert_eq!(answer.status, 404, "{}", answer.text());
    // The engine's own files are nowhere: its root dir is not in the view.
    let engine_root = engine.root().display().to_string();
    let answer = request(
        &engine,
        "HEAD",
        &format!("/containers/evil/archive?path=/evil{engine_root}"),
        b"",
    );
    assert_eq!(answer.status, 404);

    // PUT through the links lands inside the container.
    let tar = tar_of(&[("dropped", tar::EntryType::Regular, "x")]);
    for link in ["/evil", "/evil3"] {
        let answer = request(
            &engine,
            "PUT",
            &format!("/containers/evil/archive?path={link}{dir}"),
            &tar,
        );
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    assert!(!outside.path().join("dropped").exists(), "a PUT escaped");
    assert_eq!(
        engine.ok(&["exec", "evil", "cat", &format!("{dir}/dropped")]),
        "x"
    );
    assert_eq!(
        std::fs::read_to_string(outside.path().join("secret")).unwrap(),
        "the engine's\n"
    );

    // Tars that climb out: refused; absolute link targets are the
    // container's own.
    engine.ok(&["exec", "evil", "mkdir", "-p", "/x/y"]);
    let climbing = tar_of(&[
        ("ok", tar::EntryType::Regular, "1"),
        ("../../../../escaped", tar::EntryType::Regular, "2"),
    ]);
    let answer = request(
        &engine,
        "PUT",
        "/containers/evil/archive?path=/x/y",
        &climbing,
    );
    assert_eq!(answer.status, 500);
    assert!(answer.text().contains("is outside of"), "{}", answer.text());
    let links = tar_of(&[
        ("abs", tar::EntryType::Symlink, "/etc/mine"),
        ("out", tar::EntryType::Symlink, "../../../etc"),
    ]);
    let answer = request(&engine, "PUT", "/containers/evil/archive?path=/x/y", &links);
    assert!(
        answer.text().contains("invalid symlink"),
        "{}",
        answer.text()
    );
    let hard = tar_of(&[("h", tar::EntryType::Link, "../../etc/mine")]);
    let answer = request(&engine, "PUT", "/containers/evil/archive?path=/x/y", &hard);
    assert!(
        answer.text().contains("invalid hardlink"),
        "{}",
        answer.text()
    );
    assert_eq!(engine.ok(&["exec", "evil", "cat", "/x/y/abs"]), "mine");
    assert!(!Path::new("/escaped").exists() && !Path::new("/x/escaped").exists());
    let listing = engine.ok(&["exec", "evil", "ls", "/", "/x"]);
    assert!(!listing.contains("escaped"), "{listing}");
    engine.ok(&["rm", "-f", "evil"]);
    assert_clean(&engine);
}

#[test]
fn a_container_swapping_a_directory_for_a_link_cannot_lead_copies_out() {
    require_root!();
    let engine = Engine::start();
    let outside = tempfile::Builder::new()
        .prefix("cp-race")
        .tempdir_in("/tmp")
        .expect("tempdir");
    std::fs::write(outside.path().join("secret"), "engine\n").unwrap();
    let dir = outside.path().display().to_string();
    engine.ok(&["run", "-d", "--name", "racer", "hello", "sleep", "100000"]);
    // /race/d is a directory one moment, a link to / the next.
    engine.ok(&[
        "exec",
        "-d",
        "racer",
        "sh",
        "-c",
        &format!(
            "mkdir -p {dir}; while true; do mkdir -p /race/d{dir}; echo in > /race/d{dir}/secret; \
             rm -rf /race/d; ln -s / /race/d; rm -f /race/d; done"
        ),
    ]);
    let tar = tar_of(&[("planted", tar::EntryType::Regular, "p")]);
    for _ in 0..60 {
        let answer = request(
            &engine,
            "GET",
            &format!("/containers/racer/archive?path=/race/d{dir}/secret"),
            b"",
        );
        if answer.status == 200 {
            let mut archive = tar::Archive::new(&answer.body[..]);
            if let Some(Ok(mut entry)) = archive.entries().unwrap().next() {
                let mut text = String::new();
                let _ = entry.read_to_string(&mut text);
                assert_ne!(text, "engine\n", "a GET read the engine's file");
            }
        }
        let answer = request(&engine, "GET", "/containers/racer/archive?path=/race", b"");
        if answer.status == 200 {
            let mut archive = tar::Archive::new(&answer.body[..]);
            for entry in archive.entries().unwrap().flatten() {
                let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                assert!(
                    !name.contains("docker.sock"),
                    "the walk left the root: {name}"
                );
            }
        }
        let _ = request(
            &engine,
            "PUT",
            &format!("/containers/racer/archive?path=/race/d{dir}"),
            &tar,
        );
    }
    assert!(!outside.path().join("planted").exists(), "a PUT escaped");
    assert_eq!(
        std::fs::read_to_string(outside.path().join("secret")).unwrap(),
        "engine\n"
    );
    engine.ok(&["rm", "-f", "racer"]);
    assert_clean(&engine);
}

#[test]
fn clients_that_go_away_and_rm_during_a_copy_leave_nothing() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&["run", "-d", "--name", "big", "hello", "sleep", "100000"]);
    engine.ok(&[
        "exec",
        "big",
        "sh",
        "-c",
        "dd if=/dev/zero of=/big bs=1M count=64 2>/dev/null",
    ]);
    // A GET whose client reads a little, then the container goes.
    let mut reader = UnixStream::connect(&engine.socket).expect("connect");
    reader
        .write_all(b"GET /containers/big/archive?path=/big HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 4096];
    reader.read_exact(&mut first).unwrap();
    // A PUT that sends half a tar and stalls.
    let mut writer = UnixStream::connect(&engine.socket).expect("connect");
    writer
        .write_all(
            b"PUT /containers/big/archive?path=/tmp HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
        )
        .unwrap();
    let tar = tar_of(&[("half", tar::EntryType::Regular, &"y".repeat(50_000))]);
    writer.write_all(&tar[..20_000]).unwrap();
    assert!(eventually(Duration::from_secs(30), || cp_processes(
        &engine
    )
    .len()
        >= 2));
    engine.ok(&["rm", "-f", "big"]);
    drop(reader);
    drop(writer);
    // A stopped container started while a copy holds its own mount of
    // the container's root: both go on.
    engine.ok(&[
        "run",
        "--name",
        "later",
        "hello",
        "sh",
        "-c",
        "dd if=/dev/zero of=/big bs=1M count=64 2>/dev/null",
    ]);
    let mut slow = UnixStream::connect(&engine.socket).expect("connect");
    slow.write_all(b"GET /containers/later/archive?path=/big HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    slow.read_exact(&mut first).unwrap();
    engine.ok(&["start", "later"]);
    assert_eq!(engine.ok(&["wait", "later"]), "0");
    drop(slow);
    engine.ok(&["rm", "later"]);
    // A stopped container's copy mounts its own root: gone with it too.
    engine.ok(&["create", "--name", "idle", "-v", "/anon", "hello", "true"]);
    let answer = request(&engine, "GET", "/containers/idle/archive?path=/anon", b"");
    assert_eq!(answer.status, 200, "{}", answer.text());
    engine.ok(&["rm", "-v", "idle"]);
    assert_clean(&engine);
}

#[test]
fn fifos_neither_hang_nor_break_copies() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&["run", "-d", "--name", "odd", "hello", "sleep", "100000"]);
    engine.ok(&[
        "exec",
        "odd",
        "sh",
        "-c",
        "mkfifo /fifo && mkdir /d && mkfifo /d/pipe && echo x > /d/file",
    ]);
    // No writer ever comes: opening the FIFO would block.
    let answer = request(
        &engine,
        "PUT",
        "/containers/odd/archive?path=/fifo",
        &tar_of(&[]),
    );
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert!(answer
        .text()
        .contains("extraction point is not a directory"));
    let answer = request(&engine, "GET", "/containers/odd/archive?path=/d", b"");
    assert_eq!(answer.status, 200, "{}", answer.text());
    let mut archive = tar::Archive::new(&answer.body[..]);
    let kinds: Vec<(String, tar::EntryType)> = archive
        .entries()
        .unwrap()
        .flatten()
        .map(|e| {
            (
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                e.header().entry_type(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("d/pipe".to_owned(), tar::EntryType::Fifo)),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("d/file".to_owned(), tar::EntryType::Regular)),
        "{kinds:?}"
    );
    // And the container still takes files.
    let tar = tar_of(&[("f", tar::EntryType::Regular, "y")]);
    let answer = request(&engine, "PUT", "/containers/odd/archive?path=/tmp", &tar);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(engine.ok(&["exec", "odd", "cat", "/tmp/f"]), "y");
    engine.ok(&["rm", "-f", "odd"]);
    assert_clean(&engine);
}

#[test]
fn bollard_uploads_and_downloads_through_the_archive_endpoints() {
    use bollard::query_parameters::{
        DownloadFromContainerOptionsBuilder, UploadToContainerOptionsBuilder,
    };
    use futures::StreamExt;
    require_root!();
    let engine = Engine::start();
    engine.ok(&["run", "-d", "--name", "sdk", "hello", "sleep", "100000"]);
    let docker = bollard::Docker::connect_with_unix(
        &engine.socket.display().to_string(),
        120,
        bollard::API_DEFAULT_VERSION,
    )
    .expect("bollard client");
    let tar = tar_of(&[
        ("in/", tar::EntryType::Directory, ""),
        ("in/f", tar::EntryType::Regular, "from bollard"),
    ]);
    let downloaded = tokio::runtime::Runtime::new()
        .expect("tokio")
        .block_on(async {
            let upload = UploadToContainerOptionsBuilder::new()
                .path("/tmp")
                .no_overwrite_dir_non_dir("true")
                .build();
            docker
                .upload_to_container("sdk", Some(upload), bollard::body_full(tar.into()))
                .await
                .expect("upload");
            let download = DownloadFromContainerOptionsBuilder::new()
                .path("/tmp/in")
                .build();
            let mut stream = docker.download_from_container("sdk", Some(download));
            let mut bytes = Vec::new();
            while let Some(chunk) = stream.next().await {
                bytes.extend_from_slice(&chunk.expect("download"));
            }
            bytes
        });
    let mut archive = tar::Archive::new(&downloaded[..]);
    let mut found = String::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path_bytes().as_ref() == b"in/f" {
            entry.read_to_string(&mut found).unwrap();
        }
    }
    assert_eq!(found, "from bollard");
    engine.ok(&["rm", "-f", "sdk"]);
    assert_clean(&engine);
}
