//! A desktop edit wakes an inotify watcher in a container: the daemon
//! watches what running containers bind from a share and the guest raises
//! the event (`host/src/file_events`, `guest/src/vm/file_events.rs`). The
//! file's bytes and modification time stay what the desktop wrote, and the
//! guest's own touch does not come back as another change (no echo loop).
//!
//! The latency printed is from the desktop's write to the watcher's line
//! arriving through `docker logs -f` (an upper bound: the log stream's own
//! way out of the VM is in it); the goal is 0.5 s, the assertion
//! is generous.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::json;
use vmctl_tests::vm::VmHome;
use vmctl_tests::{eventually, require_vm};

/// How long booting and pulling things together may take under TCG.
const LONG: Duration = Duration::from_secs(120);

/// How long one event may take to show: generous; the goal is 0.5 s.
const EVENT_LIMIT: Duration = Duration::from_secs(5);

/// Saves measured of each kind.
const ROUNDS: usize = 5;

/// `docker logs -f NAME`, each line with the moment it arrived.
struct Logs {
    child: Child,
    lines: Receiver<(Instant, String)>,
}

impl Logs {
    fn follow(home: &VmHome, host: &str, name: &str) -> Self {
        let mut child = Command::new("docker")
            .args(["logs", "-f", name])
            .env("DOCKER_HOST", host)
            .env("DOCKER_CONFIG", home.dir.path().join("docker-config"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run docker logs -f");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send((Instant::now(), line)).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    /// Lines until one for which `wanted` holds, within `limit`: that
    /// line's arrival and every line before it; else every line seen.
    fn until(
        &self,
        limit: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<(Instant, Vec<String>), Vec<String>> {
        let deadline = Instant::now() + limit;
        let mut before = Vec::new();
        loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Err(before);
            };
            let Ok((at, line)) = self.lines.recv_timeout(left) else {
                return Err(before);
            };
            if wanted(&line) {
                return Ok((at, before));
            }
            before.push(line);
        }
    }
}

impl Drop for Logs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The watcher's line for a close-after-write of `name`.
fn closed_after_write(line: &str, name: &str) -> bool {
    line.split_once(' ')
        .is_some_and(|(events, file)| file == name && events.split(',').any(|e| e == "CLOSE_WRITE"))
}

fn append(path: &Path, text: &str) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open for append");
    file.write_all(text.as_bytes()).expect("append");
}

/// An editor's atomic save: a temporary file renamed over the old one.
fn save_atomically(path: &Path, text: &str) {
    let temporary = path.with_extension("js.swp");
    std::fs::write(&temporary, text).expect("write the temporary file");
    std::fs::rename(&temporary, path).expect("rename over");
}

fn summary(latencies: &mut [Duration]) -> String {
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "min {:.0} ms, median {:.0} ms, max {:.0} ms",
        ms(latencies[0]),
        ms(latencies[latencies.len() / 2]),
        ms(latencies[latencies.len() - 1])
    )
}

#[test]
fn desktop_edits_wake_a_watcher_in_a_container() {
    require_vm!();
    let home = VmHome::new();
    // Not under /tmp: the VM keeps its own /tmp and refuses a share there.
    let desktop = tempfile::Builder::new()
        .prefix("vmctl-events")
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    let dir = desktop.path().canonicalize().expect("canonical");
    let dir_text = dir.display().to_string();
    let app = dir.join("app.js");
    std::fs::write(&app, "console.log(0)\n").expect("write app.js");
    home.ok(&[
        "machine", "init", "--cpus", "2", "--memory", "1024", "--disk", "2", "--mount", &dir_text,
    ]);
    home.ok(&["machine", "start"]);
    let host = home.docker_host();
    let image = vmctl_tests::netpeer::one_file_image(
        "watch",
        json!({"Entrypoint": ["/watch"], "Cmd": ["/src"]}),
        "watch:latest",
    );
    home.docker_ok(&host, &["load", "-q", "-i", &image.display().to_string()]);
    let bind = format!("{dir_text}:/src");
    home.docker_ok(
        &host,
        &[
            "run",
            "-d",
            "--name",
            "watcher",
            "-v",
            &bind,
            "watch:latest",
        ],
    );
    let logs = Logs::follow(&home, &host, "watcher");
    assert!(
        logs.until(LONG, |line| line == "ready").is_ok(),
        "the watcher never started: {}",
        vmctl_tests::tail(&home.daemon_log("default"), 20)
    );

    // The daemon watches the bind once it has seen the container start.
    let warm = dir.join("warm");
    let mut round = 0;
    assert!(
        eventually(LONG, || {
            round += 1;
            append(&warm, &format!("{round}\n"));
            logs.until(Duration::from_millis(500), |l| {
                closed_after_write(l, "warm")
            })
            .is_ok()
        }),
        "a desktop write never reached the container's watcher:\ndaemon log:\n{}\nconsole:\n{}",
        vmctl_tests::tail(&home.daemon_log("default"), 30),
        vmctl_tests::tail(&home.console_log("default"), 30)
    );
    // Let the warm-up's own events pass.
    let sentinel = dir.join("sentinel");
    append(&sentinel, "0\n");
    logs.until(EVENT_LIMIT, |l| closed_after_write(l, "sentinel"))
        .expect("the sentinel's event");

    let mut in_place = Vec::new();
    let mut atomic = Vec::new();
    for n in 0..ROUNDS {
        for (kind, latencies) in [("in place", &mut in_place), ("atomic", &mut atomic)] {
            let text = format!("console.log({n}) // {kind}\n");
            let written = Instant::now();
            if kind == "atomic" {
                save_atomically(&app, &format!("// saved\n{text}"));
            } else {
                append(&app, &text);
            }
            let bytes = std::fs::read(&app).expect("read app.js");
            let modified = std::fs::metadata(&app)
                .and_then(|m| m.modified())
                .expect("mtime");
            let (arrived, _) = logs
                .until(EVENT_LIMIT, |l| closed_after_write(l, "app.js"))
                .unwrap_or_else(|seen| {
                    panic!(
                        "no CLOSE_WRITE for app.js within {EVENT_LIMIT:?} after a save {kind} (the watcher said {seen:?})\ndaemon log:\n{}\nconsole:\n{}",
                        vmctl_tests::tail(&home.daemon_log("default"), 30),
                        vmctl_tests::tail(&home.console_log("default"), 30)
                    )
                });
            latencies.push(arrived - written);
            // Raising the event changed nothing on the desktop.
            assert_eq!(std::fs::read(&app).expect("read app.js"), bytes);
            assert_eq!(
                std::fs::metadata(&app)
                    .and_then(|m| m.modified())
                    .expect("mtime"),
                modified,
                "the raise moved app.js's mtime"
            );
            // What the raise itself did on the desktop comes back as
            // nothing: the next change's event arrives with at most the
            // one or two app.js lines one save makes.
            append(&sentinel, "1\n");
            let (_, before) = logs
                .until(EVENT_LIMIT, |l| closed_after_write(l, "sentinel"))
                .expect("the sentinel's event");
            let echoes = before
                .iter()
                .filter(|l| closed_after_write(l, "app.js"))
                .count();
            assert!(echoes <= 2, "app.js events keep coming: {before:?}");
        }
    }
    // The container reads what the desktop wrote.
    let seen = home.docker_ok(
        &host,
        &["run", "--rm", "-v", &bind, "hello", "cat", "/src/app.js"],
    );
    assert_eq!(
        seen,
        String::from_utf8_lossy(&std::fs::read(&app).expect("read")).trim()
    );
    eprintln!(
        "desktop save → container watcher (via docker logs -f), {ROUNDS} each: in place {}; atomic save {}",
        summary(&mut in_place),
        summary(&mut atomic)
    );
}
