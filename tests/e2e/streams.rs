//! Exec and attach streams for clients other than the docker CLI: a plain
//! HTTP client gets the output as the answer's body, a WebSocket client
//! (`attach/ws`) as binary messages.

use std::time::Duration;

use serde_json::Value;
use vmctl_tests::{eventually, require_root, Engine};

const LONG: Duration = Duration::from_secs(60);

#[test]
fn plain_http_clients_get_exec_and_attach_output_as_the_body() {
    require_root!();
    let engine = Engine::start();
    engine.ok(&["run", "-d", "--name", "web", "hello"]);
    let socket = engine.docker_host();
    let socket = socket.trim_start_matches("unix://");
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--unix-socket", socket])
            .args(args)
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let created = curl(&[
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"AttachStdout":true,"AttachStderr":true,"Cmd":["sh","-c","echo out; echo err >&2; exit 4"]}"#,
        "http://d/containers/web/exec",
    ]);
    let created: Value = serde_json::from_slice(&created).unwrap();
    let exec_id = created["Id"].as_str().unwrap().to_owned();
    let body = curl(&[
        "-H",
        "Content-Type: application/json",
        "-d",
        "{}",
        &format!("http://d/exec/{exec_id}/start"),
    ]);
    // Docker's multiplexed frames: stdout, then stderr.
    let mut frames = Vec::new();
    let mut rest = &body[..];
    while rest.len() >= 8 {
        let len = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        frames.push((
            rest[0],
            String::from_utf8_lossy(&rest[8..8 + len]).into_owned(),
        ));
        rest = &rest[8 + len..];
    }
    frames.sort();
    assert_eq!(
        frames,
        [(1, "out\n".to_owned()), (2, "err\n".to_owned())],
        "{body:?}"
    );
    assert!(eventually(LONG, || {
        let inspect: Value =
            serde_json::from_slice(&curl(&[&format!("http://d/exec/{exec_id}/json")])).unwrap();
        inspect["ExitCode"] == 4
    }));

    // attach logs=1&stream=0 without an upgrade: the logs as the body.
    engine.ok(&["run", "--name", "said", "hello", "echo", "hello there"]);
    let body = curl(&[
        "-X",
        "POST",
        "http://d/containers/said/attach?logs=1&stream=0&stdout=1",
    ]);
    assert_eq!(&body[8..], b"hello there\n", "{body:?}");
}

/// `GET /containers/{id}/attach/ws`: the logs so far, then the output as
/// raw binary messages; messages sent are the container's stdin.
#[test]
fn attach_over_a_websocket_sends_output_and_takes_stdin() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    require_root!();
    let engine = Engine::start();
    engine.ok(&[
        "run",
        "-d",
        "-i",
        "--name",
        "wsbox",
        "hello",
        "sh",
        "-c",
        "echo said-before; cat",
    ]);
    assert!(eventually(LONG, || engine.ok(&["logs", "wsbox"]) == "said-before"));
    let host = engine.docker_host();
    let socket = host.trim_start_matches("unix://").to_owned();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let received = runtime.block_on(async move {
        let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
        let url = "ws://localhost/v1.41/containers/wsbox/attach/ws?logs=1&stream=1&stdin=1&stdout=1&stderr=1";
        let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
        let mut text = String::new();
        let mut sent = false;
        while let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_secs(30), ws.next()).await
        {
            if let Message::Binary(bytes) = message {
                text.push_str(&String::from_utf8_lossy(&bytes));
            }
            if text.contains("said-before") && !sent {
                ws.send(Message::Binary(b"through-ws\n".to_vec().into())).await.unwrap();
                sent = true;
            }
            if text.contains("through-ws") {
                break;
            }
        }
        let _ = ws.close(None).await;
        text
    });
    assert_eq!(received, "said-before\nthrough-ws\n");
    // An unknown container is refused before any upgrade.
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--unix-socket",
        ])
        .arg(host.trim_start_matches("unix://"))
        .args([
            "-H",
            "Connection: Upgrade",
            "-H",
            "Upgrade: websocket",
            "-H",
            "Sec-WebSocket-Version: 13",
            "-H",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "http://d/containers/nosuch/attach/ws?stream=1&stdout=1",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
}
