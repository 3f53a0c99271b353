//! Which desktop paths containers use: the bind mounts of the running
//! containers whose sources lie in a share, read from the guest engine's
//! Docker API (vsock 2375) — `GET /containers/json` (running containers
//! with their `Mounts`) whenever `GET /events` says a container changed.
//!
//! The daemon speaks plain HTTP/1.0 here, as `crate::engine_client` does:
//! one request per stream, the answer ends when the stream does (the event
//! stream never ends until the engine goes away).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use vmctl_proto::VSOCK_PORT_API;

use super::watcher::Target;
use super::FileEventsError;
use crate::vsock::{GuestStream, VsockTransport};

/// The largest container list read (bytes).
const MAX_LIST: u64 = 8 << 20;

/// The most targets watched at once; beyond, binds are left unwatched.
pub const MAX_TARGETS: usize = 256;

/// Only container events (start, die, destroy…) change the binds in use.
const EVENTS_PATH: &str = "/events?filters=%7B%22type%22%3A%5B%22container%22%5D%7D";

/// The targets of `containers` (a `GET /containers/json` answer) that lie
/// in one of `shares`; at most [`MAX_TARGETS`].
pub fn targets(containers: &serde_json::Value, shares: &[PathBuf]) -> BTreeSet<Target> {
    let mut out = BTreeSet::new();
    let sources = containers
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|container| container.get("Mounts")?.as_array())
        .flatten()
        .filter(|mount| mount.get("Type").and_then(|t| t.as_str()) == Some("bind"))
        .filter_map(|mount| mount.get("Source")?.as_str());
    for source in sources {
        let Some(target) = target(Path::new(source), shares) else {
            continue;
        };
        if out.len() >= MAX_TARGETS {
            tracing::warn!(
                max = MAX_TARGETS,
                "too many bound paths to watch: some desktop changes will not reach containers"
            );
            break;
        }
        out.insert(target);
    }
    out
}

/// What to watch for one bind source: its real path, if that lies in a
/// share and exists on the desktop.
fn target(source: &Path, shares: &[PathBuf]) -> Option<Target> {
    if !shares.iter().any(|share| source.starts_with(share)) {
        return None;
    }
    let real = std::fs::canonicalize(source).ok()?;
    if !shares.iter().any(|share| real.starts_with(share)) {
        return None;
    }
    let metadata = std::fs::metadata(&real).ok()?;
    Some(if metadata.is_dir() {
        Target::Tree(real)
    } else {
        Target::File(real)
    })
}

/// Sends `GET path` on a fresh stream to the engine; returns the stream
/// positioned at the body, after checking the status is 200.
async fn get(
    transport: &dyn VsockTransport,
    path: &str,
) -> Result<BufReader<GuestStream>, FileEventsError> {
    let mut stream = transport
        .connect(VSOCK_PORT_API)
        .await
        .map_err(FileEventsError::Connect)?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: vmctl\r\n\r\n").as_bytes())
        .await
        .map_err(FileEventsError::Engine)?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    read_head_line(&mut reader, &mut status).await?;
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(FileEventsError::Status {
            path: path.to_owned(),
            status: status.trim().to_owned(),
        });
    }
    let mut header = String::new();
    loop {
        header.clear();
        read_head_line(&mut reader, &mut header).await?;
        if header.trim().is_empty() {
            return Ok(reader);
        }
    }
}

async fn read_head_line(
    reader: &mut BufReader<GuestStream>,
    line: &mut String,
) -> Result<(), FileEventsError> {
    let n = vmctl_proto::line::read_line(reader, line)
        .await
        .map_err(FileEventsError::Engine)?;
    if n == 0 {
        return Err(FileEventsError::Engine(
            std::io::ErrorKind::UnexpectedEof.into(),
        ));
    }
    Ok(())
}

/// The running containers, as `GET /containers/json` lists them.
pub async fn list(transport: &dyn VsockTransport) -> Result<serde_json::Value, FileEventsError> {
    let reader = get(transport, "/containers/json").await?;
    let mut body = Vec::new();
    reader
        .take(MAX_LIST)
        .read_to_end(&mut body)
        .await
        .map_err(FileEventsError::Engine)?;
    serde_json::from_slice(&body).map_err(FileEventsError::Malformed)
}

/// The engine's container events, one line each.
pub struct Events(BufReader<GuestStream>);

impl Events {
    pub async fn open(transport: &dyn VsockTransport) -> Result<Self, FileEventsError> {
        get(transport, EVENTS_PATH).await.map(Self)
    }

    /// Waits for the next event; `Ok(false)` when the stream ended.
    pub async fn next(&mut self) -> Result<bool, FileEventsError> {
        let mut line = String::new();
        let n = vmctl_proto::line::read_line(&mut self.0, &mut line)
            .await
            .map_err(FileEventsError::Engine)?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn binds_in_a_share_become_targets() {
        let desktop = tempfile::tempdir().unwrap();
        let share = desktop.path().canonicalize().unwrap().join("home");
        let outside = desktop.path().canonicalize().unwrap().join("elsewhere");
        for dir in [share.join("app/src"), outside.clone()] {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(share.join("app/.env"), "X=1").unwrap();
        std::fs::write(outside.join("secret"), "s").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&outside, share.join("escape")).unwrap();
        let bind = |source: &Path| json!({"Type": "bind", "Source": source, "Destination": "/x"});
        let containers = json!([
            {"Id": "a", "Mounts": [
                bind(&share.join("app/src")),
                bind(&share.join("app/.env")),
                {"Type": "volume", "Name": "v", "Source": share.join("app"), "Destination": "/v"},
            ]},
            {"Id": "b", "Mounts": [
                bind(&outside),
                bind(&share.join("escape")),
                bind(&share.join("missing")),
                bind(&share.join("app/src")),
            ]},
            {"Id": "c"},
        ]);
        let got = targets(&containers, std::slice::from_ref(&share));
        assert_eq!(
            got,
            BTreeSet::from([
                Target::Tree(share.join("app/src")),
                Target::File(share.join("app/.env")),
            ])
        );
        assert!(targets(&json!({"message": "x"}), &[share]).is_empty());
    }

    #[tokio::test]
    async fn the_engine_is_asked_over_plain_http() {
        use super::super::test_utils::Scripted;
        use tokio::io::AsyncBufReadExt;
        let guest = Scripted::new(|port, _, stream| async move {
            assert_eq!(port, VSOCK_PORT_API);
            let mut stream = BufReader::new(stream);
            let mut request = String::new();
            stream.read_line(&mut request).await.unwrap();
            let mut header = String::new();
            while header != "\r\n" {
                header.clear();
                stream.read_line(&mut header).await.unwrap();
            }
            let answer = if request.starts_with("GET /containers/json HTTP/1.0") {
                "HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n[{\"Id\":\"a\"}]"
            } else if request.starts_with(&format!("GET {EVENTS_PATH} HTTP/1.0")) {
                "HTTP/1.0 200 OK\r\n\r\n{\"Type\":\"container\",\"Action\":\"start\"}\n"
            } else {
                "HTTP/1.0 404 Not Found\r\n\r\n{\"message\":\"no\"}"
            };
            stream.write_all(answer.as_bytes()).await.unwrap();
        });
        assert_eq!(list(&guest).await.unwrap(), json!([{"Id": "a"}]));
        let mut events = Events::open(&guest).await.unwrap();
        assert!(events.next().await.unwrap(), "one event");
        assert!(!events.next().await.unwrap(), "then the end");
        match get(&guest, "/nope").await {
            Err(FileEventsError::Status { status, .. }) => assert!(status.contains("404")),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn targets_are_bounded() {
        let desktop = tempfile::tempdir().unwrap();
        let share = desktop.path().canonicalize().unwrap();
        let mounts: Vec<_> = (0..MAX_TARGETS + 10)
            .map(|n| {
                let dir = share.join(format!("d{n}"));
                std::fs::create_dir(&dir).unwrap();
                json!({"Type": "bind", "Source": dir, "Destination": "/x"})
            })
            .collect();
        let got = targets(&json!([{"Mounts": mounts}]), &[share]);
        assert_eq!(got.len(), MAX_TARGETS);
    }
}
