//! A container's resources: `GET /containers/{id}/stats` (use, streamed as
//! JSON lines) and `POST /containers/{id}/update` (limits and restart policy).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::containers::flag;
use super::error::ApiResult;
use crate::engine::stats::StatsOptions;
use crate::engine::update::UpdateRequest;
use crate::engine::Engine;

pub fn routes() -> Router<Arc<Engine>> {
    Router::new()
        .route("/containers/{id}/stats", get(stats))
        .route("/containers/{id}/update", post(update))
}

/// `stream` defaults to true; `one-shot` (API 1.41) skips the priming sample.
async fn stats(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let options = StatsOptions {
        stream: !params.contains_key("stream") || flag(&params, "stream"),
        one_shot: flag(&params, "one-shot"),
    };
    let lines = engine.stats(&id, options).await?;
    let body = ReceiverStream::new(lines).map(Ok::<_, std::io::Error>);
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(body))
        .unwrap_or_default())
}

async fn update(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
    body: Result<Json<UpdateRequest>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(request) = body?;
    let warnings = engine.update(&id, request).await?;
    Ok(Json(json!({ "Warnings": warnings })))
}
