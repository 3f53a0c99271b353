//! `vmctl machine ssh [NAME] [-- COMMAND…]`: a shell in the VM (not in a
//! container), over the guest's control service on vsock — no sshd, no
//! keys, no network. The daemon pipes the connection (see
//! `daemon::protocol`), so this works whatever vsock transport the VM has.

use std::io::IsTerminal;

use tokio::io::AsyncWriteExt;
use vmctl_proto::control::ControlRequest;
use vmctl_proto::VSOCK_PORT_CONTROL;

use super::{lifecycle, MachineCliError};
use crate::daemon::protocol::{self, DaemonRequest};
use crate::machine::{Machine, Roots, DEFAULT_MACHINE};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Machine name.
    #[arg(default_value = DEFAULT_MACHINE)]
    pub name: String,
    /// Command to run instead of a login shell.
    #[arg(last = true)]
    pub command: Vec<String>,
}

pub async fn run(roots: &Roots, args: Args) -> Result<i32, MachineCliError> {
    let machine = Machine::load(roots, &args.name)?;
    if !lifecycle::is_running(&machine.paths).await {
        return Err(MachineCliError::NotRunning(args.name));
    }
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let (rows, cols) = if tty {
        crate::cli::terminal::size().unwrap_or((24, 80))
    } else {
        (0, 0)
    };
    let (_, stream) = protocol::request(
        &machine.paths.daemon_endpoint(),
        &DaemonRequest::Connect {
            port: VSOCK_PORT_CONTROL,
        },
    )
    .await?;
    let request = ControlRequest::Shell {
        command: args.command,
        tty,
        rows,
        cols,
        term: std::env::var("TERM").ok(),
    };
    // The daemon pipes this connection to the guest's control port.
    let (response, stream) = crate::daemon::guest::call_on(Box::new(stream.into_inner()), &request)
        .await
        .map_err(|e| MachineCliError::Io(format!("shell: {}", crate::error_chain(&e))))?;
    if !response.ok {
        return Err(MachineCliError::Io(format!(
            "the VM refused a shell: {}",
            response.error.unwrap_or_default()
        )));
    }
    let _raw = tty.then(crate::cli::terminal::RawMode::enter).flatten();
    let (mut from_vm, mut to_vm) = tokio::io::split(stream);
    let input = tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let _ = tokio::io::copy(&mut stdin, &mut to_vm).await;
        let _ = to_vm.shutdown().await;
    });
    let mut stdout = tokio::io::stdout();
    let _ = tokio::io::copy(&mut from_vm, &mut stdout).await;
    let _ = stdout.flush().await;
    input.abort();
    Ok(0)
}
