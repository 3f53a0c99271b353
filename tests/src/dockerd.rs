//! A real Docker engine (Debian's `docker.io`, dockerd 20.10) as the oracle of
//! the differential suite: the same docker CLI commands run against it and
//! against vmctl.
//!
//! Each [`Dockerd`] runs in a private mount and network namespace (`unshare
//! -m -n`) with loopback up, its own data-root, exec-root and cgroup parent
//! in a tempdir, and `--iptables=false --ip-forward=false --bridge=none`, so it
//! never touches a network or firewall outside its namespace. It loads the
//! project's `hello.tar` on start. Dropping it removes its containers, stops
//! dockerd (which stops its own containerd), kills whatever is left in its
//! namespaces, and removes its state and cgroups.
//!
//! It does not manage images beyond `hello`, nor any network but `none`,
//! `host` and the namespace-only default (no bridge).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::builtin_images;

/// Why a [`Dockerd`] cannot run on this machine, if it cannot.
pub fn dockerd_missing() -> Option<String> {
    if let Some(reason) = crate::missing_prerequisite() {
        return Some(reason);
    }
    let found = Command::new("dockerd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        return Some("dockerd is not installed (apt-get install -y docker.io)".into());
    }
    None
}

/// Skips a test loudly when dockerd (or anything an [`crate::Engine`] needs)
/// is missing.
#[macro_export]
macro_rules! require_dockerd {
    () => {
        if let Some(reason) = $crate::dockerd::dockerd_missing() {
            eprintln!("SKIPPED: {reason}");
            return;
        }
    };
}

/// A sandboxed dockerd with `hello:latest` loaded.
pub struct Dockerd {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub cgroup_parent: String,
    /// The `unshare` process; dockerd is its child.
    sandbox: Child,
}

impl Dockerd {
    /// Starts dockerd in fresh namespaces, waits for `_ping`, loads `hello.tar`.
    pub fn start() -> Dockerd {
        let dir = tempfile::Builder::new()
            .prefix("vmctl-dd")
            .tempdir_in(crate::scratch_base())
            .expect("tempdir");
        let root = dir.path();
        let socket = root.join("sock");
        let cgroup_parent = format!(
            "vmctl-dockerd-{}",
            root.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .replace('.', "")
        );
        let log = std::fs::File::create(root.join("dockerd.log")).expect("dockerd log");
        // ip_forward is set inside the private netns only: it silences
        // dockerd's "IPv4 forwarding is disabled" warning on every run.
        let script = format!(
            "ip link set lo up; sysctl -qw net.ipv4.ip_forward=1 2>/dev/null; \
             exec dockerd --data-root {root}/data --exec-root {root}/exec \
             --pidfile {root}/pid -H unix://{sock} --iptables=false \
             --ip-forward=false --ip-masq=false --bridge=none \
             --cgroup-parent {cgroup_parent} --userland-proxy=false",
            root = root.display(),
            sock = socket.display(),
        );
        let sandbox = Command::new("unshare")
            .args([
                "-m",
                "-n",
                "--propagation",
                "private",
                "--fork",
                "--kill-child",
            ])
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start unshare dockerd");
        let dockerd = Dockerd {
            dir,
            socket,
            cgroup_parent,
            sandbox,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !dockerd.ping() {
            assert!(
                Instant::now() < deadline,
                "dockerd did not come up:\n{}",
                crate::tail(&dockerd.log(), 30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let tar = builtin_images().join("hello.tar");
        dockerd.ok(&["load", "-q", "-i", &tar.display().to_string()]);
        dockerd
    }

    fn ping(&self) -> bool {
        self.docker_cmd()
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// dockerd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// `DOCKER_HOST` for this dockerd.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// A `docker` command aimed at this dockerd.
    pub fn docker_cmd(&self) -> Command {
        crate::docker_command(&self.socket, self.dir.path())
    }

    /// Runs `docker ARGS`.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.docker_cmd().args(args).output().expect("run docker")
    }

    /// Runs `docker ARGS`, asserts success, returns trimmed stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        crate::expect_success(args, &self.docker(args), "dockerd", &self.log())
    }

    /// The pid of dockerd itself, from its pidfile.
    fn dockerd_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.path().join("pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
    }

    /// Pids of every process in dockerd's mount namespace (dockerd,
    /// containerd, shims, containers), found through the sandbox's child.
    fn namespace_members(&self) -> Vec<i32> {
        let Ok(ns) = std::fs::read_link(format!("/proc/{}/ns/mnt", self.sandbox_child())) else {
            return Vec::new();
        };
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if std::fs::read_link(entry.path().join("ns/mnt")).is_ok_and(|n| n == ns) {
                pids.push(pid);
            }
        }
        pids
    }

    /// The sandbox's child (dockerd, once `sh` has exec'd it).
    fn sandbox_child(&self) -> u32 {
        let id = self.sandbox.id();
        std::fs::read_to_string(format!("/proc/{id}/task/{id}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let ids = self.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        let members = self.namespace_members();
        if let Some(pid) = self.dockerd_pid() {
            // SAFETY: plain kill(2) of the dockerd this helper started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        for pid in members {
            // SAFETY: plain kill(2) of a process in the namespaces this helper made.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = self.sandbox.kill();
        let _ = self.sandbox.wait();
        // The mounts lived in the private mount namespace, gone with its last
        // process; unmount anything that leaked into ours all the same.
        unmount_under(&self.dir.path().join("data"));
        unmount_under(&self.dir.path().join("exec"));
        remove_cgroups(&self.cgroup_parent);
    }
}

/// Lazily unmounts every mount point under `root` in this mount namespace.
fn unmount_under(root: &Path) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(root))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = Command::new("umount").args(["-l", point]).status();
    }
}

/// Removes `parent` and its children in every cgroup hierarchy.
fn remove_cgroups(parent: &str) {
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let dir = hierarchy.path().join(parent);
        if let Ok(children) = std::fs::read_dir(&dir) {
            for child in children.flatten().filter(|c| c.path().is_dir()) {
                let _ = std::fs::remove_dir(child.path());
            }
        }
        let _ = std::fs::remove_dir(&dir);
    }
}
