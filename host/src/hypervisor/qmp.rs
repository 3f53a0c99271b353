//! A small QMP (QEMU Machine Protocol) client.
//!
//! Protocol primer: QEMU listens on a unix socket; a client reads the
//! greeting (`{"QMP": …}`), sends `{"execute":"qmp_capabilities"}`, then
//! one command at a time, each answered by `{"return": …}` or
//! `{"error": {"class","desc"}}`. Asynchronous `{"event": …}` lines may come
//! in between and are skipped. QEMU serves one client at a time, so each
//! call here opens its own short connection: a restarted daemon, or a CLI,
//! never finds the socket taken.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::HypervisorError;

const TIMEOUT: Duration = Duration::from_secs(5);

pub struct Qmp {
    socket: PathBuf,
}

impl Qmp {
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_owned(),
        }
    }

    /// Runs `command` with `arguments`; answers its `return` value.
    pub fn execute(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, HypervisorError> {
        let io = |source| HypervisorError::Control {
            path: self.socket.clone(),
            source,
        };
        let stream = UnixStream::connect(&self.socket).map_err(io)?;
        stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
        let mut writer = stream.try_clone().map_err(io)?;
        let mut reader = BufReader::new(stream);
        read_message(&mut reader).map_err(io)?; // the greeting
        let mut exchange = |request: Value| -> Result<Value, HypervisorError> {
            let mut line =
                serde_json::to_vec(&request).map_err(|e| io(std::io::Error::other(e)))?;
            line.push(b'\n');
            writer.write_all(&line).map_err(io)?;
            loop {
                let message = read_message(&mut reader).map_err(io)?;
                if message.get("event").is_some() {
                    continue;
                }
                if let Some(value) = message.get("return") {
                    return Ok(value.clone());
                }
                let desc = message
                    .pointer("/error/desc")
                    .and_then(Value::as_str)
                    .unwrap_or("malformed answer");
                return Err(HypervisorError::Command {
                    command: request["execute"].as_str().unwrap_or("?").to_owned(),
                    message: desc.to_owned(),
                });
            }
        };
        exchange(json!({"execute": "qmp_capabilities"}))?;
        let mut request = json!({ "execute": command });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        exchange(request)
    }
}

fn read_message(reader: &mut impl BufRead) -> std::io::Result<Value> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    serde_json::from_str(&line).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A scripted QMP server: greeting, capabilities, then an event and the answer.
    #[test]
    fn skips_events_and_maps_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            for answer in [
                r#"{"return": {"status": "running", "running": true}}"#,
                r#"{"error": {"class": "GenericError", "desc": "nope"}}"#,
            ] {
                let (stream, _) = listener.accept().unwrap();
                let mut w = stream.try_clone().unwrap();
                let mut r = BufReader::new(stream);
                writeln!(w, r#"{{"QMP": {{"version": {{}}}}}}"#).unwrap();
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                writeln!(w, r#"{{"return": {{}}}}"#).unwrap();
                line.clear();
                r.read_line(&mut line).unwrap();
                writeln!(w, r#"{{"event": "RESUME", "data": {{}}}}"#).unwrap();
                writeln!(w, "{answer}").unwrap();
            }
        });
        let qmp = Qmp::new(&path);
        let status = qmp.execute("query-status", None).unwrap();
        assert_eq!(status["status"], "running");
        let err = qmp.execute("quit", None).unwrap_err().to_string();
        assert!(err.contains("quit") && err.contains("nope"), "{err}");
        server.join().unwrap();
    }
}
