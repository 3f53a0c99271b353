//! `/containers/{id}/archive` (`docker cp`): `HEAD` answers a path's stat
//! in `X-Docker-Container-Path-Stat`, `GET` the stat and a tar of the
//! path, `PUT` extracts a tar into a directory. Thin: the engine's
//! [`crate::engine::archive`] does the work.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use tokio_stream::wrappers::ReceiverStream;

use super::error::{ApiError, ApiResult};
use crate::engine::archive::{ArchiveError, ExtractOptions};
use crate::engine::{Engine, ErrorKind};

/// The header the stat travels in.
const STAT_HEADER: &str = "X-Docker-Container-Path-Stat";

type Params = Query<HashMap<String, String>>;

pub fn routes() -> Router<Arc<Engine>> {
    Router::new().route(
        "/containers/{id}/archive",
        get(archive).head(stat).put(extract),
    )
}

/// dockerd's `httputils.BoolValue`: anything but empty, `0`, `no`,
/// `false` or `none` is true.
fn bool_value(params: &HashMap<String, String>, name: &str) -> bool {
    params.get(name).is_some_and(|v| {
        !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "" | "0" | "no" | "false" | "none"
        )
    })
}

/// The `path` parameter; dockerd's words (without their space) when missing.
fn path_param(params: &HashMap<String, String>) -> ApiResult<String> {
    params
        .get("path")
        .filter(|p| !p.is_empty())
        .cloned()
        .ok_or_else(|| ApiError::bad_request("bad parameter: pathcannot be empty"))
}

/// Status codes of the archive verbs' errors, by kind.
fn api_error(id: &str, err: ArchiveError) -> ApiError {
    if let ArchiveError::Engine(e) = err {
        return ApiError::from(e);
    }
    let status = match err.kind() {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::InvalidParameter => StatusCode::BAD_REQUEST,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::NotModified => StatusCode::NOT_MODIFIED,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let message = crate::state::error_chain(&err);
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(container = %id, error = %message, "archive request failed");
    }
    ApiError::new(status, message)
}

/// `HEAD /containers/{id}/archive?path=P`.
async fn stat(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
    Query(params): Params,
) -> ApiResult<Response> {
    let path = path_param(&params)?;
    let stat = engine
        .stat_path(&id, &path)
        .await
        .map_err(|e| api_error(&id, e))?;
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(STAT_HEADER, stat.header_value())
        .body(Body::empty())
        .unwrap_or_default())
}

/// `GET /containers/{id}/archive?path=P`.
async fn archive(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
    Query(params): Params,
) -> ApiResult<Response> {
    let path = path_param(&params)?;
    let (stat, chunks) = engine
        .archive_path(&id, &path)
        .await
        .map_err(|e| api_error(&id, e))?;
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(STAT_HEADER, stat.header_value())
        .header(header::CONTENT_TYPE, "application/x-tar")
        .body(Body::from_stream(ReceiverStream::new(chunks)))
        .unwrap_or_default())
}

/// `PUT /containers/{id}/archive?path=DIR&noOverwriteDirNonDir=…&copyUIDGID=…`.
async fn extract(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
    Query(params): Params,
    request: Request,
) -> ApiResult<StatusCode> {
    let path = path_param(&params)?;
    let options = ExtractOptions {
        no_overwrite_dir_non_dir: bool_value(&params, "noOverwriteDirNonDir"),
        copy_uid_gid: bool_value(&params, "copyUIDGID"),
    };
    let body = request.into_body().into_data_stream();
    engine
        .extract_to_dir(&id, &path, options, body)
        .await
        .map_err(|e| api_error(&id, e))?;
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_read_like_dockerd() {
        let params: HashMap<String, String> = [
            ("a", "1"),
            ("b", "true"),
            ("c", "False"),
            ("d", "none"),
            ("e", "yes"),
            ("f", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert!(bool_value(&params, "a") && bool_value(&params, "b") && bool_value(&params, "e"));
        assert!(
            !bool_value(&params, "c") && !bool_value(&params, "d") && !bool_value(&params, "f")
        );
        assert!(!bool_value(&params, "missing"));
    }

    #[test]
    fn a_missing_path_is_dockerds_bad_parameter() {
        let err = path_param(&HashMap::new()).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.message, "bad parameter: pathcannot be empty");
    }
}
