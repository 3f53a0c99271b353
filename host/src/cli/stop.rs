//! `vmctl stop [-t SECONDS] CONTAINER…`.

use bollard::query_parameters::StopContainerOptionsBuilder;
use bollard::Docker;

use super::error::CliError;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds to wait before killing.
    #[arg(short = 't', long = "time")]
    pub time: Option<i32>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub async fn run(docker: &Docker, args: Args) -> Result<i32, CliError> {
    let mut code = 0;
    for name in &args.containers {
        let mut options = StopContainerOptionsBuilder::new();
        if let Some(t) = args.time {
            options = options.t(t);
        }
        match docker.stop_container(name, Some(options.build())).await {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("{}", CliError::from(e));
                code = 1;
            }
        }
    }
    Ok(code)
}
