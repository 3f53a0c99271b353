//! `probe:latest`: a one-file image holding `tests/helpers/probe.rs` built
//! static, a hostile container's view of its own confinement (seccomp,
//! capabilities, no_new_privs, rlimits, cgroup, ids) and of every route to
//! AF_VSOCK it can try.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::json;

/// The image's name as `docker run` takes it.
pub const IMAGE: &str = "probe:latest";

/// `probe.tar` (`docker load` format), built once per process.
pub fn image_tar() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        crate::netpeer::one_file_image(
            "probe",
            json!({"Entrypoint": ["/probe"], "Cmd": ["serve"]}),
            IMAGE,
        )
    })
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
