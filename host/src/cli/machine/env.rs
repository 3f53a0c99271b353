//! `vmctl machine env [NAME]`: the docker CLI's environment for a machine.

use super::MachineCliError;
use crate::machine::{Machine, Roots};

pub fn run(roots: &Roots, name: &str) -> Result<i32, MachineCliError> {
    let machine = Machine::load(roots, name)?;
    println!(
        "export DOCKER_HOST=unix://{}",
        machine.paths.docker_socket().display()
    );
    println!("# Run this command to configure your shell:");
    println!(
        "# eval $(vmctl machine env{})",
        if name == crate::machine::DEFAULT_MACHINE {
            String::new()
        } else {
            format!(" {name}")
        }
    );
    Ok(0)
}
