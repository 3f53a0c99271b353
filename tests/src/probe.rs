//! `probe:latest`: a one-file image holding `tests/helpers/probe.rs` built
//! static, a hostile container's view of its own confinement (seccomp,
//! capabilities, no_new_privs, rlimits, cgroup, ids) and of every route to
//! AF_VSOCK it can try.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::json;

/// The image's name as `docker run` takes it.
pub const IMAGE: &str = "probe:latest";

/// `probe.tar` (`docker load` format), built once per process.
pub fn image_tar() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let dir = crate::bin_dir().join("probe");
        std::fs::create_dir_all(&dir).expect("probe dir");
        let binary = dir.join(format!("probe.{}", std::process::id()));
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("helpers/probe.rs");
        // rustc straight: std only, static, so the scratch image needs no libc.
        let out = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .args([
                "--edition",
                "2021",
                "-O",
                "-C",
                "target-feature=+crt-static",
            ])
            .args(["-C", "strip=symbols", "-o"])
            .arg(&binary)
            .arg(&source)
            .output()
            .expect("run rustc");
        assert!(
            out.status.success(),
            "rustc {}: {}",
            source.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let bytes = std::fs::read(&binary).expect("read probe");
        let _ = std::fs::remove_file(&binary);
        // Written aside and renamed: test processes running at once may each build it.
        let tmp = dir.join(format!(".probe.tar.{}", std::process::id()));
        std::fs::write(&tmp, archive(&bytes)).expect("write probe.tar");
        let tar = dir.join("probe.tar");
        std::fs::rename(&tmp, &tar).expect("probe.tar");
        tar
    })
}

fn archive(binary: &[u8]) -> Vec<u8> {
    let mut layer = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(binary.len() as u64);
    header.set_mode(0o755);
    header.set_entry_type(tar::EntryType::Regular);
    layer
        .append_data(&mut header, "probe", binary)
        .expect("layer");
    let layer = layer.into_inner().expect("layer");
    crate::netpeer::load_archive(
        &layer,
        json!({"Entrypoint": ["/probe"], "Cmd": ["serve"]}),
        IMAGE,
    )
}

/// What a probe `report` says: its lines, each `FILE LINE` (`status
/// Seccomp:\t2`, `limits Max open files …`, `cgroup 0::/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report(pub Vec<String>);

impl Report {
    /// The report in `output` (the lines before `ready`, if any).
    pub fn parse(output: &str) -> Report {
        Report(
            output
                .lines()
                .take_while(|l| *l != "ready")
                .filter(|l| {
                    ["status ", "limits ", "cgroup "]
                        .iter()
                        .any(|p| l.starts_with(p))
                })
                .map(|l| l.trim_end().to_owned())
                .collect(),
        )
    }

    /// The value of a /proc/self/status field (`Seccomp`, `CapEff`), trimmed.
    pub fn status(&self, field: &str) -> String {
        let prefix = format!("status {field}:");
        self.0
            .iter()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {field} in the report:\n{}", self.0.join("\n")))
            .trim()
            .to_owned()
    }

    /// The lines of one file of the report (`limits`, `cgroup`).
    pub fn file(&self, name: &str) -> Vec<String> {
        let prefix = format!("{name} ");
        self.0
            .iter()
            .filter(|l| l.starts_with(&prefix))
            .cloned()
            .collect()
    }
}

/// What a probe `vsock` says: each route and its outcome (`ok`,
/// `errno=N`, `killed`).
pub fn parse_routes(output: &str) -> Vec<(String, String)> {
    output
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(route, outcome)| (route.to_owned(), outcome.trim().to_owned()))
        .collect()
}
