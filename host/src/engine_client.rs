//! A minimal Docker Engine API client over a local endpoint (a unix socket
//! or a named pipe: [`crate::endpoint`]), enough for the CLI's own questions
//! (the container verbs use bollard).

use std::io::{Read, Write};

use crate::endpoint::{self, Endpoint, EndpointError};

/// Errors of talking to the engine.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no engine address: pass --host unix:///path (npipe:////./pipe/NAME on Windows) or set DOCKER_HOST")]
    NoHost,
    #[error(transparent)]
    UnsupportedHost(EndpointError),
    #[error("cannot reach the engine at {host}")]
    Connect {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Endpoint(EndpointError),
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

fn engine_endpoint(host: &str) -> Result<Endpoint, ClientError> {
    Endpoint::parse(host).map_err(ClientError::UnsupportedHost)
}

/// `GET path`, answering the JSON body of a 200.
pub fn get_json(host: &str, path: &str) -> Result<serde_json::Value, ClientError> {
    let connect = |source| ClientError::Connect {
        host: host.to_owned(),
        source,
    };
    let mut stream =
        endpoint::connect_blocking(&engine_endpoint(host)?).map_err(ClientError::Endpoint)?;
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
    fn only_local_addresses() {
        assert!(engine_endpoint("unix:///run/x.sock").is_ok());
        assert!(engine_endpoint("npipe:////./pipe/vmctl-default").is_ok());
        assert!(matches!(
            engine_endpoint("tcp://1.2.3.4:2375"),
            Err(ClientError::UnsupportedHost(_))
        ));
    }

    #[test]
    fn unreachable_engine_names_the_address() {
        let err = get_json("unix:///nonexistent/vmctl.sock", "/version").unwrap_err();
        assert!(err.to_string().contains("unix:///nonexistent/vmctl.sock"));
    }
}
