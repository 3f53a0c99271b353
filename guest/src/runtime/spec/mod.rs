//! The OCI runtime spec of a container, built from Docker's `Config` and
//! `HostConfig` with Docker's semantics, for libcontainer to run.
//!
//! What it decides: namespaces (pid, mount, ipc, uts, network, cgroup, each
//! shared with the host when asked), the mounts (`/proc`, `/dev`, `/sys`,
//! cgroups, `/dev/shm` sized by `ShmSize`, the `/etc` files, binds, volumes
//! and tmpfs), the process (args, env, user, capabilities, rlimits,
//! no-new-privileges), the cgroup resources (memory, cpu, cpuset, pids,
//! blkio, device rules), masked and read-only paths, sysctls and the
//! seccomp profile. `--privileged` lifts the limits the way Docker does.
//!
//! What it does not: resolve images, volumes or the command (the engine
//! passes them in), create the network namespace, or run anything.
//! [`validate`] checks a `HostConfig` at create time with Docker's messages;
//! [`build`] runs it again, so a bad config never reaches libcontainer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpu, LinuxDeviceCgroup,
    LinuxDeviceType, LinuxMemory, LinuxNamespace, LinuxNamespaceType, LinuxPids, LinuxResources,
    Mount, PosixRlimit, PosixRlimitBuilder, PosixRlimitType, Process, Root, Spec,
};

mod mounts;
mod resources;
mod validate;

use mounts::*;
use resources::*;
pub use validate::validate;
use validate::*;

use super::{caps, init, seccomp, user};
use crate::model::container::{Config, HostConfig, MountPoint};
use crate::state::ErrorKind;

/// The smallest memory limit Docker accepts (6 MiB).
const MIN_MEMORY: i64 = 6 * 1024 * 1024;
/// `/dev/shm` size when `ShmSize` is 0.
const DEFAULT_SHM_SIZE: i64 = 64 * 1024 * 1024;
/// The CFS period used for `NanoCpus`.
const NANO_CPUS_PERIOD: u64 = 100_000;
/// `RLIMIT_NOFILE` of a container, as dockerd sets it on Debian.
const NOFILE: u64 = 1_048_576;

/// Docker's masked paths: hidden from the container.
const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The character devices a container may use besides mknod, as
/// `(major, minor)`; `None` is any minor.
const ALLOWED_DEVICES: [(i64, Option<i64>); 10] = [
    (1, Some(3)),    // null
    (1, Some(5)),    // zero
    (1, Some(7)),    // full
    (1, Some(8)),    // random
    (1, Some(9)),    // urandom
    (5, Some(0)),    // tty
    (5, Some(1)),    // console
    (5, Some(2)),    // ptmx
    (136, None),     // pts
    (10, Some(200)), // net/tun
];

/// The container's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetNs {
    /// A new, empty namespace.
    New,
    /// The VM's (host's) namespace.
    Host,
    /// Join the namespace at this path (`/proc/PID/ns/net`, a bind mount).
    Path(PathBuf),
    /// The container's own namespace, made by its monitor before the
    /// container is created (with `lo` up); the container inherits it.
    FromMonitor,
}

/// Host paths of the files bind-mounted over the container's `/etc` files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcFiles {
    pub hostname: PathBuf,
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
}

/// Everything [`build`] needs.
#[derive(Debug, Clone)]
pub struct SpecInput<'a> {
    pub id: &'a str,
    /// `Hostname`, `Domainname`, `Tty`, `User`, `WorkingDir`, already merged
    /// with the image's config.
    pub config: &'a Config,
    pub host_config: &'a HostConfig,
    /// Entrypoint + cmd, resolved by the engine.
    pub args: Vec<String>,
    /// The final environment.
    pub env: Vec<String>,
    /// The container's root filesystem (overlay mount point).
    pub rootfs: PathBuf,
    /// Resolved bind, volume and tmpfs mounts.
    pub mounts: &'a [MountPoint],
    pub etc_files: EtcFiles,
    /// The cgroup path, e.g. `/vmctl/<id>`.
    pub cgroups_path: String,
    pub netns: NetNs,
    /// Host path of the static init, used when `HostConfig.Init` is true.
    pub init_binary: Option<PathBuf>,
}

/// Errors of spec building and validation. Input errors carry Docker's
/// messages.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("Minimum memory limit allowed is 6MB")]
    MemoryTooSmall,
    #[error("Minimum memoryswap limit should be larger than memory limit, see usage")]
    SwapBelowMemory,
    #[error("You should always set the Memory limit when using Memoryswap limit, see usage")]
    SwapWithoutMemory,
    #[error("Minimum memory reservation allowed is 6MB")]
    ReservationTooSmall,
    #[error("Minimum memory limit can not be less than memory reservation limit, see usage")]
    ReservationAboveMemory,
    #[error("Invalid value: {0}, valid memory swappiness range is 0-100")]
    Swappiness(i64),
    #[error("Conflicting options: Nano CPUs and CPU Period cannot both be set")]
    NanoCpusWithPeriod,
    #[error("Conflicting options: Nano CPUs and CPU Quota cannot both be set")]
    NanoCpusWithQuota,
    #[error("Range of CPUs is from 0.01 to {0}.00, as there are only {0} CPUs available")]
    NanoCpusRange(usize),
    #[error("CPU cfs quota can not be less than 1ms (i.e. 1000)")]
    CpuQuotaTooSmall,
    #[error(
        "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)"
    )]
    CpuPeriodRange,
    #[error("Invalid value {0} for cpuset cpus")]
    CpusetCpusSyntax(String),
    #[error("Requested CPUs are not available - requested {requested}, available: {available}")]
    CpusetCpusUnavailable {
        requested: String,
        available: String,
    },
    #[error("Invalid value {0} for cpuset mems")]
    CpusetMemsSyntax(String),
    #[error(
        "Requested memory nodes are not available - requested {requested}, available: {available}"
    )]
    CpusetMemsUnavailable {
        requested: String,
        available: String,
    },
    #[error("Range of blkio weight is from 10 to 1000")]
    BlkioWeight,
    #[error("Invalid value {0}, range for oom score adj is [-1000, 1000]")]
    OomScoreAdj(i64),
    #[error("SHM size can not be less than 0")]
    ShmSizeNegative,
    #[error("invalid --security-opt {step}: {opt:?}")]
    SecurityOpt { step: u8, opt: String },
    #[error("custom seccomp profiles are not supported: use seccomp=unconfined or the default")]
    SeccompProfile,
    #[error("{kind} mode {mode:?} is not supported")]
    NamespaceMode { kind: &'static str, mode: String },
    #[error("the working directory '{0}' is invalid, it needs to be an absolute path")]
    WorkingDir(String),
    #[error("invalid ulimit {0}")]
    Ulimit(String),
    #[error(transparent)]
    Caps(#[from] caps::CapsError),
    #[error(transparent)]
    User(#[from] user::UserError),
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    #[error("cannot build the OCI spec of container {id}")]
    Build {
        id: String,
        #[source]
        source: oci_spec::OciSpecError,
    },
}

impl SpecError {
    /// How the API reports the error: bad input is `InvalidParameter`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::User(e) if !e.is_invalid_input() => ErrorKind::Internal,
            Self::Build { .. } | Self::Seccomp(_) => ErrorKind::Internal,
            _ => ErrorKind::InvalidParameter,
        }
    }
}

/// Facts about the machine that Docker's rules depend on.
#[derive(Debug, Clone)]
struct Host {
    cgroup_v2: bool,
    /// Online CPUs, as the kernel lists them (`0-3`).
    cpus: String,
    /// Online memory nodes (`0`).
    mems: String,
    last_cap: u32,
    /// The engine's own bounding set: more cannot be granted.
    bounding: u64,
}

impl Host {
    fn probe() -> Self {
        let read = |path: &str, default: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| default.to_string())
        };
        let cgroup_v2 = nix::sys::statfs::statfs("/sys/fs/cgroup")
            .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
            .unwrap_or(false);
        Self {
            cgroup_v2,
            cpus: read("/sys/devices/system/cpu/online", "0"),
            mems: read("/sys/devices/system/node/online", "0"),
            last_cap: caps::kernel_last_cap(),
            bounding: caps::own_bounding_set(),
        }
    }
}

/// Builds the OCI spec of a container.
pub fn build(input: &SpecInput) -> Result<Spec, SpecError> {
    build_on(input, &Host::probe())
}

fn build_on(input: &SpecInput, host: &Host) -> Result<Spec, SpecError> {
    let hc = input.host_config;
    validate_on(hc, host)?;
    let opts = security_opts(hc)?;
    let caps = caps::within(
        caps::resolve(
            hc.cap_add.as_deref().unwrap_or_default(),
            hc.cap_drop.as_deref().unwrap_or_default(),
            hc.privileged,
            host.last_cap,
        )?,
        host.bounding,
    );
    let built = |source| SpecError::Build {
        id: input.id.to_string(),
        source,
    };

    let process = process(input, &caps, &opts)?;
    let new_uts = hc.uts_mode != "host";
    let confined = !hc.privileged;
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces(input, host))
        .resources(resources(hc, host))
        .cgroups_path(PathBuf::from(&input.cgroups_path))
        .sysctl(
            hc.sysctls
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect::<HashMap<_, _>>(),
        )
        .build()
        .map_err(built)?;
    let paths = |ours: Option<&Vec<String>>, defaults: &[&str]| -> Vec<String> {
        if !confined || opts.systempaths_unconfined {
            return Vec::new();
        }
        ours.cloned()
            .unwrap_or_else(|| defaults.iter().map(|s| s.to_string()).collect())
    };
    linux.set_masked_paths(Some(paths(hc.masked_paths.as_ref(), &MASKED_PATHS)));
    linux.set_readonly_paths(Some(paths(hc.readonly_paths.as_ref(), &READONLY_PATHS)));
    if confined && !opts.seccomp_unconfined {
        linux.set_seccomp(Some(seccomp::default_profile(&caps)?));
    }

    let mut root = Root::default();
    root.set_path(input.rootfs.clone());
    root.set_readonly(Some(hc.readonly_rootfs));

    let mut spec = Spec::default();
    spec.set_root(Some(root));
    spec.set_mounts(Some(mounts(input, &opts)?));
    spec.set_process(Some(process));
    spec.set_hostname(new_uts.then(|| input.config.hostname.clone()));
    spec.set_domainname(
        (new_uts && !input.config.domainname.is_empty()).then(|| input.config.domainname.clone()),
    );
    spec.set_linux(Some(linux));
    Ok(spec)
}

/// The namespaces: pid, mount, ipc, uts, network and cgroup, each dropped
/// (shared with the host) when the `HostConfig` says so.
fn namespaces(input: &SpecInput, host: &Host) -> Vec<LinuxNamespace> {
    let hc = input.host_config;
    let private_cgroupns = match hc.cgroupns_mode.as_str() {
        "private" => true,
        "host" => false,
        _ => host.cgroup_v2,
    };
    let mut out = Vec::new();
    let mut add = |typ, wanted: bool, path: Option<PathBuf>| {
        if wanted {
            let mut ns = LinuxNamespace::default();
            ns.set_typ(typ);
            ns.set_path(path);
            out.push(ns);
        }
    };
    add(LinuxNamespaceType::Pid, hc.pid_mode != "host", None);
    add(LinuxNamespaceType::Mount, true, None);
    add(LinuxNamespaceType::Ipc, hc.ipc_mode != "host", None);
    add(LinuxNamespaceType::Uts, hc.uts_mode != "host", None);
    match &input.netns {
        NetNs::New => add(LinuxNamespaceType::Network, true, None),
        NetNs::Host | NetNs::FromMonitor => {}
        NetNs::Path(path) => add(LinuxNamespaceType::Network, true, Some(path.clone())),
    }
    add(LinuxNamespaceType::Cgroup, private_cgroupns, None);
    out
}

/// The process: args (under the init when asked), env, cwd, user,
/// capabilities, rlimits, no-new-privileges and the OOM score.
fn process(
    input: &SpecInput,
    caps: &[Capability],
    opts: &SecurityOpts,
) -> Result<Process, SpecError> {
    let hc = input.host_config;
    let config = input.config;
    let cwd = if config.working_dir.is_empty() {
        "/"
    } else {
        config.working_dir.as_str()
    };
    if !cwd.starts_with('/') {
        return Err(SpecError::WorkingDir(cwd.into()));
    }
    let resolved = user::resolve(
        &input.rootfs,
        &config.user,
        hc.group_add.as_deref().unwrap_or_default(),
    )?;
    let mut oci_user = oci_spec::runtime::User::default();
    oci_user.set_uid(resolved.uid);
    oci_user.set_gid(resolved.gid);
    oci_user.set_additional_gids(Some(resolved.additional_gids));

    let set: oci_spec::runtime::Capabilities = caps.iter().copied().collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(set.clone())
        .effective(set.clone())
        .permitted(set)
        .inheritable(oci_spec::runtime::Capabilities::new())
        .ambient(oci_spec::runtime::Capabilities::new())
        .build()
        .map_err(|source| SpecError::Build {
            id: input.id.into(),
            source,
        })?;

    let mut args = input.args.clone();
    if let (Some(true), Some(_)) = (hc.init, &input.init_binary) {
        args.splice(0..0, [init::CONTAINER_PATH.to_string(), "--".to_string()]);
    }

    let mut process = Process::default();
    process.set_terminal(Some(config.tty));
    process.set_args(Some(args));
    process.set_env(Some(input.env.clone()));
    process.set_cwd(PathBuf::from(cwd));
    process.set_user(oci_user);
    process.set_capabilities(Some(capabilities));
    process.set_rlimits(Some(rlimits(hc)?));
    // Only ever `Some(true)`: libcontainer 0.7 loads seccomp after dropping
    // capabilities whenever the field is present, which fails without
    // no_new_privs (`Some(false)` would break every default container).
    process.set_no_new_privileges(opts.no_new_privileges.then_some(true));
    process.set_oom_score_adj((hc.oom_score_adj != 0).then_some(hc.oom_score_adj as i32));
    if let (true, Some([height, width])) = (config.tty, hc.console_size) {
        if height > 0 && width > 0 {
            let size = oci_spec::runtime::BoxBuilder::default()
                .height(height)
                .width(width)
                .build()
                .map_err(|source| SpecError::Build {
                    id: input.id.into(),
                    source,
                })?;
            process.set_console_size(Some(size));
        }
    }
    Ok(process)
}

/// `RLIMIT_NOFILE` at dockerd's value, overridden by `HostConfig.Ulimits`.
fn rlimits(hc: &HostConfig) -> Result<Vec<PosixRlimit>, SpecError> {
    // Raising the hard limit needs CAP_SYS_RESOURCE, which a sandboxed
    // engine may lack: never ask for more than the engine has.
    let own_hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(NOFILE, |(_, hard)| hard);
    let nofile = NOFILE.min(own_hard);
    let mut out = vec![rlimit(PosixRlimitType::RlimitNofile, nofile, nofile)?];
    for ulimit in hc.ulimits.as_deref().unwrap_or_default() {
        let bad = || SpecError::Ulimit(ulimit.to_string());
        let name = ulimit
            .get("Name")
            .and_then(|v| v.as_str())
            .ok_or_else(bad)?;
        let soft = ulimit
            .get("Soft")
            .and_then(|v| v.as_i64())
            .ok_or_else(bad)?;
        let hard = ulimit
            .get("Hard")
            .and_then(|v| v.as_i64())
            .ok_or_else(bad)?;
        let typ: PosixRlimitType = format!("RLIMIT_{}", name.to_ascii_uppercase())
            .parse()
            .map_err(|_| bad())?;
        if soft > hard {
            return Err(bad());
        }
        // -1 is "unlimited", RLIM_INFINITY.
        let (soft, hard) = (soft as u64, hard as u64);
        out.retain(|r| r.typ() != typ);
        out.push(rlimit(typ, soft, hard)?);
    }
    Ok(out)
}

fn rlimit(typ: PosixRlimitType, soft: u64, hard: u64) -> Result<PosixRlimit, SpecError> {
    PosixRlimitBuilder::default()
        .typ(typ)
        .soft(soft)
        .hard(hard)
        .build()
        .map_err(|source| SpecError::Build {
            id: "rlimit".into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::container::{Mount as DockerMount, TmpfsOptions};

    const MIB: i64 = 1024 * 1024;

    fn host() -> Host {
        Host {
            cgroup_v2: false,
            cpus: "0-3".into(),
            mems: "0".into(),
            last_cap: 40,
            bounding: u64::MAX,
        }
    }

    fn etc() -> EtcFiles {
        EtcFiles {
            hostname: "/run/c/hostname".into(),
            hosts: "/run/c/hosts".into(),
            resolv_conf: "/run/c/resolv.conf".into(),
        }
    }

    /// Builds the spec of `hc` (and `config`) over an empty rootfs.
    fn spec_with(config: &Config, hc: &HostConfig, mounts: &[MountPoint]) -> Spec {
        let rootfs = tempfile::tempdir().unwrap();
        let input = SpecInput {
            id: "c1",
            config,
            host_config: hc,
            args: vec!["/bin/sh".into(), "-c".into(), "true".into()],
            env: vec!["PATH=/bin".into()],
            rootfs: rootfs.path().to_path_buf(),
            mounts,
            etc_files: etc(),
            cgroups_path: "/vmctl/c1".into(),
            netns: NetNs::New,
            init_binary: Some("/var/lib/vmctl/vmctl-init".into()),
        };
        build_on(&input, &host()).unwrap()
    }

    fn spec_of(hc: &HostConfig) -> Spec {
        spec_with(&Config::default(), hc, &[])
    }

    fn linux(spec: &Spec) -> &oci_spec::runtime::Linux {
        spec.linux().as_ref().unwrap()
    }

    fn process(spec: &Spec) -> &Process {
        spec.process().as_ref().unwrap()
    }

    fn find_mount<'a>(spec: &'a Spec, dest: &str) -> Option<&'a Mount> {
        spec.mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new(dest))
    }

    fn options(spec: &Spec, dest: &str) -> Vec<String> {
        find_mount(spec, dest).unwrap().options().clone().unwrap()
    }

    fn namespace_types(spec: &Spec) -> Vec<LinuxNamespaceType> {
        linux(spec)
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.typ())
            .collect()
    }

    fn err(hc: &HostConfig) -> String {
        let e = validate_on(hc, &host()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidParameter, "{e}");
        e.to_string()
    }

    #[test]
    fn default_container() {
        let config = Config {
            hostname: "abc123".into(),
            tty: true,
            ..Default::default()
        };
        let spec = spec_with(&config, &HostConfig::default(), &[]);
        assert_eq!(spec.hostname().as_deref(), Some("abc123"));
        let p = process(&spec);
        assert_eq!(p.terminal(), Some(true));
        assert_eq!(p.cwd(), Path::new("/"));
        assert_eq!(p.args().as_deref().unwrap()[0], "/bin/sh");
        assert_eq!(p.no_new_privileges(), None);
        assert_eq!((p.user().uid(), p.user().gid()), (0, 0));
        let caps = p.capabilities().as_ref().unwrap();
        assert_eq!(caps.bounding().as_ref().unwrap().len(), 14);
        assert_eq!(caps.effective(), caps.bounding());
        assert_eq!(caps.permitted(), caps.bounding());
        assert!(caps.inheritable().as_ref().unwrap().is_empty());
        assert!(caps.ambient().as_ref().unwrap().is_empty());
        let nofile = &p.rlimits().as_ref().unwrap()[0];
        // dockerd's value, unless the engine's own hard limit is lower.
        let (_, own_hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        let expected = NOFILE.min(own_hard);
        assert_eq!(
            (nofile.typ(), nofile.soft(), nofile.hard()),
            (PosixRlimitType::RlimitNofile, expected, expected)
        );
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(false));

        let l = linux(&spec);
        assert_eq!(l.cgroups_path().as_deref(), Some(Path::new("/vmctl/c1")));
        use LinuxNamespaceType::*;
        // cgroup v1 host: the cgroup namespace is the host's, like Docker.
        assert_eq!(namespace_types(&spec), vec![Pid, Mount, Ipc, Uts, Network]);
        assert_eq!(l.masked_paths().as_ref().unwrap().len(), 11);
        assert!(l
            .readonly_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/sys".to_string()));
        assert!(l.seccomp().is_some());
        let devices = l.resources().as_ref().unwrap().devices().as_ref().unwrap();
        assert!(!devices[0].allow() && devices[0].typ() == Some(LinuxDeviceType::A));
        assert!(devices
            .iter()
            .any(|d| d.allow() && d.major() == Some(1) && d.minor() == Some(3)));

        assert_eq!(options(&spec, "/sys")[0], "ro");
        assert_eq!(options(&spec, "/sys/fs/cgroup")[0], "ro");
        assert!(options(&spec, "/dev/shm").contains(&"size=67108864".to_string()));
        assert!(options(&spec, "/dev/pts").contains(&"ptmxmode=0666".to_string()));
        assert!(options(&spec, "/dev").contains(&"mode=755".to_string()));
        let hosts = find_mount(&spec, "/etc/hosts").unwrap();
        assert_eq!(hosts.source().as_deref(), Some(Path::new("/run/c/hosts")));
        assert!(find_mount(&spec, "/etc/resolv.conf").is_some());
        assert!(find_mount(&spec, "/etc/hostname").is_some());
        assert!(find_mount(&spec, "/dev/mqueue").is_some());
    }

    #[test]
    fn namespace_modes() {
        let mut hc = HostConfig {
            pid_mode: "host".into(),
            ipc_mode: "host".into(),
            uts_mode: "host".into(),
            cgroupns_mode: "private".into(),
            ..Default::default()
        };
        let spec = spec_of(&hc);
        use LinuxNamespaceType::*;
        assert_eq!(namespace_types(&spec), vec![Mount, Network, Cgroup]);
        assert_eq!(spec.hostname(), &None);
        let shm = find_mount(&spec, "/dev/shm").unwrap();
        assert_eq!(shm.source().as_deref(), Some(Path::new("/dev/shm")));

        hc = HostConfig::default();
        let config = Config::default();
        let rootfs = tempfile::tempdir().unwrap();
        let mut input = SpecInput {
            id: "c1",
            config: &config,
            host_config: &hc,
            args: vec!["x".into()],
            env: vec![],
            rootfs: rootfs.path().to_path_buf(),
            mounts: &[],
            etc_files: etc(),
            cgroups_path: "/vmctl/c1".into(),
            netns: NetNs::Host,
            init_binary: None,
        };
        let v2 = Host {
            cgroup_v2: true,
            ..host()
        };
        assert_eq!(
            namespace_types(&build_on(&input, &v2).unwrap()),
            vec![Pid, Mount, Ipc, Uts, Cgroup]
        );
        input.netns = NetNs::Path("/run/netns/c1".into());
        let spec = build_on(&input, &host()).unwrap();
        let net = linux(&spec)
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .find(|n| n.typ() == Network)
            .cloned();
        assert_eq!(
            net.unwrap().path().as_deref(),
            Some(Path::new("/run/netns/c1"))
        );
        assert!(err(&HostConfig {
            pid_mode: "container:x".into(),
            ..Default::default()
        })
        .contains("not supported"));
    }

    #[test]
    fn memory_limits() {
        let hc = HostConfig {
            memory: 64 * MIB,
            ..Default::default()
        };
        let spec = spec_of(&hc);
        let memory = linux(&spec).resources().as_ref().unwrap().memory().unwrap();
        assert_eq!(memory.limit(), Some(67108864));
        assert_eq!(memory.swap(), Some(128 * MIB));

        let hc = HostConfig {
            memory: 64 * MIB,
            memory_swap: -1,
            memory_reservation: 32 * MIB,
            memory_swappiness: Some(10),
            oom_kill_disable: Some(true),
            ..Default::default()
        };
        let spec = spec_of(&hc);
        let memory = linux(&spec).resources().as_ref().unwrap().memory().unwrap();
        assert_eq!(memory.swap(), Some(-1));
        assert_eq!(memory.reservation(), Some(32 * MIB));
        assert_eq!(memory.swappiness(), Some(10));
        assert_eq!(memory.disable_oom_killer(), Some(true));

        let spec = spec_of(&HostConfig::default());
        assert!(linux(&spec)
            .resources()
            .as_ref()
            .unwrap()
            .memory()
            .is_none());
    }

    #[test]
    fn cpu_pids_and_blkio() {
        let hc = HostConfig {
            nano_cpus: 1_500_000_000,
            cpu_shares: 512,
            cpuset_cpus: "0-1".into(),
            cpuset_mems: "0".into(),
            pids_limit: Some(100),
            blkio_weight: 300,
            ..Default::default()
        };
        let spec = spec_of(&hc);
        let r = linux(&spec).resources().as_ref().unwrap();
        let cpu = r.cpu().as_ref().unwrap();
        assert_eq!((cpu.quota(), cpu.period()), (Some(150_000), Some(100_000)));
        assert_eq!(cpu.shares(), Some(512));
        assert_eq!(cpu.cpus().as_deref(), Some("0-1"));
        assert_eq!(cpu.mems().as_deref(), Some("0"));
        assert_eq!(r.pids().unwrap().limit(), 100);
        assert_eq!(r.block_io().as_ref().unwrap().weight(), Some(300));

        let hc = HostConfig {
            cpu_quota: 50_000,
            cpu_period: 200_000,
            pids_limit: Some(0),
            ..Default::default()
        };
        let spec = spec_of(&hc);
        let r = linux(&spec).resources().as_ref().unwrap();
        let cpu = r.cpu().as_ref().unwrap();
        assert_eq!((cpu.quota(), cpu.period()), (Some(50_000), Some(200_000)));
        assert_eq!(r.pids().unwrap().limit(), -1);
    }

    #[test]
    fn privileged() {
        let hc = HostConfig {
            privileged: true,
            ..Default::default()
        };
        let spec = spec_of(&hc);
        let l = linux(&spec);
        assert!(l.seccomp().is_none());
        assert!(l.masked_paths().as_ref().unwrap().is_empty());
        assert!(l.readonly_paths().as_ref().unwrap().is_empty());
        let devices = l.resources().as_ref().unwrap().devices().as_ref().unwrap();
        assert_eq!(devices.len(), 1);
        assert!(devices[0].allow());
        let caps = process(&spec).capabilities().as_ref().unwrap();
        assert_eq!(caps.bounding().as_ref().unwrap().len(), 41);
        assert_eq!(options(&spec, "/sys")[0], "rw");
        assert_eq!(options(&spec, "/sys/fs/cgroup")[0], "rw");
    }

    #[test]
    fn security_options() {
        let hc = HostConfig {
            security_opt: Some(vec![
                "seccomp=unconfined".into(),
                "no-new-privileges".into(),
            ]),
            ..Default::default()
        };
        let spec = spec_of(&hc);
        assert!(linux(&spec).seccomp().is_none());
        assert_eq!(process(&spec).no_new_privileges(), Some(true));
        let hc = HostConfig {
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            ..Default::default()
        };
        assert_eq!(process(&spec_of(&hc)).no_new_privileges(), Some(true));
        let hc = HostConfig {
            security_opt: Some(vec!["systempaths=unconfined".into()]),
            ..Default::default()
        };
        assert!(linux(&spec_of(&hc))
            .masked_paths()
            .as_ref()
            .unwrap()
            .is_empty());

        let opt = |o: &str| HostConfig {
            security_opt: Some(vec![o.into()]),
            ..Default::default()
        };
        assert_eq!(err(&opt("foo")), "invalid --security-opt 1: \"foo\"");
        assert_eq!(
            err(&opt("foo=bar")),
            "invalid --security-opt 2: \"foo=bar\""
        );
        assert_eq!(
            err(&opt("no-new-privileges=maybe")),
            "invalid --security-opt 2: \"no-new-privileges=maybe\""
        );
    }

    #[test]
    fn capabilities_and_seccomp_follow_cap_add() {
        let hc = HostConfig {
            cap_drop: Some(vec!["ALL".into()]),
            cap_add: Some(vec!["NET_ADMIN".into()]),
            ..Default::default()
        };
        let spec = spec_of(&hc);
        let caps = process(&spec).capabilities().as_ref().unwrap();
        let want: oci_spec::runtime::Capabilities = [Capability::NetAdmin].into_iter().collect();
        assert_eq!(caps.bounding().as_ref(), Some(&want));

        let names = |spec: &Spec| -> Vec<String> {
            let seccomp = linux(spec).seccomp().as_ref().unwrap();
            seccomp
                .syscalls()
                .as_ref()
                .unwrap()
                .iter()
                .flat_map(|s| s.names().clone())
                .collect()
        };
        assert!(!names(&spec_of(&HostConfig::default())).contains(&"unshare".to_string()));
        let hc = HostConfig {
            cap_add: Some(vec!["sys_admin".into()]),
            ..Default::default()
        };
        assert!(names(&spec_of(&hc)).contains(&"unshare".to_string()));
    }

    #[test]
    fn readonly_rootfs_user_workdir_and_init() {
        let mut config = Config {
            user: "1000:1000".into(),
            working_dir: "/app".into(),
            ..Default::default()
        };
        let hc = HostConfig {
            readonly_rootfs: true,
            init: Some(true),
            group_add: Some(vec!["20".into()]),
            oom_score_adj: 500,
            ..Default::default()
        };
        let spec = spec_with(&config, &hc, &[]);
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
        let p = process(&spec);
        assert_eq!((p.user().uid(), p.user().gid()), (1000, 1000));
        assert_eq!(p.user().additional_gids().as_deref(), Some(&[20][..]));
        assert_eq!(p.cwd(), Path::new("/app"));
        assert_eq!(p.oom_score_adj(), Some(500));
        assert_eq!(
            p.args().as_deref().unwrap()[..3],
            [
                "/sbin/docker-init".to_string(),
                "--".into(),
                "/bin/sh".into()
            ]
        );
        let init = find_mount(&spec, "/sbin/docker-init").unwrap();
        assert_eq!(
            init.source().as_deref(),
            Some(Path::new("/var/lib/vmctl/vmctl-init"))
        );
        assert!(init.options().as_ref().unwrap().contains(&"ro".to_string()));
        assert!(options(&spec, "/etc/hosts").contains(&"ro".to_string()));

        config.user = "nobody".into();
        let rootfs = tempfile::tempdir().unwrap();
        let input = SpecInput {
            id: "c1",
            config: &config,
            host_config: &HostConfig::default(),
            args: vec![],
            env: vec![],
            rootfs: rootfs.path().to_path_buf(),
            mounts: &[],
            etc_files: etc(),
            cgroups_path: String::new(),
            netns: NetNs::New,
            init_binary: None,
        };
        let e = build_on(&input, &host()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unable to find user nobody: no matching entries in passwd file"
        );
        assert_eq!(e.kind(), ErrorKind::InvalidParameter);
    }

    #[test]
    fn binds_volumes_and_tmpfs() {
        let mounts = [
            MountPoint {
                kind: "bind".into(),
                source: "/host/data".into(),
                destination: "/data".into(),
                rw: false,
                ..Default::default()
            },
            MountPoint {
                kind: "volume".into(),
                source: "/var/lib/vmctl/volumes/v/_data".into(),
                destination: "/data/sub".into(),
                rw: true,
                propagation: "rslave".into(),
                ..Default::default()
            },
            MountPoint {
                kind: "bind".into(),
                source: "/host/shm".into(),
                destination: "/dev/shm".into(),
                rw: true,
                ..Default::default()
            },
        ];
        let hc = HostConfig {
            tmpfs: Some([("/run".to_string(), "size=64m,mode=1777,exec".to_string())].into()),
            mounts: vec![DockerMount {
                kind: "tmpfs".into(),
                target: "/cache".into(),
                read_only: true,
                tmpfs_options: Some(TmpfsOptions {
                    size_bytes: 1 << 20,
                    mode: 0o700,
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let spec = spec_with(&Config::default(), &hc, &mounts);
        assert_eq!(options(&spec, "/data"), ["rbind", "rprivate", "ro"]);
        assert_eq!(options(&spec, "/data/sub"), ["rbind", "rslave"]);
        let all = spec.mounts().as_ref().unwrap();
        let at = |d: &str| {
            all.iter()
                .position(|m| m.destination() == Path::new(d))
                .unwrap()
        };
        assert!(at("/data") < at("/data/sub"));
        // The user's /dev/shm replaces the default one.
        assert_eq!(
            all.iter()
                .filter(|m| m.destination() == Path::new("/dev/shm"))
                .count(),
            1
        );
        assert_eq!(
            find_mount(&spec, "/dev/shm").unwrap().typ().as_deref(),
            Some("bind")
        );

        assert_eq!(
            options(&spec, "/run"),
            [
                "nosuid",
                "nodev",
                "rprivate",
                "size=64m",
                "mode=1777",
                "exec"
            ]
        );
        assert_eq!(
            find_mount(&spec, "/run").unwrap().typ().as_deref(),
            Some("tmpfs")
        );
        assert_eq!(
            options(&spec, "/cache"),
            [
                "noexec",
                "nosuid",
                "nodev",
                "rprivate",
                "size=1048576",
                "mode=700",
                "ro"
            ]
        );
    }

    #[test]
    fn shm_size_and_sysctls() {
        let hc = HostConfig {
            shm_size: 128 * MIB,
            sysctls: Some([("net.ipv4.ip_forward".to_string(), "1".to_string())].into()),
            ..Default::default()
        };
        let spec = spec_of(&hc);
        assert!(options(&spec, "/dev/shm").contains(&format!("size={}", 128 * MIB)));
        let sysctl = linux(&spec).sysctl().as_ref().unwrap();
        assert_eq!(
            sysctl.get("net.ipv4.ip_forward").map(String::as_str),
            Some("1")
        );
    }

    #[test]
    fn validation_messages() {
        let hc = |f: fn(&mut HostConfig)| {
            let mut hc = HostConfig::default();
            f(&mut hc);
            hc
        };
        assert!(validate_on(&HostConfig::default(), &host()).is_ok());
        assert!(validate_on(&hc(|h| h.pids_limit = Some(-1)), &host()).is_ok());
        assert_eq!(
            err(&hc(|h| h.memory = 4 * MIB)),
            "Minimum memory limit allowed is 6MB"
        );
        assert_eq!(
            err(&hc(|h| {
                h.memory = 64 * MIB;
                h.memory_swap = 32 * MIB;
            })),
            "Minimum memoryswap limit should be larger than memory limit, see usage"
        );
        assert_eq!(
            err(&hc(|h| {
                h.nano_cpus = 1_000_000_000;
                h.cpu_period = 100_000;
            })),
            "Conflicting options: Nano CPUs and CPU Period cannot both be set"
        );
        assert_eq!(
            err(&hc(|h| {
                h.nano_cpus = 1_000_000_000;
                h.cpu_quota = 100_000;
            })),
            "Conflicting options: Nano CPUs and CPU Quota cannot both be set"
        );
        assert_eq!(
            err(&hc(|h| h.nano_cpus = 5_000_000_000)),
            "Range of CPUs is from 0.01 to 4.00, as there are only 4 CPUs available"
        );
        assert_eq!(
            err(&hc(|h| h.cpu_quota = 999)),
            "CPU cfs quota can not be less than 1ms (i.e. 1000)"
        );
        assert_eq!(
            err(&hc(|h| h.cpuset_cpus = "1-x".into())),
            "Invalid value 1-x for cpuset cpus"
        );
        assert_eq!(
            err(&hc(|h| h.cpuset_cpus = "2,7".into())),
            "Requested CPUs are not available - requested 2,7, available: 0-3"
        );
        assert_eq!(
            err(&hc(|h| h.cap_add = Some(vec!["FOO".into()]))),
            "unknown capability: \"CAP_FOO\""
        );
        assert_eq!(
            err(&hc(|h| h.shm_size = -1)),
            "SHM size can not be less than 0"
        );
        assert_eq!(
            err(&hc(|h| h.memory_swappiness = Some(101))),
            "Invalid value: 101, valid memory swappiness range is 0-100"
        );
        assert_eq!(
            err(&hc(|h| h.blkio_weight = 5)),
            "Range of blkio weight is from 10 to 1000"
        );
        assert_eq!(parse_list("0-2,4"), Some(vec![0, 1, 2, 4]));
        assert_eq!(parse_list("3-1"), None);
        // No machine has these, and they must cost nothing to refuse.
        assert_eq!(parse_list("4,0-2,1"), Some(vec![0, 1, 2, 4]));
        assert_eq!(parse_list("0-4294967295"), None);
        assert_eq!(parse_list("8192"), None);
        assert_eq!(
            err(&hc(|h| h.cpuset_cpus = "0-4294967295".into())),
            "Invalid value 0-4294967295 for cpuset cpus"
        );
    }

    #[test]
    fn tmpfs_option_merge() {
        let merged = tmpfs_options(&strings(&["exec", "size=1m", "size=2m", "ro"]));
        assert_eq!(
            merged,
            ["nosuid", "nodev", "rprivate", "exec", "size=2m", "ro"]
        );
    }
}
