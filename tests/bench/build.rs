//! `build`: `docker build` with the classic builder (`DOCKER_BUILDKIT=0`),
//! vmctl-guest against Debian's dockerd 20.10, the same Dockerfile and
//! context, in the same run.
//!
//! The workload is the issue's: a Dockerfile with a COPY of a 10 000-file
//! context (100 directories of 100 files, 100–300 bytes each, and one
//! 4 MiB file) and six RUN steps, on the project's `hello` image, so
//! nothing comes from the network. Three rows, each measured on both
//! engines:
//!
//! - `cold`: `docker build --no-cache` — every step runs, the context is
//!   sent and the COPY hashes its sources;
//! - `cached`: the same build again — every step from the cache;
//! - `one file changed`: a source file gets new content, then a build —
//!   the cache holds up to the `COPY src/`, the steps after it run.
//!
//! vmctl-guest runs as the e2e harness runs it ([`vmctl_tests::Engine`]),
//! dockerd as the differential suite's oracle ([`vmctl_tests::Dockerd`]:
//! private namespaces, overlay2 on the same disk). Each round builds on
//! both engines, alternating which goes first; the time is the whole
//! `docker build` command (CLI, context upload, build), its output read
//! and dropped.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

use crate::machine::first_line;
use crate::report::{Report, Series};

/// Small files in the context: directories × files per directory.
const DIRS: usize = 100;
const FILES_PER_DIR: usize = 100;
/// The one big file.
const BIG_BYTES: usize = 4 << 20;

const DOCKERFILE: &str = r#"FROM hello
WORKDIR /build
COPY big.bin ./
COPY src/ ./src/
RUN find src -type f | wc -l > count
RUN cat src/d00/f0000.txt > first
RUN sha256sum big.bin > big.sum
RUN tar -cf /build/src.tar src
RUN mkdir -p /app && cp count first big.sum /app/
RUN ls -l /app > /app/listing
CMD ["cat", "/app/listing"]
"#;

/// The three kinds of build, in the order a round runs them.
const ROWS: [(&str, &str); 3] = [
    ("cold", "docker build --no-cache: every step runs"),
    ("cached", "the same build again: every step from the cache"),
    (
        "one file changed",
        "one source file changed: cached up to COPY src/, the rest runs",
    ),
];

/// The file a `one file changed` build edits.
const EDITED: &str = "src/d07/f0742.txt";

/// The filesystem both engines' directories are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filesystem {
    /// A fresh ext4 made as the VM's data disk is (`mke2fs -t ext4`, with
    /// its journal), loop-mounted from a file for the run: what the
    /// engine stands on in the VM, and dockerd in Docker Desktop's.
    Ext4,
    /// This host's `/tmp`.
    Host,
}

pub fn run(runs: Option<usize>, warmups: Option<usize>, on: Filesystem) -> Result<Vec<Report>> {
    let (runs, warmups) = (runs.unwrap_or(5), warmups.unwrap_or(1));
    // Made first, so it is dropped (unmounted) after both engines.
    let fs = match on {
        Filesystem::Ext4 => Some(LoopExt4::make()?),
        Filesystem::Host => None,
    };
    if let Some(fs) = &fs {
        std::env::set_var("VMCTL_TEST_TMPDIR", &fs.dir);
        println!(
            "build: both engines on a fresh ext4 (journal) loop-mounted at {}",
            fs.dir.display()
        );
    } else {
        println!("build: both engines on this host's /tmp");
    }
    let engine = vmctl_tests::Engine::start();
    let missing = vmctl_tests::dockerd::dockerd_missing();
    let dockerd = missing.is_none().then(vmctl_tests::Dockerd::start);
    let context = engine.dir.path().join("build-context");
    let (files, bytes) = write_context(&context)?;
    println!(
        "build: context of {files} files, {:.1} MB, {} RUN steps",
        bytes as f64 / 1e6,
        DOCKERFILE.matches("\nRUN ").count()
    );

    // series[row][0] is vmctl's, series[row][1] dockerd's.
    let mut series: Vec<[Series; 2]> = ROWS
        .iter()
        .map(|(_, note)| [Series::new("vmctl", note), Series::new("dockerd", note)])
        .collect();
    let mut edits = 0usize;
    for round in 0..warmups + runs {
        for turn in 0..2 {
            let ours = (round + turn) % 2 == 0;
            let docker = || -> Option<Command> {
                match (ours, &dockerd) {
                    (true, _) => Some(engine.docker_cmd()),
                    (false, Some(dockerd)) => Some(dockerd.docker_cmd()),
                    (false, None) => None,
                }
            };
            if docker().is_none() {
                continue;
            }
            let who = if ours { "vmctl" } else { "dockerd" };
            for (row, (name, _)) in ROWS.iter().enumerate() {
                if *name == "one file changed" {
                    edits += 1;
                    std::fs::write(context.join(EDITED), format!("edit {edits}\n"))?;
                }
                let no_cache: &[&str] = if row == 0 { &["--no-cache"] } else { &[] };
                let command = docker().context("engine")?;
                let took = time_build(command, no_cache, &context)
                    .with_context(|| format!("{who}: {name} build"))?;
                if round >= warmups {
                    series[row][usize::from(!ours)].samples.push(took);
                }
            }
        }
    }

    let server = dockerd.as_ref().and_then(|d| {
        let out = d
            .docker_cmd()
            .args(["version", "--format", "{{.Server.Version}}"])
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    });
    drop(dockerd);
    drop(engine);
    drop(fs);
    let skipped: Vec<(String, String)> = missing
        .map(|why| vec![("dockerd".to_owned(), why)])
        .unwrap_or_default();
    let mut reports = Vec::new();
    for ((name, _), [ours, theirs]) in ROWS.iter().zip(series) {
        let peer = !theirs.samples.is_empty();
        let mut report = Report {
            bench: match on {
                Filesystem::Ext4 => "build",
                Filesystem::Host => "build-host-fs",
            },
            workload: format!(
                "{name}: COPY of {files} files ({:.1} MB) and 6 RUN steps on hello, DOCKER_BUILDKIT=0, on {}",
                bytes as f64 / 1e6,
                match on {
                    Filesystem::Ext4 => "a fresh ext4 with a journal",
                    Filesystem::Host => "the host's /tmp",
                }
            ),
            runs,
            warmups,
            series: if peer { vec![ours, theirs] } else { vec![ours] },
            derived: Vec::new(),
            reference: if peer { "dockerd" } else { "vmctl" }.into(),
            skipped: skipped.clone(),
            goals: Vec::new(),
        };
        if let (Some(vmctl), Some(dockerd)) = (report.median("vmctl"), report.median("dockerd")) {
            report.goals.push(format!(
                "speed-up vmctl over dockerd {}: {:.2}× ({vmctl:.0} ms vs {dockerd:.0} ms)",
                server.as_deref().unwrap_or("?"),
                dockerd / vmctl
            ));
        }
        if let Some(cli) = first_line("docker", &["--version"]) {
            report.goals.push(format!("client: {cli}"));
        }
        reports.push(report);
    }
    Ok(reports)
}

/// Writes the Dockerfile, the small files and the big one; answers the
/// number of files and their bytes.
fn write_context(dir: &Path) -> Result<(usize, u64)> {
    let mut files = 0;
    let mut bytes = 0u64;
    let mut write = |path: &Path, data: &[u8]| -> Result<()> {
        std::fs::create_dir_all(path.parent().context("parent")?)?;
        std::fs::write(path, data).with_context(|| format!("write {}", path.display()))?;
        files += 1;
        bytes += data.len() as u64;
        Ok(())
    };
    write(&dir.join("Dockerfile"), DOCKERFILE.as_bytes())?;
    for d in 0..DIRS {
        for f in 0..FILES_PER_DIR {
            let n = d * FILES_PER_DIR + f;
            let line = format!("file {n} of directory {d}\n");
            let text = line.repeat(4 + n % 9);
            write(
                &dir.join(format!("src/d{d:02}/f{n:04}.txt")),
                text.as_bytes(),
            )?;
        }
    }
    // Deterministic bytes that do not compress (xorshift).
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let big: Vec<u8> = (0..BIG_BYTES / 8)
        .flat_map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()
        })
        .collect();
    write(&dir.join("big.bin"), &big)?;
    Ok((files, bytes))
}

/// Times one `docker build` of `context` (output read and dropped) and
/// checks that it succeeded.
/// Lets the filesystem settle before a timed build: everything written
/// so far is synced, then [`SETTLE`] passes. On an ext4 without a journal
/// (this host's root) the kernel skips, on every inode it allocates, the
/// inodes freed in the last 5 s (300 s while their inode table block is
/// still dirty): files deleted by the build before, on either engine,
/// would slow the next build's file creation by an amount that depends on
/// who deleted last, not on the build measured.
fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::thread::sleep(SETTLE);
}

/// How long [`settle`] waits after the sync: the kernel's 5 s, and one more.
const SETTLE: Duration = Duration::from_secs(6);

fn time_build(mut command: Command, extra: &[&str], context: &Path) -> Result<Duration> {
    command
        .env("DOCKER_BUILDKIT", "0")
        .arg("build")
        .args(extra)
        .args(["-t", "bench-build:latest"])
        .arg(context)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    settle();
    let started = Instant::now();
    let out = command.output().context("cannot run docker build")?;
    let took = started.elapsed();
    ensure!(
        out.status.success(),
        "docker build failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(took)
}

/// An ext4 made for the run in a sparse file, loop-mounted; unmounted
/// and removed when dropped.
struct LoopExt4 {
    file: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl LoopExt4 {
    /// Room for the run's images and layers on both engines.
    const SIZE: u64 = 16 << 30;

    fn make() -> Result<Self> {
        let base = std::path::PathBuf::from("/var/tmp");
        let name = format!("vmctl-bench-build-{}", std::process::id());
        let fs = Self {
            file: base.join(format!("{name}.ext4")),
            dir: base.join(name),
        };
        std::fs::File::create(&fs.file)
            .and_then(|f| f.set_len(Self::SIZE))
            .with_context(|| format!("cannot make {}", fs.file.display()))?;
        std::fs::create_dir_all(&fs.dir)?;
        // As guest/src/vm/disk.rs formats the VM's data disk.
        let made = Command::new("mke2fs")
            .args([
                "-t",
                "ext4",
                "-q",
                "-F",
                "-E",
                "lazy_itable_init=1,lazy_journal_init=1",
            ])
            .arg(&fs.file)
            .status()
            .context("cannot run mke2fs")?;
        ensure!(
            made.success(),
            "mke2fs {} failed: {made}",
            fs.file.display()
        );
        let mounted = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&fs.file)
            .arg(&fs.dir)
            .status()
            .context("cannot run mount")?;
        ensure!(
            mounted.success(),
            "mount -o loop {} failed: {mounted}",
            fs.file.display()
        );
        Ok(fs)
    }
}

impl Drop for LoopExt4 {
    fn drop(&mut self) {
        // Lazily: a namespace that still holds it lets go when it ends.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
        let _ = std::fs::remove_file(&self.file);
    }
}
