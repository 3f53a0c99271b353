//! Where the container verbs send their requests: `--host unix:///path`
//! (or `$VMCTL_HOST`) when given, else the machine's forwarded socket —
//! starting the machine first if it is not running, as `docker` users of
//! Docker Desktop expect.

use std::path::PathBuf;

use bollard::Docker;

use super::error::CliError;
use crate::machine::{Roots, SizeFlags};

/// A client for `host`, or for machine `machine` (started when needed).
pub async fn connect(host: Option<&str>, machine: &str) -> Result<Docker, CliError> {
    let socket = match host {
        Some(host) => host
            .strip_prefix("unix://")
            .filter(|p| p.starts_with('/'))
            .map(PathBuf::from)
            .ok_or_else(|| {
                CliError::Usage(format!("unsupported --host {host}: use unix:///path"))
            })?,
        None => {
            let roots = Roots::discover().map_err(super::machine::MachineCliError::from)?;
            let (machine, _, _) =
                super::machine::lifecycle::ensure_running(&roots, machine, &SizeFlags::default())
                    .await?;
            machine.paths.docker_socket()
        }
    };
    Docker::connect_with_unix(&socket.to_string_lossy(), 600, bollard::API_DEFAULT_VERSION)
        .map_err(CliError::Engine)
}
