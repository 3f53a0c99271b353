//! The harness of vmctl's end-to-end suites: a real `vmctl-guest serve` in
//! namespaces of its own, driven by the real `docker` CLI (and by `bollard`
//! as a second, independent client).
//!
//! Each [`Engine`] gets a private mount and network namespace, held open by a
//! small holder process, so the engine can be killed and started again in
//! the same namespaces (live restore), a state directory in a tempdir, and a
//! cgroup parent of its own. Dropping it removes every container, stops the
//! engine and the holder, and so releases every mount.
//!
//! The networking suites add an [`Outside`] namespace standing in for the
//! LAN (see [`outside`]) and read the engine's namespace with
//! [`Engine::links`] and [`Engine::nft_ruleset`].

pub mod compose;
pub mod http;
pub mod netpeer;
pub mod oci_layout;
pub mod outside;
pub mod probe;
pub mod registry;
pub mod sdk;
pub mod vm;

#[cfg(test)]
mod builtin_images_tests;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod dockerd;
pub use dockerd::Dockerd;
pub use outside::{Background, Outside};

/// Skips a test loudly (not silently passing) when it cannot run here.
#[macro_export]
macro_rules! require_root {
    () => {
        if let Some(reason) = $crate::missing_prerequisite() {
            eprintln!("SKIPPED: {reason}");
            return;
        }
    };
}

/// Why end-to-end tests cannot run on this machine, if they cannot.
pub fn missing_prerequisite() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("end-to-end tests need root (namespaces, cgroups, mounts)".into());
    }
    if Command::new("docker").arg("--version").output().is_err() {
        return Some("the docker CLI is not installed".into());
    }
    if !Path::new(BUSYBOX).exists() {
        return Some(format!("{BUSYBOX} (busybox-static) is missing"));
    }
    None
}

const BUSYBOX: &str = "/bin/busybox";

/// The directory holding the workspace's built binaries (`target/debug` or
/// `target/release`), from a test (`deps/`) or from a binary beside them.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("target dir");
    // target/debug/deps/e2e-xxxx → target/debug; target/release/vmctl-bench → target/release
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir.parent().expect("target dir").to_owned()
    } else {
        dir.to_owned()
    }
}

/// Where engines (and dockerd) make their directories:
/// `$VMCTL_TEST_TMPDIR` when set (a bench puts both engines on a
/// filesystem of its own), else `/tmp`.
pub fn scratch_base() -> PathBuf {
    std::env::var_os("VMCTL_TEST_TMPDIR").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from)
}

/// Path of a workspace binary; panics with the command that builds it.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` first",
        path.display()
    );
    path
}

/// A directory holding `hello.tar`, built once per test process with the
/// project's own image builder.
pub fn builtin_images() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Under target/ (no litter in /tmp); the build is reproducible, so
        // test binaries running at once may each write it and rename.
        let dir = bin_dir().join("e2e-images");
        std::fs::create_dir_all(&dir).expect("images dir");
        let tmp = dir.join(format!(".hello.tar.{}", std::process::id()));
        let mut file = std::fs::File::create(&tmp).expect("hello.tar");
        vmctl_image::hello::build(Path::new(BUSYBOX), &mut file).expect("build hello");
        std::fs::rename(&tmp, dir.join("hello.tar")).expect("hello.tar");
        dir
    })
}

/// A running engine in namespaces of its own.
pub struct Engine {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub cgroup_parent: String,
    /// Extra `vmctl-guest serve` flags, kept for every (re)spawn.
    args: Vec<String>,
    holder: Child,
    engine: Option<Child>,
}

impl Engine {
    /// Starts an engine (in fresh mount and network namespaces).
    pub fn start() -> Engine {
        Engine::start_with(&[])
    }

    /// Starts an engine with extra `vmctl-guest serve` flags (`--bip
    /// 10.55.0.1/24`, `--icc=false`); [`Engine::spawn_engine`] passes them
    /// again after a kill.
    pub fn start_with(args: &[&str]) -> Engine {
        let dir = tempfile::Builder::new()
            .prefix("vmctl-e2e")
            .tempdir_in(scratch_base())
            .expect("tempdir");
        let holder = Command::new("unshare")
            .args([
                "-m",
                "-n",
                "--propagation",
                "private",
                "--fork",
                "--kill-child",
            ])
            .args([
                "sh",
                "-c",
                "ip link set lo up 2>/dev/null; exec sleep infinity",
            ])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        let cgroup_parent = format!(
            "vmctl-e2e-{}",
            dir.path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .replace('.', "")
        );
        let socket = dir.path().join("docker.sock");
        let mut engine = Engine {
            dir,
            socket,
            cgroup_parent,
            args: args.iter().map(|a| a.to_string()).collect(),
            holder,
            engine: None,
        };
        engine.wait_for_namespaces();
        engine.spawn_engine();
        engine
    }

    /// The pid of the process whose namespaces the engine uses.
    fn namespace_pid(&self) -> u32 {
        first_child(&self.holder)
    }

    fn wait_for_namespaces(&self) {
        wait_for_first_child(&self.holder);
    }

    /// Starts `vmctl-guest serve` inside the namespaces and waits for the socket.
    pub fn spawn_engine(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("engine.log"))
            .expect("engine log");
        let child = Command::new("nsenter")
            .arg("-t")
            .arg(self.namespace_pid().to_string())
            .args(["-m", "-n", "--"])
            .arg(binary("vmctl-guest"))
            .arg("serve")
            .arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--host")
            .arg(format!("unix://{}", self.socket.display()))
            .arg("--cgroup-parent")
            .arg(&self.cgroup_parent)
            .arg("--builtin-images")
            .arg(builtin_images())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start vmctl-guest");
        self.engine = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.ping() {
            if let Some(status) = self
                .engine
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "engine (flags {:?}) exited with {status}:\n{}",
                    self.args,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "engine did not come up:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::os::unix::net::UnixStream::connect(&self.socket) else {
            return false;
        };
        let _ = stream.write_all(b"GET /_ping HTTP/1.0\r\nHost: x\r\n\r\n");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.ends_with("OK")
    }

    /// Kills the engine with SIGKILL (its containers keep running).
    pub fn kill_engine(&mut self) {
        if let Some(mut child) = self.engine.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The engine's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("engine.log")).unwrap_or_default()
    }

    /// `DOCKER_HOST` for this engine.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// A `docker` command aimed at this engine.
    pub fn docker_cmd(&self) -> Command {
        docker_command(&self.socket, self.dir.path())
    }

    /// Runs `docker ARGS`.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.docker_cmd().args(args).output().expect("run docker")
    }

    /// Runs `docker ARGS`, asserts success, returns trimmed stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        expect_success(args, &self.docker(args), "engine", &self.log())
    }

    /// Runs a command inside the engine's namespaces (to look at its mounts or network).
    pub fn in_namespaces<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.namespaces_command(args).output().expect("nsenter")
    }

    /// Starts a command (a server, a listener) inside the engine's
    /// namespaces; it is killed when the answer is dropped.
    pub fn spawn_in_namespaces<S: AsRef<OsStr>>(&self, args: &[S]) -> Background {
        Background::spawn(&mut self.namespaces_command(args))
    }

    fn namespaces_command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg("-t")
            .arg(self.namespace_pid().to_string())
            .args(["-m", "-n", "--"])
            .args(args)
            .stdin(Stdio::null());
        command
    }

    /// The engine's network namespace, for `nsenter --net=`.
    pub fn net_namespace(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.namespace_pid()))
    }

    /// Fetches `url` from the engine's network namespace (as the host of
    /// the containers would): the body, or why not.
    pub fn fetch(&self, url: &str) -> Result<String, String> {
        outside::fetched(&self.in_namespaces(&outside::wget(url)))
    }

    /// Names of the links in the engine's network namespace (`ip -o link`,
    /// without the `@peer` suffix), sorted.
    pub fn links(&self) -> Vec<String> {
        let out = self.in_namespaces(&["ip", "-o", "link", "show"]);
        assert!(
            out.status.success(),
            "ip link: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| line.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name).to_owned())
            .collect();
        names.sort();
        names
    }

    /// `nft list ruleset` of the engine's network namespace, with packet
    /// and byte counts dropped so that traffic does not change it.
    pub fn nft_ruleset(&self) -> String {
        let out = self.in_namespaces(&["nft", "list", "ruleset"]);
        assert!(
            out.status.success(),
            "nft list ruleset: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        without_counts(&String::from_utf8_lossy(&out.stdout))
    }

    /// The network namespace of a running container, for `nsenter --net=`.
    pub fn container_net_namespace(&self, container: &str) -> PathBuf {
        let pid = self.ok(&["inspect", "-f", "{{.State.Pid}}", container]);
        assert!(
            pid.parse::<u32>().is_ok_and(|p| p > 0),
            "{container} has no pid: {pid:?}"
        );
        PathBuf::from(format!("/proc/{pid}/ns/net"))
    }

    /// Mount lines of the engine's mount namespace that mention its state dir.
    pub fn mounts(&self) -> Vec<String> {
        let info = std::fs::read_to_string(format!("/proc/{}/mountinfo", self.namespace_pid()))
            .unwrap_or_default();
        let root = self.dir.path().display().to_string();
        info.lines()
            .filter(|l| l.contains(&root))
            .map(str::to_owned)
            .collect()
    }

    /// Cgroup directories left under this engine's cgroup parent (v1 and v2).
    pub fn cgroups(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
            return found;
        };
        for hierarchy in hierarchies.flatten() {
            let parent = hierarchy.path().join(&self.cgroup_parent);
            if let Ok(children) = std::fs::read_dir(&parent) {
                found.extend(
                    children
                        .flatten()
                        .filter(|c| c.path().is_dir())
                        .map(|c| c.path()),
                );
            }
        }
        found
    }

    /// The engine's state root (`--root`).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The pid of `vmctl-guest serve` (nsenter execs it, so the child is the engine).
    pub fn pid(&self) -> u32 {
        self.engine.as_ref().map_or(0, Child::id)
    }

    /// How many file descriptors the engine holds open.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Everything a container leaves behind that outlives its record: records,
    /// run dirs, runtime state, mounts of container dirs, cgroups, monitors.
    /// Empty when the engine is clean.
    pub fn leftovers(&self) -> Vec<String> {
        let mut found = Vec::new();
        let root = self.root();
        let entries = |dir: PathBuf| -> Vec<String> {
            std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path().display().to_string())
                .collect()
        };
        found.extend(
            entries(root.join("containers"))
                .into_iter()
                .map(|p| format!("record {p}")),
        );
        found.extend(
            entries(root.join("run"))
                .into_iter()
                .filter(|p| !p.ends_with("/rt"))
                .map(|p| format!("run dir {p}")),
        );
        found.extend(
            entries(root.join("run/rt"))
                .into_iter()
                .map(|p| format!("runtime state {p}")),
        );
        let containers = root.join("containers").display().to_string();
        found.extend(
            self.mounts()
                .into_iter()
                .filter(|m| m.contains(&containers))
                .map(|m| format!("mount {m}")),
        );
        found.extend(
            self.cgroups()
                .into_iter()
                .map(|c| format!("cgroup {}", c.display())),
        );
        found.extend(
            self.monitors()
                .into_iter()
                .map(|p| format!("monitor pid {p}")),
        );
        found
    }

    /// Pids of monitor processes of this engine.
    pub fn monitors(&self) -> Vec<u32> {
        let root = self.dir.path().display().to_string();
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains("\0monitor\0") && cmdline.contains(&root) {
                pids.push(pid);
            }
        }
        pids
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.engine.is_some() {
            let ids = self.docker(&["ps", "-aq"]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = self.docker(&["rm", "-f", id]);
            }
        }
        self.kill_engine();
        for pid in self.monitors() {
            // SAFETY: plain kill(2) of a process this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let parent = hierarchy.path().join(&self.cgroup_parent);
            if let Ok(children) = std::fs::read_dir(&parent) {
                for child in children.flatten() {
                    let _ = std::fs::remove_dir(child.path());
                }
            }
            let _ = std::fs::remove_dir(&parent);
        }
    }
}

/// The pid of the only child of a `unshare --fork` holder (0 until it exists).
fn first_child(holder: &Child) -> u32 {
    let children = std::fs::read_to_string(format!(
        "/proc/{}/task/{}/children",
        holder.id(),
        holder.id()
    ))
    .unwrap_or_default();
    children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// Waits until a `unshare --fork` holder has its child (inside the new
/// namespaces); answers its pid.
fn wait_for_first_child(holder: &Child) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pid = first_child(holder);
        if pid != 0 {
            return pid;
        }
        assert!(Instant::now() < deadline, "namespace holder did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `nft list ruleset` text without the numbers after `packets` and `bytes`.
fn without_counts(ruleset: &str) -> String {
    let mut text = String::new();
    for line in ruleset.lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        let mut words = line.split_whitespace();
        let mut kept = Vec::new();
        while let Some(word) = words.next() {
            if word == "packets" || word == "bytes" {
                words.next();
            } else {
                kept.push(word);
            }
        }
        text.push_str(indent);
        text.push_str(&kept.join(" "));
        text.push('\n');
    }
    text
}

/// A `docker` command aimed at the engine listening on `socket`, with a
/// client config of its own under `state_dir`.
pub fn docker_command(socket: &Path, state_dir: &Path) -> Command {
    let mut command = Command::new("docker");
    command
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .env("DOCKER_CONFIG", state_dir.join("docker-config"))
        .stdin(Stdio::null());
    command
}

/// Asserts that `docker ARGS` succeeded (showing both outputs and the tail
/// of `who`'s log if not); answers its trimmed stdout.
pub fn expect_success(args: &[&str], out: &Output, who: &str, log: &str) -> String {
    assert!(
        out.status.success(),
        "docker {args:?} against {who} failed ({:?}):\nstdout: {}\nstderr: {}\n{who} log tail:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        tail(log, 30),
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Polls `check` every 20 ms until it is true (at most `limit`); answers whether it became true.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
