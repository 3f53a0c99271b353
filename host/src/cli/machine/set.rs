//! `vmctl machine set NAME [--allow-lan-ports[=BOOL]] [--cpus N] …`: change
//! a machine's settings. `--allow-lan-ports` applies at once, even to a
//! running machine (its daemon re-reads the settings and closes listeners
//! the new value forbids); the others need the machine stopped.

use super::{lifecycle, MachineCliError};
use crate::machine::{Machine, Roots, SizeFlags, DEFAULT_MACHINE};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Machine name.
    #[arg(default_value = DEFAULT_MACHINE)]
    pub name: String,
    #[command(flatten)]
    pub settings: SizeFlags,
}

pub async fn run(roots: &Roots, args: Args) -> Result<i32, MachineCliError> {
    let mut machine = Machine::load(roots, &args.name)?;
    if args.settings.is_empty() {
        return Err(MachineCliError::Io(
            "nothing to set: give a setting, e.g. --allow-lan-ports=false".into(),
        ));
    }
    if args.settings.needs_stop() && lifecycle::is_running(&machine.paths).await {
        return Err(MachineCliError::RunningResize(args.name));
    }
    machine.config = args.settings.apply(machine.config.clone())?;
    machine.save()?;
    println!(
        "machine {}: {} CPUs, {} MiB memory, {} GiB disk, port-bind-address {}, allow-lan-ports {}, shares: {}",
        args.name,
        machine.config.cpus,
        machine.config.memory_mib,
        machine.config.disk_gib,
        machine.config.port_bind_address,
        machine.config.allow_lan_ports,
        crate::shares::describe(&machine.config.mounts),
    );
    Ok(0)
}
