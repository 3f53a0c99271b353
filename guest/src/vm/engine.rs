//! The engine process of the VM (`/init vm-engine`, started by PID 1): the
//! Docker Engine API on vsock port 2375 and on `/run/vmctl/docker.sock`, and
//! the control service on vsock port 1025, both for streams that proved the
//! host's secret ([`super::vsock`]). A shutdown request (or SIGTERM)
//! stops the containers and exits 0, which PID 1 takes as "power off".

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Notify;
use vmctl_proto::auth::Secret;
use vmctl_proto::control::{DATA_MOUNT, READY_MARKER};
use vmctl_proto::{VSOCK_PORT_API, VSOCK_PORT_CONTROL};

use super::control::Control;
use super::vsock::AuthListener;
use crate::engine::{Engine, EngineOptions};
use crate::network::host_ports::HostPorts;
use crate::volume::policy::BindPolicy;

/// The VM's NIC.
pub const INTERFACE: &str = "eth0";

/// Environment variable (set by PID 1 from `vmctl.bind`) with the desktop
/// address of ports published without a host IP.
pub const BIND_ENV: &str = "VMCTL_BIND";

pub fn main() -> anyhow::Result<()> {
    // First, before any thread or child: the secret PID 1 handed over.
    let secret = super::secret::inherited()
        .context("the engine serves vsock only with the host's secret")?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start tokio")?;
    runtime.block_on(serve(secret))?;
    nix::unistd::sync();
    Ok(())
}

/// Published ports live on the desktop: the host daemon holds them, and
/// ports without a host IP get the machine's `port-bind-address`.
fn network_options(secret: Secret) -> crate::network::NetworkOptions {
    let mut options = crate::network::NetworkOptions {
        port_authority: crate::network::ports::PortAuthority::Host(HostPorts::new(secret)),
        reserved_subnets: nic_subnets(),
        owns_kernel: true,
        ..Default::default()
    };
    match std::env::var(BIND_ENV).map(|text| text.parse()) {
        Ok(Ok(address)) => options.default_bind_ip = address,
        Ok(Err(_)) => tracing::warn!(
            variable = BIND_ENV,
            "not an IP address; publishing on 0.0.0.0"
        ),
        Err(_) => {}
    }
    options
}

/// The VM NIC's subnet, where the desktop is reachable (QEMU's user network
/// puts the desktop's loopback at `10.0.2.2`): what the host names on the
/// kernel command line (`vmctl.nic_subnet`, from its backend's config) and
/// what DHCP gave the NIC, if it has a lease yet. Networks may not overlap
/// it; published ports may not target it.
pub fn nic_subnets() -> Vec<ipnet::Ipv4Net> {
    let cmdline = super::cmdline::read();
    let mut subnets: Vec<ipnet::Ipv4Net> =
        super::cmdline::value(&cmdline, vmctl_proto::forward::CMDLINE_NIC_SUBNET)
            .and_then(|text| text.parse::<ipnet::Ipv4Net>().ok())
            .map(|net| net.trunc())
            .into_iter()
            .collect();
    if let Some(leased) = super::dhcp::subnet(INTERFACE) {
        if !subnets.contains(&leased) {
            subnets.push(leased);
        }
    }
    subnets
}

/// Registry settings from the kernel command line:
/// `vmctl.registry_mirror=URL` and `vmctl.insecure_registry=HOST` (each may
/// repeat).
fn registry_options() -> crate::image::registry::RegistryOptions {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let mut options = crate::image::registry::RegistryOptions::default();
    for word in cmdline.split_whitespace() {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        if key == vmctl_proto::control::CMDLINE_REGISTRY_MIRROR {
            options.mirrors.push(value.to_owned());
        } else if key == vmctl_proto::control::CMDLINE_INSECURE_REGISTRY {
            options.insecure.push(value.to_owned());
        }
    }
    if let Err(e) = options.validate() {
        tracing::warn!(error = %e, "ignoring the registry settings");
        return Default::default();
    }
    options
}

async fn serve(secret: Secret) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let options = EngineOptions {
        root: PathBuf::from(DATA_MOUNT),
        exec_root: PathBuf::from("/run/vmctl/engine"),
        cgroup_parent: "vmctl".into(),
        builtin_images: Some(PathBuf::from("/usr/share/vmctl/images")),
        self_exe: std::env::current_exe().context("cannot find own executable")?,
        network: network_options(secret.clone()),
        registry: registry_options(),
        // Binds name desktop paths: only the shares (and a few VM paths).
        binds: BindPolicy::Shares(
            super::shares::from_cmdline()
                .into_iter()
                .map(|share| share.path)
                .collect(),
        ),
    };
    let engine = Engine::open(options).await?;
    tracing::info!(ms = started.elapsed().as_millis() as u64, "engine open");
    let router = crate::api::router(engine.clone());
    let unix = crate::api::bind_unix(std::path::Path::new("/run/vmctl/docker.sock"))?;
    let api = AuthListener::bind(VSOCK_PORT_API, secret.clone())?;
    let mut control_listener = AuthListener::bind(VSOCK_PORT_CONTROL, secret)?;
    tokio::spawn(crate::api::serve_on(router.clone(), unix));
    tokio::spawn(crate::api::serve_on(router, api));

    let shutdown = Arc::new(Notify::new());
    let control = Arc::new(Control {
        shutdown: shutdown.clone(),
        interface: INTERFACE.into(),
        ports: Some(engine.clone()),
    });
    tokio::spawn(async move {
        loop {
            match control_listener.accept().await {
                Ok(stream) => {
                    let control = control.clone();
                    tokio::spawn(async move { control.handle(stream).await });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    });
    eprintln!(
        "{READY_MARKER} (engine up in {} ms, {} ms since boot)",
        started.elapsed().as_millis(),
        super::control::uptime_ms()
    );

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    tokio::select! {
        _ = shutdown.notified() => {}
        _ = terminate.recv() => tracing::info!("SIGTERM"),
    }
    tracing::info!("stopping containers");
    engine.stop_all(Duration::from_secs(10)).await;
    Ok(())
}
