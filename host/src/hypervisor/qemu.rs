//! The QEMU backend: `qemu-system-x86_64` on a q35 machine for amd64
//! guests, `qemu-system-aarch64` on a `virt` machine for arm64 ones (Apple
//! silicon's images, emulated on an x86 desktop), direct kernel boot of the
//! uncompressed kernel (amd64: the vmlinux ELF through PVH, ~2× faster than
//! a bzImage under emulation; arm64: the boot `Image`), memory from a shared
//! memfd (vhost-user devices map it), the serial console (8250 `ttyS0` or
//! PL011 `ttyAMA0`) appended to a log file, QMP on a unix socket for status
//! and stop, virtio-blk for the data disk, a virtio-net NIC on QEMU's
//! user-mode network, the vsock device from vhost-user or the host kernel,
//! and the per-boot secret as a fw_cfg file (both machines have fw_cfg).
//!
//! Which QEMU: the machine's guest architecture's (`vmctl machine init
//! --arch`, else `VMCTL_GUEST_ARCH`, else the desktop's); the kernel's own
//! header says which architecture an image is, and a mismatch is refused
//! before QEMU starts.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::qmp::Qmp;
use super::{Accelerator, Hypervisor, HypervisorError, RunState, Vm, VmSpec, VsockDevice};
use crate::binaries::GuestArch;
use crate::process::{self, Owned};

/// Environment variable naming the QEMU binary to use.
pub const QEMU_ENV: &str = "VMCTL_QEMU";

/// Environment variable overriding the CPU model (`-cpu`).
pub const CPU_ENV: &str = "VMCTL_QEMU_CPU";

/// Environment variable adding QEMU user-mode `hostfwd` rules to the NIC
/// (`tcp:127.0.0.1:18190-:7001`, several separated by `;`): the peer that
/// `vmctl-bench vm-ports` measures vmctl's own forwards against.
pub const HOSTFWD_ENV: &str = "VMCTL_QEMU_HOSTFWD";

/// Environment variable exporting one more directory over virtio-9p (tag
/// `vmctl-9p`): the peer that `vmctl-bench shares` measures virtio-fs
/// against. Never set by vmctl itself.
pub const NINEP_ENV: &str = "VMCTL_QEMU_9P";

/// The subnet of the VM's NIC on QEMU's user-mode network (QEMU's default,
/// given explicitly): the guest at `.15`, the desktop's loopback at `.2`,
/// QEMU's DNS at `.3`.
pub const USER_NET: ipnet::Ipv4Net =
    ipnet::Ipv4Net::new_assert(std::net::Ipv4Addr::new(10, 0, 2, 0), 24);

pub struct Qemu {
    binary: PathBuf,
    /// The guest architecture this QEMU emulates or virtualizes.
    arch: GuestArch,
}

/// The QEMU program for guests of `arch`.
pub fn program(arch: GuestArch) -> &'static str {
    match arch {
        GuestArch::Amd64 => "qemu-system-x86_64",
        GuestArch::Arm64 => "qemu-system-aarch64",
    }
}

/// The architecture of a kernel file, from its header: an ELF's machine
/// (the amd64 vmlinux) or the arm64 boot `Image` magic (`ARM\x64` at 56).
/// `None` when unreadable or neither.
pub fn kernel_arch(kernel: &Path) -> Option<GuestArch> {
    use std::io::Read;
    let mut header = [0u8; 64];
    std::fs::File::open(kernel)
        .ok()?
        .read_exact(&mut header)
        .ok()?;
    if header.starts_with(b"\x7fELF") {
        return match u16::from_le_bytes([header[0x12], header[0x13]]) {
            62 => Some(GuestArch::Amd64),
            183 => Some(GuestArch::Arm64),
            _ => None,
        };
    }
    (&header[56..60] == b"ARM\x64").then_some(GuestArch::Arm64)
}

/// `cmdline` with its console on `console` (the daemon writes the 8250's
/// `ttyS0`; the arm64 `virt` machine's serial port is the PL011 `ttyAMA0`).
fn with_console(cmdline: &str, console: &str) -> String {
    cmdline
        .split(' ')
        .map(|word| match word.strip_prefix("console=") {
            Some(_) => format!("console={console}"),
            None => word.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Qemu {
    /// Finds QEMU for guests of `arch` (`$VMCTL_QEMU`, else
    /// `qemu-system-x86_64` or `qemu-system-aarch64` on `PATH`).
    pub fn find_for(arch: GuestArch) -> Result<Self, HypervisorError> {
        let name = program(arch);
        let binary =
            crate::binaries::find(name, QEMU_ENV).ok_or(HypervisorError::NotInstalled {
                program: name.into(),
                env: QEMU_ENV,
            })?;
        Ok(Self { binary, arch })
    }

    fn command(&self, spec: &VmSpec, accel: Accelerator) -> Result<Command, HypervisorError> {
        for file in [&spec.vmlinux, &spec.initramfs] {
            if !file.exists() {
                return Err(HypervisorError::MissingImage(file.clone()));
            }
        }
        if let Some(kernel) = kernel_arch(&spec.vmlinux).filter(|a| *a != self.arch) {
            return Err(HypervisorError::Command {
                command: program(self.arch).to_owned(),
                message: format!(
                    "the VM image's kernel {} is for {kernel} guests, not {} (a machine for it: `vmctl machine init --arch {kernel}`, or {}={kernel})",
                    spec.vmlinux.display(),
                    self.arch,
                    crate::binaries::GUEST_ARCH_ENV
                ),
            });
        }
        let mem = spec.memory_mib;
        let mut cmd = Command::new(&self.binary);
        cmd.arg("-name").arg(format!("vmctl-{}", spec.name));
        let console = self.machine(&mut cmd, accel);
        cmd.arg("-smp").arg(spec.cpus.to_string());
        cmd.arg("-m").arg(format!("{mem}M"));
        cmd.arg("-object")
            .arg(format!("memory-backend-memfd,id=mem,size={mem}M,share=on"));
        if self.arch == GuestArch::Amd64 {
            cmd.args(["-numa", "node,memdev=mem"]);
        }
        cmd.args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ]);
        cmd.arg("-chardev").arg(format!(
            "file,id=console,path={},append=on",
            spec.console_log.display()
        ));
        cmd.args(["-serial", "chardev:console"]);
        cmd.arg("-qmp").arg(format!(
            "unix:{},server=on,wait=off",
            spec.control_socket.display()
        ));
        cmd.arg("-kernel").arg(&spec.vmlinux);
        cmd.arg("-initrd").arg(&spec.initramfs);
        cmd.arg("-append").arg(with_console(&spec.cmdline, console));
        cmd.arg("-drive").arg(format!(
            "file={},format=raw,if=none,id=data,cache=writeback,discard=unmap",
            spec.disk.display()
        ));
        cmd.args(["-device", "virtio-blk-pci,drive=data"]);
        let mut netdev = format!("user,id=net0,net={USER_NET}");
        for rule in std::env::var(HOSTFWD_ENV).unwrap_or_default().split(';') {
            if !rule.trim().is_empty() {
                netdev.push_str(",hostfwd=");
                netdev.push_str(rule.trim());
            }
        }
        cmd.arg("-netdev").arg(netdev);
        cmd.args(["-device", "virtio-net-pci,netdev=net0,romfile="]);
        if let Some(tap) = spec.link_tap {
            link_nic(&mut cmd, tap);
        }
        match &spec.vsock {
            VsockDevice::VhostUser { socket } => {
                cmd.arg("-chardev")
                    .arg(format!("socket,id=vsock,path={}", socket.display()));
                cmd.args(["-device", "vhost-user-vsock-pci,chardev=vsock"]);
            }
            VsockDevice::Kernel { cid } => {
                cmd.arg("-device")
                    .arg(format!("vhost-vsock-pci,guest-cid={cid}"));
            }
        }
        for (i, share) in spec.shares.iter().enumerate() {
            cmd.arg("-chardev").arg(format!(
                "socket,id=share{i},path={}",
                qemu_option_value(&share.socket)
            ));
            cmd.arg("-device").arg(format!(
                "vhost-user-fs-pci,chardev=share{i},tag={},queue-size=1024",
                share.tag
            ));
        }
        if let Some(dir) = std::env::var_os(NINEP_ENV).filter(|d| !d.is_empty()) {
            cmd.arg("-virtfs").arg(virtfs(Path::new(&dir)));
        }
        // By file, not `string=`: QEMU's argv is readable by every local user.
        cmd.arg("-fw_cfg").arg(format!(
            "name={},file={}",
            vmctl_proto::auth::FW_CFG_NAME,
            qemu_option_value(&spec.secret)
        ));
        private_files(&mut cmd);
        Ok(cmd)
    }

    /// The machine, accelerator and CPU model; answers the serial console's
    /// device name in the guest.
    fn machine(&self, cmd: &mut Command, accel: Accelerator) -> &'static str {
        let (machine, emulated_cpu, console) = match self.arch {
            GuestArch::Amd64 => (
                "q35,vmport=off,i8042=off,sata=off,smbus=off",
                // Under emulation `max` costs ~0.5 s of kernel boot; the
                // default model plus RDRAND (so the kernel's CRNG, and every
                // getrandom(2) in the engine, is ready at once instead of
                // ~1 s later) is fastest.
                "qemu64,+rdrand",
                "ttyS0",
            ),
            GuestArch::Arm64 => (
                // RAM from the shared memfd (vhost-user maps it); `virt` has
                // fw_cfg, a PL011 UART, PSCI power-off and a PCIe bus.
                "virt,memory-backend=mem",
                // `max` has FEAT_RNG (the CRNG is ready at once, as RDRAND on
                // amd64); its pointer authentication with QEMU's cheap
                // implementation-defined algorithm instead of QARMA, which
                // dominates TCG's time otherwise.
                "max,pauth-impdef=on",
                "ttyAMA0",
            ),
        };
        cmd.args(["-machine", machine]);
        cmd.args(["-accel", accel.as_str()]);
        let model = match std::env::var(CPU_ENV) {
            Ok(model) => model,
            Err(_) if accel.is_emulation() => emulated_cpu.to_owned(),
            Err(_) => "host".to_owned(),
        };
        cmd.args(["-cpu", &model]);
        console
    }
}

/// The `-virtfs` value exporting `dir` as the 9p tag `vmctl-9p`:
/// `security_model=none` as Lima and Podman machine set it (files belong to
/// QEMU's user, like virtiofsd's squashed ids; no xattr per file), and
/// `multidevs=remap` so inodes of mounts below `dir` cannot collide.
fn virtfs(dir: &Path) -> String {
    format!(
        "local,path={},mount_tag=vmctl-9p,security_model=none,multidevs=remap,id=vmctl9p",
        qemu_option_value(dir)
    )
}

/// A path as a QEMU option value: a comma would end the value, so it is doubled.
fn qemu_option_value(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// The forward link's NIC (`crate::link`) on the tap descriptor `tap`,
/// which QEMU inherits: frames of up to `LINK_MTU` bytes, and with the
/// tap's virtio-net header the offloads (checksums, TSO) on by default, so
/// a burst crosses as one 64 KiB packet whatever the container's MSS, and
/// the emulated guest checksums nothing the desktop's kernel vouched for.
fn link_nic(cmd: &mut Command, tap: i32) {
    cmd.arg("-netdev").arg(format!("tap,id=link,fd={tap}"));
    cmd.arg("-device").arg(format!(
        "virtio-net-pci,netdev=link,mac={},host_mtu={},romfile=",
        vmctl_proto::forward::LINK_MAC,
        vmctl_proto::forward::LINK_MTU,
    ));
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: fcntl is async-signal-safe and touches no memory.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(tap, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

/// What QEMU creates (the QMP socket, a new log) is the desktop user's
/// alone: the QMP socket controls the VM.
fn private_files(cmd: &mut Command) {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: umask is async-signal-safe and touches no memory.
        unsafe {
            cmd.pre_exec(|| {
                libc::umask(0o077);
                Ok(())
            });
        }
    }
    #[cfg(not(unix))]
    let _ = cmd;
}

impl Hypervisor for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn accelerators(&self) -> Vec<Accelerator> {
        let mut found = Vec::new();
        // Hardware acceleration runs guests of the desktop's own
        // architecture only; another one is emulated.
        if self.arch != GuestArch::desktop() {
            found.push(Accelerator::Tcg);
            return found;
        }
        if cfg!(target_os = "linux")
            && std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .is_ok()
        {
            found.push(Accelerator::Kvm);
        }
        if cfg!(target_os = "macos") {
            found.push(Accelerator::Hvf);
        }
        if cfg!(target_os = "windows") {
            found.push(Accelerator::Whpx);
        }
        found.push(Accelerator::Tcg);
        found
    }

    fn launch(&self, spec: &VmSpec, accel: Accelerator) -> Result<Box<dyn Vm>, HypervisorError> {
        if !self.accelerators().contains(&accel) {
            return Err(HypervisorError::Unsupported {
                backend: "qemu",
                accelerator: accel,
            });
        }
        let _ = std::fs::remove_file(&spec.control_socket);
        let command = self.command(spec, accel)?;
        tracing::info!(vm = %spec.name, %accel, command = ?command, "launching QEMU");
        let process = Owned::spawn(command, &spec.vmm_log, &spec.pid_file)
            .map_err(HypervisorError::Launch)?;
        Ok(Box::new(QemuVm {
            process,
            qmp: Qmp::new(&spec.control_socket),
        }))
    }

    fn nic_subnet(&self) -> Option<ipnet::Ipv4Net> {
        Some(USER_NET)
    }

    fn adopt(&self, spec: &VmSpec) -> Option<Box<dyn Vm>> {
        let pid = process::find_recorded(&spec.pid_file, &spec.control_socket)?;
        let process = Owned::adopt(pid, &spec.pid_file).ok()?;
        tracing::info!(vm = %spec.name, pid, "adopting the running QEMU");
        Some(Box::new(QemuVm {
            process,
            qmp: Qmp::new(&spec.control_socket),
        }))
    }
}

struct QemuVm {
    process: Owned,
    qmp: Qmp,
}

impl Vm for QemuVm {
    fn process(&self) -> &Owned {
        &self.process
    }

    fn state(&self) -> RunState {
        if self.process.has_exited() {
            return RunState::Exited;
        }
        match self.qmp.execute("query-status", None) {
            Ok(value) => {
                let status = value["status"].as_str().unwrap_or("unknown").to_owned();
                match status.as_str() {
                    "running" => RunState::Running,
                    "internal-error" | "guest-panicked" | "io-error" | "shutdown" => {
                        RunState::Failed(status)
                    }
                    _ => RunState::Paused(status),
                }
            }
            // The socket appears a moment after the process starts.
            Err(_) if self.process.has_exited() => RunState::Exited,
            Err(e) => RunState::Paused(format!("QMP not answering: {e}")),
        }
    }

    fn request_power_off(&self) -> Result<(), HypervisorError> {
        self.qmp.execute("system_powerdown", None).map(drop)
    }

    fn quit(&self) -> Result<(), HypervisorError> {
        self.qmp.execute("quit", None).map(drop)
    }
}

/// QEMU's version line, for host facts (a new QEMU may fix an accelerator).
pub fn version(binary: &Path) -> Option<String> {
    let out = Command::new(binary).arg("--version").output().ok()?;
    String::from_utf8(out.stdout)
        .ok()?
        .lines()
        .next()
        .map(str::to_owned)
}

impl Qemu {
    pub fn binary(&self) -> &Path {
        &self.binary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_in(dir: &Path, secret_file: PathBuf) -> VmSpec {
        VmSpec {
            name: "t".into(),
            cpus: 1,
            memory_mib: 256,
            vmlinux: dir.join("vmlinux"),
            bzimage: dir.join("bzImage"),
            initramfs: dir.join("initramfs.img"),
            cmdline: "console=ttyS0".into(),
            disk: dir.join("disk.raw"),
            console_log: dir.join("console.log"),
            vmm_log: dir.join("daemon.log"),
            pid_file: dir.join("vmm.pid"),
            control_socket: dir.join("qmp.sock"),
            vsock: VsockDevice::Kernel { cid: 7 },
            secret: secret_file,
            shares: Vec::new(),
            link_tap: None,
        }
    }

    fn args_of(command: &Command) -> Vec<String> {
        command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn qemu(arch: GuestArch) -> Qemu {
        Qemu {
            binary: program(arch).into(),
            arch,
        }
    }

    /// An arm64 boot `Image` header (magic at 56) with nothing after it.
    fn arm64_image() -> Vec<u8> {
        let mut image = vec![0u8; 64];
        image[56..60].copy_from_slice(b"ARM\x64");
        image
    }

    #[test]
    fn the_secret_reaches_qemu_as_a_fw_cfg_file_never_in_argv() {
        let dir = tempfile::tempdir().unwrap();
        for file in ["vmlinux", "initramfs.img"] {
            std::fs::write(dir.path().join(file), b"").unwrap();
        }
        let secret_file = dir.path().join("a,b").join("vm.secret");
        let spec = spec_in(dir.path(), secret_file.clone());
        let qemu = qemu(GuestArch::Amd64);
        let command = qemu.command(&spec, Accelerator::Tcg).unwrap();
        let args = args_of(&command);
        let at = args.iter().position(|a| a == "-fw_cfg").unwrap();
        let expected = format!(
            "name=opt/vmctl/secret,file={}",
            secret_file.display().to_string().replace(',', ",,")
        );
        assert_eq!(args[at + 1], expected);
        assert!(!args.iter().any(|a| a.contains("string=")));
        let append = args.iter().position(|a| a == "-append").unwrap();
        assert!(!args[append + 1].contains("secret"));
    }

    #[test]
    fn the_bench_9p_export_names_its_tag_and_escapes_the_path() {
        assert_eq!(
            virtfs(Path::new("/var/tmp/a,b")),
            "local,path=/var/tmp/a,,b,mount_tag=vmctl-9p,security_model=none,multidevs=remap,id=vmctl9p"
        );
    }

    #[test]
    fn an_arm64_image_boots_on_virt_with_its_own_console() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vmlinux"), arm64_image()).unwrap();
        std::fs::write(dir.path().join("initramfs.img"), b"").unwrap();
        let mut spec = spec_in(dir.path(), dir.path().join("vm.secret"));
        spec.cmdline = "console=ttyS0 quiet panic=-1".into();
        let args = args_of(
            &qemu(GuestArch::Arm64)
                .command(&spec, Accelerator::Tcg)
                .unwrap(),
        );
        let after = |flag: &str| {
            let at = args.iter().position(|a| a == flag).unwrap();
            args[at + 1].clone()
        };
        assert_eq!(after("-machine"), "virt,memory-backend=mem");
        assert!(after("-cpu").starts_with("max"));
        assert_eq!(after("-append"), "console=ttyAMA0 quiet panic=-1");
        assert!(!args.iter().any(|a| a == "-numa"));
        assert!(after("-fw_cfg").starts_with("name=opt/vmctl/secret,file="));
        assert!(args.iter().any(|a| a == "vhost-vsock-pci,guest-cid=7"));
        // The amd64 command line is untouched.
        std::fs::write(dir.path().join("vmlinux"), b"").unwrap();
        let args = args_of(
            &qemu(GuestArch::Amd64)
                .command(&spec, Accelerator::Tcg)
                .unwrap(),
        );
        let at = args.iter().position(|a| a == "-append").unwrap();
        assert_eq!(args[at + 1], "console=ttyS0 quiet panic=-1");
        assert!(args.iter().any(|a| a == "-numa"));
    }

    #[test]
    fn an_image_of_the_other_architecture_is_refused_before_qemu_starts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vmlinux"), arm64_image()).unwrap();
        std::fs::write(dir.path().join("initramfs.img"), b"").unwrap();
        let spec = spec_in(dir.path(), dir.path().join("vm.secret"));
        let refused = qemu(GuestArch::Amd64).command(&spec, Accelerator::Tcg);
        let Err(HypervisorError::Command { message, .. }) = refused else {
            panic!("an arm64 kernel went to qemu-system-x86_64");
        };
        assert!(message.contains("VMCTL_GUEST_ARCH=arm64"), "{message}");
    }

    #[test]
    fn kernels_say_their_architecture() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k");
        std::fs::write(&file, arm64_image()).unwrap();
        assert_eq!(kernel_arch(&file), Some(GuestArch::Arm64));
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[0x12] = 62;
        std::fs::write(&file, &elf).unwrap();
        assert_eq!(kernel_arch(&file), Some(GuestArch::Amd64));
        elf[0x12] = 183;
        std::fs::write(&file, &elf).unwrap();
        assert_eq!(kernel_arch(&file), Some(GuestArch::Arm64));
        std::fs::write(&file, b"short").unwrap();
        assert_eq!(kernel_arch(&file), None);
    }

    #[test]
    fn another_architecture_is_only_emulated() {
        let foreign = match GuestArch::desktop() {
            GuestArch::Amd64 => GuestArch::Arm64,
            GuestArch::Arm64 => GuestArch::Amd64,
        };
        assert_eq!(qemu(foreign).accelerators(), vec![Accelerator::Tcg]);
        assert_eq!(
            qemu(GuestArch::desktop()).accelerators().last(),
            Some(&Accelerator::Tcg)
        );
        assert_eq!(
            with_console("a console=ttyS0 b=c", "ttyAMA0"),
            "a console=ttyAMA0 b=c"
        );
    }
}
