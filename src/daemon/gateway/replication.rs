//! Handing copies to the replicator (`POST /jobs/{key}`), and copying from the
//! gateway itself, in a bounded background task, when the replicator cannot take them.

use std::sync::Arc;
use std::time::Duration;

use axum::http::header;
use reqwest::{StatusCode, Url};
use tokio::sync::Semaphore;

use super::metrics::Metrics;
use super::nodes::NodeClient;
use super::placement::Topology;
use super::quorum::{Mutation, MutationKind};
use crate::config::Secret;
use crate::proto::{CLUSTER_SECRET_HEADER, EXPIRES_AT_HEADER, JOB_OP_HEADER, JOB_TARGETS_HEADER, VERSION_HEADER};
use crate::ring::NodeInfo;

/// Copies the gateway makes itself at once when the replicator is unreachable; beyond that they are dropped
/// (and counted), left to the nodes' anti-entropy.
const MAX_FALLBACK_COPIES: usize = 256;
/// How long the gateway keeps offering a copy it could not make to the replicator.
const HAND_OVER_PATIENCE: Duration = Duration::from_secs(600);
/// Attempts per target for a fallback copy.
const FALLBACK_ATTEMPTS: u32 = 3;

/// Sends replication jobs; cheap to clone.
#[derive(Debug, Clone)]
pub struct Replication {
    http: reqwest::Client,
    replicator_url: String,
    secret: Secret,
    nodes: NodeClient,
    topology: Topology,
    metrics: Arc<Metrics>,
    fallback: Arc<Semaphore>,
}

impl Replication {
    /// A job sender for the replicator at `replicator_url`.
    pub fn new(
        http: reqwest::Client,
        replicator_url: String,
        secret: Secret,
        nodes: NodeClient,
        topology: Topology,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            http,
            replicator_url,
            secret,
            nodes,
            topology,
            metrics,
            fallback: Arc::new(Semaphore::new(MAX_FALLBACK_COPIES)),
        }
    }

    async fn post_job(&self, key: &str, mutation: &Mutation, targets: &[NodeInfo]) -> Result<(), String> {
        let mut url = Url::parse(&self.replicator_url).map_err(|error| format!("bad replicator URL: {error}"))?;
        url.path_segments_mut().map_err(|()| "bad replicator URL".to_string())?.pop_if_empty().extend(["jobs", key]);
        let targets = targets.iter().map(|node| node.url.as_str()).collect::<Vec<_>>().join(",");
        let mut request = self
            .http
            .post(url)
            .header(CLUSTER_SECRET_HEADER, self.secret.expose())
            .header(VERSION_HEADER, mutation.version.to_string())
            .header(JOB_TARGETS_HEADER, targets);
        request = match &mutation.kind {
            MutationKind::Put { value, content_type, expires_at } => {
                request = request.header(JOB_OP_HEADER, "put").header(header::CONTENT_TYPE, content_type);
                if let Some(expires_at) = expires_at {
                    request = request.header(EXPIRES_AT_HEADER, expires_at.to_string());
                }
                request.body(value.clone())
            }
            MutationKind::Delete => request.header(JOB_OP_HEADER, "delete"),
        };
        let response = request.send().await.map_err(super::nodes::describe)?;
        match response.status() {
            StatusCode::ACCEPTED | StatusCode::OK => Ok(()),
            status => Err(format!("answered {status}: {}", response.text().await.unwrap_or_default())),
        }
    }

    /// Makes sure `targets` get `mutation` of `key`: a durable replicator job, or — if the
    /// replicator does not take it — copies made by the gateway in the background.
    pub async fn enqueue(&self, key: &str, mutation: &Mutation, targets: Vec<NodeInfo>) {
        if targets.is_empty() {
            return;
        }
        let Err(error) = self.post_job(key, mutation, &targets).await else { return };
        self.metrics.replicator_failed();
        tracing::warn!(%error, replicator = %self.replicator_url, "replicator did not take a job; copying from the gateway");
        let Ok(permit) = self.fallback.clone().try_acquire_owned() else {
            tracing::error!(key, "too many fallback copies in flight; leaving this one to anti-entropy");
            return;
        };
        let this = self.clone();
        let key = key.to_string();
        let mutation = mutation.clone();
        tokio::spawn(async move {
            let copies = targets.iter().map(|target| async {
                let copied = this.copy_with_retries(&key, &mutation, target).await;
                (!copied).then(|| target.clone())
            });
            let missed: Vec<NodeInfo> = futures_util::future::join_all(copies).await.into_iter().flatten().collect();
            this.hand_over_later(&key, &mutation, &missed).await;
            drop(permit);
        });
    }

    /// Keeps offering the copies a target missed to the replicator (which holds them until the
    /// target is back), for up to [`HAND_OVER_PATIENCE`].
    async fn hand_over_later(&self, key: &str, mutation: &Mutation, missed: &[NodeInfo]) {
        if missed.is_empty() {
            return;
        }
        let deadline = tokio::time::Instant::now() + HAND_OVER_PATIENCE;
        let mut delay = Duration::from_millis(500);
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(delay).await;
            if self.post_job(key, mutation, missed).await.is_ok() {
                tracing::info!(key, "replicator is back and took a job the gateway could not complete");
                return;
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        tracing::error!(key, "gave up handing a missed copy to the replicator; anti-entropy must repair it");
    }

    async fn copy_with_retries(&self, key: &str, mutation: &Mutation, target: &NodeInfo) -> bool {
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=FALLBACK_ATTEMPTS {
            match self.nodes.write(&target.url, key, mutation).await {
                Ok(_) => {
                    self.topology.current().set_health(&target.id, true);
                    return true;
                }
                Err(error) => {
                    if super::nodes::node_is_down(&error) {
                        self.topology.current().record_failure(&target.id);
                    }
                    tracing::warn!(%error, attempt, "fallback copy failed");
                }
            }
            if attempt < FALLBACK_ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
        false
    }
}
