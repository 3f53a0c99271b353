//! `POST /build` (the classic builder: `DOCKER_BUILDKIT=0 docker build`,
//! docker-compose 1.29, the SDKs' `images.build`) and `POST /build/prune`
//! (`docker builder prune`).
//!
//! The query is checked before the body is used (a refused one is read
//! and dropped, so the client sees the answer); the body (the context tar,
//! plain or gzip) is kept and indexed in the build's scratch directory; then the
//! answer streams Docker's JSON lines: `{"stream": …}`, pull progress,
//! `{"aux": {"ID": …}}`, and `{"errorDetail": …, "error": …}` when the
//! build fails. When the client goes away the running step is stopped.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::error::{ApiError, ApiResult};
use super::images::BodyReader;
use super::pull::{json_line, param, progress_json};
use crate::build::context::Scratch;
use crate::build::{BuildError, BuildOptions, Message};
use crate::engine::{Engine, EngineError};
use crate::image::reference::Named;

pub fn routes() -> Router<Arc<Engine>> {
    Router::new()
        .route("/build", post(build))
        .route("/build/prune", post(prune))
}

type Params = Vec<(String, String)>;

fn values(params: &Params, key: &str) -> Vec<String> {
    params
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .collect()
}

/// dockerd's boolean query values: anything but empty, `0`, `no`,
/// `false` or `none` (any case) is true.
fn boolean(params: &Params, key: &str) -> bool {
    let value = param(params, key).to_ascii_lowercase();
    !matches!(value.as_str(), "" | "0" | "no" | "false" | "none")
}

fn number(params: &Params, key: &str) -> ApiResult<i64> {
    match param(params, key) {
        "" => Ok(0),
        text => text
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid {key}={text}: not a number"))),
    }
}

/// A JSON map parameter (`buildargs`, `labels`).
fn json_map<T: serde::de::DeserializeOwned>(
    params: &Params,
    key: &str,
) -> ApiResult<BTreeMap<String, T>> {
    match param(params, key) {
        "" => Ok(BTreeMap::new()),
        text => serde_json::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("invalid {key}: {e}"))),
    }
}

/// The checked options of a build request.
fn options(params: &Params, headers: &HeaderMap) -> ApiResult<BuildOptions> {
    if !param(params, "remote").is_empty() {
        return Err(ApiError::bad_request(format!(
            "remote build contexts are not fetched ({}): this engine builds only from the context the client uploads",
            param(params, "remote")
        )));
    }
    let platform = param(params, "platform");
    if !platform.is_empty() {
        let own = format!("linux/{}", vmctl_oci::image::go_arch());
        let ok = platform == "linux" || platform == own || platform.starts_with(&format!("{own}/"));
        if !ok {
            return Err(ApiError::bad_request(format!(
                "platform {platform} is not supported: this engine builds for {own} only"
            )));
        }
    }
    if !values(params, "securityopt").is_empty() {
        return Err(ApiError::bad_request(
            "The daemon on this platform does not support setting security options on build",
        ));
    }
    if boolean(params, "squash") {
        return Err(ApiError::bad_request(
            "squash is only supported with experimental mode",
        ));
    }
    let mut tags = Vec::new();
    for tag in values(params, "t") {
        let named = Named::parse(&tag)
            .map_err(|e| ApiError::bad_request(format!("invalid tag {tag:?}: {e}")))?;
        if named.digest.is_some() {
            return Err(ApiError::bad_request(format!(
                "invalid tag {tag:?}: a build cannot be tagged with a digest"
            )));
        }
        tags.push(named);
    }
    // The step containers join it like `docker run --network` would.
    let network_mode = param(params, "networkmode").to_owned();
    let shm_size = number(params, "shmsize")?;
    if shm_size < 0 {
        return Err(ApiError::bad_request("SHM size can not be less than 0"));
    }
    let extra_hosts = values(params, "extrahosts")
        .iter()
        .flat_map(|v| v.split(',').map(str::to_owned).collect::<Vec<_>>())
        .filter(|h| !h.is_empty())
        .collect();
    let cache_from: Vec<String> = match param(params, "cachefrom") {
        "" => Vec::new(),
        text => serde_json::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("invalid cachefrom: {e}")))?,
    };
    let remove = match param(params, "rm") {
        "" => true,
        _ => boolean(params, "rm"),
    };
    Ok(BuildOptions {
        dockerfile: param(params, "dockerfile").to_owned(),
        tags,
        build_args: json_map(params, "buildargs")?,
        target: param(params, "target").to_owned(),
        no_cache: boolean(params, "nocache"),
        pull: boolean(params, "pull"),
        remove: remove || boolean(params, "forcerm"),
        force_remove: boolean(params, "forcerm"),
        labels: json_map(params, "labels")?,
        network_mode,
        extra_hosts,
        shm_size,
        cpuset_cpus: param(params, "cpusetcpus").to_owned(),
        cpuset_mems: param(params, "cpusetmems").to_owned(),
        cpu_shares: number(params, "cpushares")?,
        cpu_period: number(params, "cpuperiod")?,
        cpu_quota: number(params, "cpuquota")?,
        memory: number(params, "memory")?,
        memory_swap: number(params, "memswap")?,
        quiet: boolean(params, "q"),
        cache_from,
        auth: registry_config(headers),
    })
}

/// `X-Registry-Config`: base64 JSON of registry → auth config, as the CLI
/// sends every credential it has with a build.
fn registry_config(headers: &HeaderMap) -> BTreeMap<String, oci_client::secrets::RegistryAuth> {
    use base64::Engine as _;
    let Some(header) = headers
        .get("X-Registry-Config")
        .and_then(|v| v.to_str().ok())
    else {
        return BTreeMap::new();
    };
    let engines = [
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let Some(map) = engines
        .iter()
        .find_map(|e| e.decode(header.trim()).ok())
        .and_then(|bytes| serde_json::from_slice::<BTreeMap<String, Value>>(&bytes).ok())
    else {
        return BTreeMap::new();
    };
    map.into_iter()
        .map(|(registry, config)| {
            let encoded = base64::engine::general_purpose::STANDARD.encode(config.to_string());
            (
                registry,
                crate::image::registry::credentials(Some(&encoded)),
            )
        })
        .collect()
}

fn message_json(message: &Message) -> Value {
    match message {
        Message::Stream(text) => json!({ "stream": text }),
        Message::Pull(progress) => progress_json(progress),
        Message::Aux(id) => json!({ "aux": { "ID": id } }),
    }
}

fn error_json(error: &BuildError) -> Value {
    let mut detail = json!({ "message": error.message });
    if let Some(code) = error.code {
        detail["code"] = json!(code);
    }
    json!({ "errorDetail": detail, "error": error.message })
}

/// Reads and drops what the client is still sending (the context), up to
/// [`DRAINED`] bytes, before a refusal: a client that is still writing
/// when the connection closes sees a broken pipe, not the answer. Go's
/// server, dockerd's, does the same (256 KiB there).
async fn drain(body: Body) {
    use tokio_stream::StreamExt;
    let mut stream = body.into_data_stream();
    let mut read = 0;
    while let Some(Ok(chunk)) = stream.next().await {
        read += chunk.len();
        if read > DRAINED {
            break;
        }
    }
}

/// How much of a refused request's body is read before the answer.
const DRAINED: usize = 4 << 20;

async fn build(
    State(engine): State<Arc<Engine>>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let options = match options(&params, &headers) {
        Ok(options) => options,
        Err(e) => {
            drain(body).await;
            return Err(e);
        }
    };
    let builds = engine.layout.builds();
    let scratch = tokio::task::spawn_blocking(move || Scratch::new(&builds))
        .await
        .map_err(|e| ApiError::from(EngineError::Runtime(e.to_string())))?
        .map_err(|e| {
            ApiError::from(EngineError::Runtime(format!(
                "cannot make the build's scratch directory: {e}"
            )))
        })?;
    let reader = BodyReader::new(body);
    let (tar, dir) = (scratch.context_tar(), scratch.context());
    let dockerfile = match options.dockerfile.as_str() {
        "" => "Dockerfile".to_owned(),
        name => name.to_owned(),
    };
    let received = tokio::task::spawn_blocking(move || {
        let mut context = crate::build::index::Context::receive(reader, &tar, &dir, &dockerfile)?;
        context.drop_ignored(&dockerfile)?;
        Ok::<_, crate::image::ImageError>(context)
    })
    .await
    .map_err(|e| ApiError::from(EngineError::Runtime(e.to_string())))?;
    let context = match received {
        Ok(context) => Arc::new(context),
        Err(e) => {
            return Err(ApiError::bad_request(format!(
                "the build context is not a readable tar archive: {e}"
            )))
        }
    };

    let (lines, body) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let (tx, mut rx) = mpsc::channel::<Message>(64);
    let forward = {
        let lines = lines.clone();
        // Ends when the build does or when the client goes away (its
        // body is dropped); dropping `rx` then tells the build.
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    message = rx.recv() => {
                        let Some(message) = message else { return };
                        let line = json_line(&message_json(&message));
                        if lines.send(Ok(line)).await.is_err() {
                            return;
                        }
                    }
                    () = lines.closed() => return,
                }
            }
        })
    };
    tokio::spawn(async move {
        let result = crate::build::builder::build(&engine, &options, &scratch, context, tx).await;
        let _ = forward.await;
        drop(scratch);
        match result {
            Ok(id) => tracing::info!(image = %id, "built"),
            Err(e) => {
                tracing::info!(error = %e, "build failed");
                let _ = lines.send(Ok(json_line(&error_json(&e)))).await;
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(body);
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// `POST /build/prune`: removes the build cache — the images of build
/// steps that no tag and no container needs (`all`: every untagged step
/// image no container uses).
async fn prune(
    State(engine): State<Arc<Engine>>,
    Query(params): Query<Params>,
) -> ApiResult<Json<Value>> {
    let all = boolean(&params, "all");
    let in_use = engine.in_use().await;
    let used = in_use.images.clone();
    let images = engine.images.clone();
    let (deleted, reclaimed) =
        tokio::task::spawn_blocking(move || images.prune_build_cache(all, &used))
            .await
            .map_err(|e| ApiError::from(EngineError::Runtime(e.to_string())))?
            .map_err(|e| ApiError::from(EngineError::Image(e)))?;
    drop(in_use);
    Ok(Json(json!({
        "CachesDeleted": deleted,
        "SpaceReclaimed": reclaimed,
    })))
}
