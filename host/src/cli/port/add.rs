//! `vmctl port add [NAME] [--host-ip IP] HOSTPORT:GUESTPORT[/udp]`.

use std::net::IpAddr;

use super::{ask_daemon, PortCliError};
use crate::daemon::protocol::DaemonRequest;
use crate::machine::port_rules::{self, PortRule};
use crate::machine::{Machine, MachineError};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `[NAME] HOSTPORT:GUESTPORT[/udp]`; the name defaults to `tcp-HOSTPORT`.
    #[arg(num_args = 1..=2, required = true, value_name = "[NAME] HOSTPORT:GUESTPORT[/udp]")]
    pub words: Vec<String>,
    /// The desktop address to listen on (default: the machine's port-bind-address).
    #[arg(long, value_name = "IP")]
    pub host_ip: Option<IpAddr>,
}

pub async fn run(machine: &Machine, args: Args) -> Result<i32, PortCliError> {
    let (name, spec) = match args.words.as_slice() {
        [spec] => (None, spec),
        [name, spec] => (Some(name.clone()), spec),
        _ => unreachable!("clap takes one or two words"),
    };
    let (host_port, guest_port, protocol) = port_rules::parse_spec(spec)?;
    let name = name.unwrap_or_else(|| format!("{protocol}-{host_port}"));
    port_rules::validate_name(&name)?;
    let rule = PortRule {
        name,
        protocol,
        host_ip: args.host_ip.unwrap_or(machine.config.port_bind_address),
        host_port,
        guest_port,
        default_address: args.host_ip.is_none(),
    };
    let shown = format!(
        "{} {}/{} -> guest port {}",
        rule.name,
        std::net::SocketAddr::new(rule.host_ip, rule.host_port),
        rule.protocol,
        rule.guest_port
    );
    match ask_daemon(machine, DaemonRequest::PortAdd { rule: rule.clone() }).await? {
        Some(_) => println!("{shown}"),
        None => {
            save_offline(machine, rule)?;
            println!(
                "{shown} (machine {} is not running: applies when it starts)",
                machine.paths.name
            );
        }
    }
    Ok(0)
}

/// Adds `rule` to the stopped machine's rules, refusing the same conflicts
/// the daemon would.
fn save_offline(machine: &Machine, rule: PortRule) -> Result<(), MachineError> {
    let mut rules = port_rules::load(&machine.paths)?;
    if rules.iter().any(|r| r.name == rule.name) {
        return Err(MachineError::BadFlag(format!(
            "port rule {} already exists",
            rule.name
        )));
    }
    let key = (rule.protocol, rule.host_ip, rule.host_port);
    if let Some(other) = rules
        .iter()
        .find(|r| port_rules::overlaps((r.protocol, r.host_ip, r.host_port), key))
    {
        return Err(MachineError::BadFlag(format!(
            "Bind for {} failed: port is already allocated (by port rule {})",
            std::net::SocketAddr::new(rule.host_ip, rule.host_port),
            other.name
        )));
    }
    rules.push(rule);
    std::fs::create_dir_all(&machine.paths.data).map_err(|source| MachineError::Write {
        path: machine.paths.data.clone(),
        source,
    })?;
    port_rules::save(&machine.paths, &rules)
}
