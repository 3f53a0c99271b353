//! `vmctl rm [-f] [-v] CONTAINER…`.

use bollard::query_parameters::RemoveContainerOptionsBuilder;
use bollard::Docker;

use super::error::CliError;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kill a running container first.
    #[arg(short, long)]
    pub force: bool,
    /// Remove its anonymous volumes too.
    #[arg(short, long)]
    pub volumes: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub async fn run(docker: &Docker, args: Args) -> Result<i32, CliError> {
    let mut code = 0;
    for name in &args.containers {
        let options = RemoveContainerOptionsBuilder::new()
            .force(args.force)
            .v(args.volumes)
            .build();
        match docker.remove_container(name, Some(options)).await {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("{}", CliError::from(e));
                code = 1;
            }
        }
    }
    Ok(code)
}
