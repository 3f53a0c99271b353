//! Booting the VM: pick the fastest accelerator that really boots a guest
//! here, start the vsock backend, the shares' virtiofsd and the VMM, and wait until the guest's
//! control service answers.
//!
//! `/dev/kvm` can exist and still boot nothing (nested hosts: the guest dies
//! on its first instruction KVM cannot emulate). So an accelerator is judged
//! by the guest: if the VMM reports an internal error or a panic, exits, or
//! the guest stays silent past the accelerator's timeout, the attempt is torn
//! down, the verdict is remembered in the host facts, and the next one (at
//! last TCG) is tried. The status names the accelerator used and why a
//! faster one was not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vmctl_proto::control::Health;

use super::facts::HostFacts;
use super::guest;
use super::DaemonError;
use crate::hypervisor::{Accelerator, Hypervisor, RunState, Vm, VmSpec};
use crate::process::Owned;
use crate::vsock::vhost_user::{self, BackendPaths};
use crate::vsock::VsockTransport;

/// How long a guest may stay silent on its console before the boot is
/// judged hung (its init prints within seconds, even under TCG).
const SILENT_LIMIT: Duration = Duration::from_secs(60);

fn console_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// A VM whose guest answered.
pub struct Booted {
    pub vm: Arc<dyn Vm>,
    pub backend: Option<Owned>,
    /// One virtiofsd per share (QEMU).
    pub shares: Vec<Owned>,
    pub accelerator: Accelerator,
    /// Why faster accelerators were skipped.
    pub note: Option<String>,
    pub boot: Duration,
    pub health: Health,
}

/// Everything [`boot`] needs.
pub struct BootPlan<'a> {
    pub hypervisor: &'a dyn Hypervisor,
    pub spec: VmSpec,
    /// The vhost-user backend to start before the VMM, if the spec uses one.
    pub backend: Option<BackendPaths>,
    /// Whether the daemon serves the spec's shares (a virtiofsd each,
    /// started before the VMM) or the VMM does.
    pub serve_shares: bool,
    pub transport: &'a dyn VsockTransport,
    pub facts_path: &'a std::path::Path,
    /// The accelerator to use, skipping detection (`VMCTL_ACCEL`).
    pub forced: Option<Accelerator>,
    /// QEMU's version and the host kernel: what a broken-accelerator fact holds under.
    pub under: String,
}

pub async fn boot(plan: BootPlan<'_>) -> Result<Booted, DaemonError> {
    let mut facts = HostFacts::load(plan.facts_path);
    let mut notes = Vec::new();
    let candidates = match plan.forced {
        Some(accel) => vec![accel],
        None => plan.hypervisor.accelerators(),
    };
    let mut last_error = None;
    // A backend with a single accelerator (VZ: always the Mac's hypervisor)
    // tries it every time: skipping it would leave nothing to try.
    let alternatives = candidates.len() > 1;
    for accel in candidates {
        if plan.forced.is_none() && !accel.is_emulation() && alternatives {
            if let Some(reason) = facts.known_broken(accel, &plan.under) {
                notes.push(format!("{accel} skipped: it failed here before ({reason})"));
                continue;
            }
        }
        let mut result = attempt(&plan, accel).await;
        if accel.is_emulation() {
            // Emulation is the last resort, and a boot can hang before the
            // guest runs (seen rarely: QEMU waiting on the vhost-user backend
            // with nothing on the console). One fresh try.
            if let Err(Attempt::AcceleratorFailed(reason)) = &result {
                tracing::warn!(vm = %plan.spec.name, %accel, %reason, "the guest did not boot; trying once more");
                result = attempt(&plan, accel).await;
            }
        }
        match result {
            Ok(mut booted) => {
                booted.note = (!notes.is_empty()).then(|| notes.join("; "));
                return Ok(booted);
            }
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::AcceleratorFailed(reason)) => {
                tracing::warn!(vm = %plan.spec.name, %accel, %reason, "accelerator did not boot the guest");
                notes.push(format!("{accel} did not boot the guest ({reason})"));
                if !accel.is_emulation() {
                    facts.mark_broken(accel, &plan.under, &reason);
                    if let Err(e) = facts.save(plan.facts_path) {
                        tracing::warn!(error = %crate::error_chain(&e), "cannot record host facts");
                    }
                }
                last_error = Some(reason);
            }
        }
    }
    Err(DaemonError::Boot(
        last_error.unwrap_or_else(|| "no accelerator left to try".into()),
    ))
}

enum Attempt {
    /// Try the next accelerator.
    AcceleratorFailed(String),
    /// Stop: nothing else would do better.
    Fatal(DaemonError),
}

async fn attempt(plan: &BootPlan<'_>, accel: Accelerator) -> Result<Booted, Attempt> {
    let started = Instant::now();
    let console_at_launch = console_len(&plan.spec.console_log);
    let backend = match &plan.backend {
        Some(paths) => {
            Some(vhost_user::start(paths).map_err(|e| Attempt::Fatal(DaemonError::Backend(e)))?)
        }
        None => None,
    };
    let shares = match start_shares(plan).await {
        Ok(shares) => shares,
        Err(e) => {
            if let Some(backend) = &backend {
                backend.terminate(Duration::from_secs(2)).await;
            }
            return Err(Attempt::Fatal(e));
        }
    };
    let vm: Arc<dyn Vm> = match plan.hypervisor.launch(&plan.spec, accel) {
        Ok(vm) => Arc::from(vm),
        Err(e) => {
            stop_shares(&shares).await;
            if let Some(backend) = &backend {
                backend.terminate(Duration::from_secs(2)).await;
            }
            return Err(Attempt::Fatal(DaemonError::Hypervisor(e)));
        }
    };
    match wait_for_guest(plan, vm.as_ref(), accel, started, console_at_launch).await {
        Ok(health) => Ok(Booted {
            vm,
            backend,
            shares,
            accelerator: accel,
            note: None,
            boot: started.elapsed(),
            health,
        }),
        Err(reason) => {
            let _ = vm.quit();
            vm.process().terminate(Duration::from_secs(3)).await;
            stop_shares(&shares).await;
            if let Some(backend) = &backend {
                backend.terminate(Duration::from_secs(2)).await;
            }
            Err(Attempt::AcceleratorFailed(reason))
        }
    }
}

/// A virtiofsd for each share, when the daemon serves them.
async fn start_shares(plan: &BootPlan<'_>) -> Result<Vec<Owned>, DaemonError> {
    if !plan.serve_shares || plan.spec.shares.is_empty() {
        return Ok(Vec::new());
    }
    #[cfg(unix)]
    {
        let mut started = Vec::new();
        for share in &plan.spec.shares {
            match crate::shares::virtiofsd::start(share, &plan.spec.vmm_log) {
                Ok(owned) => started.push(owned),
                Err(e) => {
                    stop_shares(&started).await;
                    return Err(DaemonError::Share(e));
                }
            }
        }
        Ok(started)
    }
    #[cfg(not(unix))]
    Err(DaemonError::Boot(
        "shares need virtiofsd, which this desktop cannot run".into(),
    ))
}

pub(crate) async fn stop_shares(shares: &[Owned]) {
    for share in shares {
        share.terminate(Duration::from_secs(2)).await;
    }
}

/// Polls the guest's health; watches the VMM meanwhile.
async fn wait_for_guest(
    plan: &BootPlan<'_>,
    vm: &dyn Vm,
    accel: Accelerator,
    started: Instant,
    console_at_launch: u64,
) -> Result<Health, String> {
    let deadline = started + accel.boot_timeout();
    let mut last_state_check = Instant::now();
    // Before the guest's vsock driver is up a connection hangs rather than
    // being refused: connect with a short limit, doubled after each miss so
    // a loaded host (where a handshake alone can take longer) still gets in.
    let mut connect_limit = Duration::from_millis(150);
    loop {
        if vm.process().has_exited() {
            return Err("the VMM exited (see the daemon log and console log)".into());
        }
        let connect = plan.transport.connect(vmctl_proto::VSOCK_PORT_CONTROL);
        match tokio::time::timeout(connect_limit, connect).await {
            Ok(Ok(stream)) => {
                if let Ok(health) = guest::health_on(stream).await {
                    return Ok(health);
                }
            }
            Ok(Err(_)) => {}
            Err(_) => connect_limit = (connect_limit * 2).min(Duration::from_secs(3)),
        }
        if last_state_check.elapsed() > Duration::from_millis(300) {
            last_state_check = Instant::now();
            if let RunState::Failed(status) = vm.state() {
                return Err(format!("the VMM reports {status}"));
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no answer from the guest within {} s",
                accel.boot_timeout().as_secs()
            ));
        }
        // The guest's init logs to the console within seconds even under
        // emulation; a console still empty long after means the VM never ran.
        if started.elapsed() > SILENT_LIMIT
            && console_len(&plan.spec.console_log) == console_at_launch
        {
            return Err(format!(
                "the guest printed nothing on its console in {} s",
                SILENT_LIMIT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
