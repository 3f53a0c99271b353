//! Hypervisor backends: what starts, watches and stops the VM process.
//!
//! One trait, [`Hypervisor`], per backend; [`detect`] returns the first one
//! available on this desktop. QEMU ([`qemu`]) is the backend on Linux (and
//! can serve macOS with hvf and Windows with whpx); Apple's
//! Virtualization.framework and Hyper-V come as backends of their own in
//! `vz.rs` and `hyperv.rs`, behind `cfg(target_os)`. QEMU is built on unix
//! only (its control socket and vsock are unix sockets); on Windows there is
//! no backend yet, and [`detect`] says so ([`HypervisorError::NoBackend`]).
//! Backends translate a
//! [`VmSpec`] into their VMM's terms; the policy — which accelerator to
//! trust, when to give up, what to tell the user — lives in the daemon.

#[cfg(unix)]
pub mod qemu;
#[cfg(unix)]
pub mod qmp;
#[cfg(unix)]
pub mod vz;

use std::path::PathBuf;
use std::time::Duration;

use crate::process::{Owned, ProcessError};

/// Everything a backend needs to launch one VM.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub name: String,
    pub cpus: u32,
    pub memory_mib: u64,
    /// Uncompressed kernel (PVH / direct boot).
    pub vmlinux: PathBuf,
    /// Compressed kernel, for VMMs that need a bzImage.
    pub bzimage: PathBuf,
    pub initramfs: PathBuf,
    pub cmdline: String,
    /// The raw data disk.
    pub disk: PathBuf,
    /// Where the serial console goes (appended).
    pub console_log: PathBuf,
    /// Where the VMM's own messages go (appended).
    pub vmm_log: PathBuf,
    /// The VMM's pid file.
    pub pid_file: PathBuf,
    /// The VMM's control socket (QMP for QEMU).
    pub control_socket: PathBuf,
    pub vsock: VsockDevice,
    /// The per-boot vsock secret (a 0600 file): the backend hands its bytes
    /// to the guest out of band, never on the kernel command line (which
    /// every container can read) nor in an argv other local users can read.
    /// QEMU: the fw_cfg file `vmctl_proto::auth::FW_CFG_NAME`.
    pub secret: PathBuf,
    /// The desktop directories the guest mounts (the command line already
    /// names each one). QEMU: a `vhost-user-fs-pci` device on each one's
    /// virtiofsd socket; VZ: its own virtio-fs devices.
    pub shares: Vec<crate::shares::ShareDevice>,
    /// The forward link's tap (a descriptor the daemon holds open; Linux
    /// with QEMU: a second NIC, see `crate::link`). `None`: no link.
    pub link_tap: Option<i32>,
}

/// How the guest's vsock device is provided.
#[derive(Debug, Clone)]
pub enum VsockDevice {
    /// A vhost-user backend listening on this unix socket (vhost-device-vsock).
    VhostUser { socket: PathBuf },
    /// The host kernel's vhost-vsock with this guest CID.
    Kernel { cid: u32 },
}

/// An accelerator a backend can run guests with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accelerator {
    Kvm,
    Hvf,
    Whpx,
    Tcg,
}

impl Accelerator {
    pub fn as_str(self) -> &'static str {
        match self {
            Accelerator::Kvm => "kvm",
            Accelerator::Hvf => "hvf",
            Accelerator::Whpx => "whpx",
            Accelerator::Tcg => "tcg",
        }
    }

    /// Emulation: always works, slowly.
    pub fn is_emulation(self) -> bool {
        self == Accelerator::Tcg
    }

    /// How long a guest may take to answer before this accelerator is
    /// judged not to boot guests here.
    pub fn boot_timeout(self) -> Duration {
        if self.is_emulation() {
            Duration::from_secs(180)
        } else {
            Duration::from_secs(20)
        }
    }
}

impl std::fmt::Display for Accelerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The VMM's own view of the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    Running,
    /// Paused, starting, migrating: alive but not running guest code.
    Paused(String),
    /// The VMM gave up on the guest (KVM internal error, guest panic).
    Failed(String),
    /// The VMM process is gone.
    Exited,
}

#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    #[error("{program} was not found (install it, or set {env})")]
    NotInstalled { program: String, env: &'static str },
    #[error("{0} is missing from the VM image")]
    MissingImage(PathBuf),
    #[error("{backend} cannot use the {accelerator} accelerator on this host")]
    Unsupported {
        backend: &'static str,
        accelerator: Accelerator,
    },
    #[error("starting the VM")]
    Launch(#[source] ProcessError),
    #[error("VMM control socket {path}")]
    Control {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("VMM command {command} failed: {message}")]
    Command { command: String, message: String },
    #[error("cannot configure the {backend} VM")]
    Configure {
        backend: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("no hypervisor backend for {platform} yet (Hyper-V comes in a later release)")]
    NoBackend { platform: &'static str },
}

/// A VM process and the means to ask it things.
pub trait Vm: Send + Sync {
    fn process(&self) -> &Owned;
    /// The guest's state from the VMM. Blocking, bounded by a short timeout.
    fn state(&self) -> RunState;
    /// Asks the guest to power off (ACPI power button); it may ignore it.
    fn request_power_off(&self) -> Result<(), HypervisorError>;
    /// Stops the VM at once (the guest gets no say).
    fn quit(&self) -> Result<(), HypervisorError>;
}

/// A hypervisor backend.
pub trait Hypervisor: Send + Sync {
    fn name(&self) -> &'static str;
    /// Accelerators this backend could use here, fastest first (the last is
    /// always emulation). Whether they really boot a guest is for the caller
    /// to verify.
    fn accelerators(&self) -> Vec<Accelerator>;
    /// Starts the VM; returns once the VMM process runs.
    fn launch(&self, spec: &VmSpec, accel: Accelerator) -> Result<Box<dyn Vm>, HypervisorError>;
    /// Takes over a VM process an earlier daemon started, if it is alive.
    fn adopt(&self, spec: &VmSpec) -> Option<Box<dyn Vm>>;
    /// The subnet of the VM's own NIC, where the backend's network puts the
    /// desktop itself (QEMU user networking: `10.0.2.0/24`, the desktop's
    /// loopback at `10.0.2.2`). Published ports may never target it.
    fn nic_subnet(&self) -> Option<ipnet::Ipv4Net>;
    /// Whether the VMM process itself offers the guest's vsock ports as
    /// hybrid vsock (`CONNECT <port>`) on [`VmSpec::control_socket`], guest
    /// connections to host port P on `<socket>_P` (VZ): then no vsock
    /// backend runs and the daemon's transport is hybrid vsock on it.
    fn vsock_in_vmm(&self) -> bool {
        false
    }
    /// Whether the VMM serves the shares itself (VZ); otherwise the daemon
    /// starts a virtiofsd per share before the VMM.
    fn shares_in_vmm(&self) -> bool {
        false
    }
}

/// The first hypervisor backend available on this desktop for guests of
/// `arch`.
pub fn detect(arch: crate::binaries::GuestArch) -> Result<Box<dyn Hypervisor>, HypervisorError> {
    // On a Mac, Virtualization.framework first (no QEMU to install) for the
    // Mac's own architecture, unless VMCTL_HYPERVISOR=qemu asks for QEMU
    // with hvf; another architecture is QEMU's emulation.
    #[cfg(target_vendor = "apple")]
    {
        let qemu_asked = std::env::var(vz::HYPERVISOR_ENV).is_ok_and(|v| v == "qemu");
        let native = arch == crate::binaries::GuestArch::desktop();
        if let Some(vz) = vz::Vz::find().filter(|_| native && !qemu_asked) {
            return Ok(Box::new(vz));
        }
    }
    #[cfg(unix)]
    {
        let qemu = qemu::Qemu::find_for(arch)?;
        Ok(Box::new(qemu))
    }
    #[cfg(not(unix))]
    {
        let _ = arch;
        Err(HypervisorError::NoBackend {
            platform: platform_name(),
        })
    }
}

/// Fails at once on a platform with no backend at all (Windows, for now),
/// before anything is started for a VM that cannot run.
pub fn ensure_platform_has_backend() -> Result<(), HypervisorError> {
    if cfg!(unix) {
        Ok(())
    } else {
        Err(HypervisorError::NoBackend {
            platform: platform_name(),
        })
    }
}

/// The version of the VMM for guests of `arch`, for what host facts were
/// measured under (empty when none is installed).
pub fn vmm_version(arch: crate::binaries::GuestArch) -> String {
    #[cfg(unix)]
    {
        qemu::Qemu::find_for(arch)
            .ok()
            .and_then(|q| qemu::version(q.binary()))
            .unwrap_or_default()
    }
    #[cfg(not(unix))]
    {
        let _ = arch;
        String::new()
    }
}

/// This desktop's operating system, as users call it.
pub fn platform_name() -> &'static str {
    match std::env::consts::OS {
        "windows" => "Windows",
        "macos" => "macOS",
        "linux" => "Linux",
        other => other,
    }
}
