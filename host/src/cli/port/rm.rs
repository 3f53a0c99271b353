//! `vmctl port rm NAME|HOSTPORT`.

use super::{ask_daemon, PortCliError};
use crate::daemon::protocol::DaemonRequest;
use crate::machine::port_rules;
use crate::machine::Machine;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A rule's name, or a host port (every rule on it).
    #[arg(value_name = "NAME|HOSTPORT")]
    pub target: String,
}

pub async fn run(machine: &Machine, args: Args) -> Result<i32, PortCliError> {
    let request = DaemonRequest::PortRm {
        target: args.target.clone(),
    };
    let removed = match ask_daemon(machine, request).await? {
        Some(response) => response.removed.unwrap_or_default(),
        None => {
            let rules = port_rules::load(&machine.paths)?;
            let (removed, kept) = port_rules::split_matching(rules, &args.target);
            if !removed.is_empty() {
                port_rules::save(&machine.paths, &kept)?;
            }
            removed
        }
    };
    if removed.is_empty() {
        return Err(PortCliError::NoSuchRule(args.target));
    }
    for rule in removed {
        println!("{}", rule.name);
    }
    Ok(0)
}
