//! A vmctl machine for end-to-end tests and benchmarks: `VMCTL_HOME` in a
//! temp dir, the VM image from `target/vm`, the `vmctl` CLI and the docker
//! CLI aimed at the machine's forwarded socket.
//!
//! `VMCTL_GUEST_ARCH=arm64` (the variable vmctl itself reads) runs the same
//! tests on the arm64 image, `target/vm-arm64`, under
//! `qemu-system-aarch64` (`tests/arm64`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Why VM tests cannot run here, if they cannot.
pub fn missing_vm_prerequisite() -> Option<String> {
    if let Some(reason) = crate::missing_prerequisite() {
        return Some(reason);
    }
    let image = vm_image_dir();
    if !image.join("vmlinux").exists() || !image.join("initramfs.img").exists() {
        return Some(format!(
            "no VM image in {} (tests/run builds it: vmctl-image vm)",
            image.display()
        ));
    }
    let qemu = match guest_arch() {
        "arm64" => "qemu-system-aarch64",
        _ => "qemu-system-x86_64",
    };
    if Command::new(qemu).arg("--version").output().is_err() {
        return Some(format!("{qemu} is not installed"));
    }
    None
}

/// The guest architecture under test: `$VMCTL_GUEST_ARCH` (`amd64`,
/// `arm64`), else amd64 (the machines the suite runs on).
pub fn guest_arch() -> &'static str {
    match std::env::var("VMCTL_GUEST_ARCH").as_deref() {
        Ok("arm64") | Ok("aarch64") => "arm64",
        _ => "amd64",
    }
}

/// Skips a VM test loudly — or fails it when `VMCTL_REQUIRE_VM=1` (CI),
/// so a missing image can never pass as a skip there.
#[macro_export]
macro_rules! require_vm {
    () => {
        if let Some(reason) = $crate::vm::missing_vm_prerequisite() {
            if std::env::var("VMCTL_REQUIRE_VM").is_ok_and(|v| v == "1") {
                panic!("VM test cannot run: {reason}");
            }
            eprintln!("SKIPPED: {reason}");
            return;
        }
    };
}

/// `target/vm`, `target/vm-arm64` for arm64 (or `$VMCTL_VM_IMAGE`).
pub fn vm_image_dir() -> PathBuf {
    match std::env::var_os("VMCTL_VM_IMAGE") {
        Some(dir) => PathBuf::from(dir),
        None if guest_arch() == "arm64" => crate::bin_dir().join("../vm-arm64"),
        None => crate::bin_dir().join("../vm"),
    }
}

/// A private vmctl home; stops its machines and deletes itself on drop.
pub struct VmHome {
    pub dir: tempfile::TempDir,
}

impl VmHome {
    pub fn new() -> Self {
        // Short: unix socket paths under it must stay below 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("vmh")
            .tempdir_in("/tmp")
            .expect("tempdir");
        Self { dir }
    }

    /// `vmctl ARGS` with this home.
    pub fn vmctl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(crate::binary("vmctl"));
        command
            .args(args)
            .env("VMCTL_HOME", self.dir.path())
            .env("VMCTL_VM_IMAGE", vm_image_dir())
            .env("DOCKER_CONFIG", self.dir.path().join("docker-config"))
            .stdin(Stdio::null());
        command
    }

    pub fn vmctl(&self, args: &[&str]) -> Output {
        self.vmctl_command(args).output().expect("run vmctl")
    }

    /// `vmctl ARGS`, which must succeed; answers its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.vmctl(args);
        assert!(
            out.status.success(),
            "vmctl {args:?} failed ({:?}):\nstdout: {}\nstderr: {}\ndaemon log tail:\n{}\nconsole tail:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            crate::tail(&self.daemon_log("default"), 20),
            crate::tail(&self.console_log("default"), 30),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn machine_data(&self, name: &str) -> PathBuf {
        self.dir.path().join("data/machines").join(name)
    }

    pub fn machine_run(&self, name: &str) -> PathBuf {
        self.dir.path().join("run").join(name)
    }

    pub fn docker_socket(&self, name: &str) -> PathBuf {
        self.machine_run(name).join("docker.sock")
    }

    pub fn daemon_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.machine_data(name).join("daemon.log")).unwrap_or_default()
    }

    pub fn console_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.machine_data(name).join("console.log")).unwrap_or_default()
    }

    /// A pid from the machine's run dir (`daemon.pid`, `vmm.pid`, `vsock.pid`).
    pub fn pid(&self, name: &str, file: &str) -> Option<u32> {
        std::fs::read_to_string(self.machine_run(name).join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// `DOCKER_HOST` of the default machine, as `vmctl machine env` prints it.
    pub fn docker_host(&self) -> String {
        let env = self.ok(&["machine", "env"]);
        env.lines()
            .find_map(|l| l.strip_prefix("export DOCKER_HOST="))
            .unwrap_or_else(|| panic!("no DOCKER_HOST in {env:?}"))
            .to_owned()
    }

    /// `docker ARGS` against `docker_host`: its trimmed stdout, or a panic
    /// with its output and the tails of the default machine's daemon log
    /// (boot lines left out) and console.
    pub fn docker_ok(&self, docker_host: &str, args: &[&str]) -> String {
        let out = self.docker(docker_host, args);
        let daemon: Vec<String> = self
            .daemon_log("default")
            .lines()
            .filter(|l| !l.contains("launching QEMU"))
            .map(str::to_owned)
            .collect();
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}\n{}\ndaemon log tail:\n{}\nconsole tail:\n{}",
            text(&out.stdout),
            text(&out.stderr),
            crate::tail(&daemon.join("\n"), 30),
            crate::tail(&self.console_log("default"), 40),
        );
        text(&out.stdout)
    }

    /// The docker CLI aimed at `socket` (DOCKER_HOST as `vmctl machine env` prints it).
    pub fn docker(&self, docker_host: &str, args: &[&str]) -> Output {
        Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", docker_host)
            .env("DOCKER_CONFIG", self.dir.path().join("docker-config"))
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    /// Processes whose command line mentions this home (QEMU, the vsock
    /// backend, daemons): none may survive a stop.
    pub fn processes(&self) -> Vec<String> {
        processes_mentioning(self.dir.path())
    }
}

impl Default for VmHome {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for VmHome {
    fn drop(&mut self) {
        let machines = std::fs::read_dir(self.dir.path().join("data/machines"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok());
        for name in machines {
            let _ = self.vmctl_command(&["machine", "stop", &name]).output();
        }
        for line in self.processes() {
            if let Some(pid) = line
                .split_whitespace()
                .next()
                .and_then(|p| p.parse::<i32>().ok())
            {
                // SAFETY: kill with a pid read from /proc; the worst case is ESRCH.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// `pid cmdline` of every process whose command line contains `needle`.
pub fn processes_mentioning(needle: &Path) -> Vec<String> {
    let needle = needle.to_string_lossy().into_owned();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        // Or started with VMCTL_HOME pointing there (the daemon's keeper).
        let home = format!("VMCTL_HOME={needle}");
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let in_home = environ.split(|&b| b == 0).any(|v| v == home.as_bytes());
        if (text.contains(&needle) || in_home) && pid != std::process::id() {
            found.push(format!("{pid} {text}"));
        }
    }
    found
}

/// A command's output as trimmed text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_owned()
}

/// The permission bits of `path`.
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Whether anything accepts TCP on the desktop's 127.0.0.1:`port`.
pub fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A desktop port nothing uses now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
