//! `pull`: pulling and unpacking a ~200 MB, four-layer image from a registry
//! on loopback: vmctl-guest (`docker pull`, which streams each layer through
//! its digest, the decompressor and the unpacker, four layers at once up to
//! three downloads) vs `skopeo copy` to an OCI layout followed by `umoci
//! unpack` of it (the two-step pipeline of tools that store before they
//! unpack), in the same run.
//!
//! The image is made of real files (the machine's `/usr`, walked in sorted
//! order, about 35–70 MB per layer), gzip at the default level as registries
//! serve them, and pushed with skopeo to Debian's `docker-registry` on
//! 127.0.0.1 inside the engine's network namespace; every contender runs in
//! that namespace. Between runs the pulled image is removed (vmctl: `docker
//! rmi`, which deletes its unshared layers; peer: its directories), so each
//! run pulls everything. Both write to the same filesystem; vmctl also syncs
//! it before a layer takes its name, the peers do not.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::json;
use vmctl_tests::oci_layout::{Layer, Layout};
use vmctl_tests::registry::{self, Registry};

use crate::machine::{first_line, on_path};
use crate::report::{Report, Series};

/// Bytes of file content per layer.
const LAYER_BYTES: u64 = 32 << 20;
/// Where the layers' files come from (one tree per layer).
const SOURCES: [&str; 4] = [
    "/usr/lib/x86_64-linux-gnu",
    "/usr/share",
    "/usr/bin",
    "/usr/lib",
];

pub fn run(runs: Option<usize>, warmups: Option<usize>) -> Result<Report> {
    let (runs, warmups) = (runs.unwrap_or(5), warmups.unwrap_or(1));
    let mut skipped = Vec::new();
    for tool in ["docker-registry", "skopeo", "umoci"] {
        if !on_path(tool) {
            skipped.push((
                tool.to_owned(),
                format!("{tool} is not on PATH (apt-get install {tool})"),
            ));
        }
    }
    ensure!(
        !skipped.iter().any(|(t, _)| t == "docker-registry"),
        "the pull benchmark needs docker-registry (apt-get install docker-registry)"
    );
    let peer = skipped.is_empty();
    let engine = vmctl_tests::Engine::start();
    let _registry = Registry::start(&engine);
    let work = engine.dir.path().join("bench");
    std::fs::create_dir_all(&work)?;

    let started = Instant::now();
    let mut layout = Layout::create(&work.join("source"));
    let mut layers = Vec::new();
    let mut content = 0u64;
    for source in SOURCES {
        let (tar, bytes) = tree_layer(Path::new(source), LAYER_BYTES)?;
        content += bytes;
        layers.push(Layer { tar, gzip: true });
    }
    let manifest = layout.image("amd64", &layers, json!({ "Cmd": ["/bin/true"] }), None);
    drop(layers);
    let compressed: u64 = std::fs::read_dir(layout.dir.join("blobs/sha256"))?
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    layout.tag(&manifest, "bench");
    registry::push(
        &engine,
        &layout.source("bench"),
        "bench:1",
        &["--format", "oci"],
    );
    println!(
        "pull: image of {} layers, {:.0} MB of files, {:.0} MB gzip, built and pushed in {:.1} s",
        SOURCES.len(),
        content as f64 / 1e6,
        compressed as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    let name = registry::image("bench:1");

    let mut vmctl = Series::new("vmctl", "docker pull: streamed download + verify + unpack");
    let mut pipeline = Series::new(
        "skopeo+umoci",
        "skopeo copy docker:// → oci: layout, then umoci unpack",
    );
    let mut copy_only = Series::new("(skopeo copy alone)", "the download step of the peer");
    for round in 0..warmups + runs {
        let measured = round >= warmups;
        // Alternate who goes first so neither always gets a warm cache.
        for turn in 0..2 {
            if (round + turn) % 2 == 0 {
                let took = time(|| {
                    engine.ok(&["pull", "-q", &name]);
                    Ok(())
                })?;
                engine.ok(&["rmi", &name]);
                if measured {
                    vmctl.samples.push(took);
                }
            } else if peer {
                let dir = work.join(format!("peer-{round}"));
                std::fs::create_dir_all(&dir)?;
                let oci = format!("oci:{}:bench", dir.join("layout").display());
                let copy_started = Instant::now();
                registry::skopeo(
                    &engine,
                    &[
                        "copy",
                        "--quiet",
                        "--src-tls-verify=false",
                        &format!("docker://{name}"),
                        &oci,
                    ],
                );
                let copied = copy_started.elapsed();
                let out = engine.in_namespaces(&[
                    "umoci",
                    "unpack",
                    "--image",
                    &format!("{}:bench", dir.join("layout").display()),
                    &dir.join("bundle").display().to_string(),
                ]);
                let took = copy_started.elapsed();
                ensure!(
                    out.status.success(),
                    "umoci unpack failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("remove {}", dir.display()))?;
                if measured {
                    pipeline.samples.push(took);
                    copy_only.samples.push(copied);
                }
            }
        }
    }
    let mut series = vec![vmctl];
    if peer {
        series.push(pipeline);
        series.push(copy_only);
    }
    let mut report = Report {
        bench: "pull",
        workload: format!(
            "pull + unpack of a {}-layer image ({:.0} MB of files, {:.0} MB gzip) from docker-registry on loopback",
            SOURCES.len(),
            content as f64 / 1e6,
            compressed as f64 / 1e6
        ),
        runs,
        warmups,
        series,
        derived: Vec::new(),
        reference: if peer { "skopeo+umoci".into() } else { "vmctl".into() },
        skipped,
        goals: Vec::new(),
    };
    if let (Some(ours), Some(theirs)) = (report.median("vmctl"), report.median("skopeo+umoci")) {
        let speedup = theirs / ours;
        let verdict = if speedup >= 1.5 { "MET" } else { "MISSED" };
        report.goals.push(format!(
            "vmctl ≥ 1.5× faster than skopeo copy + umoci unpack: {verdict} ({speedup:.2}×)"
        ));
    }
    for (tool, args) in [
        ("skopeo", &["--version"][..]),
        ("umoci", &["--version"][..]),
        ("docker-registry", &["--version"][..]),
    ] {
        if let Some(version) = first_line(tool, args) {
            report.goals.push(format!("{tool}: {version}"));
        }
    }
    Ok(report)
}

fn time(f: impl FnOnce() -> Result<()>) -> Result<Duration> {
    let started = Instant::now();
    f()?;
    Ok(started.elapsed())
}

/// A tar of the files under `root` in sorted order (directories, regular
/// files, symlinks) until `budget` bytes of content; answers it and the
/// bytes of content it holds.
fn tree_layer(root: &Path, budget: u64) -> Result<(Vec<u8>, u64)> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    let mut bytes = 0u64;
    let mut stack: Vec<PathBuf> = vec![root.to_owned()];
    let base = Path::new("/");
    while let Some(dir) = stack.pop() {
        if bytes >= budget {
            break;
        }
        let mut entries: Vec<_> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries.flatten().collect(),
            Err(_) => continue,
        };
        entries.sort_by_key(|e| e.file_name());
        let name = dir.strip_prefix(base).unwrap_or(&dir);
        builder
            .append_path_with_name(&dir, name)
            .with_context(|| format!("tar {}", dir.display()))?;
        let mut subdirs = Vec::new();
        for entry in entries {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_dir() {
                subdirs.push(path);
            } else if kind.is_file() || kind.is_symlink() {
                if bytes >= budget {
                    break;
                }
                let Ok(meta) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                if kind.is_file() && std::fs::File::open(&path).is_err() {
                    continue;
                }
                let name = path.strip_prefix(base).unwrap_or(&path);
                if builder.append_path_with_name(&path, name).is_ok() && kind.is_file() {
                    bytes += meta.len();
                }
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    Ok((builder.into_inner()?, bytes))
}
