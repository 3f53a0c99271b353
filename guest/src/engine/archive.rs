//! `docker cp`: the stat of a path in a container, a tar of it, and a tar
//! extracted into a directory of it (`HEAD`/`GET`/`PUT
//! /containers/{id}/archive`), on running and stopped containers alike,
//! through their volumes and binds.
//!
//! The engine never touches the container's files itself: each request
//! runs one `vmctl-guest cp` process ([`crate::runtime::cp`]), which builds
//! the container's view in a mount namespace of its own and works inside
//! it. This side describes the view (the root overlay, the mounts, the
//! flags), streams the tar between the client and that process, and turns
//! its answers into dockerd's errors and events (`archive-path`,
//! `extract-to-dir`). The process is killed and reaped when the client
//! goes away; its mounts die with it.

use std::io;
use std::process::Stdio;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use super::{Engine, EngineError, ErrorKind};
use crate::runtime::cp::{FailKind, Op, PathStat, Reply, Request, View, ViewMount};

/// The engine's `/etc` files, bind-mounted in every run.
const ETC_FILES: [(&str, &str); 3] = [
    ("hostname", "/etc/hostname"),
    ("hosts", "/etc/hosts"),
    ("resolv.conf", "/etc/resolv.conf"),
];

/// Errors of the archive verbs.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("Could not find the file {path} in container {container}")]
    NotFound { path: String, container: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Failed(String),
    #[error("cannot run the copy process")]
    Spawn(#[source] io::Error),
    #[error("the copy process ended without an answer")]
    NoAnswer,
}

impl ArchiveError {
    /// The kind of the error, for the API's status code.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Engine(e) => e.kind(),
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::Invalid(_) => ErrorKind::InvalidParameter,
            Self::Failed(_) | Self::Spawn(_) | Self::NoAnswer => ErrorKind::Internal,
        }
    }
}

/// `PUT`'s options.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExtractOptions {
    pub no_overwrite_dir_non_dir: bool,
    pub copy_uid_gid: bool,
}

/// A tar being streamed out of a container.
pub type TarStream = mpsc::Receiver<io::Result<Bytes>>;

impl Engine {
    /// `HEAD`: the stat of `path` in the container `key`.
    pub async fn stat_path(&self, key: &str, path: &str) -> Result<PathStat, ArchiveError> {
        let (request, record) = self.cp_request(key, path, Op::Stat).await?;
        let mut child = CpChild::spawn(&self.options.self_exe, &request, &record.id, false)?;
        let answer = child.stat(key, path).await;
        child.finish().await;
        answer
    }

    /// `GET`: the stat of `path` and a tar of it, streamed as it is made.
    pub async fn archive_path(
        &self,
        key: &str,
        path: &str,
    ) -> Result<(PathStat, TarStream), ArchiveError> {
        let (request, record) = self.cp_request(key, path, Op::Archive).await?;
        let mut child = CpChild::spawn(&self.options.self_exe, &request, &record.id, false)?;
        let stat = match child.stat(key, path).await {
            Ok(stat) => stat,
            Err(e) => {
                child.finish().await;
                return Err(e);
            }
        };
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(child.stream_out(tx));
        self.publish_container(&record, "archive-path", Default::default());
        Ok((stat, rx))
    }

    /// `PUT`: extracts the tar `body` into the directory `path`.
    pub async fn extract_to_dir<S, E>(
        &self,
        key: &str,
        path: &str,
        options: ExtractOptions,
        body: S,
    ) -> Result<(), ArchiveError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let (request, record) = {
            let user = self
                .container(key)
                .await?
                .record
                .lock()
                .await
                .config
                .user
                .clone();
            let op = Op::Extract {
                no_overwrite_dir_non_dir: options.no_overwrite_dir_non_dir,
                chown_to_user: (options.copy_uid_gid && !user.is_empty()).then_some(user),
            };
            self.cp_request(key, path, op).await?
        };
        let mut child = CpChild::spawn(&self.options.self_exe, &request, &record.id, true)?;
        let stdin = child.child.stdin.take();
        let pump = tokio::spawn(pump(body, stdin, record.id.clone()));
        let answer = child.answer(key, path).await;
        // The process answered (or died): what the client still sends has
        // nowhere to go.
        pump.abort();
        child.finish().await;
        answer?;
        self.publish_container(&record, "extract-to-dir", Default::default());
        Ok(())
    }

    /// The request for the `cp` process: the container's view as of now.
    async fn cp_request(
        &self,
        key: &str,
        path: &str,
        op: Op,
    ) -> Result<(Request, super::ContainerRecord), ArchiveError> {
        let record = self.container(key).await?.record.lock().await.clone();
        let dir = self.layout.container(&record.id);
        let mut mounts: Vec<ViewMount> = record
            .mounts
            .iter()
            .filter(|m| matches!(m.kind.as_str(), "volume" | "bind") && !m.source.is_empty())
            .map(|m| ViewMount {
                source: m.source.clone().into(),
                destination: m.destination.clone(),
                rw: m.rw,
                volume: true,
            })
            .collect();
        for (file, destination) in ETC_FILES {
            let source = dir.join(file);
            let shadowed = mounts.iter().any(|m| m.destination == destination);
            if source.is_file() && !shadowed {
                mounts.push(ViewMount {
                    source,
                    destination: destination.to_owned(),
                    rw: !record.host_config.readonly_rootfs,
                    volume: false,
                });
            }
        }
        let request = Request {
            op,
            path: path.to_owned(),
            view: View {
                rootfs: dir.join("rootfs"),
                lower: record.layers.clone(),
                upper: dir.join("upper"),
                work: dir.join("work"),
                mounts,
                readonly_rootfs: record.host_config.readonly_rootfs,
            },
        };
        Ok((request, record))
    }
}

/// Feeds the request body to the process's stdin; closes it at the end.
async fn pump<S, E>(mut body: S, stdin: Option<tokio::process::ChildStdin>, id: String)
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let Some(mut stdin) = stdin else { return };
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => {
                if stdin.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                // The client went away mid-body: the tar ends short, and
                // the process reports it.
                tracing::info!(container = %id, error = %e, "cp: the archive upload ended early");
                return;
            }
        }
    }
    let _ = stdin.shutdown().await;
}

/// A running `vmctl-guest cp` and its answers.
struct CpChild {
    /// The container's id, for the logs.
    id: String,
    child: tokio::process::Child,
    replies: tokio::io::Lines<BufReader<tokio::net::unix::pipe::Receiver>>,
}

impl CpChild {
    /// Runs `self_exe cp REQUEST` with its answers on fd 3, stdout piped,
    /// stdin piped when `input`.
    fn spawn(
        self_exe: &std::path::Path,
        request: &Request,
        id: &str,
        input: bool,
    ) -> Result<Self, ArchiveError> {
        let json =
            serde_json::to_string(request).map_err(|e| ArchiveError::Spawn(io::Error::other(e)))?;
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| ArchiveError::Spawn(e.into()))?;
        let write_fd = std::os::fd::AsRawFd::as_raw_fd(&write);
        let mut command = tokio::process::Command::new(self_exe);
        command
            .arg("cp")
            .arg(json)
            .stdin(if input { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        let reply_fd = crate::runtime::cp::REPLY_FD;
        // SAFETY: dup2 and fcntl are async-signal-safe; `write_fd` stays
        // open in the parent until spawn returns.
        unsafe {
            command.pre_exec(move || {
                let done = if write_fd == reply_fd {
                    libc::fcntl(reply_fd, libc::F_SETFD, 0)
                } else {
                    libc::dup2(write_fd, reply_fd)
                };
                if done < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(ArchiveError::Spawn)?;
        drop(write);
        let receiver =
            tokio::net::unix::pipe::Receiver::from_owned_fd(read).map_err(ArchiveError::Spawn)?;
        Ok(Self {
            id: id.to_owned(),
            child,
            replies: BufReader::new(receiver).lines(),
        })
    }

    /// The next answer; `None` when the process closed fd 3.
    async fn reply(&mut self) -> Option<Reply> {
        loop {
            match self.replies.next_line().await {
                Ok(Some(line)) => match serde_json::from_str(&line) {
                    Ok(reply) => return Some(reply),
                    Err(_) => continue,
                },
                _ => return None,
            }
        }
    }

    /// Waits for the stat (HEAD, GET).
    async fn stat(&mut self, key: &str, path: &str) -> Result<PathStat, ArchiveError> {
        match self.reply().await {
            Some(Reply::Stat(stat)) => Ok(stat),
            Some(Reply::Error { kind, message }) => Err(failure(kind, message, key, path)),
            Some(Reply::Done) | None => Err(ArchiveError::NoAnswer),
        }
    }

    /// Waits for the outcome (PUT).
    async fn answer(&mut self, key: &str, path: &str) -> Result<(), ArchiveError> {
        loop {
            match self.reply().await {
                Some(Reply::Done) => return Ok(()),
                Some(Reply::Error { kind, message }) => {
                    return Err(failure(kind, message, key, path))
                }
                Some(Reply::Stat(_)) => continue,
                None => return Err(ArchiveError::NoAnswer),
            }
        }
    }

    /// Kills the process if it still runs, and reaps it.
    async fn finish(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Sends the tar on stdout to `tx` until it ends, the process fails
    /// (the stream then ends with an error) or the client goes away (the
    /// process is killed).
    async fn stream_out(mut self, tx: mpsc::Sender<io::Result<Bytes>>) {
        let Some(mut stdout) = self.child.stdout.take() else {
            self.finish().await;
            return;
        };
        let mut buffer = vec![0u8; 64 << 10];
        loop {
            let n = tokio::select! {
                read = stdout.read(&mut buffer) => read,
                _ = tx.closed() => {
                    tracing::debug!(container = %self.id, "cp: the client went away; stopping the archive");
                    self.finish().await;
                    return;
                }
            };
            match n {
                Ok(0) => break,
                Ok(n) => {
                    if tx
                        .send(Ok(Bytes::copy_from_slice(&buffer[..n])))
                        .await
                        .is_err()
                    {
                        self.finish().await;
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    self.finish().await;
                    return;
                }
            }
        }
        match self.reply().await {
            Some(Reply::Done) => {}
            Some(Reply::Error { message, .. }) => {
                tracing::info!(container = %self.id, error = %message, "cp: the archive ended with an error");
                let _ = tx.send(Err(io::Error::other(message))).await;
            }
            _ => {
                let _ = tx
                    .send(Err(io::Error::other("the archive ended early")))
                    .await;
            }
        }
        let _ = self.child.wait().await;
    }
}

/// The client's error for a failure the process reported.
fn failure(kind: FailKind, message: String, key: &str, path: &str) -> ArchiveError {
    match kind {
        FailKind::NotFound => ArchiveError::NotFound {
            path: path.to_owned(),
            container: key.to_owned(),
        },
        FailKind::Invalid => ArchiveError::Invalid(message),
        FailKind::Failed => ArchiveError::Failed(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_map_to_dockerds_errors() {
        let err = failure(FailKind::NotFound, "x".into(), "box", "/nope");
        assert_eq!(
            err.to_string(),
            "Could not find the file /nope in container box"
        );
        assert_eq!(err.kind(), ErrorKind::NotFound);
        let err = failure(
            FailKind::Invalid,
            "extraction point is not a directory".into(),
            "box",
            "/etc/passwd",
        );
        assert_eq!(err.kind(), ErrorKind::InvalidParameter);
        assert_eq!(err.to_string(), "extraction point is not a directory");
        assert_eq!(
            failure(FailKind::Failed, "bad".into(), "b", "/").kind(),
            ErrorKind::Internal
        );
    }
}
