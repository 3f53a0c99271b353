//! `vmctl images [-q]`.

use bollard::query_parameters::ListImagesOptions;
use bollard::Docker;

use super::error::CliError;
use super::{format, ps::short};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only print ids.
    #[arg(short, long)]
    pub quiet: bool,
}

pub async fn run(docker: &Docker, args: Args) -> Result<i32, CliError> {
    let images = docker.list_images(None::<ListImagesOptions>).await?;
    if !args.quiet {
        println!(
            "{:<24} {:<12} {:<14} {:<16} SIZE",
            "REPOSITORY", "TAG", "IMAGE ID", "CREATED"
        );
    }
    for image in &images {
        let tags = if image.repo_tags.is_empty() {
            vec!["<none>:<none>".to_owned()]
        } else {
            image.repo_tags.clone()
        };
        for tag in tags {
            if args.quiet {
                println!("{}", short(&image.id));
                continue;
            }
            let (repo, tag) = tag.rsplit_once(':').unwrap_or((&tag, "<none>"));
            println!(
                "{:<24} {:<12} {:<14} {:<16} {}",
                repo,
                tag,
                short(&image.id),
                format::ago(image.created),
                format::size(image.size)
            );
        }
    }
    Ok(0)
}
