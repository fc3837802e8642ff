//! Handing copies to the replicator, and copying from the gateway itself, in a
//! bounded background task, when the replicator cannot take them.
//!
//! Concurrent jobs are coalesced ([`crate::coalesce`]) into one `POST /jobs`
//! request, which the replicator makes durable with one append and one fsync;
//! each write's caller hears back only once the request covering its job was
//! answered 202. A batch the replicator refuses as a whole (a 4xx: one bad job
//! refuses the body) is resent job by job, so only the bad job fails.
//!
//! What became of a write's copies is reported to its handler ([`track`]), so the
//! answer counts only copies that are durable or durably queued. Warnings on
//! failure paths are rate-limited ([`crate::log_throttle`]): an overloaded replicator must
//! not turn every request into a log line.

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::{StatusCode, Url};
use tokio::sync::Semaphore;

use super::metrics::Metrics;
use super::nodes::NodeClient;
use super::placement::Topology;
use super::quorum::{Mutation, MutationKind};
use crate::coalesce::{self, Coalescer};
use crate::config::Secret;
use crate::log_throttle::LogThrottle;
use crate::proto::CLUSTER_SECRET_HEADER;
use crate::ring::NodeInfo;
use crate::sync::Lock;
use crate::wal::record::RecordRef;
use crate::wire::jobs::{self as jobs_body, JOBS_CONTENT_TYPE};

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
/// Jobs of a refused batch resent at once, each alone.
const RESEND_CONCURRENCY: usize = 16;
/// At most one line per this interval for each kind of failure warning.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What became of the copies handed over while serving one write (see [`track`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handover {
    /// Base URLs of the nodes whose copy the replicator made durable.
    pub queued: Vec<String>,
    /// Why some copies are not durably queued (the first reason), if any are not.
    pub failure: Option<String>,
}

impl Handover {
    fn queued(&mut self, targets: &[NodeInfo]) {
        for target in targets {
            if !self.queued.contains(&target.url) {
                self.queued.push(target.url.clone());
            }
        }
    }
}

tokio::task_local! {
    /// The report of the write being served by this task, when its handler asked for one.
    static HANDOVER: Arc<Mutex<Handover>>;
}

/// Runs `write` and reports what became of the copies it handed to [`Replication::enqueue`]
/// (in this task; copies handed over by tasks it spawned are not counted).
pub async fn track<F: Future>(write: F) -> (F::Output, Handover) {
    let report = Arc::new(Mutex::new(Handover::default()));
    let output = HANDOVER.scope(report.clone(), write).await;
    let handover = report.locked().clone();
    (output, handover)
}

fn report(update: impl FnOnce(&mut Handover)) {
    let _ = HANDOVER.try_with(|report| update(&mut report.locked()));
}

/// The rate-limited warnings of the replication path, one throttle per kind.
#[derive(Debug)]
struct Warnings {
    not_taken: LogThrottle,
    fallback_full: LogThrottle,
    fallback_failed: LogThrottle,
    gave_up: LogThrottle,
}

impl Default for Warnings {
    fn default() -> Self {
        let throttle = || LogThrottle::new(LOG_INTERVAL);
        Self { not_taken: throttle(), fallback_full: throttle(), fallback_failed: throttle(), gave_up: throttle() }
    }
}

/// Why the replicator did not take a batch of jobs.
#[derive(Debug, Clone)]
struct NotTaken {
    /// It refused the request itself (a 4xx): sending the same body again cannot succeed.
    refused: bool,
    /// What happened, for the log and the write's answer.
    message: String,
}

impl NotTaken {
    fn other(message: impl Into<String>) -> Self {
        Self { refused: false, message: message.into() }
    }
}

/// One job as it waits for its batch.
#[derive(Debug)]
struct Job {
    key: String,
    mutation: Mutation,
    /// Target node base URLs.
    targets: Vec<String>,
}

impl Job {
    /// About the job's size in a request body.
    fn size(&self) -> usize {
        let value = match &self.mutation.kind {
            MutationKind::Put { value, content_type, .. } => value.len() + content_type.len(),
            MutationKind::Delete => 0,
        };
        64 + self.key.len() + self.targets.iter().map(|target| 2 + target.len()).sum::<usize>() + value
    }

    fn write(&self) -> RecordRef<'_> {
        self.mutation.record(&self.key)
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
    jobs: Arc<OnceLock<Coalescer<Job, Result<(), NotTaken>>>>,
    warnings: Arc<Warnings>,
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
            warnings: Arc::default(),
        }
    }

    /// Queues one job for the next batch and waits until the replicator took it.
    async fn post_job(&self, key: &str, mutation: &Mutation, targets: &[NodeInfo]) -> Result<(), NotTaken> {
        let targets = targets.iter().map(|node| node.url.clone()).collect();
        let job = Job { key: key.to_string(), mutation: mutation.clone(), targets };
        let jobs = self.jobs.get_or_init(|| {
            let (http, secret, replicator_url) = (self.http.clone(), self.secret.clone(), self.replicator_url.clone());
            Coalescer::spawn(JOB_LIMITS, Job::size, move |batch: Vec<Job>| {
                let (http, secret, replicator_url) = (http.clone(), secret.clone(), replicator_url.clone());
                async move { post_batch(&http, &replicator_url, &secret, &batch).await }
            })
        });
        jobs.submit(job).await.unwrap_or_else(|| Err(NotTaken::other("the job batching task stopped")))
    }

    /// Makes sure `targets` get `mutation` of `key`: a durable replicator job, or — if the
    /// replicator does not take it — copies made by the gateway in the background.
    /// What became of them is reported to the write's [`track`], if any.
    pub async fn enqueue(&self, key: &str, mutation: &Mutation, targets: Vec<NodeInfo>) {
        if targets.is_empty() {
            return;
        }
        let error = match self.post_job(key, mutation, &targets).await {
            Ok(()) => return report(|handover| handover.queued(&targets)),
            Err(error) => error.message,
        };
        self.metrics.replicator_failed();
        if let Some(suppressed) = self.warnings.not_taken.allow() {
            tracing::warn!(
                %error,
                replicator = %self.replicator_url,
                suppressed,
                "replicator did not take a job; copying from the gateway (suppressed: like lines held back)"
            );
        }
        let Ok(permit) = self.fallback.clone().try_acquire_owned() else {
            if let Some(suppressed) = self.warnings.fallback_full.allow() {
                tracing::error!(
                    key,
                    suppressed,
                    "too many fallback copies in flight; leaving this one to anti-entropy \
                     (suppressed: like lines held back)"
                );
            }
            let failure =
                format!("the replicator did not take them ({error}), and the gateway's fallback copier is full");
            return report(|handover| {
                handover.failure.get_or_insert(failure);
            });
        };
        let failure =
            format!("the replicator did not take them ({error}); the gateway copies them without a durable record");
        report(|handover| {
            handover.failure.get_or_insert(failure);
        });
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
                tracing::debug!(key, "replicator is back and took a job the gateway could not complete");
                return;
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        if let Some(suppressed) = self.warnings.gave_up.allow() {
            tracing::error!(
                key,
                suppressed,
                "gave up handing a missed copy to the replicator; anti-entropy must repair it \
                 (suppressed: like lines held back)"
            );
        }
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
                    if let Some(suppressed) = self.warnings.fallback_failed.allow() {
                        tracing::warn!(%error, attempt, suppressed, "fallback copy failed (suppressed: like lines held back)");
                    }
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

/// Posts `batch`; when the replicator refuses it as a whole (a 4xx), resends every job alone,
/// so one bad job does not hold back the others (which may be other tenants').
async fn post_batch(
    http: &reqwest::Client,
    replicator_url: &str,
    secret: &Secret,
    batch: &[Job],
) -> Vec<Result<(), NotTaken>> {
    match post_jobs(http, replicator_url, secret, batch).await {
        Err(error) if error.refused && batch.len() > 1 => {
            tracing::debug!(error = %error.message, jobs = batch.len(), "the replicator refused a batch; resending its jobs one by one");
            futures_util::stream::iter(0..batch.len())
                .map(|index| post_jobs(http, replicator_url, secret, &batch[index..=index]))
                .buffered(RESEND_CONCURRENCY)
                .collect()
                .await
        }
        answer => vec![answer; batch.len()],
    }
}

/// `POST /jobs` with `batch`: Ok once the replicator answered that every job of it is durable.
async fn post_jobs(
    http: &reqwest::Client,
    replicator_url: &str,
    secret: &Secret,
    batch: &[Job],
) -> Result<(), NotTaken> {
    let mut url =
        Url::parse(replicator_url).map_err(|error| NotTaken::other(format!("bad replicator URL: {error}")))?;
    url.path_segments_mut().map_err(|()| NotTaken::other("bad replicator URL"))?.pop_if_empty().push("jobs");
    let body = jobs_body::encode(batch.iter().map(|job| (job.targets.as_slice(), job.write())))
        .map_err(|error| NotTaken { refused: true, message: format!("cannot encode the jobs: {error}") })?;
    let response = crate::requestid::propagate(http.post(url))
        .header(CLUSTER_SECRET_HEADER, secret.expose())
        .header(reqwest::header::CONTENT_TYPE, JOBS_CONTENT_TYPE)
        .body(body)
        .send()
        .await
        .map_err(|error| NotTaken::other(super::nodes::describe(error)))?;
    let status = response.status();
    if matches!(status, StatusCode::ACCEPTED | StatusCode::OK) {
        return Ok(());
    }
    let text = response.text().await.unwrap_or_default();
    let reason = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|body| body.get("error").and_then(|error| error.as_str()).map(str::to_string))
        .unwrap_or(text);
    // 401/403 (a secret an operator can fix), 408 and 429 are worth retrying: not a refusal of the jobs.
    let refused = status.is_client_error()
        && !matches!(
            status,
            StatusCode::UNAUTHORIZED
                | StatusCode::FORBIDDEN
                | StatusCode::REQUEST_TIMEOUT
                | StatusCode::TOO_MANY_REQUESTS
        );
    Err(NotTaken { refused, message: format!("the replicator answered {status}: {reason}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job for `key` whose value is stored with `content_type`, for a node nobody runs.
    fn job(key: &str, content_type: &str) -> Job {
        let kind = MutationKind::Put {
            value: bytes::Bytes::from_static(b"v"),
            content_type: content_type.to_string(),
            expires_at: None,
        };
        Job {
            key: key.to_string(),
            mutation: Mutation { version: 9, kind },
            targets: vec!["http://127.0.0.1:9".into()],
        }
    }

    #[tokio::test]
    async fn a_batch_refused_for_one_bad_job_is_resent_job_by_job() {
        use crate::daemon::replicator::{ReplicatorConfig, serve};
        let dir = tempfile::tempdir().unwrap();
        let secret = Secret::new("resend-test");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = crate::shutdown::Shutdown::new();
        let replicator = ReplicatorConfig::with_defaults(dir.path().to_path_buf(), secret.clone());
        let running = tokio::spawn(serve(replicator, listener, shutdown.clone()));
        let http = reqwest::Client::new();

        // The replicator refuses a content type longer than the nodes take; the tenants beside it are fine.
        let bad = "x".repeat(crate::proto::MAX_CONTENT_TYPE_BYTES + 1);
        let batch = [job("1/a", "text/plain"), job("2/b", &bad), job("3/c", "text/plain")];
        let whole = post_jobs(&http, &url, &secret, &batch).await.unwrap_err();
        assert!(whole.refused && whole.message.contains("400"), "{whole:?}");
        let answers = post_batch(&http, &url, &secret, &batch).await;
        assert!(answers[0].is_ok() && answers[2].is_ok(), "{answers:?}");
        assert!(answers[1].as_ref().is_err_and(|error| error.refused && error.message.contains("content-type")));
        let metrics: serde_json::Value = http.get(format!("{url}/metrics")).send().await.unwrap().json().await.unwrap();
        assert_eq!(metrics["total_replications"], 2, "{metrics}");
        shutdown.trigger();
        running.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn track_collects_what_enqueue_reports_in_its_task_only() {
        fn node(id: &str) -> NodeInfo {
            NodeInfo { id: id.to_string(), url: format!("http://{id}") }
        }
        let ((), handover) = track(async {
            report(|handover| handover.queued(&[node("a"), node("b")]));
            report(|handover| handover.queued(&[node("b")]));
            report(|handover| {
                handover.failure.get_or_insert("first".to_string());
            });
            report(|handover| {
                handover.failure.get_or_insert("second".to_string());
            });
            tokio::spawn(async { report(|handover| handover.queued(&[node("c")])) }).await.unwrap();
        })
        .await;
        assert_eq!(handover.queued, ["http://a", "http://b"]);
        assert_eq!(handover.failure.as_deref(), Some("first"));
        // Outside a tracked write, reports go nowhere (and do not panic).
        report(|handover| handover.queued(&[node("d")]));
    }
}
