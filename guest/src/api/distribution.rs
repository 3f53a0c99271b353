//! `GET /distribution/{name}/json`: the descriptor and platforms a registry
//! holds under a name, with the client's `X-Registry-Auth`, without pulling.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

use super::error::{ApiError, ApiResult};
use crate::engine::{Engine, EngineError};
use crate::image::reference::Named;
use crate::image::registry;

pub fn routes() -> Router<Arc<Engine>> {
    // A name holds slashes (`registry:5000/team/app`), so the rest of the
    // path is taken whole and must end in `/json`.
    Router::new().route("/distribution/{*rest}", get(inspect))
}

async fn inspect(
    State(engine): State<Arc<Engine>>,
    Path(rest): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let name = rest
        .strip_suffix("/json")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::not_found("page not found"))?;
    let named = Named::parse(name).map_err(|e| ApiError::from(EngineError::Image(e)))?;
    let auth = registry::credentials(headers.get("X-Registry-Auth").and_then(|v| v.to_str().ok()));
    let answer = engine
        .puller
        .distribution(&named, &auth)
        .await
        .map_err(|e| ApiError::from(EngineError::Image(e)))?;
    Ok(Json(answer))
}
