//! `logs`: reading the json-file log a container's monitor writes, with
//! `tail`, `since`, `until`, `timestamps` and `follow`.

use std::io::{BufRead, Seek};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Engine, EngineError};

/// What `logs` was asked for.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    pub stdout: bool,
    pub stderr: bool,
    pub follow: bool,
    pub timestamps: bool,
    /// Lines from the end; `None`: all.
    pub tail: Option<usize>,
    /// Unix times, in nanoseconds.
    pub since: Option<i128>,
    pub until: Option<i128>,
}

/// One log line.
#[derive(Debug, serde::Deserialize)]
struct Entry {
    log: String,
    stream: String,
    time: String,
}

/// Parses Docker's `since`/`until`: unix seconds with optional fraction, or RFC 3339.
pub fn parse_time(text: &str) -> Option<i128> {
    if text.is_empty() {
        return None;
    }
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return time.timestamp_nanos_opt().map(i128::from);
    }
    let (secs, frac) = text.split_once('.').unwrap_or((text, "0"));
    let secs: i128 = secs.parse().ok()?;
    let frac = format!("{frac:0<9}");
    let nanos: i128 = frac.get(..9)?.parse().ok()?;
    Some(secs * 1_000_000_000 + nanos)
}

impl LogOptions {
    /// Renders an entry as the API sends it, if it passes the filters.
    fn render(&self, entry: &Entry, tty: bool) -> Option<Vec<u8>> {
        let stream = if entry.stream == "stderr" { 2 } else { 1 };
        if (stream == 1 && !self.stdout) || (stream == 2 && !self.stderr) {
            return None;
        }
        if self.since.is_some() || self.until.is_some() {
            let time = parse_time(&entry.time)?;
            if self.since.is_some_and(|s| time < s) || self.until.is_some_and(|u| time > u) {
                return None;
            }
        }
        let mut payload = Vec::new();
        if self.timestamps {
            payload.extend_from_slice(entry.time.as_bytes());
            payload.push(b' ');
        }
        payload.extend_from_slice(entry.log.as_bytes());
        Some(if tty {
            payload
        } else {
            crate::state::stream::frame(stream, &payload)
        })
    }
}

impl Engine {
    /// Streams a container's log: whether it has a TTY, and the chunks.
    pub async fn logs(
        self: &Arc<Self>,
        key: &str,
        options: LogOptions,
    ) -> Result<(bool, mpsc::Receiver<Bytes>), EngineError> {
        if !options.stdout && !options.stderr {
            return Err(EngineError::InvalidParameter(
                "Bad parameters: you must choose at least one stream".to_owned(),
            ));
        }
        let handle = self.container(key).await?;
        let (tty, path) = {
            let record = handle.record.lock().await;
            (
                record.config.tty,
                self.layout.container(&record.id).join("container.log"),
            )
        };
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut changes = handle.changed.subscribe();
            let Some((mut reader, lines)) = read_existing(&path, &options, tty) else {
                return;
            };
            for line in lines {
                if tx.send(Bytes::from(line)).await.is_err() {
                    return;
                }
            }
            if !options.follow {
                return;
            }
            loop {
                let stopped = {
                    let record = handle.record.lock().await;
                    !record.state.running && record.state.status != "restarting"
                };
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 {
                    if !line.ends_with('\n') {
                        // A line still being written: read it again later.
                        let back = -(line.len() as i64);
                        let _ = reader.seek_relative(back);
                        break;
                    }
                    if let Ok(entry) = serde_json::from_str::<Entry>(&line) {
                        if let Some(chunk) = options.render(&entry, tty) {
                            if tx.send(Bytes::from(chunk)).await.is_err() {
                                return;
                            }
                        }
                    }
                    line.clear();
                }
                if stopped {
                    return;
                }
                let _ = tokio::time::timeout(Duration::from_millis(100), changes.changed()).await;
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok((tty, rx))
    }
}

/// Reads the log as it is now, applying `tail`; the reader is left at the end.
fn read_existing(
    path: &PathBuf,
    options: &LogOptions,
    tty: bool,
) -> Option<(std::io::BufReader<std::fs::File>, Vec<Vec<u8>>)> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(_) => {
            // No output yet: create nothing, follow an empty file.
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok()?;
            std::fs::File::open(path).ok()?
        }
    };
    let mut reader = std::io::BufReader::new(file);
    let mut chunks = Vec::new();
    let mut line = String::new();
    let mut consumed = 0u64;
    while reader.read_line(&mut line).unwrap_or(0) > 0 {
        if !line.ends_with('\n') {
            break;
        }
        consumed += line.len() as u64;
        if let Ok(entry) = serde_json::from_str::<Entry>(&line) {
            if let Some(chunk) = options.render(&entry, tty) {
                chunks.push(chunk);
            }
        }
        line.clear();
    }
    let _ = reader.seek(std::io::SeekFrom::Start(consumed));
    if let Some(tail) = options.tail {
        let skip = chunks.len().saturating_sub(tail);
        chunks.drain(..skip);
    }
    Some((reader, chunks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_docker_sends_them() {
        assert_eq!(parse_time("10"), Some(10_000_000_000));
        assert_eq!(parse_time("10.5"), Some(10_500_000_000));
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Some(1_000_000_000));
        assert_eq!(parse_time(""), None);
    }

    #[test]
    fn render_filters_streams_and_frames() {
        let entry = Entry {
            log: "hi\n".into(),
            stream: "stderr".into(),
            time: "2026-01-01T00:00:00Z".into(),
        };
        let options = LogOptions {
            stdout: true,
            stderr: false,
            ..Default::default()
        };
        assert!(options.render(&entry, false).is_none());
        let options = LogOptions {
            stdout: true,
            stderr: true,
            timestamps: true,
            ..Default::default()
        };
        let chunk = options.render(&entry, false).unwrap();
        assert_eq!(&chunk[..8], &[2, 0, 0, 0, 0, 0, 0, 24]);
        assert!(chunk.ends_with(b"2026-01-01T00:00:00Z hi\n"));
    }
}
