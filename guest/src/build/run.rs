//! A `RUN` step: a real container of the engine, created, started and
//! waited for like `docker run`'s, its output streamed into the build, and
//! stopped (killed) when the client goes away.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{BuildError, BuildOptions, Message};
use crate::engine::logs::LogOptions;
use crate::engine::Engine;
use crate::model::container::{Config, CreateRequest, HostConfig};

/// How a step's container ended.
pub enum Outcome {
    /// Exited with this code.
    Exited(i64),
    /// The client went away; the container was killed.
    Cancelled,
}

/// The host config of every step container: the build's network and
/// limits, nothing else (no ports, no binds, no privileges).
pub fn host_config(options: &BuildOptions) -> HostConfig {
    HostConfig {
        network_mode: match options.network_mode.as_str() {
            "" => "default".to_owned(),
            mode => mode.to_owned(),
        },
        extra_hosts: (!options.extra_hosts.is_empty()).then(|| options.extra_hosts.clone()),
        shm_size: options.shm_size,
        cpuset_cpus: options.cpuset_cpus.clone(),
        cpuset_mems: options.cpuset_mems.clone(),
        cpu_shares: options.cpu_shares,
        cpu_period: options.cpu_period,
        cpu_quota: options.cpu_quota,
        memory: options.memory,
        memory_swap: options.memory_swap,
        ..HostConfig::default()
    }
}

/// Creates the step's container from `config` (its `image` the parent).
pub async fn create(
    engine: &Arc<Engine>,
    options: &BuildOptions,
    config: Config,
) -> Result<String, BuildError> {
    let created = engine
        .create(
            None,
            CreateRequest {
                config,
                host_config: host_config(options),
                networking_config: None,
            },
        )
        .await
        .map_err(|e| BuildError::new(e.to_string()))?;
    Ok(created.id)
}

/// Starts container `id`, streams its output to `tx` as it comes, and waits
/// for it to exit — or for the client to go away, which kills it.
pub async fn run(
    engine: &Arc<Engine>,
    id: &str,
    tx: &mpsc::Sender<Message>,
    quiet: bool,
) -> Result<Outcome, BuildError> {
    let handle = engine
        .container(id)
        .await
        .map_err(|e| BuildError::new(e.to_string()))?;
    engine
        .start(id)
        .await
        .map_err(|e| BuildError::new(e.to_string()))?;
    let (_, mut output) = engine
        .logs(
            id,
            LogOptions {
                stdout: true,
                stderr: true,
                follow: true,
                timestamps: false,
                tail: None,
                since: None,
                until: None,
            },
        )
        .await
        .map_err(|e| BuildError::new(e.to_string()))?;
    let forward = async {
        while let Some(frame) = output.recv().await {
            // Frames of a container without a TTY: an 8-byte header, then
            // the payload.
            let payload = frame.get(8..).unwrap_or_default();
            if !quiet && !payload.is_empty() {
                let mut text = String::from_utf8_lossy(payload).into_owned();
                // dockerd's classic builder shows a step's stderr in red.
                if frame.first() == Some(&crate::state::stream::STDERR) {
                    text = format!("\u{1b}[91m{text}\u{1b}[0m");
                }
                if tx.send(Message::Stream(text)).await.is_err() {
                    return;
                }
            }
        }
    };
    let ended = async {
        forward.await;
        handle.wait_stopped(None).await;
    };
    tokio::select! {
        () = ended => {}
        () = tx.closed() => {
            tracing::info!(container = %id, "build cancelled by the client: stopping its step");
            let _ = engine.kill(id, Some("KILL")).await;
            handle.wait_stopped(None).await;
            return Ok(Outcome::Cancelled);
        }
    }
    let code = handle.record.lock().await.state.exit_code;
    Ok(Outcome::Exited(code))
}

/// Removes a step's container and its anonymous volumes.
pub async fn remove(engine: &Arc<Engine>, id: &str) {
    if let Err(e) = engine.remove(id, true, true).await {
        tracing::warn!(container = %id, error = %e, "cannot remove a build step's container");
    }
}
