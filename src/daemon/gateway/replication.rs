//! Handing copies to the replicator, and copying from the gateway itself, in a
//! bounded background task, when the replicator cannot take them.
//!
//! Concurrent jobs are coalesced ([`crate::coalesce`]) into one `POST /jobs`
//! request, which the replicator makes durable with one append and one fsync;
//! each write's caller hears back only once the request covering its job was
//! answered 202.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::{StatusCode, Url};
use tokio::sync::Semaphore;

use super::metrics::Metrics;
use super::nodes::NodeClient;
use super::placement::Topology;
use super::quorum::{Mutation, MutationKind};
use crate::coalesce::{self, Coalescer};
use crate::config::Secret;
use crate::daemon::replicator::batch::{self as jobs_body, JOBS_CONTENT_TYPE};
use crate::proto::CLUSTER_SECRET_HEADER;
use crate::ring::NodeInfo;
use crate::wal::record::RecordRef;

/// Copies the gateway makes itself at once when the replicator is unreachable; beyond that they are dropped
/// (and counted), left to the nodes' anti-entropy.
const MAX_FALLBACK_COPIES: usize = 256;
/// How long the gateway keeps offering a copy it could not make to the replicator.
const HAND_OVER_PATIENCE: Duration = Duration::from_secs(600);
/// Attempts per target for a fallback copy.
const FALLBACK_ATTEMPTS: u32 = 3;
/// How jobs are batched: up to 1024 jobs or 4 MiB per request (the replicator takes
/// at least 8 MiB), one request in flight (the next collects the jobs arriving meanwhile).
const JOB_LIMITS: coalesce::Limits =
    coalesce::Limits { max_items: 1024, max_bytes: 4 << 20, in_flight: 1, queue: 4096 };

/// One job as it waits for its batch.
#[derive(Debug)]
struct Job {
    key: String,
    mutation: Mutation,
    /// Target node base URLs, comma-separated.
    targets: String,
}

impl Job {
    /// About the job's size in a request body.
    fn size(&self) -> usize {
        let value = match &self.mutation.kind {
            MutationKind::Put { value, content_type, .. } => value.len() + content_type.len(),
            MutationKind::Delete => 0,
        };
        64 + self.key.len() + self.targets.len() + value
    }

    fn write(&self) -> RecordRef<'_> {
        let (tombstone, content_type, value, expires_at): (bool, &str, &[u8], Option<u64>) = match &self.mutation.kind {
            MutationKind::Put { value, content_type, expires_at } => (false, content_type, value, *expires_at),
            MutationKind::Delete => (true, "", &[], None),
        };
        RecordRef { key: &self.key, version: self.mutation.version, expires_at, tombstone, content_type, value }
    }
}

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
    /// The batching task, started on the first job (it needs the runtime).
    jobs: Arc<OnceLock<Coalescer<Job, Result<(), String>>>>,
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
            jobs: Arc::default(),
        }
    }

    /// Queues one job for the next batch and waits until the replicator took it.
    async fn post_job(&self, key: &str, mutation: &Mutation, targets: &[NodeInfo]) -> Result<(), String> {
        let targets = targets.iter().map(|node| node.url.as_str()).collect::<Vec<_>>().join(",");
        let job = Job { key: key.to_string(), mutation: mutation.clone(), targets };
        let jobs = self.jobs.get_or_init(|| {
            let (http, secret, replicator_url) = (self.http.clone(), self.secret.clone(), self.replicator_url.clone());
            Coalescer::spawn(JOB_LIMITS, Job::size, move |batch: Vec<Job>| {
                let (http, secret, replicator_url) = (http.clone(), secret.clone(), replicator_url.clone());
                async move {
                    let answer = post_jobs(&http, &replicator_url, &secret, &batch).await;
                    vec![answer; batch.len()]
                }
            })
        });
        jobs.submit(job).await.unwrap_or_else(|| Err("the job batching task stopped".to_string()))
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

/// `POST /jobs` with `batch`: Ok once the replicator answered that every job of it is durable.
async fn post_jobs(http: &reqwest::Client, replicator_url: &str, secret: &Secret, batch: &[Job]) -> Result<(), String> {
    let mut url = Url::parse(replicator_url).map_err(|error| format!("bad replicator URL: {error}"))?;
    url.path_segments_mut().map_err(|()| "bad replicator URL".to_string())?.pop_if_empty().push("jobs");
    let body = jobs_body::encode(batch.iter().map(|job| (job.targets.as_str(), job.write())))
        .map_err(|error| format!("cannot encode the jobs: {error}"))?;
    let response = http
        .post(url)
        .header(CLUSTER_SECRET_HEADER, secret.expose())
        .header(reqwest::header::CONTENT_TYPE, JOBS_CONTENT_TYPE)
        .body(body)
        .send()
        .await
        .map_err(super::nodes::describe)?;
    match response.status() {
        StatusCode::ACCEPTED | StatusCode::OK => Ok(()),
        status => Err(format!("answered {status}: {}", response.text().await.unwrap_or_default())),
    }
}
