//! The engine's port-binding list and its watch stream
//! (`GET /vmctl/port-bindings[?watch=1]`, types in `vmctl_proto::ports`):
//! what the host's port forwarder follows. A snapshot comes first, then one
//! `added`/`removed` line per change with the generation counting up by one,
//! and the list answers with the same state.
//!
//! Host ports 18095-18096.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::Value;
use vmctl_tests::{http, require_root, Engine};

/// A watch stream: HTTP/1.0, so the body is the raw lines until close.
struct Watch {
    reader: BufReader<UnixStream>,
}

impl Watch {
    fn open(engine: &Engine) -> Watch {
        let mut stream = UnixStream::connect(&engine.socket).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        stream
            .write_all(b"GET /vmctl/port-bindings?watch=1 HTTP/1.0\r\nHost: x\r\n\r\n")
            .expect("request");
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).expect("status line");
        assert!(line.contains(" 200 "), "{line}");
        loop {
            line.clear();
            reader.read_line(&mut line).expect("header");
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        Watch { reader }
    }

    fn next(&mut self) -> Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("event line");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }
}

#[test]
fn port_bindings_list_and_stream_follow_containers() {
    require_root!();
    let engine = Engine::start();
    let mut watch = Watch::open(&engine);
    let first = watch.next();
    assert_eq!(first["type"], "snapshot", "{first}");
    assert_eq!(first["bindings"], serde_json::json!([]), "{first}");
    let start = first["generation"].as_u64().expect("generation");

    engine.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "18095:80",
        "-p",
        "127.0.0.1:18096:80/udp",
        "hello",
    ]);
    let address = engine.ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "web"]);
    let id = engine.ok(&["inspect", "-f", "{{.Id}}", "web"]);
    let mut added = [watch.next(), watch.next()];
    added.sort_by_key(|e| e["binding"]["host_port"].as_u64());
    for (n, event) in added.iter().enumerate() {
        assert_eq!(event["type"], "added", "{event}");
        let generation = event["generation"].as_u64().unwrap();
        assert!(generation > start && generation <= start + 2, "{event}");
        assert_eq!(
            event["binding"]["container_ip"],
            address.as_str(),
            "{event}"
        );
        assert_eq!(event["binding"]["container_port"], 80, "{event}");
        assert_eq!(event["binding"]["container_id"], id.as_str(), "{event}");
        assert_eq!(event["binding"]["container_name"], "web", "{event}");
        assert_eq!(event["binding"]["host_port"], 18095 + n as u64, "{event}");
    }
    assert_eq!(added[0]["binding"]["protocol"], "tcp");
    assert_eq!(added[0]["binding"]["host_ip"], "0.0.0.0");
    assert_eq!(added[1]["binding"]["protocol"], "udp");
    assert_eq!(added[1]["binding"]["host_ip"], "127.0.0.1");

    let list = http::request(
        &engine.socket,
        "GET",
        "/vmctl/port-bindings",
        "application/json",
        b"",
    )
    .expect("list")
    .json();
    assert_eq!(list["generation"].as_u64(), Some(start + 2), "{list}");
    let bindings = list["bindings"].as_array().expect("bindings");
    assert_eq!(bindings.len(), 2, "{list}");
    // The list's order: protocol, then host address, then port.
    assert_eq!(bindings[0]["protocol"], "tcp", "{list}");

    engine.ok(&["rm", "-f", "web"]);
    for expected in [start + 3, start + 4] {
        let event = watch.next();
        assert_eq!(event["type"], "removed", "{event}");
        assert_eq!(event["generation"].as_u64(), Some(expected), "{event}");
    }
    let list = http::request(
        &engine.socket,
        "GET",
        "/vmctl/port-bindings",
        "application/json",
        b"",
    )
    .expect("list")
    .json();
    assert_eq!(list["bindings"], serde_json::json!([]), "{list}");
}
