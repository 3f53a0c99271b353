//! `vmctl machine logs [NAME] [-f] [--daemon]`: the VM's serial console (the
//! kernel and vmctl-guest's PID-1 steps with their timings), or the host
//! daemon's log.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use super::{lifecycle, MachineCliError};
use crate::machine::{Machine, Roots, DEFAULT_MACHINE};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Machine name.
    #[arg(default_value = DEFAULT_MACHINE)]
    pub name: String,
    /// Keep printing what is appended while the machine runs.
    #[arg(long, short)]
    pub follow: bool,
    /// The host daemon's log instead of the VM console.
    #[arg(long)]
    pub daemon: bool,
}

pub async fn run(roots: &Roots, args: Args) -> Result<i32, MachineCliError> {
    let machine = Machine::load(roots, &args.name)?;
    let path = if args.daemon {
        machine.paths.daemon_log()
    } else {
        machine.paths.console_log()
    };
    let io = |e: std::io::Error| MachineCliError::Io(format!("{}: {e}", path.display()));
    let mut file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("(no log yet: machine {} has not run)", args.name);
            return Ok(0);
        }
        Err(e) => return Err(io(e)),
    };
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n > 0 {
            out.write_all(&buf[..n]).map_err(io)?;
            continue;
        }
        if !args.follow {
            return Ok(0);
        }
        out.flush().map_err(io)?;
        if !lifecycle::is_running(&machine.paths).await {
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // A log truncated under us restarts from the beginning.
        let len = file.metadata().map_err(io)?.len();
        if file.stream_position().map_err(io)? > len {
            file.seek(SeekFrom::Start(0)).map_err(io)?;
        }
    }
}
