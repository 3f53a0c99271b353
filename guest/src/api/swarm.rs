//! The swarm family (`/swarm`, `/nodes`, `/services`, `/tasks`,
//! `/secrets`, `/configs`), answered as a dockerd that is in no swarm
//! answers them: 503 and dockerd's words, which clients and test suites
//! that probe for swarm expect, not a missing endpoint. This engine does
//! not run swarm mode, so `swarm init`/`join` are refused the same way,
//! saying so. And `/plugins`: an engine without plugins lists none.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::error::ApiError;
use crate::engine::Engine;

/// dockerd's answer to a manager's request on a node in no swarm.
const NOT_A_MANAGER: &str = "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.";
/// dockerd's answer to `swarm leave`/`unlock` on a node in no swarm.
const NOT_IN_A_SWARM: &str = "This node is not part of a swarm";
/// What `swarm init`/`join` get here.
const NO_SWARM_MODE: &str = "swarm mode is not supported by vmctl's engine: this node stays out of any swarm (docker compose runs multi-container apps here)";

pub fn routes() -> Router<Arc<Engine>> {
    let mut router = Router::new()
        .route("/swarm", any(not_a_manager))
        .route("/swarm/init", any(no_swarm_mode))
        .route("/swarm/join", any(no_swarm_mode))
        .route("/swarm/leave", any(not_in_a_swarm))
        .route("/swarm/unlock", any(not_in_a_swarm))
        .route("/swarm/unlockkey", any(not_a_manager))
        .route("/swarm/update", any(not_a_manager))
        .route("/plugins", get(plugins))
        .route("/plugins/{*rest}", any(no_such_plugin))
        .route("/plugins/pull", post(plugin_pull));
    for family in ["nodes", "services", "tasks", "secrets", "configs"] {
        router = router
            .route(&format!("/{family}"), any(not_a_manager))
            .route(&format!("/{family}/{{*rest}}"), any(not_a_manager));
    }
    router
}

// Each refusal reads the (small) request body first, as Go's server does:
// one answered before the client has sent it can reach the client as a
// broken pipe instead of the message.

fn unavailable(message: &str) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
}

async fn not_a_manager(_body: Bytes) -> ApiError {
    unavailable(NOT_A_MANAGER)
}

async fn not_in_a_swarm(_body: Bytes) -> ApiError {
    unavailable(NOT_IN_A_SWARM)
}

async fn no_swarm_mode(_body: Bytes) -> ApiError {
    unavailable(NO_SWARM_MODE)
}

/// `GET /plugins`: none are installed (nor can be).
async fn plugins() -> Json<Value> {
    Json(json!([]))
}

/// Any one plugin: there is none (dockerd's 404 for a name it lacks).
async fn no_such_plugin(_body: Bytes) -> ApiError {
    ApiError::not_found("plugin not found")
}

/// `POST /plugins/pull`: this engine runs no plugins.
async fn plugin_pull(_body: Bytes) -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "plugins are not supported by vmctl's engine",
    )
}
