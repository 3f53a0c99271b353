//! The event stream (`GET /events`): every lifecycle change, of the engine's
//! containers and of the stores' images, volumes and networks, is published
//! here and fanned out to subscribers.

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

/// How many past events the bus keeps for `GET /events?since=` (Docker keeps
/// a bounded in-memory log too).
const HISTORY: usize = 1024;

/// A broadcast bus of events, with the most recent ones kept.
#[derive(Debug)]
pub struct EventBus {
    sender: broadcast::Sender<Event>,
    history: std::sync::Mutex<std::collections::VecDeque<Event>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(1024).0,
            history: std::sync::Mutex::new(std::collections::VecDeque::with_capacity(HISTORY)),
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
        if let Ok(mut history) = self.history.lock() {
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(event.clone());
        }
        // No subscriber is fine.
        let _ = self.sender.send(event);
    }

    /// Kept events with `since <= time <= until` (Unix nanoseconds).
    pub fn history(&self, since: i128, until: Option<i128>) -> Vec<Event> {
        let Ok(history) = self.history.lock() else {
            return Vec::new();
        };
        history
            .iter()
            .filter(|e| {
                let t = i128::from(e.time_nano);
                t >= since && until.is_none_or(|u| t <= u)
            })
            .cloned()
            .collect()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keeps_the_last_events_in_a_window() {
        let bus = EventBus::default();
        for i in 0..(HISTORY + 5) {
            bus.publish("container", "create", &format!("c{i}"), BTreeMap::new());
        }
        let all = bus.history(0, None);
        assert_eq!(all.len(), HISTORY);
        assert_eq!(all[0].actor.id, "c5");
        let last = all[HISTORY - 1].time_nano;
        assert!(bus.history(i128::from(last) + 1, None).is_empty());
        assert!(!bus
            .history(0, Some(i128::from(all[0].time_nano)))
            .is_empty());
    }
}
