//! Powering the VM off cleanly: every process asked to stop, then killed,
//! the disk flushed and unmounted, then the kernel's power-off (QEMU exits).

use std::time::{Duration, Instant};

use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

/// Never returns: the VM is off afterwards.
pub fn power_off(data_mount: &str) -> ! {
    tracing::info!("powering off");
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && reap_all() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    reap_all();
    nix::unistd::sync();
    if let Err(e) = umount2(data_mount, MntFlags::empty()) {
        tracing::warn!(mount = data_mount, error = %e, "unmount failed; detaching");
        let _ = umount2(data_mount, MntFlags::MNT_DETACH);
    }
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    // reboot(2) only returns on failure; nothing is left to do but halt.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Reaps every exited child; answers whether any child is still alive.
pub fn reap_all() -> bool {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) => return true,
            Ok(_) => continue,
            Err(_) => return false, // ECHILD: no children left
        }
    }
}
