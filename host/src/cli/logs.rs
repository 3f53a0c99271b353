//! `vmctl logs [-f] [--tail N] [-t] CONTAINER`.

use bollard::query_parameters::LogsOptionsBuilder;
use bollard::Docker;

use super::error::CliError;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Follow the output.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines (`all` for everything).
    #[arg(long, short = 'n', default_value = "all")]
    pub tail: String,
    /// Prefix each line with its time.
    #[arg(short, long)]
    pub timestamps: bool,
    pub container: String,
}

pub async fn run(docker: &Docker, args: Args) -> Result<i32, CliError> {
    let options = LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .follow(args.follow)
        .timestamps(args.timestamps)
        .tail(&args.tail)
        .build();
    super::stream::copy_output(Box::pin(docker.logs(&args.container, Some(options)))).await?;
    Ok(0)
}
