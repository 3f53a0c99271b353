//! `GET /system/df`: what images, containers and volumes take on disk, in
//! the shape `docker system df [-v]` reads (sizes in bytes; the CLI works
//! out "active" and "reclaimable" itself).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use crate::engine::layout::dir_size;
use crate::engine::Engine;

pub fn routes() -> Router<Arc<Engine>> {
    Router::new().route("/system/df", get(df))
}

async fn df(State(engine): State<Arc<Engine>>) -> ApiResult<Json<Value>> {
    let mut containers = engine
        .list(true, &crate::engine::list::parse_filters(None)?, None)
        .await?;
    let mut image_users: HashMap<String, i64> = HashMap::new();
    for handle in engine.handles().await {
        *image_users
            .entry(handle.record.lock().await.image.clone())
            .or_default() += 1;
    }
    let volume_users = engine.volume_users().await;
    let in_use: HashSet<String> = volume_users.keys().cloned().collect();
    let blocking_engine = engine.clone();
    let (images, usage, layers_size, uppers, volumes) = tokio::task::spawn_blocking(move || {
        let engine = blocking_engine;
        let images = engine.images.list();
        let (usage, layers_size) = engine.images.usage();
        let uppers: HashMap<String, u64> = engine
            .layout
            .containers()
            .read_dir()
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| {
                        let id = e.file_name().to_string_lossy().into_owned();
                        (id, dir_size(&e.path().join("upper")))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let volumes: Vec<(Value, u64)> = engine
            .volumes
            .list(&Default::default(), &in_use)
            .into_iter()
            .map(|v| {
                let size = dir_size(&v.mountpoint);
                (serde_json::to_value(&v).unwrap_or(Value::Null), size)
            })
            .collect();
        (images, usage, layers_size, uppers, volumes)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;

    let usage: HashMap<String, (u64, u64)> = usage
        .into_iter()
        .map(|u| (u.id, (u.size, u.shared)))
        .collect();
    let image_sizes: HashMap<&str, u64> = images.iter().map(|i| (i.id.as_str(), i.size)).collect();
    let images_json: Vec<Value> = images
        .iter()
        .map(|i| {
            let (size, shared) = usage.get(&i.id).copied().unwrap_or((i.size, 0));
            json!({
                "Id": i.id,
                "ParentId": "",
                "RepoTags": i.repo_tags,
                "RepoDigests": i.repo_digests,
                "Created": i.config.created.as_deref()
                    .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
                    .map_or(0, |t| t.timestamp()),
                "Size": size,
                "SharedSize": shared,
                "VirtualSize": size,
                "Labels": i.config.config.as_ref().and_then(|c| c.labels.clone()),
                "Containers": image_users.get(&i.id).copied().unwrap_or(0),
            })
        })
        .collect();
    for container in &mut containers {
        let id = container["Id"].as_str().unwrap_or_default().to_owned();
        let image = container["ImageID"].as_str().unwrap_or_default().to_owned();
        let rw = uppers.get(&id).copied().unwrap_or(0);
        container["SizeRw"] = json!(rw);
        container["SizeRootFs"] = json!(rw + image_sizes.get(image.as_str()).copied().unwrap_or(0));
    }
    let volumes_json: Vec<Value> = volumes
        .into_iter()
        .map(|(mut volume, size)| {
            let name = volume["Name"].as_str().unwrap_or_default().to_owned();
            let refs = volume_users.get(&name).map_or(0, |users| users.len());
            volume["UsageData"] = json!({ "Size": size, "RefCount": refs });
            volume
        })
        .collect();
    Ok(Json(json!({
        "LayersSize": layers_size,
        "Images": images_json,
        "Containers": containers,
        "Volumes": volumes_json,
        "BuildCache": [],
    })))
}
