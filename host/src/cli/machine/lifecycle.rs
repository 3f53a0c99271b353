//! What several verbs share: making sure a machine's daemon runs (starting
//! it, or restarting it to adopt a VM whose daemon died), waiting for the VM
//! with a progress indicator, and stopping it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::MachineCliError;
use crate::daemon::protocol::{self, DaemonRequest};
use crate::machine::status::{self, State, VmStatus};
use crate::machine::{Machine, MachinePaths, Roots, SizeFlags};

/// The status from a live daemon, if one answers.
pub async fn daemon_status(paths: &MachinePaths) -> Option<VmStatus> {
    let daemon = paths.daemon_endpoint();
    let ask = protocol::request(&daemon, &DaemonRequest::Status);
    match tokio::time::timeout(Duration::from_secs(5), ask).await {
        Ok(Ok((response, _))) => response.status,
        _ => None,
    }
}

/// Whether the machine runs now, as far as the files and processes tell.
pub async fn is_running(paths: &MachinePaths) -> bool {
    let live = status::liveness(paths);
    if live.daemon {
        return daemon_status(paths)
            .await
            .is_some_and(|s| matches!(s.state, State::Running | State::Starting));
    }
    live.vmm.is_some()
}

/// Starts the daemon detached, under its keeper (`vmctl machine supervise
/// NAME`, see `daemon::supervise`): its own session, stdin from /dev/null,
/// output appended to the daemon log.
fn spawn_daemon(paths: &MachinePaths) -> Result<Child, MachineCliError> {
    crate::hypervisor::ensure_platform_has_backend().map_err(crate::daemon::DaemonError::from)?;
    let exe = std::env::current_exe().map_err(MachineCliError::Spawn)?;
    // Private directories and logs, also for machines made before they were.
    paths.make_private()?;
    let log = || {
        crate::machine::paths::private_options()
            .create(true)
            .append(true)
            .open(paths.daemon_log())
            .map_err(MachineCliError::Spawn)
    };
    let mut command = Command::new(exe);
    command
        .args(["machine", "supervise", &paths.name])
        .stdin(Stdio::null())
        .stdout(log()?)
        .stderr(log()?);
    crate::process::new_session(&mut command);
    command.spawn().map_err(MachineCliError::Spawn)
}

/// Makes sure machine `name` runs and answers; starts or re-adopts it.
/// Answers the machine, its status and whether this call started it.
pub async fn ensure_running(
    roots: &Roots,
    name: &str,
    sizes: &SizeFlags,
) -> Result<(Machine, VmStatus, bool), MachineCliError> {
    let mut machine = Machine::load_or_default(roots, name)?;
    let mut live = status::liveness(&machine.paths);
    let mut starting = false;
    if live.daemon {
        match daemon_status(&machine.paths).await.map(|s| s.state) {
            Some(State::Running) => {
                if !sizes.is_empty() {
                    return Err(MachineCliError::RunningResize(name.to_owned()));
                }
                let status = daemon_status(&machine.paths)
                    .await
                    .unwrap_or_else(|| VmStatus::new(State::Running));
                return Ok((machine, status, false));
            }
            Some(State::Starting) => starting = true,
            // Booting: its socket opens once the VM answers.
            None if status_says_starting(&machine.paths) => starting = true,
            // A daemon on its way out (its VM stopped): let it finish.
            _ => {
                let deadline = Instant::now() + Duration::from_secs(60);
                while status::liveness(&machine.paths).daemon && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                live = status::liveness(&machine.paths);
            }
        }
    }
    if !sizes.is_empty() {
        if live.vmm.is_some() || live.daemon {
            return Err(MachineCliError::RunningResize(name.to_owned()));
        }
        machine.config = sizes.apply(machine.config.clone())?;
        machine.save()?;
        machine.size_disk()?;
    }
    let child = if starting {
        None // another start is under way: wait for it
    } else {
        if live.vmm.is_some() {
            tracing::info!(vm = %name, "the VM runs without its daemon: restarting the daemon");
        }
        Some(spawn_daemon(&machine.paths)?)
    };
    let status = wait_until_running(&machine.paths, child).await?;
    super::context::ensure(name, &machine.paths.docker_endpoint());
    Ok((machine, status, true))
}

fn status_says_starting(paths: &MachinePaths) -> bool {
    VmStatus::load(paths)
        .ok()
        .flatten()
        .is_some_and(|s| s.state == State::Starting)
}

/// Waits for the daemon to report the VM running, with a spinner on a terminal.
async fn wait_until_running(
    paths: &MachinePaths,
    mut child: Option<Child>,
) -> Result<VmStatus, MachineCliError> {
    let started = Instant::now();
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(100));
    let failed = |reason: String| MachineCliError::StartFailed {
        name: paths.name.clone(),
        reason,
    };
    loop {
        if let Some(status) = daemon_status(paths).await {
            if status.state == State::Running {
                spinner.finish_and_clear();
                return Ok(status);
            }
        }
        // A child that lost the lock to another daemon (the keeper restarting
        // one at the same moment) is no failure while that daemon lives.
        let exited = match child.as_mut() {
            Some(child) => {
                child.try_wait().ok().flatten().is_some() && !status::liveness(paths).daemon
            }
            None => !status::liveness(paths).daemon,
        };
        if exited {
            spinner.finish_and_clear();
            let reason = VmStatus::load(paths)
                .ok()
                .flatten()
                .and_then(|s| s.error)
                .unwrap_or_else(|| "the daemon exited".into());
            return Err(failed(format!(
                "{reason} (see {})",
                paths.daemon_log().display()
            )));
        }
        let phase = VmStatus::load(paths)
            .ok()
            .flatten()
            .filter(|s| s.state == State::Starting)
            .map_or("starting the daemon", |_| "booting the VM");
        spinner.set_message(format!(
            "machine {}: {phase} ({:.1} s)",
            paths.name,
            started.elapsed().as_secs_f64()
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops machine `name`; answers whether it was running.
pub async fn stop(roots: &Roots, name: &str) -> Result<bool, MachineCliError> {
    let machine = Machine::load(roots, name)?;
    let paths = &machine.paths;
    let live = status::liveness(paths);
    if !live.daemon && live.vmm.is_none() {
        return Ok(false);
    }
    if !live.daemon {
        // Adopt the orphaned VM so it is stopped cleanly.
        ensure_running(roots, name, &SizeFlags::default()).await?;
    }
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(100));
    spinner.set_message(format!("machine {name}: stopping"));
    if let Err(e) = protocol::request(&paths.daemon_endpoint(), &DaemonRequest::Stop).await {
        tracing::debug!(error = %crate::error_chain(&e), "stop request");
    }
    while status::liveness(paths).daemon {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    spinner.finish_and_clear();
    Ok(true)
}
