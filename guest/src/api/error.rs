//! The one place where engine errors become Docker API status codes and
//! `{"message": …}` bodies.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::engine::EngineError;

/// An error answer of the API: Docker's status code and message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

pub use crate::state::error_chain;

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        let status = match err.kind() {
            crate::engine::ErrorKind::NotFound => StatusCode::NOT_FOUND,
            crate::engine::ErrorKind::InvalidParameter => StatusCode::BAD_REQUEST,
            crate::engine::ErrorKind::Conflict => StatusCode::CONFLICT,
            crate::engine::ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            crate::engine::ErrorKind::NotModified => StatusCode::NOT_MODIFIED,
            crate::engine::ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            crate::engine::ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %error_chain(&err), "request failed");
        }
        Self::new(status, error_chain(&err))
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        Self::bad_request(format!("invalid JSON: {}", rejection.body_text()))
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status == StatusCode::NOT_MODIFIED {
            return self.status.into_response();
        }
        let body = serde_json::json!({ "message": self.message });
        (self.status, Json(body)).into_response()
    }
}

/// What every handler returns.
pub type ApiResult<T> = Result<T, ApiError>;
