//! `vmctl exec [-i] [-t] [-d] [-e K=V] [-w DIR] [-u USER] CONTAINER CMD…`:
//! exits with the command's code.

use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bollard::query_parameters::ResizeExecOptionsBuilder;
use bollard::Docker;

use super::error::CliError;
use super::stream;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(short, long)]
    pub interactive: bool,
    #[arg(short, long)]
    pub tty: bool,
    /// Run in the background.
    #[arg(short, long)]
    pub detach: bool,
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    #[arg(short, long)]
    pub workdir: Option<String>,
    #[arg(short, long)]
    pub user: Option<String>,
    pub container: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

pub async fn run(docker: &Docker, args: Args) -> Result<i32, CliError> {
    let config = ExecConfig {
        attach_stdin: Some(args.interactive && !args.detach),
        attach_stdout: Some(!args.detach),
        attach_stderr: Some(!args.detach),
        tty: Some(args.tty),
        env: (!args.env.is_empty()).then(|| args.env.clone()),
        working_dir: args.workdir.clone(),
        user: args.user.clone(),
        cmd: Some(args.command.clone()),
        ..Default::default()
    };
    let exec = docker.create_exec(&args.container, config).await?.id;
    let start = StartExecOptions {
        detach: args.detach,
        tty: args.tty,
        output_capacity: None,
    };
    let raw = if args.tty && args.interactive {
        super::terminal::RawMode::enter()
    } else {
        None
    };
    match docker.start_exec(&exec, Some(start)).await? {
        StartExecResults::Detached => return Ok(0),
        StartExecResults::Attached { output, input } => {
            if args.tty {
                if let Some((rows, cols)) = super::terminal::size() {
                    let size = ResizeExecOptionsBuilder::new()
                        .h(rows.into())
                        .w(cols.into())
                        .build();
                    let _ = docker.resize_exec(&exec, size).await;
                }
            }
            let feeding = args.interactive.then(|| stream::feed_stdin(input));
            let copied = stream::copy_output(output).await;
            if let Some(feeding) = feeding {
                feeding.abort();
            }
            drop(raw);
            copied?;
        }
    }
    let inspect = docker.inspect_exec(&exec).await?;
    Ok(inspect.exit_code.unwrap_or(0) as i32)
}
