//! Docker's checks of a `HostConfig` at create, with Docker's messages, and
//! the parsing of `--security-opt`.

use super::*;

/// The highest CPU or memory node a cpuset list may name: Linux's largest
/// `NR_CPUS` is 8192. It also bounds what parsing a list costs (`0-4294967295`
/// once asked for 16 GiB; found by the `create_body` fuzz target).
const MAX_LIST_MEMBER: usize = 8191;

/// Parses a cpuset list (`0-2,4`) into its members, in order and once each;
/// `None` when malformed or naming a member above [`MAX_LIST_MEMBER`].
pub(super) fn parse_list(list: &str) -> Option<Vec<u32>> {
    let mut members = vec![false; MAX_LIST_MEMBER + 1];
    for part in list.split(',') {
        let (a, b): (usize, usize) = match part.split_once('-') {
            Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
            None => {
                let n = part.parse().ok()?;
                (n, n)
            }
        };
        if a > b || b > MAX_LIST_MEMBER {
            return None;
        }
        members[a..=b].fill(true);
    }
    Some(
        (0..=MAX_LIST_MEMBER as u32)
            .filter(|&n| members[n as usize])
            .collect(),
    )
}

/// Docker's switches of `SecurityOpt`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct SecurityOpts {
    pub(super) no_new_privileges: bool,
    pub(super) seccomp_unconfined: bool,
    pub(super) systempaths_unconfined: bool,
    pub(super) writable_cgroups: bool,
}

pub(super) fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Parses `SecurityOpt` as dockerd does (`key=value`, or the old `key:value`).
pub(super) fn security_opts(host_config: &HostConfig) -> Result<SecurityOpts, SpecError> {
    let mut out = SecurityOpts::default();
    for opt in host_config.security_opt.as_deref().unwrap_or_default() {
        if opt == "no-new-privileges" {
            out.no_new_privileges = true;
            continue;
        }
        if opt == "disable" {
            continue;
        }
        let bad = |step| SpecError::SecurityOpt {
            step,
            opt: opt.clone(),
        };
        let (key, value) = opt
            .split_once('=')
            .or_else(|| opt.split_once(':'))
            .ok_or_else(|| bad(1))?;
        match key {
            "label" | "apparmor" => {}
            "seccomp" => match value {
                "unconfined" => out.seccomp_unconfined = true,
                "" | "builtin" | "default" => {}
                _ => return Err(SpecError::SeccompProfile),
            },
            "no-new-privileges" => {
                out.no_new_privileges = parse_bool(value).ok_or_else(|| bad(2))?
            }
            "systempaths" if value == "unconfined" => out.systempaths_unconfined = true,
            "writable-cgroups" => out.writable_cgroups = parse_bool(value).ok_or_else(|| bad(2))?,
            _ => return Err(bad(2)),
        }
    }
    Ok(out)
}

/// Checks a `HostConfig` with Docker's rules and messages; called at
/// container create (and again by [`build`]).
pub fn validate(host_config: &HostConfig) -> Result<(), SpecError> {
    validate_on(host_config, &Host::probe())
}

pub(super) fn validate_on(hc: &HostConfig, host: &Host) -> Result<(), SpecError> {
    if hc.memory != 0 && hc.memory < MIN_MEMORY {
        return Err(SpecError::MemoryTooSmall);
    }
    if hc.memory_swap > 0 && hc.memory == 0 {
        return Err(SpecError::SwapWithoutMemory);
    }
    if hc.memory > 0 && hc.memory_swap > 0 && hc.memory_swap < hc.memory {
        return Err(SpecError::SwapBelowMemory);
    }
    if hc.memory_reservation != 0 && hc.memory_reservation < MIN_MEMORY {
        return Err(SpecError::ReservationTooSmall);
    }
    if hc.memory > 0 && hc.memory_reservation > hc.memory {
        return Err(SpecError::ReservationAboveMemory);
    }
    if let Some(s) = hc
        .memory_swappiness
        .filter(|s| *s != -1 && !(0..=100).contains(s))
    {
        return Err(SpecError::Swappiness(s));
    }
    let ncpu = parse_list(&host.cpus).map_or(1, |c| c.len());
    if hc.nano_cpus != 0 {
        if hc.cpu_period != 0 {
            return Err(SpecError::NanoCpusWithPeriod);
        }
        if hc.cpu_quota != 0 {
            return Err(SpecError::NanoCpusWithQuota);
        }
        if hc.nano_cpus < 0 || hc.nano_cpus > ncpu as i64 * 1_000_000_000 {
            return Err(SpecError::NanoCpusRange(ncpu));
        }
    }
    if hc.cpu_quota > 0 && hc.cpu_quota < 1000 {
        return Err(SpecError::CpuQuotaTooSmall);
    }
    if hc.cpu_period != 0 && !(1000..=1_000_000).contains(&hc.cpu_period) {
        return Err(SpecError::CpuPeriodRange);
    }
    check_cpuset(&hc.cpuset_cpus, &host.cpus, true)?;
    check_cpuset(&hc.cpuset_mems, &host.mems, false)?;
    if hc.blkio_weight != 0 && !(10..=1000).contains(&hc.blkio_weight) {
        return Err(SpecError::BlkioWeight);
    }
    if !(-1000..=1000).contains(&hc.oom_score_adj) {
        return Err(SpecError::OomScoreAdj(hc.oom_score_adj));
    }
    if hc.shm_size < 0 {
        return Err(SpecError::ShmSizeNegative);
    }
    caps::validate(
        hc.cap_add.as_deref().unwrap_or_default(),
        hc.cap_drop.as_deref().unwrap_or_default(),
    )?;
    security_opts(hc)?;
    for (kind, mode, allowed) in [
        ("pid", &hc.pid_mode, &["", "host", "private"][..]),
        (
            "ipc",
            &hc.ipc_mode,
            &["", "host", "private", "shareable", "none"][..],
        ),
        ("uts", &hc.uts_mode, &["", "host", "private"][..]),
        ("cgroupns", &hc.cgroupns_mode, &["", "host", "private"][..]),
    ] {
        if !allowed.contains(&mode.as_str()) {
            return Err(SpecError::NamespaceMode {
                kind,
                mode: mode.clone(),
            });
        }
    }
    rlimits(hc)?;
    Ok(())
}

/// Checks a cpuset list against what the machine has.
pub(super) fn check_cpuset(requested: &str, available: &str, cpus: bool) -> Result<(), SpecError> {
    if requested.is_empty() {
        return Ok(());
    }
    let Some(wanted) = parse_list(requested) else {
        return Err(if cpus {
            SpecError::CpusetCpusSyntax(requested.into())
        } else {
            SpecError::CpusetMemsSyntax(requested.into())
        });
    };
    let have = parse_list(available).unwrap_or_default();
    if wanted.iter().all(|c| have.contains(c)) {
        return Ok(());
    }
    let (requested, available) = (requested.to_string(), available.to_string());
    Err(if cpus {
        SpecError::CpusetCpusUnavailable {
            requested,
            available,
        }
    } else {
        SpecError::CpusetMemsUnavailable {
            requested,
            available,
        }
    })
}
