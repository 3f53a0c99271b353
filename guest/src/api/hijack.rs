//! Hijacked streams (`attach`, `exec start`): the `101 UPGRADED` answer,
//! Docker's multiplexed framing, and the bridge between the client's
//! connection and a monitor session, with half-close carried both ways.

use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use crate::engine::stream::{next_frame, Frame, Session};
use crate::state::stream::{frame, STDOUT};

/// The `101 UPGRADED` answer, and the future of the upgraded connection.
pub fn upgrade(
    request: &mut Request<Body>,
    tty: bool,
) -> (Response<Body>, hyper::upgrade::OnUpgrade) {
    let on_upgrade = hyper::upgrade::on(request);
    let content_type = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    let response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "tcp")
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::empty())
        .unwrap_or_default();
    (response, on_upgrade)
}

/// Pumps a monitor session to and from the client until the output ends.
/// Answers the exit code when the session carried one (exec). Without a
/// session (the container never started) the client's stream is closed.
pub async fn bridge<F>(
    on_upgrade: hyper::upgrade::OnUpgrade,
    session: F,
    tty: bool,
    stdin: bool,
) -> Option<i64>
where
    F: std::future::Future<Output = Option<Session>>,
{
    bridge_after(on_upgrade, None, session, tty, stdin).await
}

/// [`bridge`], first writing `history` (the container's logs, framed as
/// the stream is) to the client: attach with `logs=1`. Without a session
/// (`stream=0`) the stream ends after the history.
pub async fn bridge_after<F>(
    on_upgrade: hyper::upgrade::OnUpgrade,
    history: Option<tokio::sync::mpsc::Receiver<bytes::Bytes>>,
    session: F,
    tty: bool,
    stdin: bool,
) -> Option<i64>
where
    F: std::future::Future<Output = Option<Session>>,
{
    let io = upgraded(on_upgrade).await?;
    pump(io, history, session, tty, stdin).await
}

/// The exec's bridge: its process starts only once the `101` is out, as
/// under dockerd, so its first output cannot reach a client that is still
/// reading the answer's head (the Python SDK reads the socket beneath its
/// buffered reader, and loses what that reader took). A start that fails is
/// reported on the stream, as [`report_failure`] does. Answers whether the
/// process started, and then its exit code if the stream carried one.
pub async fn bridge_exec<F>(
    on_upgrade: hyper::upgrade::OnUpgrade,
    start: F,
    tty: bool,
    stdin: bool,
) -> (bool, Option<i64>)
where
    F: std::future::Future<Output = Result<Session, String>>,
{
    let Some(io) = upgraded(on_upgrade).await else {
        return (false, None);
    };
    match start.await {
        Ok(session) => (
            true,
            pump(io, None, async { Some(session) }, tty, stdin).await,
        ),
        Err(message) => {
            write_failure(io, tty, &message).await;
            (false, None)
        }
    }
}

async fn upgraded(
    on_upgrade: hyper::upgrade::OnUpgrade,
) -> Option<TokioIo<hyper::upgrade::Upgraded>> {
    match on_upgrade.await {
        Ok(upgraded) => Some(TokioIo::new(upgraded)),
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            None
        }
    }
}

/// Writes `history`, then pumps the session both ways until its output ends.
async fn pump<F>(
    mut io: TokioIo<hyper::upgrade::Upgraded>,
    history: Option<tokio::sync::mpsc::Receiver<bytes::Bytes>>,
    session: F,
    tty: bool,
    stdin: bool,
) -> Option<i64>
where
    F: std::future::Future<Output = Option<Session>>,
{
    if let Some(mut history) = history {
        while let Some(chunk) = history.recv().await {
            if io.write_all(&chunk).await.is_err() {
                return None;
            }
        }
        let _ = io.flush().await;
    }
    let Some(session) = session.await else {
        let _ = io.shutdown().await;
        return None;
    };
    let (mut client_read, mut client_write) = tokio::io::split(io);
    let Session {
        mut reader,
        mut writer,
        ..
    } = session;
    let input = tokio::spawn(async move {
        if stdin {
            let _ = tokio::io::copy(&mut client_read, &mut writer).await;
        }
        // Client half-closed (or sends nothing): stdin EOF for the process.
        let _ = writer.shutdown().await;
        // Keep the read half alive until the output is done.
        client_read
    });
    let mut exit_code = None;
    while let Some(next) = next_frame(&mut reader).await {
        let (kind, payload) = match next {
            Frame::Exit(code) => {
                exit_code = code;
                continue;
            }
            Frame::Output { kind, payload } => (kind, payload),
        };
        let result = if tty {
            client_write.write_all(&payload).await
        } else {
            client_write.write_all(&frame(kind, &payload)).await
        };
        if result.is_err() {
            break;
        }
    }
    let _ = client_write.flush().await;
    let _ = client_write.shutdown().await;
    input.abort();
    exit_code
}

/// The stream without an upgrade: a client that sent no `Upgrade` header
/// still gets the output, as dockerd sends it, as a 200 answer's body
/// (framed unless `tty`) that ends with the output. Such a client cannot
/// send stdin: the process gets EOF at once. The future pumps the session
/// into the body and answers the exit code when the session carried one.
pub fn body_stream<F>(
    history: Option<tokio::sync::mpsc::Receiver<bytes::Bytes>>,
    session: F,
    tty: bool,
) -> (
    Response<Body>,
    impl std::future::Future<Output = Option<i64>> + Send,
)
where
    F: std::future::Future<Output = Option<Session>> + Send,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(16);
    let content_type = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    let response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap_or_default();
    let pump = async move {
        if let Some(mut history) = history {
            while let Some(chunk) = history.recv().await {
                if tx.send(Ok(chunk)).await.is_err() {
                    return None;
                }
            }
        }
        let Session {
            mut reader,
            mut writer,
            ..
        } = session.await?;
        let _ = writer.shutdown().await;
        let mut exit_code = None;
        while let Some(next) = next_frame(&mut reader).await {
            let (kind, payload) = match next {
                Frame::Exit(code) => {
                    exit_code = code;
                    continue;
                }
                Frame::Output { kind, payload } => (kind, payload),
            };
            let bytes = if tty { payload } else { frame(kind, &payload) };
            if tx.send(Ok(bytes.into())).await.is_err() {
                break;
            }
        }
        exit_code
    };
    (response, pump)
}

/// The WebSocket attach: `history` (the logs so far, framed unless `tty`)
/// and then the session's output go to the client as raw binary messages;
/// the client's messages go to the session as stdin, its close as EOF.
pub async fn bridge_ws<F>(
    socket: axum::extract::ws::WebSocket,
    history: Option<(bool, tokio::sync::mpsc::Receiver<bytes::Bytes>)>,
    session: F,
) where
    F: std::future::Future<Output = Option<Session>>,
{
    use axum::extract::ws::Message;
    use futures::{SinkExt, StreamExt};
    let (mut sink, mut incoming) = socket.split();
    if let Some((tty, mut history)) = history {
        let mut pending = Vec::new();
        while let Some(chunk) = history.recv().await {
            let payloads = if tty {
                vec![chunk.to_vec()]
            } else {
                pending.extend_from_slice(&chunk);
                unframe(&mut pending)
            };
            for payload in payloads {
                if sink.send(Message::Binary(payload.into())).await.is_err() {
                    return;
                }
            }
        }
    }
    let Some(Session {
        mut reader,
        mut writer,
        ..
    }) = session.await
    else {
        let _ = sink.close().await;
        return;
    };
    let input = tokio::spawn(async move {
        while let Some(Ok(message)) = incoming.next().await {
            let bytes = match message {
                Message::Binary(bytes) => bytes.to_vec(),
                Message::Text(text) => text.as_bytes().to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });
    while let Some(next) = next_frame(&mut reader).await {
        if let Frame::Output { payload, .. } = next {
            if sink.send(Message::Binary(payload.into())).await.is_err() {
                break;
            }
        }
    }
    let _ = sink.close().await;
    input.abort();
}

/// The payloads of the whole frames at the start of `buffer` (taken out of
/// it; a partial frame stays for the next chunk).
fn unframe(buffer: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let mut payloads = Vec::new();
    let mut at = 0;
    while buffer.len() - at >= 8 {
        let len = u32::from_be_bytes([
            buffer[at + 4],
            buffer[at + 5],
            buffer[at + 6],
            buffer[at + 7],
        ]) as usize;
        if buffer.len() - at - 8 < len {
            break;
        }
        payloads.push(buffer[at + 8..at + 8 + len].to_vec());
        at += 8 + len;
    }
    buffer.drain(..at);
    payloads
}

/// Reports a failed exec start on the upgraded stream, as Docker does once
/// the client has asked for an upgrade: the message on stdout, then EOF. The
/// client then reads the exit code (126 or 127) from `GET /exec/{id}/json`.
pub async fn report_failure(on_upgrade: hyper::upgrade::OnUpgrade, tty: bool, message: String) {
    if let Some(io) = upgraded(on_upgrade).await {
        write_failure(io, tty, &message).await;
    }
}

async fn write_failure(mut io: TokioIo<hyper::upgrade::Upgraded>, tty: bool, message: &str) {
    let line = format!("{message}\r\n").into_bytes();
    let bytes = if tty { line } else { frame(STDOUT, &line) };
    let _ = io.write_all(&bytes).await;
    let _ = io.flush().await;
    let _ = io.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_apart_across_chunks() {
        let mut stream = frame(1, b"one");
        stream.extend(frame(2, b"two"));
        let (first, rest) = stream.split_at(13);
        let mut buffer = first.to_vec();
        assert_eq!(unframe(&mut buffer), vec![b"one".to_vec()]);
        assert_eq!(buffer.len(), 2);
        buffer.extend_from_slice(rest);
        assert_eq!(unframe(&mut buffer), vec![b"two".to_vec()]);
        assert!(buffer.is_empty());
    }
}
