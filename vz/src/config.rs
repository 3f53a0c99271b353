//! The VM the VMM process builds, as a plain description: [`VzConfig`].
//!
//! The daemon maps its machine (the parts of its `VmSpec`, [`VzParts`])
//! to a `VzConfig` with the pure [`VzConfig::from_parts`], writes it as
//! JSON beside the machine's files, and starts the VMM process on it; the
//! VMM reads it back and turns it into a `VZVirtualMachineConfiguration`
//! (`vm.rs`, macOS only). Everything that can be checked without the
//! framework is checked here, with typed errors, so a bad machine fails in
//! the daemon with a clear line rather than in the VMM's log:
//!
//! - CPUs and memory: Virtualization.framework wants `cpuCount` between
//!   `VZVirtualMachineConfiguration.minimumAllowedCPUCount` and
//!   `maximumAllowedCPUCount`, and `memorySize` a multiple of 1 MiB between
//!   `minimumAllowedMemorySize` and `maximumAllowedMemorySize`. Those bounds
//!   are the host's, read at run time: [`VzConfig::check_limits`] takes them
//!   as [`Limits`] (the VMM passes the class properties; tests pass fixed ones).
//! - the virtio-fs tag: non-empty and at most 36 bytes
//!   (`VZVirtioFileSystemDeviceConfiguration.validateTag`); here also limited
//!   to `[A-Za-z0-9_-]` so it travels on the kernel command line as is.
//! - the kernel command line: at most [`MAX_CMDLINE`] bytes (Linux's
//!   `COMMAND_LINE_SIZE` on arm64 and x86).
//!
//! It does not start anything, open files or talk to the framework.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use vmctl_proto::auth::{CMDLINE_SECRET, CMDLINE_SECRET_VSOCK};

/// The longest kernel command line Linux takes (arm64 and x86 `COMMAND_LINE_SIZE`).
pub const MAX_CMDLINE: usize = 2048;

/// The longest virtio-fs tag Virtualization.framework takes, in bytes.
pub const MAX_TAG: usize = vmctl_proto::share::MAX_TAG;

/// The serial console the guest writes to: VZ's virtio console is `hvc0`.
pub const CONSOLE: &str = "console=hvc0";

/// One VM for Virtualization.framework, as the VMM process builds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VzConfig {
    /// The machine's name (logs).
    pub name: String,
    /// The kernel `VZLinuxBootLoader` boots: an uncompressed arm64 `Image`
    /// on Apple silicon, an uncompressed `vmlinux` on Intel.
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// The kernel command line: the QEMU one with `console=hvc0`, the
    /// secret's vsock handoff and the shares.
    pub command_line: String,
    pub cpus: u32,
    /// Bytes, a multiple of 1 MiB.
    pub memory_bytes: u64,
    /// The raw data disk, read-write, as virtio-blk.
    pub disk: PathBuf,
    /// NAT networking (vmnet's shared mode) with this MAC.
    pub network: NatNetwork,
    /// The virtio console's output, appended.
    pub console_log: PathBuf,
    /// A virtio entropy device (the guest's CRNG is ready at once).
    pub entropy: bool,
    /// A traditional virtio memory balloon.
    pub memory_balloon: bool,
    /// virtio-fs shares, each at the same path in the guest.
    pub shares: Vec<Share>,
    /// The VMM's unix socket: hybrid vsock (`CONNECT <port>`) and control
    /// lines; guest connections to host port P go to `<socket>_P`.
    pub socket: PathBuf,
    /// The per-boot secret (32 bytes, 0600), handed to the guest on
    /// [`vmctl_proto::auth::SECRET_PORT`].
    pub secret: PathBuf,
    /// Host vsock ports the guest may connect to (besides the secret's),
    /// each forwarded to `<socket>_<port>`.
    pub host_ports: Vec<u32>,
}

/// NAT networking through vmnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatNetwork {
    /// `xx:xx:xx:xx:xx:xx`, locally administered, stable per machine (vmnet's
    /// DHCP keys its leases by MAC: the guest keeps its address across boots).
    pub mac: String,
}

/// A directory of the desktop shared with the guest through virtio-fs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    /// The virtio-fs tag the guest mounts.
    pub tag: String,
    /// The desktop directory.
    pub host_path: PathBuf,
    /// Where the guest mounts it (the same path as on the desktop).
    pub guest_path: PathBuf,
    pub read_only: bool,
}

/// What [`VzConfig::from_parts`] maps: the daemon's `VmSpec`, less what only QEMU needs.
#[derive(Debug, Clone)]
pub struct VzParts<'a> {
    pub name: &'a str,
    pub cpus: u32,
    pub memory_mib: u64,
    pub kernel: &'a Path,
    pub initramfs: &'a Path,
    /// The daemon's kernel command line (written for QEMU's `console=ttyS0`).
    pub cmdline: &'a str,
    pub disk: &'a Path,
    pub console_log: &'a Path,
    pub socket: &'a Path,
    pub secret: &'a Path,
    /// The machine's shares (the daemon's command line already names each
    /// one for the guest, `vmctl.share=`).
    pub shares: &'a [Share],
    pub host_ports: &'a [u32],
}

/// The host's bounds on CPUs and memory
/// (`VZVirtualMachineConfiguration.{minimum,maximum}Allowed{CPUCount,MemorySize}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub min_cpus: u64,
    pub max_cpus: u64,
    pub min_memory_bytes: u64,
    pub max_memory_bytes: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{cpus} CPUs: Virtualization.framework takes {min} to {max} here")]
    Cpus { cpus: u32, min: u64, max: u64 },
    #[error("{mib} MiB of memory: Virtualization.framework takes {min} to {max} bytes here")]
    Memory { mib: u64, min: u64, max: u64 },
    #[error("{what} {path} is not an absolute path")]
    Relative { what: &'static str, path: PathBuf },
    #[error("virtio-fs tag {tag:?}: 1 to {MAX_TAG} bytes of [A-Za-z0-9_-]")]
    Tag { tag: String },
    #[error("the kernel command line is {len} bytes, over Linux's {MAX_CMDLINE}")]
    CommandLine { len: usize },
}

impl VzConfig {
    /// The VM for `parts`; checks everything that does not depend on the host.
    pub fn from_parts(parts: &VzParts<'_>) -> Result<Self, ConfigError> {
        for (what, path) in [
            ("the kernel", parts.kernel),
            ("the initramfs", parts.initramfs),
            ("the data disk", parts.disk),
            ("the console log", parts.console_log),
            ("the VMM socket", parts.socket),
            ("the secret", parts.secret),
        ] {
            absolute(what, path)?;
        }
        let shares = parts.shares.to_vec();
        for share in &shares {
            absolute("a share", &share.host_path)?;
            absolute("a share", &share.guest_path)?;
            check_tag(&share.tag)?;
        }
        let command_line = command_line(parts.cmdline);
        if command_line.len() > MAX_CMDLINE {
            return Err(ConfigError::CommandLine {
                len: command_line.len(),
            });
        }
        let memory_bytes =
            parts
                .memory_mib
                .checked_mul(1024 * 1024)
                .ok_or(ConfigError::Memory {
                    mib: parts.memory_mib,
                    min: 0,
                    max: u64::MAX,
                })?;
        Ok(Self {
            name: parts.name.to_owned(),
            kernel: parts.kernel.to_owned(),
            initramfs: parts.initramfs.to_owned(),
            command_line,
            cpus: parts.cpus,
            memory_bytes,
            disk: parts.disk.to_owned(),
            network: NatNetwork {
                mac: mac_for(parts.name),
            },
            console_log: parts.console_log.to_owned(),
            entropy: true,
            memory_balloon: true,
            shares,
            socket: parts.socket.to_owned(),
            secret: parts.secret.to_owned(),
            host_ports: parts.host_ports.to_vec(),
        })
    }

    /// Checks CPUs and memory against the host's bounds.
    pub fn check_limits(&self, limits: &Limits) -> Result<(), ConfigError> {
        let cpus = u64::from(self.cpus);
        if cpus < limits.min_cpus || cpus > limits.max_cpus {
            return Err(ConfigError::Cpus {
                cpus: self.cpus,
                min: limits.min_cpus,
                max: limits.max_cpus,
            });
        }
        let bytes = self.memory_bytes;
        if !bytes.is_multiple_of(1024 * 1024)
            || bytes < limits.min_memory_bytes
            || bytes > limits.max_memory_bytes
        {
            return Err(ConfigError::Memory {
                mib: bytes / (1024 * 1024),
                min: limits.min_memory_bytes,
                max: limits.max_memory_bytes,
            });
        }
        Ok(())
    }

    /// The JSON the daemon writes and the VMM reads.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

fn absolute(what: &'static str, path: &Path) -> Result<(), ConfigError> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(ConfigError::Relative {
            what,
            path: path.to_owned(),
        })
    }
}

fn check_tag(tag: &str) -> Result<(), ConfigError> {
    if vmctl_proto::share::tag_ok(tag) {
        Ok(())
    } else {
        Err(ConfigError::Tag {
            tag: tag.to_owned(),
        })
    }
}

/// The daemon's command line for VZ: its serial console becomes the virtio
/// console and the secret comes by vsock.
fn command_line(base: &str) -> String {
    let mut words: Vec<String> = base
        .split_whitespace()
        .filter(|word| !word.starts_with("console=") && !word.starts_with(CMDLINE_SECRET))
        .map(str::to_owned)
        .collect();
    words.insert(0, CONSOLE.to_owned());
    words.push(format!("{CMDLINE_SECRET}={CMDLINE_SECRET_VSOCK}"));
    words.join(" ")
}

/// A locally administered unicast MAC, stable per machine name.
fn mac_for(name: &str) -> String {
    // FNV-1a 64: stable across builds, unlike std's hasher.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let bytes = hash.to_be_bytes();
    // 0x02: locally administered, unicast.
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        bytes[0], bytes[1], bytes[2], bytes[3], bytes[4]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const CMDLINE: &str =
        "console=ttyS0 quiet panic=-1 vmctl.time=1.2 vmctl.data=/dev/vda vmctl.bind=127.0.0.1";

    fn home_share(home: &Path) -> Vec<Share> {
        vec![Share {
            tag: "vmctl-share-0".into(),
            host_path: home.into(),
            guest_path: home.into(),
            read_only: false,
        }]
    }

    fn parts<'a>(shares: &'a [Share]) -> VzParts<'a> {
        VzParts {
            name: "default",
            cpus: 2,
            memory_mib: 2048,
            kernel: Path::new("/img/vmlinux"),
            initramfs: Path::new("/img/initramfs.img"),
            cmdline: CMDLINE,
            disk: Path::new("/m/disk.raw"),
            console_log: Path::new("/m/console.log"),
            socket: Path::new("/r/vm.vsock"),
            secret: Path::new("/r/vm.secret"),
            shares,
            host_ports: &[1027],
        }
    }

    const MAC_LIMITS: Limits = Limits {
        min_cpus: 1,
        max_cpus: 8,
        min_memory_bytes: 128 << 20,
        max_memory_bytes: 16 << 30,
    };

    #[test]
    fn a_machine_maps_to_every_device_vz_needs() {
        let home = Path::new("/Users/ann");
        let shares = home_share(home);
        let config = VzConfig::from_parts(&parts(&shares)).unwrap();
        assert_eq!(config.cpus, 2);
        assert_eq!(config.memory_bytes, 2048 * 1024 * 1024);
        assert_eq!(config.kernel, Path::new("/img/vmlinux"));
        assert_eq!(config.disk, Path::new("/m/disk.raw"));
        assert!(config.entropy && config.memory_balloon);
        assert_eq!(config.shares, shares);
        assert_eq!(
            config.command_line,
            "console=hvc0 quiet panic=-1 vmctl.time=1.2 vmctl.data=/dev/vda \
             vmctl.bind=127.0.0.1 vmctl.secret=vsock"
        );
        assert_eq!(config.host_ports, vec![1027]);
        assert_eq!(config.socket, Path::new("/r/vm.vsock"));
        assert_eq!(config.check_limits(&MAC_LIMITS), Ok(()));
        let back = VzConfig::from_json(&config.to_json().unwrap()).unwrap();
        assert_eq!(back, config, "the VMM reads what the daemon wrote");
    }

    #[test]
    fn the_mac_is_stable_per_machine_and_locally_administered() {
        let a = VzConfig::from_parts(&parts(&[])).unwrap().network.mac;
        let again = VzConfig::from_parts(&parts(&[])).unwrap().network.mac;
        let mut other = parts(&[]);
        other.name = "other";
        let b = VzConfig::from_parts(&other).unwrap().network.mac;
        assert_eq!(a, again);
        assert_ne!(a, b);
        assert!(a.starts_with("02:") && a.len() == 17, "{a}");
    }

    #[test]
    fn shares_are_checked() {
        let config = VzConfig::from_parts(&parts(&[])).unwrap();
        assert!(config.shares.is_empty());
        let mut bad = home_share(Path::new("relative"));
        assert!(matches!(
            VzConfig::from_parts(&parts(&bad)),
            Err(ConfigError::Relative { .. })
        ));
        bad = home_share(Path::new("/Users/ann"));
        bad[0].tag = "a b".into();
        assert!(matches!(
            VzConfig::from_parts(&parts(&bad)),
            Err(ConfigError::Tag { .. })
        ));
    }

    #[test]
    fn cpus_and_memory_outside_the_hosts_bounds_are_refused() {
        let mut config = VzConfig::from_parts(&parts(&[])).unwrap();
        config.cpus = 9;
        assert!(matches!(
            config.check_limits(&MAC_LIMITS),
            Err(ConfigError::Cpus {
                cpus: 9,
                max: 8,
                ..
            })
        ));
        config.cpus = 0;
        assert!(config.check_limits(&MAC_LIMITS).is_err());
        config.cpus = 1;
        config.memory_bytes = 64 << 20;
        assert!(matches!(
            config.check_limits(&MAC_LIMITS),
            Err(ConfigError::Memory { mib: 64, .. })
        ));
        config.memory_bytes = (256 << 20) + 1;
        assert!(config.check_limits(&MAC_LIMITS).is_err(), "not whole MiB");
        let mut huge = parts(&[]);
        huge.memory_mib = u64::MAX;
        assert!(matches!(
            VzConfig::from_parts(&huge),
            Err(ConfigError::Memory { .. })
        ));
    }

    #[test]
    fn relative_paths_long_command_lines_and_bad_tags_are_refused() {
        let mut bad = parts(&[]);
        bad.disk = Path::new("disk.raw");
        assert!(matches!(
            VzConfig::from_parts(&bad),
            Err(ConfigError::Relative {
                what: "the data disk",
                ..
            })
        ));
        let long = format!("{CMDLINE} {}", "x".repeat(MAX_CMDLINE));
        let mut bad = parts(&[]);
        bad.cmdline = &long;
        assert!(matches!(
            VzConfig::from_parts(&bad),
            Err(ConfigError::CommandLine { .. })
        ));
        assert!(check_tag("vmctl-home").is_ok());
        for tag in ["", "has space", &"t".repeat(MAX_TAG + 1)] {
            assert!(check_tag(tag).is_err(), "{tag:?}");
        }
    }
}
