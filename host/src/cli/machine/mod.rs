//! `vmctl machine …`: create, start, stop and inspect the VM that runs the
//! engine. One file per verb; [`lifecycle`] holds what several verbs share
//! (making sure a daemon runs, waiting for it, stopping it).

pub mod context;
pub mod env;
pub mod init;
pub mod lifecycle;
pub mod logs;
pub mod ls;
pub mod rm;
pub mod set;
pub mod ssh;
pub mod start;
pub mod status;
pub mod stop;

use clap::Subcommand;

use crate::daemon::protocol::ClientError;
use crate::machine::{MachineError, DEFAULT_MACHINE};

#[derive(Debug, Subcommand)]
pub enum MachineCommand {
    /// Create a machine (its settings and an empty data disk).
    Init(init::Args),
    /// Start a machine (creating `default` on first use).
    Start(start::Args),
    /// Change a machine's settings (`--allow-lan-ports` even while it runs).
    Set(set::Args),
    /// Stop a machine cleanly: containers stopped, disk flushed.
    Stop(NameArg),
    /// Stop and start a machine.
    Restart(NameArg),
    /// Show a machine's state, accelerator, boot time and socket.
    Status(NameArg),
    /// List machines.
    Ls,
    /// Delete a machine and its disk.
    Rm(rm::Args),
    /// Open a shell in the VM (over vsock; no sshd).
    Ssh(ssh::Args),
    /// Show the VM's console log (or the daemon's).
    Logs(logs::Args),
    /// Print the environment for the docker CLI (`eval $(vmctl machine env)`).
    Env(NameArg),
    /// Run the host daemon of a machine (started by `start`; not for users).
    #[command(hide = true)]
    Daemon(NameArg),
    /// Run the daemon and start it again if it is killed (not for users).
    #[command(hide = true)]
    Supervise(NameArg),
}

#[derive(Debug, Clone, clap::Args)]
pub struct NameArg {
    /// Machine name.
    #[arg(default_value = DEFAULT_MACHINE)]
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MachineCliError {
    #[error(transparent)]
    Machine(#[from] MachineError),
    #[error(transparent)]
    Daemon(#[from] ClientError),
    #[error("cannot start the vmctl daemon")]
    Spawn(#[source] std::io::Error),
    #[error("machine {name} failed to start: {reason}")]
    StartFailed { name: String, reason: String },
    #[error("machine {0} is running; stop it before changing --cpus, --memory or --disk")]
    RunningResize(String),
    #[error("machine {0} is not running (start it with `vmctl machine start`)")]
    NotRunning(String),
    #[error(transparent)]
    Daemonize(#[from] crate::daemon::DaemonError),
    #[error("{0}")]
    Io(String),
}

/// Runs a `machine` verb; answers the exit code.
pub async fn dispatch(command: MachineCommand) -> Result<i32, MachineCliError> {
    let roots = crate::machine::Roots::discover()?;
    match command {
        MachineCommand::Init(args) => init::run(&roots, args),
        MachineCommand::Start(args) => start::run(&roots, args).await,
        MachineCommand::Set(args) => set::run(&roots, args).await,
        MachineCommand::Stop(args) => stop::run(&roots, &args.name).await,
        MachineCommand::Restart(args) => {
            stop::run(&roots, &args.name).await?;
            start::run(&roots, start::Args::named(args.name)).await
        }
        MachineCommand::Status(args) => status::run(&roots, &args.name).await,
        MachineCommand::Ls => ls::run(&roots).await,
        MachineCommand::Rm(args) => rm::run(&roots, args).await,
        MachineCommand::Ssh(args) => ssh::run(&roots, args).await,
        MachineCommand::Logs(args) => logs::run(&roots, args).await,
        MachineCommand::Env(args) => env::run(&roots, &args.name),
        MachineCommand::Daemon(args) => {
            crate::daemon::run(roots, &args.name).await?;
            Ok(0)
        }
        MachineCommand::Supervise(args) => {
            let name = args.name.clone();
            tokio::task::spawn_blocking(move || crate::daemon::supervise::run(&roots, &name))
                .await
                .map_err(|e| MachineCliError::Spawn(std::io::Error::other(e)))?
                .map_err(MachineCliError::Spawn)
        }
    }
}
