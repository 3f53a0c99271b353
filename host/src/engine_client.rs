//! A minimal Docker Engine API client over a unix socket, enough for the
//! CLI's own questions (the container verbs will use bollard).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

/// Errors of talking to the engine.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no engine address: pass --host unix:///path or set DOCKER_HOST")]
    NoHost,
    #[error("unsupported engine address {0}: only unix:///path is supported")]
    UnsupportedHost(String),
    #[error("cannot reach the engine at {host}")]
    Connect {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the engine at {host} answered {status}")]
    Status { host: String, status: String },
    #[error("the engine at {host} sent a malformed answer")]
    Malformed { host: String },
}

/// The engine address: `--host`, else `$DOCKER_HOST`.
pub fn resolve_host(host: Option<&str>) -> Result<String, ClientError> {
    match host {
        Some(host) => Ok(host.to_owned()),
        None => std::env::var("DOCKER_HOST").map_err(|_| ClientError::NoHost),
    }
}

fn socket_path(host: &str) -> Result<PathBuf, ClientError> {
    host.strip_prefix("unix://")
        .filter(|p| p.starts_with('/'))
        .map(PathBuf::from)
        .ok_or_else(|| ClientError::UnsupportedHost(host.to_owned()))
}

/// `GET path`, answering the JSON body of a 200.
pub fn get_json(host: &str, path: &str) -> Result<serde_json::Value, ClientError> {
    let connect = |source| ClientError::Connect {
        host: host.to_owned(),
        source,
    };
    let mut stream = UnixStream::connect(socket_path(host)?).map_err(connect)?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: vmctl\r\n\r\n").as_bytes())
        .map_err(connect)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(connect)?;
    let text = String::from_utf8_lossy(&answer);
    let malformed = || ClientError::Malformed {
        host: host.to_owned(),
    };
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(malformed)?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        return Err(ClientError::Status {
            host: host.to_owned(),
            status: status.to_owned(),
        });
    }
    serde_json::from_str(body).map_err(|_| malformed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unix_addresses() {
        assert!(socket_path("unix:///run/x.sock").is_ok());
        assert!(matches!(
            socket_path("tcp://1.2.3.4:2375"),
            Err(ClientError::UnsupportedHost(_))
        ));
    }

    #[test]
    fn unreachable_engine_names_the_address() {
        let err = get_json("unix:///nonexistent/vmctl.sock", "/version").unwrap_err();
        assert!(err.to_string().contains("unix:///nonexistent/vmctl.sock"));
    }
}
