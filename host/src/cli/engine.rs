//! Where the container verbs send their requests: `--host ADDRESS` (or
//! `$VMCTL_HOST`) when given — `unix:///path`, or `npipe:////./pipe/NAME`
//! on Windows — else the machine's forwarded endpoint, starting the machine
//! first if it is not running, as `docker` users of Docker Desktop expect.

use bollard::Docker;

use super::error::CliError;
use crate::endpoint::{Endpoint, EndpointError};
use crate::machine::{Roots, SizeFlags};

/// A client for `host`, or for machine `machine` (started when needed).
pub async fn connect(host: Option<&str>, machine: &str) -> Result<Docker, CliError> {
    let endpoint = match host {
        Some(host) => parse_host(host)?,
        None => {
            let roots = Roots::discover().map_err(super::machine::MachineCliError::from)?;
            let (machine, _, _) =
                super::machine::lifecycle::ensure_running(&roots, machine, &SizeFlags::default())
                    .await?;
            machine.paths.docker_endpoint()
        }
    };
    // bollard's local transport: a unix socket, or a named pipe on Windows.
    Docker::connect_with_local(&endpoint.to_string(), 600, bollard::API_DEFAULT_VERSION)
        .map_err(CliError::Engine)
}

/// `--host`: a local endpoint of this platform's kind.
fn parse_host(host: &str) -> Result<Endpoint, CliError> {
    let usage = |e: EndpointError| CliError::Usage(format!("--host: {e}"));
    let endpoint = Endpoint::parse(host).map_err(usage)?;
    if endpoint.is_native() {
        Ok(endpoint)
    } else {
        Err(usage(EndpointError::Unsupported(endpoint)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_addresses_of_this_platform_are_taken() {
        let (native, foreign) = if cfg!(windows) {
            ("npipe:////./pipe/vmctl-default", "unix:///run/docker.sock")
        } else {
            ("unix:///run/docker.sock", "npipe:////./pipe/vmctl-default")
        };
        assert_eq!(parse_host(native).unwrap().to_string(), native);
        let err = parse_host(foreign).unwrap_err().to_string();
        assert!(err.contains("cannot be used on this platform"), "{err}");
        let err = parse_host("tcp://127.0.0.1:2375").unwrap_err().to_string();
        assert!(
            err.starts_with("--host: unsupported address tcp://"),
            "{err}"
        );
    }
}
