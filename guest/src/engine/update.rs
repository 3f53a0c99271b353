//! `update`: change a container's resource limits and restart policy.
//!
//! As dockerd: the request is checked on its own (Docker's messages, 400),
//! then merged into the record's `HostConfig` field by field (a zero leaves a
//! value as it is) with dockerd's conflict rules; a running or paused
//! container gets the merged limits written to its cgroup at once, and the
//! record is saved, so inspect shows them and the next start (which builds
//! its cgroup from `HostConfig`) keeps them. The restart policy is read from
//! the record when the container exits, so a new one applies to the current
//! run. Nothing changes unless everything does: a failed cgroup write puts
//! the old values back, and a failed save rewrites the old limits.

use serde::Deserialize;

use super::{Engine, EngineError};
use crate::model::{HostConfig, RestartPolicy};
use crate::runtime::cgroups::{Hierarchy, Limits};
use crate::runtime::spec::SpecError;

/// The CFS period `NanoCpus` is expressed over (µs), as Docker uses.
const NANO_CPUS_PERIOD: u64 = 100_000;

/// The body of `POST /containers/{id}/update`: Docker's `UpdateConfig`.
/// Fields the engine does not change (`KernelMemory`, removed in API 1.42,
/// and the device lists) are read and ignored, as current moby does.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct UpdateRequest {
    pub cpu_shares: i64,
    pub memory: i64,
    pub memory_swap: i64,
    pub memory_reservation: i64,
    pub nano_cpus: i64,
    pub cpu_quota: i64,
    pub cpu_period: i64,
    pub cpu_realtime_period: i64,
    pub cpu_realtime_runtime: i64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    pub pids_limit: Option<i64>,
    pub blkio_weight: u16,
    pub kernel_memory: i64,
    pub restart_policy: RestartPolicy,
}

impl UpdateRequest {
    /// The request as a `HostConfig` of its own, for Docker's checks.
    fn as_host_config(&self) -> HostConfig {
        HostConfig {
            cpu_shares: self.cpu_shares,
            memory: self.memory,
            memory_swap: self.memory_swap,
            memory_reservation: self.memory_reservation,
            nano_cpus: self.nano_cpus,
            cpu_quota: self.cpu_quota,
            cpu_period: self.cpu_period,
            cpu_realtime_period: self.cpu_realtime_period,
            cpu_realtime_runtime: self.cpu_realtime_runtime,
            cpuset_cpus: self.cpuset_cpus.clone(),
            cpuset_mems: self.cpuset_mems.clone(),
            pids_limit: self.pids_limit,
            blkio_weight: self.blkio_weight,
            restart_policy: self.restart_policy.clone(),
            ..HostConfig::default()
        }
    }
}

/// Docker's checks of the request alone (dockerd's `verifyContainerSettings`
/// with `update` set: a swap limit without a memory limit is allowed).
fn check_request(request: &UpdateRequest, hierarchy: &Hierarchy) -> Result<(), EngineError> {
    let mut asked = request.as_host_config();
    super::create::validate_host_config(&asked)?;
    if asked.memory == 0 {
        asked.memory_swap = 0;
    }
    crate::runtime::spec::validate(&asked).map_err(|e| {
        EngineError::InvalidParameter(match &e {
            // dockerd adds the parser's words to these two.
            SpecError::CpusetCpusSyntax(list) | SpecError::CpusetMemsSyntax(list) => {
                format!("{e}: invalid format: {list}")
            }
            _ => e.to_string(),
        })
    })?;
    let realtime = request.cpu_realtime_period > 0 || request.cpu_realtime_runtime > 0;
    if realtime && !hierarchy.has_cpu_realtime() {
        return Err(EngineError::InvalidParameter(
            "Your kernel does not support CPU real-time scheduler".to_owned(),
        ));
    }
    if request.cpu_realtime_period != 0
        && request.cpu_realtime_runtime != 0
        && request.cpu_realtime_runtime > request.cpu_realtime_period
    {
        return Err(EngineError::InvalidParameter(
            "cpu-rt-runtime cannot be higher than cpu-rt-period".to_owned(),
        ));
    }
    Ok(())
}

/// dockerd's `UpdateContainer`: the request merged into the container's
/// `HostConfig`, refusing what conflicts with what is already set.
pub fn merge(
    current: &HostConfig,
    request: &UpdateRequest,
    id: &str,
) -> Result<HostConfig, EngineError> {
    let refuse = |why: &str| {
        Err(EngineError::InvalidParameter(format!(
            "Cannot update container {id}: {why}"
        )))
    };
    let mut hc = current.clone();
    if request.nano_cpus > 0 && hc.cpu_period > 0 {
        return refuse(
            "Conflicting options: Nano CPUs cannot be updated as CPU Period has already been set",
        );
    }
    if request.nano_cpus > 0 && hc.cpu_quota > 0 {
        return refuse(
            "Conflicting options: Nano CPUs cannot be updated as CPU Quota has already been set",
        );
    }
    if request.cpu_period > 0 && hc.nano_cpus > 0 {
        return refuse(
            "Conflicting options: CPU Period cannot be updated as NanoCPUs has already been set",
        );
    }
    if request.cpu_quota > 0 && hc.nano_cpus > 0 {
        return refuse(
            "Conflicting options: CPU Quota cannot be updated as NanoCPUs has already been set",
        );
    }
    // dockerd stores twice the memory as the swap limit of `--memory`
    // without `--memory-swap`; the record keeps 0 there, so count it here.
    let swap = if hc.memory > 0 && hc.memory_swap == 0 {
        2 * hc.memory
    } else {
        hc.memory_swap
    };
    if request.memory != 0 {
        if request.memory > swap && request.memory_swap == 0 {
            return refuse("Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time");
        }
        hc.memory = request.memory;
        hc.memory_swap = swap;
    }
    let set = |field: &mut i64, value: i64| {
        if value != 0 {
            *field = value;
        }
    };
    set(&mut hc.memory_swap, request.memory_swap);
    set(&mut hc.memory_reservation, request.memory_reservation);
    set(&mut hc.cpu_shares, request.cpu_shares);
    set(&mut hc.nano_cpus, request.nano_cpus);
    set(&mut hc.cpu_period, request.cpu_period);
    set(&mut hc.cpu_quota, request.cpu_quota);
    set(&mut hc.cpu_realtime_period, request.cpu_realtime_period);
    set(&mut hc.cpu_realtime_runtime, request.cpu_realtime_runtime);
    if request.blkio_weight != 0 {
        hc.blkio_weight = request.blkio_weight;
    }
    if !request.cpuset_cpus.is_empty() {
        hc.cpuset_cpus.clone_from(&request.cpuset_cpus);
    }
    if !request.cpuset_mems.is_empty() {
        hc.cpuset_mems.clone_from(&request.cpuset_mems);
    }
    if let Some(limit) = request.pids_limit {
        // 0 and any negative value mean "no limit" here, as in dockerd.
        hc.pids_limit = Some(limit.max(0));
    }
    if !request.restart_policy.name.is_empty() {
        if current.auto_remove && request.restart_policy.name != "no" {
            return refuse(
                "Restart policy cannot be updated because AutoRemove is enabled for the container",
            );
        }
        hc.restart_policy = request.restart_policy.clone();
    }
    if hc.memory > 0 && hc.memory_swap > 0 && hc.memory_swap < hc.memory {
        return Err(EngineError::InvalidParameter(
            "Minimum memoryswap limit should be larger than memory limit, see usage".to_owned(),
        ));
    }
    if hc.memory > 0 && hc.memory_reservation > hc.memory {
        return Err(EngineError::InvalidParameter(
            "Minimum memory limit can not be less than memory reservation limit, see usage"
                .to_owned(),
        ));
    }
    Ok(hc)
}

/// The cgroup values of `hc` for the limits `request` touches, as the next
/// start would derive them (see `runtime::spec::resources`).
pub fn limits(request: &UpdateRequest, hc: &HostConfig) -> Limits {
    let mut limits = Limits::default();
    if request.memory != 0 || request.memory_swap != 0 {
        limits.memory = Some(if hc.memory > 0 { hc.memory } else { -1 });
        limits.memory_swap = Some(match (hc.memory, hc.memory_swap) {
            (m, 0) if m > 0 => 2 * m,
            (_, s) if s > 0 => s,
            _ => -1,
        });
    }
    if request.memory_reservation != 0 {
        limits.memory_reservation = Some(hc.memory_reservation);
    }
    if request.cpu_shares != 0 {
        limits.cpu_shares = u64::try_from(hc.cpu_shares).ok();
    }
    if request.nano_cpus != 0 || request.cpu_quota != 0 || request.cpu_period != 0 {
        if hc.nano_cpus > 0 {
            limits.cpu_period = Some(NANO_CPUS_PERIOD);
            limits.cpu_quota = Some(hc.nano_cpus * NANO_CPUS_PERIOD as i64 / 1_000_000_000);
        } else {
            limits.cpu_quota = Some(if hc.cpu_quota != 0 { hc.cpu_quota } else { -1 });
            limits.cpu_period = u64::try_from(hc.cpu_period).ok().filter(|p| *p > 0);
        }
    }
    if request.cpu_realtime_period != 0 {
        limits.cpu_rt_period = u64::try_from(hc.cpu_realtime_period).ok();
    }
    if request.cpu_realtime_runtime != 0 {
        limits.cpu_rt_runtime = Some(hc.cpu_realtime_runtime);
    }
    if !request.cpuset_cpus.is_empty() {
        limits.cpuset_cpus = Some(hc.cpuset_cpus.clone());
    }
    if !request.cpuset_mems.is_empty() {
        limits.cpuset_mems = Some(hc.cpuset_mems.clone());
    }
    if request.pids_limit.is_some() {
        limits.pids = Some(hc.pids_limit.unwrap_or(0));
    }
    if request.blkio_weight != 0 {
        limits.blkio_weight = Some(hc.blkio_weight);
    }
    limits
}

impl Engine {
    /// `POST /containers/{id}/update`; answers dockerd's warnings.
    pub async fn update(
        &self,
        key: &str,
        mut request: UpdateRequest,
    ) -> Result<Vec<String>, EngineError> {
        let handle = self.container(key).await?;
        let hierarchy = Hierarchy::detect();
        request.kernel_memory = 0;
        let mut warnings = Vec::new();
        // Before the range check, as dockerd: an unsupported weight is
        // dropped whatever its value.
        if request.blkio_weight > 0 && !hierarchy.has_blkio_weight() {
            warnings.push("Your kernel does not support Block I/O weight or the cgroup is not mounted. Weight discarded.".to_owned());
            request.blkio_weight = 0;
        }
        check_request(&request, &hierarchy)?;
        let mut record = handle.record.lock().await;
        if matches!(record.state.status.as_str(), "removing" | "dead") {
            return Err(EngineError::Conflict(format!(
                "Cannot update container {}: container is marked for removal and cannot be \"update\"",
                record.id
            )));
        }
        let old = record.host_config.clone();
        let merged = merge(&old, &request, &record.id)?;
        let live = record.state.running && record.state.status != "restarting";
        let cgroup = hierarchy.cgroup(&format!(
            "/{}/{}",
            self.options.cgroup_parent.trim_matches('/'),
            record.id
        ));
        if live {
            cgroup.apply(&limits(&request, &merged)).map_err(|e| {
                EngineError::Runtime(format!(
                    "Cannot update container {}: {}",
                    record.id,
                    crate::state::error_chain(&e)
                ))
            })?;
        }
        record.host_config = merged;
        if let Err(e) = self.save(&record) {
            record.host_config = old;
            if live {
                if let Err(undo) = cgroup.apply(&limits(&request, &record.host_config)) {
                    tracing::error!(id = %record.short_id(), error = %undo, "cannot restore the limits after a failed save");
                }
            }
            return Err(e);
        }
        tracing::info!(id = %record.short_id(), live, "container updated");
        self.publish_container(&record, "update", Default::default());
        Ok(warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> UpdateRequest {
        serde_json::from_str(json).unwrap()
    }

    fn message(result: Result<HostConfig, EngineError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn a_memory_limit_alone_needs_room_under_the_swap_limit() {
        let none = HostConfig::default();
        assert_eq!(
            message(merge(&none, &request(r#"{"Memory": 67108864}"#), "c1")),
            "Cannot update container c1: Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time"
        );
        let both = merge(
            &none,
            &request(r#"{"Memory": 67108864, "MemorySwap": 134217728}"#),
            "c1",
        )
        .unwrap();
        assert_eq!((both.memory, both.memory_swap), (64 << 20, 128 << 20));
        // `-m 32m` counts as 64m of memory plus swap, as dockerd stores it.
        let run_m = HostConfig {
            memory: 32 << 20,
            ..HostConfig::default()
        };
        let raised = merge(&run_m, &request(r#"{"Memory": 67108864}"#), "c1").unwrap();
        assert_eq!((raised.memory, raised.memory_swap), (64 << 20, 64 << 20));
    }

    #[test]
    fn nano_cpus_and_cfs_settings_exclude_each_other_across_updates() {
        let quota = HostConfig {
            cpu_quota: 50_000,
            ..HostConfig::default()
        };
        assert!(
            message(merge(&quota, &request(r#"{"NanoCpus": 500000000}"#), "c"))
                .ends_with("Nano CPUs cannot be updated as CPU Quota has already been set")
        );
        let nano = HostConfig {
            nano_cpus: 1_000_000_000,
            ..HostConfig::default()
        };
        assert!(
            message(merge(&nano, &request(r#"{"CpuPeriod": 50000}"#), "c"))
                .ends_with("CPU Period cannot be updated as NanoCPUs has already been set")
        );
    }

    #[test]
    fn restart_policy_of_an_auto_remove_container_is_refused() {
        let rm = HostConfig {
            auto_remove: true,
            ..HostConfig::default()
        };
        assert!(message(merge(
            &rm,
            &request(r#"{"RestartPolicy": {"Name": "always"}}"#),
            "c"
        ))
        .ends_with(
            "Restart policy cannot be updated because AutoRemove is enabled for the container"
        ));
        let no = merge(&rm, &request(r#"{"RestartPolicy": {"Name": "no"}}"#), "c").unwrap();
        assert_eq!(no.restart_policy.name, "no");
    }

    #[test]
    fn zero_fields_leave_values_and_pids_zero_means_unlimited() {
        let hc = HostConfig {
            cpu_shares: 512,
            pids_limit: Some(10),
            cpuset_cpus: "0".into(),
            ..HostConfig::default()
        };
        let merged = merge(&hc, &request(r#"{"PidsLimit": -1, "CpuShares": 0}"#), "c").unwrap();
        assert_eq!(merged.cpu_shares, 512);
        assert_eq!(merged.cpuset_cpus, "0");
        assert_eq!(merged.pids_limit, Some(0));
        let limits = limits(&request(r#"{"PidsLimit": -1}"#), &merged);
        assert_eq!(
            limits,
            Limits {
                pids: Some(0),
                ..Limits::default()
            }
        );
    }

    #[test]
    fn limits_follow_the_merged_config_as_a_start_would() {
        let hc = HostConfig {
            memory: 64 << 20,
            nano_cpus: 1_500_000_000,
            ..HostConfig::default()
        };
        let limits = limits(&request(r#"{"Memory": 67108864, "NanoCpus": 1}"#), &hc);
        assert_eq!(limits.memory, Some(64 << 20));
        assert_eq!(limits.memory_swap, Some(128 << 20));
        assert_eq!(limits.cpu_quota, Some(150_000));
        assert_eq!(limits.cpu_period, Some(100_000));
        assert_eq!(limits.pids, None);
        let unlimited = super::limits(&request(r#"{"CpuQuota": -1}"#), &HostConfig::default());
        assert_eq!(unlimited.cpu_quota, Some(-1));
    }

    #[test]
    fn the_request_is_checked_with_dockers_messages() {
        let v2 = Hierarchy::V2("/nonexistent".into());
        let check = |json: &str| {
            check_request(&request(json), &v2)
                .err()
                .map(|e| e.to_string())
        };
        assert_eq!(
            check(r#"{"Memory": 1024}"#).unwrap(),
            "Minimum memory limit allowed is 6MB"
        );
        assert_eq!(
            check(r#"{"Memory": 67108864, "MemorySwap": 1048576}"#).unwrap(),
            "Minimum memoryswap limit should be larger than memory limit, see usage"
        );
        assert_eq!(
            check(r#"{"NanoCpus": 1000000000, "CpuQuota": 50000}"#).unwrap(),
            "Conflicting options: Nano CPUs and CPU Quota cannot both be set"
        );
        assert_eq!(
            check(r#"{"CpusetCpus": "0-a"}"#).unwrap(),
            "Invalid value 0-a for cpuset cpus: invalid format: 0-a"
        );
        assert_eq!(
            check(r#"{"RestartPolicy": {"Name": "sometimes"}}"#).unwrap(),
            "invalid restart policy 'sometimes'"
        );
        assert_eq!(
            check(r#"{"CpuRealtimeRuntime": 1000}"#).unwrap(),
            "Your kernel does not support CPU real-time scheduler"
        );
        // Swap without memory is fine in an update.
        assert_eq!(check(r#"{"MemorySwap": 134217728}"#), None);
        assert_eq!(check(r#"{"PidsLimit": 0, "KernelMemory": 1}"#), None);
    }
}
