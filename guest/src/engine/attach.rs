//! `attach`: a stream of a container's output (and input). To a running
//! container it connects at once; before `start` (how `docker run` and
//! `docker start -a` work) it waits, and `start` connects it before the init
//! runs, so no output is lost.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::{ContainerHandle, Engine, EngineError};
use crate::runtime::monitor::client::{self, Session};
use crate::runtime::monitor::protocol::Request;

/// An attach waiting for the container to start.
pub struct PendingAttach {
    pub request: Request,
    pub connected: oneshot::Sender<Result<Session, String>>,
}

/// Which streams to attach.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttachOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// A connected attach, or one that connects when the container starts.
pub enum Attached {
    Now(Session),
    Later(oneshot::Receiver<Result<Session, String>>),
}

impl Engine {
    /// Attaches to a container; the answer says whether it has a TTY.
    pub async fn attach(
        self: &Arc<Self>,
        key: &str,
        options: AttachOptions,
    ) -> Result<(bool, Attached), EngineError> {
        let handle = self.container(key).await?;
        let record = handle.record.lock().await;
        let tty = record.config.tty;
        let request = Request::Attach {
            stdin: options.stdin && record.config.open_stdin,
            stdout: options.stdout,
            stderr: options.stderr,
        };
        if record.state.status == "running" || record.state.status == "paused" {
            let socket = self.layout.monitor_socket(&record.id);
            drop(record);
            let session = client::open(&socket, &request)
                .await
                .map_err(|e| EngineError::Conflict(e.to_string()))?;
            return Ok((tty, Attached::Now(session)));
        }
        let (connected, receiver) = oneshot::channel();
        handle
            .pending_attaches
            .lock()
            .map_err(|_| EngineError::Runtime("attach list poisoned".to_owned()))?
            .push(PendingAttach { request, connected });
        Ok((tty, Attached::Later(receiver)))
    }

    /// Connects every attach that waited for this start.
    pub(super) async fn connect_pending_attaches(
        &self,
        handle: &ContainerHandle,
        socket: &std::path::Path,
    ) {
        let pending: Vec<PendingAttach> = match handle.pending_attaches.lock() {
            Ok(mut list) => list.drain(..).collect(),
            Err(_) => return,
        };
        for attach in pending {
            if attach.connected.is_closed() {
                continue;
            }
            let session = client::open(socket, &attach.request)
                .await
                .map_err(|e| e.to_string());
            let _ = attach.connected.send(session);
        }
    }
}
