//! `vmctl`: the desktop CLI. A thin `main` over the library's verbs.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "vmctl",
    version,
    about = "Containers on your desktop, in a small Linux VM"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the version of vmctl and of the engine it talks to.
    Version {
        /// Engine address (unix:///path); defaults to $DOCKER_HOST.
        #[arg(long, short = 'H')]
        host: Option<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Version { host } => vmctl::cli::version::run(host.as_deref()),
    };
    if let Err(e) = result {
        eprintln!("vmctl: {}", vmctl::error_chain(&e));
        std::process::exit(1);
    }
}
