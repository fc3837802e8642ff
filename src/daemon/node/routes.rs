//! The node's HTTP API. Everything but `/health` and `/metrics` requires the
//! cluster secret ([`Internal`]), which is checked before any body is read;
//! headers are validated next, and bodies are read last, under a size limit.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde::Deserialize;

use super::antientropy::PAGE;
use super::{AntiEntropyHandle, NodeState};
use crate::auth::cluster::Internal;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::proto::{
    EXPIRES_AT_HEADER, NodeBatchResponse, NodeDigest, NodeExportRequest, NodeHealth, NodeKeyPage, NodeMetrics,
    NodeRangePage, NodeRangeRequest, NodeScanRequest, PENDING_HEADER, StoreWriteResponse, TOMBSTONE_HEADER,
    VERSION_HEADER,
};
use crate::wal::{Record, WalError};
use crate::wire::read::Lookup;
use crate::wire::{batch, paxos as paxos_body, read};

use crate::proto::DEFAULT_CONTENT_TYPE;
pub use crate::proto::MAX_CONTENT_TYPE_BYTES;
/// Longest key a node accepts, in bytes (the gateway adds a `{user_id}/` prefix to 1024-byte user keys).
pub use crate::proto::MAX_STORAGE_KEY_BYTES as MAX_KEY_BYTES;
/// Default and largest page of `GET /keys`.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// The node's router.
pub fn app(state: NodeState) -> Router {
    Router::new()
        .route("/store/", any(|| async { ApiError::bad_request("the key is empty") }))
        .route("/store/{*key}", get(get_value).put(put_value).delete(delete_value))
        .route("/keys", get(list_keys))
        .route("/batch", post(apply_batch))
        .route("/read", post(read_many))
        .route("/feed", get(feed))
        .route("/paxos", post(paxos))
        .route("/digest", get(digest))
        .route("/range", post(range))
        .route("/export", post(export))
        .route("/scan", post(scan))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .fallback(|| async { ApiError::not_found("no such endpoint on a ydht node") })
        .with_state(state)
}

/// Checks a key: 1..=[`MAX_KEY_BYTES`] bytes of UTF-8 without control characters.
pub fn validate_key(key: &str) -> Result<(), ApiError> {
    crate::proto::check_key(key, MAX_KEY_BYTES).map_err(|error| ApiError::bad_request(error.to_string()))
}

fn store_key(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(key) = path?;
    validate_key(&key)?;
    Ok(key)
}

fn version_header(headers: &HeaderMap) -> Result<u64, ApiError> {
    let value = headers.get(VERSION_HEADER).ok_or_else(|| {
        ApiError::bad_request(format!(
            "missing {VERSION_HEADER} header; writes carry the coordinator's version (a u64)"
        ))
    })?;
    parse_u64(value).ok_or_else(|| {
        ApiError::bad_request(format!("malformed {VERSION_HEADER} header {value:?}; expected a decimal u64"))
    })
}

fn expires_at_header(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(EXPIRES_AT_HEADER) else { return Ok(None) };
    match parse_u64(value) {
        Some(millis) if millis > 0 => Ok(Some(millis)),
        _ => Err(ApiError::bad_request(format!(
            "malformed {EXPIRES_AT_HEADER} header {value:?}; expected positive Unix milliseconds"
        ))),
    }
}

fn parse_u64(value: &HeaderValue) -> Option<u64> {
    value.to_str().ok()?.trim().parse().ok()
}

/// How a failed store write is answered: a full disk is 507 Insufficient
/// Storage naming this node (reads keep working, writes resume by themselves
/// once space is freed); any other storage failure is 503.
fn write_error(state: &NodeState, error: WalError) -> ApiError {
    match error {
        WalError::Encode(error) => ApiError::bad_request(error.to_string()),
        full @ WalError::DiskFull(_) => {
            ApiError::new(StatusCode::INSUFFICIENT_STORAGE, format!("{}: {full}", state.settings.node_id))
        }
        other => ApiError::unavailable(format!("the write was not stored: {other}")),
    }
}

async fn put_value(
    _: Internal,
    State(state): State<NodeState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<StoreWriteResponse>, ApiError> {
    let key = store_key(path)?;
    let version = version_header(&headers)?;
    let expires_at = expires_at_header(&headers)?;
    let content_type = crate::extract::content_type(&headers)?;
    let value = crate::server::read_limited_body(&headers, body, state.settings.max_value_bytes, "the value").await?;
    let record = Record::put(key, version, value, content_type).with_expiry(expires_at);
    let mut answers = state.store.write(vec![record]).await.map_err(|error| write_error(&state, error))?;
    Ok(Json(answers.remove(0)))
}

async fn delete_value(
    _: Internal,
    State(state): State<NodeState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<StoreWriteResponse>, ApiError> {
    let key = store_key(path)?;
    let version = version_header(&headers)?;
    let mut answers =
        state.store.write(vec![Record::delete(key, version)]).await.map_err(|error| write_error(&state, error))?;
    Ok(Json(answers.remove(0)))
}

async fn get_value(
    _: Internal,
    State(state): State<NodeState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let key = store_key(path)?;
    let not_found = |version: u64, tombstone: bool| {
        let mut response = ApiError::not_found("Key not found").into_response();
        response.headers_mut().insert(VERSION_HEADER, HeaderValue::from(version));
        if tombstone {
            response.headers_mut().insert(TOMBSTONE_HEADER, HeaderValue::from_static("true"));
        }
        response
    };
    let replica = state.store.get_replica(&key, crate::hlc::wall_millis());
    let mut response = match replica.lookup {
        Lookup::Found(found) => {
            let content_type = HeaderValue::from_str(&found.content_type)
                .unwrap_or_else(|_| HeaderValue::from_static(DEFAULT_CONTENT_TYPE));
            let mut response = (StatusCode::OK, found.value).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, content_type);
            headers.insert(VERSION_HEADER, HeaderValue::from(found.version));
            if let Some(expires_at) = found.expires_at {
                headers.insert(EXPIRES_AT_HEADER, HeaderValue::from(expires_at));
            }
            response
        }
        Lookup::Tombstone(version) => not_found(version, true),
        Lookup::Expired(version) => not_found(version, false),
        Lookup::Missing => ApiError::not_found("Key not found").into_response(),
    };
    if let Some(pending) = replica.pending {
        response.headers_mut().insert(PENDING_HEADER, HeaderValue::from(pending));
    }
    Ok(response)
}

/// `POST /read`: several keys at once ([`read`] has the bodies). The answer
/// holds one entry per key; past the batch byte limit, keys are left out for
/// the caller to read alone.
async fn read_many(
    _: Internal,
    State(state): State<NodeState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = crate::server::read_limited_body(&headers, body, read::MAX_REQUEST_BYTES, "the read request").await?;
    let keys = read::decode_request(&body).map_err(|error| ApiError::bad_request(error.to_string()))?;
    for (index, key) in keys.iter().enumerate() {
        validate_key(key).map_err(|error| ApiError::bad_request(format!("key {index}: {}", error.message)))?;
    }
    let lookups = state.store.get_many(&keys, crate::hlc::wall_millis(), state.settings.max_batch_bytes());
    Ok(([(header::CONTENT_TYPE, read::READ_CONTENT_TYPE)], read::encode_answer(&lookups)).into_response())
}

/// Query of `GET /feed`.
#[derive(Debug, Deserialize)]
struct FeedQuery {
    /// The position of the last change already read (0: from the start of the feed).
    #[serde(default)]
    after: u64,
    /// Only keys starting with this (storage keys: `<user id>/…`).
    #[serde(default)]
    prefix: String,
    /// Most changes in the answer (1–10,000, default 1,000).
    limit: Option<usize>,
    /// How long to wait for a change when there is none yet, in ms (at most 30,000; default 0).
    #[serde(default)]
    wait_ms: u64,
}

/// Most changes one feed page holds.
const MAX_FEED_LIMIT: usize = 10_000;
/// Longest a feed read waits for a change.
const MAX_FEED_WAIT_MS: u64 = 30_000;

/// `GET /feed`: the node's change feed after a position ([`super::feed`]), for watches.
async fn feed(
    _: Internal,
    State(state): State<NodeState>,
    query: Result<Query<FeedQuery>, QueryRejection>,
) -> Result<Json<crate::proto::NodeFeedPage>, ApiError> {
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(1000);
    if !(1..=MAX_FEED_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit must be 1 to {MAX_FEED_LIMIT}")));
    }
    if query.wait_ms > MAX_FEED_WAIT_MS {
        return Err(ApiError::bad_request(format!("wait_ms must be at most {MAX_FEED_WAIT_MS}")));
    }
    if query.prefix.len() > crate::proto::MAX_STORAGE_KEY_BYTES {
        return Err(ApiError::bad_request("the prefix is longer than any key"));
    }
    let wait = std::time::Duration::from_millis(query.wait_ms);
    let page = state
        .store
        .feed(query.after, &query.prefix, limit, wait)
        .await
        .map_err(|error| ApiError::unavailable(format!("the change feed cannot be read: {error}")))?;
    let entries = page
        .entries
        .into_iter()
        .map(|entry| crate::proto::NodeFeedEntry {
            position: entry.seq,
            key: entry.key,
            version: entry.version,
            kind: entry.kind.as_str().to_string(),
            size: entry.meta.size,
            content_type: entry.meta.content_type,
            expires_at: entry.meta.expires_at,
        })
        .collect();
    Ok(Json(crate::proto::NodeFeedPage { entries, next: page.next, oldest: page.oldest }))
}

/// `POST /paxos`: messages of conditional writes' rounds, one reply each ([`paxos_body`] has
/// the bodies); answered once the acceptors' states are durable (one sync for all).
async fn paxos(
    _: Internal,
    State(state): State<NodeState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limit = state.settings.max_batch_bytes() + paxos_body::MAX_OVERHEAD_BYTES;
    let body = crate::server::read_limited_body(&headers, body, limit, "the Paxos request").await?;
    let requests = paxos_body::decode_requests(&body).map_err(|error| ApiError::bad_request(error.to_string()))?;
    for (index, request) in requests.iter().enumerate() {
        validate_key(&request.key)
            .map_err(|error| ApiError::bad_request(format!("message {index}: {}", error.message)))?;
    }
    let messages = requests.into_iter().map(|request| (request.key, request.message, request.held)).collect();
    let replies = state.store.paxos(messages).await.map_err(|error| write_error(&state, error))?;
    let answer = paxos_body::encode_replies(&replies).map_err(|error| ApiError::internal(error.to_string()))?;
    Ok(([(header::CONTENT_TYPE, paxos_body::PAXOS_CONTENT_TYPE)], answer).into_response())
}

/// Query of `GET /keys`.
#[derive(Debug, Deserialize)]
struct KeysQuery {
    /// Only keys starting with this.
    #[serde(default)]
    prefix: String,
    /// Page size (default 100, at most 1000).
    limit: Option<usize>,
    /// The last key of the previous page.
    cursor: Option<String>,
}

async fn list_keys(
    _: Internal,
    State(state): State<NodeState>,
    query: Result<Query<KeysQuery>, QueryRejection>,
) -> Result<Json<NodeKeyPage>, ApiError> {
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!("limit must be between 1 and {MAX_PAGE}")));
    }
    Ok(Json(state.store.list(&query.prefix, query.cursor.as_deref(), limit, crate::hlc::wall_millis())))
}

async fn apply_batch(
    _: Internal,
    State(state): State<NodeState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<NodeBatchResponse>, ApiError> {
    let max_value = state.settings.max_value_bytes;
    let body = crate::server::read_limited_body(&headers, body, state.settings.max_batch_bytes(), "the batch").await?;
    let records = batch::decode(&body).map_err(|error| ApiError::bad_request(error.to_string()))?;
    for (index, record) in records.iter().enumerate() {
        validate_key(&record.key)
            .map_err(|error| ApiError::bad_request(format!("record {index}: {}", error.message)))?;
        if record.value.len() > max_value {
            return Err(ApiError::too_large(format!(
                "record {index}: the value is {} bytes; the maximum is {max_value} (YDHT_MAX_VALUE_BYTES)",
                record.value.len()
            )));
        }
        if record.content_type.len() > MAX_CONTENT_TYPE_BYTES {
            return Err(ApiError::bad_request(format!("record {index}: the content type is too long")));
        }
    }
    let results = state.store.write(records).await.map_err(|error| write_error(&state, error))?;
    Ok(Json(NodeBatchResponse { results }))
}

fn anti_entropy(state: &NodeState) -> Result<&AntiEntropyHandle, ApiError> {
    state
        .anti_entropy
        .as_ref()
        .ok_or_else(|| ApiError::not_found("anti-entropy is off on this node; start it with --peers / YDHT_NODES"))
}

/// Largest JSON body of `/range` and `/export` requests.
const MAX_REQUEST_JSON_BYTES: usize = 4 << 20;

async fn digest(_: Internal, State(state): State<NodeState>) -> Result<Json<NodeDigest>, ApiError> {
    let handle = anti_entropy(&state)?;
    Ok(Json(NodeDigest {
        node_id: state.settings.node_id.clone(),
        fingerprint: handle.fingerprint.get(),
        buckets: state.store.digest().unwrap_or_default(),
    }))
}

async fn range(
    _: Internal,
    State(state): State<NodeState>,
    ApiJson(mut request): ApiJson<NodeRangeRequest, MAX_REQUEST_JSON_BYTES>,
) -> Result<Json<NodeRangePage>, ApiError> {
    anti_entropy(&state)?;
    if request.limit == 0 || request.limit > PAGE {
        return Err(ApiError::bad_request(format!("limit must be between 1 and {PAGE}")));
    }
    request.buckets.sort_unstable();
    request.buckets.dedup();
    let store = state.store.clone();
    let page =
        tokio::task::spawn_blocking(move || store.range(&request.buckets, request.cursor.as_deref(), request.limit))
            .await
            .map_err(|error| ApiError::unavailable(format!("the range scan failed: {error}")))?;
    Ok(Json(page))
}

async fn scan(
    _: Internal,
    State(state): State<NodeState>,
    ApiJson(request): ApiJson<NodeScanRequest, MAX_REQUEST_JSON_BYTES>,
) -> Result<Json<NodeRangePage>, ApiError> {
    if request.limit == 0 || request.limit > PAGE {
        return Err(ApiError::bad_request(format!("limit must be between 1 and {PAGE}")));
    }
    if request.intervals.len() > MAX_SCAN_INTERVALS {
        return Err(ApiError::bad_request(format!("at most {MAX_SCAN_INTERVALS} intervals per scan")));
    }
    let store = state.store.clone();
    let page =
        tokio::task::spawn_blocking(move || store.scan(&request.intervals, request.cursor.as_deref(), request.limit))
            .await
            .map_err(|error| ApiError::unavailable(format!("the scan failed: {error}")))?;
    Ok(Json(page))
}

/// Most intervals in one `/scan` request.
const MAX_SCAN_INTERVALS: usize = 10_000;

async fn export(
    _: Internal,
    State(state): State<NodeState>,
    ApiJson(request): ApiJson<NodeExportRequest, MAX_REQUEST_JSON_BYTES>,
) -> Result<Response, ApiError> {
    if request.keys.len() > PAGE {
        return Err(ApiError::bad_request(format!("at most {PAGE} keys per export")));
    }
    // Bounded like a /batch body: the records that fit; the caller asks again for the rest.
    let limit = state.settings.max_batch_bytes();
    let mut size = 12;
    let mut records = state.store.export(&request.keys);
    let fitting = records
        .iter()
        .position(|record| {
            size += record.framed_len();
            size > limit
        })
        .map_or(records.len(), |first_over| first_over.max(1));
    records.truncate(fitting);
    let body = batch::encode(&records).map_err(|error| ApiError::unavailable(error.to_string()))?;
    Ok(([(header::CONTENT_TYPE, batch::BATCH_CONTENT_TYPE)], body).into_response())
}

async fn health(State(state): State<NodeState>) -> Json<NodeHealth> {
    Json(NodeHealth {
        status: "healthy".into(),
        node_id: state.settings.node_id.clone(),
        follows_membership: state.settings.follows_membership,
    })
}

async fn metrics(State(state): State<NodeState>, headers: axum::http::HeaderMap) -> Response {
    let snapshot = metrics_snapshot(&state);
    let format = crate::exposition::Format::negotiate(&headers);
    if format == crate::exposition::Format::Json {
        return Json(snapshot).into_response();
    }
    use prometheus_client::registry::Unit;
    let mut exposition = crate::exposition::Exposition::new("node");
    let m = &snapshot;
    exposition.gauge("keys", "Live keys held", m.key_count as f64);
    exposition.gauge("tombstones", "Delete markers held", m.tombstones as f64);
    exposition.gauge_in("wal", "Bytes of WAL segments on disk", Unit::Bytes, m.wal_size as f64);
    exposition.gauge_in("data", "Bytes of the node's data directory", Unit::Bytes, m.data_bytes as f64);
    exposition.gauge_in(
        "disk_total",
        "Size of the file system holding the data",
        Unit::Bytes,
        m.disk_total_bytes as f64,
    );
    exposition.gauge_in(
        "disk_available",
        "Free space on the file system holding the data",
        Unit::Bytes,
        m.disk_available_bytes as f64,
    );
    exposition.counter("wal_syncs", "WAL fsyncs (one per group commit)", m.wal_syncs);
    exposition.counter("wal_records", "Entries appended to the WAL", m.wal_records);
    exposition.counter("snapshots", "Snapshots written (each compacts the WAL)", m.snapshots_written);
    exposition.gauge_in("last_snapshot", "Size of the last snapshot", Unit::Bytes, m.last_snapshot_bytes as f64);
    exposition.counters(
        "writes",
        "Record writes by result (ignored: the node held a newer version)",
        "result",
        [("applied".to_string(), m.writes_applied), ("ignored".to_string(), m.writes_ignored)],
    );
    exposition.counter("expired_swept", "Values the TTL sweeper found expired", m.expired_swept);
    exposition.counter("tombstones_purged", "Delete markers purged after the grace period", m.tombstones_purged);
    exposition.gauge(
        "tombstones_held_back",
        "Delete markers kept past the grace period for a peer that lacks them",
        m.tombstones_held_back as f64,
    );
    exposition.gauge_in("uptime", "Time since the node started", Unit::Seconds, m.uptime_secs as f64);
    exposition.counter("anti_entropy_rounds", "Anti-entropy exchanges with peers", m.anti_entropy_rounds);
    exposition.counter(
        "anti_entropy_keys_repaired",
        "Keys anti-entropy copied in either direction",
        m.anti_entropy_keys_repaired,
    );
    exposition.counter("anti_entropy_errors", "Anti-entropy exchanges that failed", m.anti_entropy_errors);
    if let Some(age) = m.anti_entropy_last_sync_age_secs {
        exposition.gauge_in(
            "anti_entropy_last_sync_age",
            "Time since the last full exchange with every peer",
            Unit::Seconds,
            age as f64,
        );
    }
    exposition.respond(format, || Json(snapshot.clone()).into_response())
}

/// The node's metrics as `GET /metrics` answers them in JSON.
fn metrics_snapshot(state: &NodeState) -> NodeMetrics {
    let store = &state.store;
    let wal = store.wal_stats();
    let counters = store.counters();
    let (key_count, tombstones) = store.counts();
    let (disk_total_bytes, disk_available_bytes) = disk_space(&state.settings.data_dir);
    let anti_entropy = state.anti_entropy.as_ref().map(|handle| handle.stats.snapshot()).unwrap_or_default();
    NodeMetrics {
        node_id: state.settings.node_id.clone(),
        key_count,
        wal_size: wal.wal_bytes(),
        timestamp: crate::hlc::wall_millis() / 1000,
        timestamp_ms: crate::hlc::wall_millis(),
        tombstones,
        data_bytes: store.disk_bytes(),
        disk_total_bytes,
        disk_available_bytes,
        sync_mode: state.settings.sync_mode.as_str().to_string(),
        wal_syncs: wal.syncs(),
        wal_records: wal.records(),
        snapshots_written: wal.snapshots(),
        last_snapshot_bytes: wal.snapshot_bytes(),
        last_snapshot_at: wal.last_snapshot_unix_ms().map(|millis| millis / 1000),
        writes_applied: counters.applied.load(Ordering::Relaxed),
        writes_ignored: counters.ignored.load(Ordering::Relaxed),
        expired_swept: counters.expired.load(Ordering::Relaxed),
        tombstones_purged: counters.purged.load(Ordering::Relaxed),
        tombstones_held_back: counters.held_back.load(Ordering::Relaxed),
        oldest_held_back_tombstone_age_secs: match counters.oldest_held_back.load(Ordering::Relaxed) {
            0 => None,
            deleted_at => Some(crate::hlc::wall_millis().saturating_sub(deleted_at) / 1000),
        },
        uptime_secs: state.settings.started.elapsed().as_secs(),
        anti_entropy_enabled: state.anti_entropy.is_some(),
        anti_entropy_rounds: anti_entropy.rounds,
        anti_entropy_keys_repaired: anti_entropy.keys_repaired,
        anti_entropy_errors: anti_entropy.errors,
        anti_entropy_last_sync_age_secs: anti_entropy.last_full_sync.map(|at| at.elapsed().as_secs()),
    }
}

/// `(total, available)` bytes of the file system holding `path` (zeros if unknown).
#[allow(clippy::useless_conversion, reason = "statvfs field types are u32 on some platforms, u64 on others")]
fn disk_space(path: &std::path::Path) -> (u64, u64) {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return (0, 0) };
        let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: `c_path` is a valid NUL-terminated string and `stats` is written by statvfs before being read.
        if unsafe { libc::statvfs(c_path.as_ptr(), stats.as_mut_ptr()) } == 0 {
            // SAFETY: statvfs returned 0, so it initialised `stats`.
            let stats = unsafe { stats.assume_init() };
            let fragment = u64::from(stats.f_frsize);
            return (u64::from(stats.f_blocks) * fragment, u64::from(stats.f_bavail) * fragment);
        }
    }
    let _ = path;
    (0, 0)
}
