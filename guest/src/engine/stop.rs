//! `stop`, `kill` and `restart`: signals through the container's monitor, and
//! waiting for the exit it reports.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::{ContainerHandle, Engine, EngineError};
use crate::runtime::monitor::client;
use crate::runtime::monitor::protocol::Request;

/// Parses `SIGTERM`, `TERM`, `term` or `15`.
pub fn parse_signal(text: &str) -> Result<Signal, EngineError> {
    let invalid = || EngineError::InvalidParameter(format!("Invalid signal: {text}"));
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).map_err(|_| invalid());
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().map_err(|_| invalid())
}

/// How long `docker kill` (SIGKILL) waits for the container to exit, as
/// dockerd's `Kill` does before its last resort.
const KILL_WAIT: Duration = Duration::from_secs(10);

impl ContainerHandle {
    /// Waits until the container is no longer running, up to `timeout`
    /// (`None`: forever). Answers whether it stopped.
    pub async fn wait_stopped(&self, timeout: Option<Duration>) -> bool {
        let mut changes = self.changed.subscribe();
        let check = async {
            loop {
                {
                    let record = self.record.lock().await;
                    if !record.state.running || record.state.status == "restarting" {
                        return;
                    }
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        match timeout {
            Some(limit) => tokio::time::timeout(limit, check).await.is_ok(),
            None => {
                check.await;
                true
            }
        }
    }
}

impl Engine {
    /// Sends `signal` to a container's init through its monitor.
    async fn signal(&self, id: &str, signal: Signal) -> Result<(), EngineError> {
        let socket = self.layout.monitor_socket(id);
        client::call(
            &socket,
            &Request::Kill {
                signal: signal as i32,
            },
        )
        .await
        .map(|_| ())
        .map_err(|e| EngineError::Conflict(format!("Cannot kill container: {id}: {e}")))
    }

    /// A container waiting to be restarted by its policy is simply settled
    /// as exited (nothing runs to signal); answers whether it was.
    fn cancel_restart(
        &self,
        handle: &ContainerHandle,
        record: &mut super::ContainerRecord,
    ) -> bool {
        if record.state.status != "restarting" {
            return false;
        }
        record.manually_stopped = true;
        record.set_status("exited");
        let _ = self.save(record);
        handle.notify();
        true
    }

    /// `docker kill`.
    pub async fn kill(&self, key: &str, signal: Option<&str>) -> Result<(), EngineError> {
        let signal = parse_signal(signal.filter(|s| !s.is_empty()).unwrap_or("KILL"))?;
        let handle = self.container(key).await?;
        let id = {
            let mut record = handle.record.lock().await;
            if self.cancel_restart(&handle, &mut record) {
                return Ok(());
            }
            if !record.state.running {
                return Err(EngineError::Conflict(format!(
                    "Cannot kill container: {key}: Container {} is not running",
                    record.id
                )));
            }
            if signal == Signal::SIGKILL || signal == stop_signal(&record.config.stop_signal) {
                record.manually_stopped = true;
                let _ = self.save(&record);
            }
            record.id.clone()
        };
        self.signal(&id, signal).await?;
        {
            let record = handle.record.lock().await;
            self.publish_container(
                &record,
                "kill",
                std::collections::BTreeMap::from([(
                    "signal".to_owned(),
                    (signal as i32).to_string(),
                )]),
            );
        }
        // As dockerd: a SIGKILL returns once the container has exited, so
        // `rm` or `commit` right after it find it stopped. A process the
        // kernel holds (uninterruptible sleep) does not hold the request
        // for ever: the record follows when it exits.
        if signal == Signal::SIGKILL && !handle.wait_stopped(Some(KILL_WAIT)).await {
            tracing::warn!(id = %&id[..12], "SIGKILL sent, the container has not exited yet");
        }
        Ok(())
    }

    /// `docker stop`: the stop signal, then SIGKILL after `timeout` seconds
    /// (`-1`: wait forever).
    pub async fn stop(
        &self,
        key: &str,
        timeout: Option<i64>,
        signal: Option<&str>,
    ) -> Result<(), EngineError> {
        let handle = self.container(key).await?;
        let (id, signal, timeout) = {
            let mut record = handle.record.lock().await;
            if self.cancel_restart(&handle, &mut record) {
                return Ok(());
            }
            if !record.state.running {
                return Err(EngineError::NotModified("stopped"));
            }
            record.manually_stopped = true;
            let _ = self.save(&record);
            let signal = match signal.filter(|s| !s.is_empty()) {
                Some(signal) => parse_signal(signal)?,
                None => stop_signal(&record.config.stop_signal),
            };
            let timeout = timeout.or(record.config.stop_timeout).unwrap_or(10);
            (record.id.clone(), signal, timeout)
        };
        let limit = u64::try_from(timeout).ok().map(Duration::from_secs);
        let paused = handle.record.lock().await.state.paused;
        if paused {
            // A frozen process cannot take a signal; thaw it first.
            let _ = client::call(&self.layout.monitor_socket(&id), &Request::Resume).await;
        }
        if !(self.signal(&id, signal).await.is_ok() && handle.wait_stopped(limit).await) {
            tracing::info!(id = %&id[..12], "stop timed out; killing");
            let _ = self.signal(&id, Signal::SIGKILL).await;
            handle.wait_stopped(None).await;
        }
        let record = handle.record.lock().await;
        self.publish_container(&record, "stop", Default::default());
        Ok(())
    }

    /// `docker restart`.
    pub async fn restart(
        self: &Arc<Self>,
        key: &str,
        timeout: Option<i64>,
        signal: Option<&str>,
    ) -> Result<(), EngineError> {
        match self.stop(key, timeout, signal).await {
            Ok(()) | Err(EngineError::NotModified(_)) => {}
            Err(e) => return Err(e),
        }
        self.start(key).await?;
        let handle = self.container(key).await?;
        let record = handle.record.lock().await;
        self.publish_container(&record, "restart", Default::default());
        Ok(())
    }
}

/// The container's stop signal (`SIGTERM` unless its config names another).
fn stop_signal(configured: &str) -> Signal {
    if configured.is_empty() {
        return Signal::SIGTERM;
    }
    parse_signal(configured).unwrap_or(Signal::SIGTERM)
}

impl Engine {
    /// Engine shutdown (the VM powers off): every running container gets its
    /// stop signal, then SIGKILL once `grace` has passed. Unlike `docker
    /// stop`, nothing is marked manually stopped, so restart policies bring
    /// the containers back at the next boot, as Docker's do.
    pub async fn stop_all(&self, grace: Duration) {
        let mut running = Vec::new();
        for handle in self.handles().await {
            let record = handle.record.lock().await;
            if record.state.running {
                let signal = stop_signal(&record.config.stop_signal);
                running.push((handle.clone(), record.id.clone(), signal));
            }
        }
        for (_, id, signal) in &running {
            let _ = self.signal(id, *signal).await;
        }
        let deadline = tokio::time::Instant::now() + grace;
        for (handle, id, _) in &running {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !handle.wait_stopped(Some(left)).await {
                tracing::info!(id = %&id[..12], "shutdown: killing");
                let _ = self.signal(id, Signal::SIGKILL).await;
                handle.wait_stopped(Some(Duration::from_secs(5))).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_in_every_docker_form() {
        assert_eq!(parse_signal("SIGTERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("term").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("99").is_err());
    }
}
