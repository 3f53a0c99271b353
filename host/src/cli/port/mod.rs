//! `vmctl port add|rm|ls`: manual VM port rules (a desktop address to a port
//! of the VM itself — boot2docker's `VBoxManage --natpf`, but live, no stop
//! needed) and a view of every forward, published ports included. One file
//! per verb. VM-only: a standalone engine (`--host`) publishes ports itself.

pub mod add;
pub mod ls;
pub mod rm;

use clap::Subcommand;

use crate::daemon::protocol::{self, ClientError, DaemonRequest, DaemonResponse};
use crate::machine::{status, Machine, MachineError, Roots};

#[derive(Debug, Subcommand)]
pub enum PortCommand {
    /// Forward a desktop port to a port of the VM, at once.
    Add(add::Args),
    /// Remove port rules by name or host port.
    Rm(rm::Args),
    /// List port rules and published ports with their traffic.
    Ls(ls::Args),
}

#[derive(Debug, thiserror::Error)]
pub enum PortCliError {
    #[error(transparent)]
    Machine(#[from] MachineError),
    #[error(transparent)]
    Daemon(#[from] ClientError),
    #[error("vmctl port manages the VM's port forwards; with --host (a standalone engine) published ports already listen on that host")]
    Standalone,
    #[error("no port rule or host port {0} (see `vmctl port ls`)")]
    NoSuchRule(String),
}

/// Runs a `vmctl port` verb on `machine` (`host` set: not a VM).
pub async fn dispatch(
    host: Option<&str>,
    machine: &str,
    command: PortCommand,
) -> Result<i32, PortCliError> {
    if host.is_some() {
        return Err(PortCliError::Standalone);
    }
    let roots = Roots::discover()?;
    let machine = Machine::load_or_default(&roots, machine)?;
    match command {
        PortCommand::Add(args) => add::run(&machine, args).await,
        PortCommand::Rm(args) => rm::run(&machine, args).await,
        PortCommand::Ls(args) => ls::run(&machine, args).await,
    }
}

/// The running daemon's answer to `request`; `None` when the machine is not
/// running (rules then change on disk and apply at its next start).
async fn ask_daemon(
    machine: &Machine,
    request: DaemonRequest,
) -> Result<Option<DaemonResponse>, PortCliError> {
    if !status::liveness(&machine.paths).daemon {
        return Ok(None);
    }
    let (response, _) = protocol::request(&machine.paths.daemon_endpoint(), &request).await?;
    Ok(Some(response))
}
