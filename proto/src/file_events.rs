//! Desktop file changes raised as inotify events in the VM: what the host
//! daemon tells the guest's file-events service.
//!
//! virtio-fs carries the desktop's files into the VM but not the desktop's
//! change notifications: a watcher in a container (`inotifywait`, webpack,
//! nodemon, `cargo watch`) never hears about an editor's save. So the
//! daemon watches the desktop side and names each changed path; the guest
//! touches that path in a way watchers see and the file does not (see
//! `vmctl-guest`'s `vm::file_events`).
//!
//! ```text
//! host → guest vsock 1029 (file events)  one long-lived framed stream
//!     host:  Batch        [u16 count][count × ([u16 len][path bytes])], big-endian
//!     guest: BatchReply   [u16 raised][u16 skipped], one per batch
//! ```
//!
//! A path is the desktop's absolute path, which is also the guest's (shares
//! are mounted at the same path). Bounds hold on both sides: at most
//! [`MAX_BATCH`] paths a batch, each at most [`MAX_PATH`] bytes, absolute,
//! without NUL, `.` or `..`. The host waits for each reply before the next
//! batch, so a slow guest slows the host's sending, never grows a queue.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Paths in one [`Batch`].
pub const MAX_BATCH: usize = 256;

/// Bytes in one path (Linux's `PATH_MAX`, with its NUL).
pub const MAX_PATH: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum FileEventsError {
    #[error("a batch of {0} paths (1 to {MAX_BATCH})")]
    Count(usize),
    #[error("a path of {0} bytes (1 to {MAX_PATH})")]
    Length(usize),
    #[error("path {0:?} is not absolute and normal")]
    Path(PathBuf),
    #[error("the file-events stream")]
    Io(#[from] std::io::Error),
}

/// Changed desktop paths, to be raised in the VM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub paths: Vec<PathBuf>,
}

/// What the guest did with a [`Batch`]: paths raised, paths skipped (gone,
/// outside every share, not a regular file, refused).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchReply {
    pub raised: u16,
    pub skipped: u16,
}

/// Whether `path` may travel: absolute, only normal components, no NUL,
/// at most [`MAX_PATH`] bytes.
pub fn path_ok(path: &Path) -> bool {
    let bytes = path.as_os_str().as_encoded_bytes();
    !bytes.is_empty()
        && bytes.len() < MAX_PATH
        && !bytes.contains(&0)
        && bytes.first() == Some(&b'/')
        && bytes
            .split(|&b| b == b'/')
            .all(|segment| segment != b"." && segment != b"..")
}

impl Batch {
    /// Writes the batch; refuses (before writing a byte) one that breaks a bound.
    pub async fn write<W: AsyncWrite + Unpin>(
        &self,
        writer: &mut W,
    ) -> Result<(), FileEventsError> {
        if self.paths.is_empty() || self.paths.len() > MAX_BATCH {
            return Err(FileEventsError::Count(self.paths.len()));
        }
        let mut out = Vec::with_capacity(2 + self.paths.len() * 64);
        out.extend_from_slice(&(self.paths.len() as u16).to_be_bytes());
        for path in &self.paths {
            if !path_ok(path) {
                return Err(FileEventsError::Path(path.clone()));
            }
            let bytes = path_bytes(path);
            out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
            out.extend_from_slice(&bytes);
        }
        writer.write_all(&out).await?;
        writer.flush().await?;
        Ok(())
    }

    /// Reads one batch; `None` at a clean end of stream (between batches).
    pub async fn read<R: AsyncRead + Unpin>(
        reader: &mut R,
    ) -> Result<Option<Self>, FileEventsError> {
        let mut count = [0u8; 2];
        match reader.read_exact(&mut count).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let count = usize::from(u16::from_be_bytes(count));
        if count == 0 || count > MAX_BATCH {
            return Err(FileEventsError::Count(count));
        }
        let mut paths = Vec::with_capacity(count);
        for _ in 0..count {
            let mut len = [0u8; 2];
            reader.read_exact(&mut len).await?;
            let len = usize::from(u16::from_be_bytes(len));
            if len == 0 || len >= MAX_PATH {
                return Err(FileEventsError::Length(len));
            }
            let mut bytes = vec![0u8; len];
            reader.read_exact(&mut bytes).await?;
            let path = path_from(bytes);
            if !path_ok(&path) {
                return Err(FileEventsError::Path(path));
            }
            paths.push(path);
        }
        Ok(Some(Self { paths }))
    }
}

impl BatchReply {
    pub fn encode(&self) -> [u8; 4] {
        let [a, b] = self.raised.to_be_bytes();
        let [c, d] = self.skipped.to_be_bytes();
        [a, b, c, d]
    }

    pub async fn read<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Self, FileEventsError> {
        let mut bytes = [0u8; 4];
        reader.read_exact(&mut bytes).await?;
        Ok(Self {
            raised: u16::from_be_bytes([bytes[0], bytes[1]]),
            skipped: u16::from_be_bytes([bytes[2], bytes[3]]),
        })
    }
}

#[cfg(unix)]
fn path_bytes(path: &Path) -> Vec<u8> {
    path.as_os_str().as_encoded_bytes().to_vec()
}

/// Paths travel as the guest's (Linux) bytes; a Windows desktop's as UTF-8.
#[cfg(not(unix))]
fn path_bytes(path: &Path) -> Vec<u8> {
    path.to_string_lossy().into_owned().into_bytes()
}

#[cfg(unix)]
fn path_from(bytes: Vec<u8>) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(bytes))
}

#[cfg(not(unix))]
fn path_from(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batches_and_replies_round_trip() {
        let batch = Batch {
            paths: vec![
                "/Users/ann/src/app.js".into(),
                "/home/u/a b/ünï".into(),
                PathBuf::from("/x").join("y"),
            ],
        };
        let mut wire = Vec::new();
        batch.write(&mut wire).await.unwrap();
        let reply = BatchReply {
            raised: 2,
            skipped: 1,
        };
        wire.extend_from_slice(&reply.encode());
        let mut reader = wire.as_slice();
        assert_eq!(Batch::read(&mut reader).await.unwrap(), Some(batch));
        assert_eq!(BatchReply::read(&mut reader).await.unwrap(), reply);
        assert!(
            Batch::read(&mut reader).await.unwrap().is_none(),
            "a clean end"
        );
    }

    #[tokio::test]
    async fn bounds_hold_on_both_sides() {
        let write = |paths: Vec<PathBuf>| async move {
            let mut wire = Vec::new();
            let result = Batch { paths }.write(&mut wire).await;
            (result, wire)
        };
        let (result, wire) = write(Vec::new()).await;
        assert!(matches!(result, Err(FileEventsError::Count(0))) && wire.is_empty());
        let many = vec![PathBuf::from("/a"); MAX_BATCH + 1];
        assert!(matches!(
            write(many).await.0,
            Err(FileEventsError::Count(_))
        ));
        for bad in ["relative", "/a/../etc", "/a/./b", "/a\0b"] {
            let (result, wire) = write(vec!["/ok".into(), bad.into()]).await;
            assert!(matches!(result, Err(FileEventsError::Path(_))), "{bad}");
            assert!(wire.is_empty(), "nothing written for {bad}");
        }
        let long = format!("/{}", "x".repeat(MAX_PATH));
        assert!(matches!(
            write(vec![long.into()]).await.0,
            Err(FileEventsError::Path(_))
        ));

        // A reader refuses what a writer would not send.
        let read = |wire: Vec<u8>| async move { Batch::read(&mut wire.as_slice()).await };
        assert!(matches!(
            read(vec![0, 0]).await,
            Err(FileEventsError::Count(0))
        ));
        let too_many = ((MAX_BATCH + 1) as u16).to_be_bytes().to_vec();
        assert!(matches!(
            read(too_many).await,
            Err(FileEventsError::Count(_))
        ));
        let mut dotdot = vec![0, 1, 0, 5];
        dotdot.extend_from_slice(b"/a/..");
        assert!(matches!(read(dotdot).await, Err(FileEventsError::Path(_))));
        let mut huge = vec![0, 1];
        huge.extend_from_slice(&(MAX_PATH as u16).to_be_bytes());
        assert!(matches!(read(huge).await, Err(FileEventsError::Length(_))));
        let truncated = vec![0, 1, 0, 9, b'/'];
        assert!(matches!(read(truncated).await, Err(FileEventsError::Io(_))));
    }
}
