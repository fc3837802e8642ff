//! The gateway's HTTP surface: `/v1/kv…` for tenants (behind the API-key,
//! rate-limit and metrics layer), and `/health`, `/metrics`, `/cluster`.

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::time::Instant;

use super::conditional::Conditional;
use super::coordinator::WriteOutcome;
use super::input::{Consistency, parse_ttl, validate_key};
use super::nodes::DEFAULT_CONTENT_TYPE;
use super::quorum::{Mutation, MutationKind};
use super::ratelimit::Decision;
use super::replication::Handover;
use super::state::GatewayState;
use super::tenant::Tenant;
use crate::auth::cluster::Internal;
use crate::error::ApiError;
use crate::precondition::{self, Condition, PreconditionError};
use crate::proto::{
    ClusterView, EXPIRES_AT_HEADER, KvListEntry, KvListResponse, KvWriteResponse, NODES_HEADER, RebalanceSummary,
    ServiceHealth, VERSION_HEADER, WARNING_HEADER,
};
use crate::wire::read::{Found, Lookup};

/// The OpenAPI 3 document of the public API (`/v1/kv…`, `/health`), served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Default and largest page size of `GET /v1/kv`.
pub const DEFAULT_LIST_LIMIT: usize = 100;
/// Largest page size of `GET /v1/kv`.
pub const MAX_LIST_LIMIT: usize = 1000;

const LIMIT_HEADER: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const REMAINING_HEADER: HeaderName = HeaderName::from_static("x-ratelimit-remaining");

/// The gateway's router.
pub fn app(state: GatewayState) -> Router {
    let v1 = Router::new()
        .route("/v1/kv", get(list_keys))
        .route("/v1/kv/", any(empty_key))
        .route("/v1/kv/{*key}", get(get_key).put(put_key).delete(delete_key))
        .route("/v1/batch", post(super::batch::batch))
        .route("/v1/watch", get(super::watch::watch))
        .route_layer(middleware::from_fn_with_state(state.clone(), guard));
    Router::new()
        .merge(v1)
        .route("/health", get(health))
        .route("/openapi.json", get(|| async { crate::server::openapi_response(OPENAPI) }))
        .route("/metrics", get(metrics))
        .route("/cluster", get(cluster))
        .route("/membership", get(super::membership::get))
        .route("/membership/join", post(super::membership::join))
        .route("/membership/leave", post(super::membership::leave))
        .route("/membership/progress", post(super::membership::progress))
        .route("/internal/tenants/{user_id}/kv", get(internal_list))
        .route("/internal/tenants/{user_id}/kv/{*key}", get(internal_get).delete(internal_delete))
        .fallback(|| async { ApiError::not_found("no such endpoint; the KV API is under /v1/kv/{key}") })
        .layer(middleware::map_response(crate::server::api_security_headers))
        .with_state(state)
}

fn operation_of(method: &Method, path: &str) -> &'static str {
    match *method {
        // A batch counts each of its operations itself.
        Method::POST if path.trim_end_matches('/') == "/v1/batch" => "batch",
        _ if path.trim_end_matches('/') == "/v1/watch" => "watch",
        Method::PUT => "put",
        Method::DELETE => "delete",
        _ if path.trim_end_matches('/') == "/v1/kv" => "list",
        _ => "get",
    }
}

fn set_limit_headers(response: &mut Response, state: &GatewayState, remaining: u64) {
    if state.limiter.enabled() {
        let headers = response.headers_mut();
        headers.insert(LIMIT_HEADER, HeaderValue::from(state.limiter.limit()));
        headers.insert(REMAINING_HEADER, HeaderValue::from(remaining));
    }
}

/// Authenticates (401/403), rate-limits (429) and measures every `/v1` request,
/// and puts the rate-limit headers on every answer.
async fn guard(State(state): State<GatewayState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let operation = operation_of(request.method(), request.uri().path());
    let (mut parts, body) = request.into_parts();
    let tenant = match Tenant::from_request_parts(&mut parts, &state).await {
        Ok(tenant) => tenant,
        Err(error) => {
            let mut response = error.into_response();
            set_limit_headers(&mut response, &state, u64::from(state.limiter.burst()));
            state.metrics.record_request(None, started.elapsed());
            state.metrics.count_answer(operation, response.status().as_u16());
            return response;
        }
    };
    let remaining = match state.limiter.check(tenant.user_id) {
        Decision::Allowed { remaining } => remaining,
        Decision::Limited { retry_after } => {
            state.metrics.rate_limited();
            let seconds = retry_after.as_secs_f64().ceil() as u64;
            let mut response = ApiError::too_many_requests(
                format!(
                    "rate limit exceeded ({} requests per minute, burst {}); retry in {seconds} s",
                    state.limiter.limit(),
                    state.limiter.burst()
                ),
                seconds,
            )
            .into_response();
            set_limit_headers(&mut response, &state, 0);
            state.metrics.record_request(Some(tenant.user_id), started.elapsed());
            state.metrics.count_answer(operation, response.status().as_u16());
            return response;
        }
    };
    let mut response = next.run(Request::from_parts(parts, body)).await;
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        // The rest of the body was never read: the connection cannot carry another request.
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let bytes_out = axum::body::HttpBody::size_hint(response.body()).exact().unwrap_or(0);
    let bytes_in = response.extensions().get::<ValueBytes>().map_or(0, |value| value.0);
    if operation != "batch" {
        state.usage.record(tenant.user_id, operation, bytes_in, bytes_out);
    }
    let remaining = response.extensions().get::<RemainingTokens>().map_or(remaining, |left| left.0);
    set_limit_headers(&mut response, &state, remaining);
    state.metrics.record_request(Some(tenant.user_id), started.elapsed());
    state.metrics.count_answer(operation, response.status().as_u16());
    response
}

/// Query parameters of the single-key endpoints.
#[derive(Debug, Deserialize)]
struct KeyQuery {
    /// Time to live of a PUT (`30s`, `1h30m`).
    ttl: Option<String>,
}

/// Query parameters of the listing.
#[derive(Debug, Deserialize)]
struct ListQuery {
    /// Only keys starting with this.
    #[serde(default)]
    prefix: String,
    /// Page size (1–1000, default 100).
    limit: Option<String>,
    /// The last key of the previous page.
    cursor: Option<String>,
}

fn with_nodes(mut response: Response, nodes: &[String]) -> Response {
    if let Ok(value) = HeaderValue::from_str(&nodes.join(",")) {
        response.headers_mut().insert(NODES_HEADER, value);
    }
    response
}

fn not_found() -> ApiError {
    ApiError::not_found("Key not found")
}

/// The tokens left after a handler took more than the request's one (a batch's further operations).
#[derive(Debug, Clone, Copy)]
pub(super) struct RemainingTokens(pub u64);

/// The stored value's size, attached to a PUT's response for usage accounting.
#[derive(Debug, Clone, Copy)]
struct ValueBytes(u64);

/// Writes `mutation` of the storage key `key` and reports what became of its copies.
async fn write_tracked(
    state: &GatewayState,
    key: &str,
    mutation: Mutation,
    consistency: Consistency,
) -> Result<(WriteOutcome, Handover), ApiError> {
    let (outcome, handover) = super::replication::track(state.write(key, mutation, consistency)).await;
    Ok((outcome?, handover))
}

/// The answer to a PUT or DELETE. `replicas` counts only the further copies that are durable
/// (acknowledged) or durably queued at the replicator; when copies could not be handed over,
/// `warning` (and the `x-ydht-warning` header) says how many and why.
fn write_response(state: &GatewayState, key: String, outcome: WriteOutcome, handover: Handover) -> Response {
    let wanted = state.placement().replicas().saturating_sub(1);
    let mut holders: Vec<&str> = outcome.participants.iter().map(String::as_str).collect();
    for url in &handover.queued {
        if !holders.contains(&url.as_str()) {
            holders.push(url);
        }
    }
    let replicas = holders.len().saturating_sub(1).min(wanted);
    let warning = handover
        .failure
        .filter(|_| replicas < wanted)
        .map(|reason| format!("{replicas} of {wanted} replica copies queued: {reason}"));
    let primary_node_id =
        state.placement().all().into_iter().find(|node| node.url == outcome.primary).map(|node| node.id);
    let body = KvWriteResponse {
        success: true,
        key,
        primary_node_id,
        primary_node: outcome.primary,
        replicas,
        version: outcome.version,
        warning,
    };
    let header = body.warning.as_deref().and_then(|warning| HeaderValue::from_str(warning).ok());
    let mut response = with_nodes(with_etag(Json(body).into_response(), outcome.version), &outcome.participants);
    if let Some(header) = header {
        response.headers_mut().insert(WARNING_HEADER, header);
    }
    response
}

fn with_etag(mut response: Response, version: u64) -> Response {
    if let Ok(value) = HeaderValue::from_str(&precondition::etag(version)) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// A header's value as text; a value that is not visible ASCII is a 400 naming the header.
fn header_text<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|value| value.to_str().map_err(|_| ApiError::bad_request(format!("{name} is not visible ASCII text"))))
        .transpose()
}

fn precondition_error(error: PreconditionError) -> ApiError {
    ApiError::bad_request(error.to_string())
}

/// The precondition of a PUT (`allow_absent`) or DELETE, if it has one (400 when malformed).
fn write_condition(headers: &HeaderMap, allow_absent: bool) -> Result<Option<Condition>, ApiError> {
    let if_match = header_text(headers, "if-match")?;
    let if_none_match = header_text(headers, "if-none-match")?;
    Condition::of_write(if_match, if_none_match, allow_absent).map_err(precondition_error)
}

/// Writes `kind` to `key` only if `condition` holds: 200 with the new version, or
/// 412 naming the current one (`null` when the key does not exist).
async fn write_conditional(
    state: &GatewayState,
    tenant: &Tenant,
    key: String,
    condition: Condition,
    kind: MutationKind,
) -> Result<Response, ApiError> {
    let storage_key = tenant.storage_key(&key);
    let (outcome, handover) = super::replication::track(state.write_conditional(&storage_key, condition, kind)).await;
    match outcome? {
        Conditional::Written { version, committed } => {
            let primary = committed.first().cloned().unwrap_or_default();
            let outcome = WriteOutcome { primary, participants: committed, version };
            Ok(write_response(state, key, outcome, handover))
        }
        Conditional::Failed(current) => Ok(precondition_failed(current)),
    }
}

/// Why a precondition failed, given the key's live version.
pub(super) fn precondition_message(current: Option<u64>) -> String {
    match current {
        Some(version) => {
            format!("precondition failed: the key is at version {version} (ETag {})", precondition::etag(version))
        }
        None => "precondition failed: the key does not exist (absent, deleted or expired)".to_string(),
    }
}

/// 412 with the key's current ETag, exactly as a GET would send it (`null`: it does not exist).
fn precondition_failed(current: Option<u64>) -> Response {
    let error = precondition_message(current);
    let body = serde_json::json!({ "error": error, "current_version": current.map(precondition::etag) });
    let response = (StatusCode::PRECONDITION_FAILED, Json(body)).into_response();
    match current {
        Some(version) => with_etag(response, version),
        None => response,
    }
}

async fn empty_key() -> ApiError {
    ApiError::bad_request("key is empty; name it in the path: /v1/kv/{key}")
}

async fn put_key(
    State(state): State<GatewayState>,
    tenant: Tenant,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<KeyQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Path(key) = path?;
    let Query(query) = query?;
    validate_key(&key)?;
    let consistency = Consistency::from_headers(&headers)?;
    let condition = write_condition(&headers, true)?;
    let ttl = parse_ttl(query.ttl.as_deref())?;
    let content_type = super::input::content_type(&headers)?;
    let value = crate::server::read_limited_body(&headers, body, state.config.max_value_bytes, "the value").await?;
    let size = value.len() as u64;
    let expires_at = ttl.map(|ttl| crate::hlc::wall_millis() + ttl.as_millis() as u64);
    let kind = MutationKind::Put { value, content_type, expires_at };
    let mut response = match condition {
        // Conditional writes are linearizable whatever X-Consistency says.
        Some(condition) => write_conditional(&state, &tenant, key, condition, kind).await?,
        None => {
            let mutation = Mutation { version: state.hlc.now(), kind };
            let (outcome, handover) = write_tracked(&state, &tenant.storage_key(&key), mutation, consistency).await?;
            write_response(&state, key, outcome, handover)
        }
    };
    response.extensions_mut().insert(ValueBytes(size));
    Ok(response)
}

async fn get_key(
    State(state): State<GatewayState>,
    tenant: Tenant,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(key) = path?;
    read_key(&state, &tenant, key, &headers).await
}

async fn read_key(
    state: &GatewayState,
    tenant: &Tenant,
    key: String,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    validate_key(&key)?;
    let consistency = Consistency::from_headers(headers)?;
    let if_match = header_text(headers, "if-match")?.map(|value| precondition::Tags::parse("If-Match", value));
    let if_match = if_match.transpose().map_err(precondition_error)?;
    let if_none_match = header_text(headers, "if-none-match")?;
    if let Some(value) = if_none_match {
        precondition::not_modified(value, None).map_err(precondition_error)?;
    }
    if if_match.is_some() && if_none_match.is_some() {
        return Err(precondition_error(PreconditionError::Both));
    }
    let outcome = state.read(&tenant.storage_key(&key), consistency).await?;
    let live = match &outcome.record {
        Lookup::Found(found) => Some(found.version),
        _ => None,
    };
    if let Some(tags) = if_match {
        if !Condition::IfMatch(tags).holds(live) {
            return Ok(with_nodes(precondition_failed(live), &outcome.participants));
        }
    }
    if let (Some(value), Some(version)) = (if_none_match, live) {
        if precondition::not_modified(value, live).map_err(precondition_error)? {
            let response = with_etag(StatusCode::NOT_MODIFIED.into_response(), version);
            return Ok(with_nodes(response, &outcome.participants));
        }
    }
    let Lookup::Found(Found { value, content_type, version, expires_at }) = outcome.record else {
        return Ok(with_nodes(not_found().into_response(), &outcome.participants));
    };
    let mut response = with_etag(value.into_response(), version);
    let response_headers = response.headers_mut();
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&content_type).unwrap_or(HeaderValue::from_static(DEFAULT_CONTENT_TYPE)),
    );
    response_headers.insert(VERSION_HEADER, HeaderValue::from(version));
    if let Some(expires_at) = expires_at {
        response_headers.insert(EXPIRES_AT_HEADER, HeaderValue::from(expires_at));
    }
    Ok(with_nodes(response, &outcome.participants))
}

async fn delete_key(
    State(state): State<GatewayState>,
    tenant: Tenant,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(key) = path?;
    remove_key(&state, &tenant, key, &headers).await
}

async fn remove_key(
    state: &GatewayState,
    tenant: &Tenant,
    key: String,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    validate_key(&key)?;
    let consistency = Consistency::from_headers(headers)?;
    if let Some(condition) = write_condition(headers, false)? {
        return write_conditional(state, tenant, key, condition, MutationKind::Delete).await;
    }
    let storage_key = tenant.storage_key(&key);
    let existing = state.read(&storage_key, consistency).await?;
    if !matches!(existing.record, Lookup::Found(Found { .. })) {
        return Ok(with_nodes(not_found().into_response(), &existing.participants));
    }
    let mutation = Mutation { version: state.hlc.now(), kind: MutationKind::Delete };
    let (outcome, handover) = write_tracked(state, &storage_key, mutation, consistency).await?;
    Ok(write_response(state, key, outcome, handover))
}

fn check_list_text(name: &str, text: &str) -> Result<(), ApiError> {
    // A prefix or cursor follows the key rule, except that it may be empty.
    if !text.is_empty() && crate::proto::check_key(text, super::input::MAX_KEY_BYTES).is_err() {
        return Err(ApiError::bad_request(format!(
            "invalid {name}: at most 1024 bytes of UTF-8 without control characters"
        )));
    }
    Ok(())
}

async fn list_keys(
    State(state): State<GatewayState>,
    tenant: Tenant,
    query: Result<Query<ListQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    for (name, header) in [("if-match", "If-Match"), ("if-none-match", "If-None-Match")] {
        if headers.contains_key(name) {
            return Err(precondition_error(PreconditionError::NotApplicable { header }));
        }
    }
    let Query(query) = query?;
    list_tenant_keys(&state, &tenant, query).await
}

async fn list_tenant_keys(state: &GatewayState, tenant: &Tenant, query: ListQuery) -> Result<Response, ApiError> {
    let limit = match query.limit.as_deref() {
        None => DEFAULT_LIST_LIMIT,
        Some(text) => match text.trim().parse::<usize>() {
            Ok(limit) if (1..=MAX_LIST_LIMIT).contains(&limit) => limit,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "invalid limit {text:?}; use a number from 1 to {MAX_LIST_LIMIT}"
                )));
            }
        },
    };
    check_list_text("prefix", &query.prefix)?;
    if let Some(cursor) = &query.cursor {
        check_list_text("cursor", cursor)?;
    }
    let tenant_prefix = tenant.prefix();
    let cursor = query.cursor.as_deref().filter(|cursor| !cursor.is_empty()).map(|cursor| tenant.storage_key(cursor));
    let outcome = state.list(&tenant.storage_key(&query.prefix), cursor.as_deref(), limit).await?;
    let strip = |key: &str| key.strip_prefix(&tenant_prefix).map(str::to_string);
    let keys = outcome
        .entries
        .iter()
        .filter_map(|entry| {
            Some(KvListEntry {
                key: strip(&entry.key)?,
                size: entry.size,
                version: entry.version,
                expires_at: entry
                    .expires_at
                    .and_then(|millis| chrono::DateTime::from_timestamp_millis(i64::try_from(millis).ok()?)),
            })
        })
        .collect();
    let body = KvListResponse { keys, next_cursor: outcome.next_cursor.as_deref().and_then(strip) };
    Ok(with_nodes(Json(body).into_response(), &outcome.participants))
}

/// The tenant an internal (cluster-secret) request acts for, e.g. the users service's key browser.
fn internal_tenant(user_id: i64) -> Tenant {
    Tenant { user_id, scopes: vec![crate::proto::Scope::Admin].into() }
}

async fn internal_list(
    State(state): State<GatewayState>,
    _: Internal,
    path: Result<Path<i64>, PathRejection>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(user_id) = path?;
    let Query(query) = query?;
    list_tenant_keys(&state, &internal_tenant(user_id), query).await
}

async fn internal_get(
    State(state): State<GatewayState>,
    _: Internal,
    path: Result<Path<(i64, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path((user_id, key)) = path?;
    read_key(&state, &internal_tenant(user_id), key, &headers).await
}

async fn internal_delete(
    State(state): State<GatewayState>,
    _: Internal,
    path: Result<Path<(i64, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path((user_id, key)) = path?;
    remove_key(&state, &internal_tenant(user_id), key, &headers).await
}

async fn health() -> Json<ServiceHealth> {
    Json(ServiceHealth { status: "healthy".to_string(), service: "gateway".to_string() })
}

/// Public figures for anyone; the per-tenant section (user ids and their traffic) only with the
/// cluster secret (`ydht top` sends it).
async fn metrics(State(state): State<GatewayState>, internal: Option<Internal>, headers: HeaderMap) -> Response {
    let placement = state.placement();
    let mut snapshot = state.metrics.snapshot(placement.errors());
    snapshot.clock_offset_ms = placement.clock_offset_ms();
    snapshot.watches_open = state.watches.open() as u64;
    if internal.is_none() {
        snapshot.users = None;
    }
    let format = crate::exposition::Format::negotiate(&headers);
    if format == crate::exposition::Format::Json {
        return Json(snapshot).into_response();
    }
    let mut exposition = crate::exposition::Exposition::new("gateway");
    let (sum, count, buckets) = state.metrics.latency_buckets();
    exposition.histogram_seconds(
        "request_duration",
        "Latency of /v1 requests, from arrival to answer",
        sum,
        count,
        buckets,
    );
    exposition.counter("requests", "/v1 requests answered", snapshot.requests_total);
    let answers = state.metrics.answers().into_iter().map(|(operation, class, count)| {
        (vec![("operation".to_string(), operation.to_string()), ("status".to_string(), class)], count)
    });
    exposition.labeled_counters("answers", "/v1 answers by operation and status class", answers);
    exposition.gauge(
        "requests_per_second",
        "/v1 requests per second over the last minute",
        snapshot.requests_per_second,
    );
    exposition.counter(
        "rate_limited",
        "Requests refused with 429 by the per-user rate limit",
        snapshot.rate_limit_hits,
    );
    exposition.counters("node_errors", "Failed requests to each storage node", "node", snapshot.node_errors.clone());
    exposition.counter(
        "replicator_failures",
        "Copies the replicator did not take (the gateway copied them itself)",
        snapshot.replicator_failures,
    );
    exposition.counter("read_repairs", "Stale owners repaired by strong reads", snapshot.read_repairs);
    exposition.counter(
        "writes_overtaken",
        "Writes rewritten because a node held a newer version",
        snapshot.writes_overtaken,
    );
    exposition.counters(
        "conditional_writes",
        "Conditional writes by result",
        "result",
        [("written".to_string(), snapshot.conditional_written), ("failed".to_string(), snapshot.conditional_failed)],
    );
    exposition.counter(
        "conditional_fast",
        "Conditional writes chosen by a one-round-trip fast round",
        snapshot.conditional_fast,
    );
    exposition.counter(
        "reads_settled",
        "Strong reads that settled a pending conditional write first",
        snapshot.reads_settled,
    );
    exposition.gauge("watches_open", "Change streams (GET /v1/watch) open", snapshot.watches_open as f64);
    exposition.counter("watch_events", "Change-stream events sent", snapshot.watch_events);
    exposition.counter("watches_dropped", "Change streams dropped for a slow client", snapshot.watches_dropped);
    exposition.gauge(
        "nodes_up",
        "Storage nodes the gateway considers up",
        placement.all().iter().filter(|node| placement.is_healthy(&node.id)).count() as f64,
    );
    exposition.gauge(
        "membership_version",
        "The cluster membership version the gateway follows",
        placement.layout().version as f64,
    );
    let rebalance = if placement.in_transition() {
        state.fresh_membership().await.ok().map(|membership| membership.summary())
    } else {
        None
    };
    exposition.gauge(
        "rebalancing",
        "1 while keys move after a membership change",
        f64::from(u8::from(rebalance.is_some())),
    );
    if let Some(rebalance) = rebalance {
        exposition.gauge(
            "rebalance_arcs_done",
            "Ring arcs the nodes have moved in the current change",
            rebalance.arcs_done as f64,
        );
        exposition.gauge(
            "rebalance_arcs_total",
            "Ring arcs to move in the current change",
            rebalance.arcs_total as f64,
        );
    }
    if let Some(offset) = snapshot.clock_offset_ms {
        exposition.gauge_in(
            "clock_offset",
            "The storage nodes' clocks minus this gateway's (median)",
            prometheus_client::registry::Unit::Seconds,
            offset as f64 / 1000.0,
        );
    }
    exposition.respond(format, || Json(snapshot).into_response())
}

async fn cluster(State(state): State<GatewayState>, _: Internal) -> Json<ClusterView> {
    let placement = state.placement();
    let version = placement.layout().version;
    let rebalance = if version == 0 {
        None
    } else if placement.in_transition() {
        // Progress reports do not bump the version: read them fresh while data moves.
        state.fresh_membership().await.ok().map(|membership| membership.summary())
    } else {
        Some(RebalanceSummary { version, settled: true, ..RebalanceSummary::default() })
    };
    Json(ClusterView {
        nodes: placement.members(),
        replicas: placement.replicas(),
        vnodes: placement.ring().vnodes(),
        replicator_url: state.config.replicator_url.clone(),
        users_url: state.config.users_url.clone(),
        membership_version: version,
        rebalance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::daemon::gateway::GatewayConfig;
    use crate::ring::NodeInfo;
    use axum::http::Request;
    use tower::ServiceExt;

    fn state() -> GatewayState {
        GatewayState::new(GatewayConfig {
            nodes: vec![NodeInfo { id: "node-1".into(), url: "http://127.0.0.1:9".into() }],
            replicator_url: "http://127.0.0.1:9".into(),
            users_url: "http://127.0.0.1:9".into(),
            replicas: 3,
            vnodes: 150,
            rate_limit_per_minute: 100,
            rate_limit_burst: 10,
            max_value_bytes: 1024,
            auth_failures_per_minute: 30,
            max_clock_offset: std::time::Duration::from_millis(500),
            max_watches_per_tenant: super::super::watch::DEFAULT_MAX_WATCHES_PER_TENANT,
            cluster_secret: Secret::new("s3cret"),
            tls: None,
        })
    }

    async fn call(request: Request<Body>) -> (StatusCode, HeaderMap, String) {
        let response = app(state()).oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (parts.status, parts.headers, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn v1_needs_an_api_key_and_answers_with_rate_limit_headers() {
        for (method, uri) in [("GET", "/v1/kv/a"), ("PUT", "/v1/kv/a/b"), ("DELETE", "/v1/kv/"), ("GET", "/v1/kv")] {
            let request = Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
            let (status, headers, body) = call(request).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
            assert!(body.contains("X-API-Key"), "{body}");
            assert_eq!(headers[LIMIT_HEADER], "100");
            assert_eq!(headers[REMAINING_HEADER], "10");
        }
    }

    #[tokio::test]
    async fn an_unreachable_users_service_is_a_503_not_a_401() {
        let request =
            Request::builder().uri("/v1/kv/a").header("x-api-key", "ydht_whatever").body(Body::empty()).unwrap();
        let (status, _, body) = call(request).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("users service"), "{body}");
    }

    #[tokio::test]
    async fn health_cluster_and_unknown_paths() {
        let (status, _, body) = call(Request::builder().uri("/health").body(Body::empty()).unwrap()).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, r#"{"status":"healthy","service":"gateway"}"#));
        let (status, _, _) = call(Request::builder().uri("/cluster").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let request =
            Request::builder().uri("/cluster").header("x-cluster-secret", "s3cret").body(Body::empty()).unwrap();
        let (status, _, body) = call(request).await;
        assert_eq!(status, StatusCode::OK);
        let view: ClusterView = serde_json::from_str(&body).unwrap();
        assert_eq!((view.replicas, view.vnodes, view.nodes.len()), (1, 150, 1));
        assert!((view.nodes[0].share - 1.0).abs() < 1e-9);
        for uri in ["/internal/tenants/1/kv", "/internal/tenants/1/kv/a"] {
            let (status, _, _) = call(Request::builder().uri(uri).body(Body::empty()).unwrap()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
        }
        let request = Request::builder()
            .uri("/internal/tenants/not-a-number/kv")
            .header("x-cluster-secret", "s3cret")
            .body(Body::empty())
            .unwrap();
        assert_eq!(call(request).await.0, StatusCode::BAD_REQUEST);
        let (status, _, body) = call(Request::builder().uri("/nope").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("error"));
        let (status, _, body) = call(Request::builder().uri("/metrics").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("\"rate_limit_hits\":0"), "{body}");
        assert!(!body.contains("\"users\""), "tenants are listed without the cluster secret: {body}");
        let insider = Request::builder().uri("/metrics").header("x-cluster-secret", "s3cret").body(Body::empty());
        let (status, _, body) = call(insider.unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("\"users\":["), "{body}");
        let wrong = Request::builder().uri("/metrics").header("x-cluster-secret", "wrong").body(Body::empty());
        assert_eq!(call(wrong.unwrap()).await.0, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn operations_are_named_for_usage() {
        assert_eq!(operation_of(&Method::GET, "/v1/kv"), "list");
        assert_eq!(operation_of(&Method::GET, "/v1/kv/x"), "get");
        assert_eq!(operation_of(&Method::PUT, "/v1/kv/x"), "put");
        assert_eq!(operation_of(&Method::DELETE, "/v1/kv/x"), "delete");
    }
}
