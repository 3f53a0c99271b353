//! The container verbs (`vmctl run`, `ps`, `logs`, `exec`, `stop`, `rm`,
//! `images`, `pull`, `load`), one file each, speaking the Docker API with
//! bollard to the machine's engine.

use bollard::Docker;
use clap::Subcommand;

use super::error::CliError;
use super::{exec, images, load, logs, ps, pull, rm, run, stop};

#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// Create and run a container (starts the machine when needed).
    #[command(disable_help_flag = true)]
    Run(run::Args),
    /// List containers.
    Ps(ps::Args),
    /// Show a container's output.
    Logs(logs::Args),
    /// Run a command in a running container.
    Exec(exec::Args),
    /// Stop containers.
    Stop(stop::Args),
    /// Remove containers.
    Rm(rm::Args),
    /// List images.
    Images(images::Args),
    /// Pull an image from a registry.
    Pull(pull::Args),
    /// Load images from a tarball (`docker save` format).
    Load(load::Args),
}

/// Runs a container verb; answers the exit code.
pub async fn dispatch(docker: &Docker, command: ContainerCommand) -> Result<i32, CliError> {
    match command {
        ContainerCommand::Run(args) => run::run(docker, args).await,
        ContainerCommand::Ps(args) => ps::run(docker, args).await,
        ContainerCommand::Logs(args) => logs::run(docker, args).await,
        ContainerCommand::Exec(args) => exec::run(docker, args).await,
        ContainerCommand::Stop(args) => stop::run(docker, args).await,
        ContainerCommand::Rm(args) => rm::run(docker, args).await,
        ContainerCommand::Images(args) => images::run(docker, args).await,
        ContainerCommand::Pull(args) => pull::run(docker, args).await,
        ContainerCommand::Load(args) => load::run(docker, args).await,
    }
}
