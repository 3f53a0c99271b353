//! `vmctl-bench`: vmctl side by side with its peers, on the same work, in the
//! same run.
//!
//! ```text
//! vmctl-bench [all|runtime|api|network|pull|build|build-host-fs|vm|vm-ports|shares]... [--json FILE] [--runs N] [--warmups N]
//! ```
//!
//! - `runtime` ([`runtime`]): `/bin/true` start→exit through vmctl's monitor,
//!   runc and crun (50 runs after 5 warmups).
//! - `api` ([`api`]): `docker run --rm --network none hello true` against
//!   vmctl-guest and Debian's dockerd (30 runs after 3 warmups).
//! - `network` ([`network`], in private network namespaces): one container's
//!   interface set up by the engine's netlink code vs `ip` and `ip -batch`
//!   (200 runs after 20 warmups; part `network-setup`), and TCP throughput
//!   into a container, direct vs published port vs socat (3 runs of 3 s;
//!   part `network-throughput`).
//! - `vm` ([`vm`], needs the VM image in `target/vm`): `vmctl machine start`
//!   until the engine answers vs a bare QEMU + kernel boot (5 runs; part
//!   `vm-boot`), and `GET /version` through the forwarded socket vs raw hybrid
//!   vsock vs the standalone engine (200 runs after 20 warmups; part `vm-api`).
//! - `shares` ([`shares`], needs the VM image and virtiofsd): a desktop
//!   directory in the VM over virtio-fs vs QEMU's virtio-9p vs the VM's own
//!   disk — sequential write and read of 256 MiB, creating and stat-ing
//!   10 000 small files, `find` over 20 000 (3 runs).
//! - `pull` ([`pull`]): pull + unpack of a ~200 MB four-layer image from
//!   Debian's `docker-registry` on loopback, vmctl vs `skopeo copy` + `umoci
//!   unpack` (5 runs after 1 warmup).
//! - `build` ([`build`]): `docker build` (classic builder) of a Dockerfile
//!   with a COPY of 10 000 small files and a 4 MiB one and six RUN steps,
//!   cold, cached and after one file changed, vmctl-guest vs Debian's
//!   dockerd, both on a fresh ext4 with a journal as the VM's data disk is
//!   (5 runs after 1 warmup); `build-host-fs` the same on this host's `/tmp`.
//!
//! Each benchmark prints a table (median, min, max, ratio to the reference)
//! and `--json` writes every sample with the machine facts and tool versions.
//! A missing peer is skipped with a printed reason. No result is a pass or a
//! fail: goals are reported as met or missed, the exit code only says whether
//! the benchmark could run. `--runs`/`--warmups` override the defaults (for a
//! quick try; published numbers use the defaults).

mod api;
mod build;
mod crun;
mod machine;
mod network;
mod network_setup;
mod network_throughput;
mod pull;
mod report;
mod runtime;
mod shares;
mod vm;
mod vm_ports;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use serde_json::json;

/// The benchmarks of `all` (and of no argument).
const ALL: [&str; 8] = [
    "runtime", "api", "network", "pull", "build", "vm", "vm-ports", "shares",
];

/// What to run and where to write, from the command line.
#[derive(Debug, Default)]
struct Args {
    benches: Vec<String>,
    json: Option<PathBuf>,
    runs: Option<usize>,
    warmups: Option<usize>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args::default();
    let mut iter = std::env::args().skip(1);
    while let Some(arg) = iter.next() {
        let mut value = |flag: &str| iter.next().with_context(|| format!("{flag} needs a value"));
        match arg.as_str() {
            "--json" => args.json = Some(PathBuf::from(value("--json")?)),
            "--runs" => args.runs = Some(value("--runs")?.parse()?),
            "--warmups" => args.warmups = Some(value("--warmups")?.parse()?),
            "all" => args.benches.extend(ALL.map(String::from)),
            "runtime" | "api" | "pull" | "build" | "build-host-fs" => args.benches.push(arg),
            name if network::NAMES.contains(&name) => args.benches.push(arg),
            name if vm::NAMES.contains(&name) => args.benches.push(arg),
            name if vm_ports::NAMES.contains(&name) => args.benches.push(arg),
            name if shares::NAMES.contains(&name) => args.benches.push(arg),
            "-h" | "--help" => {
                println!(
                    "usage: vmctl-bench [all|runtime|api|network|network-setup|network-throughput|pull|build|build-host-fs|vm|vm-boot|vm-api|vm-ports|vm-ports-ideas|shares]... \
                     [--json FILE] [--runs N] [--warmups N]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if args.benches.is_empty() {
        args.benches = ALL.map(String::from).to_vec();
    }
    Ok(args)
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some(crun::HELPER_ARG) {
        return match crun::crun_helper() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                println!("error {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmctl-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args = parse_args()?;
    if let Some(reason) = vmctl_tests::missing_prerequisite() {
        println!("SKIPPED every benchmark: {reason}");
        return Ok(());
    }
    let facts = machine::facts();
    print!("{}", machine::describe(&facts));
    let mut reports = Vec::new();
    for bench in &args.benches {
        let (table, json) = match bench.as_str() {
            "runtime" => {
                let guest = vmctl_tests::binary("vmctl-guest");
                let report =
                    runtime::run(&guest, args.runs.unwrap_or(50), args.warmups.unwrap_or(5))?;
                (report.table(), vec![report.json()])
            }
            "api" => {
                let report = api::run(args.runs.unwrap_or(30), args.warmups.unwrap_or(3))?;
                (report.table(), vec![report.json()])
            }
            "pull" => {
                let report = pull::run(args.runs, args.warmups)?;
                (report.table(), vec![report.json()])
            }
            "build" | "build-host-fs" => {
                let on = if bench == "build" {
                    build::Filesystem::Ext4
                } else {
                    build::Filesystem::Host
                };
                let reports = build::run(args.runs, args.warmups, on)?;
                let table = reports.iter().map(|r| r.table()).collect::<String>();
                (table, reports.iter().map(|r| r.json()).collect())
            }
            "shares" => {
                let reports = shares::run(args.runs, args.warmups)?;
                let table = reports.iter().map(|r| r.table()).collect::<String>();
                (table, reports.iter().map(|r| r.json()).collect())
            }
            ports if vm_ports::NAMES.contains(&ports) => {
                let reports = vm_ports::run(ports, args.runs, args.warmups)?;
                let table = reports.iter().map(|r| r.table()).collect::<String>();
                (table, reports.iter().map(|r| r.json()).collect())
            }
            vm if vm::NAMES.contains(&vm) => {
                let reports = vm::run(vm, args.runs, args.warmups)?;
                let table = reports.iter().map(|r| r.table()).collect::<String>();
                (table, reports.iter().map(|r| r.json()).collect())
            }
            network => {
                let report = network::run(network, args.runs, args.warmups)?;
                (report.table(), report.json())
            }
        };
        print!("{table}");
        println!(
            "load average now: {}",
            machine::loadavg().unwrap_or_default()
        );
        reports.extend(json);
    }
    if let Some(path) = &args.json {
        let doc = json!({
            "machine": facts,
            "loadavg_after": machine::loadavg(),
            "benches": reports,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("\nJSON written to {}", path.display());
    }
    Ok(())
}
