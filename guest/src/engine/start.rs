//! `start`: write the run's files and OCI spec, start the container's monitor,
//! connect waiting attach clients, start the init, and watch for its exit
//! (which applies `--rm` and the restart policy).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use super::record::{now_rfc3339, ContainerRecord};
use super::{ContainerHandle, Engine, EngineError};
use crate::network::sandbox::{LinkTarget, LiveEndpoint};
use crate::runtime::monitor::client;
use crate::runtime::monitor::protocol::{ExitInfo, MonitorConfig, Request, FAILED, READY};
use crate::runtime::spec::{EtcFiles, NetNs, SpecInput};

/// Docker's exit code for a container whose process could not be started.
fn start_failure_code(message: &str) -> i64 {
    if message.contains("executable file not found")
        || message.contains("no such file or directory")
    {
        127
    } else if message.contains("permission denied") {
        126
    } else {
        128
    }
}

impl Engine {
    /// Starts a created or exited container.
    pub async fn start(self: &Arc<Self>, key: &str) -> Result<(), EngineError> {
        let handle = self.container(key).await?;
        let mut record = handle.record.lock().await;
        match record.state.status.as_str() {
            "running" | "restarting" => return Err(EngineError::NotModified("started")),
            "paused" => {
                return Err(EngineError::Conflict(
                    "cannot start a paused container, try unpause instead".to_owned(),
                ))
            }
            "removing" | "dead" => {
                return Err(EngineError::Conflict(format!(
                    "container {} is marked for removal and cannot be started",
                    record.id
                )))
            }
            _ => {}
        }
        record.manually_stopped = false;
        let result = self.start_locked(&handle, &mut record).await;
        if result.is_err() && record.host_config.auto_remove {
            // Docker removes a `--rm` container that could not start.
            let id = record.id.clone();
            drop(record);
            if let Err(e) = self.remove(&id, true, true).await {
                tracing::warn!(id = %id, error = %e, "cannot auto-remove after a failed start");
            }
        }
        result
    }

    /// Starts the container whose record is locked by the caller.
    pub(super) async fn start_locked(
        self: &Arc<Self>,
        handle: &Arc<ContainerHandle>,
        record: &mut ContainerRecord,
    ) -> Result<(), EngineError> {
        let result = self.run(handle, record).await;
        if result.is_err() {
            // Attach clients waiting for this start get their stream closed.
            if let Ok(mut pending) = handle.pending_attaches.lock() {
                pending.clear();
            }
        }
        result
    }

    async fn run(
        self: &Arc<Self>,
        handle: &Arc<ContainerHandle>,
        record: &mut ContainerRecord,
    ) -> Result<(), EngineError> {
        let links = self.link_targets(record).await;
        let prepared = self.prepare_sandbox(record, &links).await;
        let monitor_config = match prepared {
            Ok(live) => self.prepare_run(record, &live, &links).await,
            Err(e) => Err(e),
        };
        let monitor_config = match monitor_config {
            Ok(config) => config,
            Err(e) => {
                self.release_sandbox(record).await;
                record.state.error = crate::state::error_chain(&e);
                let _ = self.save(record);
                return Err(e);
            }
        };
        let socket = self.layout.monitor_socket(&record.id);
        let mut child = match self.spawn_monitor(record, &monitor_config).await {
            Ok(child) => child,
            Err(message) => {
                self.release_sandbox(record).await;
                // The monitor unmounts on its own failures; this covers a
                // monitor that never ran.
                let _ = crate::runtime::rootfs::unmount(&monitor_config.rootfs);
                record.state.exit_code = start_failure_code(&message);
                record.state.error = message.clone();
                let _ = self.save(record);
                return Err(if record.state.exit_code == 128 {
                    EngineError::Runtime(message)
                } else {
                    EngineError::InvalidParameter(message)
                });
            }
        };
        let plumbed = match child.id() {
            Some(pid) => self.plumb_sandbox(record, pid).await,
            None => Err(EngineError::Runtime("the container monitor is gone".into())),
        };
        if let Err(e) = plumbed {
            self.abort_run(&mut child, &monitor_config).await;
            self.release_sandbox(record).await;
            record.state.exit_code = 128;
            record.state.error = crate::state::error_chain(&e);
            let _ = self.save(record);
            return Err(e);
        }
        self.connect_pending_attaches(handle, &socket).await;
        let reply = match client::call(&socket, &Request::Start).await {
            Ok(reply) => reply,
            Err(e) => {
                self.abort_run(&mut child, &monitor_config).await;
                self.release_sandbox(record).await;
                let message = format!("cannot start container: {e}");
                record.state.error = message.clone();
                let _ = self.save(record);
                return Err(EngineError::Runtime(message));
            }
        };
        record.set_status("running");
        record.state.pid = i64::from(reply.pid);
        record.state.exit_code = 0;
        record.state.error.clear();
        record.state.oom_killed = false;
        record.state.started_at = now_rfc3339();
        record.state.finished_at = super::record::ZERO_TIME.to_owned();
        record.monitor_pid = child.id().map_or(0, i64::from);
        self.start_health(handle, record, true);
        self.save(record)?;
        handle.notify();
        self.publish_container(record, "start", BTreeMap::new());
        tracing::info!(id = %record.short_id(), pid = reply.pid, "container started");
        let engine = self.clone();
        let handle = handle.clone();
        tokio::spawn(async move {
            let exit = engine.watch_run(&handle, &socket).await;
            let _ = child.wait().await;
            engine.on_exit(&handle, exit).await;
        });
        Ok(())
    }

    /// Ends a run that never started: the monitor goes, and with it what it
    /// would have released (container state, cgroups, rootfs mount).
    async fn abort_run(&self, child: &mut tokio::process::Child, config: &MonitorConfig) {
        let _ = child.start_kill();
        let _ = child.wait().await;
        let config = config.clone();
        let _ = tokio::task::spawn_blocking(move || {
            crate::runtime::monitor::release(&config, None);
        })
        .await;
    }

    /// Writes the run's etc files, bundle and monitor config.
    async fn prepare_run(
        &self,
        record: &ContainerRecord,
        live: &[LiveEndpoint],
        links: &[(String, String, LinkTarget)],
    ) -> Result<MonitorConfig, EngineError> {
        let host_gateway = self.networks.host_gateway().await;
        let dir = self.layout.container(&record.id);
        let write = |name: &str, text: String| -> Result<PathBuf, EngineError> {
            let path = dir.join(name);
            super::layout::write_atomic(&path, text.as_bytes())
                .map_err(|e| EngineError::io("write", &path, e))?;
            Ok(path)
        };
        let etc_files = EtcFiles {
            hostname: write("hostname", super::etc::hostname(&record.config))?,
            hosts: write(
                "hosts",
                super::etc::hosts(&super::etc::HostsInput {
                    config: &record.config,
                    host_config: &record.host_config,
                    own: live.first().map(|e| e.address.addr()),
                    links: links
                        .iter()
                        .map(|(name, alias, target)| (target.address, alias.clone(), name.clone()))
                        .collect(),
                    host_gateway,
                }),
            )?,
            resolv_conf: write(
                "resolv.conf",
                super::etc::resolv_conf(
                    std::path::Path::new("/etc/resolv.conf"),
                    &record.host_config,
                    live.iter()
                        .find(|e| e.order == 0 && !e.dns_names.is_empty())
                        .and_then(|e| e.gateway),
                ),
            )?,
        };
        tracing::debug!(id = %record.short_id(), "etc files written");
        let netns = self.netns_for(record).await?;
        let new_netns = netns == NetNs::FromMonitor;
        let mut args = vec![record.path.clone()];
        args.extend(record.args.iter().cloned());
        let mut env = record.config.env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(
                0,
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
            );
        }
        if !record.config.hostname.is_empty() && !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
            env.insert(1, format!("HOSTNAME={}", record.config.hostname));
        }
        for variable in super::network::link_env(&record.name, links) {
            let key = variable.split('=').next().unwrap_or_default();
            if !env.iter().any(|e| e.split('=').next() == Some(key)) {
                env.push(variable);
            }
        }
        if record.config.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".to_owned());
        }
        let rootfs = dir.join("rootfs");
        // Mounted here (the spec resolves the user inside it); the monitor
        // unmounts it when the run ends.
        crate::runtime::rootfs::mount_overlay(
            &record.layers,
            &dir.join("upper"),
            &dir.join("work"),
            &rootfs,
        )
        .map_err(|e| EngineError::Runtime(crate::state::error_chain(&e)))?;
        let cgroups_path = format!(
            "/{}/{}",
            self.options.cgroup_parent.trim_matches('/'),
            record.id
        );
        let spec = crate::runtime::spec::build(&SpecInput {
            id: &record.id,
            config: &record.config,
            host_config: &record.host_config,
            args: args.clone(),
            env: env.clone(),
            rootfs: rootfs.clone(),
            mounts: &record.mounts,
            etc_files,
            cgroups_path: cgroups_path.clone(),
            netns,
            init_binary: self.init_binary.clone(),
        })
        .map_err(|e| {
            let _ = crate::runtime::rootfs::unmount(&rootfs);
            EngineError::InvalidParameter(crate::state::error_chain(&e))
        })?;
        tracing::debug!(id = %record.short_id(), "spec built");
        let bundle = dir.join("bundle");
        std::fs::create_dir_all(&bundle).map_err(|e| EngineError::io("create", &bundle, e))?;
        let spec_json = serde_json::to_vec_pretty(&spec)
            .map_err(|e| EngineError::Runtime(format!("cannot encode the OCI spec: {e}")))?;
        let spec_path = bundle.join("config.json");
        super::layout::write_atomic(&spec_path, &spec_json)
            .map_err(|e| EngineError::io("write", &spec_path, e))?;
        let exit_path = dir.join("exit.json");
        let _ = std::fs::remove_file(&exit_path);
        let config = MonitorConfig {
            id: record.id.clone(),
            container_dir: dir.clone(),
            run_dir: self.layout.container_run(&record.id),
            runtime_root: self.layout.runtime_root(),
            bundle,
            lower: record.layers.clone(),
            upper: dir.join("upper"),
            work: dir.join("work"),
            rootfs,
            log_path: dir.join("container.log"),
            tty: record.config.tty,
            open_stdin: record.config.open_stdin,
            stdin_once: record.config.stdin_once,
            args,
            env,
            cgroups_path,
            new_netns,
        };
        let config_path = dir.join("monitor.json");
        let bytes = serde_json::to_vec_pretty(&config)
            .map_err(|e| EngineError::Runtime(format!("cannot encode monitor config: {e}")))?;
        super::layout::write_atomic(&config_path, &bytes)
            .map_err(|e| EngineError::io("write", &config_path, e))?;
        Ok(config)
    }

    /// The network namespace a container gets from its network mode.
    async fn netns_for(&self, record: &ContainerRecord) -> Result<NetNs, EngineError> {
        let mode = record.host_config.network_mode.as_str();
        if mode == "host" {
            return Ok(NetNs::Host);
        }
        let Some(other) = mode.strip_prefix("container:") else {
            return Ok(NetNs::FromMonitor);
        };
        let handle = self.container(other).await?;
        let other_record = handle.record.lock().await;
        if !other_record.state.running || other_record.state.pid == 0 {
            return Err(EngineError::Conflict(format!(
                "cannot join network namespace of a non running container: {other}"
            )));
        }
        Ok(NetNs::Path(PathBuf::from(format!(
            "/proc/{}/ns/net",
            other_record.state.pid
        ))))
    }

    /// Runs `vmctl-guest monitor` and waits for its first line.
    async fn spawn_monitor(
        &self,
        record: &ContainerRecord,
        config: &MonitorConfig,
    ) -> Result<tokio::process::Child, String> {
        let dir = &config.container_dir;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("monitor.log"))
            .map_err(|e| format!("cannot open monitor.log: {e}"))?;
        let mut child = tokio::process::Command::new(&self.options.self_exe)
            .arg("monitor")
            .arg(dir.join("monitor.json"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .env(
                "VMCTL_LOG",
                std::env::var("VMCTL_LOG").unwrap_or_else(|_| "info".into()),
            )
            .spawn()
            .map_err(|e| format!("cannot run the container monitor: {e}"))?;
        let Some(stdout) = child.stdout.take() else {
            return Err("the container monitor has no stdout".to_owned());
        };
        let mut line = String::new();
        let mut reader = BufReader::new(stdout);
        let outcome =
            tokio::time::timeout(Duration::from_secs(120), reader.read_line(&mut line)).await;
        let line = line.trim_end();
        match outcome {
            Ok(Ok(_)) if line == READY => Ok(child),
            Ok(Ok(_)) => {
                let _ = child.wait().await;
                let message = line.strip_prefix(FAILED).unwrap_or(line);
                if message.is_empty() {
                    Err(format!(
                        "the monitor of {} exited without a word (see monitor.log)",
                        record.short_id()
                    ))
                } else {
                    Err(message.to_owned())
                }
            }
            Ok(Err(e)) => Err(format!("cannot read from the monitor: {e}")),
            Err(_) => {
                let _ = child.start_kill();
                Err("the container monitor did not answer in time".to_owned())
            }
        }
    }

    /// Waits for the run to end: the monitor's answer, else its exit.json.
    pub(super) async fn watch_run(
        &self,
        handle: &ContainerHandle,
        socket: &std::path::Path,
    ) -> ExitInfo {
        let answered = client::wait(socket).await;
        if let Ok(Some(exit)) = answered {
            return exit;
        }
        let id = handle.record.lock().await.id.clone();
        let path = self.layout.container(&id).join("exit.json");
        // The monitor writes exit.json before it closes its socket.
        for _ in 0..50 {
            if let Ok(bytes) = std::fs::read(&path) {
                if let Ok(exit) = serde_json::from_slice::<ExitInfo>(&bytes) {
                    return exit;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ExitInfo {
            exit_code: 255,
            oom_killed: false,
            finished_at: now_rfc3339(),
            error: "the container's monitor exited unexpectedly".to_owned(),
        }
    }

    /// Records the end of a run, then removes (`--rm`) or restarts the container.
    pub(super) fn on_exit<'a>(
        self: &'a Arc<Self>,
        handle: &'a Arc<ContainerHandle>,
        exit: ExitInfo,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        // Boxed: a restart starts a run whose exit comes back here.
        Box::pin(async move {
            let mut record = handle.record.lock().await;
            self.release_sandbox(&mut record).await;
            if record.state.status == "removing" {
                // A removal is waiting for this exit and finishes the job.
                record.state.exit_code = exit.exit_code;
                record.state.finished_at = exit.finished_at.clone();
                record.set_status("exited");
                self.publish_container(
                    &record,
                    "die",
                    BTreeMap::from([("exitCode".to_owned(), exit.exit_code.to_string())]),
                );
                handle.notify();
                return;
            }
            record.set_status("exited");
            record.state.pid = 0;
            record.state.exit_code = exit.exit_code;
            record.state.oom_killed = exit.oom_killed;
            record.state.finished_at = exit.finished_at.clone();
            record.state.error = exit.error.clone();
            record.monitor_pid = 0;
            if let Err(e) = self.save(&record) {
                tracing::error!(id = %record.short_id(), error = %e, "cannot save the exit");
            }
            if exit.oom_killed {
                self.publish_container(&record, "oom", BTreeMap::new());
            }
            self.publish_container(
                &record,
                "die",
                BTreeMap::from([("exitCode".to_owned(), exit.exit_code.to_string())]),
            );
            handle.notify();
            tracing::info!(id = %record.short_id(), code = exit.exit_code, "container exited");
            if record.host_config.auto_remove {
                let id = record.id.clone();
                drop(record);
                if let Err(e) = self.remove(&id, true, true).await {
                    tracing::warn!(id = %id, error = %e, "cannot auto-remove");
                }
                return;
            }
            if self.should_restart(&record) {
                record.set_status("restarting");
                handle.notify();
                let delay = Duration::from_millis(100u64 << record.restart_count.clamp(0, 9));
                let engine = self.clone();
                let handle = handle.clone();
                drop(record);
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let mut record = handle.record.lock().await;
                    if record.state.status != "restarting" || record.manually_stopped {
                        return;
                    }
                    record.restart_count += 1;
                    engine.publish_container(&record, "restart", BTreeMap::new());
                    if let Err(e) = engine.start_locked(&handle, &mut record).await {
                        tracing::warn!(id = %record.short_id(), error = %e, "restart failed");
                        record.set_status("exited");
                        let _ = engine.save(&record);
                        handle.notify();
                    }
                });
            }
        })
    }

    /// Whether the restart policy brings the container back after this exit.
    fn should_restart(&self, record: &ContainerRecord) -> bool {
        let policy = &record.host_config.restart_policy;
        match policy.name.as_str() {
            "always" | "unless-stopped" => !record.manually_stopped,
            "on-failure" => {
                !record.manually_stopped
                    && record.state.exit_code != 0
                    && (policy.maximum_retry_count == 0
                        || record.restart_count < policy.maximum_retry_count)
            }
            _ => false,
        }
    }

    /// Publishes a container event with the image and name attributes.
    pub fn publish_container(
        &self,
        record: &ContainerRecord,
        action: &str,
        mut attributes: BTreeMap<String, String>,
    ) {
        attributes.insert("image".to_owned(), record.config.image.clone());
        attributes.insert("name".to_owned(), record.name.clone());
        for (key, value) in &record.config.labels {
            attributes
                .entry(key.clone())
                .or_insert_with(|| value.clone());
        }
        self.events
            .publish("container", action.to_owned(), &record.id, attributes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_failures_get_dockers_exit_codes() {
        assert_eq!(
            start_failure_code("exec: \"x\": executable file not found in $PATH"),
            127
        );
        assert_eq!(start_failure_code("exec: \"/x\": permission denied"), 126);
        assert_eq!(start_failure_code("cgroup failure"), 128);
    }
}
