//! The QEMU backend: `qemu-system-x86_64` on a q35 machine, direct kernel
//! boot of the uncompressed vmlinux (PVH, ~2× faster than a bzImage under
//! emulation), memory from a shared memfd (vhost-user devices map it), the
//! serial console appended to a log file, QMP on a unix socket for status and
//! stop, virtio-blk for the data disk, a virtio-net NIC on QEMU's user-mode
//! network, and the vsock device from vhost-user or the host kernel.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::qmp::Qmp;
use super::{Accelerator, Hypervisor, HypervisorError, RunState, Vm, VmSpec, VsockDevice};
use crate::process::{self, Owned};

/// Environment variable naming the QEMU binary to use.
pub const QEMU_ENV: &str = "VMCTL_QEMU";

/// Environment variable overriding the CPU model (`-cpu`).
pub const CPU_ENV: &str = "VMCTL_QEMU_CPU";

/// Environment variable adding QEMU user-mode `hostfwd` rules to the NIC
/// (`tcp:127.0.0.1:18190-:7001`, several separated by `;`): the peer that
/// `vmctl-bench vm-ports` measures vmctl's own forwards against.
pub const HOSTFWD_ENV: &str = "VMCTL_QEMU_HOSTFWD";

/// The subnet of the VM's NIC on QEMU's user-mode network (QEMU's default,
/// given explicitly): the guest at `.15`, the desktop's loopback at `.2`,
/// QEMU's DNS at `.3`.
pub const USER_NET: ipnet::Ipv4Net =
    ipnet::Ipv4Net::new_assert(std::net::Ipv4Addr::new(10, 0, 2, 0), 24);

pub struct Qemu {
    binary: PathBuf,
}

impl Qemu {
    /// Finds `qemu-system-x86_64` (`$VMCTL_QEMU`, else `PATH`).
    pub fn find() -> Result<Self, HypervisorError> {
        let binary = crate::binaries::find("qemu-system-x86_64", QEMU_ENV).ok_or(
            HypervisorError::NotInstalled {
                program: "qemu-system-x86_64".into(),
                env: QEMU_ENV,
            },
        )?;
        Ok(Self { binary })
    }

    fn command(&self, spec: &VmSpec, accel: Accelerator) -> Result<Command, HypervisorError> {
        for file in [&spec.vmlinux, &spec.initramfs] {
            if !file.exists() {
                return Err(HypervisorError::MissingImage(file.clone()));
            }
        }
        let mem = spec.memory_mib;
        let mut cmd = Command::new(&self.binary);
        cmd.arg("-name").arg(format!("vmctl-{}", spec.name));
        cmd.args(["-machine", "q35,vmport=off,i8042=off,sata=off,smbus=off"]);
        cmd.args(["-accel", accel.as_str()]);
        // Under emulation `max` costs ~0.5 s of kernel boot; the default
        // model plus RDRAND (so the kernel's CRNG, and every getrandom(2) in
        // the engine, is ready at once instead of ~1 s later) is fastest.
        let model = match std::env::var(CPU_ENV) {
            Ok(model) => model,
            Err(_) if accel.is_emulation() => "qemu64,+rdrand".to_owned(),
            Err(_) => "host".to_owned(),
        };
        cmd.args(["-cpu", &model]);
        cmd.arg("-smp").arg(spec.cpus.to_string());
        cmd.arg("-m").arg(format!("{mem}M"));
        cmd.arg("-object")
            .arg(format!("memory-backend-memfd,id=mem,size={mem}M,share=on"));
        cmd.args(["-numa", "node,memdev=mem"]);
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
        cmd.arg("-append").arg(&spec.cmdline);
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
        // By file, not `string=`: QEMU's argv is readable by every local user.
        cmd.arg("-fw_cfg").arg(format!(
            "name={},file={}",
            vmctl_proto::auth::FW_CFG_NAME,
            qemu_option_value(&spec.secret)
        ));
        private_files(&mut cmd);
        Ok(cmd)
    }
}

/// A path as a QEMU option value: a comma would end the value, so it is doubled.
fn qemu_option_value(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
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

    #[test]
    fn the_secret_reaches_qemu_as_a_fw_cfg_file_never_in_argv() {
        let dir = tempfile::tempdir().unwrap();
        for file in ["vmlinux", "initramfs.img"] {
            std::fs::write(dir.path().join(file), b"").unwrap();
        }
        let secret_file = dir.path().join("a,b").join("vm.secret");
        let spec = VmSpec {
            name: "t".into(),
            cpus: 1,
            memory_mib: 256,
            vmlinux: dir.path().join("vmlinux"),
            bzimage: dir.path().join("bzImage"),
            initramfs: dir.path().join("initramfs.img"),
            cmdline: "console=ttyS0".into(),
            disk: dir.path().join("disk.raw"),
            console_log: dir.path().join("console.log"),
            vmm_log: dir.path().join("daemon.log"),
            pid_file: dir.path().join("vmm.pid"),
            control_socket: dir.path().join("qmp.sock"),
            vsock: VsockDevice::Kernel { cid: 7 },
            secret: secret_file.clone(),
        };
        let qemu = Qemu {
            binary: "qemu-system-x86_64".into(),
        };
        let command = qemu.command(&spec, Accelerator::Tcg).unwrap();
        let args: Vec<String> = command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
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
}
