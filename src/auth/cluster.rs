//! The cluster secret: internal endpoints (node `/store`, replicator jobs,
//! `/validate-key`, `/cluster`) require it in the [`CLUSTER_SECRET_HEADER`].

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;

use crate::config::Secret;
use crate::error::ApiError;
use crate::proto::CLUSTER_SECRET_HEADER;

/// The cluster secret held in a service's state; cheap to clone.
#[derive(Clone, Debug)]
pub struct ClusterSecret(pub Arc<Secret>);

impl ClusterSecret {
    /// Wraps a secret for sharing between handlers.
    pub fn new(secret: Secret) -> Self {
        Self(Arc::new(secret))
    }
}

/// An extractor that admits a request only if it carries the right cluster
/// secret (compared in constant time); otherwise 401 before the handler runs.
#[derive(Debug, Clone, Copy)]
pub struct Internal;

impl<S> FromRequestParts<S> for Internal
where
    ClusterSecret: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let expected = ClusterSecret::from_ref(state);
        match parts.headers.get(CLUSTER_SECRET_HEADER) {
            None => Err(ApiError::unauthorized(format!(
                "missing {CLUSTER_SECRET_HEADER} header; internal endpoints need the cluster secret"
            ))),
            Some(given) if expected.0.matches(given.as_bytes()) => Ok(Internal),
            Some(_) => Err(ApiError::unauthorized("wrong cluster secret")),
        }
    }
}

/// `Option<Internal>`: `None` for a request without the header (a public caller), the same 401
/// as [`Internal`] for a wrong secret. For endpoints that show cluster-private parts only to insiders.
impl<S> OptionalFromRequestParts<S> for Internal
where
    ClusterSecret: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Option<Self>, Self::Rejection> {
        if parts.headers.contains_key(CLUSTER_SECRET_HEADER) {
            <Internal as FromRequestParts<S>>::from_request_parts(parts, state).await.map(Some)
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use tower::ServiceExt;

    fn app() -> Router {
        let secret = ClusterSecret::new(Secret::new("s3cret"));
        Router::new().route("/internal", get(|_: Internal| async { "ok" })).with_state(secret)
    }

    async fn status_with(header: Option<&str>) -> StatusCode {
        let mut request = Request::builder().uri("/internal");
        if let Some(value) = header {
            request = request.header(CLUSTER_SECRET_HEADER, value);
        }
        app().oneshot(request.body(Body::empty()).unwrap()).await.unwrap().status()
    }

    #[tokio::test]
    async fn only_the_right_secret_passes() {
        assert_eq!(status_with(None).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status_with(Some("wrong")).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status_with(Some("s3cret")).await, StatusCode::OK);
    }
}
