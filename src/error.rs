//! The JSON API error every service returns, and the CLI's exit codes.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An HTTP error answered as `{"error": "<message>"}` with its status.
///
/// Handlers return `Result<_, ApiError>`; 5xx errors log their message so the
/// operator sees the detail while the client gets a clean body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status to answer with.
    pub status: StatusCode,
    /// A one-line message naming the problem.
    pub message: String,
    /// Seconds to put in a `Retry-After` header (429 and 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), retry_after: None }
    }

    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 403 Forbidden.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 404 Not Found.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 409 Conflict.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// 413 Payload Too Large.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }

    /// 429 Too Many Requests with a `Retry-After`.
    pub fn too_many_requests(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self { retry_after: Some(retry_after_secs.max(1)), ..Self::new(StatusCode::TOO_MANY_REQUESTS, message) }
    }

    /// 500 Internal Server Error; the message is logged, the client sees a generic one.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// 503 Service Unavailable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl std::error::Error for ApiError {}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = if self.status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self.message, "internal error");
            "internal server error; see the server log"
        } else {
            if self.status.is_server_error() {
                tracing::warn!(status = %self.status, error = %self.message, "request failed");
            }
            self.message.as_str()
        };
        let mut response = (self.status, Json(ErrorBody { error: message })).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Turns axum's body/path/query rejections into our JSON error shape (JSON
/// bodies go through [`crate::extract::ApiJson`], which answers 400 where axum says 422).
impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        Self::bad_request(format!("invalid query string: {}", rejection.body_text()))
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::PathRejection) -> Self {
        Self::bad_request(format!("invalid path: {}", rejection.body_text()))
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::BytesRejection) -> Self {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Self::too_large("request body is larger than the configured maximum")
        } else {
            Self::new(status, format!("could not read the request body: {}", rejection.body_text()))
        }
    }
}

/// Process exit codes of the `ydht` binary, documented in `--help` and the README.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The key (or other object) was not found.
    pub const NOT_FOUND: u8 = 1;
    /// Bad usage: invalid arguments or configuration.
    pub const USAGE: u8 = 2;
    /// Authentication or authorization failed.
    pub const AUTH: u8 = 3;
    /// A service was unreachable or answered with a server error.
    pub const UNAVAILABLE: u8 = 4;
    /// A conditional write's precondition failed (412): the key changed, or exists, meanwhile.
    pub const PRECONDITION: u8 = 5;
}

/// An error that ends the process with a specific exit code and a one-line message.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    /// The process exit code (see [`exit`]).
    pub code: u8,
    /// The one-line message printed after `error: `.
    pub message: String,
}

impl Exit {
    /// An exit with the given code and message.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// A usage / configuration error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(exit::USAGE, message)
    }
}

/// The exit code for any error: the code of an [`Exit`] in its chain, else 1.
pub fn exit_code_of(error: &anyhow::Error) -> u8 {
    error.chain().find_map(|cause| cause.downcast_ref::<Exit>()).map_or(1, |exit| exit.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn api_error_is_json_with_retry_after() {
        let response = ApiError::too_many_requests("slow down", 7).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
        let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], br#"{"error":"slow down"}"#);
    }

    #[tokio::test]
    async fn internal_errors_hide_their_detail() {
        let response = ApiError::internal("disk /dev/sda1 exploded").into_response();
        let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
        assert!(!String::from_utf8_lossy(&body).contains("sda1"));
    }

    #[test]
    fn exit_code_is_found_through_context() {
        let error = anyhow::Error::new(Exit::new(exit::AUTH, "bad key")).context("while listing");
        assert_eq!(exit_code_of(&error), exit::AUTH);
        assert_eq!(exit_code_of(&anyhow::anyhow!("plain")), 1);
    }
}
