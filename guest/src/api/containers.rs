//! `/containers` endpoints: thin wrappers over the engine's verbs.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::error::{ApiError, ApiResult};
use crate::engine::attach::{AttachOptions, Attached};
use crate::engine::logs::{parse_time, LogOptions};
use crate::engine::{Engine, EngineError};
use crate::model::CreateRequest;

type Params = Query<HashMap<String, String>>;

pub fn routes() -> Router<Arc<Engine>> {
    Router::new()
        .route("/containers/create", post(create))
        .route("/containers/json", get(list))
        .route("/containers/prune", post(prune))
        .route("/containers/{id}/json", get(inspect))
        .route("/containers/{id}/start", post(start))
        .route("/containers/{id}/stop", post(stop))
        .route("/containers/{id}/restart", post(restart))
        .route("/containers/{id}/kill", post(kill))
        .route("/containers/{id}/wait", post(wait))
        .route("/containers/{id}", delete(remove))
        .route("/containers/{id}/{alias}", delete(remove_link))
        .route("/containers/{id}/logs", get(logs))
        .route("/containers/{id}/attach", post(attach))
        .route("/containers/{id}/attach/ws", get(attach_ws))
        .route("/containers/{id}/resize", post(resize))
        .route("/containers/{id}/pause", post(pause))
        .route("/containers/{id}/unpause", post(unpause))
        .route("/containers/{id}/rename", post(rename))
        .route("/containers/{id}/top", get(top))
        .route("/containers/{id}/changes", get(changes))
        .route("/containers/{id}/export", get(export))
}

/// Docker's query booleans: `1`, `true`, `True`.
pub fn flag(params: &HashMap<String, String>, name: &str) -> bool {
    params
        .get(name)
        .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "True" | "TRUE"))
}

fn number<T: std::str::FromStr>(
    params: &HashMap<String, String>,
    name: &str,
) -> ApiResult<Option<T>> {
    match params.get(name).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid value for {name}: {v}"))),
    }
}

async fn create(
    State(engine): State<Arc<Engine>>,
    Query(params): Params,
    body: Result<Json<CreateRequest>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(request) = body?;
    let created = engine
        .create(params.get("name").map(String::as_str), request)
        .await
        .map_err(|e| match e {
            // The docker CLI pulls the image again on any 404 from create
            // (it takes it for "no such image"); dockerd reports a missing
            // network at start. Refused here instead, with the same words.
            e @ (crate::engine::EngineError::Network(crate::network::NetworkError::NotFound(_))
            | crate::engine::EngineError::NotFoundNetwork(_)) => {
                ApiError::bad_request(e.to_string())
            }
            e => ApiError::from(e),
        })?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn list(
    State(engine): State<Arc<Engine>>,
    Query(params): Params,
) -> ApiResult<Json<Vec<Value>>> {
    let filters = crate::engine::list::parse_filters(params.get("filters").map(String::as_str))?;
    let limit = number::<i64>(&params, "limit")?.and_then(|l| usize::try_from(l).ok());
    Ok(Json(
        engine.list(flag(&params, "all"), &filters, limit).await?,
    ))
}

/// `POST /containers/prune`: removes the stopped containers that the
/// filters (`label`, `label!`, `until`) keep in; answers their ids and the
/// bytes their writable layers held.
async fn prune(State(engine): State<Arc<Engine>>, Query(params): Params) -> ApiResult<Json<Value>> {
    let filters =
        super::images::PruneFilters::parse(params.get("filters").map(String::as_str), |_, _| {
            Ok(false)
        })?;
    let mut deleted = Vec::new();
    let mut reclaimed = 0;
    for handle in engine.handles().await {
        let (id, chosen) = {
            let record = handle.record.lock().await;
            let created = super::images::unix_secs(&Some(record.created.clone()));
            let label = |k: &str| record.config.labels.get(k).map(String::as_str);
            let chosen = !record.state.running && filters.chosen(label, created);
            (record.id.clone(), chosen)
        };
        if !chosen {
            continue;
        }
        let upper = engine.layout.container(&id).join("upper");
        let size = tokio::task::spawn_blocking(move || crate::state::files::dir_size(&upper))
            .await
            .unwrap_or(0);
        if engine.remove(&id, false, false).await.is_ok() {
            deleted.push(id);
            reclaimed += size;
        }
    }
    Ok(Json(
        json!({ "ContainersDeleted": deleted, "SpaceReclaimed": reclaimed }),
    ))
}

async fn inspect(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(engine.inspect(&id).await?))
}

async fn start(State(engine): State<Arc<Engine>>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    engine.start(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn stop(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
    Query(params): Params,
) -> ApiResult<StatusCode> {
    let timeout = number::<i64>(&params, "t")?;
    engine
        .stop(&id, timeout, params.get("signal").map(String::as_str))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn restart(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
    Query(params): Params,
) -> ApiResult<StatusCode> {
    let timeout = number::<i64>(&params, "t")?;
    engine
        .restart(&id, timeout, params.get("signal").map(String::as_str))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn kill(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
    Query(params): Params,
) -> ApiResult<StatusCode> {
    engine
        .kill(&id, params.get("signal").map(String::as_str))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
    Query(params): Params,
) -> ApiResult<StatusCode> {
    engine
        .remove(&id, flag(&params, "force"), flag(&params, "v"))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /containers/{parent}/{alias}?link=1`: `docker rm --link`.
async fn remove_link(
    State(engine): State<Arc<Engine>>,
    Path((parent, alias)): Path<(String, String)>,
    Query(params): Params,
) -> ApiResult<StatusCode> {
    if !flag(&params, "link") {
        return Err(EngineError::NoSuchContainer(format!("{parent}/{alias}")).into());
    }
    engine.remove_link(&parent, &alias).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn pause(State(engine): State<Arc<Engine>>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    engine.pause(&id, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unpause(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    engine.pause(&id, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn rename(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
    Query(params): Params,
) -> ApiResult<StatusCode> {
    let name = params
        .get("name")
        .ok_or_else(|| ApiError::bad_request("name is required"))?;
    engine.rename(&id, name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /containers/{id}/export`: the root filesystem as a tar stream.
async fn export(State(engine): State<Arc<Engine>>, Path(id): Path<String>) -> ApiResult<Response> {
    let chunks = engine.export(&id).await?;
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-tar")
        .body(Body::from_stream(ReceiverStream::new(chunks)))
        .unwrap_or_default())
}

/// `GET /containers/{id}/changes`: `[{"Path", "Kind"}]`, Kind 0 modified,
/// 1 added, 2 deleted.
async fn changes(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let changes = engine.changes(&id).await?;
    Ok(Json(Value::Array(
        changes
            .into_iter()
            .map(|c| json!({"Path": c.path, "Kind": c.kind as u8}))
            .collect(),
    )))
}

async fn top(State(engine): State<Arc<Engine>>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(engine.top(&id).await?))
}

async fn resize(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
    Query(params): Params,
) -> ApiResult<StatusCode> {
    let height = number::<u16>(&params, "h")?.unwrap_or(0);
    let width = number::<u16>(&params, "w")?.unwrap_or(0);
    engine.resize(&id, height, width).await?;
    Ok(StatusCode::OK)
}

/// `POST /containers/{id}/wait`: headers at once (the CLI blocks on them
/// before it starts the container), the status when the condition is met.
async fn wait(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
    Query(params): Params,
) -> ApiResult<Response> {
    let condition = params
        .get("condition")
        .map(String::as_str)
        .unwrap_or("not-running")
        .to_owned();
    if !matches!(
        condition.as_str(),
        "not-running" | "next-exit" | "removed" | ""
    ) {
        return Err(ApiError::bad_request(format!(
            "invalid condition: \"{condition}\""
        )));
    }
    let handle = engine.container(&id).await?;
    let mut changes = handle.changed.subscribe();
    let initial_finish = handle.record.lock().await.state.finished_at.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    tokio::spawn(async move {
        loop {
            let done = {
                let record = handle.record.lock().await;
                let stopped = !record.state.running && record.state.status != "restarting";
                let code = record.state.exit_code;
                // A new exit time (a start resets it to zero, which is none).
                let finished_changed = record.state.finished_at != initial_finish
                    && record.state.finished_at != crate::engine::record::ZERO_TIME;
                let removed = record.state.status == "removed";
                // An exit ends the wait even when a restart policy brings
                // the container straight back, as dockerd notifies its
                // waiters on the way to `restarting`.
                match condition.as_str() {
                    "removed" => removed.then_some(code),
                    "next-exit" => (finished_changed || removed).then_some(code),
                    _ => (stopped || finished_changed || removed).then_some(code),
                }
            };
            if let Some(code) = done {
                let body = json!({ "StatusCode": code, "Error": null }).to_string();
                let _ = tx.send(Ok(Bytes::from(body + "\n"))).await;
                return;
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = tx.closed() => return,
            }
        }
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(ReceiverStream::new(rx)))
        .unwrap_or_default())
}

async fn logs(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
    Query(params): Params,
) -> ApiResult<Response> {
    let tail = match params.get("tail").map(String::as_str) {
        None | Some("all") | Some("") => None,
        Some(n) => Some(
            n.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid value for tail: {n}")))?,
        ),
    };
    let options = LogOptions {
        stdout: flag(&params, "stdout"),
        stderr: flag(&params, "stderr"),
        follow: flag(&params, "follow"),
        timestamps: flag(&params, "timestamps"),
        tail,
        since: params
            .get("since")
            .and_then(|t| parse_time(t))
            .filter(|t| *t > 0),
        until: params
            .get("until")
            .and_then(|t| parse_time(t))
            .filter(|t| *t > 0),
    };
    let (tty, chunks) = engine.logs(&id, options).await?;
    let content_type = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    let stream = ReceiverStream::new(chunks).map(Ok::<_, std::io::Error>);
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from_stream(stream))
        .unwrap_or_default())
}

/// The streams an attach asks for (`stdin`, `stdout`, `stderr`).
fn attach_options(params: &HashMap<String, String>) -> AttachOptions {
    AttachOptions {
        stdin: flag(params, "stdin"),
        stdout: flag(params, "stdout"),
        stderr: flag(params, "stderr"),
    }
}

/// What `logs=1` sends before the stream: the output so far, with whether
/// the container has a TTY (its frames are raw then).
async fn attach_history(
    engine: &Arc<Engine>,
    id: &str,
    params: &HashMap<String, String>,
    options: AttachOptions,
) -> ApiResult<Option<(bool, tokio::sync::mpsc::Receiver<Bytes>)>> {
    if !(flag(params, "logs") && (options.stdout || options.stderr)) {
        return Ok(None);
    }
    let history = LogOptions {
        stdout: options.stdout,
        stderr: options.stderr,
        follow: false,
        timestamps: false,
        tail: None,
        since: None,
        until: None,
    };
    Ok(Some(engine.logs(id, history).await?))
}

/// The monitor session of an attach: now, or once the container starts.
async fn attach_session(attached: Attached) -> Option<crate::engine::stream::Session> {
    match attached {
        Attached::Now(session) => Some(session),
        Attached::Later(receiver) => receiver.await.ok().and_then(Result::ok),
    }
}

async fn attach(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
    Query(params): Params,
    mut request: Request,
) -> ApiResult<Response> {
    let options = attach_options(&params);
    // As dockerd: `logs=1` sends the output so far first; `stream=0`
    // ends there (the SDKs' non-streamed attach), without waiting on the
    // container at all.
    let history = attach_history(&engine, &id, &params, options).await?;
    // A client without `Upgrade` gets the stream as the body, as from dockerd.
    let upgrade = request.headers().contains_key(header::UPGRADE);
    if !flag(&params, "stream") {
        let tty = match &history {
            Some((tty, _)) => *tty,
            None => engine.container(&id).await?.record.lock().await.config.tty,
        };
        let history = history.map(|(_, lines)| lines);
        if !upgrade {
            let (response, pump) = super::hijack::body_stream(history, async { None }, tty);
            tokio::spawn(pump);
            return Ok(response);
        }
        let (response, on_upgrade) = super::hijack::upgrade(&mut request, tty);
        tokio::spawn(super::hijack::bridge_after(
            on_upgrade,
            history,
            async { None },
            tty,
            false,
        ));
        return Ok(response);
    }
    // Such a client cannot send stdin, and must not close the container's.
    let options = AttachOptions {
        stdin: options.stdin && upgrade,
        ..options
    };
    let detach_keys = params.get("detachKeys").map(String::as_str).unwrap_or("");
    let (tty, attached) = engine.attach(&id, options, detach_keys).await?;
    let session = attach_session(attached);
    if !upgrade {
        let history = history.map(|(_, lines)| lines);
        let (response, pump) = super::hijack::body_stream(history, session, tty);
        tokio::spawn(pump);
        return Ok(response);
    }
    let (response, on_upgrade) = super::hijack::upgrade(&mut request, tty);
    tokio::spawn(super::hijack::bridge_after(
        on_upgrade,
        history.map(|(_, lines)| lines),
        session,
        tty,
        options.stdin,
    ));
    Ok(response)
}

/// `GET /containers/{id}/attach/ws`: attach over a WebSocket, as dockerd
/// offers it (browsers, the SDKs' `attach_socket(ws=True)`): the output as
/// binary messages, raw (never multiplexed: the client cannot tell stdout
/// from stderr), `logs=1` first; messages from the client are stdin.
async fn attach_ws(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
    Query(params): Params,
    upgrade: axum::extract::ws::WebSocketUpgrade,
) -> ApiResult<Response> {
    let options = attach_options(&params);
    let history = attach_history(&engine, &id, &params, options).await?;
    let attached = if flag(&params, "stream") {
        let keys = params.get("detachKeys").map(String::as_str).unwrap_or("");
        Some(engine.attach(&id, options, keys).await?.1)
    } else {
        engine.container(&id).await?;
        None
    };
    let session = async move {
        match attached {
            Some(attached) => attach_session(attached).await,
            None => None,
        }
    };
    Ok(upgrade.on_upgrade(move |socket| super::hijack::bridge_ws(socket, history, session)))
}
