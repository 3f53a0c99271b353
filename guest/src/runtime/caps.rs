//! Linux capabilities of a container's process, with Docker's rules.
//!
//! A container starts with Docker's default set (14 capabilities). `CapAdd`
//! and `CapDrop` adjust it: names are case-insensitive, with or without the
//! `CAP_` prefix, and `ALL` stands for every capability the kernel knows.
//! `--privileged` gets every capability the running kernel supports.
//!
//! The result is one set, used as bounding, effective and permitted set of
//! the process (inheritable and ambient stay empty), as Docker does. This
//! module does not apply capabilities; libcontainer does, from the spec.

use oci_spec::runtime::Capability;

/// Every capability with its kernel number, in number order.
const KNOWN: [(&str, Capability); 41] = [
    ("CAP_CHOWN", Capability::Chown),
    ("CAP_DAC_OVERRIDE", Capability::DacOverride),
    ("CAP_DAC_READ_SEARCH", Capability::DacReadSearch),
    ("CAP_FOWNER", Capability::Fowner),
    ("CAP_FSETID", Capability::Fsetid),
    ("CAP_KILL", Capability::Kill),
    ("CAP_SETGID", Capability::Setgid),
    ("CAP_SETUID", Capability::Setuid),
    ("CAP_SETPCAP", Capability::Setpcap),
    ("CAP_LINUX_IMMUTABLE", Capability::LinuxImmutable),
    ("CAP_NET_BIND_SERVICE", Capability::NetBindService),
    ("CAP_NET_BROADCAST", Capability::NetBroadcast),
    ("CAP_NET_ADMIN", Capability::NetAdmin),
    ("CAP_NET_RAW", Capability::NetRaw),
    ("CAP_IPC_LOCK", Capability::IpcLock),
    ("CAP_IPC_OWNER", Capability::IpcOwner),
    ("CAP_SYS_MODULE", Capability::SysModule),
    ("CAP_SYS_RAWIO", Capability::SysRawio),
    ("CAP_SYS_CHROOT", Capability::SysChroot),
    ("CAP_SYS_PTRACE", Capability::SysPtrace),
    ("CAP_SYS_PACCT", Capability::SysPacct),
    ("CAP_SYS_ADMIN", Capability::SysAdmin),
    ("CAP_SYS_BOOT", Capability::SysBoot),
    ("CAP_SYS_NICE", Capability::SysNice),
    ("CAP_SYS_RESOURCE", Capability::SysResource),
    ("CAP_SYS_TIME", Capability::SysTime),
    ("CAP_SYS_TTY_CONFIG", Capability::SysTtyConfig),
    ("CAP_MKNOD", Capability::Mknod),
    ("CAP_LEASE", Capability::Lease),
    ("CAP_AUDIT_WRITE", Capability::AuditWrite),
    ("CAP_AUDIT_CONTROL", Capability::AuditControl),
    ("CAP_SETFCAP", Capability::Setfcap),
    ("CAP_MAC_OVERRIDE", Capability::MacOverride),
    ("CAP_MAC_ADMIN", Capability::MacAdmin),
    ("CAP_SYSLOG", Capability::Syslog),
    ("CAP_WAKE_ALARM", Capability::WakeAlarm),
    ("CAP_BLOCK_SUSPEND", Capability::BlockSuspend),
    ("CAP_AUDIT_READ", Capability::AuditRead),
    ("CAP_PERFMON", Capability::Perfmon),
    ("CAP_BPF", Capability::Bpf),
    ("CAP_CHECKPOINT_RESTORE", Capability::CheckpointRestore),
];

/// Docker's default capabilities, in Docker's order.
pub const DEFAULT: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Where the kernel tells its highest capability number.
const CAP_LAST_CAP: &str = "/proc/sys/kernel/cap_last_cap";

/// Errors of capability names.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CapsError {
    /// A `CapAdd`/`CapDrop` entry names no capability (Docker's message).
    #[error("unknown capability: {0:?}")]
    Unknown(String),
}

/// One normalized `CapAdd`/`CapDrop` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    All,
    Cap(Capability),
}

/// Parses one entry: `ALL`, or a capability name in any case, with or
/// without `CAP_`.
fn parse(name: &str) -> Result<Entry, CapsError> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(Entry::All);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    KNOWN
        .iter()
        .find(|(known, _)| *known == full)
        .map(|(_, cap)| Entry::Cap(*cap))
        .ok_or(CapsError::Unknown(full))
}

fn parse_all(names: &[String]) -> Result<Vec<Entry>, CapsError> {
    names.iter().map(|n| parse(n)).collect()
}

/// Checks every `CapAdd`/`CapDrop` name; called at container create.
pub fn validate(add: &[String], drop: &[String]) -> Result<(), CapsError> {
    parse_all(add)?;
    parse_all(drop)?;
    Ok(())
}

/// The highest capability number of the running kernel (all known ones when
/// the kernel does not say).
pub fn kernel_last_cap() -> u32 {
    std::fs::read_to_string(CAP_LAST_CAP)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(KNOWN.len() as u32 - 1)
}

/// Every capability up to `last_cap`, in number order.
pub fn all(last_cap: u32) -> Vec<Capability> {
    KNOWN
        .iter()
        .enumerate()
        .filter(|(number, _)| *number as u32 <= last_cap)
        .map(|(_, (_, cap))| *cap)
        .collect()
}

/// The engine's own bounding set as a mask by capability number (every bit
/// when `/proc/self/status` cannot be read). A container cannot be granted a
/// capability outside it: the kernel refuses the `capset`.
pub fn own_bounding_set() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX)
}

/// Keeps the capabilities whose bit is set in `bounding`, so `ALL` and
/// `--privileged` mean every capability the engine can hand out (the engine
/// may itself run without some, e.g. in a restricted VM or container).
pub fn within(caps: Vec<Capability>, bounding: u64) -> Vec<Capability> {
    caps.into_iter()
        .filter(|cap| {
            KNOWN
                .iter()
                .position(|(_, known)| known == cap)
                .is_some_and(|number| bounding & (1 << number) != 0)
        })
        .collect()
}

/// The `CAP_…` name of a capability.
pub fn name(cap: Capability) -> &'static str {
    KNOWN
        .iter()
        .find(|(_, known)| *known == cap)
        .map_or("", |(name, _)| name)
}

/// The capability set of a container's process, by Docker's rules: all of
/// them when privileged; else `ALL` in `add` means all but `drop`, `ALL` in
/// `drop` means exactly `add`, and otherwise the defaults minus `drop` plus
/// `add` (a name in both ends up present, as with Docker). `last_cap` is the kernel's highest capability number.
pub fn resolve(
    add: &[String],
    drop: &[String],
    privileged: bool,
    last_cap: u32,
) -> Result<Vec<Capability>, CapsError> {
    let add = parse_all(add)?;
    let drop = parse_all(drop)?;
    if privileged {
        return Ok(all(last_cap));
    }
    let dropped = |cap: &Capability| drop.contains(&Entry::Cap(*cap));
    let mut caps: Vec<Capability> = if add.contains(&Entry::All) {
        all(last_cap).into_iter().filter(|c| !dropped(c)).collect()
    } else if drop.contains(&Entry::All) {
        Vec::new()
    } else {
        DEFAULT.into_iter().filter(|c| !dropped(c)).collect()
    };
    // Docker appends the added capabilities last: an add beats a drop.
    for entry in add {
        if let Entry::Cap(cap) = entry {
            if !caps.contains(&cap) {
                caps.push(cap);
            }
        }
    }
    Ok(caps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn table_is_in_kernel_order() {
        // Spot checks of kernel numbers (linux/capability.h).
        assert_eq!(KNOWN[0].0, "CAP_CHOWN");
        assert_eq!(KNOWN[21].0, "CAP_SYS_ADMIN");
        assert_eq!(KNOWN[27].0, "CAP_MKNOD");
        assert_eq!(KNOWN[38].0, "CAP_PERFMON");
        assert_eq!(KNOWN[40].0, "CAP_CHECKPOINT_RESTORE");
    }

    #[test]
    fn defaults_without_add_or_drop() {
        let caps = resolve(&[], &[], false, 40).unwrap();
        assert_eq!(caps, DEFAULT.to_vec());
    }

    #[test]
    fn drop_all_then_add_gives_exactly_the_added() {
        let caps = resolve(&strings(&["NET_ADMIN"]), &strings(&["ALL"]), false, 40).unwrap();
        assert_eq!(caps, vec![Capability::NetAdmin]);
    }

    #[test]
    fn names_are_case_insensitive_with_or_without_prefix() {
        let caps = resolve(
            &strings(&["sys_admin", "Cap_Net_Admin"]),
            &strings(&["cap_chown", "MKNOD"]),
            false,
            40,
        )
        .unwrap();
        assert!(caps.contains(&Capability::SysAdmin));
        assert!(caps.contains(&Capability::NetAdmin));
        assert!(!caps.contains(&Capability::Chown));
        assert!(!caps.contains(&Capability::Mknod));
        assert_eq!(caps.len(), DEFAULT.len() - 2 + 2);
    }

    #[test]
    fn add_all_minus_drop() {
        let caps = resolve(&strings(&["all"]), &strings(&["SYS_ADMIN"]), false, 40).unwrap();
        assert_eq!(caps.len(), 40);
        assert!(!caps.contains(&Capability::SysAdmin));
    }

    #[test]
    fn privileged_gets_what_the_kernel_knows() {
        assert_eq!(resolve(&[], &[], true, 40).unwrap().len(), 41);
        let caps = resolve(&[], &strings(&["ALL"]), true, 37).unwrap();
        assert_eq!(caps.len(), 38);
        assert!(!caps.contains(&Capability::Bpf));
    }

    #[test]
    fn unknown_names_fail_with_dockers_message() {
        let err = resolve(&strings(&["FOO"]), &[], false, 40).unwrap_err();
        assert_eq!(err.to_string(), "unknown capability: \"CAP_FOO\"");
        assert!(validate(&[], &strings(&["cap_bar"])).is_err());
        assert!(validate(&strings(&["net_admin", "ALL"]), &strings(&["all"])).is_ok());
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(name(Capability::NetAdmin), "CAP_NET_ADMIN");
        assert_eq!(all(40).len(), 41);
        let without_sys_resource = within(all(40), ((1 << 41) - 1) & !(1 << 24));
        assert_eq!(without_sys_resource.len(), 40);
        assert!(!without_sys_resource.contains(&Capability::SysResource));
    }
}
