//! Debian's docker-compose 1.29 against the VM, from the desktop, through
//! the machine's socket: a user network with an alias, `depends_on` a
//! healthy service, a named volume, a port published on the desktop,
//! `exec`, `logs`, and `down -v` leaving nothing.

use std::io::{Read, Write};
use std::time::Duration;

use vmctl_tests::compose::{missing, run_at};
use vmctl_tests::vm::{free_port, VmHome};
use vmctl_tests::{eventually, require_vm};

fn project(port: u16) -> String {
    format!(
        r#"services:
  db:
    image: hello
    command: sh -c 'echo db-up > /data/mark; sleep 2; touch /tmp/ready; exec sleep 1000'
    healthcheck:
      test: ["CMD-SHELL", "test -f /tmp/ready"]
      interval: 1s
      retries: 30
    networks:
      back:
        aliases: [database]
    volumes:
      - data:/data
  web:
    image: hello
    depends_on:
      db:
        condition: service_healthy
    networks: [back]
    ports: ["127.0.0.1:{port}:80"]
networks:
  back: {{}}
volumes:
  data: {{}}
"#
    )
}

fn page(port: u16) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text)
}

#[test]
fn compose_runs_a_project_in_the_vm() {
    require_vm!();
    if let Some(reason) = missing() {
        eprintln!("SKIPPED: {reason}");
        return;
    }
    let home = VmHome::new();
    home.ok(&[
        "machine", "init", "--cpus", "2", "--memory", "1024", "--disk", "2",
    ]);
    home.ok(&["machine", "start"]);
    let host = home.docker_host();
    let config = home.dir.path().join("docker-config");
    let dir = home.dir.path().join("project");
    std::fs::create_dir_all(&dir).expect("project dir");
    let port = free_port();
    std::fs::write(dir.join("docker-compose.yml"), project(port)).expect("compose file");
    let compose = |args: &[&str]| {
        let out = run_at(&host, &config, &dir, "vmp", args);
        assert!(
            out.status.success(),
            "docker-compose {args:?} failed:\n{}\n{}\ndaemon log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            vmctl_tests::tail(&home.daemon_log("default"), 30)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    compose(&["up", "-d"]);
    assert_eq!(
        home.docker_ok(
            &host,
            &["inspect", "-f", "{{.State.Health.Status}}", "vmp_db_1"]
        ),
        "healthy"
    );
    // The alias on the project network, the volume, the published port.
    compose(&["exec", "-T", "web", "ping", "-c1", "-W5", "database"]);
    assert_eq!(
        compose(&["exec", "-T", "db", "cat", "/data/mark"]).trim(),
        "db-up"
    );
    assert!(
        eventually(Duration::from_secs(60), || {
            page(port).is_some_and(|p| p.contains("Hello from vmctl"))
        }),
        "the desktop's 127.0.0.1:{port} never served web's page"
    );
    assert!(compose(&["logs", "--no-color", "web"]).contains("web_1"));

    compose(&["down", "-v", "-t", "1"]);
    assert_eq!(home.docker_ok(&host, &["ps", "-aq"]), "");
    assert!(!home
        .docker_ok(&host, &["volume", "ls", "-q"])
        .contains("vmp_data"));
    assert!(!home
        .docker_ok(&host, &["network", "ls", "--format", "{{.Name}}"])
        .contains("vmp_"));
    assert!(
        eventually(Duration::from_secs(30), || page(port).is_none()),
        "the desktop still listens on {port} after down"
    );
    home.ok(&["machine", "stop"]);
}
