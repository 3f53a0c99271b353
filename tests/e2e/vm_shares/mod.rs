//! The desktop's files, names and clock in the VM (issue 16), against a real
//! VM under TCG: shares at the same path with the desktop owner kept,
//! read-only shares, binds outside the shares refused, desktop edits seen by
//! a watcher in a container, published ports on `::1`, the clock after a
//! pause, and disk space given back.
//!
//! This module: the shares themselves (with vmctl run as root, and as a
//! desktop user who is not), what a hostile container can do through one,
//! and the disk file shrinking after an image is removed.

mod clock;
mod events;
mod localhost;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use vmctl_tests::vm::{text, VmHome};
use vmctl_tests::{eventually, require_vm};

/// The uid a container writes as: not the desktop user's.
const CONTAINER_UID: &str = "1234";

/// A desktop directory to share: not under `/tmp`, which is the VM's own.
pub fn share_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/var/tmp")
        .expect("tempdir in /var/tmp")
}

fn real(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap()
}

fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "succeeded: {}", text(&out.stdout));
    text(&out.stderr)
}

/// Everything a share must do, for whoever runs vmctl (`owner`: their
/// uid), through a machine with `rw` shared read-write and `ro` read-only.
fn shares_work_for(home: &VmHome, host: &str, rw: &Path, ro: &Path, owner: u32) {
    let rw_path = rw.to_str().unwrap();
    let ro_path = ro.to_str().unwrap();

    // A desktop file, read in a container at the same path and elsewhere.
    std::fs::write(rw.join("hello.txt"), "from the desktop\n").unwrap();
    let same_path = format!("{rw_path}:{rw_path}");
    let read = home.docker_ok(
        host,
        &[
            "run",
            "--rm",
            "-v",
            &same_path,
            "hello",
            "cat",
            &format!("{rw_path}/hello.txt"),
        ],
    );
    assert_eq!(read, "from the desktop");

    // A container writing as another uid: the desktop file is the desktop
    // user's; modes and symlinks survive the round trip.
    let open = rw.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let src = format!("{rw_path}:/src");
    home.docker_ok(
        host,
        &[
            "run",
            "--rm",
            "--user",
            CONTAINER_UID,
            "-v",
            &src,
            "hello",
            "sh",
            "-c",
            // The modes come from the container (its umask 027):
            // the file is the desktop user's afterwards, in the VM too, so
            // uid 1234 could no longer chmod it, as with Docker's binds.
            "umask 027 && echo made > /src/open/made.txt \
             && mkdir /src/open/dir && ln -s made.txt /src/open/link",
        ],
    );
    let made = std::fs::metadata(open.join("made.txt")).unwrap();
    assert_eq!(made.uid(), owner, "the file belongs to the desktop user");
    assert_eq!(made.gid(), owner, "and to their group");
    assert_eq!(made.mode() & 0o7777, 0o640);
    assert_eq!(
        std::fs::read_to_string(open.join("made.txt")).unwrap(),
        "made\n"
    );
    let dir = std::fs::metadata(open.join("dir")).unwrap();
    assert_eq!((dir.uid(), dir.mode() & 0o7777), (owner, 0o750));
    assert_eq!(
        std::fs::read_link(open.join("link")).unwrap(),
        Path::new("made.txt")
    );
    assert_eq!(
        std::fs::symlink_metadata(open.join("link")).unwrap().uid(),
        owner
    );
    // The guest sees the desktop's modes.
    let listed = home.docker_ok(
        host,
        &[
            "run",
            "--rm",
            "-v",
            &src,
            "hello",
            "stat",
            "-c",
            "%a",
            "/src/open/dir",
        ],
    );
    assert_eq!(listed, "750");

    // Read-only: readable, not writable, and the desktop file unchanged.
    std::fs::write(ro.join("keep.txt"), "kept\n").unwrap();
    let ro_bind = format!("{ro_path}:/ro");
    assert_eq!(
        home.docker_ok(
            host,
            &[
                "run",
                "--rm",
                "-v",
                &ro_bind,
                "hello",
                "cat",
                "/ro/keep.txt"
            ]
        ),
        "kept"
    );
    let write = home.docker(
        host,
        &[
            "run",
            "--rm",
            "-v",
            &ro_bind,
            "hello",
            "sh",
            "-c",
            "echo x > /ro/keep.txt",
        ],
    );
    assert!(
        failed(&write).contains("Read-only file system"),
        "{}",
        text(&write.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(ro.join("keep.txt")).unwrap(),
        "kept\n"
    );
}

/// `sh -c script` in a root container with every capability and `bind`.
fn all_caps_sh(home: &VmHome, host: &str, bind: &str, script: &str) -> Output {
    let args = [
        "run",
        "--rm",
        "--cap-add",
        "ALL",
        "-v",
        bind,
        "hello",
        "sh",
        "-c",
        script,
    ];
    home.docker(host, &args)
}

/// What a container may not do through a share, even as root with every
/// capability the default profile grants.
fn shares_stay_hostile_ground(home: &VmHome, host: &str, rw: &Path) {
    let src = format!("{}:/src", rw.display());
    // No set-id file, no device node on the desktop.
    std::fs::write(rw.join("tool"), "#!/bin/sh\n").unwrap();
    let out = all_caps_sh(
        home,
        host,
        &src,
        "chmod 4755 /src/tool; echo chmod=$?; chmod 2755 /src/tool; echo chmodg=$?; \
         mknod /src/disk b 8 0; echo mknod=$?; mknod /src/mem c 1 1; echo mknodc=$?; \
         mkfifo /src/fifo; echo fifo=$?",
    );
    let said = text(&out.stdout);
    for refused in ["chmod=1", "chmodg=1", "mknod=1", "mknodc=1"] {
        assert!(
            said.contains(refused),
            "{refused} missing from {said}\n{}",
            text(&out.stderr)
        );
    }
    assert!(said.contains("fifo=0"), "{said}");
    let tool = std::fs::metadata(rw.join("tool")).unwrap();
    assert_eq!(tool.mode() & 0o6000, 0, "a set-id bit reached the desktop");
    assert!(!rw.join("disk").exists() && !rw.join("mem").exists());

    // Nothing past the share's root: `..` is the VM's, and a desktop
    // symlink to a desktop file outside the share leads into the VM.
    let secret = share_dir("vmctl-outside");
    let secret_file = real(secret.path()).join("secret.txt");
    std::fs::write(&secret_file, "desktop secret outside the share\n").unwrap();
    std::os::unix::fs::symlink(&secret_file, rw.join("escape")).unwrap();
    let out = home.docker(
        host,
        &[
            "run",
            "--rm",
            "-v",
            &src,
            "hello",
            "sh",
            "-c",
            "cat /src/escape; cat /src/../secret.txt; ls /src/..",
        ],
    );
    assert!(
        !text(&out.stdout).contains("desktop secret"),
        "a container read past the share: {}",
        text(&out.stdout)
    );
    // A container cannot leave a symlink on the desktop that leads out of
    // the share (the share guard refuses it); links inside are kept.
    std::fs::create_dir(rw.join("sub")).unwrap();
    let script = format!(
        "ln -s {secret} /src/planted; echo abs=$?; ln -s ../../etc /src/sub/up; echo up=$?; \
         ln -s {share}/../x /src/back; echo back=$?; ln -s ../hello.txt /src/sub/ok; echo ok=$?; \
         ln -s {share}/sub /src/ok-abs; echo okabs=$?",
        secret = secret_file.display(),
        share = rw.display(),
    );
    let out = all_caps_sh(home, host, &src, &script);
    let said = text(&out.stdout);
    for expected in ["abs=1", "up=1", "back=1", "ok=0", "okabs=0"] {
        assert!(
            said.contains(expected),
            "{expected} missing from {said}\n{}",
            text(&out.stderr)
        );
    }
    for refused in ["planted", "sub/up", "back"] {
        assert!(
            rw.join(refused).symlink_metadata().is_err(),
            "{refused} reached the desktop"
        );
    }
    assert_eq!(
        std::fs::read_link(rw.join("sub/ok")).unwrap(),
        Path::new("../hello.txt")
    );
}

#[test]
fn shares_carry_desktop_files_at_the_same_path_and_refuse_the_rest() {
    require_vm!();
    let home = VmHome::new();
    let rw = share_dir("vmctl-rw");
    let ro = share_dir("vmctl-ro");
    let (rw_path, ro_path) = (real(rw.path()), real(ro.path()));
    let ro_flag = format!("{}:ro", ro_path.display());
    // Bad shares change nothing.
    for bad in ["/proc", "/tmp", "/", "/var/tmp/vmctl-no-such-dir"] {
        let out = home.vmctl(&["machine", "init", "--mount", bad]);
        let said = failed(&out);
        assert_eq!(said.lines().count(), 1, "{said}");
        assert!(said.contains(bad), "{said}");
    }
    assert!(!home.machine_data("default").join("config.json").exists());
    home.ok(&[
        "machine",
        "init",
        "--cpus",
        "2",
        "--memory",
        "1024",
        "--disk",
        "2",
        "--mount",
        rw_path.to_str().unwrap(),
        "--mount",
        &ro_flag,
    ]);
    let status = home.ok(&["machine", "status"]);
    assert!(
        status.contains(&format!("shares:       {}", rw_path.display())),
        "{status}"
    );
    assert!(
        status.contains(&format!("{} (read-only)", ro_path.display())),
        "{status}"
    );
    assert!(status.contains("disk file:"), "{status}");
    home.ok(&["machine", "start"]);
    let host = home.docker_host();

    shares_work_for(&home, &host, &rw_path, &ro_path, 0);
    shares_stay_hostile_ground(&home, &host, &rw_path);

    // A bind outside every share is refused in one line naming the shares,
    // and leaves no container behind; the engine's socket may be bound.
    let before = home.docker_ok(&host, &["ps", "-aq"]);
    for outside in ["/etc:/x", "/var/lib/vmctl:/x"] {
        let out = home.docker(&host, &["run", "--rm", "-v", outside, "hello", "true"]);
        let said = failed(&out);
        assert!(said.contains("is not shared with the VM"), "{said}");
        assert!(said.contains(rw_path.to_str().unwrap()), "{said}");
    }
    let mount = home.docker(
        &host,
        &[
            "run",
            "--rm",
            "--mount",
            "type=bind,source=/etc,target=/x",
            "hello",
            "true",
        ],
    );
    assert!(failed(&mount).contains("is not shared with the VM"));
    assert_eq!(home.docker_ok(&host, &["ps", "-aq"]), before);
    home.docker_ok(
        &host,
        &[
            "run",
            "--rm",
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            "hello",
            "test",
            "-S",
            "/var/run/docker.sock",
        ],
    );

    // Shares change only on a stopped machine.
    let running = home.vmctl(&["machine", "set", "--mount", "none"]);
    assert!(failed(&running).lines().count() == 1);
    home.ok(&["machine", "stop"]);
    home.ok(&["machine", "set", "--mount", "none"]);
    assert!(home
        .ok(&["machine", "status"])
        .contains("shares:       none"));
    let leftovers: Vec<String> = home
        .processes()
        .into_iter()
        .filter(|p| p.contains("virtiofsd"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "virtiofsd outlived the stop: {leftovers:?}"
    );
}

/// The uid a non-root desktop user runs vmctl as.
const DESKTOP_UID: u32 = 4242;

/// `path` reachable by [`DESKTOP_UID`] (the checkout may sit under a
/// private `/root`, the image files are 0600): copied into `dir`, readable
/// and executable by all.
fn reachable(path: &Path, dir: &Path) -> PathBuf {
    let to = dir.join(path.file_name().unwrap());
    std::fs::copy(path, &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    to
}

#[test]
fn shares_keep_the_owner_for_a_desktop_user_who_is_not_root() {
    require_vm!();
    let home = VmHome::new();
    let base = home.dir.path();
    let chown =
        |path: &Path| std::os::unix::fs::chown(path, Some(DESKTOP_UID), Some(DESKTOP_UID)).unwrap();
    chown(base);
    // What the user runs: vmctl, the vsock backend, virtiofsd, the image.
    let bin = base.join("bin");
    let image = base.join("image");
    for dir in [&bin, &image] {
        std::fs::create_dir(dir).unwrap();
    }
    let vmctl = reachable(&vmctl_tests::binary("vmctl"), &bin);
    let find = |name: &str| -> PathBuf {
        let cargo = Path::new(&std::env::var("HOME").unwrap())
            .join(".cargo/bin")
            .join(name);
        if cargo.exists() {
            cargo
        } else {
            PathBuf::from(text(
                &std::process::Command::new("which")
                    .arg(name)
                    .output()
                    .unwrap()
                    .stdout,
            ))
        }
    };
    let vsock = reachable(&find("vhost-device-vsock"), &bin);
    let virtiofsd = reachable(&find("virtiofsd"), &bin);
    for file in std::fs::read_dir(vmctl_tests::vm::vm_image_dir()).unwrap() {
        let file = file.unwrap().path();
        if file.is_file() {
            reachable(&file, &image);
        }
    }
    let desktop_home = base.join("home");
    std::fs::create_dir(&desktop_home).unwrap();
    chown(&desktop_home);
    let rw = share_dir("vmctl-user");
    let ro = share_dir("vmctl-user-ro");
    for dir in [rw.path(), ro.path()] {
        chown(dir);
    }
    let (rw_path, ro_path) = (real(rw.path()), real(ro.path()));
    let as_user = |args: &[&str]| -> String {
        let mut command = std::process::Command::new(&vmctl);
        command
            .args(args)
            .env("VMCTL_HOME", base)
            .env("HOME", &desktop_home)
            .env("VMCTL_VM_IMAGE", &image)
            .env("VMCTL_VHOST_VSOCK", &vsock)
            .env("VMCTL_VIRTIOFSD", &virtiofsd)
            .env("DOCKER_CONFIG", base.join("docker-config"))
            .env_remove("XDG_RUNTIME_DIR")
            .stdin(std::process::Stdio::null())
            .uid(DESKTOP_UID)
            .gid(DESKTOP_UID);
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "vmctl {args:?} as uid {DESKTOP_UID}: {}\n{}\ndaemon log tail:\n{}\nconsole tail:\n{}",
            text(&out.stdout),
            text(&out.stderr),
            vmctl_tests::tail(&home.daemon_log("default"), 20),
            vmctl_tests::tail(&home.console_log("default"), 30),
        );
        text(&out.stdout)
    };
    let ro_flag = format!("{}:ro", ro_path.display());
    as_user(&[
        "machine",
        "init",
        "--cpus",
        "2",
        "--memory",
        "1024",
        "--disk",
        "2",
        "--mount",
        rw_path.to_str().unwrap(),
        "--mount",
        &ro_flag,
    ]);
    as_user(&["machine", "start"]);
    let host = home.docker_host();
    // Every VM process runs as the desktop user.
    for process in home.processes() {
        if process.contains("qemu-system") || process.contains("virtiofsd") {
            let pid: u32 = process.split_whitespace().next().unwrap().parse().unwrap();
            let uid = std::fs::metadata(format!("/proc/{pid}")).unwrap().uid();
            assert_eq!(uid, DESKTOP_UID, "{process}");
        }
    }
    shares_work_for(&home, &host, &rw_path, &ro_path, DESKTOP_UID);
    as_user(&["machine", "stop"]);
}

#[test]
fn removing_an_image_gives_its_space_back_to_the_desktop() {
    require_vm!();
    let home = VmHome::new();
    home.ok(&[
        "machine", "init", "--cpus", "2", "--memory", "1024", "--disk", "4", "--mount", "none",
    ]);
    home.ok(&["machine", "start"]);
    let host = home.docker_host();
    let disk = home.machine_data("default").join("disk.raw");
    let used = || std::fs::metadata(&disk).unwrap().blocks() * 512;
    let apparent = std::fs::metadata(&disk).unwrap().len();
    home.docker_ok(
        &host,
        &[
            "run",
            "--name",
            "big",
            "hello",
            "sh",
            "-c",
            "dd if=/dev/urandom of=/big bs=1M count=200 2>/dev/null && sync",
        ],
    );
    home.docker_ok(&host, &["commit", "big", "big:200m"]);
    home.docker_ok(&host, &["rm", "big"]);
    home.ok(&["machine", "ssh", "--", "sync"]);
    let full = used();
    assert!(
        full > 200 << 20,
        "the image's 200 MB is not on the desktop: {full}"
    );
    home.docker_ok(&host, &["rmi", "big:200m"]);
    let shrunk = eventually(Duration::from_secs(90), || used() < full - (150 << 20));
    let after = used();
    println!(
        "disk file: {} MiB used with the image, {} MiB after rmi ({} MiB apparent)",
        full >> 20,
        after >> 20,
        apparent >> 20
    );
    assert!(
        shrunk,
        "the disk file did not shrink: {} → {} bytes",
        full, after
    );
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), apparent);
    let status = home.ok(&["machine", "status"]);
    assert!(status.contains("apparent"), "{status}");
}
