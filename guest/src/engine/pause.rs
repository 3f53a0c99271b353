//! `pause` and `unpause`: the cgroup freezer, through the container's monitor.

use super::{Engine, EngineError};
use crate::runtime::monitor::client;
use crate::runtime::monitor::protocol::Request;

impl Engine {
    /// Freezes (`pause == true`) or thaws a running container.
    pub async fn pause(&self, key: &str, pause: bool) -> Result<(), EngineError> {
        let handle = self.container(key).await?;
        let mut record = handle.record.lock().await;
        if !record.state.running {
            return Err(EngineError::Conflict(format!(
                "Container {} is not running",
                record.id
            )));
        }
        if pause && record.state.paused {
            return Err(EngineError::Conflict(format!(
                "Container {} is already paused",
                record.id
            )));
        }
        if !pause && !record.state.paused {
            return Err(EngineError::Conflict(format!(
                "Container {} is not paused",
                record.id
            )));
        }
        let request = if pause {
            Request::Pause
        } else {
            Request::Resume
        };
        client::call(&self.layout.monitor_socket(&record.id), &request)
            .await
            .map_err(|e| {
                EngineError::Runtime(format!(
                    "cannot {}: {e}",
                    if pause { "pause" } else { "unpause" }
                ))
            })?;
        record.set_status(if pause { "paused" } else { "running" });
        self.save(&record)?;
        handle.notify();
        self.publish_container(
            &record,
            if pause { "pause" } else { "unpause" },
            Default::default(),
        );
        Ok(())
    }
}
