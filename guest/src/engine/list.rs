//! `ps`: the container list with Docker's filters and summary shape.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::record::ContainerRecord;
use super::{Engine, EngineError};

/// "3 seconds", "About a minute", … as Docker writes durations.
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0 => "Less than a second".to_owned(),
        1 => "1 second".to_owned(),
        2..=59 => format!("{s} seconds"),
        60..=119 => "About a minute".to_owned(),
        120..=3599 => format!("{} minutes", s / 60),
        3600..=7199 => "About an hour".to_owned(),
        7200..=172_799 => format!("{} hours", s / 3600),
        172_800..=1_209_599 => format!("{} days", s / 86_400),
        1_209_600..=5_183_999 => format!("{} weeks", s / 604_800),
        5_184_000..=63_071_999 => format!("{} months", s / 2_592_000),
        _ => format!("{} years", s / 31_536_000),
    }
}

fn since(time: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(time)
        .map(|t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds())
        .unwrap_or(0)
}

/// The `Status` column.
pub fn status_text(record: &ContainerRecord) -> String {
    let state = &record.state;
    match state.status.as_str() {
        "running" => match state.health.as_ref().filter(|_| has_probe(record)) {
            Some(health) => format!(
                "Up {} ({})",
                human_duration(since(&state.started_at)),
                health_text(&health.status)
            ),
            None => format!("Up {}", human_duration(since(&state.started_at))),
        },
        "paused" => format!("Up {} (Paused)", human_duration(since(&state.started_at))),
        "restarting" => format!(
            "Restarting ({}) {} ago",
            state.exit_code,
            human_duration(since(&state.finished_at))
        ),
        "exited" if state.started_at != super::record::ZERO_TIME => format!(
            "Exited ({}) {} ago",
            state.exit_code,
            human_duration(since(&state.finished_at))
        ),
        "removing" => "Removal In Progress".to_owned(),
        "dead" => "Dead".to_owned(),
        _ => "Created".to_owned(),
    }
}

/// Docker's words for a health status in `Status`.
fn health_text(status: &str) -> String {
    match status {
        super::health::STARTING => "health: starting".to_owned(),
        other => other.to_owned(),
    }
}

fn has_probe(record: &ContainerRecord) -> bool {
    super::health::probe_command(&record.config).is_some()
}

/// A container's health for the `health` filter: a status, or `none`.
fn health_of(record: &ContainerRecord) -> &str {
    match &record.state.health {
        Some(health) if has_probe(record) => &health.status,
        _ => "none",
    }
}

/// `filters` of `GET /containers/json`, parsed: name → accepted values.
pub type Filters = HashMap<String, Vec<String>>;

/// Parses the `filters` JSON (`{"name":["x"]}` or the old `{"name":{"x":true}}`).
pub fn parse_filters(text: Option<&str>) -> Result<Filters, EngineError> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(Filters::new());
    };
    let value: Value = serde_json::from_str(text)
        .map_err(|e| EngineError::InvalidParameter(format!("invalid filter: {e}")))?;
    let mut filters = Filters::new();
    let Some(map) = value.as_object() else {
        return Err(EngineError::InvalidParameter("invalid filter".to_owned()));
    };
    for (key, values) in map {
        let list: Vec<String> = match values {
            Value::Array(items) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Value::Object(items) => items
                .iter()
                .filter(|(_, on)| **on == Value::Bool(true))
                .map(|(k, _)| k.clone())
                .collect(),
            _ => {
                return Err(EngineError::InvalidParameter(format!(
                    "invalid filter '{key}'"
                )))
            }
        };
        filters.insert(key.clone(), list);
    }
    Ok(filters)
}

fn matches(record: &ContainerRecord, filters: &Filters) -> Result<bool, EngineError> {
    for (key, values) in filters {
        let ok = match key.as_str() {
            "id" => values.iter().any(|v| record.id.starts_with(v.as_str())),
            "name" => values
                .iter()
                .any(|v| record.name.contains(v.trim_start_matches('/'))),
            "status" => values.contains(&record.state.status),
            "exited" => values.iter().any(|v| {
                record.state.status == "exited" && v.parse() == Ok(record.state.exit_code)
            }),
            "label" => values.iter().all(|v| match v.split_once('=') {
                Some((k, val)) => record.config.labels.get(k).is_some_and(|x| x == val),
                None => record.config.labels.contains_key(v),
            }),
            "ancestor" => values
                .iter()
                .any(|v| record.config.image == *v || record.image.contains(v.as_str())),
            "network" => values.iter().any(|v| {
                record.host_config.network_mode == *v
                    || record.networking.endpoints.iter().any(|(name, e)| {
                        name == v || (!v.is_empty() && e.network_id.starts_with(v.as_str()))
                    })
            }),
            "volume" => values.iter().any(|v| {
                record
                    .mounts
                    .iter()
                    .any(|m| m.name == *v || m.destination == *v || m.source == *v)
            }),
            "health" => {
                for v in values {
                    if !matches!(v.as_str(), "starting" | "healthy" | "unhealthy" | "none") {
                        return Err(EngineError::InvalidParameter(format!(
                            "Unrecognised filter value for health: {v}"
                        )));
                    }
                }
                values.iter().any(|v| v == health_of(record))
            }
            "isolation" | "is-task" | "publish" | "expose" | "before" | "since" => true,
            other => {
                return Err(EngineError::InvalidParameter(format!(
                    "invalid filter '{other}'"
                )))
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

impl Engine {
    /// `GET /containers/json`.
    pub async fn list(
        &self,
        all: bool,
        filters: &Filters,
        limit: Option<usize>,
    ) -> Result<Vec<Value>, EngineError> {
        let handles = self.handles().await;
        let mut records = Vec::new();
        for handle in handles {
            let record = handle.record.lock().await.clone();
            let shown = all
                || record.state.running
                || filters.contains_key("status")
                || filters.contains_key("exited");
            if shown && matches(&record, filters)? {
                records.push(record);
            }
        }
        records.sort_by(|a, b| b.created.cmp(&a.created));
        if let Some(limit) = limit.filter(|l| *l > 0) {
            records.truncate(limit);
        }
        Ok(records.iter().map(summary).collect())
    }
}

fn summary(record: &ContainerRecord) -> Value {
    let created = chrono::DateTime::parse_from_rfc3339(&record.created)
        .map(|t| t.timestamp())
        .unwrap_or(0);
    // Docker quotes the arguments holding a space, and only those.
    let mut command = vec![record.path.clone()];
    command.extend(record.args.iter().map(|a| {
        if a.contains(' ') {
            format!("'{a}'")
        } else {
            a.clone()
        }
    }));
    let mode = match record.host_config.network_mode.as_str() {
        "default" | "" => "bridge".to_owned(),
        other => other.to_owned(),
    };
    let mut ports: Vec<Value> = record
        .networking
        .ports
        .iter()
        .map(|b| {
            json!({"IP": b.host_ip.to_string(), "PrivatePort": b.container_port,
                   "PublicPort": b.host_port, "Type": b.protocol.as_str()})
        })
        .collect();
    // Like Docker: ports are shown while the container has a network sandbox.
    let exposed = record
        .config
        .exposed_ports
        .iter()
        .flat_map(|p| p.keys())
        .filter(|_| record.state.running && !record.networking.sandbox_id.is_empty());
    for key in exposed {
        let (port, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
        let published = record
            .networking
            .ports
            .iter()
            .any(|b| b.container_port.to_string() == port && b.protocol.as_str() == protocol);
        if let (false, Ok(port)) = (published, port.parse::<u16>()) {
            ports.push(json!({"PrivatePort": port, "Type": protocol}));
        }
    }
    let networks: serde_json::Map<String, Value> = record
        .networking
        .ordered()
        .into_iter()
        .map(|(name, e)| {
            (
                name.clone(),
                super::inspect::endpoint_json(e, record.state.running),
            )
        })
        .collect();
    json!({
        "Id": record.id,
        "Names": [format!("/{}", record.name)],
        "Image": record.config.image,
        "ImageID": record.image,
        "Command": command.join(" "),
        "Created": created,
        "Ports": ports,
        "Labels": record.config.labels,
        "State": record.state.status,
        "Status": status_text(record),
        "HostConfig": { "NetworkMode": mode },
        "NetworkSettings": { "Networks": networks },
        "Mounts": record.mounts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_dockers() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(5), "5 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(600), "10 minutes");
        assert_eq!(human_duration(3 * 86_400), "3 days");
    }

    #[test]
    fn filters_accept_both_encodings() {
        let f = parse_filters(Some(r#"{"name":["web"],"status":{"running":true}}"#)).unwrap();
        assert_eq!(f["name"], vec!["web"]);
        assert_eq!(f["status"], vec!["running"]);
        assert!(parse_filters(Some("nope")).is_err());
    }
}
