//! `vmctl machine init [NAME] [--cpus N] [--memory SIZE] [--disk SIZE]
//! [--allow-lan-ports[=BOOL]] …`.

use super::MachineCliError;
use crate::machine::{Machine, Roots, SizeFlags, DEFAULT_MACHINE};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Machine name.
    #[arg(default_value = DEFAULT_MACHINE)]
    pub name: String,
    #[command(flatten)]
    pub sizes: SizeFlags,
}

pub fn run(roots: &Roots, args: Args) -> Result<i32, MachineCliError> {
    let config = args.sizes.new_config()?;
    let machine = Machine::create(roots, &args.name, config)?;
    let c = &machine.config;
    println!(
        "machine {} created: {} CPUs, {} MiB memory, {} GiB disk, {}, allow-lan-ports {}, shares: {}",
        args.name,
        c.cpus,
        c.memory_mib,
        c.disk_gib,
        c.arch(),
        c.allow_lan_ports,
        crate::shares::describe(&c.mounts),
    );
    Ok(0)
}
