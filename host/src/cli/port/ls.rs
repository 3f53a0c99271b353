//! `vmctl port ls`: rules and published ports together, with their traffic.
//! HOST names every desktop address a forward listens on: `127.0.0.1:8080,
//! [::1]:8080`, or why the `[::1]` twin is missing.

use super::{ask_daemon, PortCliError};
use crate::daemon::protocol::DaemonRequest;
use crate::forward::dual_stack;
use crate::forward::ports::ForwardInfo;
use crate::forward::stats::StatsSnapshot;
use crate::machine::{port_rules, Machine};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(machine: &Machine, args: Args) -> Result<i32, PortCliError> {
    let forwards = match ask_daemon(machine, DaemonRequest::PortLs).await? {
        Some(response) => response.ports.unwrap_or_default(),
        // Stopped: the rules that will listen at the next start.
        None => port_rules::load(&machine.paths)?
            .into_iter()
            .map(|rule| ForwardInfo {
                name: rule.name.clone(),
                protocol: rule.protocol,
                host_ip: rule.host_ip,
                host_port: rule.host_port,
                target: rule.target(),
                container: String::new(),
                pending: false,
                error: Some("machine not running".into()),
                twin: None,
                stats: StatsSnapshot::default(),
            })
            .collect(),
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&forwards).unwrap_or_default()
        );
        return Ok(0);
    }
    let rows: Vec<[String; 8]> = forwards.iter().map(row).collect();
    let header = [
        "NAME",
        "PROTO",
        "HOST",
        "GUEST",
        "CONTAINER",
        "BYTES IN/OUT",
        "CONNS",
        "STATE",
    ]
    .map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    for r in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
    Ok(0)
}

fn row(f: &ForwardInfo) -> [String; 8] {
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.to_owned()
        }
    };
    let state = match (&f.error, f.pending) {
        (Some(error), _) => error.clone(),
        (None, true) => "reserved".into(),
        (None, false) => "listening".into(),
    };
    [
        dash(&f.name),
        f.protocol.to_string(),
        dual_stack::addresses_text(
            std::net::SocketAddr::new(f.host_ip, f.host_port),
            f.twin.as_ref(),
        ),
        f.target.to_string(),
        dash(&f.container),
        format!("{}/{}", f.stats.bytes_in, f.stats.bytes_out),
        format!("{} ({} open)", f.stats.connections, f.stats.active),
        state,
    ]
}
