//! `/images` endpoints: list, inspect, history, tag, remove, load, save and
//! `/commit`.
//!
//! Image names hold `/` and `:`, and axum cannot match a wildcard in the
//! middle of a path, so `/images/{*rest}` takes every per-image route and the
//! suffix (`/json`, `/history`, `/tag`, `/get`) is split off here. The store
//! does blocking file work, so every call into it runs in `spawn_blocking`.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{json, Map, Value};

use super::error::{ApiError, ApiResult};
use crate::engine::record::ZERO_TIME;
use crate::engine::{Engine, EngineError};
use crate::image::{ImageError, ImageInfo, ImageStore, Removed};

pub fn routes() -> Router<Arc<Engine>> {
    Router::new()
        .route("/images/json", get(list))
        .route("/images/load", post(load))
        .route("/commit", post(commit))
        .route("/images/prune", post(prune))
        .route("/images/get", get(save_many))
        .route(
            "/images/{*rest}",
            get(get_image).post(post_image).delete(delete_image),
        )
}

/// Query parameters, keeping repeated keys (`names=a&names=b`).
type Params = Query<Vec<(String, String)>>;

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn flag(params: &[(String, String)], key: &str) -> bool {
    matches!(param(params, key), Some("1" | "true" | "True" | "TRUE"))
}

/// Runs a store call on the blocking pool.
async fn blocking<T: Send + 'static>(
    engine: &Arc<Engine>,
    f: impl FnOnce(&ImageStore) -> Result<T, ImageError> + Send + 'static,
) -> ApiResult<T> {
    let engine = engine.clone();
    tokio::task::spawn_blocking(move || f(&engine.images))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError::from(EngineError::Image(e)))
}

fn not_found() -> ApiError {
    ApiError::not_found("page not found")
}

pub(super) fn unix_secs(created: &Option<String>) -> i64 {
    created
        .as_deref()
        .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
        .map_or(0, |t| t.timestamp())
}

fn publish(engine: &Engine, action: &str, id: &str, name: &str) {
    let attributes = [("name".to_owned(), name.to_owned())].into();
    engine.events.publish("image", action, id, attributes);
}

async fn get_image(
    State(engine): State<Arc<Engine>>,
    Path(rest): Path<String>,
    Query(params): Params,
) -> ApiResult<Response> {
    if let Some(name) = rest.strip_suffix("/json") {
        let name = name.to_owned();
        let info = blocking(&engine, move |s| s.inspect(&name)).await?;
        return Ok(Json(inspect_json(&info)).into_response());
    }
    if let Some(name) = rest.strip_suffix("/history") {
        let name = name.to_owned();
        let history = blocking(&engine, move |s| s.history(&name)).await?;
        let body: Vec<Value> = history
            .into_iter()
            .map(|h| {
                json!({
                    "Id": h.id,
                    "Created": h.created,
                    "CreatedBy": h.created_by,
                    "Tags": if h.tags.is_empty() { Value::Null } else { json!(h.tags) },
                    "Size": h.size,
                    "Comment": h.comment,
                })
            })
            .collect();
        return Ok(Json(body).into_response());
    }
    if let Some(name) = rest.strip_suffix("/get") {
        return save(engine, vec![name.to_owned()]).await;
    }
    let _ = params;
    Err(not_found())
}

async fn post_image(
    State(engine): State<Arc<Engine>>,
    Path(rest): Path<String>,
    Query(params): Params,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    if let Some(name) = rest.strip_suffix("/push") {
        return super::pull::push(engine, name.to_owned(), &params, &headers).await;
    }
    let Some(name) = rest.strip_suffix("/tag") else {
        return Err(not_found());
    };
    let name = name.to_owned();
    let repo = param(&params, "repo").unwrap_or_default().to_owned();
    let tag = param(&params, "tag").unwrap_or_default().to_owned();
    let (id, tagged) = blocking(&engine, move |s| s.tag(&name, &repo, &tag)).await?;
    publish(&engine, "tag", &id, &tagged);
    Ok(StatusCode::CREATED.into_response())
}

/// `POST /images/prune?filters=…`: `dangling` (default true: untagged images
/// only; false: every image no container uses), `label`, `label!`, `until`.
async fn prune(State(engine): State<Arc<Engine>>, Query(params): Params) -> ApiResult<Json<Value>> {
    let mut all = false;
    let filters = PruneFilters::parse(param(&params, "filters"), |key, values| {
        if key != "dangling" {
            return Ok(false);
        }
        all = match values.first().map(String::as_str) {
            Some("true" | "1") | None => false,
            Some("false" | "0") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "invalid filter 'dangling={other}'"
                )))
            }
        };
        Ok(true)
    })?;
    // Creates wait until the prune is done (see `Engine::in_use`).
    let users = engine.in_use().await;
    let in_use = users.images.clone();
    let pruned = blocking(&engine, move |s| {
        let keep = |info: &ImageInfo| {
            let image_labels = info
                .config
                .config
                .as_ref()
                .and_then(|c| c.labels.clone())
                .unwrap_or_default();
            let label = |k: &str| image_labels.get(k).map(String::as_str);
            !filters.chosen(label, unix_secs(&info.config.created))
        };
        s.prune(all, &in_use, &keep)
    })
    .await;
    drop(users);
    let pruned = pruned?;
    let deleted: Vec<Value> = pruned
        .removed
        .iter()
        .map(|step| match step {
            Removed::Untagged(name) => json!({ "Untagged": name }),
            Removed::Deleted(id) => {
                publish(&engine, "delete", id, id);
                json!({ "Deleted": id })
            }
        })
        .collect();
    publish(&engine, "prune", "", "");
    Ok(Json(json!({
        "ImagesDeleted": if deleted.is_empty() { Value::Null } else { json!(deleted) },
        "SpaceReclaimed": pruned.reclaimed,
    })))
}

/// The filters every prune takes (`label`, `label!`, `until`).
pub(super) struct PruneFilters {
    labels: Vec<String>,
    not_labels: Vec<String>,
    until: Option<i64>,
}

impl PruneFilters {
    /// Parses a prune's `filters`; `other` takes any other key (answers
    /// whether it knows it), an unknown one is refused as dockerd does.
    pub(super) fn parse(
        raw: Option<&str>,
        mut other: impl FnMut(&str, &[String]) -> ApiResult<bool>,
    ) -> ApiResult<Self> {
        let mut filters = Self {
            labels: Vec::new(),
            not_labels: Vec::new(),
            until: None,
        };
        for (key, values) in filter_values(raw)? {
            match key.as_str() {
                "label" => filters.labels = values,
                "label!" => filters.not_labels = values,
                "until" => {
                    let text = values.first().cloned().unwrap_or_default();
                    filters.until = Some(until_timestamp(&text).ok_or_else(|| {
                        ApiError::bad_request(format!("invalid filter 'until={text}'"))
                    })?);
                }
                key if other(key, &values)? => {}
                key => return Err(ApiError::bad_request(format!("invalid filter '{key}'"))),
            }
        }
        Ok(filters)
    }

    /// Whether the filters choose an object with these labels (`label`
    /// looks one up), created at `created` (unix seconds).
    pub(super) fn chosen<'a>(&self, label: impl Fn(&str) -> Option<&'a str>, created: i64) -> bool {
        let has = |wanted: &String| match wanted.split_once('=') {
            Some((k, v)) => label(k) == Some(v),
            None => label(wanted).is_some(),
        };
        self.labels.iter().all(has)
            && !self.not_labels.iter().any(has)
            && self.until.is_none_or(|u| created < u)
    }
}

/// `until`: unix seconds, RFC 3339, or a duration before now (`24h`, `90m`).
fn until_timestamp(text: &str) -> Option<i64> {
    if let Ok(secs) = text.parse::<f64>() {
        return Some(secs as i64);
    }
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(time.timestamp());
    }
    let (number, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic())?);
    let number: f64 = number.parse().ok()?;
    let secs = match unit {
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    Some(chrono::Utc::now().timestamp() - secs as i64)
}

/// `POST /commit?container=…&repo=…&tag=…&comment=…&author=…&pause=…&changes=…`.
async fn commit(State(engine): State<Arc<Engine>>, Query(params): Params) -> ApiResult<Response> {
    let get = |key: &str| param(&params, key).unwrap_or_default().to_owned();
    let request = crate::engine::commit::CommitRequest {
        container: get("container"),
        repo: get("repo"),
        tag: get("tag"),
        comment: get("comment"),
        author: get("author"),
        changes: params
            .iter()
            .filter(|(k, _)| k == "changes")
            .flat_map(|(_, v)| v.lines().map(str::to_owned).collect::<Vec<_>>())
            .filter(|c| !c.trim().is_empty())
            .collect(),
        pause: !matches!(param(&params, "pause"), Some("0" | "false" | "False")),
    };
    if request.container.is_empty() {
        return Err(ApiError::bad_request("container is required"));
    }
    let id = engine.commit(request).await?;
    Ok((StatusCode::CREATED, Json(json!({ "Id": id }))).into_response())
}

async fn delete_image(
    State(engine): State<Arc<Engine>>,
    Path(name): Path<String>,
    Query(params): Params,
) -> ApiResult<Json<Vec<Value>>> {
    let force = flag(&params, "force");
    let mut in_use = HashMap::new();
    for (id, handle) in engine.containers.read().await.by_id.iter() {
        let image = handle.record.lock().await.image.clone();
        in_use.entry(image).or_insert_with(|| id.clone());
    }
    let (id, removed) = blocking(&engine, move |s| {
        let id = s.inspect(&name)?.id;
        Ok((id, s.remove(&name, force, &in_use)?))
    })
    .await?;
    let body = removed
        .into_iter()
        .map(|step| match step {
            Removed::Untagged(name) => {
                publish(&engine, "untag", &id, &name);
                json!({ "Untagged": name })
            }
            Removed::Deleted(deleted) => {
                publish(&engine, "delete", &deleted, &deleted);
                json!({ "Deleted": deleted })
            }
        })
        .collect();
    Ok(Json(body))
}

async fn list(
    State(engine): State<Arc<Engine>>,
    Query(params): Params,
) -> ApiResult<Json<Vec<Value>>> {
    let filters = Filters::parse(param(&params, "filters"))?;
    let all = flag(&params, "all");
    let images = blocking(&engine, |s| Ok(s.list())).await?;
    let body = images
        .iter()
        // A build's intermediate images (untagged, built on) show with `-a`.
        .filter(|i| all || !i.repo_tags.is_empty() || i.children == 0)
        .filter(|i| filters.matches(i))
        .map(|i| {
            json!({
                "Id": i.id,
                "ParentId": i.parent.as_deref().unwrap_or_default(),
                "RepoTags": i.repo_tags,
                "RepoDigests": i.repo_digests,
                "Created": unix_secs(&i.config.created),
                "Size": i.size,
                "SharedSize": -1,
                "VirtualSize": i.size,
                "Labels": labels(i),
                "Containers": -1,
            })
        })
        .collect();
    Ok(Json(body))
}

fn labels(info: &ImageInfo) -> Value {
    info.config
        .config
        .as_ref()
        .and_then(|c| c.labels.as_ref())
        .map_or(Value::Null, |l| json!(l))
}

/// The keys and values of a `filters` parameter: `{"k": ["v"]}`, or the
/// old `{"k": {"v": true}}`.
fn filter_values(raw: Option<&str>) -> ApiResult<Vec<(String, Vec<String>)>> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(Vec::new());
    };
    let value: Map<String, Value> = serde_json::from_str(raw)
        .map_err(|e| ApiError::bad_request(format!("invalid filter: {e}")))?;
    Ok(value
        .into_iter()
        .map(|(key, values)| {
            let values = match values {
                Value::Array(a) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                Value::Object(o) => o.keys().cloned().collect(),
                _ => Vec::new(),
            };
            (key, values)
        })
        .collect())
}

/// The `filters` of `GET /images/json`: `reference`, `dangling`, `label`.
#[derive(Debug, Default)]
struct Filters {
    reference: Vec<String>,
    dangling: Option<bool>,
    label: Vec<String>,
}

impl Filters {
    fn parse(raw: Option<&str>) -> ApiResult<Self> {
        let mut filters = Self::default();
        for (key, values) in filter_values(raw)? {
            match key.as_str() {
                "reference" => filters.reference = values,
                "label" => filters.label = values,
                "dangling" => {
                    filters.dangling = match values.first().map(String::as_str) {
                        Some("true" | "1") => Some(true),
                        Some("false" | "0") => Some(false),
                        other => {
                            return Err(ApiError::bad_request(format!(
                                "invalid filter 'dangling={}'",
                                other.unwrap_or_default()
                            )))
                        }
                    }
                }
                other => return Err(ApiError::bad_request(format!("invalid filter '{other}'"))),
            }
        }
        Ok(filters)
    }

    fn matches(&self, info: &ImageInfo) -> bool {
        if let Some(dangling) = self.dangling {
            if dangling != (info.repo_tags.is_empty() && info.children == 0) {
                return false;
            }
        }
        if !self.reference.is_empty() {
            let hit = info.repo_tags.iter().any(|tag| {
                let repo = crate::image::reference::repository(tag);
                self.reference.iter().any(|p| {
                    glob(p.as_bytes(), tag.as_bytes()) || glob(p.as_bytes(), repo.as_bytes())
                })
            });
            if !hit {
                return false;
            }
        }
        let labels = info
            .config
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        self.label
            .iter()
            .all(|wanted| match wanted.split_once('=') {
                Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
                None => labels.contains_key(wanted),
            })
    }
}

/// Go's `path.Match` for `*` and `?`: neither crosses a `/`.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob(&pattern[1..], text)
                || (text.first().is_some_and(|c| *c != b'/') && glob(pattern, &text[1..]))
        }
        (Some(b'?'), Some(c)) if *c != b'/' => glob(&pattern[1..], &text[1..]),
        (Some(p), Some(c)) if p == c => glob(&pattern[1..], &text[1..]),
        _ => false,
    }
}

/// Docker's image inspect document.
fn inspect_json(info: &ImageInfo) -> Value {
    let config = &info.config;
    let mut runtime = runtime_defaults();
    if let (Some(image_config), Some(base)) = (&config.config, runtime.as_object_mut()) {
        if let Ok(Value::Object(fields)) = serde_json::to_value(image_config) {
            for (key, value) in fields {
                let empty = value.is_null() || value.as_str() == Some("");
                if !empty || !base.contains_key(&key) {
                    base.insert(key, value);
                }
            }
        }
    }
    let mut graph = Map::new();
    if let Some((top, lower)) = info.layer_dirs.split_last() {
        let lower: Vec<String> = lower
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        if !lower.is_empty() {
            graph.insert("LowerDir".into(), json!(lower.join(":")));
        }
        graph.insert("UpperDir".into(), json!(top.display().to_string()));
    }
    let mut body = json!({
        "Id": info.id,
        "RepoTags": info.repo_tags,
        "RepoDigests": info.repo_digests,
        "Parent": info.parent.as_deref().unwrap_or_default(),
        "Comment": config.comment,
        "Created": config.created.clone().unwrap_or_else(|| ZERO_TIME.to_owned()),
        "Container": config.container,
        "ContainerConfig": config.container_config.clone().unwrap_or_else(runtime_defaults),
        "DockerVersion": config.docker_version,
        "Author": config.author,
        "Config": runtime,
        "Architecture": config.architecture,
        "Os": config.os,
        "Size": info.size,
        "VirtualSize": info.size,
        "GraphDriver": { "Name": "overlay2", "Data": graph },
        "RootFS": { "Type": "layers", "Layers": config.rootfs.diff_ids },
        "Metadata": { "LastTagTime": info.last_tag_time.clone().unwrap_or_else(|| ZERO_TIME.to_owned()) },
    });
    if let (Some(variant), Some(map)) = (&config.variant, body.as_object_mut()) {
        map.insert("Variant".into(), json!(variant));
    }
    body
}

/// Docker's `Config` with every field at its empty value.
fn runtime_defaults() -> Value {
    json!({
        "Hostname": "", "Domainname": "", "User": "",
        "AttachStdin": false, "AttachStdout": false, "AttachStderr": false,
        "Tty": false, "OpenStdin": false, "StdinOnce": false,
        "Env": null, "Cmd": null, "Image": "", "Volumes": null, "WorkingDir": "",
        "Entrypoint": null, "OnBuild": null, "Labels": null,
    })
}

/// The request body as a blocking reader, for `spawn_blocking`.
pub(super) struct BodyReader {
    stream: axum::body::BodyDataStream,
    runtime: tokio::runtime::Handle,
    chunk: Bytes,
}

impl BodyReader {
    /// Reads `body` on the current runtime, from a blocking thread.
    pub(super) fn new(body: Body) -> Self {
        Self {
            stream: body.into_data_stream(),
            runtime: tokio::runtime::Handle::current(),
            chunk: Bytes::new(),
        }
    }
}

impl Read for BodyReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.runtime.block_on(self.stream.next()) {
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => return Err(io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.chunk.len());
        out[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

async fn load(
    State(engine): State<Arc<Engine>>,
    Query(_params): Params,
    body: Body,
) -> ApiResult<Response> {
    let reader = BodyReader::new(body);
    let loaded = blocking(&engine, move |s| s.load(reader)).await?;
    let mut lines = String::new();
    for image in &loaded {
        let names: Vec<String> = if image.tags.is_empty() {
            vec![format!("Loaded image ID: {}", image.id)]
        } else {
            image
                .tags
                .iter()
                .map(|t| format!("Loaded image: {t}"))
                .collect()
        };
        for line in names {
            lines.push_str(&json!({ "stream": format!("{line}\n") }).to_string());
            lines.push('\n');
        }
        let name = image.tags.first().unwrap_or(&image.id);
        publish(&engine, "load", &image.id, name);
    }
    // A stream, chunked as dockerd's: the SDKs read a load's answer line by
    // line only when it is (else as one JSON document, which it is not).
    let chunks = futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(lines)) });
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(chunks),
    )
        .into_response())
}

async fn save_many(
    State(engine): State<Arc<Engine>>,
    Query(params): Params,
) -> ApiResult<Response> {
    let names: Vec<String> = params
        .into_iter()
        .filter(|(k, _)| k == "names")
        .map(|(_, v)| v)
        .collect();
    save(engine, names).await
}

/// Sends what the blocking writer produces into the response body.
struct ChannelWriter {
    sender: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
    buffer: Vec<u8>,
}

impl ChannelWriter {
    const CHUNK: usize = 64 * 1024;

    fn send(&mut self) -> io::Result<()> {
        let chunk = Bytes::from(std::mem::take(&mut self.buffer));
        self.sender
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= Self::CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            Ok(())
        } else {
            self.send()
        }
    }
}

/// Streams a tarball of `names`; unknown names fail before anything is sent.
async fn save(engine: Arc<Engine>, names: Vec<String>) -> ApiResult<Response> {
    if names.is_empty() {
        return Err(ApiError::bad_request("no images to save"));
    }
    let check = names.clone();
    blocking(&engine, move |s| {
        check.iter().try_for_each(|n| s.inspect(n).map(|_| ()))
    })
    .await?;
    let (sender, receiver) = tokio::sync::mpsc::channel(8);
    let engine = engine.clone();
    tokio::task::spawn_blocking(move || {
        let mut writer = ChannelWriter {
            sender: sender.clone(),
            buffer: Vec::new(),
        };
        let result = engine
            .images
            .save(&names, &mut writer)
            .map_err(|e| io::Error::other(super::error::error_chain(&e)))
            .and_then(|()| writer.flush());
        if let Err(e) = result {
            tracing::warn!(error = %e, "image save failed");
            let _ = sender.blocking_send(Err(e));
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(receiver));
    Ok(([(header::CONTENT_TYPE, "application/x-tar")], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_does_not_cross_slashes() {
        assert!(glob(b"hello*", b"hello:latest"));
        assert!(glob(b"*", b"hello"));
        assert!(!glob(b"*", b"me/app"));
        assert!(glob(b"me/*", b"me/app"));
        assert!(glob(b"h?llo", b"hello"));
    }

    #[test]
    fn filters_accept_both_shapes() {
        let f = Filters::parse(Some(r#"{"dangling":["true"],"reference":["x"]}"#)).unwrap();
        assert_eq!(f.dangling, Some(true));
        assert_eq!(f.reference, vec!["x".to_owned()]);
        let f = Filters::parse(Some(r#"{"dangling":{"false":true}}"#)).unwrap();
        assert_eq!(f.dangling, Some(false));
        assert!(Filters::parse(Some(r#"{"bogus":["x"]}"#)).is_err());
    }
}
