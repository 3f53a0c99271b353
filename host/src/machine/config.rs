//! A machine's settings (`config.json`): CPUs, memory, disk size, set at
//! `vmctl machine init` (or changed by flags to `start`) and kept with the
//! machine.

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use super::MachineError;
use crate::binaries::GuestArch;
use crate::shares::Mount;

/// Smallest memory a VM is given: the kernel, the engine and a container.
pub const MIN_MEMORY_MIB: u64 = 256;
/// Smallest data disk.
pub const MIN_DISK_GIB: u64 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineConfig {
    pub cpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    /// Where ports published without a host IP (`-p 8080:80`) listen on the
    /// desktop. `127.0.0.1` by default: safer than Docker's all-interfaces.
    #[serde(default = "default_bind_address")]
    pub port_bind_address: IpAddr,
    /// Whether a container may publish on a non-loopback address of the
    /// desktop (`-p 0.0.0.0:8080:80`, `::`, or one LAN address). On by
    /// default, as Docker users expect; the desktop decides, not the guest.
    #[serde(default = "default_allow_lan")]
    pub allow_lan_ports: bool,
    /// Docker Hub mirrors the VM's engine pulls through (dockerd's
    /// `registry-mirrors`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registry_mirrors: Vec<String>,
    /// Registries the VM's engine reaches over plain HTTP (dockerd's
    /// `insecure-registries`; loopback ones always are).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub insecure_registries: Vec<String>,
    /// The guest's architecture, chosen when the machine is made (its disk
    /// holds that architecture's images); none: `$VMCTL_GUEST_ARCH`, else
    /// the desktop's own ([`MachineConfig::arch`]).
    #[serde(default, rename = "arch", skip_serializing_if = "Option::is_none")]
    pub guest_arch: Option<GuestArch>,
    /// Desktop directories the VM mounts at the same path (machines made
    /// before shares existed get the defaults).
    #[serde(default = "crate::shares::default_mounts")]
    pub mounts: Vec<Mount>,
}

impl MachineConfig {
    /// The architecture this machine's VM runs: its own, else the one
    /// `$VMCTL_GUEST_ARCH` or the desktop selects.
    pub fn arch(&self) -> GuestArch {
        self.guest_arch.unwrap_or_else(GuestArch::selected)
    }
}

fn default_bind_address() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

fn default_allow_lan() -> bool {
    true
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self {
            cpus: host_cpus().min(4),
            memory_mib: 2048,
            disk_gib: 20,
            port_bind_address: default_bind_address(),
            allow_lan_ports: default_allow_lan(),
            registry_mirrors: Vec::new(),
            insecure_registries: Vec::new(),
            guest_arch: None,
            mounts: crate::shares::default_mounts(),
        }
    }
}

/// Size flags as a user gives them on the command line.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SizeFlags {
    /// Virtual CPUs (1 to the host's count).
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Memory: MiB, or with a unit (`2048`, `512M`, `4G`, `4GiB`).
    #[arg(long)]
    pub memory: Option<String>,
    /// Data disk: GiB, or with a unit (`20`, `20G`, `100GiB`). It only grows.
    #[arg(long)]
    pub disk: Option<String>,
    /// Where ports published without a host IP listen on the desktop
    /// (default 127.0.0.1; 0.0.0.0 for every interface, like Docker).
    #[arg(long, value_name = "IP")]
    pub port_bind_address: Option<IpAddr>,
    /// Whether containers may publish ports on the desktop's network
    /// addresses (`-p 0.0.0.0:8080:80`); off: loopback and the
    /// port-bind-address only. Default true.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub allow_lan_ports: Option<bool>,
    /// A Docker Hub mirror the VM's engine pulls through
    /// (`https://mirror.example`); repeat for more. Replaces the list.
    #[arg(long = "registry-mirror", value_name = "URL")]
    pub registry_mirrors: Vec<String>,
    /// A registry the VM's engine may reach over plain HTTP (`host[:port]`
    /// or a CIDR); repeat for more. Replaces the list.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,
    /// The guest's architecture (`amd64`, `arm64`; default the desktop's):
    /// another than the desktop's runs under emulation. Only at `init`.
    #[arg(long, value_name = "ARCH", value_parser = parse_arch)]
    pub arch: Option<GuestArch>,
    /// A desktop directory the VM mounts at the same path (`PATH`, or
    /// `PATH:ro` read-only); repeat for more. Replaces the list (default:
    /// the home directory); `--mount none` shares nothing.
    #[arg(long = "mount", value_name = "PATH[:ro]")]
    pub mounts: Vec<String>,
}

fn parse_arch(name: &str) -> Result<GuestArch, String> {
    GuestArch::parse(name).ok_or_else(|| format!("{name:?} is neither amd64 nor arm64"))
}

impl SizeFlags {
    pub fn is_empty(&self) -> bool {
        self.cpus.is_none()
            && self.memory.is_none()
            && self.disk.is_none()
            && self.port_bind_address.is_none()
            && self.allow_lan_ports.is_none()
            && self.registry_mirrors.is_empty()
            && self.insecure_registries.is_empty()
            && self.arch.is_none()
            && self.mounts.is_empty()
    }

    /// Whether these flags change what only a stopped machine can change
    /// (everything but `--allow-lan-ports`, which a running daemon follows).
    pub fn needs_stop(&self) -> bool {
        !SizeFlags {
            allow_lan_ports: None,
            ..self.clone()
        }
        .is_empty()
    }

    /// The settings of a new machine: the defaults with these flags applied.
    pub fn new_config(&self) -> Result<MachineConfig, MachineError> {
        let base = MachineConfig {
            disk_gib: MIN_DISK_GIB,
            ..MachineConfig::default()
        };
        let flags = SizeFlags {
            arch: None,
            ..self.clone()
        };
        let mut config = flags.apply(base)?;
        if self.disk.is_none() {
            config.disk_gib = MachineConfig::default().disk_gib;
        }
        config.guest_arch = self.arch;
        Ok(config)
    }

    /// `config` with these flags applied; every value checked.
    pub fn apply(&self, mut config: MachineConfig) -> Result<MachineConfig, MachineError> {
        if let Some(arch) = self.arch {
            return Err(MachineError::BadFlag(format!(
                "--arch {arch}: a machine's architecture is chosen when it is made (`vmctl machine init --arch`); its disk holds {}'s images",
                config.arch()
            )));
        }
        if let Some(cpus) = self.cpus {
            let max = host_cpus();
            if cpus == 0 || cpus > max {
                return Err(MachineError::BadFlag(format!(
                    "--cpus {cpus}: this host has {max} CPUs; give 1 to {max}"
                )));
            }
            config.cpus = cpus;
        }
        if let Some(memory) = &self.memory {
            let mib = parse_size(memory, Unit::MiB).ok_or_else(|| {
                MachineError::BadFlag(format!(
                    "--memory {memory}: not a size (MiB, or with a unit: 512M, 4G)"
                ))
            })?;
            if mib < MIN_MEMORY_MIB {
                return Err(MachineError::BadFlag(format!(
                    "--memory {memory}: a VM needs at least {MIN_MEMORY_MIB} MiB (plain numbers are MiB: 2048, or 2G)"
                )));
            }
            config.memory_mib = mib;
        }
        if let Some(disk) = &self.disk {
            let gib = parse_size(disk, Unit::GiB).ok_or_else(|| {
                MachineError::BadFlag(format!(
                    "--disk {disk}: not a size (GiB, or with a unit: 20G, 100GiB)"
                ))
            })?;
            if gib < MIN_DISK_GIB {
                return Err(MachineError::BadFlag(format!(
                    "--disk {disk}: the data disk needs at least {MIN_DISK_GIB} GiB"
                )));
            }
            if gib < config.disk_gib {
                return Err(MachineError::BadFlag(format!(
                    "--disk {disk}: the disk is {} GiB and cannot shrink",
                    config.disk_gib
                )));
            }
            config.disk_gib = gib;
        }
        if let Some(address) = self.port_bind_address {
            config.port_bind_address = address;
        }
        if let Some(allow) = self.allow_lan_ports {
            config.allow_lan_ports = allow;
        }
        for mirror in &self.registry_mirrors {
            let host = mirror
                .strip_prefix("https://")
                .or_else(|| mirror.strip_prefix("http://"))
                .map(|h| h.trim_end_matches('/'));
            if host.is_none_or(|h| h.is_empty() || h.contains(['/', ' ', '\t'])) {
                return Err(MachineError::BadFlag(format!(
                    "--registry-mirror {mirror}: give a URL like https://mirror.example"
                )));
            }
        }
        for registry in &self.insecure_registries {
            if registry.is_empty()
                || registry.contains("://")
                || registry.contains(char::is_whitespace)
            {
                return Err(MachineError::BadFlag(format!(
                    "--insecure-registry {registry}: give host[:port] or a CIDR"
                )));
            }
        }
        if !self.registry_mirrors.is_empty() {
            config.registry_mirrors = self.registry_mirrors.clone();
        }
        if !self.insecure_registries.is_empty() {
            config.insecure_registries = self.insecure_registries.clone();
        }
        if !self.mounts.is_empty() {
            config.mounts =
                crate::shares::parse_flags(&self.mounts).map_err(MachineError::BadFlag)?;
        }
        Ok(config)
    }
}

#[derive(Clone, Copy)]
enum Unit {
    MiB,
    GiB,
}

/// `text` in `unit`s: a plain number is in `unit`; `K/M/G/T` (with optional
/// `i`/`B`) are binary units. Sizes that are not whole `unit`s are refused.
fn parse_size(text: &str, unit: Unit) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let suffix = suffix.trim().to_ascii_lowercase();
    let suffix = suffix.trim_end_matches('b').trim_end_matches('i');
    let kib: u64 = match suffix {
        "" => match unit {
            Unit::MiB => 1024,
            Unit::GiB => 1024 * 1024,
        },
        "k" => 1,
        "m" => 1024,
        "g" => 1024 * 1024,
        "t" => 1024 * 1024 * 1024,
        _ => return None,
    };
    let total = number.checked_mul(kib)?;
    let per = match unit {
        Unit::MiB => 1024,
        Unit::GiB => 1024 * 1024,
    };
    (total % per == 0).then_some(total / per)
}

/// The host's CPU count.
pub fn host_cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2048", Unit::MiB), Some(2048));
        assert_eq!(parse_size("2G", Unit::MiB), Some(2048));
        assert_eq!(parse_size("2GiB", Unit::MiB), Some(2048));
        assert_eq!(parse_size("512m", Unit::MiB), Some(512));
        assert_eq!(parse_size("20", Unit::GiB), Some(20));
        assert_eq!(parse_size("1T", Unit::GiB), Some(1024));
        assert_eq!(parse_size("512M", Unit::GiB), None);
        assert_eq!(parse_size("x", Unit::MiB), None);
        assert_eq!(parse_size("1Q", Unit::MiB), None);
    }

    #[test]
    fn flags_are_checked() {
        let base = MachineConfig {
            cpus: 1,
            memory_mib: 1024,
            disk_gib: 20,
            ..MachineConfig::default()
        };
        let flags = |memory: &str| SizeFlags {
            memory: Some(memory.into()),
            ..Default::default()
        };
        let err = flags("1").apply(base.clone()).unwrap_err().to_string();
        assert!(err.contains("at least 256 MiB"), "{err}");
        assert_eq!(flags("4G").apply(base.clone()).unwrap().memory_mib, 4096);
        let shrink = SizeFlags {
            disk: Some("10".into()),
            ..Default::default()
        };
        assert!(shrink.apply(base.clone()).is_err());
        let cpus = SizeFlags {
            cpus: Some(0),
            ..Default::default()
        };
        assert!(cpus.apply(base).is_err());
    }

    #[test]
    fn allow_lan_ports_is_on_by_default_and_kept() {
        assert!(MachineConfig::default().allow_lan_ports);
        // A machine made before the setting existed reads as on.
        let old = r#"{"cpus":1,"memory_mib":512,"disk_gib":2}"#;
        let config: MachineConfig = serde_json::from_str(old).unwrap();
        assert!(config.allow_lan_ports);
        let off = SizeFlags {
            allow_lan_ports: Some(false),
            ..Default::default()
        };
        assert!(!off.is_empty());
        assert!(!off.apply(config).unwrap().allow_lan_ports);
    }

    #[test]
    fn allow_lan_ports_parses_as_a_flag_or_with_a_value() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            flags: SizeFlags,
        }
        let parse = |args: &[&str]| {
            let mut all = vec!["x"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all).map(|c| c.flags.allow_lan_ports)
        };
        assert_eq!(parse(&[]).unwrap(), None);
        assert_eq!(parse(&["--allow-lan-ports"]).unwrap(), Some(true));
        assert_eq!(parse(&["--allow-lan-ports=false"]).unwrap(), Some(false));
        assert_eq!(parse(&["--allow-lan-ports=true"]).unwrap(), Some(true));
        assert!(parse(&["--allow-lan-ports=maybe"]).is_err());
    }

    #[test]
    fn the_architecture_is_chosen_at_init_and_kept() {
        let arm = SizeFlags {
            arch: Some(GuestArch::Arm64),
            ..Default::default()
        };
        let config = arm.new_config().unwrap();
        assert_eq!(config.guest_arch, Some(GuestArch::Arm64));
        assert_eq!(config.arch(), GuestArch::Arm64);
        // Saved as `"arch": "arm64"`; a machine made before it has none.
        let json = serde_json::to_string(&config).unwrap();
        assert!(json.contains("\"arch\":\"arm64\""), "{json}");
        let back: MachineConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
        let old = serde_json::to_string(&MachineConfig::default()).unwrap();
        assert!(!old.contains("arch"), "{old}");
        let old: MachineConfig = serde_json::from_str(&old).unwrap();
        assert_eq!(old.guest_arch, None);
        // Never changed afterwards (`set`, `start --arch`): the disk holds
        // that architecture's images. The error names both.
        let err = arm.apply(config.clone()).unwrap_err().to_string();
        assert!(
            err.contains("--arch arm64") && err.contains("machine init --arch"),
            "{err}"
        );
        assert!(arm.needs_stop() && !arm.is_empty());
        assert!(parse_arch("aarch64").is_ok() && parse_arch("riscv64").is_err());
    }
}
