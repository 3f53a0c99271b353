//! The cgroup side of a container: resource limits and device rules.

use super::*;

/// The cgroup resources, with Docker's conversions.
pub(super) fn resources(hc: &HostConfig, host: &Host) -> LinuxResources {
    let mut r = LinuxResources::default();

    let mut memory = LinuxMemory::default();
    if hc.memory > 0 {
        memory.set_limit(Some(hc.memory));
        memory.set_swap(Some(match hc.memory_swap {
            0 => 2 * hc.memory,
            swap => swap,
        }));
    }
    if hc.memory_reservation > 0 {
        memory.set_reservation(Some(hc.memory_reservation));
    }
    if !host.cgroup_v2 {
        memory.set_swappiness(hc.memory_swappiness.filter(|s| *s >= 0).map(|s| s as u64));
    }
    if hc.oom_kill_disable == Some(true) {
        memory.set_disable_oom_killer(Some(true));
    }
    if memory != LinuxMemory::default() {
        r.set_memory(Some(memory));
    }

    let mut cpu = LinuxCpu::default();
    if hc.cpu_shares > 0 {
        cpu.set_shares(Some(hc.cpu_shares as u64));
    }
    if hc.nano_cpus > 0 {
        cpu.set_period(Some(NANO_CPUS_PERIOD));
        cpu.set_quota(Some(hc.nano_cpus * NANO_CPUS_PERIOD as i64 / 1_000_000_000));
    } else {
        cpu.set_quota((hc.cpu_quota != 0).then_some(hc.cpu_quota));
        cpu.set_period((hc.cpu_period > 0).then_some(hc.cpu_period as u64));
    }
    cpu.set_cpus((!hc.cpuset_cpus.is_empty()).then(|| hc.cpuset_cpus.clone()));
    cpu.set_mems((!hc.cpuset_mems.is_empty()).then(|| hc.cpuset_mems.clone()));
    if cpu != LinuxCpu::default() {
        r.set_cpu(Some(cpu));
    }

    if let Some(limit) = hc.pids_limit {
        let mut pids = LinuxPids::default();
        pids.set_limit(if limit > 0 { limit } else { -1 });
        r.set_pids(Some(pids));
    }
    if hc.blkio_weight > 0 {
        let mut blkio = oci_spec::runtime::LinuxBlockIo::default();
        blkio.set_weight(Some(hc.blkio_weight));
        r.set_block_io(Some(blkio));
    }
    r.set_devices(Some(device_rules(hc.privileged)));
    r
}

/// Device cgroup rules: deny all, then Docker's defaults; everything when
/// privileged.
pub(super) fn device_rules(privileged: bool) -> Vec<LinuxDeviceCgroup> {
    let rule = |allow: bool, typ: Option<LinuxDeviceType>, major, minor, access: &str| {
        let mut d = LinuxDeviceCgroup::default();
        d.set_allow(allow);
        d.set_typ(typ);
        d.set_major(major);
        d.set_minor(minor);
        d.set_access(Some(access.to_string()));
        d
    };
    if privileged {
        return vec![rule(true, Some(LinuxDeviceType::A), None, None, "rwm")];
    }
    let mut out = vec![
        rule(false, Some(LinuxDeviceType::A), None, None, "rwm"),
        rule(true, Some(LinuxDeviceType::C), None, None, "m"),
        rule(true, Some(LinuxDeviceType::B), None, None, "m"),
    ];
    for (major, minor) in ALLOWED_DEVICES {
        out.push(rule(
            true,
            Some(LinuxDeviceType::C),
            Some(major),
            minor,
            "rwm",
        ));
    }
    out
}
