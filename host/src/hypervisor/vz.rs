//! The Apple Virtualization.framework backend (macOS): a small VMM process
//! per machine, `vmctl __vmm-vz <vz.json>` (the `vmctl-vz` crate), owns the
//! VM, so the VM outlives a daemon restart the way a QEMU process does.
//!
//! [`Vz::launch`] maps the [`VmSpec`] to a `vmctl_vz::VzConfig` (the same
//! kernel command line as QEMU's, `console=hvc0`, the secret by vsock, the
//! machine's shares by VZ's virtio-fs devices), writes it as `vz.json` beside the
//! pid file, and starts the VMM detached (a process group of its own, its
//! output appended to the machine's log, its pid in the pid file).
//!
//! The VMM's one unix socket is [`VmSpec::control_socket`], which the daemon
//! points at the machine's hybrid vsock socket for this backend
//! ([`Hypervisor::vsock_in_vmm`]): `CONNECT <port>` there reaches guest
//! ports, guest connections to host port P arrive on `<socket>_P`, and the
//! control lines `STATE`, `PID`, `STOP`, `QUIT` serve the [`Vm`] trait
//! (`vmctl_vz::protocol`). [`Vz::adopt`] trusts a pid file only when the
//! socket's `PID` answers the same pid.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vmctl_vz::config::Share;
use vmctl_vz::protocol::VmState;
use vmctl_vz::{VzConfig, VzParts};

use super::{Accelerator, Hypervisor, HypervisorError, RunState, Vm, VmSpec};
use crate::process::Owned;

/// The backend's name.
pub const NAME: &str = "vz";

/// Environment variable choosing the backend on a Mac: `qemu` for QEMU
/// with hvf instead of Virtualization.framework.
pub const HYPERVISOR_ENV: &str = "VMCTL_HYPERVISOR";

/// The hidden subcommand that runs the VMM process (`vmctl_vz::run_vmm`).
pub const VMM_SUBCOMMAND: &str = "__vmm-vz";

/// The subnet of the VM's NIC on VZ's NAT: vmnet's shared mode, whose
/// default is `192.168.64.0/24` with the desktop at `.1` (macOS's
/// `/Library/Preferences/SystemConfiguration/com.apple.vmnet.plist`,
/// `Shared_Net_Address`/`Shared_Net_Mask`, can move it).
pub const NAT_NET: ipnet::Ipv4Net =
    ipnet::Ipv4Net::new_assert(std::net::Ipv4Addr::new(192, 168, 64, 0), 24);

/// How long a control line may take.
const CONTROL_LIMIT: Duration = Duration::from_secs(3);

/// The longest answer read from the VMM.
const MAX_ANSWER: u64 = 1024;

pub struct Vz {
    /// This very program, which runs the VMM under [`VMM_SUBCOMMAND`].
    program: PathBuf,
}

impl Vz {
    /// The backend, when this desktop runs Virtualization.framework VMs.
    pub fn find() -> Option<Self> {
        if !vmctl_vz::available() {
            return None;
        }
        let program = std::env::current_exe().ok()?;
        Some(Self { program })
    }

    /// Where the VMM's configuration is written: beside the pid file.
    fn config_path(spec: &VmSpec) -> PathBuf {
        spec.pid_file.with_file_name("vz.json")
    }

    /// The kernel file VZLinuxBootLoader boots: on Apple silicon the
    /// uncompressed arm64 `Image` (the image's `vmlinux`); on an Intel Mac
    /// the bzImage (VZ loads x86 kernels by the bzImage boot protocol, not
    /// as an ELF). VZ runs guests of the Mac's own architecture only.
    fn kernel(spec: &VmSpec) -> &Path {
        if cfg!(target_arch = "x86_64") {
            &spec.bzimage
        } else {
            &spec.vmlinux
        }
    }

    fn config(spec: &VmSpec) -> Result<VzConfig, HypervisorError> {
        let shares: Vec<Share> = spec
            .shares
            .iter()
            .map(|share| Share {
                tag: share.tag.clone(),
                host_path: share.path.clone(),
                guest_path: share.path.clone(),
                read_only: share.read_only,
            })
            .collect();
        let host_ports = [vmctl_proto::VSOCK_PORT_HOST_PORTS];
        let parts = VzParts {
            name: &spec.name,
            cpus: spec.cpus,
            memory_mib: spec.memory_mib,
            kernel: Self::kernel(spec),
            initramfs: &spec.initramfs,
            cmdline: &spec.cmdline,
            disk: &spec.disk,
            console_log: &spec.console_log,
            socket: &spec.control_socket,
            secret: &spec.secret,
            shares: &shares,
            host_ports: &host_ports,
        };
        VzConfig::from_parts(&parts).map_err(|e| HypervisorError::Configure {
            backend: NAME,
            source: Box::new(e),
        })
    }

    fn command(&self, config_path: &Path) -> Command {
        let mut command = Command::new(&self.program);
        command.arg(VMM_SUBCOMMAND).arg(config_path);
        use std::os::unix::process::CommandExt;
        // SAFETY: umask is async-signal-safe and touches no memory: what
        // the VMM creates (its socket, the console log) is the user's alone.
        unsafe {
            command.pre_exec(|| {
                libc::umask(0o077);
                Ok(())
            });
        }
        command
    }
}

/// Writes `config` to `path`, mode 0600.
fn write_config(path: &Path, config: &VzConfig) -> Result<(), HypervisorError> {
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |source: std::io::Error| HypervisorError::Configure {
        backend: NAME,
        source: Box::new(source),
    };
    let json = config.to_json().map_err(|e| fail(e.into()))?;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    file.write_all(json.as_bytes()).map_err(fail)
}

impl Hypervisor for Vz {
    fn name(&self) -> &'static str {
        NAME
    }

    /// VZ always runs guests on the Mac's hypervisor (Hypervisor.framework).
    fn accelerators(&self) -> Vec<Accelerator> {
        vec![Accelerator::Hvf]
    }

    fn launch(&self, spec: &VmSpec, accel: Accelerator) -> Result<Box<dyn Vm>, HypervisorError> {
        if accel != Accelerator::Hvf {
            return Err(HypervisorError::Unsupported {
                backend: NAME,
                accelerator: accel,
            });
        }
        for file in [Self::kernel(spec), &spec.initramfs] {
            if !file.exists() {
                return Err(HypervisorError::MissingImage(file.to_owned()));
            }
        }
        let config = Self::config(spec)?;
        let path = Self::config_path(spec);
        write_config(&path, &config)?;
        let _ = std::fs::remove_file(&spec.control_socket);
        let command = self.command(&path);
        tracing::info!(vm = %spec.name, config = %path.display(), "launching the VZ VMM");
        let process = Owned::spawn(command, &spec.vmm_log, &spec.pid_file)
            .map_err(HypervisorError::Launch)?;
        Ok(Box::new(VzVm {
            process,
            socket: spec.control_socket.clone(),
        }))
    }

    fn adopt(&self, spec: &VmSpec) -> Option<Box<dyn Vm>> {
        let pid = adoptable(&spec.pid_file, &spec.control_socket)?;
        let process = Owned::adopt(pid, &spec.pid_file).ok()?;
        tracing::info!(vm = %spec.name, pid, "adopting the running VZ VMM");
        Some(Box::new(VzVm {
            process,
            socket: spec.control_socket.clone(),
        }))
    }

    fn nic_subnet(&self) -> Option<ipnet::Ipv4Net> {
        Some(NAT_NET)
    }

    fn vsock_in_vmm(&self) -> bool {
        true
    }

    fn shares_in_vmm(&self) -> bool {
        true
    }
}

/// The pid in `pid_file`, when the VMM on `socket` says it is that process.
fn adoptable(pid_file: &Path, socket: &Path) -> Option<u32> {
    let recorded: u32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let answer = ask(socket, "PID").ok()?;
    let answered: u32 = answer.strip_prefix("OK ")?.parse().ok()?;
    (answered == recorded).then_some(recorded)
}

/// One control line to the VMM and its one-line answer.
fn ask(socket: &Path, request: &str) -> Result<String, HypervisorError> {
    let io = |source| HypervisorError::Control {
        path: socket.to_owned(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(io)?;
    stream.set_read_timeout(Some(CONTROL_LIMIT)).map_err(io)?;
    stream.set_write_timeout(Some(CONTROL_LIMIT)).map_err(io)?;
    stream
        .write_all(format!("{request}\n").as_bytes())
        .map_err(io)?;
    let mut answer = String::new();
    stream
        .take(MAX_ANSWER)
        .read_to_string(&mut answer)
        .map_err(io)?;
    Ok(answer.trim_end_matches('\n').to_owned())
}

/// `OK` or the VMM's refusal.
fn command(socket: &Path, request: &str) -> Result<(), HypervisorError> {
    let answer = ask(socket, request)?;
    if answer == "OK" {
        return Ok(());
    }
    Err(HypervisorError::Command {
        command: request.to_owned(),
        message: answer
            .strip_prefix("ERR ")
            .unwrap_or(if answer.is_empty() {
                "no answer"
            } else {
                &answer
            })
            .to_owned(),
    })
}

struct VzVm {
    process: Owned,
    socket: PathBuf,
}

impl Vm for VzVm {
    fn process(&self) -> &Owned {
        &self.process
    }

    fn state(&self) -> RunState {
        if self.process.has_exited() {
            return RunState::Exited;
        }
        match ask(&self.socket, "STATE") {
            Ok(answer) => run_state(&answer),
            Err(_) if self.process.has_exited() => RunState::Exited,
            // The socket appears a moment after the process starts.
            Err(e) => RunState::Paused(format!("the VMM is not answering: {e}")),
        }
    }

    fn request_power_off(&self) -> Result<(), HypervisorError> {
        command(&self.socket, "STOP")
    }

    fn quit(&self) -> Result<(), HypervisorError> {
        command(&self.socket, "QUIT")
    }
}

/// A `STATE` answer as the daemon's [`RunState`].
fn run_state(answer: &str) -> RunState {
    let state = answer.strip_prefix("OK ").and_then(VmState::from_line);
    match state {
        Some(VmState::Running) => RunState::Running,
        Some(VmState::Starting) => RunState::Paused("starting".into()),
        Some(VmState::Paused(what)) => RunState::Paused(what),
        Some(VmState::Stopped) => RunState::Failed("stopped".into()),
        Some(VmState::Error(why)) => RunState::Failed(why),
        None => RunState::Paused(format!("unexpected VMM answer {answer:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use vmctl_vz::protocol::{ConnectFuture, GuestPorts, VmControl};

    /// The VMM's socket served by the real protocol code, over a fake VM.
    struct FakeVm(Mutex<VmState>);

    impl GuestPorts for FakeVm {
        fn connect(&self, _: u32) -> ConnectFuture<'_> {
            Box::pin(async { Err(std::io::ErrorKind::ConnectionRefused.into()) })
        }
    }

    impl VmControl for FakeVm {
        fn state(&self) -> VmState {
            self.0.lock().unwrap().clone()
        }
        fn request_stop(&self) -> std::io::Result<()> {
            Err(std::io::Error::other("not now"))
        }
        fn quit(&self) -> std::io::Result<()> {
            *self.0.lock().unwrap() = VmState::Stopped;
            Ok(())
        }
    }

    fn spec(dir: &Path) -> VmSpec {
        VmSpec {
            name: "t".into(),
            cpus: 2,
            memory_mib: 1024,
            vmlinux: dir.join("vmlinux"),
            bzimage: dir.join("bzImage"),
            initramfs: dir.join("initramfs.img"),
            cmdline: "console=ttyS0 quiet vmctl.data=/dev/vda".into(),
            disk: dir.join("disk.raw"),
            console_log: dir.join("console.log"),
            vmm_log: dir.join("daemon.log"),
            pid_file: dir.join("vmm.pid"),
            control_socket: dir.join("vm.vsock"),
            vsock: super::super::VsockDevice::Kernel { cid: 3 },
            secret: dir.join("vm.secret"),
            shares: Vec::new(),
            link_tap: None,
        }
    }

    #[test]
    fn the_spec_becomes_the_vmms_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path());
        let config = Vz::config(&spec).unwrap();
        assert_eq!(config.socket, spec.control_socket);
        assert_eq!(config.secret, spec.secret);
        let kernel = if cfg!(target_arch = "x86_64") {
            &spec.bzimage
        } else {
            &spec.vmlinux
        };
        assert_eq!(&config.kernel, kernel);
        assert_eq!(config.memory_bytes, 1024 << 20);
        assert_eq!(config.host_ports, vec![vmctl_proto::VSOCK_PORT_HOST_PORTS]);
        assert!(config.command_line.starts_with("console=hvc0 quiet"));
        assert!(config.command_line.contains("vmctl.secret=vsock"));
        let path = Vz::config_path(&spec);
        assert_eq!(path, dir.path().join("vz.json"));
        write_config(&path, &config).unwrap();
        write_config(&path, &config).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(vmctl_vz::read_config(&path).unwrap(), config);

        let mut relative = spec.clone();
        relative.disk = "disk.raw".into();
        assert!(matches!(
            Vz::config(&relative),
            Err(HypervisorError::Configure { backend: "vz", .. })
        ));
    }

    #[test]
    fn only_hvf_and_the_image_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let vz = Vz {
            program: "/nonexistent/vmctl".into(),
        };
        let spec = spec(dir.path());
        assert!(matches!(
            vz.launch(&spec, Accelerator::Tcg),
            Err(HypervisorError::Unsupported { .. })
        ));
        assert!(matches!(
            vz.launch(&spec, Accelerator::Hvf),
            Err(HypervisorError::MissingImage(_))
        ));
        assert_eq!(vz.accelerators(), vec![Accelerator::Hvf]);
        assert!(vz.vsock_in_vmm());
        assert_eq!(vz.nic_subnet(), Some(NAT_NET));
    }

    #[test]
    fn the_vm_trait_speaks_the_vmms_control_lines_and_adopts_only_its_pid() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("vm.vsock");
        let pid_file = dir.path().join("vmm.pid");
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let vm = Arc::new(FakeVm(Mutex::new(VmState::Running)));
        let listener = runtime
            .block_on(async { tokio::net::UnixListener::bind(&socket) })
            .unwrap();
        runtime.spawn(vmctl_vz::protocol::serve(listener, vm.clone()));

        assert_eq!(
            run_state(&ask(&socket, "STATE").unwrap()),
            RunState::Running
        );
        // The fake VMM runs in this process: PID answers our own pid.
        std::fs::write(&pid_file, format!("{}\n", std::process::id())).unwrap();
        assert_eq!(adoptable(&pid_file, &socket), Some(std::process::id()));
        std::fs::write(&pid_file, "1\n").unwrap();
        assert_eq!(adoptable(&pid_file, &socket), None, "a pid the VMM disowns");
        assert_eq!(adoptable(&pid_file, &dir.path().join("gone")), None);

        match command(&socket, "STOP") {
            Err(HypervisorError::Command { command, message }) => {
                assert_eq!((command.as_str(), message.as_str()), ("STOP", "not now"))
            }
            other => panic!("{other:?}"),
        }
        command(&socket, "QUIT").unwrap();
        assert_eq!(
            run_state(&ask(&socket, "STATE").unwrap()),
            RunState::Failed("stopped".into())
        );
        assert!(matches!(
            command(&socket, "BOGUS"),
            Err(HypervisorError::Command { .. })
        ));
        assert!(matches!(
            ask(&dir.path().join("none"), "STATE"),
            Err(HypervisorError::Control { .. })
        ));
    }

    /// A guest whose port 7 echoes, framed end to end as the guest's
    /// vsock services are (`vmctl_proto::framing`).
    struct EchoGuest;

    impl GuestPorts for EchoGuest {
        fn connect(&self, port: u32) -> ConnectFuture<'_> {
            Box::pin(async move {
                if port != 7 {
                    return Err(std::io::ErrorKind::ConnectionRefused.into());
                }
                let (ours, guest) = tokio::io::duplex(4096);
                tokio::spawn(async move {
                    let (mut r, mut w) = tokio::io::split(vmctl_proto::framing::Framed::new(guest));
                    tokio::io::copy(&mut r, &mut w).await.unwrap();
                    tokio::io::AsyncWriteExt::shutdown(&mut w).await.unwrap();
                });
                Ok(Box::new(ours) as vmctl_vz::protocol::GuestConn)
            })
        }
    }

    impl VmControl for EchoGuest {
        fn state(&self) -> VmState {
            VmState::Running
        }
        fn request_stop(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn quit(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_daemons_hybrid_transport_speaks_to_the_vmm_both_ways() {
        use crate::vsock::hybrid::HybridVsock;
        use crate::vsock::{VsockError, VsockTransport};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("vm.vsock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        tokio::spawn(vmctl_vz::protocol::serve(listener, Arc::new(EchoGuest)));
        let transport = HybridVsock::new(socket.clone());

        // Host → guest: CONNECT/OK, then bytes and a half-close both ways.
        let mut stream = transport.connect(7).await.unwrap();
        stream.write_all(b"ping").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut echoed = Vec::new();
        stream.read_to_end(&mut echoed).await.unwrap();
        assert_eq!(echoed, b"ping");
        assert!(matches!(
            transport.connect(8).await,
            Err(VsockError::Refused { port: 8 })
        ));

        // Guest → host: the daemon's listener is where the VMM delivers.
        let mut host_port = transport.listen(1027).unwrap();
        let (ours, guest) = tokio::io::duplex(4096);
        let splice = tokio::spawn({
            let socket = socket.clone();
            async move { vmctl_vz::protocol::to_host(Box::new(ours), &socket, 1027).await }
        });
        let mut guest = vmctl_proto::framing::Framed::new(guest);
        guest.write_all(b"reserve").await.unwrap();
        guest.flush().await.unwrap();
        let mut accepted = host_port.accept().await.unwrap();
        let mut got = [0u8; 7];
        accepted.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"reserve");
        drop(accepted);
        drop(guest);
        splice.await.unwrap();
    }

    #[test]
    fn state_answers_map_to_run_states() {
        assert_eq!(run_state("OK running"), RunState::Running);
        assert_eq!(
            run_state("OK starting"),
            RunState::Paused("starting".into())
        );
        assert_eq!(
            run_state("OK error internal"),
            RunState::Failed("internal".into())
        );
        assert!(matches!(run_state("garbage"), RunState::Paused(_)));
    }
}
