//! `vmctl ps [-a] [-q]`.

use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::Docker;

use super::error::CliError;
use super::format;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Show all containers (not only running ones).
    #[arg(short, long)]
    pub all: bool,
    /// Only print ids.
    #[arg(short, long)]
    pub quiet: bool,
}

pub async fn run(docker: &Docker, args: Args) -> Result<i32, CliError> {
    let options = ListContainersOptionsBuilder::new().all(args.all).build();
    let containers = docker.list_containers(Some(options)).await?;
    if args.quiet {
        for c in &containers {
            println!("{}", short(c.id.as_deref().unwrap_or("")));
        }
        return Ok(0);
    }
    println!(
        "{:<15} {:<15} {:<24} {:<16} {:<24} {:<24} NAMES",
        "CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS"
    );
    for c in &containers {
        let command = format!("\"{}\"", truncate(c.command.as_deref().unwrap_or(""), 20));
        let ports = c
            .ports
            .iter()
            .flatten()
            .map(|p| match (p.ip.as_deref(), p.public_port) {
                (Some(ip), Some(public)) => format!("{ip}:{public}->{}/{}", p.private_port, typ(p)),
                _ => format!("{}/{}", p.private_port, typ(p)),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let names = c
            .names
            .iter()
            .flatten()
            .map(|n| n.trim_start_matches('/'))
            .collect::<Vec<_>>()
            .join(",");
        println!(
            "{:<15} {:<15} {:<24} {:<16} {:<24} {:<24} {names}",
            short(c.id.as_deref().unwrap_or("")),
            truncate(c.image.as_deref().unwrap_or(""), 15),
            command,
            format::ago(c.created.unwrap_or(0)),
            c.status.as_deref().unwrap_or(""),
            ports,
        );
    }
    Ok(0)
}

fn typ(port: &bollard::models::Port) -> String {
    port.typ
        .map(|t| t.to_string())
        .unwrap_or_else(|| "tcp".into())
}

pub fn short(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(max - 1).collect();
        format!("{cut}…")
    }
}
