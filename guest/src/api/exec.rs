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
    let on_upgrade_wanted = request.headers().contains_key(axum::http::header::UPGRADE);
    let (response, on_upgrade) = if on_upgrade_wanted {
        let (response, on_upgrade) = super::hijack::upgrade(&mut request, false);
        (Some(response), Some(on_upgrade))
    } else {
        (None, None)
    };
    let bytes = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot read body: {e}")))?;
    let body: StartBody = if bytes.is_empty() {
        StartBody::default()
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?
    };
    let ((exec, session), on_upgrade) = match (engine.exec_start(&id).await, on_upgrade) {
        (Ok(started), on_upgrade) => (started, on_upgrade),
        // The process did not start: once upgraded, Docker says so on the stream.
        (Err(EngineError::Runtime(message)), Some(on_upgrade)) if !body.detach => {
            tokio::spawn(super::hijack::report_failure(on_upgrade, body.tty, message));
            return Ok(response.unwrap_or_default());
        }
        (Err(e), _) => return Err(e.into()),
    };
    let tty = exec.config.tty || body.tty;
    let stdin = exec.config.attach_stdin;
    if on_upgrade.is_none() && !body.detach {
        let (response, pump) = super::hijack::body_stream(None, async { Some(session) }, tty);
        tokio::spawn(async move {
            let code = pump.await;
            engine.exec_finished(&id, code.unwrap_or(-1)).await;
        });
        return Ok(response);
    }
    if body.detach || on_upgrade.is_none() {
        let engine = engine.clone();
        tokio::spawn(async move {
            let mut session = session;
            let mut code = None;
            while let Ok(Some((kind, payload))) =
                crate::state::stream::read_frame(&mut session.reader).await
            {
                if kind == crate::state::stream::FRAME_EXIT {
                    code = serde_json::from_slice::<crate::engine::stream::ExitInfo>(&payload)
                        .ok()
                        .map(|e| e.exit_code);
                }
            }
            engine.exec_finished(&id, code.unwrap_or(-1)).await;
        });
        return Ok(StatusCode::OK.into_response());
    }
    let mut response = response.unwrap_or_default();
    if tty {
        response.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/vnd.docker.raw-stream"),
        );
    }
    let Some(on_upgrade) = on_upgrade else {
        return Ok(StatusCode::OK.into_response());
    };
    tokio::spawn(async move {
        let code = super::hijack::bridge(on_upgrade, async { Some(session) }, tty, stdin).await;
        engine.exec_finished(&id, code.unwrap_or(-1)).await;
    });
    Ok(response)
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
