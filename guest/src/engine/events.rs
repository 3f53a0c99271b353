//! The engine's event stream (`GET /events`): every lifecycle change is
//! published here and fanned out to subscribers.

use serde::Serialize;
use std::collections::BTreeMap;
use tokio::sync::broadcast;

/// One event, in Docker's `/events` shape.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    #[serde(rename = "Type")]
    pub kind: &'static str,
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: Actor,
    pub scope: &'static str,
    pub time: i64,
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
    // Fields of API < 1.22 that the docker CLI still reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// The object an event is about.
#[derive(Debug, Clone, Serialize)]
pub struct Actor {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}

/// A broadcast bus of events.
#[derive(Debug)]
pub struct EventBus {
    sender: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(1024).0,
        }
    }
}

impl EventBus {
    /// Publishes an event about an object of `kind` (`container`, `image`, `volume`, `network`).
    pub fn publish(
        &self,
        kind: &'static str,
        action: impl Into<String>,
        id: &str,
        attributes: BTreeMap<String, String>,
    ) {
        let now = chrono::Utc::now();
        let nanos = now.timestamp_nanos_opt().unwrap_or_default();
        let action = action.into();
        let container = kind == "container";
        let event = Event {
            kind,
            status: container.then(|| action.clone()),
            id: container.then(|| id.to_owned()),
            from: if container {
                attributes.get("image").cloned()
            } else {
                None
            },
            action,
            actor: Actor {
                id: id.to_owned(),
                attributes,
            },
            scope: "local",
            time: now.timestamp(),
            time_nano: nanos,
        };
        tracing::debug!(kind, action = %event.action, id, "event");
        // No subscriber is fine.
        let _ = self.sender.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }
}
