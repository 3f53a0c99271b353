//! `GET /events`: the engine's recent events (with `since`), then live ones
//! until `until` or until the client leaves; Docker's filters.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use tokio_stream::wrappers::ReceiverStream;

use super::error::ApiResult;
use crate::engine::events::Event;
use crate::engine::logs::parse_time;
use crate::engine::Engine;

type Params = Query<HashMap<String, String>>;

pub fn routes() -> Router<Arc<Engine>> {
    Router::new().route("/events", get(events))
}

fn event_line(event: &Event) -> Bytes {
    let mut line = serde_json::to_vec(event).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// `GET /events`: past nothing, then live events until `until` or the client leaves.
async fn events(State(engine): State<Arc<Engine>>, Query(params): Params) -> ApiResult<Response> {
    let filters = crate::engine::list::parse_filters(params.get("filters").map(String::as_str))?;
    let until = params.get("until").and_then(|t| parse_time(t));
    let since = params.get("since").and_then(|t| parse_time(t));
    // Subscribe before reading the history, so nothing falls in between;
    // live events already in the history are skipped by time.
    let mut receiver = engine.events.subscribe();
    let past = since
        .map(|since| engine.events.history(since, until))
        .unwrap_or_default();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let mut last_sent = i64::MIN;
        for event in past.iter().filter(|e| event_matches(e, &filters)) {
            last_sent = event.time_nano;
            if tx.send(Ok(event_line(event))).await.is_err() {
                return;
            }
        }
        let deadline = until.map(|u| {
            let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default() as i128;
            std::time::Duration::from_nanos(u64::try_from((u - now).max(0)).unwrap_or(0))
        });
        let sleep =
            tokio::time::sleep(deadline.unwrap_or(std::time::Duration::from_secs(u64::MAX / 4)));
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return,
                _ = tx.closed() => return,
                event = receiver.recv() => {
                    let Ok(event) = event else { continue };
                    if event.time_nano <= last_sent || !event_matches(&event, &filters) {
                        continue;
                    }
                    if tx.send(Ok(event_line(&event))).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(ReceiverStream::new(rx)))
        .unwrap_or_default())
}

fn event_matches(event: &Event, filters: &crate::engine::list::Filters) -> bool {
    filters.iter().all(|(key, values)| match key.as_str() {
        "type" => values.iter().any(|v| v == event.kind),
        "event" => values
            .iter()
            .any(|v| *v == event.action || event.action.starts_with(&format!("{v}:"))),
        "container" => {
            event.kind == "container"
                && values.iter().any(|v| {
                    event.actor.id.starts_with(v.as_str())
                        || event.actor.attributes.get("name").is_some_and(|n| n == v)
                })
        }
        "image" => values
            .iter()
            .any(|v| event.actor.attributes.get("image").is_some_and(|i| i == v)),
        "label" => values.iter().all(|v| match v.split_once('=') {
            Some((k, val)) => event.actor.attributes.get(k).is_some_and(|x| x == val),
            None => event.actor.attributes.contains_key(v),
        }),
        _ => true,
    })
}
