//! `/networks` endpoints (list, inspect, create, remove, prune, connect,
//! disconnect) and vmctl's `/vmctl/port-bindings` list and watch stream.
//!
//! Thin: parse the request, run one engine or `Networks` call, render
//! Docker's JSON.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ipnet::Ipv4Net;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_stream::wrappers::ReceiverStream;
use vmctl_proto::ports::{PortEvent, PORT_BINDINGS_PATH};

use super::error::{ApiError, ApiResult};
use crate::engine::Engine;
use crate::model::null_default;
use crate::network::record::NetworkRecord;
use crate::network::CreateRequest;

pub fn routes() -> Router<Arc<Engine>> {
    Router::new()
        .route("/networks", get(list))
        .route("/networks/create", post(create))
        .route("/networks/prune", post(prune))
        .route("/networks/{id}", get(inspect).delete(remove))
        .route("/networks/{id}/connect", post(connect))
        .route("/networks/{id}/disconnect", post(disconnect))
        .route(PORT_BINDINGS_PATH, get(port_bindings))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct IpamConfig {
    #[serde(deserialize_with = "null_default")]
    subnet: String,
    // The SDKs send `null` for what they leave out.
    #[serde(rename = "IPRange", deserialize_with = "null_default")]
    ip_range: String,
    #[serde(deserialize_with = "null_default")]
    gateway: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Ipam {
    driver: String,
    #[serde(deserialize_with = "null_default")]
    config: Vec<IpamConfig>,
}

/// The body of `POST /networks/create`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    name: String,
    driver: String,
    internal: bool,
    attachable: bool,
    #[serde(rename = "EnableIPv6")]
    enable_ipv6: Option<bool>,
    #[serde(rename = "IPAM")]
    ipam: Option<Ipam>,
    #[serde(deserialize_with = "null_default")]
    options: BTreeMap<String, String>,
    #[serde(deserialize_with = "null_default")]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ConnectBody {
    container: String,
    endpoint_config: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FiltersQuery {
    filters: Option<String>,
    watch: Option<String>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message.into())
}

/// A network as `docker network inspect` shows it.
fn network_json(record: &NetworkRecord, containers: Value) -> Value {
    let mut config = serde_json::Map::new();
    if let Some(subnet) = record.subnet {
        config.insert("Subnet".into(), json!(subnet.to_string()));
    }
    if let Some(range) = record.ip_range {
        config.insert("IPRange".into(), json!(range.to_string()));
    }
    if let Some(gateway) = record.gateway {
        config.insert("Gateway".into(), json!(gateway.to_string()));
    }
    let configs = if config.is_empty() {
        json!([])
    } else {
        json!([config])
    };
    json!({
        "Name": record.name,
        "Id": record.id,
        "Created": record.created,
        "Scope": "local",
        "Driver": record.driver,
        "EnableIPv4": true,
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": configs},
        "Internal": record.internal,
        "Attachable": record.attachable,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": containers,
        "Options": record.options,
        "Labels": record.labels,
    })
}

fn matches(record: &NetworkRecord, filters: &BTreeMap<String, Vec<String>>) -> bool {
    filters.iter().all(|(key, values)| {
        values.iter().any(|value| match key.as_str() {
            "name" => record.name.contains(value.as_str()),
            "id" => record.id.starts_with(value.as_str()),
            "driver" => &record.driver == value,
            "label" => match value.split_once('=') {
                Some((k, v)) => record.labels.get(k).is_some_and(|l| l == v),
                None => record.labels.contains_key(value),
            },
            "type" => {
                let builtin = matches!(record.name.as_str(), "bridge" | "host" | "none");
                (value == "builtin") == builtin
            }
            _ => true,
        })
    })
}

async fn list(
    State(engine): State<Arc<Engine>>,
    query: Result<Query<FiltersQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(query) = query?;
    let filters = crate::engine::list::parse_filters(query.filters.as_deref())?;
    let filters: BTreeMap<String, Vec<String>> = filters.into_iter().collect();
    let list: Vec<Value> = engine
        .networks
        .list()
        .await
        .iter()
        .filter(|r| matches(r, &filters))
        .map(|r| network_json(r, json!({})))
        .collect();
    Ok(Json(Value::Array(list)))
}

async fn inspect(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let record = engine
        .networks
        .get(&id)
        .await
        .map_err(crate::engine::EngineError::from)?;
    let mut containers = serde_json::Map::new();
    for (container_id, endpoint) in engine.networks.attached(&record.id).await {
        let name = match engine.container(&container_id).await {
            Ok(handle) => handle.record.lock().await.name.clone(),
            Err(_) => String::new(),
        };
        containers.insert(
            container_id,
            json!({
                "Name": name,
                "EndpointID": endpoint.endpoint_id,
                "MacAddress": endpoint.mac,
                "IPv4Address": endpoint.address.to_string(),
                "IPv6Address": "",
            }),
        );
    }
    Ok(Json(network_json(&record, Value::Object(containers))))
}

fn parse_net(text: &str, what: &str) -> ApiResult<Option<Ipv4Net>> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<Ipv4Net>().map(Some).map_err(|_| {
        bad(format!(
            "invalid {what}: {text:?} (this engine supports IPv4 CIDRs)"
        ))
    })
}

async fn create(
    State(engine): State<Arc<Engine>>,
    body: Result<Json<CreateBody>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(body) = body?;
    if body.enable_ipv6 == Some(true) {
        return Err(bad("IPv6 networks are not supported by this engine yet"));
    }
    let ipam = body.ipam.unwrap_or_default();
    if !matches!(ipam.driver.as_str(), "" | "default") {
        return Err(bad(format!(
            "IPAM driver {:?} is not supported",
            ipam.driver
        )));
    }
    if ipam.config.len() > 1 {
        return Err(bad("this engine supports one IPv4 subnet per network"));
    }
    let config = ipam.config.into_iter().next().unwrap_or_default();
    let gateway = if config.gateway.is_empty() {
        None
    } else {
        Some(
            config
                .gateway
                .parse::<Ipv4Addr>()
                .map_err(|_| bad(format!("invalid gateway address: {:?}", config.gateway)))?,
        )
    };
    let subnet = parse_net(&config.subnet, "subnet")?;
    if gateway.is_some() && subnet.is_none() {
        return Err(bad("a gateway needs a subnet (--subnet)"));
    }
    let request = CreateRequest {
        name: body.name,
        driver: body.driver,
        internal: body.internal,
        attachable: body.attachable,
        subnet,
        gateway,
        ip_range: parse_net(&config.ip_range, "ip-range")?,
        options: body.options,
        labels: body.labels,
    };
    let record = engine
        .networks
        .create(request)
        .await
        .map_err(crate::engine::EngineError::from)?;
    engine.publish_network(&record, "create", "");
    Ok((
        StatusCode::CREATED,
        Json(json!({"Id": record.id, "Warning": ""})),
    )
        .into_response())
}

async fn remove(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    engine.network_remove(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn prune(
    State(engine): State<Arc<Engine>>,
    query: Result<Query<FiltersQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(query) = query?;
    let filters = crate::engine::list::parse_filters(query.filters.as_deref())?;
    let labels = filters.get("label").cloned().unwrap_or_default();
    let removed = engine.network_prune(&labels).await?;
    Ok(Json(json!({"NetworksDeleted": removed})))
}

async fn connect(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
    body: Result<Json<ConnectBody>, JsonRejection>,
) -> ApiResult<StatusCode> {
    let Json(body) = body?;
    engine
        .network_connect(&id, &body.container, body.endpoint_config.as_ref())
        .await?;
    Ok(StatusCode::OK)
}

async fn disconnect(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
    body: Result<Json<ConnectBody>, JsonRejection>,
) -> ApiResult<StatusCode> {
    let Json(body) = body?;
    engine.network_disconnect(&id, &body.container).await?;
    Ok(StatusCode::OK)
}

fn line(event: &PortEvent) -> Bytes {
    let mut bytes = serde_json::to_vec(event).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// `GET /vmctl/port-bindings`: the list; with `watch=1` a stream of
/// [`PortEvent`] lines, a snapshot first and again after a lag.
async fn port_bindings(
    State(engine): State<Arc<Engine>>,
    query: Result<Query<FiltersQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(query) = query?;
    let watch = matches!(query.watch.as_deref(), Some("1" | "true"));
    if !watch {
        return Ok(Json(engine.networks.ports.snapshot()).into_response());
    }
    let (snapshot, mut receiver) = engine.networks.ports.watch();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        if tx
            .send(Ok(line(&PortEvent::Snapshot(snapshot))))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let event = tokio::select! {
                _ = tx.closed() => return,
                event = engine.networks.ports.next(&mut receiver) => match event {
                    Some(event) => event,
                    None => return,
                },
            };
            if tx.send(Ok(line(&event))).await.is_err() {
                return;
            }
        }
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(ReceiverStream::new(rx)))
        .unwrap_or_default())
}
