//! Pulls in the VM: the engine inside the VM pulls from a registry on the
//! desktop's loopback (reached as QEMU's user-mode gateway 10.0.2.2), with
//! the machine's `--insecure-registry` setting carried to it on the kernel
//! command line; `vmctl pull` and `vmctl run` of a missing image both work.

use std::process::{Command, Stdio};
use std::time::Duration;

use vmctl_tests::vm::{free_port, VmHome};
use vmctl_tests::{builtin_images, eventually, require_vm, Background};

/// Debian's docker-registry on 127.0.0.1:`port` of the desktop, storing in `dir`.
fn host_registry(dir: &std::path::Path, port: u16) -> Background {
    let config = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
        dir.join("data").display()
    );
    std::fs::create_dir_all(dir.join("data")).expect("registry dir");
    std::fs::write(dir.join("config.yml"), config).expect("registry config");
    let registry = Background::spawn(
        Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml")),
    );
    let up = eventually(Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "registry on 127.0.0.1:{port} did not start");
    registry
}

#[test]
fn the_vm_pulls_from_a_registry_on_the_desktop() {
    require_vm!();
    let home = VmHome::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _registry = host_registry(dir.path(), port);
    let status = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!(
            "docker-archive:{}",
            builtin_images().join("hello.tar").display()
        ))
        .arg(format!("docker://127.0.0.1:{port}/pulled:1"))
        .stdin(Stdio::null())
        .status()
        .expect("skopeo");
    assert!(status.success(), "skopeo copy to the host registry");

    let registry = format!("10.0.2.2:{port}");
    let refused = home.vmctl(&["machine", "init", "--insecure-registry", "http://x"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--insecure-registry"));
    home.ok(&[
        "machine",
        "init",
        "--cpus",
        "2",
        "--memory",
        "1024",
        "--disk",
        "2",
        "--insecure-registry",
        &registry,
    ]);
    home.ok(&["machine", "start"]);
    let image = format!("{registry}/pulled:1");
    let out = home.ok(&["pull", &image]);
    assert!(
        out.contains("Pull complete") || out.contains("Already exists"),
        "{out}"
    );
    assert!(out.contains("Downloaded newer image"), "{out}");
    let out = home.ok(&["run", "--rm", &image, "echo", "pulled in the VM"]);
    assert!(out.contains("pulled in the VM"), "{out}");
    // `run` of an image the VM lacks pulls it first.
    let env = home.ok(&["machine", "env"]);
    let docker_host = env
        .lines()
        .find_map(|l| l.strip_prefix("export DOCKER_HOST="))
        .expect("DOCKER_HOST in machine env");
    let removed = home.docker(docker_host, &["rmi", &image]);
    assert!(removed.status.success(), "{removed:?}");
    let out = home.ok(&["run", "--rm", &image, "echo", "auto"]);
    assert!(out.contains("auto"), "{out}");
    home.ok(&["machine", "stop"]);
}
