//! `POST /v1/batch`: up to [`MAX_OPS`] single-key operations (`get`, `put`, `delete`) in one
//! request, each answered on its own, in order.
//!
//! A batch is not atomic across keys (as DynamoDB's `BatchWriteItem` is not): each operation
//! succeeds or fails alone, and the request is 200 once it was understood. Operations on one key
//! run one after the other, in the order given; different keys run concurrently, so the writes of
//! a batch reach each node as few `POST /batch` requests (one WAL sync each). `X-Consistency`
//! applies to every operation; a conditional one (`if_match`, `if_none_match`) is linearizable
//! whatever it says, as on a single PUT or DELETE. Rate limiting and usage count each operation.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Map, Value};

use super::conditional::Conditional;
use super::input::{Consistency, parse_ttl, validate_key};
use super::quorum::{Mutation, MutationKind};
use super::state::GatewayState;
use super::tenant::Tenant;
use crate::error::ApiError;
use crate::precondition::{self, Condition};
use crate::proto::Scope;
use crate::proto::{BatchResponse, OpResult};
use crate::wire::read::{Found, Lookup};

/// Most operations one batch may hold.
pub const MAX_OPS: usize = 1000;
/// Largest batch body.
pub const MAX_BODY_BYTES: usize = 4 << 20;
/// Keys whose operations run at once.
const PARALLEL_KEYS: usize = 64;

/// One operation, as understood.
#[derive(Debug, Clone)]
enum Op {
    Get,
    Put { value: Bytes, content_type: String, ttl: Option<Duration>, condition: Option<Condition> },
    Delete { condition: Option<Condition> },
}

impl Op {
    /// The usage operation it counts as.
    fn usage_name(&self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Put { .. } => "put",
            Self::Delete { .. } => "delete",
        }
    }
}

impl OpResult {
    fn failed(key: Option<String>, error: ApiError) -> Self {
        Self { status: error.status.as_u16(), key, error: Some(error.message), ..Self::default() }
    }
}

/// Reads one operation; a malformed one is its own 4xx, and the others still run.
fn parse_op(value: &Value, max_value_bytes: usize) -> Result<(String, Op), (Option<String>, ApiError)> {
    let Some(fields) = value.as_object() else {
        return Err((None, ApiError::bad_request("each op is an object: {\"op\": \"put\", \"key\": …}")));
    };
    let key = match fields.get("key") {
        Some(Value::String(key)) => key.clone(),
        Some(_) => return Err((None, ApiError::bad_request("\"key\" must be a string"))),
        None => return Err((None, ApiError::bad_request("the op names no \"key\""))),
    };
    let fail = |error: ApiError| (Some(key.clone()), error);
    validate_key(&key).map_err(fail)?;
    let op = parse_fields(fields, max_value_bytes).map_err(fail)?;
    Ok((key, op))
}

fn text_field<'a>(fields: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, ApiError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(ApiError::bad_request(format!("\"{name}\" must be a string"))),
    }
}

fn parse_fields(fields: &Map<String, Value>, max_value_bytes: usize) -> Result<Op, ApiError> {
    const KNOWN: [&str; 8] = ["op", "key", "value", "value_base64", "content_type", "ttl", "if_match", "if_none_match"];
    if let Some(unknown) = fields.keys().find(|name| !KNOWN.contains(&name.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown field {unknown:?}; an op has op, key, value or value_base64, content_type, ttl, if_match, \
             if_none_match"
        )));
    }
    let if_match = match fields.get("if_match") {
        // A bare version number is accepted as well as an ETag ("\"5\"") or *.
        Some(Value::Number(number)) => Some(precondition::etag(
            number.as_u64().ok_or_else(|| ApiError::bad_request("\"if_match\" must be a version or an ETag"))?,
        )),
        _ => text_field(fields, "if_match")?.map(str::to_string),
    };
    let if_none_match = text_field(fields, "if_none_match")?;
    let op =
        text_field(fields, "op")?.ok_or_else(|| ApiError::bad_request("the op has no \"op\": get, put or delete"))?;
    let only_put = ["value", "value_base64", "content_type", "ttl"];
    match op {
        "get" | "delete" => {
            if let Some(field) = only_put.iter().find(|field| fields.get(**field).is_some_and(|value| !value.is_null()))
            {
                return Err(ApiError::bad_request(format!("\"{field}\" applies to a put, not a {op}")));
            }
            if op == "get" {
                if if_match.is_some() || if_none_match.is_some() {
                    return Err(ApiError::bad_request("if_match and if_none_match apply to put and delete, not get"));
                }
                return Ok(Op::Get);
            }
            let condition = Condition::of_write(if_match.as_deref(), if_none_match, false)
                .map_err(|error| ApiError::bad_request(error.to_string()))?;
            Ok(Op::Delete { condition })
        }
        "put" => {
            let value = match (text_field(fields, "value")?, text_field(fields, "value_base64")?) {
                (Some(text), None) => Bytes::copy_from_slice(text.as_bytes()),
                (None, Some(encoded)) => Bytes::from(BASE64.decode(encoded).map_err(|error| {
                    ApiError::bad_request(format!("\"value_base64\" is not standard base64: {error}"))
                })?),
                (Some(_), Some(_)) => {
                    return Err(ApiError::bad_request("give value or value_base64, not both"));
                }
                (None, None) => return Err(ApiError::bad_request("a put needs value (text) or value_base64")),
            };
            if value.len() > max_value_bytes {
                return Err(ApiError::too_large(format!(
                    "the value is {} bytes; the maximum is {max_value_bytes} (YDHT_MAX_VALUE_BYTES)",
                    value.len()
                )));
            }
            let content_type =
                crate::extract::content_type_text("\"content_type\"", text_field(fields, "content_type")?)?;
            let ttl = parse_ttl(text_field(fields, "ttl")?)?;
            let condition = Condition::of_write(if_match.as_deref(), if_none_match, true)
                .map_err(|error| ApiError::bad_request(error.to_string()))?;
            Ok(Op::Put { value, content_type, ttl, condition })
        }
        other => Err(ApiError::bad_request(format!("unknown op {other:?}; use get, put or delete"))),
    }
}

/// Splits a batch body into its operations: 400 when it is not `{"ops": [...]}` with 1 to
/// [`MAX_OPS`] entries. The entries themselves are checked one by one ([`parse_op`]).
fn ops_of(body: &[u8]) -> Result<Vec<Value>, ApiError> {
    let body: Value = serde_json::from_slice(body)
        .map_err(|error| ApiError::bad_request(format!("the batch is not JSON: {error}")))?;
    let Some(Value::Array(ops)) = body.as_object().and_then(|fields| fields.get("ops")) else {
        return Err(ApiError::bad_request("the batch is {\"ops\": [...]}: an object with an array of ops"));
    };
    if ops.is_empty() || ops.len() > MAX_OPS {
        return Err(ApiError::bad_request(format!(
            "the batch holds {} ops; send 1 to {MAX_OPS} per request",
            ops.len()
        )));
    }
    if let Some(extra) = body.as_object().and_then(|fields| fields.keys().find(|name| *name != "ops")) {
        return Err(ApiError::bad_request(format!("unknown field {extra:?}; the batch is {{\"ops\": [...]}}")));
    }
    Ok(ops.clone())
}

/// `POST /v1/batch`.
pub async fn batch(
    State(state): State<GatewayState>,
    tenant: Tenant,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let consistency = Consistency::from_headers(&headers)?;
    let body = crate::server::read_limited_body(&headers, body, MAX_BODY_BYTES, "the batch body").await?;
    let ops = ops_of(&body)?;
    // The request took one token at the door; each further op takes one more.
    let remaining = state.limiter.charge(tenant.user_id, ops.len() as u64 - 1);
    let max_value_bytes = state.config.max_value_bytes;
    let mut results: Vec<Option<OpResult>> = vec![None; ops.len()];
    // The parsed ops of each key, in batch order.
    let mut by_key: HashMap<String, Vec<(usize, Op)>> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    for (index, value) in ops.iter().enumerate() {
        match parse_op(value, max_value_bytes) {
            Ok((key, op)) => {
                let needs = if matches!(op, Op::Get) { Scope::Read } else { Scope::Write };
                if !tenant.has_scope(needs) {
                    let error = ApiError::forbidden(format!("this API key lacks the {:?} scope", needs.as_str()));
                    results[index] = Some(OpResult::failed(Some(key), error));
                    continue;
                }
                let ops = by_key.entry(key.clone()).or_default();
                if ops.is_empty() {
                    order.push(key);
                }
                ops.push((index, op));
            }
            Err((key, error)) => results[index] = Some(OpResult::failed(key, error)),
        }
    }
    let (state, tenant) = (&state, &tenant);
    let runs = order.into_iter().map(|key| {
        let ops = by_key.remove(&key).unwrap_or_default();
        async move {
            let mut done = Vec::with_capacity(ops.len());
            for (index, op) in ops {
                let usage = op.usage_name();
                let bytes_in = match &op {
                    Op::Put { value, .. } => value.len() as u64,
                    _ => 0,
                };
                let result = run(state, tenant, &key, op, consistency).await;
                let bytes_out = result.value.as_ref().map_or(0, String::len) as u64
                    + result.value_base64.as_ref().map_or(0, String::len) as u64;
                state.usage.record(tenant.user_id, usage, bytes_in, bytes_out);
                done.push((index, result));
            }
            done
        }
    });
    let mut finished = futures_util::stream::iter(runs).buffer_unordered(PARALLEL_KEYS);
    while let Some(done) = finished.next().await {
        for (index, result) in done {
            results[index] = Some(result);
        }
    }
    let results = results.into_iter().map(|result| result.unwrap_or_default()).collect();
    let mut response = Json(BatchResponse { results }).into_response();
    response.extensions_mut().insert(super::routes::RemainingTokens(remaining));
    Ok(response)
}

/// Runs one operation of `key`.
async fn run(state: &GatewayState, tenant: &Tenant, key: &str, op: Op, consistency: Consistency) -> OpResult {
    let storage_key = tenant.storage_key(key);
    let named = || Some(key.to_string());
    let written = |version: u64| OpResult { status: 200, key: named(), version: Some(version), ..OpResult::default() };
    let outcome: Result<OpResult, ApiError> = async {
        match op {
            Op::Get => Ok(match state.read(&storage_key, consistency).await?.record {
                Lookup::Found(Found { value, content_type, version, expires_at }) => {
                    let (value, value_base64) = match std::str::from_utf8(&value) {
                        Ok(text) => (Some(text.to_string()), None),
                        Err(_) => (None, Some(BASE64.encode(&value))),
                    };
                    OpResult {
                        status: 200,
                        key: named(),
                        version: Some(version),
                        value,
                        value_base64,
                        content_type: Some(content_type.to_string()),
                        expires_at,
                        ..OpResult::default()
                    }
                }
                _ => not_found(key),
            }),
            Op::Put { value, content_type, ttl, condition } => {
                let expires_at = ttl.map(|ttl| crate::hlc::wall_millis() + ttl.as_millis() as u64);
                let kind = MutationKind::Put { value, content_type, expires_at };
                match condition {
                    Some(condition) => conditional(state, &storage_key, key, condition, kind).await,
                    None => {
                        let mutation = Mutation { version: state.hlc.now(), kind };
                        Ok(written(state.write(&storage_key, mutation, consistency).await?.version))
                    }
                }
            }
            Op::Delete { condition: Some(condition) } => {
                conditional(state, &storage_key, key, condition, MutationKind::Delete).await
            }
            Op::Delete { condition: None } => {
                if !matches!(state.read(&storage_key, consistency).await?.record, Lookup::Found(_)) {
                    return Ok(not_found(key));
                }
                let mutation = Mutation { version: state.hlc.now(), kind: MutationKind::Delete };
                Ok(written(state.write(&storage_key, mutation, consistency).await?.version))
            }
        }
    }
    .await;
    outcome.unwrap_or_else(|error| OpResult::failed(named(), error))
}

fn not_found(key: &str) -> OpResult {
    OpResult {
        status: StatusCode::NOT_FOUND.as_u16(),
        key: Some(key.to_string()),
        error: Some("Key not found".into()),
        ..OpResult::default()
    }
}

async fn conditional(
    state: &GatewayState,
    storage_key: &str,
    key: &str,
    condition: Condition,
    kind: MutationKind,
) -> Result<OpResult, ApiError> {
    Ok(match state.write_conditional(storage_key, condition, kind).await? {
        Conditional::Written { version, .. } => {
            OpResult { status: 200, key: Some(key.to_string()), version: Some(version), ..OpResult::default() }
        }
        Conditional::Failed(current) => OpResult {
            status: StatusCode::PRECONDITION_FAILED.as_u16(),
            key: Some(key.to_string()),
            error: Some(super::routes::precondition_message(current)),
            current_version: Some(current.map(precondition::etag)),
            ..OpResult::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<(String, Op), (Option<String>, ApiError)> {
        parse_op(&serde_json::from_str(json).unwrap(), 16)
    }

    #[test]
    fn ops_are_parsed_one_by_one_with_a_clear_error_each() {
        assert!(matches!(parse(r#"{"op":"get","key":"a"}"#), Ok((key, Op::Get)) if key == "a"));
        match parse(r#"{"op":"put","key":"b","value_base64":"AAEC","ttl":"1h","content_type":"x/y"}"#) {
            Ok((_, Op::Put { value, content_type, ttl, condition: None })) => {
                assert_eq!((&value[..], content_type.as_str()), (&[0u8, 1, 2][..], "x/y"));
                assert_eq!(ttl, Some(Duration::from_secs(3600)));
            }
            other => panic!("{other:?}"),
        }
        match parse(r#"{"op":"delete","key":"c","if_match":7}"#) {
            Ok((_, Op::Delete { condition: Some(condition) })) => assert!(condition.holds(Some(7))),
            other => panic!("{other:?}"),
        }
        for (json, status, words) in [
            (r#"{"op":"put","key":"k"}"#, 400, "needs value"),
            (r#"{"op":"put","key":"k","value":"a","value_base64":"YQ=="}"#, 400, "not both"),
            (r#"{"op":"put","key":"k","value_base64":"%%%"}"#, 400, "base64"),
            (r#"{"op":"put","key":"k","value":"seventeen bytes!!"}"#, 413, "17 bytes"),
            (r#"{"op":"put","key":"k","value":"a","ttl":"soon"}"#, 400, "ttl"),
            (r#"{"op":"put","key":"k","value":"a","if_match":"nope"}"#, 400, "If-Match"),
            (r#"{"op":"delete","key":"k","if_none_match":"*"}"#, 400, "If-None-Match"),
            (r#"{"op":"get","key":"k","if_match":"*"}"#, 400, "not get"),
            (r#"{"op":"get","key":"k","value":"a"}"#, 400, "applies to a put"),
            (r#"{"op":"put","key":"k","vaule":"a"}"#, 400, "unknown field \"vaule\""),
            (r#"{"op":"merge","key":"k"}"#, 400, "unknown op"),
            (r#"{"op":"get","key":""}"#, 400, "empty"),
            (r#"{"op":"get","key":".."}"#, 400, "not allowed"),
        ] {
            let (key, error) = parse(json).unwrap_err();
            assert_eq!(error.status.as_u16(), status, "{json}");
            assert!(error.message.contains(words), "{json}: {}", error.message);
            assert!(key.is_some(), "{json}: the result names its key");
        }
        for json in [r#"{"op":"get"}"#, r#"{"op":"get","key":5}"#, r#"[1]"#] {
            let (key, error) = parse(json).unwrap_err();
            assert_eq!((key, error.status.as_u16()), (None, 400), "{json}");
        }
    }

    #[test]
    fn a_batch_body_is_an_object_with_1_to_1000_ops() {
        assert_eq!(ops_of(br#"{"ops":[{"op":"get","key":"a"}]}"#).unwrap().len(), 1);
        let many = format!("{{\"ops\":[{}]}}", vec!["{}"; MAX_OPS + 1].join(","));
        for body in [&b"[]"[..], b"{}", b"{\"ops\":[]}", b"{\"ops\":{}}", b"not json", many.as_bytes()] {
            assert_eq!(ops_of(body).unwrap_err().status, 400, "{}", String::from_utf8_lossy(body));
        }
        assert!(ops_of(br#"{"ops":[{}],"atomic":true}"#).unwrap_err().message.contains("\"atomic\""));
    }
}
