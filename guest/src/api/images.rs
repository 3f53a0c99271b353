//! `/images` endpoints.

use std::sync::Arc;

use axum::Router;

use crate::engine::Engine;

pub fn routes() -> Router<Arc<Engine>> {
    Router::new()
}
