//! `shares`: a desktop directory seen from the VM over virtio-fs (vmctl's
//! share: `virtiofsd` per share, `vhost-user-fs-pci`) against the same
//! directory over QEMU's virtio-9p (the peer, what Lima and Podman machine
//! use on QEMU) and against the VM's own disk (ext4 on virtio-blk, the
//! ceiling), in one VM in the same run, interleaved.
//!
//! - **virtio-fs**: `DIR/virtio-fs`, where `DIR` (a fresh directory under
//!   `/var/tmp`) is the machine's `--mount` and the guest mounts it at the
//!   same path (virtiofsd `--cache auto`).
//! - **virtio-9p**: `DIR` exported a second time by QEMU itself
//!   (`VMCTL_QEMU_9P`: `-virtfs local,security_model=none,multidevs=remap`),
//!   mounted at `/mnt/9p` with `trans=virtio,version=9p2000.L,msize=512000,
//!   cache=mmap` (the largest msize Linux 6.1's virtio transport takes, and
//!   Lima's cache mode for a writable 9p mount: no page cache for data, so
//!   desktop edits show at once), working in `/mnt/9p/9p`.
//! - **VM disk**: `/var/lib/vmctl/bench-shares`, the VM's data disk.
//!
//! Workloads, each timed inside the VM by the shell that runs it: the
//! guest kernel's monotonic clock in nanoseconds, read before and after from
//! the `now at N nsecs` line of `/proc/timer_list` with the shell's own
//! `read` (no process; the guest's busybox `date` has no `%N`), so the
//! `vmctl machine ssh` round trip that carries the script is not in it. The
//! guest's caches are dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`)
//! just before the clock starts:
//!
//! - **seq write**: `dd if=/dev/zero bs=1M count=256 conv=fsync` to a file;
//! - **seq read**: `dd bs=1M` of that file to `/dev/null`;
//! - **create**: 10 000 files of 2 bytes (`echo x > fN`, a shell builtin:
//!   no process per file) in a new directory, as a program makes them (no
//!   `sync` in the timed part: on the VM disk they may sit in the guest's
//!   page cache, on both shares each one is made on the host at once);
//! - **stat**: `[ -f fN ]` (one `stat` per name, no process per file) of the
//!   10 000 just created;
//! - **find**: busybox `find | wc -l` over a tree of 100 directories × 200
//!   files, made once per target before anything is timed.
//!
//! The host's page cache is left alone: all three targets are files on the
//! same host file system (the VM disk is a raw file, `cache=writeback`), so
//! each reads what the host holds on the same footing.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use vmctl_tests::vm::VmHome;

use crate::report::{Report, Series};

pub const NAMES: [&str; 1] = ["shares"];

/// The sequential file, in MiB.
const BIG_MIB: u32 = 256;
const SMALL_FILES: u32 = 10_000;
const TREE_DIRS: u32 = 100;
const TREE_FILES: u32 = 200;

/// The 9p mount in the VM, and its options.
const NINEP_MOUNT: &str = "/mnt/9p";
const NINEP_OPTIONS: &str = "trans=virtio,version=9p2000.L,msize=512000,cache=mmap";

/// Shell functions every script starts with: `drop` empties the guest's
/// caches, `mark` prints the monotonic clock (ns) for the host to parse.
const PRELUDE: &str = "drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }; \
     mark() { while read a b c d; do [ \"$a $b\" = 'now at' ] && break; done \
     < /proc/timer_list; echo \"vmctl-bench-$1 $c\"; }; ";

/// One place to put files, and the directory the workloads run in.
struct Target {
    name: &'static str,
    note: &'static str,
    dir: String,
}

/// The five workloads, in the order of each run.
#[derive(Debug, Clone, Copy)]
enum Workload {
    Write,
    Read,
    Create,
    Stat,
    Find,
}

impl Workload {
    const ALL: [Workload; 5] = [
        Workload::Write,
        Workload::Read,
        Workload::Create,
        Workload::Stat,
        Workload::Find,
    ];

    /// The script for run `run` in the target's directory: untimed setup,
    /// `mark start`, the work, `mark end`, and what the host checks after.
    fn script(self, dir: &str, run: usize) -> String {
        let body = match self {
            Workload::Write => format!(
                "rm -f big; drop; mark start; \
                 dd if=/dev/zero of=big bs=1M count={BIG_MIB} conv=fsync 2>/dev/null; \
                 mark end; echo \"vmctl-bench-check $(wc -c < big)\""
            ),
            Workload::Read => "drop; mark start; dd if=big of=/dev/null bs=1M 2>/dev/null; \
                 mark end; echo \"vmctl-bench-check $(wc -c < big)\""
                .to_owned(),
            Workload::Create => format!(
                "rm -rf small-{run}; mkdir small-{run}; cd small-{run}; drop; mark start; \
                 i=0; while [ $i -lt {SMALL_FILES} ]; do echo x > f$i; i=$((i+1)); done; \
                 mark end; sync; echo \"vmctl-bench-check $(ls | wc -l)\""
            ),
            Workload::Stat => format!(
                "cd small-{run}; drop; mark start; \
                 i=0; n=0; while [ $i -lt {SMALL_FILES} ]; do \
                 [ -f f$i ] && n=$((n+1)); i=$((i+1)); done; \
                 mark end; echo \"vmctl-bench-check $n\""
            ),
            Workload::Find => "drop; mark start; n=$(find tree | wc -l); mark end; \
                 echo \"vmctl-bench-check $n\""
                .to_owned(),
        };
        format!("{PRELUDE}cd '{dir}' || exit 1; {body}")
    }

    /// What the script's check line must say.
    fn expected(self) -> u64 {
        match self {
            Workload::Write | Workload::Read => u64::from(BIG_MIB) << 20,
            Workload::Create | Workload::Stat => u64::from(SMALL_FILES),
            Workload::Find => u64::from(1 + TREE_DIRS + TREE_DIRS * TREE_FILES),
        }
    }
}

/// The tree `find` walks, made once in the target's directory.
fn tree_script(dir: &str) -> String {
    format!(
        "cd '{dir}' || exit 1; rm -rf tree; mkdir tree; cd tree; \
         d=0; while [ $d -lt {TREE_DIRS} ]; do mkdir d$d; \
         f=0; while [ $f -lt {TREE_FILES} ]; do : > d$d/f$f; f=$((f+1)); done; \
         d=$((d+1)); done; sync"
    )
}

/// The elapsed time between the `mark start` and `mark end` lines, and
/// the number on the check line.
fn parse(stdout: &str) -> Result<(Duration, u64)> {
    let field = |key: &str| -> Result<u64> {
        let value = stdout
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .with_context(|| format!("no {key:?} line in {stdout:?}"))?;
        value
            .trim()
            .parse()
            .with_context(|| format!("{key:?} {value:?}: not a number"))
    };
    let (start, end) = (field("vmctl-bench-start ")?, field("vmctl-bench-end ")?);
    ensure!(end >= start, "the VM's clock went back ({start} → {end})");
    Ok((
        Duration::from_nanos(end - start),
        field("vmctl-bench-check ")?,
    ))
}

/// `vmctl machine ssh -- sh -c SCRIPT` in the default machine; its stdout.
fn in_vm(home: &VmHome, script: &str) -> Result<String> {
    let out = home.vmctl(&["machine", "ssh", "--", "sh", "-c", script]);
    if !out.status.success() {
        bail!(
            "in the VM: {script}\nexit {:?}: {}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn status_field(home: &VmHome, field: &str) -> Option<String> {
    let out = home.vmctl(&["machine", "status"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_owned()))
}

pub fn run(runs: Option<usize>, warmups: Option<usize>) -> Result<Vec<Report>> {
    if let Some(reason) = vmctl_tests::vm::missing_vm_prerequisite() {
        println!("SKIPPED shares: {reason}");
        return Ok(Vec::new());
    }
    let (runs, warmups) = (runs.unwrap_or(3), warmups.unwrap_or(0));
    // Declared before the home, so dropped after the machine stopped.
    let share = tempfile::Builder::new()
        .prefix("vmctl-bench-shares")
        .tempdir_in("/var/tmp")
        .context("a share directory in /var/tmp")?;
    let share_dir = share.path().display().to_string();
    for sub in ["virtio-fs", "9p"] {
        std::fs::create_dir(share.path().join(sub))?;
    }
    let home = VmHome::new();
    let out = home.vmctl(&[
        "machine", "init", "--cpus", "2", "--memory", "2048", "--disk", "4", "--mount", &share_dir,
    ]);
    ensure!(
        out.status.success(),
        "machine init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = home
        .vmctl_command(&["machine", "start"])
        .env("VMCTL_QEMU_9P", &share_dir)
        .output()?;
    if !out.status.success() {
        bail!(
            "machine start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            vmctl_tests::tail(&home.daemon_log("default"), 20)
        );
    }
    let accel = status_field(&home, "hypervisor:").unwrap_or_default();
    let targets = [
        Target {
            name: "virtio-fs",
            note: "vmctl's share: virtiofsd --cache auto, vhost-user-fs-pci",
            dir: format!("{share_dir}/virtio-fs"),
        },
        Target {
            name: "virtio-9p",
            note: "QEMU -virtfs security_model=none; msize=512000,cache=mmap",
            dir: format!("{NINEP_MOUNT}/9p"),
        },
        Target {
            name: "VM disk",
            note: "ext4 on virtio-blk (raw file, cache=writeback)",
            dir: "/var/lib/vmctl/bench-shares".to_owned(),
        },
    ];
    in_vm(
        &home,
        &format!(
            "set -e; grep -q ' {share_dir} virtiofs ' /proc/mounts; \
             mkdir -p {NINEP_MOUNT} /var/lib/vmctl/bench-shares; \
             mount -t 9p -o {NINEP_OPTIONS} vmctl-9p {NINEP_MOUNT}; \
             grep -q ' {NINEP_MOUNT} 9p ' /proc/mounts"
        ),
    )
    .context("the virtio-fs share and the 9p mount")?;
    for target in &targets {
        in_vm(&home, &tree_script(&target.dir))
            .with_context(|| format!("{}: the tree for find", target.name))?;
    }

    let mut series: Vec<Vec<Series>> = Workload::ALL
        .iter()
        .map(|_| {
            targets
                .iter()
                .map(|t| Series::new(t.name, t.note))
                .collect()
        })
        .collect();
    for run in 0..warmups + runs {
        for (w, workload) in Workload::ALL.iter().enumerate() {
            for (t, target) in targets.iter().enumerate() {
                let stdout = in_vm(&home, &workload.script(&target.dir, run))?;
                let (took, check) =
                    parse(&stdout).with_context(|| format!("{workload:?} on {}", target.name))?;
                ensure!(
                    check == workload.expected(),
                    "{workload:?} on {}: counted {check}, expected {}",
                    target.name,
                    workload.expected()
                );
                if run >= warmups {
                    series[w][t].samples.push(took);
                }
            }
        }
    }
    let _ = home.vmctl(&["machine", "stop"]);

    let setup = format!(
        "2 vCPUs, 2 GiB; accelerator: {}",
        if accel.is_empty() { "?" } else { &accel }
    );
    Ok(Workload::ALL
        .iter()
        .zip(series)
        .map(|(workload, series)| report(*workload, series, &setup, runs, warmups))
        .collect())
}

/// The report of one workload: reference virtio-fs, so each ratio is how
/// many times virtio-fs's time the row takes.
fn report(
    workload: Workload,
    series: Vec<Series>,
    setup: &str,
    runs: usize,
    warmups: usize,
) -> Report {
    let median = |name: &str| {
        series
            .iter()
            .find(|s| s.name == name)
            .and_then(Series::summary)
            .map_or(f64::NAN, |s| s.median_ms)
    };
    let (fs, ninep, disk) = (median("virtio-fs"), median("virtio-9p"), median("VM disk"));
    let mib_s = |ms: f64| f64::from(BIG_MIB) / (ms / 1000.0);
    let verdict = |met: bool| if met { "met" } else { "missed" };
    let small_goal = || {
        let speedup = ninep / fs;
        vec![format!(
            "virtio-fs ≥ 2× virtio-9p: {} ({speedup:.2}×)",
            verdict(speedup >= 2.0)
        )]
    };
    let (bench, what, goals) = match workload {
        Workload::Write => (
            "shares-seq-write",
            format!(
                "dd 256 MiB from /dev/zero, bs=1M, conv=fsync ({:.0} MiB/s virtio-fs, \
                 {:.0} MiB/s virtio-9p, {:.0} MiB/s VM disk)",
                mib_s(fs),
                mib_s(ninep),
                mib_s(disk)
            ),
            Vec::new(),
        ),
        Workload::Read => {
            let share = disk / fs;
            (
                "shares-seq-read",
                format!(
                    "dd 256 MiB to /dev/null, bs=1M, guest caches dropped ({:.0} MiB/s \
                     virtio-fs, {:.0} MiB/s virtio-9p, {:.0} MiB/s VM disk)",
                    mib_s(fs),
                    mib_s(ninep),
                    mib_s(disk)
                ),
                vec![format!(
                    "virtio-fs sequential read ≥ 0.75× the VM disk's: {} ({share:.2}×)",
                    verdict(share >= 0.75)
                )],
            )
        }
        Workload::Create => (
            "shares-create",
            format!("create {SMALL_FILES} files of 2 bytes (sh builtin echo), no sync"),
            small_goal(),
        ),
        Workload::Stat => (
            "shares-stat",
            format!("stat {SMALL_FILES} files by name ([ -f ]), guest caches dropped"),
            small_goal(),
        ),
        Workload::Find => (
            "shares-find",
            format!(
                "find | wc -l over {TREE_DIRS} dirs × {TREE_FILES} files, guest caches dropped"
            ),
            small_goal(),
        ),
    };
    Report {
        bench,
        workload: format!("{what}; {setup}"),
        runs,
        warmups,
        series,
        derived: Vec::new(),
        reference: "virtio-fs".into(),
        skipped: Vec::new(),
        goals,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_elapsed_time_is_end_minus_start_in_the_vm() {
        let stdout = "noise\nvmctl-bench-start 1000000000\nvmctl-bench-end 1250000000\n\
                      vmctl-bench-check 10000\n";
        let (took, check) = parse(stdout).unwrap();
        assert_eq!(took, Duration::from_millis(250));
        assert_eq!(check, 10_000);
    }

    #[test]
    fn a_missing_clock_reading_is_an_error() {
        let stdout = "vmctl-bench-start \nvmctl-bench-end 2\nvmctl-bench-check 1\n";
        let error = format!("{:#}", parse(stdout).unwrap_err());
        assert!(error.contains("not a number"), "{error}");
    }

    #[test]
    fn the_find_check_counts_the_root_the_dirs_and_the_files() {
        assert_eq!(Workload::Find.expected(), 20_101);
    }

    /// The small-file scripts in busybox sh (the guest's shell) on a host
    /// directory, caches left alone: they time something and count what
    /// the host expects.
    #[test]
    fn the_small_file_scripts_run_in_busybox_sh_and_count_right() {
        if std::fs::File::open("/proc/timer_list").is_err()
            || std::process::Command::new("busybox")
                .arg("true")
                .output()
                .is_err()
        {
            eprintln!("SKIPPED: needs busybox and a readable /proc/timer_list (root)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().display().to_string();
        let sh = |script: &str| {
            let script = script.replace("echo 3 > /proc/sys/vm/drop_caches", ":");
            let out = std::process::Command::new("busybox")
                .args(["sh", "-c", &script])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        sh(&tree_script(&dir));
        for workload in [Workload::Create, Workload::Stat, Workload::Find] {
            let (took, check) = parse(&sh(&workload.script(&dir, 0))).unwrap();
            assert!(took > Duration::ZERO, "{workload:?}");
            assert_eq!(check, workload.expected(), "{workload:?}");
        }
    }
}
