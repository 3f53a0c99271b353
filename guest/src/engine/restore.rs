//! Live restore: at start, the engine reloads every container record, adopts
//! the runs whose monitor is still alive, settles the ones that ended while
//! it was away, and starts what the restart policies say should run.

use std::sync::Arc;

use super::record::ContainerRecord;
use super::{ContainerHandle, Engine, EngineError};
use crate::runtime::monitor::client;
use crate::runtime::monitor::protocol::{ExitInfo, Request};

impl Engine {
    /// Loads `<root>/containers/*/container.json` into the registry.
    pub(super) async fn restore(self: &Arc<Self>) -> Result<(), EngineError> {
        let dir = self.layout.containers();
        let entries = std::fs::read_dir(&dir).map_err(|e| EngineError::io("read", &dir, e))?;
        let mut loaded = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path().join("container.json");
            let record: ContainerRecord = match std::fs::read(&path)
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            {
                Some(record) => record,
                None => {
                    // A create that never finished: nothing refers to it.
                    tracing::warn!(dir = %entry.path().display(), "removing a container directory without a record");
                    let _ = std::fs::remove_dir_all(entry.path());
                    continue;
                }
            };
            let handle = ContainerHandle::new(record.clone());
            let mut registry = self.containers.write().await;
            registry
                .names
                .insert(record.name.clone(), record.id.clone());
            registry.by_id.insert(record.id.clone(), handle.clone());
            loaded.push(handle);
        }
        for handle in loaded {
            self.settle(&handle).await;
        }
        Ok(())
    }

    /// Adopts a live run, or records the end of one that finished.
    async fn settle(self: &Arc<Self>, handle: &Arc<ContainerHandle>) {
        let (id, status, policy, manually_stopped) = {
            let record = handle.record.lock().await;
            (
                record.id.clone(),
                record.state.status.clone(),
                record.host_config.restart_policy.name.clone(),
                record.manually_stopped,
            )
        };
        let socket = self.layout.monitor_socket(&id);
        let was_running = matches!(status.as_str(), "running" | "paused" | "restarting");
        if was_running {
            if let Ok(reply) = client::call(&socket, &Request::Status).await {
                tracing::info!(id = %&id[..12], pid = reply.pid, "adopted a running container");
                {
                    let mut record = handle.record.lock().await;
                    record.state.pid = i64::from(reply.pid);
                    record.set_status(if reply.paused { "paused" } else { "running" });
                    self.restore_sandbox(&record).await;
                    self.start_health(handle, &mut record, false);
                }
                let engine = self.clone();
                let handle = handle.clone();
                tokio::spawn(async move {
                    let exit = engine.watch_run(&handle, &socket).await;
                    engine.on_exit(&handle, exit).await;
                });
                return;
            }
            let path = self.layout.container(&id).join("exit.json");
            let exit = std::fs::read(&path)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<ExitInfo>(&bytes).ok())
                .unwrap_or_else(|| ExitInfo {
                    exit_code: 255,
                    oom_killed: false,
                    finished_at: super::record::now_rfc3339(),
                    error: "the container's monitor was gone after an engine restart".to_owned(),
                });
            self.on_exit(handle, exit).await;
            return;
        }
        if matches!(policy.as_str(), "always" | "unless-stopped") && !manually_stopped {
            if let Err(e) = self.start(&id).await {
                tracing::warn!(id = %&id[..12], error = %e, "restart policy start failed");
            }
        }
    }
}
