//! `vmctl machine rm [-f] [NAME]`: delete a machine, its disk and context.

use super::{lifecycle, MachineCliError};
use crate::machine::{Machine, MachineError, Roots, DEFAULT_MACHINE};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Machine name.
    #[arg(default_value = DEFAULT_MACHINE)]
    pub name: String,
    /// Stop the machine first if it runs.
    #[arg(long, short)]
    pub force: bool,
}

pub async fn run(roots: &Roots, args: Args) -> Result<i32, MachineCliError> {
    let machine = Machine::load(roots, &args.name)?;
    if lifecycle::is_running(&machine.paths).await {
        if !args.force {
            return Err(MachineError::Running(args.name).into());
        }
        lifecycle::stop(roots, &args.name).await?;
    }
    machine.remove()?;
    super::context::remove(&args.name);
    println!("machine {} removed", args.name);
    Ok(0)
}
