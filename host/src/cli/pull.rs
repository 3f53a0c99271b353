//! `vmctl pull IMAGE`: the engine's pull, drawn as one progress bar per
//! layer on a terminal (one line per change of a layer's state otherwise).

use std::collections::HashMap;

use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::error::CliError;

#[derive(Debug, clap::Args)]
pub struct Args {
    pub image: String,
}

pub async fn run(docker: &Docker, args: Args) -> Result<i32, CliError> {
    pull(docker, &args.image).await?;
    Ok(0)
}

/// `fromImage` and `tag` for `image` (`name`, `name:tag`, `name@digest`).
fn split(image: &str) -> (&str, &str) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name, digest);
    }
    match image.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
        Some((name, tag)) => (name, tag),
        None => (image, "latest"),
    }
}

/// Pulls `image` (`latest` when no tag or digest is given).
pub async fn pull(docker: &Docker, image: &str) -> Result<(), CliError> {
    let (name, tag) = split(image);
    let options = CreateImageOptionsBuilder::new()
        .from_image(name)
        .tag(tag)
        .build();
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let bars = MultiProgress::with_draw_target(if terminal {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let style =
        ProgressStyle::with_template("{prefix}: {msg:<18} {wide_bar} {bytes:>9}/{total_bytes:<9}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    let mut layers: HashMap<String, (ProgressBar, String)> = HashMap::new();
    let mut progress = docker.create_image(Some(options), None, None);
    while let Some(event) = progress.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                let _ = bars.clear();
                return Err(e.into());
            }
        };
        if let Some(error) = event.error_detail.and_then(|d| d.message) {
            let _ = bars.clear();
            return Err(CliError::Daemon { message: error });
        }
        let Some(status) = event.status else { continue };
        let layer = event.progress_detail.is_some();
        let Some(id) = event.id.clone().filter(|_| layer) else {
            // A message line (`Digest: …`, `Status: …`, `Pulling from …`).
            let line = match &event.id {
                Some(id) => format!("{id}: {status}"),
                None => status,
            };
            if terminal {
                let _ = bars.println(&line);
            } else {
                println!("{line}");
            }
            continue;
        };
        let (bar, last) = layers.entry(id.clone()).or_insert_with(|| {
            let bar = bars.add(ProgressBar::new(0));
            bar.set_style(style.clone());
            bar.set_prefix(id.clone());
            (bar, String::new())
        });
        if let Some(detail) = &event.progress_detail {
            if let (Some(current), Some(total)) = (detail.current, detail.total) {
                bar.set_length(total.max(0) as u64);
                bar.set_position(current.max(0) as u64);
            }
        }
        if *last != status {
            bar.set_message(status.clone());
            if !terminal {
                println!("{id}: {status}");
            }
            if matches!(status.as_str(), "Pull complete" | "Already exists") {
                bar.finish();
            }
            *last = status;
        }
    }
    let _ = bars.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn references_split_into_name_and_tag_or_digest() {
        assert_eq!(split("busybox"), ("busybox", "latest"));
        assert_eq!(split("busybox:1.36"), ("busybox", "1.36"));
        assert_eq!(
            split("localhost:5000/app"),
            ("localhost:5000/app", "latest")
        );
        assert_eq!(split("localhost:5000/app:2"), ("localhost:5000/app", "2"));
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(split(&format!("app@{digest}")), ("app", digest.as_str()));
    }
}
