//! Desktop file changes as inotify events in the VM. virtio-fs shows the
//! desktop's files to containers but not the desktop's change
//! notifications, so an editor's save never wakes `inotifywait`, webpack,
//! nodemon or `cargo watch` in a container. The daemon watches what
//! containers use and names each changed path to the guest, which raises
//! the event there (`vmctl_proto::file_events`; the guest's
//! `vm::file_events`).
//!
//! - [`binds`]: what to watch — the bind mounts of running containers whose
//!   source lies in a share, re-read from the engine whenever a container
//!   event arrives. A whole home directory is never walked: only what is
//!   bound, and only while a running container binds it.
//! - [`watcher`]: the `notify` watches over those binds, keeping content
//!   changes only (created, written, moved here) — never the opens, closes
//!   and mode changes that raising an event in the VM itself causes.
//! - [`relay`]: coalesces changes over a few milliseconds and sends them to
//!   the guest in bounded batches.
//!
//! Not carried: deletions (the guest can only touch a file that exists) and
//! desktop-side attribute changes (the guest's touch is one).

pub mod binds;
pub mod relay;
#[cfg(test)]
mod test_utils;
pub mod watcher;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::vsock::{VsockError, VsockTransport};
use watcher::{Target, Watcher};

/// Changed paths waiting between the watcher and the relay.
pub const QUEUE: usize = 8192;

/// How soon a broken engine watch is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// How long container events are let settle before the binds are re-read.
const SETTLE: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum FileEventsError {
    #[error("cannot start the file watcher")]
    Watcher(#[source] notify::Error),
    #[error("connecting to the guest")]
    Connect(#[source] VsockError),
    #[error("talking to the guest engine")]
    Engine(#[source] std::io::Error),
    #[error("the guest engine answered {status} to {path}")]
    Status { path: String, status: String },
    #[error("the guest engine sent a malformed container list")]
    Malformed(#[source] serde_json::Error),
    #[error("the guest's file-events service")]
    Wire(#[source] vmctl_proto::file_events::FileEventsError),
    #[error("the guest did not raise a batch within {0:?}")]
    Slow(Duration),
}

/// Watches what running containers bind from `shares` and raises its
/// changes in the VM, until the task is dropped.
pub async fn follow(transport: Arc<dyn VsockTransport>, shares: Vec<PathBuf>) {
    let shares: Vec<PathBuf> = shares
        .into_iter()
        .map(|share| std::fs::canonicalize(&share).unwrap_or(share))
        .collect();
    if shares.is_empty() {
        tracing::info!("no shares: no desktop file events");
        return;
    }
    let (sink, changes) = mpsc::channel(QUEUE);
    let dropped: Arc<AtomicU64> = Arc::default();
    let watcher = match Watcher::new(sink, dropped.clone()) {
        Ok(watcher) => Arc::new(Mutex::new(watcher)),
        Err(e) => {
            tracing::error!(error = %crate::error_chain(&e), "desktop file changes will not reach containers");
            return;
        }
    };
    let relay = {
        let transport = transport.clone();
        tokio::spawn(async move { relay::run(transport.as_ref(), changes).await })
    };
    let _relay = Task(relay);
    let mut reported = 0;
    loop {
        if let Err(e) = follow_binds(transport.as_ref(), &shares, &watcher).await {
            tracing::debug!(error = %crate::error_chain(&e), "container watch broke; watching again");
        }
        let lost = dropped.load(Ordering::Relaxed);
        if lost > reported {
            tracing::warn!(
                dropped = lost,
                "the desktop changed faster than the VM was told: some changes were not raised"
            );
            reported = lost;
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Keeps the watches on the current binds until the engine's event stream
/// ends or breaks.
async fn follow_binds(
    transport: &dyn VsockTransport,
    shares: &[PathBuf],
    watcher: &Arc<Mutex<Watcher>>,
) -> Result<(), FileEventsError> {
    // Events first, so no change falls between the list and the stream.
    let mut events = binds::Events::open(transport).await?;
    let mut current: Option<BTreeSet<Target>> = None;
    loop {
        let containers = binds::list(transport).await?;
        let targets = binds::targets(&containers, shares);
        if current.as_ref() != Some(&targets) {
            current = Some(targets.clone());
            apply(watcher, targets).await;
        }
        if !events.next().await? {
            return Ok(());
        }
        // A `docker compose up` is a burst of events: read the list once.
        tokio::time::sleep(SETTLE).await;
        while let Ok(more) = tokio::time::timeout(Duration::ZERO, events.next()).await {
            if !more? {
                return Ok(());
            }
        }
    }
}

/// Sets the watches off the async threads (a new tree is walked).
async fn apply(watcher: &Arc<Mutex<Watcher>>, targets: BTreeSet<Target>) {
    let watcher = watcher.clone();
    let count = targets.len();
    let failed = tokio::task::spawn_blocking(move || {
        watcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set(targets)
    })
    .await
    .unwrap_or_default();
    for (path, e) in &failed {
        tracing::warn!(path = %path.display(), error = %e, "cannot watch a bound path for changes (on Linux, see fs.inotify.max_user_watches)");
    }
    tracing::info!(
        binds = count,
        unwatched = failed.len(),
        "watching bound desktop paths"
    );
}

/// A running [`follow`]; dropping it stops it.
pub struct Task(tokio::task::JoinHandle<()>);

impl Task {
    /// Spawns [`follow`] on the current runtime.
    pub fn spawn(transport: Arc<dyn VsockTransport>, shares: Vec<PathBuf>) -> Self {
        Self(tokio::spawn(follow(transport, shares)))
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}
