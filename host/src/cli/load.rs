//! `vmctl load [-i FILE]`: an image tarball (stdin by default) to the engine.

use bollard::query_parameters::ImportImageOptions;
use bollard::Docker;
use futures_util::StreamExt;

use super::error::CliError;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The tarball (default: stdin).
    #[arg(short, long)]
    pub input: Option<std::path::PathBuf>,
}

pub async fn run(docker: &Docker, args: Args) -> Result<i32, CliError> {
    let bytes = match &args.input {
        Some(path) => std::fs::read(path).map_err(|source| CliError::Io {
            what: format!("cannot read {}", path.display()),
            source,
        })?,
        None => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes).map_err(|source| {
                CliError::Io {
                    what: "cannot read stdin".into(),
                    source,
                }
            })?;
            bytes
        }
    };
    let body = bollard::body_full(bytes.into());
    let mut answers = docker.import_image(ImportImageOptions::default(), body, None);
    while let Some(answer) = answers.next().await {
        let answer = answer?;
        if let Some(error) = answer.error_detail.and_then(|d| d.message) {
            return Err(CliError::Daemon { message: error });
        }
        if let Some(stream) = answer.stream {
            print!("{stream}");
        }
    }
    Ok(0)
}
