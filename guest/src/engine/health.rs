//! `HEALTHCHECK`: a container's probe, run through the exec path like
//! `docker exec` (same user, namespaces, cgroup, capabilities, seccomp), on
//! Docker's schedule, with Docker's verdicts in `State.Health`.
//!
//! One task per run of a container with a probe. It sleeps for the
//! interval (the start interval while the container is `starting` within
//! its start period), runs the probe with its timeout, and records the
//! result: exit 0 makes the container `healthy`, `retries` failures in a
//! row outside the start period make it `unhealthy`. A change of status is
//! an event (`health_status: healthy`) and is saved; the results
//! themselves, like Docker's, only live in memory. The task ends with the
//! run it was started for (the container stopped, restarted or was
//! removed); a paused container is not probed.
//!
//! A probe past its timeout is killed (through the monitor, which alone
//! knows the process is not reaped yet) and counts as a failure with exit
//! code -1. A probe's output is cut at [`MAX_OUTPUT`] bytes, so a hostile
//! one cannot grow the engine's memory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::exec::ExecConfig;
use super::record::{now_rfc3339, ContainerRecord};
use super::stream::{next_frame, Frame};
use super::{ContainerHandle, Engine, EngineError};
use crate::model::{Config, Health, HealthConfig, HealthResult};
use crate::runtime::monitor::client;
use crate::runtime::monitor::protocol::Request;
use crate::state::stream::read_frame;

/// The longest output kept from one probe (Docker's `maxOutputLen`).
pub const MAX_OUTPUT: usize = 4096;
/// Results kept in `State.Health.Log`.
const MAX_LOG: usize = 5;
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_RETRIES: i64 = 3;
/// The shortest duration a health check may set, in nanoseconds (1 ms).
const MINIMUM_NANOS: i64 = 1_000_000;
/// How long a probe may take to start, apart from its own timeout.
const START_LIMIT: Duration = Duration::from_secs(30);
/// How long a killed probe's stream may take to end.
const KILL_WAIT: Duration = Duration::from_secs(10);

pub const STARTING: &str = "starting";
pub const HEALTHY: &str = "healthy";
pub const UNHEALTHY: &str = "unhealthy";

/// Refuses what dockerd refuses in `Config.Healthcheck`, with its words.
pub fn validate(check: &HealthConfig) -> Result<(), EngineError> {
    let at_least_1ms = |name: &str, value: i64| {
        if value != 0 && value < MINIMUM_NANOS {
            Err(EngineError::InvalidParameter(format!(
                "{name} in Healthcheck cannot be less than 1ms"
            )))
        } else {
            Ok(())
        }
    };
    at_least_1ms("Interval", check.interval)?;
    at_least_1ms("Timeout", check.timeout)?;
    if check.retries < 0 {
        return Err(EngineError::InvalidParameter(
            "Retries in Healthcheck cannot be negative".to_owned(),
        ));
    }
    at_least_1ms("StartPeriod", check.start_period)?;
    at_least_1ms("StartInterval", check.start_interval)
}

/// The command a probe runs: `CMD` as given, `CMD-SHELL` through the
/// container's shell (`/bin/sh -c`); `None` for no probe (no health check,
/// `NONE`, or a type Docker does not know either).
pub fn probe_command(config: &Config) -> Option<Vec<String>> {
    let test = &config.healthcheck.as_ref()?.test;
    let (kind, args) = test.split_first()?;
    let command: Vec<String> = match kind.as_str() {
        "CMD" => args.to_vec(),
        "CMD-SHELL" => {
            let mut shell = config
                .shell
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
            shell.extend(args.iter().cloned());
            shell
        }
        _ => return None,
    };
    (!command.is_empty()).then_some(command)
}

/// Adds a result to `health` as Docker does; returns the new status when it
/// changed. `in_start_period`: the probe started within the start period,
/// where failures of a container not yet healthy do not count.
pub fn record_result(
    health: &mut Health,
    result: HealthResult,
    retries: i64,
    in_start_period: bool,
) -> Option<String> {
    let before = health.status.clone();
    let failed = result.exit_code != 0;
    health.log.push(result);
    if health.log.len() > MAX_LOG {
        let extra = health.log.len() - MAX_LOG;
        health.log.drain(..extra);
    }
    if !failed {
        health.failing_streak = 0;
        health.status = HEALTHY.to_owned();
    } else if !(health.status == STARTING && in_start_period) {
        health.failing_streak += 1;
        let retries = if retries <= 0 {
            DEFAULT_RETRIES
        } else {
            retries
        };
        if health.failing_streak >= retries {
            health.status = UNHEALTHY.to_owned();
        }
    }
    (health.status != before).then(|| health.status.clone())
}

/// Go's `time.Duration` text (`30s`, `1m0s`, `1.5s`, `500ms`), as Docker's
/// timeout message prints it.
pub fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    let fraction = |value: u128, unit: u128| {
        let whole = value / unit;
        let rest = value % unit;
        if rest == 0 {
            whole.to_string()
        } else {
            let digits = unit.to_string().len() - 1;
            let text = format!("{whole}.{rest:0digits$}");
            text.trim_end_matches('0').to_owned()
        }
    };
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", fraction(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", fraction(nanos, 1_000_000));
    }
    let seconds = fraction(nanos % 60_000_000_000, 1_000_000_000);
    let minutes = nanos / 60_000_000_000;
    match (minutes / 60, minutes % 60) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

fn or_default(nanos: i64, default: Duration) -> Duration {
    if nanos > 0 {
        Duration::from_nanos(nanos as u64)
    } else {
        default
    }
}

/// Output kept up to [`MAX_OUTPUT`] bytes, `...` marking a cut.
#[derive(Default)]
struct Limited {
    bytes: Vec<u8>,
    cut: bool,
}

impl Limited {
    fn push(&mut self, data: &[u8]) {
        let room = MAX_OUTPUT - self.bytes.len();
        self.bytes.extend_from_slice(&data[..data.len().min(room)]);
        self.cut |= data.len() > room;
    }

    fn text(&self) -> String {
        let mut text = String::from_utf8_lossy(&self.bytes).into_owned();
        if self.cut {
            text.push_str("...");
        }
        text
    }
}

/// The run a health task belongs to: it ends when the record names another.
fn run_of(record: &ContainerRecord) -> (String, i64) {
    (record.state.started_at.clone(), record.monitor_pid)
}

impl Engine {
    /// Starts the probe task of a run that just began (`fresh`: health
    /// reset to `starting`, as on every start or restart) or was adopted
    /// after an engine restart (health kept). Called with the record locked.
    pub(super) fn start_health(
        self: &Arc<Self>,
        handle: &Arc<ContainerHandle>,
        record: &mut ContainerRecord,
        fresh: bool,
    ) {
        let Some(command) = probe_command(&record.config) else {
            return;
        };
        let check = record.config.healthcheck.clone().unwrap_or_default();
        let health = record.state.health.get_or_insert_with(Health::default);
        if fresh || health.status.is_empty() {
            health.status = STARTING.to_owned();
            health.failing_streak = 0;
        }
        let engine = self.clone();
        let handle = handle.clone();
        let run = run_of(record);
        tokio::spawn(async move { engine.health_task(handle, run, check, command).await });
    }

    async fn health_task(
        self: Arc<Self>,
        handle: Arc<ContainerHandle>,
        run: (String, i64),
        check: HealthConfig,
        command: Vec<String>,
    ) {
        let interval = or_default(check.interval, DEFAULT_INTERVAL);
        let start_interval = or_default(check.start_interval, DEFAULT_START_INTERVAL);
        let start_period = or_default(check.start_period, Duration::ZERO);
        let timeout = or_default(check.timeout, DEFAULT_TIMEOUT);
        // The start period counts from the run's start (an adopted run
        // started before this engine did).
        let since_start = chrono::DateTime::parse_from_rfc3339(&run.0)
            .ok()
            .and_then(|t| {
                (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                    .to_std()
                    .ok()
            })
            .unwrap_or_default();
        let now = tokio::time::Instant::now();
        let started = now.checked_sub(since_start).unwrap_or(now);
        let mut changed = handle.changed.subscribe();
        loop {
            // Docker's schedule: the start interval while starting within
            // the start period, never past the period's end.
            let status = {
                let record = handle.record.lock().await;
                if run_of(&record) != run || !record.state.running {
                    return;
                }
                record.state.health.as_ref().map(|h| h.status.clone())
            };
            let elapsed = started.elapsed();
            let wait = if elapsed >= start_period {
                interval
            } else if start_period - elapsed < interval {
                start_period - elapsed
            } else if status.as_deref() == Some(STARTING) {
                start_interval
            } else {
                interval
            };
            let deadline = tokio::time::Instant::now() + wait;
            // Wake on every change of the record, to end with the run.
            while tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_ok_and(|r| r.is_ok())
            {
                let record = handle.record.lock().await;
                if run_of(&record) != run || !record.state.running {
                    return;
                }
            }
            let (id, paused) = {
                let record = handle.record.lock().await;
                if run_of(&record) != run || !record.state.running {
                    return;
                }
                (record.id.clone(), record.state.paused)
            };
            if paused {
                continue;
            }
            let probe_started = started.elapsed();
            let result = self.probe(&id, command.clone(), timeout).await;
            let mut record = handle.record.lock().await;
            if run_of(&record) != run || !record.state.running {
                return;
            }
            let Some(health) = record.state.health.as_mut() else {
                return;
            };
            let in_start_period = probe_started < start_period;
            if let Some(status) = record_result(health, result, check.retries, in_start_period) {
                if let Err(e) = self.save(&record) {
                    tracing::warn!(id = %record.short_id(), error = %e, "cannot save the health status");
                }
                self.publish_container(
                    &record,
                    &format!("health_status: {status}"),
                    BTreeMap::new(),
                );
                drop(record);
                handle.notify();
            }
        }
    }

    /// Runs the probe once as an exec; its exec instance is forgotten after.
    async fn probe(
        &self,
        container: &str,
        command: Vec<String>,
        timeout: Duration,
    ) -> HealthResult {
        let start = now_rfc3339();
        let config = ExecConfig {
            attach_stdout: true,
            attach_stderr: true,
            cmd: Some(command),
            ..ExecConfig::default()
        };
        let (exit_code, output) = match self.exec_create(container, config).await {
            Ok(exec_id) => {
                let outcome = self.run_probe(container, &exec_id, timeout).await;
                self.execs.by_id.lock().await.remove(&exec_id);
                outcome
            }
            Err(e) => (-1, e.to_string()),
        };
        HealthResult {
            start,
            end: now_rfc3339(),
            exit_code,
            output,
        }
    }

    async fn run_probe(&self, container: &str, exec_id: &str, timeout: Duration) -> (i64, String) {
        let (exec, mut session) =
            match tokio::time::timeout(START_LIMIT, self.exec_start(exec_id)).await {
                Ok(Ok(started)) => started,
                Ok(Err(e)) => return (-1, e.to_string()),
                Err(_) => {
                    return (
                        -1,
                        format!("timed out starting health check for container {container}"),
                    )
                }
            };
        let mut output = Limited::default();
        let mut code = None;
        let read = async {
            while let Some(frame) = next_frame(&mut session.reader).await {
                match frame {
                    Frame::Exit(exit) => code = exit,
                    Frame::Output { payload, .. } => output.push(&payload),
                }
            }
        };
        let timed_out = tokio::time::timeout(timeout, read).await.is_err();
        if timed_out {
            let socket = self.layout.monitor_socket(&exec.container_id);
            let kill = Request::KillExec {
                pid: exec.pid,
                signal: libc::SIGKILL,
            };
            if let Err(e) = client::call(&socket, &kill).await {
                tracing::debug!(container, error = %e, "cannot kill a timed-out probe");
            }
            // Its end, so probes do not pile up; the output is not read.
            let _ = tokio::time::timeout(KILL_WAIT, async {
                while let Ok(Some(_)) = read_frame(&mut session.reader).await {}
            })
            .await;
            self.exec_finished(exec_id, -1).await;
            let limit = go_duration(timeout);
            let text = output.text();
            let message = if text.is_empty() {
                format!("Health check exceeded timeout ({limit})")
            } else {
                format!("Health check exceeded timeout ({limit}): {text}")
            };
            return (-1, message);
        }
        let code = code.unwrap_or(-1);
        self.exec_finished(exec_id, code).await;
        (code, output.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(code: i64) -> HealthResult {
        HealthResult {
            exit_code: code,
            ..HealthResult::default()
        }
    }

    fn starting() -> Health {
        Health {
            status: STARTING.to_owned(),
            ..Health::default()
        }
    }

    #[test]
    fn verdicts_follow_dockers_rules() {
        let mut health = starting();
        // Failures in the start period do not count while starting.
        assert_eq!(record_result(&mut health, result(1), 2, true), None);
        assert_eq!(health.failing_streak, 0);
        assert_eq!(
            record_result(&mut health, result(0), 2, true).as_deref(),
            Some(HEALTHY)
        );
        // Once healthy, the start period no longer shields failures.
        assert_eq!(record_result(&mut health, result(1), 2, true), None);
        assert_eq!(health.failing_streak, 1);
        assert_eq!(
            record_result(&mut health, result(2), 2, false).as_deref(),
            Some(UNHEALTHY)
        );
        assert_eq!(
            record_result(&mut health, result(0), 2, false).as_deref(),
            Some(HEALTHY)
        );
        assert_eq!(health.failing_streak, 0);
        // Default retries: three.
        let mut health = starting();
        for _ in 0..2 {
            assert_eq!(record_result(&mut health, result(-1), 0, false), None);
        }
        assert_eq!(
            record_result(&mut health, result(-1), 0, false).as_deref(),
            Some(UNHEALTHY)
        );
        assert_eq!(health.log.len(), 3);
        for _ in 0..4 {
            record_result(&mut health, result(1), 0, false);
        }
        assert_eq!(health.log.len(), MAX_LOG);
    }

    #[test]
    fn commands_by_type() {
        let config = |test: &[&str], shell: Option<Vec<String>>| Config {
            healthcheck: Some(HealthConfig {
                test: test.iter().map(|s| s.to_string()).collect(),
                ..HealthConfig::default()
            }),
            shell,
            ..Config::default()
        };
        assert_eq!(
            probe_command(&config(&["CMD-SHELL", "curl -f x || exit 1"], None)).unwrap(),
            vec!["/bin/sh", "-c", "curl -f x || exit 1"]
        );
        assert_eq!(
            probe_command(&config(
                &["CMD-SHELL", "x"],
                Some(vec!["/bin/bash".into(), "-ec".into()])
            ))
            .unwrap(),
            vec!["/bin/bash", "-ec", "x"]
        );
        assert_eq!(
            probe_command(&config(&["CMD", "/check", "-q"], None)).unwrap(),
            vec!["/check", "-q"]
        );
        assert_eq!(probe_command(&config(&["NONE"], None)), None);
        assert_eq!(probe_command(&config(&[], None)), None);
        assert_eq!(probe_command(&config(&["CMD"], None)), None);
        assert_eq!(probe_command(&config(&["PING", "x"], None)), None);
        assert_eq!(probe_command(&Config::default()), None);
    }

    #[test]
    fn limits_as_dockerd_words_them() {
        let check = |interval, timeout, retries| HealthConfig {
            test: vec!["CMD".into(), "true".into()],
            interval,
            timeout,
            retries,
            ..HealthConfig::default()
        };
        assert!(validate(&check(0, 0, 0)).is_ok());
        assert!(validate(&check(MINIMUM_NANOS, MINIMUM_NANOS, 1)).is_ok());
        let message = |c: &HealthConfig| validate(c).unwrap_err().to_string();
        assert_eq!(
            message(&check(10, 0, 0)),
            "Interval in Healthcheck cannot be less than 1ms"
        );
        assert_eq!(
            message(&check(0, 999_999, 0)),
            "Timeout in Healthcheck cannot be less than 1ms"
        );
        assert_eq!(
            message(&check(0, 0, -1)),
            "Retries in Healthcheck cannot be negative"
        );
    }

    #[test]
    fn nulls_from_compose_read_as_defaults() {
        let check: HealthConfig = serde_json::from_str(
            r#"{"Test":["CMD","true"],"Interval":null,"Timeout":1000000000,"StartPeriod":null,"Retries":null}"#,
        )
        .unwrap();
        assert_eq!(check.interval, 0);
        assert_eq!(check.timeout, 1_000_000_000);
        assert_eq!(
            serde_json::to_value(&check).unwrap(),
            serde_json::json!({"Test": ["CMD", "true"], "Timeout": 1_000_000_000})
        );
    }

    #[test]
    fn durations_print_like_go() {
        let ms = Duration::from_millis;
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration(ms(1500)), "1.5s");
        assert_eq!(go_duration(ms(500)), "500ms");
        assert_eq!(go_duration(Duration::from_secs(60)), "1m0s");
        assert_eq!(go_duration(Duration::from_secs(3725)), "1h2m5s");
        assert_eq!(go_duration(Duration::from_micros(1500)), "1.5ms");
    }

    #[test]
    fn output_is_cut_with_dots() {
        let mut out = Limited::default();
        out.push(&[b'a'; 3000]);
        out.push(&[b'b'; 3000]);
        let text = out.text();
        assert_eq!(text.len(), MAX_OUTPUT + 3);
        assert!(text.ends_with("bbb..."));
    }
}
