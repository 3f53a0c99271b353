//! Changed paths to the guest: coalesced over [`WINDOW`], deduplicated,
//! sent in batches of at most `MAX_BATCH` on one long-lived stream to the
//! guest's file-events service (vsock 1029), each batch waiting for the
//! guest's reply before the next.
//!
//! Everything is bounded: the channel from the watcher (the watcher drops
//! beyond it), the paths gathered per window ([`MAX_PENDING`], the rest
//! dropped and counted), and each reply's wait ([`REPLY_LIMIT`]).
//!
//! Away from Linux, [`Stamps`] also drops a change whose file looks exactly
//! as it did when it was last relayed (modification time, size, inode):
//! FSEvents and ReadDirectoryChangesW report a path's flags cumulatively or
//! coarsely, so the guest's own touch could come back as a "modification".
//! inotify says exactly what happened, and the watcher keeps only content
//! events there.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use vmctl_proto::file_events::{path_ok, Batch, BatchReply, MAX_BATCH};
use vmctl_proto::VSOCK_PORT_FILE_EVENTS;

use super::FileEventsError;
use crate::vsock::{GuestStream, VsockTransport};

/// How long changes are gathered before they are sent: an editor's save is
/// a burst of events (write, rename, chmod) that should wake a watcher once.
pub const WINDOW: Duration = Duration::from_millis(20);

/// Distinct paths gathered in one window; beyond, dropped and counted.
pub const MAX_PENDING: usize = 4 * MAX_BATCH;

/// How long the guest may take to raise one batch.
const REPLY_LIMIT: Duration = Duration::from_secs(10);

/// Waits for a first path, then gathers the others that arrive within
/// [`WINDOW`], each once, at most `max`; returns them in arrival order and
/// how many were dropped. `None` when the channel closed.
pub async fn gather(
    receiver: &mut mpsc::Receiver<PathBuf>,
    max: usize,
) -> Option<(Vec<PathBuf>, u64)> {
    let first = receiver.recv().await?;
    let mut seen = HashSet::from([first.clone()]);
    let mut paths = vec![first];
    let mut dropped = 0u64;
    let deadline = tokio::time::Instant::now() + WINDOW;
    while let Ok(Some(path)) = tokio::time::timeout_at(deadline, receiver.recv()).await {
        if seen.contains(&path) {
            continue;
        }
        if paths.len() >= max {
            dropped += 1;
            continue;
        }
        seen.insert(path.clone());
        paths.push(path);
    }
    Some((paths, dropped))
}

/// What a file looked like when it was last relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let metadata = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        modified: metadata.modified().ok(),
        len: metadata.len(),
        inode,
    })
}

/// The last relayed [`Stamp`] of recent paths, at most [`Stamps::MAX`].
#[derive(Default)]
pub struct Stamps(HashMap<PathBuf, Stamp>);

impl Stamps {
    const MAX: usize = 4096;

    /// Whether `path` changed since it was last relayed; remembers it now.
    pub fn changed(&mut self, path: &Path) -> bool {
        let Some(now) = stamp(path) else {
            // Gone or unreadable: the guest will say.
            return true;
        };
        if self.0.get(path) == Some(&now) {
            return false;
        }
        if self.0.len() >= Self::MAX {
            self.0.clear();
        }
        self.0.insert(path.to_owned(), now);
        true
    }
}

/// The stream to the guest's service, opened when first needed and again
/// after it broke.
pub struct Guest<'a> {
    transport: &'a dyn VsockTransport,
    stream: Option<GuestStream>,
}

impl<'a> Guest<'a> {
    pub fn new(transport: &'a dyn VsockTransport) -> Self {
        Self {
            transport,
            stream: None,
        }
    }

    /// Sends `paths` in batches; a broken stream is opened again once.
    pub async fn send(&mut self, paths: &[PathBuf]) -> Result<BatchReply, FileEventsError> {
        let mut total = BatchReply::default();
        for chunk in paths.chunks(MAX_BATCH) {
            let batch = Batch {
                paths: chunk.to_vec(),
            };
            let reply = match self.send_batch(&batch).await {
                Ok(reply) => reply,
                Err(e) => {
                    tracing::debug!(error = %crate::error_chain(&e), "file-events stream broke; opening it again");
                    self.send_batch(&batch).await?
                }
            };
            total.raised = total.raised.saturating_add(reply.raised);
            total.skipped = total.skipped.saturating_add(reply.skipped);
        }
        Ok(total)
    }

    async fn send_batch(&mut self, batch: &Batch) -> Result<BatchReply, FileEventsError> {
        let mut stream = match self.stream.take() {
            Some(stream) => stream,
            None => self
                .transport
                .connect(VSOCK_PORT_FILE_EVENTS)
                .await
                .map_err(FileEventsError::Connect)?,
        };
        batch
            .write(&mut stream)
            .await
            .map_err(FileEventsError::Wire)?;
        let reply = tokio::time::timeout(REPLY_LIMIT, BatchReply::read(&mut stream))
            .await
            .map_err(|_| FileEventsError::Slow(REPLY_LIMIT))?
            .map_err(FileEventsError::Wire)?;
        self.stream = Some(stream);
        Ok(reply)
    }
}

/// Relays what `receiver` yields until it closes.
pub async fn run(transport: &dyn VsockTransport, mut receiver: mpsc::Receiver<PathBuf>) {
    let mut guest = Guest::new(transport);
    let mut stamps = Stamps::default();
    let mut dropped_total = 0u64;
    while let Some((mut paths, dropped)) = gather(&mut receiver, MAX_PENDING).await {
        if dropped > 0 {
            dropped_total += dropped;
            tracing::warn!(
                dropped,
                dropped_total,
                "too many desktop changes at once: some were not raised in the VM"
            );
        }
        paths.retain(|path| path_ok(path));
        if !cfg!(target_os = "linux") {
            paths.retain(|path| stamps.changed(path));
        }
        if paths.is_empty() {
            continue;
        }
        match guest.send(&paths).await {
            Ok(reply) => tracing::debug!(
                raised = reply.raised,
                skipped = reply.skipped,
                "desktop changes raised in the VM"
            ),
            Err(e) => tracing::debug!(
                paths = paths.len(),
                error = %crate::error_chain(&e),
                "desktop changes not raised in the VM"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_window_gathers_each_path_once_and_bounded() {
        let (sender, mut receiver) = mpsc::channel(64);
        for name in ["a", "b", "a", "c", "b", "d", "e"] {
            sender
                .send(PathBuf::from(format!("/s/{name}")))
                .await
                .unwrap();
        }
        let (paths, dropped) = gather(&mut receiver, 3).await.unwrap();
        let names: Vec<_> = paths.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(names, ["/s/a", "/s/b", "/s/c"]);
        assert_eq!(dropped, 2, "d and e");
        drop(sender);
        assert!(gather(&mut receiver, 3).await.is_none());
    }

    #[tokio::test]
    async fn batches_are_answered_and_a_broken_stream_is_opened_again() {
        use super::super::test_utils::Scripted;
        use tokio::io::AsyncWriteExt;
        // The first stream breaks after one batch; the second serves on.
        let guest = Scripted::new(|port, n, mut stream| async move {
            assert_eq!(port, VSOCK_PORT_FILE_EVENTS);
            while let Ok(Some(batch)) = Batch::read(&mut stream).await {
                assert!(batch.paths.len() <= MAX_BATCH);
                let reply = BatchReply {
                    raised: batch.paths.len() as u16,
                    skipped: 0,
                };
                stream.write_all(&reply.encode()).await.unwrap();
                if n == 0 {
                    return;
                }
            }
        });
        let mut sender = Guest::new(&guest);
        let paths: Vec<PathBuf> = (0..MAX_BATCH + 10)
            .map(|n| PathBuf::from(format!("/s/{n}")))
            .collect();
        let reply = sender.send(&paths).await.unwrap();
        assert_eq!(usize::from(reply.raised), paths.len(), "two batches");
        assert_eq!(guest.connects(), 2, "the broken stream was opened again");
        let reply = sender.send(&paths[..1]).await.unwrap();
        assert_eq!(reply.raised, 1);
        assert_eq!(guest.connects(), 2, "a working stream is kept");
    }

    #[test]
    fn stamps_tell_a_touch_from_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "one").unwrap();
        let mut stamps = Stamps::default();
        assert!(stamps.changed(&file), "first sight");
        // What the guest's touch does: open, same mode, close.
        let handle = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        handle
            .set_permissions(handle.metadata().unwrap().permissions())
            .unwrap();
        drop(handle);
        assert!(!stamps.changed(&file), "an echo");
        std::fs::write(&file, "one and two").unwrap();
        assert!(stamps.changed(&file), "new bytes");
        let replacement = dir.path().join("g");
        std::fs::write(&replacement, "one and tww").unwrap();
        std::fs::rename(&replacement, &file).unwrap();
        assert!(stamps.changed(&file), "a new inode");
        assert!(stamps.changed(&dir.path().join("gone")));
    }
}
