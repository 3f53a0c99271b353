//! `vmctl machine stop [NAME]`: containers stopped, disk flushed, VM off.

use super::{lifecycle, MachineCliError};
use crate::machine::Roots;

pub async fn run(roots: &Roots, name: &str) -> Result<i32, MachineCliError> {
    if lifecycle::stop(roots, name).await? {
        println!("machine {name} stopped");
    } else {
        println!("machine {name} is not running");
    }
    Ok(0)
}
