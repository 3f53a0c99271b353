//! `/exec` endpoints (and `POST /containers/{id}/exec`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use crate::engine::exec::ExecConfig;
use crate::engine::stream;
use crate::engine::{Engine, EngineError};

pub fn routes() -> Router<Arc<Engine>> {
    Router::new()
        .route("/containers/{id}/exec", post(create))
        .route("/exec/{id}/start", post(start))
        .route("/exec/{id}/resize", post(resize))
        .route("/exec/{id}/json", get(inspect))
}

async fn create(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
    body: Result<Json<ExecConfig>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(config) = body?;
    let exec_id = engine.exec_create(&id, config).await?;
    Ok((StatusCode::CREATED, Json(json!({ "Id": exec_id }))))
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct StartBody {
    detach: bool,
    tty: bool,
}

async fn start(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
    mut request: Request,
) -> ApiResult<Response> {
    let upgrade_wanted = request.headers().contains_key(axum::http::header::UPGRADE);
    // Unknown and already started execs are refused before any upgrade.
    let (_, stdin) = engine.exec_stream(&id).await?;
    let upgrade = upgrade_wanted.then(|| super::hijack::upgrade(&mut request, false));
    let bytes = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot read body: {e}")))?;
    let body: StartBody = if bytes.is_empty() {
        StartBody::default()
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?
    };
    // As dockerd: the start request's `Tty` decides the framing (raw, or
    // multiplexed even for an exec with a TTY), whatever the exec was made
    // with; the SDKs send it and read by it.
    let tty = body.tty;
    match upgrade {
        Some((mut response, on_upgrade)) if !body.detach => {
            if tty {
                response.headers_mut().insert(
                    axum::http::header::CONTENT_TYPE,
                    axum::http::HeaderValue::from_static("application/vnd.docker.raw-stream"),
                );
            }
            tokio::spawn(async move {
                let start = async {
                    match engine.exec_start(&id).await {
                        Ok((_, session)) => Ok(session),
                        Err(EngineError::Runtime(message)) => Err(message),
                        Err(e) => Err(e.to_string()),
                    }
                };
                // A process that did not start keeps the code its start gave
                // (126, 127).
                let (started, code) =
                    super::hijack::bridge_exec(on_upgrade, start, tty, stdin).await;
                if started {
                    engine.exec_finished(&id, code.unwrap_or(-1)).await;
                }
            });
            Ok(response)
        }
        Some(_) | None if body.detach => {
            let (_, mut session) = engine.exec_start(&id).await?;
            tokio::spawn(async move {
                let mut code = None;
                while let Some(frame) = stream::next_frame(&mut session.reader).await {
                    if let stream::Frame::Exit(exit) = frame {
                        code = exit;
                    }
                }
                engine.exec_finished(&id, code.unwrap_or(-1)).await;
            });
            Ok(StatusCode::OK.into_response())
        }
        _ => {
            let (_, session) = engine.exec_start(&id).await?;
            let (response, pump) = super::hijack::body_stream(None, async { Some(session) }, tty);
            tokio::spawn(async move {
                let code = pump.await;
                engine.exec_finished(&id, code.unwrap_or(-1)).await;
            });
            Ok(response)
        }
    }
}

async fn resize(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<StatusCode> {
    let parse = |name: &str| {
        params
            .get(name)
            .and_then(|v| v.parse::<u16>().ok())
            .unwrap_or(0)
    };
    engine.exec_resize(&id, parse("h"), parse("w")).await?;
    Ok(StatusCode::OK)
}

async fn inspect(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(engine.exec_inspect(&id).await?))
}
