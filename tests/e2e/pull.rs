//! `docker pull` (and the pull of `docker run`) against a real registry
//! (Debian's `docker-registry`) on 127.0.0.1 in the engine's own network
//! namespace, images put there with `skopeo`: Docker and OCI manifests,
//! gzip and zstd layers, by tag and by digest, a multi-arch index, token
//! auth, refused downloads that store nothing, a pull killed with SIGKILL,
//! and two pulls sharing one download.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use vmctl_tests::http;
use vmctl_tests::oci_layout::{self, busybox_layer, noise, tar, Layer, Layout};
use vmctl_tests::registry::{self, Registry};
use vmctl_tests::{builtin_images, eventually, require_root, Engine};

use super::bad_input::{finish, raw_entry};

fn hello_archive() -> String {
    format!(
        "docker-archive:{}",
        builtin_images().join("hello.tar").display()
    )
}

/// Every name in the image store (blobs, layers, records, staging), to show
/// that a refused pull added nothing.
fn store_entries(engine: &Engine) -> BTreeSet<String> {
    let root = engine.root().join("image");
    let mut names = BTreeSet::new();
    for sub in ["blobs/sha256", "layers", "images", "tmp"] {
        if let Ok(entries) = std::fs::read_dir(root.join(sub)) {
            for entry in entries.flatten() {
                names.insert(format!("{sub}/{}", entry.file_name().to_string_lossy()));
            }
        }
    }
    names
}

/// Runs `docker ARGS`, asserts it fails with `needle` in its stderr.
fn fails_with(engine: &Engine, args: &[&str], needle: &str) {
    let out = engine.docker(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "docker {args:?} succeeded");
    assert!(
        stderr.contains(needle),
        "docker {args:?}: expected {needle:?} in {stderr}\n{}",
        vmctl_tests::tail(&engine.log(), 20)
    );
}

#[test]
fn pulls_docker_and_oci_gzip_and_zstd_by_tag_and_digest() {
    require_root!();
    let engine = Engine::start();
    let _registry = Registry::start(&engine);
    let hello = hello_archive();
    registry::push(&engine, &hello, "hello:docker", &[]);
    registry::push(&engine, &hello, "hello:oci", &["--format", "oci"]);
    // skopeo recompresses for a registry; an OCI layout keeps zstd as is.
    let zstd = format!("oci:{}:zstd", engine.dir.path().join("zstd").display());
    registry::skopeo(
        &engine,
        &[
            "copy",
            "--quiet",
            "--format",
            "oci",
            "--dest-compress",
            "--dest-compress-format",
            "zstd",
            &hello,
            &zstd,
        ],
    );
    registry::push(&engine, &zstd, "hello:zstd", &["--preserve-digests"]);
    let raw = |tag: &str| {
        registry::skopeo(
            &engine,
            &[
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{}", registry::image(&format!("hello:{tag}"))),
            ],
        )
    };
    assert!(raw("docker").contains("application/vnd.docker.distribution.manifest.v2+json"));
    assert!(raw("docker").contains("application/vnd.docker.image.rootfs.diff.tar.gzip"));
    assert!(raw("oci").contains("application/vnd.oci.image.layer.v1.tar+gzip"));
    assert!(raw("zstd").contains("application/vnd.oci.image.layer.v1.tar+zstd"));

    // The built-in hello has the same layer: without it the first pull downloads.
    engine.ok(&["rmi", "hello"]);
    let first = engine.ok(&["pull", &registry::image("hello:docker")]);
    assert!(first.contains("Pull complete"), "{first}");
    assert!(
        first.contains("Status: Downloaded newer image for 127.0.0.1:5000/hello:docker"),
        "{first}"
    );
    for tag in ["oci", "zstd"] {
        let name = registry::image(&format!("hello:{tag}"));
        let out = engine.ok(&["pull", &name]);
        // Same files, other compression: the unpacked layer is shared.
        assert!(out.contains("Already exists"), "{tag}: {out}");
        assert!(out.contains("Downloaded newer image"), "{tag}: {out}");
    }
    for tag in ["docker", "oci", "zstd"] {
        let name = registry::image(&format!("hello:{tag}"));
        assert_eq!(
            engine.ok(&["run", "--rm", &name, "echo", &format!("ran {tag}")]),
            format!("ran {tag}")
        );
    }
    let again = engine.ok(&["pull", &registry::image("hello:oci")]);
    assert!(
        again.contains("Status: Image is up to date for 127.0.0.1:5000/hello:oci"),
        "{again}"
    );

    // By digest: the repo digest is recorded and the image runs by it.
    let digest = registry::manifest_digest(&engine, "hello:oci");
    assert!(again.contains(&format!("Digest: {digest}")), "{again}");
    // (hello:oci and hello:zstd share the OCI config, so one image.)
    engine.ok(&[
        "rmi",
        &registry::image("hello:oci"),
        &registry::image("hello:zstd"),
    ]);
    let by_digest = format!("{}@{digest}", registry::image("hello"));
    let out = engine.ok(&["pull", &by_digest]);
    assert!(
        out.contains(&format!("Downloaded newer image for {by_digest}")),
        "{out}"
    );
    let digests = engine.ok(&[
        "image",
        "inspect",
        "-f",
        "{{json .RepoDigests}}",
        &by_digest,
    ]);
    assert!(digests.contains(&by_digest), "{digests}");
    assert_eq!(
        engine.ok(&["run", "--rm", &by_digest, "echo", "by digest"]),
        "by digest"
    );

    // `docker run` of an image the engine lacks pulls it first.
    engine.ok(&["rmi", &registry::image("hello:docker")]);
    let out = engine.docker(&[
        "run",
        "--rm",
        &registry::image("hello:docker"),
        "echo",
        "auto",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("Unable to find image"), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "auto");

    // `--all-tags`: every tag of the repository.
    let out = engine.ok(&["pull", "--all-tags", &registry::image("hello")]);
    for tag in ["docker", "oci", "zstd"] {
        assert!(
            out.contains(&format!("127.0.0.1:5000/hello:{tag}")),
            "{out}"
        );
    }
    let tags = engine.ok(&["images", "--format", "{{.Tag}}", &registry::image("hello")]);
    let mut tags: Vec<&str> = tags.lines().collect();
    tags.sort();
    assert_eq!(tags, ["docker", "oci", "zstd"]);
}

#[test]
fn a_multi_arch_index_gives_each_platform_its_image() {
    require_root!();
    let engine = Engine::start();
    let _registry = Registry::start(&engine);
    let mut layout = Layout::create(&engine.dir.path().join("multi"));
    let base = busybox_layer();
    let image = |arch: &str| {
        let marker = format!("{arch}\n");
        layout.image(
            arch,
            &[
                Layer {
                    tar: base.clone(),
                    gzip: true,
                },
                Layer {
                    tar: tar(&[("arch", marker.as_bytes(), 0o644)], &[]),
                    gzip: true,
                },
            ],
            json!({ "Cmd": ["cat", "/arch"] }),
            None,
        )
    };
    let amd64 = image("amd64");
    let arm64 = image("arm64");
    let index = layout.index(&[(arm64, "arm64"), (amd64, "amd64")]);
    layout.tag(&index, "multi");
    registry::push(
        &engine,
        &layout.source("multi"),
        "multi:1",
        &["--all", "--format", "oci"],
    );
    let name = registry::image("multi:1");
    let out = engine.ok(&["pull", &name]);
    let index_digest = registry::manifest_digest(&engine, "multi:1");
    assert!(out.contains(&format!("Digest: {index_digest}")), "{out}");
    assert_eq!(engine.ok(&["run", "--rm", &name]), "amd64");
    // `GET /distribution/{name}/json`: the index and its platforms, unpulled.
    let (code, answer) = distribution(&engine, &name);
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["Descriptor"]["digest"], index_digest.as_str());
    assert_eq!(
        answer["Descriptor"]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let mut arches: Vec<&str> = answer["Platforms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["architecture"].as_str().unwrap())
        .collect();
    arches.sort();
    assert_eq!(arches, ["amd64", "arm64"], "{answer}");
    assert_eq!(
        engine.ok(&["image", "inspect", "-f", "{{.Architecture}}", &name]),
        "amd64"
    );

    let out = engine.ok(&["pull", "--platform", "linux/arm64", &name]);
    assert!(out.contains("Downloaded newer image"), "{out}");
    assert_eq!(
        engine.ok(&["image", "inspect", "-f", "{{.Architecture}}", &name]),
        "arm64"
    );

    fails_with(
        &engine,
        &["pull", "--platform", "linux/s390x", &name],
        "no matching manifest for linux/s390x in the manifest list entries",
    );
}

/// `GET /distribution/{name}/json` on the engine's socket: status and body.
fn distribution(engine: &Engine, name: &str) -> (u16, serde_json::Value) {
    let host = engine.docker_host();
    let out = std::process::Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(host.trim_start_matches("unix://"))
        .arg(format!("http://d/v1.41/distribution/{name}/json"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn a_token_auth_registry_needs_the_credentials() {
    require_root!();
    let engine = Engine::start();
    let registry_ = Registry::start_with_token_auth(&engine);
    let creds = format!("{}:{}", registry::USER, registry::PASSWORD);
    registry::push(
        &engine,
        &hello_archive(),
        "private:1",
        &["--dest-creds", &creds],
    );
    let name = registry::image("private:1");
    let out = engine.docker(&["pull", &name]);
    assert!(!out.status.success(), "pulled without credentials");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("authentication") || stderr.contains("denied"),
        "{stderr}"
    );
    assert!(!engine.ok(&["images"]).contains("private"));
    let refused = registry_.token_requests();
    assert!(refused > 0, "the engine never asked the token server");

    // `docker login`: wrong password refused, right one stored by the CLI.
    let registry_host = registry::image("");
    let registry_host = registry_host.trim_end_matches('/');
    let login = |password: &str| {
        let mut child = engine
            .docker_cmd()
            .args([
                "login",
                "-u",
                registry::USER,
                "--password-stdin",
                registry_host,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker login");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(password.as_bytes())
            .expect("password");
        child.wait_with_output().expect("docker login")
    };
    let wrong = login("not-the-password");
    assert!(
        !wrong.status.success(),
        "login with a wrong password succeeded"
    );
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("incorrect username or password"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    let right = login(registry::PASSWORD);
    assert!(
        right.status.success(),
        "{}",
        String::from_utf8_lossy(&right.stderr)
    );
    assert!(String::from_utf8_lossy(&right.stdout).contains("Login Succeeded"));
    let out = engine.ok(&["pull", &name]);
    assert!(out.contains("Downloaded newer image"), "{out}");
    assert_eq!(
        engine.ok(&["run", "--rm", &name, "echo", "authorised"]),
        "authorised"
    );
    assert!(registry_.token_requests() > refused);
}

#[test]
fn refused_pulls_store_nothing() {
    require_root!();
    let engine = Engine::start();
    let registry_ = Registry::start(&engine);
    registry::push(&engine, &hello_archive(), "hello:1", &[]);
    let before = store_entries(&engine);

    // An unknown tag: 404 with Docker's message, from the API and the CLI.
    let answer = http::request(
        &engine.socket,
        "POST",
        "/v1.44/images/create?fromImage=127.0.0.1%3A5000%2Fhello&tag=nope",
        "application/json",
        b"",
    )
    .expect("request");
    assert_eq!(answer.status, 404, "{answer:?}");
    assert_eq!(
        answer.message(),
        "manifest for 127.0.0.1:5000/hello:nope not found: manifest unknown: manifest unknown"
    );
    fails_with(
        &engine,
        &["pull", &registry::image("hello:nope")],
        "manifest for 127.0.0.1:5000/hello:nope not found",
    );
    fails_with(
        &engine,
        &["pull", "127.0.0.1:5000/Bad:x"],
        "invalid reference format",
    );
    assert_eq!(store_entries(&engine), before);

    // A blob whose bytes do not match its digest.
    let mut layout = Layout::create(&engine.dir.path().join("bad"));
    let payload = noise(256 << 10, 7);
    let corrupt = layout.image(
        "amd64",
        &[Layer {
            tar: tar(&[("data", &payload, 0o644)], &[]),
            gzip: true,
        }],
        json!({}),
        None,
    );
    layout.tag(&corrupt, "corrupt");
    registry::push(
        &engine,
        &layout.source("corrupt"),
        "corrupt:1",
        &["--format", "oci"],
    );
    let layer = registry::layer_digests(&engine, "corrupt:1")
        .pop()
        .expect("a layer");
    let data = registry_.blob_data(&layer);
    let mut bytes = std::fs::read(&data).expect("registry blob");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&data, &bytes).expect("corrupt the blob");
    fails_with(
        &engine,
        &["pull", &registry::image("corrupt:1")],
        &format!("filesystem layer verification failed for digest {layer}"),
    );
    assert_eq!(store_entries(&engine), before);

    // A config whose diff-id is not the layer's.
    let lying = layout.image(
        "amd64",
        &[Layer {
            tar: tar(&[("x", b"x\n", 0o644)], &[]),
            gzip: true,
        }],
        json!({}),
        Some(vec![oci_layout::sha256(b"not this layer")]),
    );
    layout.tag(&lying, "lying");
    registry::push(
        &engine,
        &layout.source("lying"),
        "lying:1",
        &["--format", "oci", "--preserve-digests"],
    );
    fails_with(
        &engine,
        &["pull", &registry::image("lying:1")],
        "but the image config says",
    );
    assert_eq!(store_entries(&engine), before);
    assert!(!engine.ok(&["images"]).contains("corrupt"));
    assert!(!engine.ok(&["images"]).contains("lying"));

    // The pull that works still works.
    engine.ok(&["pull", &registry::image("hello:1")]);
}

#[test]
fn malicious_layers_from_a_registry_are_refused_and_touch_nothing() {
    require_root!();
    let engine = Engine::start();
    let _registry = Registry::start(&engine);
    let victim = engine.dir.path().join("victim");
    std::fs::create_dir(&victim).expect("victim dir");
    let escape = engine.dir.path().join("escape");
    let precious = engine.dir.path().join("precious");
    std::fs::create_dir(&precious).expect("precious dir");
    std::fs::write(precious.join("keep"), b"keep\n").expect("precious file");
    let before = store_entries(&engine);

    let mut corpus: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut layer = Vec::new();
    raw_entry(&mut layer, "ok", b'0', "", b"fine\n");
    raw_entry(
        &mut layer,
        "../../../../../../../../escape",
        b'0',
        "",
        b"pwned\n",
    );
    corpus.push(("dot-dot", finish(layer)));
    let mut layer = Vec::new();
    let absolute = format!("../../../../../../../..{}", escape.display());
    raw_entry(&mut layer, &absolute, b'0', "", b"pwned\n");
    corpus.push(("dot-dot to an absolute path", finish(layer)));
    let mut layer = Vec::new();
    raw_entry(&mut layer, "evil", b'2', &victim.display().to_string(), b"");
    raw_entry(&mut layer, "evil/escape", b'0', "", b"pwned\n");
    corpus.push(("absolute symlink parent", finish(layer)));
    let mut layer = Vec::new();
    raw_entry(&mut layer, "up", b'2', "../../../../../../../../tmp", b"");
    raw_entry(&mut layer, "up/vmctl-e2e-pull-escape", b'0', "", b"pwned\n");
    corpus.push(("relative symlink parent", finish(layer)));
    let mut layer = Vec::new();
    raw_entry(&mut layer, "passwd", b'1', "/etc/passwd", b"");
    corpus.push(("hard link out", finish(layer)));
    let mut layer = Vec::new();
    raw_entry(&mut layer, "link", b'1', "../../../../etc/passwd", b"");
    corpus.push(("relative hard link out", finish(layer)));
    let mut layer = Vec::new();
    raw_entry(&mut layer, "mem", b'3', "", b"");
    set_device(&mut layer, 1, 1);
    corpus.push(("char device", finish(layer)));
    let mut layer = Vec::new();
    raw_entry(&mut layer, "disk", b'4', "", b"");
    set_device(&mut layer, 8, 0);
    corpus.push(("block device", finish(layer)));
    let mut layer = Vec::new();
    let whiteout = format!("../../../../../../../..{}/.wh.keep", precious.display());
    raw_entry(&mut layer, &whiteout, b'0', "", b"");
    corpus.push(("whiteout outside the layer", finish(layer)));
    let mut layer = Vec::new();
    raw_entry(&mut layer, "dir/../../.wh..wh..opq", b'0', "", b"");
    corpus.push(("opaque whiteout outside the layer", finish(layer)));
    // Metadata entries declaring gigabytes: the tar reader would hold them in memory.
    for (what, kind) in [("huge pax header", b'x'), ("huge GNU long name", b'L')] {
        let mut layer = Vec::new();
        raw_entry(&mut layer, "././@LongLink", kind, "", b"");
        layer[124..135].copy_from_slice(format!("{:011o}", (1u64 << 33) - 1).as_bytes());
        fix_checksum(&mut layer);
        layer.extend_from_slice(&[b'a'; 64 << 10]);
        corpus.push((what, finish(layer)));
    }
    let mut layer = Vec::new();
    raw_entry(&mut layer, "big", b'0', "", b"");
    let size = format!("{:011o}", (1u64 << 33) - 1);
    layer[124..135].copy_from_slice(size.as_bytes());
    fix_checksum(&mut layer);
    corpus.push(("size past the end", finish(layer)));

    let mut layout = Layout::create(&engine.dir.path().join("evil"));
    for (i, (what, tar)) in corpus.iter().enumerate() {
        let manifest = layout.image(
            "amd64",
            &[Layer {
                tar: tar.clone(),
                gzip: true,
            }],
            json!({}),
            None,
        );
        let tag = format!("evil{i}");
        layout.tag(&manifest, &tag);
        registry::push(
            &engine,
            &layout.source(&tag),
            &format!("evil:{i}"),
            &["--format", "oci"],
        );
        let out = engine.docker(&["pull", &registry::image(&format!("evil:{i}"))]);
        assert!(!out.status.success(), "{what}: pulled");
        assert_eq!(store_entries(&engine), before, "{what}: stored something");
        assert!(!escape.exists(), "{what} wrote {}", escape.display());
        assert!(
            std::fs::read_dir(&victim).expect("victim").next().is_none(),
            "{what} wrote into the victim dir"
        );
        assert!(!Path::new("/tmp/vmctl-e2e-pull-escape").exists(), "{what}");
        assert!(
            precious.join("keep").exists(),
            "{what} removed a file outside"
        );
    }
    assert!(engine
        .ok(&["images", "--format", "{{.Repository}}"])
        .lines()
        .all(|l| !l.contains("evil")));
}

/// Sets the device numbers of the first header in `tar`.
fn set_device(tar: &mut [u8], major: u32, minor: u32) {
    tar[329..336].copy_from_slice(format!("{major:07o}").as_bytes());
    tar[337..344].copy_from_slice(format!("{minor:07o}").as_bytes());
    fix_checksum(tar);
}

fn fix_checksum(tar: &mut [u8]) {
    tar[148..156].copy_from_slice(b"        ");
    let sum: u32 = tar[..512].iter().map(|&b| u32::from(b)).sum();
    tar[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
}

/// Three layers of incompressible data, so a pull takes a while.
fn push_big(engine: &Engine, name: &str, mib: usize) -> Vec<(String, Vec<u8>)> {
    let mut layout = Layout::create(
        &engine
            .dir
            .path()
            .join(format!("big-{}", name.replace(':', "-"))),
    );
    let mut files = Vec::new();
    let mut layers = vec![Layer {
        tar: busybox_layer(),
        gzip: true,
    }];
    for i in 0..3u8 {
        let data = noise(mib << 20, i + 1);
        let path = format!("big{i}");
        layers.push(Layer {
            tar: tar(&[(&path, &data, 0o644)], &[]),
            gzip: true,
        });
        files.push((path, data));
    }
    let manifest = layout.image("amd64", &layers, json!({}), None);
    layout.tag(&manifest, "big");
    registry::push(engine, &layout.source("big"), name, &["--format", "oci"]);
    files
}

#[test]
fn a_pull_killed_midway_leaves_no_half_layer_and_the_next_one_completes() {
    require_root!();
    let mut engine = Engine::start();
    let _registry = Registry::start(&engine);
    let files = push_big(&engine, "big:1", 48);
    let name = registry::image("big:1");
    let mut pull = engine
        .docker_cmd()
        .args(["pull", &name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker pull");
    let layers = engine.root().join("image/layers");
    let names = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .expect("layers")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    let before = names(&layers);
    let midway = eventually(Duration::from_secs(120), || {
        std::fs::read_dir(&layers).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                e.file_name().to_string_lossy().starts_with(".tmp-")
                    && std::fs::read_dir(e.path()).is_ok_and(|mut d| d.next().is_some())
            })
        })
    });
    assert!(midway, "never saw a layer being unpacked");
    engine.kill_engine();
    let _ = pull.kill();
    let _ = pull.wait();
    let complete: Vec<String> = names(&layers)
        .difference(&before)
        .filter(|n| !n.starts_with(".tmp-"))
        .cloned()
        .collect();

    engine.spawn_engine();
    let left: Vec<String> = std::fs::read_dir(&layers)
        .expect("layers")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-"))
        .collect();
    assert!(left.is_empty(), "half layers left after restart: {left:?}");
    assert!(
        !engine.ok(&["images"]).contains("big"),
        "a killed pull recorded the image"
    );

    let out = engine.ok(&["pull", &name]);
    assert!(out.contains("Downloaded newer image"), "{out}");
    assert_eq!(
        out.matches("Already exists").count(),
        complete.len(),
        "layers completed before the kill are reused: {complete:?}\n{out}"
    );
    for (path, data) in &files {
        let sum = engine.ok(&["run", "--rm", &name, "sha256sum", &format!("/{path}")]);
        assert_eq!(
            sum.split_whitespace().next(),
            Some(&oci_layout::sha256(data)[7..]),
            "{path}"
        );
    }
}

#[test]
fn two_concurrent_pulls_of_one_image_download_each_layer_once() {
    require_root!();
    let engine = Engine::start();
    let registry_ = Registry::start(&engine);
    push_big(&engine, "shared:1", 24);
    let name = registry::image("shared:1");
    let spawn = || -> std::process::Child {
        engine
            .docker_cmd()
            .args(["pull", &name])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker pull")
    };
    let (a, b) = (spawn(), spawn());
    for child in [a, b] {
        let out = child.wait_with_output().expect("docker pull");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for layer in registry::layer_digests(&engine, "shared:1") {
        assert_eq!(
            registry_.blob_gets(&layer),
            1,
            "{layer} fetched more than once"
        );
    }
    assert_eq!(engine.ok(&["run", "--rm", &name, "ls", "/big2"]), "/big2");
}

#[test]
fn commit_then_run_and_push_then_pull_back() {
    require_root!();
    let engine = Engine::start();
    let _registry = Registry::start(&engine);
    engine.ok(&[
        "run",
        "--name",
        "work",
        "hello",
        "sh",
        "-c",
        "echo made > /made && rm /www/index.html && mkdir -p /d && echo x > /d/f && ln /made /made-link",
    ]);
    let id = engine.ok(&[
        "commit",
        "-c",
        r#"CMD ["cat", "/made"]"#,
        "-c",
        "ENV STAGE=committed",
        "-m",
        "a note",
        "-a",
        "tester",
        "work",
        "committed:1",
    ]);
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(engine.ok(&["run", "--rm", "committed:1"]), "made");
    let check = "test -e /www/index.html && echo present || echo gone; cat /d/f; echo $STAGE; \
                 stat -c %h /made";
    assert_eq!(
        engine.ok(&["run", "--rm", "committed:1", "sh", "-c", check]),
        "gone\nx\ncommitted\n2"
    );
    assert_eq!(
        engine.ok(&[
            "image",
            "inspect",
            "-f",
            "{{.Author}} {{.Comment}} {{len .RootFS.Layers}}",
            "committed:1"
        ]),
        "tester a note 2"
    );
    assert!(engine
        .ok(&["history", "--format", "{{.Comment}}", "committed:1"])
        .starts_with("a note"));

    // A running container is paused for the commit and runs on after it.
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "live",
        "hello",
        "sh",
        "-c",
        "echo live > /live; sleep 1000",
    ]);
    assert!(eventually(Duration::from_secs(20), || {
        engine
            .docker(&["exec", "live", "cat", "/live"])
            .status
            .success()
    }));
    engine.ok(&["commit", "live", "live:1"]);
    assert_eq!(
        engine.ok(&["inspect", "-f", "{{.State.Status}}", "live"]),
        "running"
    );
    assert_eq!(
        engine.ok(&["run", "--rm", "live:1", "cat", "/live"]),
        "live"
    );

    // A change that does not parse is refused and stores nothing.
    let before = store_entries(&engine);
    fails_with(
        &engine,
        &["commit", "-c", "RUN make", "work", "bad:1"],
        "RUN is not a valid change command",
    );
    assert_eq!(store_entries(&engine), before);
    assert!(!engine.ok(&["images"]).contains("bad"));

    // Push, remove, pull back, run.
    let remote = registry::image("committed:1");
    engine.ok(&["tag", "committed:1", &remote]);
    let out = engine.ok(&["push", &remote]);
    assert!(out.contains("Pushed"), "{out}");
    assert!(out.contains("1: digest: sha256:"), "{out}");
    assert_eq!(registry::layer_digests(&engine, "committed:1").len(), 2);
    let again = engine.ok(&["push", &remote]);
    assert!(again.contains("Layer already exists"), "{again}");
    engine.ok(&["rm", "-f", "work", "live"]);
    engine.ok(&["rmi", "committed:1", &remote]);
    let out = engine.ok(&["pull", &remote]);
    assert!(out.contains("Downloaded newer image"), "{out}");
    assert_eq!(engine.ok(&["run", "--rm", &remote]), "made");
    // A single manifest's platform is its config's.
    let (code, answer) = distribution(&engine, &remote);
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        answer["Descriptor"]["digest"],
        registry::manifest_digest(&engine, "committed:1").as_str()
    );
    assert_eq!(answer["Platforms"][0]["os"], "linux", "{answer}");
    let (code, answer) = distribution(&engine, &registry::image("absent:1"));
    assert_eq!(code, 404, "{answer}");
    assert!(answer["message"].as_str().is_some(), "{answer}");
    // The built-in image (a plain-tar layer) pushes too.
    engine.ok(&["tag", "hello", &registry::image("hello:builtin")]);
    engine.ok(&["push", &registry::image("hello:builtin")]);
    fails_with(
        &engine,
        &["push", &registry::image("absent:1")],
        "An image does not exist locally with the tag",
    );
}

#[test]
fn image_prune_and_system_df() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&[
        "run",
        "--name",
        "c1",
        "hello",
        "sh",
        "-c",
        "head -c 300000 /dev/urandom > /blob",
    ]);
    let first = engine.ok(&["commit", "c1", "img:a"]);
    let second = engine.ok(&["commit", "-c", "CMD [\"true\"]", "c1", "img:a"]);
    assert_ne!(first, second);
    let ids = engine.ok(&["images", "-q", "--no-trunc", "-a"]);
    assert_eq!(ids.lines().count(), 3, "{ids}");

    let df = engine.ok(&[
        "system",
        "df",
        "--format",
        "{{.Type}} {{.TotalCount}} {{.Active}}",
    ]);
    assert!(df.contains("Images 3 1"), "{df}");
    assert!(df.contains("Containers 1 0"), "{df}");
    let verbose = engine.ok(&["system", "df", "-v", "--format", "{{json .}}"]);
    let value: serde_json::Value = serde_json::from_str(&verbose).expect("df json");
    let images = value["Images"].as_array().expect("images");
    assert_eq!(images.len(), 3);
    let containers = value["Containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    // The container wrote 300 kB: its size says so.
    let size = containers[0]["Size"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(size.contains("kB") || size.contains("MB"), "{verbose}");

    // Dangling only: the first commit, untagged by the second.
    let out = engine.ok(&["image", "prune", "-f"]);
    assert!(out.contains(&format!("deleted: {first}")), "{out}");
    assert!(out.contains("Total reclaimed space"), "{out}");
    let left = engine.ok(&["images", "-q", "--no-trunc", "-a"]);
    assert!(!left.contains(&first) && left.contains(&second), "{left}");

    // All unused: img:a goes, hello stays for c1.
    let out = engine.ok(&["image", "prune", "-a", "-f"]);
    assert!(out.contains("untagged: img:a"), "{out}");
    assert_eq!(
        engine.ok(&["images", "--format", "{{.Repository}}"]),
        "hello"
    );
    assert_eq!(
        engine.ok(&["run", "--rm", "hello", "echo", "still"]),
        "still"
    );
    engine.ok(&["rm", "c1"]);
    let out = engine.ok(&["image", "prune", "-a", "-f", "--filter", "label=none=here"]);
    assert!(
        !out.contains("hello"),
        "a label filter that matches nothing pruned: {out}"
    );
    let out = engine.ok(&["image", "prune", "-a", "-f"]);
    assert!(out.contains("untagged: hello:latest"), "{out}");
    assert_eq!(engine.ok(&["images", "-q"]), "");
    let layers = std::fs::read_dir(engine.root().join("image/layers"))
        .expect("layers")
        .count();
    assert_eq!(layers, 0, "layers left after pruning everything");
}

#[test]
fn mirrors_serve_docker_hub_names_and_only_listed_registries_get_plain_http() {
    require_root!();
    let engine = Engine::start_with(&[
        "--registry-mirror",
        "http://127.0.0.1:5000",
        "--insecure-registry",
        "10.77.0.0/24",
    ]);
    let registry_ = Registry::start(&engine);
    for args in [
        &[
            "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1",
        ][..],
        &["ip", "addr", "add", "10.77.0.1/24", "dev", "d0"],
        &["ip", "addr", "add", "10.78.0.1/24", "dev", "d0"],
        &["ip", "link", "set", "d0", "up"],
        &["ip", "link", "set", "d1", "up"],
    ] {
        assert!(engine.in_namespaces(args).status.success(), "{args:?}");
    }
    registry::push(&engine, &hello_archive(), "library/mirrored:1", &[]);

    // `mirrored:1` is docker.io/library/mirrored:1: served by the mirror.
    let out = engine.ok(&["pull", "mirrored:1"]);
    assert!(
        out.contains("Downloaded newer image for mirrored:1"),
        "{out}"
    );
    assert!(
        registry_
            .log()
            .contains("/v2/library/mirrored/manifests/1?ns=docker.io"),
        "{}",
        registry_.log()
    );
    assert_eq!(
        engine.ok(&["run", "--rm", "mirrored:1", "echo", "via mirror"]),
        "via mirror"
    );
    // Not on the mirror: Docker Hub itself is tried (and unreachable here).
    let out = engine.docker(&["pull", "notmirrored:1"]);
    assert!(!out.status.success());

    // Plain HTTP for the listed range, HTTPS for the rest.
    let listed = "10.77.0.1:5000/library/mirrored:1";
    let out = engine.ok(&["pull", listed]);
    assert!(out.contains("Downloaded newer image"), "{out}");
    let unlisted = "10.78.0.1:5000/library/mirrored:1";
    let out = engine.docker(&["pull", unlisted]);
    assert!(
        !out.status.success(),
        "pulled over plain HTTP from an unlisted registry"
    );
    assert!(!engine.ok(&["images"]).contains("10.78.0.1"));
}
