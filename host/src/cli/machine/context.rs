//! The docker CLI context of a machine (`vmctl`, or `vmctl-NAME`), kept
//! pointing at the machine's Docker endpoint when the docker CLI is installed. It is
//! created, never switched to: `docker --context vmctl …` or
//! `docker context use vmctl` is the user's choice.

use std::process::{Command, Stdio};

use crate::endpoint::Endpoint;
use crate::machine::DEFAULT_MACHINE;

pub fn name(machine: &str) -> String {
    if machine == DEFAULT_MACHINE {
        "vmctl".to_owned()
    } else {
        format!("vmctl-{machine}")
    }
}

fn docker(args: &[&str]) -> bool {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Creates or updates the context; silent when docker is missing.
pub fn ensure(machine: &str, api: &Endpoint) {
    let context = name(machine);
    let endpoint = format!("host={api}");
    let description = format!("vmctl machine {machine}");
    let verb = if docker(&["context", "inspect", &context]) {
        "update"
    } else {
        "create"
    };
    if !docker(&[
        "context",
        verb,
        &context,
        "--description",
        &description,
        "--docker",
        &endpoint,
    ]) {
        tracing::debug!(%context, "no docker context (docker CLI missing or refused)");
    }
}

pub fn remove(machine: &str) {
    let context = name(machine);
    if docker(&["context", "inspect", &context]) {
        docker(&["context", "rm", "-f", &context]);
    }
}
