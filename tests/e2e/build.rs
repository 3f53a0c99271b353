//! `docker build` with the classic builder (`DOCKER_BUILDKIT=0`), the real
//! docker CLI against a standalone engine: single- and multi-stage builds,
//! every instruction, `.dockerignore` (applied by the client), build args
//! and targets, the cache (hits, invalidation by content, across an engine
//! restart), failures that leave nothing, a cancelled build, bad
//! Dockerfiles, and hostile images and contexts that try to lead a COPY
//! out of its root.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use vmctl_tests::{eventually, require_root, Engine};

/// A build context under the engine's directory: `files` as (path, text).
fn context(engine: &Engine, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = engine.dir.path().join(name);
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).expect("context dir");
        std::fs::write(&path, text).expect("context file");
    }
    dir
}

/// `docker build ARGS` with the classic builder.
fn build(engine: &Engine, args: &[&str]) -> Output {
    engine
        .docker_cmd()
        .env("DOCKER_BUILDKIT", "0")
        .arg("build")
        .args(args)
        .output()
        .expect("docker build")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `docker build ARGS`, which must succeed; answers its stdout.
fn build_ok(engine: &Engine, args: &[&str]) -> String {
    let out = build(engine, args);
    assert!(
        out.status.success(),
        "docker build {args:?} failed:\nstdout: {}\nstderr: {}\nengine log:\n{}",
        text(&out.stdout),
        text(&out.stderr),
        vmctl_tests::tail(&engine.log(), 30)
    );
    text(&out.stdout)
}

fn inspect(engine: &Engine, image: &str, format: &str) -> String {
    engine.ok(&["image", "inspect", "-f", format, image])
}

const EVERY_INSTRUCTION: &str = r#"# syntax=docker/dockerfile:1
ARG BASE=hello
FROM ${BASE} AS base
LABEL maintainer.note="first stage" \
      stage=base
ARG GREETING=hello
ARG UNSET
ENV APP=/srv/app NAME="two words"
WORKDIR $APP
COPY files/ ./
COPY *.txt /data/
COPY --chown=1234:2345 owned.txt /owned/
COPY --chmod=0750 script.sh /usr/local/bin/
ADD archive.tar /unpacked/
RUN echo "${GREETING:-none} ${UNSET:-default} $NAME" > /built.txt \
 && cat /built.txt
SHELL ["/bin/sh", "-e", "-c"]
RUN test "$(pwd)" = /srv/app
USER 1234:2345
EXPOSE 8080 9090/udp
VOLUME ["/data"]
STOPSIGNAL SIGUSR1
HEALTHCHECK --interval=5s --timeout=2s --retries=4 CMD ["true"]
ONBUILD ENV TRIGGERED=yes
ONBUILD RUN echo triggered-run
MAINTAINER someone@example.com
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /built.txt"]

FROM hello AS final
COPY --from=base /built.txt /final.txt
COPY --from=0 /srv/app/a.txt /from-index.txt
RUN cat /final.txt
"#;

/// A tar archive holding `inside/f.txt` (`x`), owned by 7:8.
fn write_archive(path: &Path) {
    let file = std::fs::File::create(path).expect("archive");
    let mut builder = tar::Builder::new(file);
    let mut header = tar::Header::new_gnu();
    header.set_size(1);
    header.set_mode(0o640);
    header.set_uid(7);
    header.set_gid(8);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, "inside/f.txt", &b"x"[..])
        .expect("archive entry");
    builder.finish().expect("archive");
}

#[test]
fn every_instruction_single_and_multi_stage() {
    require_root!();
    let engine = Engine::start();
    let ctx = context(
        &engine,
        "ctx",
        &[
            ("Dockerfile", EVERY_INSTRUCTION),
            ("files/a.txt", "a\n"),
            ("files/sub/b.txt", "b\n"),
            ("one.txt", "1\n"),
            ("two.txt", "2\n"),
            ("owned.txt", "mine\n"),
            ("script.sh", "#!/bin/sh\necho script\n"),
            ("secret.key", "never sent\n"),
            (".dockerignore", "secret.key\n"),
        ],
    );
    write_archive(&ctx.join("archive.tar"));
    let ctx_text = ctx.display().to_string();

    // The whole file, the last stage the result.
    let out = build_ok(&engine, &["-t", "every:1", &ctx_text]);
    assert!(out.contains("Step 1/29 : ARG BASE=hello"), "{out}");
    assert!(out.contains("Step 29/29 : RUN cat /final.txt"), "{out}");
    assert!(out.contains("hello default two words"), "{out}");
    assert!(out.contains(" ---> Running in "), "{out}");
    assert!(out.contains("Removing intermediate container"), "{out}");
    assert!(out.contains("Successfully tagged every:1"), "{out}");
    assert_eq!(
        engine.ok(&[
            "run",
            "--rm",
            "every:1",
            "cat",
            "/final.txt",
            "/from-index.txt"
        ]),
        "hello default two words\na"
    );

    // --target stops at the first stage: its config is every instruction's.
    build_ok(
        &engine,
        &["--target", "base", "-t", "every:base", &ctx_text],
    );
    let config = |f: &str| inspect(&engine, "every:base", f);
    assert_eq!(
        config("{{json .Config.Labels}}"),
        r#"{"maintainer.note":"first stage","stage":"base"}"#
    );
    assert!(config("{{json .Config.Env}}").contains(r#""APP=/srv/app","NAME=two words""#));
    assert!(
        !config("{{json .Config.Env}}").contains("GREETING"),
        "build args are not kept in the image"
    );
    assert_eq!(config("{{.Config.WorkingDir}}"), "/srv/app");
    assert_eq!(config("{{.Config.User}}"), "1234:2345");
    assert_eq!(
        config("{{json .Config.ExposedPorts}}"),
        r#"{"80/tcp":{},"8080/tcp":{},"9090/udp":{}}"#
    );
    assert_eq!(config("{{json .Config.Volumes}}"), r#"{"/data":{}}"#);
    assert_eq!(config("{{.Config.StopSignal}}"), "SIGUSR1");
    assert_eq!(
        config("{{json .Config.Healthcheck}}"),
        r#"{"Test":["CMD","true"],"Interval":5000000000,"Timeout":2000000000,"Retries":4}"#
    );
    assert_eq!(
        config("{{json .Config.OnBuild}}"),
        r#"["ENV TRIGGERED=yes","RUN echo triggered-run"]"#
    );
    assert_eq!(config("{{json .Config.Shell}}"), r#"["/bin/sh","-e","-c"]"#);
    assert_eq!(config("{{json .Config.Entrypoint}}"), r#"["/bin/sh","-c"]"#);
    assert_eq!(config("{{json .Config.Cmd}}"), r#"["cat /built.txt"]"#);
    assert_eq!(config("{{.Author}}"), "someone@example.com");
    // The image runs as its ENTRYPOINT and CMD say.
    assert_eq!(
        engine.ok(&["run", "--rm", "every:base"]),
        "hello default two words"
    );

    // The files: directories' contents, globs, --chown, --chmod, ADD's
    // unpacking with the archive's owners, and the ignored file absent.
    let listing = engine.ok(&[
        "run", "--rm", "--entrypoint", "sh", "-u", "0", "every:base", "-c",
        "cd / && ls srv/app srv/app/sub data && stat -c '%u:%g %a %n' owned/owned.txt usr/local/bin/script.sh unpacked/inside/f.txt srv/app && script.sh && ls /srv/app/secret.key /data/secret.key 2>&1; true",
    ]);
    for expected in [
        "a.txt",
        "b.txt",
        "one.txt",
        "two.txt",
        "1234:2345 644 owned/owned.txt",
        "0:0 750 usr/local/bin/script.sh",
        "7:8 640 unpacked/inside/f.txt",
        "0:0 755 srv/app",
        "script",
        "No such file or directory",
    ] {
        assert!(
            listing.contains(expected),
            "{expected:?} missing in:\n{listing}"
        );
    }
    assert!(!listing.contains("secret.key\n"), "{listing}");

    // docker history shows the steps, metadata ones with no size.
    let history = engine.ok(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.CreatedBy}}|{{.Size}}",
        "every:base",
    ]);
    assert!(
        history.contains("#(nop)  ENV APP=/srv/app NAME=two words|0B"),
        "{history}"
    );
    assert!(
        history.contains("|1 GREETING=hello /bin/sh -c echo"),
        "{history}"
    );
    assert!(history.contains("#(nop)  COPY file:"), "{history}");

    // ONBUILD triggers run in a build FROM the image, once.
    let child = context(
        &engine,
        "child",
        &[("Dockerfile", "FROM every:base\nUSER 0\n")],
    );
    let out = build_ok(&engine, &["-t", "child:1", &child.display().to_string()]);
    assert!(out.contains("# Executing 2 build triggers"), "{out}");
    assert!(out.contains("triggered-run"), "{out}");
    assert!(inspect(&engine, "child:1", "{{json .Config.Env}}").contains("TRIGGERED=yes"));
    assert_eq!(
        inspect(&engine, "child:1", "{{json .Config.OnBuild}}"),
        "null"
    );

    // Intermediate images hide from `docker images` but show with -a.
    let plain = engine.ok(&["images", "-q"]).lines().count();
    let all = engine.ok(&["images", "-a", "-q"]).lines().count();
    assert!(all > plain + 10, "images {plain}, with -a {all}");
}

#[test]
fn build_args_target_and_labels_options() {
    require_root!();
    let engine = Engine::start();
    let ctx = context(
        &engine,
        "ctx",
        &[(
            "Dockerfile",
            "ARG TAG=latest\nFROM hello:$TAG\nARG TAG\nARG WHO=nobody\nRUN echo \"$WHO on $TAG\" > /who\nCMD [\"cat\", \"/who\"]\n",
        )],
    );
    let ctx = ctx.display().to_string();
    let out = build_ok(
        &engine,
        &[
            "--build-arg",
            "WHO=alice",
            "--build-arg",
            "UNUSED=1",
            "--label",
            "team=infra",
            "-t",
            "args:1",
            &ctx,
        ],
    );
    assert!(
        out.contains("[Warning] One or more build-args [UNUSED] were not consumed"),
        "{out}"
    );
    assert_eq!(engine.ok(&["run", "--rm", "args:1"]), "alice on latest");
    assert_eq!(
        inspect(&engine, "args:1", "{{json .Config.Labels}}"),
        r#"{"team":"infra"}"#
    );
    // A bad target names itself.
    let out = build(&engine, &["--target", "nope", &ctx]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("failed to reach build target nope in Dockerfile"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn cache_is_reused_until_content_changes_and_survives_a_restart() {
    require_root!();
    let mut engine = Engine::start();
    let ctx = context(
        &engine,
        "ctx",
        &[
            ("Dockerfile", "FROM hello\nRUN echo first > /first\nCOPY app.txt /app.txt\nRUN cat /app.txt > /copy\n"),
            ("app.txt", "v1\n"),
        ],
    );
    let ctx_text = ctx.display().to_string();
    let out = build_ok(&engine, &["-t", "cached:1", &ctx_text]);
    assert!(!out.contains("Using cache"), "{out}");
    let first = inspect(&engine, "cached:1", "{{.Id}}");

    // Unchanged: every step from the cache, the same image.
    let out = build_ok(&engine, &["-t", "cached:2", &ctx_text]);
    assert_eq!(out.matches("Using cache").count(), 3, "{out}");
    assert!(!out.contains("Running in"), "{out}");
    assert_eq!(inspect(&engine, "cached:2", "{{.Id}}"), first);

    // Only times changed: still the cache (contents and modes count).
    let file = ctx.join("app.txt");
    let later = std::time::SystemTime::now() + Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .and_then(|f| f.set_modified(later))
        .expect("touch");
    let out = build_ok(&engine, &["-t", "cached:3", &ctx_text]);
    assert_eq!(out.matches("Using cache").count(), 3, "{out}");

    // New content: the RUN before the COPY is cached, the rest rebuilt.
    std::fs::write(&file, "v2\n").expect("edit");
    let out = build_ok(&engine, &["-t", "cached:4", &ctx_text]);
    assert_eq!(out.matches("Using cache").count(), 1, "{out}");
    assert_eq!(
        engine.ok(&["run", "--rm", "cached:4", "cat", "/copy"]),
        "v2"
    );

    // The cache survives the engine's restart and is shared by tags.
    engine.kill_engine();
    engine.spawn_engine();
    let out = build_ok(&engine, &["-t", "cached:5", &ctx_text]);
    assert_eq!(out.matches("Using cache").count(), 3, "{out}");
    assert_eq!(
        inspect(&engine, "cached:5", "{{.Id}}"),
        inspect(&engine, "cached:4", "{{.Id}}")
    );

    // --no-cache does all the work again.
    let out = build_ok(&engine, &["--no-cache", "-t", "cached:6", &ctx_text]);
    assert!(!out.contains("Using cache"), "{out}");
    assert_eq!(out.matches("Running in").count(), 2, "{out}");

    // `docker builder prune -a` drops the cache: the next build runs again.
    engine.ok(&[
        "rmi", "cached:1", "cached:2", "cached:3", "cached:4", "cached:5",
    ]);
    engine.ok(&["builder", "prune", "-a", "-f"]);
    let out = build_ok(&engine, &["-t", "cached:7", &ctx_text]);
    assert!(out.matches("Using cache").count() <= 1, "{out}");
}

#[test]
fn a_failing_step_reports_its_code_and_leaves_nothing_but_cache() {
    require_root!();
    let engine = Engine::start();
    let ctx = context(
        &engine,
        "ctx",
        &[("Dockerfile", "FROM hello\nRUN echo kept > /kept\nRUN echo failing output && exit 3\nRUN echo never\n")],
    );
    let ctx = ctx.display().to_string();
    let before = engine.ok(&["images", "-a", "-q"]).lines().count();
    let out = build(&engine, &["-t", "broken:1", &ctx]);
    assert!(!out.status.success());
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(all.contains("failing output"), "{all}");
    assert!(
        all.contains(
            "The command '/bin/sh -c echo failing output && exit 3' returned a non-zero code: 3"
        ),
        "{all}"
    );
    assert!(!all.contains("never"), "{all}");
    // No container, no tag; the step before the failure is kept as cache.
    assert_eq!(engine.ok(&["ps", "-a", "-q"]), "");
    assert!(!engine
        .docker(&["image", "inspect", "broken:1"])
        .status
        .success());
    assert_eq!(
        engine.ok(&["images", "-a", "-q"]).lines().count(),
        before + 1
    );
    let out = build(&engine, &["-t", "broken:1", &ctx]);
    assert!(
        text(&out.stdout).contains("Using cache"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn bad_dockerfiles_and_requests_are_refused_in_one_line_and_change_nothing() {
    require_root!();
    let engine = Engine::start();
    let cases: &[(&str, &str)] = &[
        (
            "FROM hello\nRUN true\nBOGUS x\n",
            "Dockerfile:3: unknown instruction: BOGUS",
        ),
        ("RUN true\n", "Dockerfile:1:"),
        ("FROM hello\nCOPY missing.txt /x\n", "missing.txt"),
        ("FROM hello\nRUN <<EOF\necho hi\nEOF\n", "BuildKit"),
    ];
    for (i, (dockerfile, expected)) in cases.iter().enumerate() {
        let ctx = context(&engine, &format!("bad{i}"), &[("Dockerfile", dockerfile)]);
        let out = build(&engine, &["-t", "bad:1", &ctx.display().to_string()]);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{dockerfile}");
        assert!(stderr.contains(expected), "{dockerfile}: {stderr}");
    }
    let ctx = context(&engine, "fine", &[("Dockerfile", "FROM hello\n")])
        .display()
        .to_string();
    let out = build(&engine, &["--platform", "windows/amd64", &ctx]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not supported"),
        "{}",
        text(&out.stderr)
    );
    let out = build(&engine, &["-f", "nope.Dockerfile", &ctx]);
    assert!(!out.status.success());
    // Nothing was made: no container, no image, no tag.
    assert_eq!(engine.ok(&["ps", "-a", "-q"]), "");
    assert_eq!(
        engine.ok(&["images", "-a", "--format", "{{.Repository}}"]),
        "hello"
    );
    assert!(
        std::fs::read_dir(engine.root().join("build")).map_or(true, |d| d.count() == 0),
        "a build's scratch directory was left"
    );
}

#[test]
fn a_cancelled_build_stops_its_step() {
    require_root!();
    let engine = Engine::start();
    let ctx = context(
        &engine,
        "ctx",
        &[("Dockerfile", "FROM hello\nRUN echo started && sleep 600\n")],
    );
    let mut client = engine
        .docker_cmd()
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", &ctx.display().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker build");
    assert!(
        eventually(Duration::from_secs(60), || !engine
            .ok(&["ps", "-q"])
            .is_empty()),
        "the step never ran"
    );
    client.kill().expect("kill the client");
    let _ = client.wait();
    assert!(
        eventually(Duration::from_secs(60), || engine
            .ok(&["ps", "-a", "-q"])
            .is_empty()),
        "the step's container outlived its client: {}",
        engine.ok(&["ps", "-a"])
    );
}

#[test]
fn hostile_images_and_contexts_cannot_lead_a_copy_out_of_its_root() {
    require_root!();
    let engine = Engine::start();
    // Where a copy that escaped would land on the engine's host.
    let outside = engine.dir.path().join("outside");
    std::fs::create_dir(&outside).expect("outside");
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let outside_text = outside.display().to_string();

    // A base image whose /app leads (absolute and by ..) to that directory.
    let base = context(
        &engine,
        "base",
        &[(
            "Dockerfile",
            &format!(
                "FROM hello\nRUN mkdir -p {outside_text} && ln -s {outside_text} /app && ln -s ../../../../../../..{outside_text} /up\n"
            ),
        )],
    );
    build_ok(
        &engine,
        &["-t", "hostile:base", &base.display().to_string()],
    );
    let ctx = context(
        &engine,
        "ctx",
        &[
            ("Dockerfile", "FROM hostile:base\nCOPY payload.txt /app/\nCOPY payload.txt /up/up.txt\nWORKDIR /app/work\n"),
            ("payload.txt", "payload\n"),
        ],
    );
    build_ok(&engine, &["-t", "hostile:1", &ctx.display().to_string()]);
    // The files are in the image, at the links' targets inside it …
    assert_eq!(
        engine.ok(&[
            "run",
            "--rm",
            "hostile:1",
            "cat",
            &format!("{outside_text}/payload.txt"),
            &format!("{outside_text}/up.txt")
        ]),
        "payload\npayload"
    );
    // … and nothing reached the host.
    let leaked: Vec<_> = std::fs::read_dir(&outside).expect("outside").collect();
    assert!(leaked.is_empty(), "a COPY wrote on the host: {leaked:?}");

    // A context symlink to a host file is resolved inside the context.
    let ctx = context(
        &engine,
        "links",
        &[("Dockerfile", "FROM hello\nCOPY shadow /stolen\n")],
    );
    std::os::unix::fs::symlink("/etc/shadow", ctx.join("shadow")).expect("symlink");
    let out = build(&engine, &[&ctx.display().to_string()]);
    assert!(
        !out.status.success(),
        "a context link to /etc/shadow was followed out of the context"
    );

    // A context tar made by hand (sent as it is: `docker build -`) whose
    // `dir/link` is first a link to the host directory, then a directory
    // with a file below it, and with a name that climbs out of `dir` with
    // `..`. `COPY dir/` reads the tar through its index: the link is gone,
    // the file is in the image's directory. `COPY .` (the climbing name
    // has no directory entries: the context is unpacked) is refused.
    let raw = engine.dir.path().join("raw.tar");
    let built = |dockerfile: &str| {
        write_hostile_context(&raw, &outside_text, dockerfile);
        engine
            .docker_cmd()
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "-t", "hostile:raw", "-"])
            .stdin(std::fs::File::open(&raw).expect("raw tar"))
            .output()
            .expect("docker build -")
    };
    let out = built("FROM hello\nCOPY dir/ /dst/\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let found = engine.ok(&["run", "--rm", "hostile:raw", "find", "/dst"]);
    let mut listed: Vec<&str> = found.lines().collect();
    listed.sort_unstable();
    assert_eq!(
        listed.join("\n"),
        "/dst\n/dst/link\n/dst/link/inside.txt\n/dst/ok.txt",
        "COPY dir/ of the hand-made context"
    );
    let out = built("FROM hello\nCOPY . /all/\n");
    assert!(
        text(&out.stderr).contains("path escapes"),
        "{}",
        text(&out.stderr)
    );
    let leaked: Vec<_> = std::fs::read_dir(&outside).expect("outside").collect();
    assert!(
        leaked.is_empty(),
        "a hand-made context wrote on the host: {leaked:?}"
    );

    // COPY --from an image: its links are followed inside it, too.
    let ctx = context(
        &engine,
        "from",
        &[(
            "Dockerfile",
            "FROM hello\nCOPY --from=hostile:base /app/ /got/\n",
        )],
    );
    std::fs::write(outside.join("host-only.txt"), "host\n").expect("host file");
    build_ok(&engine, &["-t", "hostile:2", &ctx.display().to_string()]);
    let got = engine.ok(&["run", "--rm", "hostile:2", "ls", "-A", "/got"]);
    assert!(
        !got.contains("host-only"),
        "COPY --from read the host: {got}"
    );
}

/// A context tar with hostile names, written with raw headers (the tar
/// crate refuses `..` in the names it sets): `dockerfile`, `dir/` with a
/// file, a name climbing out of `dir` to `outside`, and `dir/link` as a
/// symlink to `outside` and then as a directory holding `inside.txt`.
fn write_hostile_context(path: &Path, outside: &str, dockerfile: &str) {
    fn raw(
        builder: &mut tar::Builder<std::fs::File>,
        name: &str,
        kind: tar::EntryType,
        link: &str,
        data: &[u8],
    ) {
        let mut header = tar::Header::new_old();
        let old = header.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_entry_type(kind);
        header.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, data).expect("raw entry");
    }
    use tar::EntryType::{Directory, Regular, Symlink};
    let file = std::fs::File::create(path).expect("raw tar");
    let mut builder = tar::Builder::new(file);
    raw(
        &mut builder,
        "Dockerfile",
        Regular,
        "",
        dockerfile.as_bytes(),
    );
    raw(&mut builder, "dir/", Directory, "", b"");
    raw(&mut builder, "dir/ok.txt", Regular, "", b"ok\n");
    let climb = format!("dir/../../../../../..{outside}/climbed.txt");
    raw(&mut builder, &climb, Regular, "", b"climbed\n");
    raw(&mut builder, "dir/link", Symlink, outside, b"");
    raw(&mut builder, "dir/link/", Directory, "", b"");
    raw(
        &mut builder,
        "dir/link/inside.txt",
        Regular,
        "",
        b"inside\n",
    );
    builder.finish().expect("raw tar");
}

#[test]
fn cache_from_reuses_the_steps_of_a_loaded_image() {
    require_root!();
    let engine = Engine::start();
    let ctx = context(
        &engine,
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM hello\nENV STAGE=one\nRUN echo slow-step > /made\nCOPY app.txt /app.txt\nCMD [\"cat\", \"/made\"]\n",
            ),
            ("app.txt", "v1\n"),
        ],
    );
    let ctx = ctx.display().to_string();
    build_ok(&engine, &["-t", "ci:1", &ctx]);
    // As a CI job gets it: saved, gone, loaded back (no parent links, no
    // build records — only the image's history says its steps).
    let archive = engine.dir.path().join("ci.tar");
    engine.ok(&["save", "-o", &archive.display().to_string(), "ci:1"]);
    engine.ok(&["rmi", "ci:1"]);
    engine.ok(&["load", "-i", &archive.display().to_string()]);
    let loaded = inspect(&engine, "ci:1", "{{.Id}}");

    // Without --cache-from nothing is reused …
    let out = build_ok(&engine, &["-t", "ci:plain", &ctx]);
    assert!(!out.contains("Using cache"), "{out}");
    engine.ok(&["rmi", "ci:plain"]);
    // … with it every step is, and the result is the loaded image's.
    let out = build_ok(&engine, &["--cache-from", "ci:1", "-t", "ci:2", &ctx]);
    assert_eq!(out.matches("Using cache").count(), 4, "{out}");
    assert!(!out.contains("Running in"), "{out}");
    assert_eq!(inspect(&engine, "ci:2", "{{.Id}}"), loaded);
    // A changed source stops the reuse at its step.
    std::fs::write(Path::new(&ctx).join("app.txt"), "v2\n").expect("edit");
    let out = build_ok(&engine, &["--cache-from", "ci:1", "-t", "ci:3", &ctx]);
    assert_eq!(out.matches("Using cache").count(), 2, "{out}");
    assert_eq!(engine.ok(&["run", "--rm", "ci:3", "cat", "/app.txt"]), "v2");
}
