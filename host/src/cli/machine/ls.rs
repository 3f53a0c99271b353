//! `vmctl machine ls`: every machine with its state and size.

use super::{lifecycle, MachineCliError};
use crate::machine::{self, Machine, Roots};

pub async fn run(roots: &Roots) -> Result<i32, MachineCliError> {
    println!(
        "{:<16} {:<10} {:>5} {:>10} {:>8}",
        "NAME", "STATE", "CPUS", "MEMORY", "DISK"
    );
    for name in machine::list(roots)? {
        let machine = Machine::load(roots, &name)?;
        let state = if lifecycle::is_running(&machine.paths).await {
            "running"
        } else {
            "stopped"
        };
        let c = &machine.config;
        println!(
            "{:<16} {:<10} {:>5} {:>7}MiB {:>5}GiB",
            name, state, c.cpus, c.memory_mib, c.disk_gib
        );
    }
    Ok(0)
}
