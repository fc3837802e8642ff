//! The gateway's HTTP client for the nodes' internal `/store` and `/keys` API
//! (one pooled keep-alive `reqwest::Client` for every node).

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;
use reqwest::Url;

use super::quorum::{Mutation, MutationKind, NodeRecord};
use crate::config::Secret;
use crate::proto::{
    CLUSTER_SECRET_HEADER, EXPIRES_AT_HEADER, NodeKeyPage, StoreWriteResponse, TOMBSTONE_HEADER, VERSION_HEADER,
};

/// Content type stored when the client sends none.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Why a node request failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// No answer: connection refused, reset or timed out. The node is considered down.
    #[error("node {url} is unreachable: {reason}")]
    Unreachable {
        /// The node's base URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The node answered with an unexpected status.
    #[error("node {url} answered {status}: {body}")]
    Status {
        /// The node's base URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the response body.
        body: String,
    },
}

impl NodeError {
    /// Whether the failure says the node is unwell (unreachable or 5xx), as opposed to a bad request.
    pub fn node_is_down(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Status { status, .. } => *status >= 500,
        }
    }
}

/// A typed client for one cluster's nodes; cheap to clone.
#[derive(Debug, Clone)]
pub struct NodeClient {
    http: reqwest::Client,
    secret: Secret,
}

/// Time allowed for one node request (an fsync'd write is well within it).
pub const NODE_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds the pooled keep-alive HTTP client used for every internal call.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .timeout(NODE_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .build()
        .expect("the HTTP client configuration is valid")
}

fn endpoint(base: &str, segments: &[&str]) -> Result<Url, NodeError> {
    let mut url = Url::parse(base)
        .map_err(|error| NodeError::Unreachable { url: base.to_string(), reason: format!("bad URL: {error}") })?;
    url.path_segments_mut()
        .map_err(|()| NodeError::Unreachable { url: base.to_string(), reason: "URL cannot have a path".into() })?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

fn unreachable(base: &str, error: reqwest::Error) -> NodeError {
    NodeError::Unreachable { url: base.to_string(), reason: describe(error) }
}

/// A reqwest error with its causes on one line (`error sending request: … Connection refused`), without the URL.
pub fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

async fn status_error(base: &str, response: reqwest::Response) -> NodeError {
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    NodeError::Status { url: base.to_string(), status, body: body.chars().take(200).collect() }
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

impl NodeClient {
    /// A client authenticating with the cluster `secret`.
    pub fn new(http: reqwest::Client, secret: Secret) -> Self {
        Self { http, secret }
    }

    /// Writes `mutation` of `key` to the node at `base` (PUT or DELETE `/store/{key}`).
    pub async fn write(&self, base: &str, key: &str, mutation: &Mutation) -> Result<StoreWriteResponse, NodeError> {
        let url = endpoint(base, &["store", key])?;
        let request = match &mutation.kind {
            MutationKind::Put { value, content_type, expires_at } => {
                let mut request = self.http.put(url).header(header::CONTENT_TYPE, content_type).body(value.clone());
                if let Some(expires_at) = expires_at {
                    request = request.header(EXPIRES_AT_HEADER, expires_at.to_string());
                }
                request
            }
            MutationKind::Delete => self.http.delete(url),
        };
        let response = request
            .header(CLUSTER_SECRET_HEADER, self.secret.expose())
            .header(VERSION_HEADER, mutation.version.to_string())
            .send()
            .await
            .map_err(|error| unreachable(base, error))?;
        if response.status() != StatusCode::OK {
            return Err(status_error(base, response).await);
        }
        response.json().await.map_err(|error| unreachable(base, error))
    }

    /// Reads `key` from the node at `base`.
    pub async fn read(&self, base: &str, key: &str) -> Result<NodeRecord, NodeError> {
        let url = endpoint(base, &["store", key])?;
        let response = self
            .http
            .get(url)
            .header(CLUSTER_SECRET_HEADER, self.secret.expose())
            .send()
            .await
            .map_err(|error| unreachable(base, error))?;
        let headers = response.headers().clone();
        match response.status() {
            StatusCode::OK => {
                let version = header_u64(&headers, VERSION_HEADER).ok_or_else(|| NodeError::Status {
                    url: base.to_string(),
                    status: 200,
                    body: format!("answer without a valid {VERSION_HEADER} header"),
                })?;
                let content_type = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or(DEFAULT_CONTENT_TYPE)
                    .to_string();
                let value: Bytes = response.bytes().await.map_err(|error| unreachable(base, error))?;
                Ok(NodeRecord::Value {
                    value,
                    content_type,
                    version,
                    expires_at: header_u64(&headers, EXPIRES_AT_HEADER),
                })
            }
            StatusCode::NOT_FOUND => {
                let tombstone = headers.get(TOMBSTONE_HEADER).is_some_and(|value| value.as_bytes() == b"true");
                match (tombstone, header_u64(&headers, VERSION_HEADER)) {
                    (true, Some(version)) => Ok(NodeRecord::Tombstone { version }),
                    _ => Ok(NodeRecord::Missing),
                }
            }
            _ => Err(status_error(base, response).await),
        }
    }

    /// One page of the node's live keys under `prefix`, after `cursor` (exclusive).
    pub async fn list(
        &self,
        base: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<NodeKeyPage, NodeError> {
        let mut url = endpoint(base, &["keys"])?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("prefix", prefix).append_pair("limit", &limit.to_string());
            if let Some(cursor) = cursor {
                query.append_pair("cursor", cursor);
            }
        }
        let response = self
            .http
            .get(url)
            .header(CLUSTER_SECRET_HEADER, self.secret.expose())
            .send()
            .await
            .map_err(|error| unreachable(base, error))?;
        if response.status() != StatusCode::OK {
            return Err(status_error(base, response).await);
        }
        response.json().await.map_err(|error| unreachable(base, error))
    }

    /// The node's `/metrics` (unauthenticated), used as its health check; returns its key count if reported.
    pub async fn probe(&self, base: &str) -> Result<Option<u64>, NodeError> {
        let url = endpoint(base, &["metrics"])?;
        let response = self
            .http
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .map_err(|error| unreachable(base, error))?;
        if response.status() != StatusCode::OK {
            return Err(status_error(base, response).await);
        }
        let metrics: serde_json::Value = response.json().await.map_err(|error| unreachable(base, error))?;
        Ok(metrics.get("key_count").and_then(serde_json::Value::as_u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_percent_encoded_path_segment() {
        let url = endpoint("http://127.0.0.1:8082", &["store", "7/a b/c?d#e%"]).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8082/store/7%2Fa%20b%2Fc%3Fd%23e%25");
        let url = endpoint("http://127.0.0.1:8082/", &["keys"]).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8082/keys");
    }
}
