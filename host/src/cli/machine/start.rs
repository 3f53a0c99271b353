//! `vmctl machine start [NAME] [--cpus N] [--memory SIZE] [--disk SIZE]`.

use super::{lifecycle, MachineCliError};
use crate::machine::{Roots, SizeFlags, DEFAULT_MACHINE};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Machine name (`default` is created on first start).
    #[arg(default_value = DEFAULT_MACHINE)]
    pub name: String,
    /// Settings to change (the machine must be stopped); kept for later starts.
    #[command(flatten)]
    pub sizes: SizeFlags,
}

impl Args {
    pub fn named(name: String) -> Self {
        Self {
            name,
            sizes: SizeFlags::default(),
        }
    }
}

pub async fn run(roots: &Roots, args: Args) -> Result<i32, MachineCliError> {
    let (machine, status, started) =
        lifecycle::ensure_running(roots, &args.name, &args.sizes).await?;
    if !started {
        println!("machine {} is already running", args.name);
        return Ok(0);
    }
    let accel = status.accelerator.as_deref().unwrap_or("?");
    match status.boot_ms {
        Some(ms) => println!(
            "machine {} is running ({}, {accel}, booted in {:.2} s)",
            args.name,
            status.hypervisor,
            ms as f64 / 1000.0
        ),
        None => println!("machine {} is running again", args.name),
    }
    if let Some(note) = &status.accelerator_note {
        println!("note: {note}");
    }
    println!(
        "docker: export DOCKER_HOST={} (or: docker --context {})",
        machine.paths.docker_endpoint(),
        super::context::name(&args.name)
    );
    Ok(0)
}
