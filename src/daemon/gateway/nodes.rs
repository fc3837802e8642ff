//! The gateway's view of the nodes' internal API: [`crate::nodeclient`] (one
//! pooled keep-alive client) adapted to the gateway's records and mutations,
//! plus the `/metrics` probe used as the health check.

use std::time::Duration;

use super::quorum::{Mutation, MutationKind, NodeRecord};
use crate::config::Secret;
use crate::nodeclient::{self, NodeRead, StoredValue, WriteMeta};
use crate::proto::{NodeKeyPage, StoreWriteResponse};

pub use crate::nodeclient::{DEFAULT_CONTENT_TYPE, NodeError};

/// Time allowed for one node request (an fsync'd write is well within it).
pub const NODE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether a failed request says the node is unwell (unreachable, garbled or 5xx), as opposed to
/// refusing this particular request. A 507 (its disk is full) is not "down": the node still
/// serves reads, and takes writes again by itself once space is freed.
pub fn node_is_down(error: &NodeError) -> bool {
    match error {
        NodeError::Unreachable { .. } | NodeError::InvalidResponse { .. } => true,
        NodeError::Status { status, .. } => {
            status.is_server_error() && *status != reqwest::StatusCode::INSUFFICIENT_STORAGE
        }
        NodeError::InvalidUrl { .. } => false,
    }
}

/// Builds the pooled keep-alive HTTP client used for the users service, the replicator and probes.
pub fn http_client() -> reqwest::Client {
    crate::tls::client_builder()
        .connect_timeout(Duration::from_secs(1))
        .timeout(NODE_TIMEOUT)
        // Below the servers' idle keep-alive timeout (crate::server::Limits), so the pool drops a connection first.
        .pool_idle_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .build()
        .expect("the HTTP client configuration is valid")
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

/// A typed client for the cluster's nodes; cheap to clone.
#[derive(Debug, Clone)]
pub struct NodeClient {
    client: nodeclient::NodeClient,
    http: reqwest::Client,
}

impl NodeClient {
    /// A client authenticating with the cluster `secret`; `http` is used for the unauthenticated probes.
    pub fn new(http: reqwest::Client, secret: Secret) -> Self {
        Self { client: nodeclient::NodeClient::new(secret, NODE_TIMEOUT), http }
    }

    /// Writes `mutation` of `key` to the node at `base` (PUT or DELETE `/store/{key}`).
    pub async fn write(&self, base: &str, key: &str, mutation: &Mutation) -> Result<StoreWriteResponse, NodeError> {
        match &mutation.kind {
            MutationKind::Put { value, content_type, expires_at } => {
                let meta = WriteMeta {
                    version: mutation.version,
                    expires_at: *expires_at,
                    content_type: content_type.clone(),
                };
                self.client.put(base, key, value.clone(), &meta).await
            }
            MutationKind::Delete => self.client.delete(base, key, mutation.version).await,
        }
    }

    /// The node's `/health` (its id).
    pub async fn health(&self, base: &str) -> Result<crate::proto::NodeHealth, NodeError> {
        self.client.health(base).await
    }

    /// Reads `key` from the node at `base`.
    pub async fn read(&self, base: &str, key: &str) -> Result<NodeRecord, NodeError> {
        Ok(match self.client.get(base, key).await? {
            NodeRead::Found(StoredValue { value, version, expires_at, content_type }) => {
                NodeRecord::Value { value, content_type, version, expires_at }
            }
            NodeRead::Tombstone { version } => NodeRecord::Tombstone { version },
            NodeRead::Missing => NodeRecord::Missing,
        })
    }

    /// One page of the node's live keys under `prefix`, after `cursor` (exclusive).
    pub async fn list(
        &self,
        base: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<NodeKeyPage, NodeError> {
        self.client.keys(base, prefix, limit, cursor).await
    }

    /// The node's `/metrics` (unauthenticated), used as its health check; returns its key count if reported.
    pub async fn probe(&self, base: &str) -> Result<Option<u64>, String> {
        let response =
            self.http.get(format!("{base}/metrics")).timeout(Duration::from_secs(2)).send().await.map_err(describe)?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        let metrics: serde_json::Value = response.json().await.map_err(describe)?;
        Ok(metrics.get("key_count").and_then(serde_json::Value::as_u64))
    }
}
