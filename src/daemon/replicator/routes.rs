//! The replicator's HTTP API.
//!
//! - `POST /jobs/{*key}` (cluster secret): headers `x-ydht-op: put|delete`,
//!   `x-version`, optional `x-expires-at`, `content-type`, `x-ydht-targets`
//!   (comma-separated node base URLs) and optional `x-ydht-wait: N`; body = the
//!   value (empty for a delete). 202 [`JobAccepted`] once the job is durable
//!   (and, with `x-ydht-wait`, once N targets acknowledged; else 504
//!   [`JobWaitTimedOut`]). 400 bad headers or key, 413 body too large, 503 queue full.
//! - `POST /jobs` (cluster secret): many jobs in one binary body ([`super::batch`]),
//!   made durable together (one queue-log append and fsync, all or none). 202
//!   [`JobsAccepted`] with their ids; 400 malformed body or bad job (naming it),
//!   413 body too large, 503 queue full (no job of the body is queued).
//! - `GET /metrics` → [`crate::proto::ReplicatorMetrics`]; `GET /health` → [`crate::proto::ReplicatorHealth`].

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
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
use crate::proto::{
    EXPIRES_AT_HEADER, JOB_OP_HEADER, JOB_TARGETS_HEADER, JOB_WAIT_HEADER, JobAccepted, JobWaitTimedOut, JobsAccepted,
    MAX_CONTENT_TYPE_BYTES, VERSION_HEADER,
};
use crate::wire::jobs::{self as batch, BatchJob};

/// Longest key a job may carry, in bytes (user keys are at most 1024 plus the tenant prefix).
pub use crate::proto::MAX_STORAGE_KEY_BYTES as MAX_KEY_BYTES;
/// Longest target URL.
const MAX_TARGET_BYTES: usize = 1024;

/// The replicator's router over its state.
pub fn app(state: Replicator) -> Router {
    let body_limit = state.config().max_value_bytes;
    Router::new()
        .route("/jobs/{*key}", post(post_job))
        .route("/jobs", post(post_jobs))
        .route("/jobs/", post(|| async { ApiError::bad_request("the key is missing: POST /jobs/{key}") }))
        .route("/metrics", get(|State(state): State<Replicator>| async move { Json(state.metrics()) }))
        .route("/health", get(|State(state): State<Replicator>| async move { Json(state.health()) }))
        .fallback(|| async {
            ApiError::not_found("no such endpoint; the replicator serves POST /jobs/{key}, GET /metrics, GET /health")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this endpoint")
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

async fn post_job(
    _: Internal,
    State(state): State<Replicator>,
    key: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    match accept(state, key, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn accept(
    state: Replicator,
    key: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let Path(key) = key?;
    validate_key(&key)?;
    let headers = request.headers();
    let op = parse_op(headers)?;
    let version = parse_u64(headers, VERSION_HEADER)?
        .filter(|version| *version > 0)
        .ok_or_else(|| ApiError::bad_request(format!("{VERSION_HEADER} header is required: a positive integer")))?;
    let expires_at = parse_u64(headers, EXPIRES_AT_HEADER)?;
    let content_type = crate::extract::content_type(headers)?;
    let targets = parse_targets(headers)?;
    let wait = parse_u64(headers, JOB_WAIT_HEADER)?.unwrap_or(0);
    if wait > targets.len() as u64 {
        return Err(ApiError::bad_request(format!(
            "{JOB_WAIT_HEADER} is {wait} but the job has only {} targets",
            targets.len()
        )));
    }
    let declared = parse_u64(headers, header::CONTENT_LENGTH.as_str())?;
    let limit = state.config().max_value_bytes;
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large(limit));
    }
    if op == Op::Delete && declared.is_some_and(|length| length > 0) {
        return Err(ApiError::bad_request("a delete job must have an empty body"));
    }
    let value = Bytes::from_request(request, &()).await.map_err(|rejection| {
        let error = ApiError::from(rejection);
        if error.status == StatusCode::PAYLOAD_TOO_LARGE { too_large(limit) } else { error }
    })?;
    if op == Op::Delete && !value.is_empty() {
        return Err(ApiError::bad_request("a delete job must have an empty body"));
    }
    let target_count = targets.len() as u32;
    let (job_id, mut progress) = state
        .enqueue(NewJob { op, key, version, expires_at, content_type, targets, value })
        .await
        .map_err(enqueue_error)?;
    if wait == 0 {
        return Ok((StatusCode::ACCEPTED, Json(JobAccepted { job_id, acked: None })).into_response());
    }
    let wanted = wait as u32;
    let settled = |p: &Progress| p.acked >= wanted || p.acked + p.rejected >= target_count;
    let _ = tokio::time::timeout(state.config().wait_timeout, progress.wait_for(settled)).await;
    let acked = progress.borrow().acked;
    if acked >= wanted {
        return Ok((StatusCode::ACCEPTED, Json(JobAccepted { job_id, acked: Some(acked) })).into_response());
    }
    let error = format!(
        "only {acked} of the {wanted} requested targets acknowledged job {job_id} within {}; it stays queued",
        crate::duration::format(state.config().wait_timeout)
    );
    Ok((StatusCode::GATEWAY_TIMEOUT, Json(JobWaitTimedOut { error, job_id, acked })).into_response())
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
        Ok(accepted) => (StatusCode::ACCEPTED, Json(accepted)).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn accept_batch(state: Replicator, headers: &HeaderMap, body: Body) -> Result<JobsAccepted, ApiError> {
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
            new_job(job, max_value, &mut lists).map_err(|mut error| {
                error.message = format!("job {index} of {count}: {}", error.message);
                error
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let accepted = state.enqueue_all(jobs).await.map_err(enqueue_error)?;
    Ok(JobsAccepted { job_ids: accepted.into_iter().map(|(id, _)| id).collect() })
}

/// The target lists of one jobs body, each checked once: a body repeats a few
/// lists (one per set of owners), and parsing URLs is most of checking a job.
#[derive(Default)]
struct TargetLists(HashMap<String, Vec<String>>);

impl TargetLists {
    fn parse(&mut self, text: String) -> Result<Vec<String>, ApiError> {
        if let Some(targets) = self.0.get(&text) {
            return Ok(targets.clone());
        }
        let targets = targets_from(&text)?;
        self.0.insert(text, targets.clone());
        Ok(targets)
    }
}

/// Checks one job of a batch as `POST /jobs/{key}` checks its headers and body.
fn new_job(job: BatchJob, max_value: usize, lists: &mut TargetLists) -> Result<NewJob, ApiError> {
    let BatchJob { targets, record } = job;
    validate_key(&record.key)?;
    if record.version == 0 {
        return Err(ApiError::bad_request("the version must be a positive integer"));
    }
    if record.value.len() > max_value {
        return Err(too_large(max_value));
    }
    let content_type = match record.content_type.trim() {
        "" => DEFAULT_CONTENT_TYPE.to_string(),
        text if text.len() > MAX_CONTENT_TYPE_BYTES => {
            return Err(ApiError::bad_request(format!("content-type is longer than {MAX_CONTENT_TYPE_BYTES} bytes")));
        }
        text => text.to_string(),
    };
    Ok(NewJob {
        op: if record.tombstone { Op::Delete } else { Op::Put },
        key: record.key,
        version: record.version,
        expires_at: record.expires_at,
        content_type,
        targets: lists.parse(targets)?,
        value: record.value,
    })
}

fn too_large(limit: usize) -> ApiError {
    ApiError::too_large(format!("the value is larger than the maximum of {limit} bytes (YDHT_MAX_VALUE_BYTES)"))
}

fn validate_key(key: &str) -> Result<(), ApiError> {
    crate::proto::check_key(key, MAX_KEY_BYTES).map_err(|error| ApiError::bad_request(error.to_string()))
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|text| Some(text.trim()))
            .map_err(|_| ApiError::bad_request(format!("{name} header is not text"))),
    }
}

fn parse_u64(headers: &HeaderMap, name: &str) -> Result<Option<u64>, ApiError> {
    match header_text(headers, name)? {
        None => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("{name} header must be a non-negative integer, got {text:?}"))),
    }
}

fn parse_op(headers: &HeaderMap) -> Result<Op, ApiError> {
    match header_text(headers, JOB_OP_HEADER)? {
        Some(op) if op.eq_ignore_ascii_case("put") => Ok(Op::Put),
        Some(op) if op.eq_ignore_ascii_case("delete") => Ok(Op::Delete),
        Some(other) => Err(ApiError::bad_request(format!("{JOB_OP_HEADER} must be put or delete, got {other:?}"))),
        None => Err(ApiError::bad_request(format!("{JOB_OP_HEADER} header is required: put or delete"))),
    }
}

/// Parses `x-ydht-targets`: 1 to [`MAX_TARGETS`] distinct http(s) base URLs.
fn parse_targets(headers: &HeaderMap) -> Result<Vec<String>, ApiError> {
    targets_from(header_text(headers, JOB_TARGETS_HEADER)?.unwrap_or(""))
}

/// Parses a comma-separated list of 1 to [`MAX_TARGETS`] distinct http(s) base URLs.
fn targets_from(text: &str) -> Result<Vec<String>, ApiError> {
    let mut targets: Vec<String> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|entry| !entry.is_empty()) {
        let invalid = |reason: &str| {
            ApiError::bad_request(format!("{JOB_TARGETS_HEADER} entry {entry:?} {reason}; expected http://host:port"))
        };
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
        if targets.len() > MAX_TARGETS {
            return Err(ApiError::bad_request(format!("{JOB_TARGETS_HEADER} lists more than {MAX_TARGETS} targets")));
        }
    }
    if targets.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{JOB_TARGETS_HEADER} header is required: comma-separated node base URLs"
        )));
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_targets(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(JOB_TARGETS_HEADER, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn targets_must_be_distinct_http_urls() {
        assert_eq!(
            parse_targets(&with_targets(" http://a:1/ , https://b:2")).unwrap(),
            vec!["http://a:1".to_string(), "https://b:2".to_string()]
        );
        for bad in ["", "ftp://a:1", "a:1", "http://a:1,http://a:1/", "http://a:1/?x=1", "not a url"] {
            assert!(parse_targets(&with_targets(bad)).is_err(), "{bad:?} was accepted");
        }
        let many: Vec<String> = (0..=MAX_TARGETS).map(|i| format!("http://n{i}:1")).collect();
        assert!(parse_targets(&with_targets(&many.join(","))).is_err());
    }

    #[test]
    fn keys_are_bounded_and_free_of_control_characters() {
        assert!(validate_key("7/user:1").is_ok());
        assert!(validate_key("").is_err());
        assert!(validate_key("a\nb").is_err());
        assert!(validate_key(&"k".repeat(MAX_KEY_BYTES + 1)).is_err());
    }
}
