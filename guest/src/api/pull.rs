//! `POST /images/create?fromImage=…&tag=…&platform=…`: `docker pull`, and
//! the pull `docker run` does for a missing image; `POST /images/{name}/push`.
//!
//! Like dockerd, the manifest and config are fetched before the response
//! starts, so an unknown tag or a refused login is a plain HTTP error (404,
//! 401…) with `{"message": …}`. After that the answer is Docker's
//! newline-delimited JSON progress stream; a failure then ends it with an
//! `errorDetail` line.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::error::{ApiError, ApiResult};
use crate::engine::{Engine, EngineError};
use crate::image::pull::Progress;
use crate::image::reference::Named;
use crate::image::{registry, ImageError};

pub fn routes() -> Router<Arc<Engine>> {
    Router::new()
        .route("/images/create", post(create))
        .route("/auth", post(auth))
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct AuthBody {
    username: String,
    password: String,
    serveraddress: String,
}

/// `POST /auth`: `docker login`. The engine checks the credentials with the
/// registry and keeps nothing: the CLI stores them and sends them with each
/// pull and push (`X-Registry-Auth`).
async fn auth(
    State(engine): State<Arc<Engine>>,
    body: Result<axum::Json<AuthBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let axum::Json(body) = body?;
    if body.username.is_empty() {
        return Err(ApiError::bad_request("a user name is required"));
    }
    registry::login(
        engine.puller.options(),
        &body.serveraddress,
        &body.username,
        &body.password,
    )
    .await
    .map_err(|e| ApiError::from(EngineError::Image(e)))?;
    Ok(axum::Json(json!({ "Status": "Login Succeeded", "IdentityToken": "" })).into_response())
}

/// The first value of `key` in a query (empty when absent).
pub(super) fn param<'a>(params: &'a [(String, String)], key: &str) -> &'a str {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

/// `POST /images/create?fromSrc=-&repo=…&tag=…&message=…&changes=…`
/// (`docker import`): the body is a filesystem tar; the answer, as
/// dockerd's, one JSON line whose status is the new image's id.
async fn import(
    engine: &Arc<Engine>,
    params: &[(String, String)],
    body: axum::body::Body,
) -> ApiResult<Response> {
    let platform = param(params, "platform");
    let own = format!("linux/{}", vmctl_oci::image::go_arch());
    if !platform.is_empty() && platform != "linux" && platform != own {
        return Err(ApiError::bad_request(format!(
            "platform {platform} is not supported: this engine imports for {own} only"
        )));
    }
    let request = crate::engine::commit::ImportRequest {
        repo: param(params, "repo").to_owned(),
        tag: param(params, "tag").to_owned(),
        message: param(params, "message").to_owned(),
        changes: params
            .iter()
            .filter(|(k, _)| k == "changes")
            .map(|(_, v)| v.clone())
            .collect(),
    };
    let reader = super::images::BodyReader::new(body);
    let id = engine.import(reader, request).await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        json_line(&serde_json::json!({ "status": id })),
    )
        .into_response())
}

/// The reference `fromImage` and `tag` name together; a bare name (no tag
/// anywhere) means every tag, as `docker pull --all-tags` asks.
fn reference(from: &str, tag: &str) -> ApiResult<Named> {
    let image = |e: ImageError| ApiError::from(EngineError::Image(e));
    let named = Named::parse_name_only(from).map_err(image)?;
    if named.tag.is_some() || named.digest.is_some() || tag.is_empty() {
        return Ok(named);
    }
    let full = if tag.starts_with("sha256:") {
        format!("{from}@{tag}")
    } else {
        format!("{from}:{tag}")
    };
    Named::parse(&full).map_err(image)
}

async fn create(
    State(engine): State<Arc<Engine>>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult<Response> {
    match param(&params, "fromSrc") {
        "" => {}
        "-" => return import(&engine, &params, body).await,
        _ => {
            return Err(ApiError::bad_request(
                "importing from a URL is not supported by this engine: download the file and import it from stdin (docker import FILE, or -)",
            ))
        }
    }
    let from = param(&params, "fromImage");
    if from.is_empty() {
        return Err(ApiError::bad_request("fromImage is required"));
    }
    let named = reference(from, param(&params, "tag"))?;
    let auth = registry::credentials(headers.get("X-Registry-Auth").and_then(|v| v.to_str().ok()));
    let image_error = |e| ApiError::from(EngineError::Image(e));
    let names = if named.tag.is_none() && named.digest.is_none() {
        engine
            .puller
            .tags(&named, &auth)
            .await
            .map_err(image_error)?
    } else {
        vec![named]
    };
    let platform = param(&params, "platform").to_owned();
    let mut plans = Vec::new();
    for named in &names {
        let plan = engine
            .puller
            .resolve(named, &platform, &auth)
            .await
            .map_err(image_error)?;
        plans.push((named.clone(), plan));
    }

    let images = engine.images.clone();
    let puller = engine.puller.clone();
    Ok(progress_response(move |progress| async move {
        for (named, plan) in plans {
            let id = plan.id().to_owned();
            puller.run(&images, plan, progress.clone()).await?;
            let familiar = named.familiar();
            let attributes = [("name".to_owned(), familiar.clone())].into();
            engine
                .events
                .publish("image", "pull", &familiar, attributes);
            tracing::info!(image = %familiar, %id, "pulled");
        }
        Ok(())
    }))
}

/// `POST /images/{name}/push?tag=…`: `docker push` (every tag of the
/// repository when `tag` is empty, as `docker push -a` asks).
pub async fn push(
    engine: Arc<Engine>,
    name: String,
    params: &[(String, String)],
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let tag = param(params, "tag").to_owned();
    let auth = registry::credentials(headers.get("X-Registry-Auth").and_then(|v| v.to_str().ok()));
    let plans = {
        let images = engine.images.clone();
        let name = name.clone();
        tokio::task::spawn_blocking(move || images.push_plan(&name, &tag))
            .await
            .map_err(|e| {
                ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            })?
            .map_err(|e| ApiError::from(EngineError::Image(e)))?
    };
    Ok(progress_response(move |progress| async move {
        let names: Vec<String> = plans.iter().map(|p| p.named.familiar()).collect();
        crate::image::push::push(
            &engine.images,
            engine.puller.options(),
            plans,
            &auth,
            progress,
        )
        .await?;
        for familiar in names {
            let attributes = [("name".to_owned(), familiar.clone())].into();
            engine
                .events
                .publish("image", "push", &familiar, attributes);
            tracing::info!(image = %familiar, "pushed");
        }
        Ok(())
    }))
}

/// A streamed answer of Docker's JSON progress lines from `job`, ended by an
/// `errorDetail` line when the job fails.
fn progress_response<F, Fut>(job: F) -> Response
where
    F: FnOnce(mpsc::Sender<Progress>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), ImageError>> + Send + 'static,
{
    let (lines, body) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let (progress, mut progress_rx) = mpsc::channel::<Progress>(64);
    let forward = {
        let lines = lines.clone();
        tokio::spawn(async move {
            while let Some(line) = progress_rx.recv().await {
                let _ = lines.send(Ok(json_line(&progress_json(&line)))).await;
            }
        })
    };
    tokio::spawn(async move {
        let result = job(progress).await;
        let _ = forward.await;
        if let Err(e) = result {
            let message = e.to_string();
            tracing::warn!(error = %message, "image transfer failed");
            let line = json!({ "errorDetail": { "message": message }, "error": message });
            let _ = lines.send(Ok(json_line(&line))).await;
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(body);
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

pub(super) fn json_line(value: &Value) -> Bytes {
    let mut line = value.to_string();
    line.push_str("\r\n");
    Bytes::from(line)
}

/// One progress line in Docker's JSON: `status`, `progressDetail`,
/// `progress` (the bar, for clients that print it as is) and `id`.
pub(super) fn progress_json(line: &Progress) -> Value {
    let mut map = Map::new();
    if let Some(aux) = &line.aux {
        map.insert("progressDetail".into(), json!({}));
        map.insert("aux".into(), aux.clone());
        return Value::Object(map);
    }
    map.insert("status".into(), json!(line.status));
    if let Some((current, total)) = line.detail {
        map.insert(
            "progressDetail".into(),
            json!({ "current": current, "total": total }),
        );
        map.insert("progress".into(), json!(bar(current, total)));
    } else if line.layer {
        map.insert("progressDetail".into(), json!({}));
    }
    if let Some(id) = &line.id {
        map.insert("id".into(), json!(id));
    }
    Value::Object(map)
}

/// `[=====>    ]  1.23MB/4.56MB`, as dockerd draws it (50 columns).
fn bar(current: u64, total: u64) -> String {
    const WIDTH: u64 = 50;
    if total == 0 {
        return format!("{:>8}", human_size(current));
    }
    let filled = (current.min(total) * WIDTH / total) as usize;
    let mut bar = "=".repeat(filled);
    if filled < WIDTH as usize {
        bar.push('>');
        bar.push_str(&" ".repeat(WIDTH as usize - filled - 1));
    }
    format!("[{bar}] {:>8}/{}", human_size(current), human_size(total))
}

/// Decimal sizes with four significant digits (go-units' `HumanSize`).
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit < UNITS.len() - 1 {
        size /= 1000.0;
        unit += 1;
    }
    let digits = if size >= 100.0 {
        1
    } else if size >= 10.0 {
        2
    } else {
        3
    };
    let text = format!("{size:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    };
    format!("{text}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_join_name_and_tag_like_docker() {
        let named = reference("docker.io/library/busybox", "latest").unwrap();
        assert_eq!(named.full(), "docker.io/library/busybox:latest");
        let digest = format!("sha256:{}", "a".repeat(64));
        let named = reference("127.0.0.1:5000/app", &digest).unwrap();
        assert_eq!(named.digest.as_deref(), Some(digest.as_str()));
        assert_eq!(named.tag, None);
        assert_eq!(reference("busybox", "").unwrap().tag, None);
        assert!(reference("Bad Name", "latest").is_err());
        assert!(reference("busybox", "no/slash").is_err());
    }

    #[test]
    fn progress_lines_look_like_dockerd() {
        let line = Progress {
            id: Some("abc".into()),
            status: "Downloading".into(),
            detail: Some((1_500_000, 3_000_000)),
            layer: true,
            aux: None,
        };
        let v = progress_json(&line);
        assert_eq!(v["progressDetail"]["current"], 1_500_000);
        assert_eq!(v["progressDetail"]["total"], 3_000_000);
        assert_eq!(v["id"], "abc");
        assert!(v["progress"].as_str().unwrap().ends_with("1.5MB/3MB"));
        let start = Progress {
            id: Some("abc".into()),
            status: "Pulling fs layer".into(),
            detail: None,
            layer: true,
            aux: None,
        };
        assert_eq!(progress_json(&start)["progressDetail"], json!({}));
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1234), "1.234kB");
        assert_eq!(human_size(45_600_000), "45.6MB");
    }
}
