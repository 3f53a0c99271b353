//! The host daemon: one per running machine, started detached by
//! `vmctl machine start`.
//!
//! It owns the VM: the vsock backend and VMM processes (started, or adopted
//! from a daemon that died), the forwarded Docker API endpoint, and its own
//! endpoint for the CLI ([`protocol`]; both [`crate::endpoint`]s). It holds `daemon.lock` for its whole
//! life and writes `status.json` at each change. It restarts nothing
//! silently: when the VMM or the vsock backend dies, it records why, tears
//! the rest down and exits.

pub mod boot;
pub mod clock;
pub mod facts;
pub mod guest;
pub mod protocol;
mod server;
mod signals;
pub mod supervise;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

use crate::endpoint::{self, EndpointError};
use crate::forward;
use crate::forward::ports::Forwarder;
use crate::hypervisor::{self, Accelerator, HypervisorError, Vm, VmSpec, VsockDevice};
use crate::machine::secret;
use crate::machine::status::{State, VmStatus};
use crate::machine::{Machine, MachineError, Roots};
use crate::process::Owned;
use crate::vsock::auth::{Authenticated, SharedSecret};
use crate::vsock::vhost_user::{BackendError, BackendPaths};
use crate::vsock::{VsockError, VsockTransport};

/// Environment variable forcing an accelerator (`kvm`, `hvf`, `whpx`, `tcg`).
pub const ACCEL_ENV: &str = "VMCTL_ACCEL";

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("machine {0} already has a daemon")]
    AlreadyRunning(String),
    #[error("cannot take the lock {path}")]
    Lock {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Machine(#[from] MachineError),
    #[error(transparent)]
    Hypervisor(#[from] HypervisorError),
    #[error("the vsock backend")]
    Backend(#[source] BackendError),
    #[error("no VM image: build it with `vmctl-image vm` (looked in {0})")]
    NoImage(String),
    #[error("{ACCEL_ENV}={0} is not an accelerator (kvm, hvf, whpx, tcg)")]
    BadAccelerator(String),
    #[error("the VM did not boot: {0}")]
    Boot(String),
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error("the VM's vsock")]
    Vsock(#[source] VsockError),
    #[error(transparent)]
    Secret(#[from] crate::machine::secret::SecretError),
    #[cfg(unix)]
    #[error("a share")]
    Share(#[source] crate::shares::virtiofsd::VirtiofsdError),
}

/// What the running daemon shares between its tasks.
pub(crate) struct Running {
    pub machine: Machine,
    pub vm: Arc<dyn Vm>,
    pub backend: Option<Owned>,
    /// The shares' virtiofsd processes (QEMU), in the config's order.
    pub shares: Vec<Owned>,
    pub transport: Arc<dyn VsockTransport>,
    pub status: std::sync::Mutex<VmStatus>,
    /// Signalled when someone asked to stop.
    pub stop: Notify,
    /// Published ports and manual rules.
    pub forwarder: Arc<Forwarder>,
    /// Serializes changes to the rules file.
    pub rules_lock: std::sync::Mutex<()>,
    /// The host-port service (guest → host), up from before the boot.
    host_ports: tokio::task::JoinHandle<()>,
}

impl Running {
    fn set_state(&self, state: State, error: Option<String>) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.state = state;
        if error.is_some() {
            status.error = error;
        }
        if let Err(e) = status.save(&self.machine.paths) {
            tracing::warn!(error = %crate::error_chain(&e), "cannot write status");
        }
    }

    pub fn status(&self) -> VmStatus {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        status.forwards = Some(match self.forwarder.link() {
            Some(link) if link.ready() => format!(
                "the forward link (guest {})",
                vmctl_proto::forward::LINK_GUEST
            ),
            Some(_) => "vsock (the forward link is not up)".to_owned(),
            None => "vsock".to_owned(),
        });
        status
    }
}

/// Runs the daemon of `name` until the VM stops.
pub async fn run(roots: Roots, name: &str) -> Result<(), DaemonError> {
    let machine = Machine::load(&roots, name)?;
    let paths = machine.paths.clone();
    raise_open_files();
    // Machines made before the files were private get their modes fixed.
    paths.make_private()?;
    let _lock = take_lock(&paths.lock(), name)?;
    let _ = std::fs::write(paths.daemon_pid(), format!("{}\n", std::process::id()));
    // A previous daemon's "running" is not this one's: until the VM answers
    // (adopted or booted), commands wait for this daemon instead of trying
    // a socket that is not there yet.
    if let Ok(Some(mut previous)) = VmStatus::load(&paths) {
        if previous.state == State::Running {
            previous.state = State::Starting;
            let _ = previous.save(&paths);
        }
    }
    tracing::info!(vm = %name, pid = std::process::id(), "daemon starting");

    let running = match start_or_adopt(&roots, machine).await {
        Ok(running) => Arc::new(running),
        Err(e) => {
            let mut status = VmStatus::new(State::Failed);
            status.error = Some(crate::error_chain(&e));
            let _ = status.save(&paths);
            cleanup_files(&paths);
            return Err(e);
        }
    };
    serve_until_stopped(running.clone()).await;
    shut_down(&running).await;
    cleanup_files(&paths);
    tracing::info!(vm = %name, "daemon stopped");
    Ok(())
}

fn take_lock(
    path: &std::path::Path,
    name: &str,
) -> Result<crate::machine::lock::Held, DaemonError> {
    crate::machine::lock::try_exclusive(path)
        .map_err(|source| DaemonError::Lock {
            path: path.to_owned(),
            source,
        })?
        .ok_or_else(|| DaemonError::AlreadyRunning(name.to_owned()))
}

/// Raises the soft open-file limit to the hard one: every forwarded
/// connection holds a desktop socket and a vsock stream. (Windows has no
/// such limit: handles are bounded by memory.)
#[cfg(not(unix))]
fn raise_open_files() {}

#[cfg(unix)]
fn raise_open_files() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
}

fn vm_spec(
    machine: &Machine,
    nic_subnet: Option<ipnet::Ipv4Net>,
) -> Result<(VmSpec, BackendPaths), DaemonError> {
    let image = crate::binaries::vm_image_dir(machine.config.arch()).map_err(|looked| {
        DaemonError::NoImage(
            looked
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        )
    })?;
    let paths = &machine.paths;
    let backend = BackendPaths {
        vhost_socket: paths.vhost_socket(),
        vsock_socket: paths.vsock_socket(),
        pid_file: paths.vsock_backend_pid(),
        log: paths.daemon_log(),
    };
    let mut log = std::env::var("VMCTL_GUEST_LOG")
        .map(|filter| format!(" {}={filter}", vmctl_proto::control::CMDLINE_LOG))
        .unwrap_or_default();
    for mirror in &machine.config.registry_mirrors {
        log.push_str(&format!(
            " {}={mirror}",
            vmctl_proto::control::CMDLINE_REGISTRY_MIRROR
        ));
    }
    if let Some(subnet) = nic_subnet {
        log.push_str(&format!(
            " {}={subnet}",
            vmctl_proto::forward::CMDLINE_NIC_SUBNET
        ));
    }
    for registry in &machine.config.insecure_registries {
        log.push_str(&format!(
            " {}={registry}",
            vmctl_proto::control::CMDLINE_INSECURE_REGISTRY
        ));
    }
    let shares = crate::shares::devices(&machine.config.mounts, paths);
    for share in &shares {
        log.push(' ');
        log.push_str(&share.word());
    }
    let spec = VmSpec {
        name: paths.name.clone(),
        cpus: machine.config.cpus,
        memory_mib: machine.config.memory_mib,
        vmlinux: image.join("vmlinux"),
        bzimage: image.join("bzImage"),
        initramfs: image.join("initramfs.img"),
        cmdline: format!(
            "console=ttyS0 quiet panic=-1 {}={} {}=/dev/vda {}={}{log}",
            vmctl_proto::control::CMDLINE_TIME,
            guest::cmdline_time(),
            vmctl_proto::control::CMDLINE_DATA_DISK,
            vmctl_proto::forward::CMDLINE_BIND,
            machine.config.port_bind_address,
        ),
        disk: paths.disk(),
        console_log: paths.console_log(),
        vmm_log: paths.daemon_log(),
        pid_file: paths.vmm_pid(),
        control_socket: paths.qmp_socket(),
        vsock: VsockDevice::VhostUser {
            socket: paths.vhost_socket(),
        },
        secret: paths.boot_secret(),
        shares,
        link_tap: None,
    };
    Ok((spec, backend))
}

fn forced_accelerator() -> Result<Option<Accelerator>, DaemonError> {
    let Ok(text) = std::env::var(ACCEL_ENV) else {
        return Ok(None);
    };
    let accel = match text.as_str() {
        "" => return Ok(None),
        "kvm" => Accelerator::Kvm,
        "hvf" => Accelerator::Hvf,
        "whpx" => Accelerator::Whpx,
        "tcg" => Accelerator::Tcg,
        _ => return Err(DaemonError::BadAccelerator(text)),
    };
    Ok(Some(accel))
}

/// Forward streams kept open and proven ahead of the connections that take
/// them: a burst beyond this connects as before.
const FORWARD_POOL: usize = 4;

/// How long the guest has to answer on the forward link once it runs
/// before published ports give up on it (and stay on vsock).
const LINK_PATIENCE: Duration = Duration::from_secs(30);

async fn start_or_adopt(roots: &Roots, machine: Machine) -> Result<Running, DaemonError> {
    let hypervisor = hypervisor::detect(machine.config.arch())?;
    let nic_subnet = hypervisor.nic_subnet();
    let (mut spec, backend_paths) = vm_spec(&machine, nic_subnet)?;
    // VZ: the VMM process serves the guest's ports as hybrid vsock on the
    // machine's vsock socket (also its control socket); no backend runs.
    if hypervisor.vsock_in_vmm() {
        spec.control_socket = machine.paths.vsock_socket();
    }
    let (backend_paths, transport) = crate::vsock::select(
        &machine.paths.name,
        &machine.paths.vsock_socket(),
        &mut spec.vsock,
        backend_paths,
        hypervisor.vsock_in_vmm(),
    )
    .map_err(DaemonError::Vsock)?;
    // Every stream proves the VM's per-boot secret: a running VM's is the
    // one its daemon left; a boot draws a new one below.
    let secret = Arc::new(SharedSecret::new(secret::load(
        &machine.paths.boot_secret(),
    )));
    let transport: Arc<dyn VsockTransport> =
        Arc::new(Authenticated::new(transport, secret.clone()));
    let previous = VmStatus::load(&machine.paths).ok().flatten();
    // Before the guest runs: its engine reserves ports as it starts containers.
    // Forwarded connections take streams opened ahead (`vsock::pool`).
    let forwards: Arc<dyn VsockTransport> = Arc::new(crate::vsock::pool::PooledTransport(
        crate::vsock::pool::Pooled::new(
            transport.clone(),
            vmctl_proto::VSOCK_PORT_FORWARD,
            FORWARD_POOL,
        ),
    ));
    let (forwarder, host_ports) = start_forwarder(&machine, forwards, nic_subnet);

    let mut adopted_backend = backend_paths
        .as_ref()
        .and_then(crate::vsock::vhost_user::adopt);
    let serve_shares = !hypervisor.shares_in_vmm();
    let mut adopted_shares = if serve_shares {
        adopt_shares(&spec.shares)
    } else {
        Vec::new()
    };
    if let Some(vm) = hypervisor.adopt(&spec) {
        let vm: Arc<dyn Vm> = Arc::from(vm);
        let shares_complete = !serve_shares || adopted_shares.len() == spec.shares.len();
        let complete = (backend_paths.is_none() || adopted_backend.is_some()) && shares_complete;
        let health = if complete {
            tokio::time::timeout(Duration::from_secs(10), guest::health(transport.as_ref()))
                .await
                .ok()
                .and_then(Result::ok)
        } else {
            None
        };
        if let Some(health) = health {
            let _ = guest::sync_time(transport.as_ref()).await;
            let mut status = previous.unwrap_or_else(|| VmStatus::new(State::Running));
            status.state = State::Running;
            status.vmm_pid = Some(vm.process().pid);
            status.guest_address = health.address;
            status.error = None;
            status.save(&machine.paths)?;
            tracing::info!(vm = %machine.paths.name, "adopted the running VM");
            if let Some(link) = crate::link::Link::adopt(&machine.paths.link_socket()) {
                link.watch(LINK_PATIENCE);
                forwarder.set_link(link);
            }
            return Ok(Running {
                machine,
                vm,
                backend: adopted_backend,
                shares: adopted_shares,
                transport,
                status: std::sync::Mutex::new(status),
                stop: Notify::new(),
                forwarder,
                rules_lock: Default::default(),
                host_ports,
            });
        }
        // Never boot a second VM on the same disk: stop the old one first.
        tracing::warn!(vm = %machine.paths.name, "the running VM does not answer (or lost its vsock backend): stopping it");
        let _ = vm.quit();
        vm.process().terminate(Duration::from_secs(3)).await;
    }
    if let Some(backend) = adopted_backend.take() {
        backend.terminate(Duration::from_secs(2)).await;
    }
    boot::stop_shares(&std::mem::take(&mut adopted_shares)).await;

    machine.size_disk()?;
    secret.set(secret::renew(&machine.paths.boot_secret())?);
    let link = if hypervisor.name() == "qemu" && crate::link::wanted() {
        crate::link::Link::prepare(&machine.paths.link_socket()).await
    } else {
        None
    };
    if let Some((_, tap)) = &link {
        spec.link_tap = Some(*tap);
        spec.cmdline.push(' ');
        spec.cmdline.push_str(&crate::link::Link::cmdline_word());
    }
    let mut status = VmStatus::new(State::Starting);
    status.hypervisor = hypervisor.name().to_owned();
    status.started_at = Some(unix_now());
    status.save(&machine.paths)?;
    let vmm_version = hypervisor::vmm_version(machine.config.arch());
    let booted = boot::boot(boot::BootPlan {
        hypervisor: hypervisor.as_ref(),
        spec,
        backend: backend_paths,
        serve_shares,
        transport: transport.as_ref(),
        facts_path: &roots.host_facts(),
        forced: forced_accelerator()?,
        under: format!("{vmm_version}; {}", facts::host_kernel()),
    })
    .await?;
    if let Err(e) = guest::sync_time(transport.as_ref()).await {
        tracing::warn!(error = %crate::error_chain(&e), "cannot set the guest's clock");
    }
    status.state = State::Running;
    status.accelerator = Some(booted.accelerator.to_string());
    status.accelerator_note = booted.note;
    status.boot_ms = Some(booted.boot.as_millis() as u64);
    status.vmm_pid = Some(booted.vm.process().pid);
    status.guest_address = booted.health.address;
    status.guest_kernel = Some(booted.health.kernel);
    status.save(&machine.paths)?;
    tracing::info!(vm = %machine.paths.name, accel = %booted.accelerator, boot_ms = booted.boot.as_millis() as u64, "VM running");
    if let Some((link, _)) = link {
        link.watch(LINK_PATIENCE);
        forwarder.set_link(link);
    }
    Ok(Running {
        machine,
        vm: booted.vm,
        backend: booted.backend,
        shares: booted.shares,
        transport,
        status: std::sync::Mutex::new(status),
        stop: Notify::new(),
        forwarder,
        rules_lock: Default::default(),
        host_ports,
    })
}

/// The virtiofsd processes an earlier daemon started, while every one runs
/// (all or none: a VM with some shares gone is restarted whole).
fn adopt_shares(shares: &[crate::shares::ShareDevice]) -> Vec<Owned> {
    #[cfg(unix)]
    {
        shares
            .iter()
            .filter_map(crate::shares::virtiofsd::adopt)
            .collect()
    }
    #[cfg(not(unix))]
    {
        let _ = shares;
        Vec::new()
    }
}

/// The forwarder with the machine's manual rules, and the host-port service
/// the guest reserves published ports through.
fn start_forwarder(
    machine: &Machine,
    transport: Arc<dyn VsockTransport>,
    nic_subnet: Option<ipnet::Ipv4Net>,
) -> (Arc<Forwarder>, tokio::task::JoinHandle<()>) {
    // The machine's policy, following its config.json while it runs.
    let gate = forward::gate::Gate::following(machine.paths.config(), &machine.config, nic_subnet);
    let forwarder = Forwarder::with_gate(transport.clone(), gate);
    match crate::machine::port_rules::load(&machine.paths) {
        Ok(rules) => {
            for rule in rules {
                if let Err(refusal) = forwarder.add_rule(rule.clone()) {
                    tracing::warn!(rule = %rule.name, error = %refusal.message, "cannot listen for a port rule");
                }
            }
        }
        Err(e) => tracing::warn!(error = %crate::error_chain(&e), "cannot read the port rules"),
    }
    let service = match transport.listen(vmctl_proto::VSOCK_PORT_HOST_PORTS) {
        Ok(listener) => tokio::spawn(forward::host_ports::serve(listener, forwarder.clone())),
        Err(e) => {
            tracing::warn!(error = %crate::error_chain(&e), "no host-port service: published ports are reconciled, not reserved");
            tokio::spawn(async {})
        }
    };
    (forwarder, service)
}

/// Serves the endpoints until a stop request, a signal, or the death of
/// the VMM or the vsock backend.
async fn serve_until_stopped(running: Arc<Running>) {
    let paths = running.machine.paths.clone();
    let api = match endpoint::bind_private(&paths.docker_endpoint()) {
        Ok(listener) => tokio::spawn(forward::api::serve(listener, running.transport.clone())),
        Err(e) => {
            running.set_state(State::Failed, Some(crate::error_chain(&e)));
            return;
        }
    };
    let control = match endpoint::bind_private(&paths.daemon_endpoint()) {
        Ok(listener) => tokio::spawn(server::serve(listener, running.clone())),
        Err(e) => {
            api.abort();
            running.set_state(State::Failed, Some(crate::error_chain(&e)));
            return;
        }
    };
    let watch = tokio::spawn(forward::watch::follow(
        running.transport.clone(),
        running.forwarder.clone(),
    ));
    let shares = running
        .machine
        .config
        .mounts
        .iter()
        .map(|m| m.path.clone())
        .collect();
    let _file_events = crate::file_events::Task::spawn(running.transport.clone(), shares);
    let _clock = clock::spawn(running.transport.clone(), paths.name.clone());
    let backend_exit = async {
        match &running.backend {
            Some(backend) => backend.exited().await,
            None => std::future::pending().await,
        }
    };
    let share_exit = async {
        if running.shares.is_empty() {
            return std::future::pending().await;
        }
        let exits = running.shares.iter().enumerate().map(|(i, share)| {
            Box::pin(async move {
                share.exited().await;
                i
            })
        });
        futures_util::future::select_all(exits).await.0
    };
    tokio::select! {
        _ = running.stop.notified() => tracing::info!("stop requested"),
        signal = signals::stopped() => tracing::info!(%signal, "stopping the VM"),
        _ = running.vm.process().exited() => {
            tracing::error!(pid = running.vm.process().pid, "the VMM exited on its own");
            running.set_state(State::Stopped, Some("the VM process exited on its own (see `vmctl machine logs`)".into()));
        }
        _ = backend_exit => {
            tracing::error!("the vsock backend exited");
            running.set_state(State::Failed, Some("the vsock backend exited; the VM was stopped".into()));
        }
        i = share_exit => {
            let path = running.machine.config.mounts.get(i).map(|m| m.path.display().to_string()).unwrap_or_default();
            tracing::error!(share = %path, "a share's virtiofsd exited");
            running.set_state(State::Failed, Some(format!("the virtiofsd serving {path} exited; the VM was stopped (see `vmctl machine logs`)")));
        }
    }
    api.abort();
    control.abort();
    watch.abort();
    endpoint::remove(&paths.docker_endpoint());
}

/// Stops the guest cleanly if it still runs (shutdown over vsock, then the
/// VMM's power button, then quit, then SIGKILL), then the vsock backend.
async fn shut_down(running: &Running) {
    let vm = &running.vm;
    if !vm.process().has_exited() {
        running.set_state(State::Stopping, None);
        let asked = guest::shutdown(running.transport.as_ref()).await;
        if let Err(e) = &asked {
            tracing::warn!(error = %crate::error_chain(e), "the guest refused a clean shutdown");
        }
        let graceful = if asked.is_ok() { 30 } else { 0 };
        let down = tokio::time::timeout(Duration::from_secs(graceful), vm.process().exited()).await;
        if down.is_err() {
            let _ = vm.request_power_off();
            if tokio::time::timeout(Duration::from_secs(5), vm.process().exited())
                .await
                .is_err()
            {
                let _ = vm.quit();
                vm.process().terminate(Duration::from_secs(5)).await;
            }
        }
    }
    vm.process().forget_pid_file();
    running.host_ports.abort();
    if let Some(backend) = &running.backend {
        backend.terminate(Duration::from_secs(2)).await;
    }
    boot::stop_shares(&running.shares).await;
    if let Some(link) = running.forwarder.link() {
        link.close().await;
    }
    let state = running.status().state;
    if state != State::Failed {
        running.set_state(State::Stopped, None);
    }
}

fn cleanup_files(paths: &crate::machine::MachinePaths) {
    endpoint::remove(&paths.docker_endpoint());
    endpoint::remove(&paths.daemon_endpoint());
    for file in [
        paths.qmp_socket(),
        paths.vhost_socket(),
        paths.vsock_socket(),
        host_port_socket(paths),
        paths.daemon_pid(),
        paths.vmm_pid(),
        paths.vsock_backend_pid(),
        paths.boot_secret(),
    ] {
        let _ = std::fs::remove_file(file);
    }
    for i in 0..crate::shares::MAX_SHARES {
        let socket = paths.share_socket(i);
        // virtiofsd's own lock beside its socket (`<socket>.pid`).
        let mut own_pid = socket.clone().into_os_string();
        own_pid.push(".pid");
        for file in [socket, paths.share_pid(i), own_pid.into()] {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// Where the hybrid backend hands over the guest's host-port connections.
fn host_port_socket(paths: &crate::machine::MachinePaths) -> std::path::PathBuf {
    let mut path = paths.vsock_socket().into_os_string();
    path.push(format!("_{}", vmctl_proto::VSOCK_PORT_HOST_PORTS));
    path.into()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}
