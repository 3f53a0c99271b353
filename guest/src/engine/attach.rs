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

/// Docker's default detach keys, ctrl-p then ctrl-q.
pub const DEFAULT_DETACH_KEYS: &[u8] = &[0x10, 0x11];

/// Docker's detach-key notation (`ctrl-p,ctrl-q`, `a`, `ctrl-@`…`ctrl-_`,
/// `DEL`) as the bytes typed; empty text: the default.
pub fn parse_detach_keys(text: &str) -> Result<Vec<u8>, EngineError> {
    if text.is_empty() {
        return Ok(DEFAULT_DETACH_KEYS.to_vec());
    }
    const CONTROL: &str = "@abcdefghijklmnopqrstuvwxyz[\\]^_";
    text.split(',')
        .map(|key| {
            if key.len() == 1 {
                return Ok(key.as_bytes()[0]);
            }
            if key == "DEL" {
                return Ok(127);
            }
            key.strip_prefix("ctrl-")
                .filter(|c| c.len() == 1)
                .and_then(|c| CONTROL.find(c))
                .map(|code| code as u8)
                .ok_or_else(|| {
                    EngineError::InvalidParameter(format!("Invalid detach keys ({text}) provided"))
                })
        })
        .collect()
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
        detach_keys: &str,
    ) -> Result<(bool, Attached), EngineError> {
        let keys = parse_detach_keys(detach_keys)?;
        let handle = self.container(key).await?;
        let record = handle.record.lock().await;
        let tty = record.config.tty;
        let stdin = options.stdin && record.config.open_stdin;
        let request = Request::Attach {
            stdin,
            stdout: options.stdout,
            stderr: options.stderr,
            // As dockerd: the keys detach from a container with a TTY only.
            detach_keys: if stdin && tty { keys } else { Vec::new() },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_in_dockers_notation() {
        assert_eq!(parse_detach_keys("").unwrap(), vec![16, 17]);
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q").unwrap(), vec![16, 17]);
        assert_eq!(
            parse_detach_keys("ctrl-@,a,DEL,ctrl-_").unwrap(),
            vec![0, b'a', 127, 31]
        );
        assert_eq!(parse_detach_keys("ctrl-\\").unwrap(), vec![28]);
        for bad in ["ctrl-", "ctrl-1", "ab", "ctrl-p,", "shift-a"] {
            assert_eq!(
                parse_detach_keys(bad).unwrap_err().to_string(),
                format!("Invalid detach keys ({bad}) provided"),
                "{bad}"
            );
        }
    }
}
