//! `vmctl machine status [NAME]`.

use super::{lifecycle, MachineCliError};
use crate::machine::status::{self, State, VmStatus};
use crate::machine::{Machine, Roots, SizeFlags};

pub async fn run(roots: &Roots, name: &str) -> Result<i32, MachineCliError> {
    let machine = Machine::load(roots, name)?;
    let paths = &machine.paths;
    let mut live = status::liveness(paths);
    if !live.daemon && live.vmm.is_some() {
        // The daemon died but the VM runs: bring a daemon back to adopt it.
        lifecycle::ensure_running(roots, name, &SizeFlags::default()).await?;
        live = status::liveness(paths);
    }
    let mut current = match lifecycle::daemon_status(paths).await {
        Some(current) => current,
        None => {
            let mut saved = VmStatus::load(paths)?.unwrap_or_else(|| VmStatus::new(State::Stopped));
            // A daemon that holds the lock but does not answer yet is
            // starting (its keeper just restarted it), whatever the file says.
            if live.daemon && saved.state == State::Running {
                saved.state = State::Starting;
            }
            saved
        }
    };
    if !live.daemon
        && matches!(
            current.state,
            State::Running | State::Starting | State::Stopping
        )
    {
        current.state = State::Stopped;
    }
    if live.vmm.is_none() && current.state == State::Running {
        current.state = State::Stopped;
    }
    print(&machine, &current);
    Ok(0)
}

fn print(machine: &Machine, status: &VmStatus) {
    let c = &machine.config;
    let running = status.state == State::Running;
    println!("machine:      {}", machine.paths.name);
    println!("state:        {}", status.state);
    println!(
        "resources:    {} CPUs, {} MiB memory, {} GiB disk, {}",
        c.cpus,
        c.memory_mib,
        c.disk_gib,
        c.arch()
    );
    println!(
        "ports:        published on {} by default; LAN addresses {}",
        c.port_bind_address,
        if c.allow_lan_ports {
            "allowed (allow-lan-ports)"
        } else {
            "refused (allow-lan-ports=false)"
        }
    );
    if c.mounts.is_empty() {
        println!("shares:       none (`vmctl machine set --mount PATH` shares a directory)");
    }
    for (i, mount) in c.mounts.iter().enumerate() {
        let label = if i == 0 { "shares:" } else { "" };
        println!("{label:<14}{mount}");
    }
    if let Some((used, apparent)) = disk_sizes(&machine.paths.disk()) {
        println!(
            "disk file:    {} used on the desktop, {} apparent ({})",
            human_size(used),
            human_size(apparent),
            machine.paths.disk().display()
        );
    }
    if running {
        println!(
            "hypervisor:   {} ({})",
            status.hypervisor,
            status.accelerator.as_deref().unwrap_or("?")
        );
        if let Some(note) = &status.accelerator_note {
            println!("accelerator:  {note}");
        }
        if let Some(ms) = status.boot_ms {
            println!("boot time:    {:.2} s", ms as f64 / 1000.0);
        }
        if let Some(kernel) = &status.guest_kernel {
            println!("guest kernel: {kernel}");
        }
        if let Some(address) = &status.guest_address {
            println!("guest IP:     {address}");
        }
        if let Some(forwards) = &status.forwards {
            println!("forwards:     {forwards}");
        }
        println!("socket:       {}", machine.paths.docker_endpoint());
    }
    if let Some(error) = status.error.as_deref().filter(|_| !running) {
        println!("last error:   {error}");
    }
}

/// The disk file's blocks in use on the desktop and its apparent length:
/// what deleting in the VM gives back (discard punches holes) and what the
/// VM sees.
fn disk_sizes(disk: &std::path::Path) -> Option<(u64, u64)> {
    let meta = std::fs::metadata(disk).ok()?;
    #[cfg(unix)]
    let used = {
        use std::os::unix::fs::MetadataExt;
        meta.blocks() * 512
    };
    #[cfg(not(unix))]
    let used = meta.len();
    Some((used, meta.len()))
}

/// Bytes in binary units, one decimal.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(super::human_size(512), "512 B");
        assert_eq!(super::human_size(1536), "1.5 KiB");
        assert_eq!(super::human_size(20 << 30), "20.0 GiB");
    }
}
