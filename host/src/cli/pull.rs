//! `vmctl pull IMAGE`: the engine's progress, one line per layer event,
//! behind a spinner on a terminal.

use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;

use super::error::CliError;

#[derive(Debug, clap::Args)]
pub struct Args {
    pub image: String,
}

pub async fn run(docker: &Docker, args: Args) -> Result<i32, CliError> {
    pull(docker, &args.image).await?;
    Ok(0)
}

/// Pulls `image` (`name[:tag]`, `latest` by default).
pub async fn pull(docker: &Docker, image: &str) -> Result<(), CliError> {
    let (name, tag) = match image.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
        Some((name, tag)) => (name, tag),
        None => (image, "latest"),
    };
    let options = CreateImageOptionsBuilder::new()
        .from_image(name)
        .tag(tag)
        .build();
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.enable_steady_tick(std::time::Duration::from_millis(100));
    let mut progress = docker.create_image(Some(options), None, None);
    while let Some(event) = progress.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                spinner.finish_and_clear();
                return Err(e.into());
            }
        };
        if let Some(error) = event.error_detail.and_then(|d| d.message) {
            spinner.finish_and_clear();
            return Err(CliError::Daemon { message: error });
        }
        let line = match (event.id, event.status) {
            (Some(id), Some(status)) => format!("{id}: {status}"),
            (None, Some(status)) => status,
            _ => continue,
        };
        spinner.println(&line);
    }
    spinner.finish_and_clear();
    Ok(())
}
