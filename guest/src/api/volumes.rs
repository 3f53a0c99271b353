//! `/volumes` endpoints: list, create, inspect, remove, prune.
//!
//! Thin: parse the request, run one [`VolumeStore`] call on the blocking
//! pool, publish the event, render Docker's JSON. Which volumes are in use
//! comes from the container registry (each record's volume mounts).
//!
//! [`VolumeStore`]: crate::volume::VolumeStore

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use crate::engine::{Engine, EngineError};
use crate::model::null_default;
use crate::volume::{self, Filters, VolumeError};

pub fn routes() -> Router<Arc<Engine>> {
    Router::new()
        .route("/volumes", get(list))
        .route("/volumes/create", post(create))
        .route("/volumes/prune", post(prune))
        .route("/volumes/{name}", get(inspect).delete(remove))
}

/// The body of `POST /volumes/create`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    name: String,
    driver: String,
    #[serde(deserialize_with = "null_default")]
    driver_opts: BTreeMap<String, String>,
    #[serde(deserialize_with = "null_default")]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FiltersQuery {
    filters: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RemoveQuery {
    force: Option<String>,
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, VolumeError> + Send + 'static,
) -> ApiResult<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(|e| EngineError::from(e).into()),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("volume task failed: {e}"),
        )),
    }
}

/// Docker's `filters` JSON, parsed by the engine's one parser.
fn parse_filters(raw: Option<&str>) -> ApiResult<BTreeMap<String, Vec<String>>> {
    Ok(crate::engine::list::parse_filters(raw)?
        .into_iter()
        .collect())
}

/// A boolean filter value (`true`/`1`, `false`/`0`).
fn filter_bool(key: &str, values: &[String]) -> ApiResult<Option<bool>> {
    match values.last().map(String::as_str) {
        None => Ok(None),
        Some("true" | "1") => Ok(Some(true)),
        Some("false" | "0") => Ok(Some(false)),
        Some(other) => Err(ApiError::bad_request(format!(
            "invalid filter '{key}={other}'"
        ))),
    }
}

/// Turns parsed filters into [`Filters`], refusing keys not in `allowed`.
fn to_filters(raw: BTreeMap<String, Vec<String>>, allowed: &[&str]) -> ApiResult<Filters> {
    let mut filters = Filters::default();
    for (key, values) in raw {
        if !allowed.contains(&key.as_str()) {
            return Err(ApiError::bad_request(format!("invalid filter '{key}'")));
        }
        match key.as_str() {
            "name" => filters.names = values,
            "label" => filters.labels = values,
            "label!" => filters.labels_not = values,
            "driver" => filters.drivers = values,
            "dangling" => filters.dangling = filter_bool(&key, &values)?,
            "all" => filters.all = filter_bool(&key, &values)?.unwrap_or(false),
            _ => {}
        }
    }
    Ok(filters)
}

/// Docker's reading of a query boolean.
fn query_bool(value: Option<&str>) -> bool {
    value.is_some_and(|v| !matches!(v, "" | "0" | "no" | "false" | "none"))
}

async fn list(
    State(engine): State<Arc<Engine>>,
    query: Result<Query<FiltersQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(query) = query?;
    let filters = to_filters(
        parse_filters(query.filters.as_deref())?,
        &["name", "label", "driver", "dangling"],
    )?;
    let in_use: HashSet<String> = engine.volume_users().await.into_keys().collect();
    let volumes = blocking(move || Ok(engine.volumes.list(&filters, &in_use))).await?;
    Ok(Json(json!({ "Volumes": volumes, "Warnings": [] })))
}

async fn create(
    State(engine): State<Arc<Engine>>,
    body: Result<Json<CreateBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(body) = body?;
    // Unlike a container's anonymous volumes, `docker volume create` without
    // a name gets a random name but no anonymous label (prune keeps it).
    let name = if body.name.is_empty() {
        volume::store::random_name()
    } else {
        body.name
    };
    let store = engine.clone();
    let (volume, new) = blocking(move || {
        store
            .volumes
            .get_or_create(Some(&name), &body.driver, &body.driver_opts, &body.labels)
    })
    .await?;
    if new {
        volume::publish(&engine.events, "create", &volume.name, &[]);
    }
    Ok((StatusCode::CREATED, Json(volume)))
}

async fn inspect(
    State(engine): State<Arc<Engine>>,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let volume = blocking(move || engine.volumes.get(&name)).await?;
    Ok(Json(volume))
}

async fn remove(
    State(engine): State<Arc<Engine>>,
    Path(name): Path<String>,
    query: Result<Query<RemoveQuery>, QueryRejection>,
) -> ApiResult<StatusCode> {
    let Query(query) = query?;
    let force = query_bool(query.force.as_deref());
    // Creates wait while `in_use` lives, so none can start using the volume
    // between this check and its removal.
    let in_use = engine.in_use().await;
    let users = in_use.volumes.get(&name).cloned().unwrap_or_default();
    let store = engine.clone();
    let target = name.clone();
    let removed = blocking(move || store.volumes.remove(&target, force, &users)).await;
    drop(in_use);
    let removed = removed?;
    if removed {
        volume::publish(&engine.events, "destroy", &name, &[]);
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn prune(
    State(engine): State<Arc<Engine>>,
    version: Option<axum::Extension<super::version::RequestedVersion>>,
    query: Result<Query<FiltersQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(query) = query?;
    let mut filters = to_filters(
        parse_filters(query.filters.as_deref())?,
        &["label", "label!", "all"],
    )?;
    // Before API 1.42 a prune took named volumes too (`all` came then).
    if super::version::RequestedVersion::before(version.as_deref(), 1, 42) {
        filters.all = true;
    }
    // As for remove: creates wait until the prune is done.
    let users = engine.in_use().await;
    let in_use: HashSet<String> = users.volumes.keys().cloned().collect();
    let store = engine.clone();
    let report = blocking(move || Ok(store.volumes.prune(&filters, &in_use))).await;
    drop(users);
    let report = report?;
    for name in &report.deleted {
        volume::publish(&engine.events, "destroy", name, &[]);
    }
    engine.events.publish(
        "volume",
        "prune",
        "",
        BTreeMap::from([("reclaimed".to_owned(), report.space_reclaimed.to_string())]),
    );
    Ok(Json(json!({
        "VolumesDeleted": report.deleted,
        "SpaceReclaimed": report.space_reclaimed,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_both_shapes() {
        let map = parse_filters(Some(r#"{"label":{"a=b":true},"name":["x"]}"#)).unwrap();
        assert_eq!(map["label"], vec!["a=b".to_owned()]);
        assert_eq!(map["name"], vec!["x".to_owned()]);
        assert!(parse_filters(Some("{")).is_err());
        assert!(parse_filters(None).unwrap().is_empty());
    }

    #[test]
    fn filters_are_checked_per_endpoint() {
        let raw = parse_filters(Some(r#"{"dangling":["true"],"driver":["local"]}"#)).unwrap();
        let filters = to_filters(raw, &["name", "label", "driver", "dangling"]).unwrap();
        assert_eq!(filters.dangling, Some(true));
        assert_eq!(filters.drivers, vec!["local".to_owned()]);

        let raw = parse_filters(Some(r#"{"name":["x"]}"#)).unwrap();
        let err = to_filters(raw, &["label", "label!", "all"]).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.message, "invalid filter 'name'");

        let raw = parse_filters(Some(r#"{"dangling":["maybe"]}"#)).unwrap();
        assert!(to_filters(raw, &["dangling"]).is_err());

        let raw = parse_filters(Some(r#"{"all":["1"]}"#)).unwrap();
        assert!(to_filters(raw, &["all"]).unwrap().all);
    }

    #[test]
    fn query_booleans() {
        assert!(query_bool(Some("1")));
        assert!(query_bool(Some("true")));
        assert!(!query_bool(Some("0")));
        assert!(!query_bool(Some("false")));
        assert!(!query_bool(None));
    }

    use crate::engine::{ContainerHandle, ContainerRecord, EngineOptions};
    use crate::model::MountPoint;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    /// An engine whose networking lives in a fresh network namespace of this
    /// test's thread (a current-thread runtime keeps every network call here),
    /// so the machine's own network is never touched.
    async fn engine(dir: &std::path::Path) -> Arc<Engine> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("a network namespace for the test (run as root)");
        Engine::open(EngineOptions {
            root: dir.join("root"),
            exec_root: dir.join("run"),
            cgroup_parent: "vmctl".into(),
            builtin_images: None,
            self_exe: "/bin/true".into(),
            network: crate::network::NetworkOptions::default(),
            registry: Default::default(),
            binds: Default::default(),
        })
        .await
        .unwrap()
    }

    async fn call(
        engine: &Arc<Engine>,
        method: &str,
        uri: &str,
        body: &str,
    ) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap();
        let response = crate::api::router(engine.clone())
            .oneshot(request)
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    #[tokio::test]
    async fn volume_endpoints() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path()).await;
        let mut events = engine.events.subscribe();

        let (status, created) = call(
            &engine,
            "POST",
            "/volumes/create",
            r#"{"Name":"data","Labels":{"a":"b"},"DriverOpts":null}"#,
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(created["Name"], "data");
        assert_eq!(created["Driver"], "local");
        assert_eq!(created["Scope"], "local");
        assert_eq!(created["Labels"]["a"], "b");
        assert!(created["Mountpoint"]
            .as_str()
            .unwrap()
            .ends_with("/volumes/data/_data"));
        let event = events.try_recv().unwrap();
        assert_eq!((event.kind, event.action.as_str()), ("volume", "create"));
        assert_eq!(event.actor.attributes["driver"], "local");

        let (status, body) = call(&engine, "POST", "/volumes/create", "{not json").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["message"].is_string());
        let (status, body) = call(&engine, "POST", "/volumes/create", r#"{"Name":"-x"}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["message"].as_str().unwrap().starts_with("create -x: "));

        let (status, body) = call(&engine, "GET", "/volumes/data", "").await;
        assert_eq!((status, &body), (StatusCode::OK, &created));
        let (status, body) = call(&engine, "GET", "/volumes/nope", "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["message"], "get nope: no such volume");

        let (status, unnamed) = call(&engine, "POST", "/volumes/create", "{}").await;
        assert_eq!(status, StatusCode::CREATED);
        let unnamed = unnamed["Name"].as_str().unwrap().to_owned();
        assert_eq!(unnamed.len(), 64);
        let anon = engine
            .volumes
            .create(None, "", &BTreeMap::new(), &BTreeMap::new())
            .unwrap()
            .name;

        // A container mounting `data`.
        let record = ContainerRecord {
            id: "c0ffee".into(),
            mounts: vec![MountPoint {
                kind: "volume".into(),
                name: "data".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        engine
            .containers
            .write()
            .await
            .by_id
            .insert(record.id.clone(), ContainerHandle::new(record));

        let (status, body) = call(&engine, "GET", "/volumes", "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["Volumes"].as_array().unwrap().len(), 3);
        assert_eq!(body["Warnings"], serde_json::json!([]));
        let filter = "/volumes?filters=%7B%22dangling%22%3A%5B%22true%22%5D%7D";
        let (_, body) = call(&engine, "GET", filter, "").await;
        let mut dangling: Vec<&str> = body["Volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["Name"].as_str().unwrap())
            .collect();
        dangling.sort();
        let mut expected = vec![anon.as_str(), unnamed.as_str()];
        expected.sort();
        assert_eq!(dangling, expected);

        let (status, body) = call(&engine, "DELETE", "/volumes/data", "").await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["message"], "remove data: volume is in use - [c0ffee]");
        let (status, _) = call(&engine, "DELETE", "/volumes/nope?force=1", "").await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = call(&engine, "DELETE", "/volumes/nope", "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        let (status, body) = call(&engine, "POST", "/volumes/prune", "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body["VolumesDeleted"],
            serde_json::json!([anon]),
            "unnamed is kept"
        );
        assert_eq!(body["SpaceReclaimed"], 0);
        let (status, _) = call(
            &engine,
            "POST",
            "/volumes/prune?filters=%7B%22name%22%3A%5B%22x%22%5D%7D",
            "",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        engine.containers.write().await.by_id.clear();
        let (status, _) = call(&engine, "DELETE", "/volumes/data", "").await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (_, body) = call(&engine, "GET", "/volumes", "").await;
        assert_eq!(body["Volumes"][0]["Name"], unnamed.as_str());
        assert_eq!(body["Volumes"].as_array().unwrap().len(), 1);
    }
}
