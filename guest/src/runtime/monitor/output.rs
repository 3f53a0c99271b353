//! The container's output: appended to the json-file log and fanned out to
//! attached clients as multiplexed frames.
//!
//! An attached client gets its frames through a queue of at most
//! [`ATTACH_QUEUE`] frames (each at most one 32 KiB read, so a few MiB). A
//! client that lets it fill (it stopped reading while the container prints)
//! is dropped from the fan-out, and its stream ends once the queued frames
//! are out: the container never waits on a client and the monitor's memory
//! stays bounded. The json-file log is written whatever the clients do, so
//! `docker logs` still has everything.

use std::cell::RefCell;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::rc::Rc;

use tokio::sync::mpsc::{self, error::TrySendError};

use super::protocol::frame;

/// Frames queued for one attached client before it counts as stalled.
pub const ATTACH_QUEUE: usize = 256;

/// One attached client, behind a bounded queue.
struct Attached {
    stdout: bool,
    stderr: bool,
    frames: mpsc::Sender<Vec<u8>>,
}

/// Log file and subscribers of one process's output.
pub struct Output {
    log: Option<File>,
    /// Bytes of an unfinished line, per stream (1 stdout, 2 stderr).
    partial: [Vec<u8>; 3],
    attached: Vec<Attached>,
}

pub type SharedOutput = Rc<RefCell<Output>>;

/// A json-file log line.
#[derive(serde::Serialize)]
struct LogLine<'a> {
    log: &'a str,
    stream: &'a str,
    time: String,
}

impl Output {
    /// Output logged to `log_path` (appending), or not logged when `None`.
    pub fn new(log_path: Option<&Path>) -> std::io::Result<SharedOutput> {
        let log = match log_path {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
            None => None,
        };
        Ok(Rc::new(RefCell::new(Self {
            log,
            partial: Default::default(),
            attached: Vec::new(),
        })))
    }

    /// Adds an attached client; it reads its frames from the answer.
    pub fn attach(&mut self, stdout: bool, stderr: bool) -> mpsc::Receiver<Vec<u8>> {
        let (frames, receiver) = mpsc::channel(ATTACH_QUEUE);
        self.attached.push(Attached {
            stdout,
            stderr,
            frames,
        });
        receiver
    }

    /// Ends every attached client's stream (after its queued frames).
    pub fn detach_all(&mut self) {
        self.attached.clear();
    }

    /// Takes a chunk of `stream` (1 stdout, 2 stderr).
    pub fn push(&mut self, stream: u8, data: &[u8]) {
        let frame = frame(stream, data);
        self.attached.retain(|a| {
            let wanted = if stream == 2 { a.stderr } else { a.stdout };
            if !wanted {
                return true;
            }
            match a.frames.try_send(frame.clone()) {
                Ok(()) => true,
                Err(TrySendError::Closed(_)) => false,
                Err(TrySendError::Full(_)) => {
                    tracing::warn!(
                        queued = ATTACH_QUEUE,
                        "an attached client stopped reading: its stream ends here (the log keeps the output)"
                    );
                    false
                }
            }
        });
        if self.log.is_none() {
            return;
        }
        let index = usize::from(stream.min(2));
        let mut buffer = std::mem::take(&mut self.partial[index]);
        buffer.extend_from_slice(data);
        let mut start = 0;
        while let Some(pos) = buffer[start..].iter().position(|&b| b == b'\n') {
            self.write_log(stream, &buffer[start..start + pos + 1]);
            start += pos + 1;
        }
        // Docker splits lines longer than 16 KiB.
        if buffer.len() - start > 16 * 1024 {
            self.write_log(stream, &buffer[start..]);
            start = buffer.len();
        }
        self.partial[index] = buffer.split_off(start);
    }

    /// Flushes unfinished lines (at the end of the process).
    pub fn finish(&mut self) {
        for stream in [1u8, 2] {
            let rest = std::mem::take(&mut self.partial[usize::from(stream)]);
            if !rest.is_empty() {
                self.write_log(stream, &rest);
            }
        }
    }

    fn write_log(&mut self, stream: u8, line: &[u8]) {
        let Some(log) = self.log.as_mut() else {
            return;
        };
        let text = String::from_utf8_lossy(line);
        let entry = LogLine {
            log: &text,
            stream: if stream == 2 { "stderr" } else { "stdout" },
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        };
        if let Ok(mut json) = serde_json::to_vec(&entry) {
            json.push(b'\n');
            if let Err(e) = log.write_all(&json) {
                tracing::warn!(error = %e, "cannot write the container log");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_logged_whole_and_partials_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let output = Output::new(Some(&path)).unwrap();
        let mut rx = output.borrow_mut().attach(true, false);
        output.borrow_mut().push(1, b"hel");
        output.borrow_mut().push(1, b"lo\nwor");
        output.borrow_mut().push(2, b"err\n");
        output.borrow_mut().finish();
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["log"], "hello\n");
        assert_eq!(lines[0]["stream"], "stdout");
        assert_eq!(lines[1]["stream"], "stderr");
        assert_eq!(lines[2]["log"], "wor");
        // The subscriber wanted stdout only.
        assert_eq!(rx.try_recv().unwrap(), frame(1, b"hel"));
        assert_eq!(rx.try_recv().unwrap(), frame(1, b"lo\nwor"));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_stalled_attached_client_is_dropped_and_the_log_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let output = Output::new(Some(&path)).unwrap();
        let mut stalled = output.borrow_mut().attach(true, true);
        let mut reading = output.borrow_mut().attach(true, false);
        let total = ATTACH_QUEUE * 4;
        for i in 0..total {
            output
                .borrow_mut()
                .push(1, format!("line {i}\n").as_bytes());
            // This one keeps up.
            assert!(reading.try_recv().is_ok());
        }
        // The stalled one got its queue's worth, then its stream ended.
        let mut got = 0;
        while stalled.try_recv().is_ok() {
            got += 1;
        }
        assert_eq!(got, ATTACH_QUEUE);
        assert!(matches!(
            stalled.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        assert_eq!(output.borrow().attached.len(), 1);
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert_eq!(lines, total);
    }
}
