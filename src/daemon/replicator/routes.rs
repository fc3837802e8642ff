//! The replicator's HTTP API.
//!
//! - `POST /jobs` (cluster secret): one or many jobs in one binary body
//!   ([`crate::wire::jobs`]), made durable together (one queue-log append and
//!   fsync, all or none). 202 [`JobsAccepted`] with their ids; 400 malformed
//!   body or bad job (naming it), 413 body too large, 503 queue full (no job of
//!   the body is queued). With `x-ydht-wait: N` (a strong write's majority) the
//!   answer waits until every job has N acknowledged targets: 202 with the
//!   counts, or 504 [`JobsWaitTimedOut`] after the configured wait (the jobs
//!   stay queued and are still delivered).
//! - `GET /metrics` → [`crate::proto::ReplicatorMetrics`]; `GET /health` → [`crate::proto::ReplicatorHealth`].

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use reqwest::Url;
use std::collections::HashMap;

use super::MAX_TARGETS;
use super::queue::Op;
use super::state::{EnqueueError, NewJob, Progress, Replicator};
use crate::auth::cluster::Internal;
use crate::error::ApiError;
use crate::proto::DEFAULT_CONTENT_TYPE;
use crate::proto::{JOB_WAIT_HEADER, JobsAccepted, JobsWaitTimedOut, MAX_CONTENT_TYPE_BYTES};
use crate::wire::jobs::{self as batch, BatchJob};

/// Longest key a job may carry, in bytes (user keys are at most 1024 plus the tenant prefix).
pub use crate::proto::MAX_STORAGE_KEY_BYTES as MAX_KEY_BYTES;
/// Longest target URL.
const MAX_TARGET_BYTES: usize = 1024;

/// The replicator's router over its state.
pub fn app(state: Replicator) -> Router {
    Router::new()
        .route("/jobs", post(post_jobs))
        .route("/metrics", get(metrics))
        .route("/health", get(|State(state): State<Replicator>| async move { Json(state.health()) }))
        .fallback(|| async {
            ApiError::not_found("no such endpoint; the replicator serves POST /jobs, GET /metrics, GET /health")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this endpoint")
        })
        .with_state(state)
}

/// `GET /metrics`: JSON, or OpenMetrics / Prometheus text when `Accept` asks for it.
async fn metrics(State(state): State<Replicator>, headers: axum::http::HeaderMap) -> axum::response::Response {
    use axum::response::IntoResponse;
    use prometheus_client::registry::Unit;
    let snapshot = state.metrics();
    let format = crate::exposition::Format::negotiate(&headers);
    let mut exposition = crate::exposition::Exposition::new("replicator");
    let m = &snapshot;
    exposition.counter("jobs", "Replication jobs accepted", m.total_replications);
    exposition.counters(
        "copies",
        "Replica copies by result",
        "result",
        [("delivered".to_string(), m.successful_replicas), ("failed".to_string(), m.failed_replicas)],
    );
    exposition.gauge("queue_depth", "Jobs waiting or in flight", m.queue_size as f64);
    exposition.gauge("queue_capacity", "Most jobs the queue takes (--max-queue)", m.queue_capacity as f64);
    exposition.gauge_in(
        "ack_time_average",
        "Mean time from a job's acceptance to a copy's acknowledgement",
        Unit::Seconds,
        m.average_ack_time_ms / 1000.0,
    );
    exposition.gauge_in(
        "lag_max",
        "Age of the oldest copy still owed",
        Unit::Seconds,
        m.max_replication_lag_ms / 1000.0,
    );
    exposition.gauge("retries_in_progress", "Copies waiting out a retry backoff", m.retries_in_progress as f64);
    exposition.counter(
        "hinted_handoffs",
        "Copies handed to another node for an owner that stayed down",
        m.hinted_handoffs,
    );
    exposition.counter("refused_jobs", "Jobs refused because the queue was full", m.refused_jobs);
    exposition.counter(
        "dropped_copies",
        "Copies dropped (refused for good, or for nodes that left with no owner to take them)",
        m.dropped_copies,
    );
    exposition.counter(
        "retargeted_copies",
        "Copies sent to a key's current owners after their target left the cluster",
        m.retargeted_copies,
    );
    exposition.respond(format, || Json(snapshot).into_response())
}

fn enqueue_error(error: EnqueueError) -> ApiError {
    match error {
        EnqueueError::Full(_) => {
            let mut api = ApiError::unavailable(error.to_string());
            api.retry_after = Some(1);
            api
        }
        EnqueueError::Log(_) => ApiError::unavailable(error.to_string()),
    }
}

/// Largest `POST /jobs` body: a full batch of small jobs, or one job with a maximum-size value.
pub fn max_batch_body_bytes(max_value_bytes: usize) -> usize {
    max_value_bytes.saturating_add(64 * 1024).max(8 << 20)
}

async fn post_jobs(_: Internal, State(state): State<Replicator>, headers: HeaderMap, body: Body) -> Response {
    match accept_batch(state, &headers, body).await {
        Ok(answer) => answer,
        Err(error) => error.into_response(),
    }
}

async fn accept_batch(state: Replicator, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    let wait = wait_of(headers)?;
    let limit = max_batch_body_bytes(state.config().max_value_bytes);
    let body = crate::server::read_limited_body(headers, body, limit, "the jobs body").await?;
    let jobs = batch::decode(&body).map_err(|error| ApiError::bad_request(error.to_string()))?;
    let max_value = state.config().max_value_bytes;
    let count = jobs.len();
    let mut lists = TargetLists::default();
    let jobs = jobs
        .into_iter()
        .enumerate()
        .map(|(index, job)| {
            new_job(job, max_value, wait, &mut lists).map_err(|mut error| {
                error.message = format!("job {index} of {count}: {}", error.message);
                error
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let targets: Vec<u32> = jobs.iter().map(|job| job.targets.len() as u32).collect();
    let accepted = state.enqueue_all(jobs).await.map_err(enqueue_error)?;
    let job_ids: Vec<u64> = accepted.iter().map(|(id, _)| *id).collect();
    if wait == 0 {
        return Ok((StatusCode::ACCEPTED, Json(JobsAccepted { job_ids, acked: None })).into_response());
    }
    let progress: Vec<_> = accepted.into_iter().map(|(_, progress)| progress).collect();
    let waits = progress.iter().cloned().zip(targets).map(|(mut progress, targets)| async move {
        let settled = |p: &Progress| p.acked >= wait || p.acked + p.rejected >= targets;
        let _ = progress.wait_for(settled).await;
    });
    let timeout = state.config().wait_timeout;
    let _ = tokio::time::timeout(timeout, futures_util::future::join_all(waits)).await;
    let acked: Vec<u32> = progress.iter().map(|progress| progress.borrow().acked).collect();
    if acked.iter().all(|&count| count >= wait) {
        return Ok((StatusCode::ACCEPTED, Json(JobsAccepted { job_ids, acked: Some(acked) })).into_response());
    }
    let short: Vec<String> = job_ids
        .iter()
        .zip(&acked)
        .filter(|(_, count)| **count < wait)
        .map(|(id, count)| format!("job {id}: {count}"))
        .collect();
    let error = format!(
        "not every job reached the {wait} requested acknowledgements within {} ({}); they stay queued",
        crate::duration::format(timeout),
        short.join(", ")
    );
    Ok((StatusCode::GATEWAY_TIMEOUT, Json(JobsWaitTimedOut { error, job_ids, acked })).into_response())
}

/// `x-ydht-wait: N`: acknowledged targets to wait for per job (0 when absent).
fn wait_of(headers: &HeaderMap) -> Result<u32, ApiError> {
    let Some(value) = headers.get(JOB_WAIT_HEADER) else { return Ok(0) };
    value.to_str().ok().and_then(|text| text.trim().parse().ok()).ok_or_else(|| {
        ApiError::bad_request(format!("{JOB_WAIT_HEADER} must be a non-negative integer, got {value:?}"))
    })
}

/// The target lists of one jobs body, each checked once: a body repeats a few
/// lists (one per set of owners), and parsing URLs is most of checking a job.
#[derive(Default)]
struct TargetLists(HashMap<Vec<String>, Vec<String>>);

impl TargetLists {
    fn parse(&mut self, listed: Vec<String>) -> Result<Vec<String>, ApiError> {
        if let Some(targets) = self.0.get(&listed) {
            return Ok(targets.clone());
        }
        let targets = checked_targets(&listed)?;
        self.0.insert(listed, targets.clone());
        Ok(targets)
    }
}

/// Checks one job of a body: its key, version, value size, content type,
/// targets, and that it has the `wait` targets to wait for.
fn new_job(job: BatchJob, max_value: usize, wait: u32, lists: &mut TargetLists) -> Result<NewJob, ApiError> {
    let BatchJob { targets, record } = job;
    validate_key(&record.key)?;
    if record.version == 0 {
        return Err(ApiError::bad_request("the version must be a positive integer"));
    }
    if record.value.len() > max_value {
        return Err(too_large(max_value));
    }
    if record.tombstone && !record.value.is_empty() {
        return Err(ApiError::bad_request("a delete job must not carry a value"));
    }
    let content_type = match record.content_type.trim() {
        "" => DEFAULT_CONTENT_TYPE.to_string(),
        text if text.len() > MAX_CONTENT_TYPE_BYTES => {
            return Err(ApiError::bad_request(format!("content-type is longer than {MAX_CONTENT_TYPE_BYTES} bytes")));
        }
        text => text.to_string(),
    };
    let targets = lists.parse(targets)?;
    if wait as usize > targets.len() {
        let listed = targets.len();
        return Err(ApiError::bad_request(format!(
            "{JOB_WAIT_HEADER} is {wait} but the job has only {listed} targets"
        )));
    }
    Ok(NewJob {
        op: if record.tombstone { Op::Delete } else { Op::Put },
        key: record.key,
        version: record.version,
        expires_at: record.expires_at,
        content_type,
        targets,
        value: record.value,
    })
}

fn too_large(limit: usize) -> ApiError {
    ApiError::too_large(format!("the value is larger than the maximum of {limit} bytes (YDHT_MAX_VALUE_BYTES)"))
}

fn validate_key(key: &str) -> Result<(), ApiError> {
    crate::proto::check_key(key, MAX_KEY_BYTES).map_err(|error| ApiError::bad_request(error.to_string()))
}

/// Checks a job's target list: 1 to [`MAX_TARGETS`] distinct http(s) base URLs
/// (a trailing `/` is dropped).
fn checked_targets(listed: &[String]) -> Result<Vec<String>, ApiError> {
    if listed.is_empty() {
        return Err(ApiError::bad_request("a job needs at least one target: a node base URL"));
    }
    if listed.len() > MAX_TARGETS {
        return Err(ApiError::bad_request(format!("a job lists more than {MAX_TARGETS} targets")));
    }
    let mut targets: Vec<String> = Vec::with_capacity(listed.len());
    for entry in listed {
        let invalid =
            |reason: &str| ApiError::bad_request(format!("target {entry:?} {reason}; expected http://host:port"));
        if entry.len() > MAX_TARGET_BYTES {
            return Err(invalid("is too long"));
        }
        let url = Url::parse(entry).map_err(|_| invalid("is not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(invalid("is not an http(s) URL with a host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("must not have a query or fragment"));
        }
        let base = entry.trim_end_matches('/').to_string();
        if targets.contains(&base) {
            return Err(invalid("is listed twice"));
        }
        targets.push(base);
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(targets: &[&str]) -> Vec<String> {
        targets.iter().map(|target| target.to_string()).collect()
    }

    #[test]
    fn targets_must_be_distinct_http_urls() {
        assert_eq!(
            checked_targets(&list(&["http://a:1/", "https://b:2"])).unwrap(),
            vec!["http://a:1".to_string(), "https://b:2".to_string()]
        );
        for bad in [&[][..], &["ftp://a:1"], &["a:1"], &["http://a:1", "http://a:1/"], &["http://a:1/?x=1"], &["a b"]] {
            assert!(checked_targets(&list(bad)).is_err(), "{bad:?} was accepted");
        }
        let many: Vec<String> = (0..=MAX_TARGETS).map(|i| format!("http://n{i}:1")).collect();
        assert!(checked_targets(&many).is_err());
    }

    #[test]
    fn keys_are_bounded_and_free_of_control_characters() {
        assert!(validate_key("7/user:1").is_ok());
        assert!(validate_key("").is_err());
        assert!(validate_key("a\nb").is_err());
        assert!(validate_key(&"k".repeat(MAX_KEY_BYTES + 1)).is_err());
    }
}
