//! What the JSON API and the web pages both do: sign up, check credentials
//! (with throttling), open sessions, create keys, summarise usage.

use std::sync::atomic::Ordering;

use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, Utc};
use serde::Serialize;

use super::db::{ApiKeyRow, DbError, SessionKind, UserRow};
use super::extract::{internal, storage};
use super::state::{Counters, UsersState, new_api_key, new_family, new_session_token, now, token_hash};
use super::validate;
use crate::auth::password;
use crate::error::ApiError;
use crate::proto::Scope;

/// An error tied to one input field (for showing it next to the field).
#[derive(Debug)]
pub struct FieldError {
    /// The form / JSON field at fault, or `""` for the whole request.
    pub field: &'static str,
    /// The status and message.
    pub error: ApiError,
}

impl FieldError {
    fn bad(field: &'static str, invalid: validate::Invalid) -> Self {
        Self { field, error: ApiError::bad_request(invalid.to_string()) }
    }

    fn general(error: ApiError) -> Self {
        Self { field: "", error }
    }
}

impl From<FieldError> for ApiError {
    fn from(error: FieldError) -> Self {
        error.error
    }
}

/// Message of every failed login, whether the email or the password was wrong.
pub const BAD_CREDENTIALS: &str = "invalid email or password";

/// Validates and creates an account: 429 once `address` used up its sign-ups
/// for the hour (counted after validation, before the password is hashed);
/// 503 when no hashing slot frees up in time.
pub async fn sign_up(
    state: &UsersState,
    email: &str,
    username: &str,
    pass: &str,
    address: &str,
) -> Result<UserRow, FieldError> {
    let email = validate::email(email).map_err(|invalid| FieldError::bad("email", invalid))?;
    let username = validate::username(username).map_err(|invalid| FieldError::bad("username", invalid))?;
    validate::password(pass).map_err(|invalid| FieldError::bad("password", invalid))?;
    if let Err(wait) = state.signups.take(address) {
        Counters::bump(&state.counters.signups_throttled);
        return Err(FieldError::general(ApiError::too_many_requests(
            "too many sign-ups from your address; wait before trying again",
            wait.as_secs_f64().ceil() as u64,
        )));
    }
    let hash = state.hasher.hash(pass).await.map_err(|error| FieldError::general(hashing_failed(state, error)))?;
    match state.db.insert_user(&email, &username, &hash, now()).await {
        Ok(user) => {
            Counters::bump(&state.counters.signups);
            tracing::info!(user_id = user.id, "account created");
            Ok(user)
        }
        Err(DbError::Conflict(message)) => {
            let field = if message.contains("email") { "email" } else { "username" };
            Err(FieldError { field, error: ApiError::conflict(message) })
        }
        Err(error) => Err(FieldError::general(storage(error))),
    }
}

/// Counts a hashing refusal for lack of a slot.
fn hashing_failed(state: &UsersState, error: ApiError) -> ApiError {
    if error.status == axum::http::StatusCode::SERVICE_UNAVAILABLE {
        Counters::bump(&state.counters.hashing_busy);
    }
    error
}

/// Checks credentials: 429 when throttled, the same 401 for an unknown email
/// and a wrong password (the password is verified against a decoy hash when
/// the email is unknown, so both take as long).
pub async fn authenticate(state: &UsersState, email: &str, pass: &str, address: &str) -> Result<UserRow, ApiError> {
    // Longer than any stored email can be: cut, so the throttle's keys stay small.
    let email: String = email.trim().to_lowercase().chars().take(validate::MAX_EMAIL_LEN + 1).collect();
    // The attempt counts as a failure from here on (atomically with the check),
    // so parallel guesses cannot all pass the check before one is recorded.
    let attempt = match state.throttle.begin(&email, address) {
        Ok(attempt) => attempt,
        Err(wait) => {
            Counters::bump(&state.counters.logins_throttled);
            return Err(ApiError::too_many_requests(
                "too many failed logins; wait before trying again",
                wait.as_secs_f64().ceil() as u64,
            ));
        }
    };
    let user = match state.db.user_by_email(&email).await {
        Ok(user) => user,
        Err(error) => {
            attempt.not_judged();
            return Err(storage(error));
        }
    };
    let stored = user.as_ref().map_or_else(|| password::decoy_hash().to_string(), |user| user.password_hash.clone());
    // No stored password is longer than the sign-up limit, so a longer one is
    // refused without spending hashing work on it.
    let matches = if pass.len() <= validate::MAX_PASSWORD_BYTES {
        match state.hasher.verify(pass, stored).await {
            Ok(matches) => matches,
            Err(error) => {
                attempt.not_judged();
                return Err(hashing_failed(state, error));
            }
        }
    } else {
        false
    };
    match user {
        Some(user) if matches && user.is_active => {
            attempt.succeeded();
            Counters::bump(&state.counters.logins);
            Ok(user)
        }
        _ => {
            attempt.failed();
            Counters::bump(&state.counters.login_failures);
            Err(ApiError::unauthorized(BAD_CREDENTIALS))
        }
    }
}

/// Opens a session of `kind` for `user` in `family` (a new one when `None`);
/// returns the family and the secret token (refresh token or cookie value).
pub async fn open_session(
    state: &UsersState,
    user_id: i64,
    kind: SessionKind,
    family: Option<String>,
) -> Result<(String, String), ApiError> {
    let lifetime = match kind {
        SessionKind::Api => super::state::REFRESH_LIFETIME,
        SessionKind::Web => super::state::WEB_SESSION_LIFETIME,
    };
    let family = family.unwrap_or_else(new_family);
    let token = new_session_token();
    let created = now();
    let expires = created + ChronoDuration::seconds(lifetime.as_secs() as i64);
    state.db.insert_session(user_id, &family, kind, &token_hash(&token), expires, created).await.map_err(storage)?;
    Ok((family, token))
}

/// Exchanges a refresh token for a new one in the same session. A token that
/// was already exchanged revokes the whole session (it was stolen or replayed).
pub async fn rotate_refresh(state: &UsersState, token: &str) -> Result<(UserRow, String, String), ApiError> {
    let refused = || ApiError::unauthorized("invalid or expired refresh token; log in again");
    let row = state.db.session_by_hash(&token_hash(token)).await.map_err(internal)?.ok_or_else(refused)?;
    if !row.is_kind(SessionKind::Api) || row.revoked_at.is_some() || row.expires_at <= now() {
        return Err(refused());
    }
    if row.rotated_at.is_some() || !state.db.mark_rotated(row.id, now()).await.map_err(internal)? {
        state.db.revoke_session(&row.family, now()).await.map_err(internal)?;
        Counters::bump(&state.counters.refresh_reuse_detected);
        tracing::warn!(user_id = row.user_id, "refresh token reused; session revoked");
        return Err(ApiError::unauthorized("refresh token was already used; the session is revoked, log in again"));
    }
    let user = state.db.user_by_id(row.user_id).await.map_err(|_| refused())?;
    if !user.is_active {
        return Err(refused());
    }
    let (family, token) = open_session(state, user.id, SessionKind::Api, Some(row.family)).await?;
    Ok((user, family, token))
}

/// A created key with its secret, which is never stored.
pub struct CreatedKey {
    /// The stored row.
    pub row: ApiKeyRow,
    /// The full key, shown once.
    pub key: String,
}

/// Validates and creates an API key for `user_id`.
pub async fn create_key(
    state: &UsersState,
    user_id: i64,
    name: &str,
    scopes: &[String],
    expires_in_days: Option<i64>,
) -> Result<CreatedKey, FieldError> {
    let name = validate::key_name(name).map_err(|invalid| FieldError::bad("name", invalid))?;
    let scopes = validate::scopes(scopes).map_err(|invalid| FieldError::bad("scopes", invalid))?;
    let days =
        validate::expires_in_days(expires_in_days).map_err(|invalid| FieldError::bad("expires_in_days", invalid))?;
    let created = now();
    let expires_at = days.map(|days| created + ChronoDuration::days(days));
    let key = new_api_key();
    let row = state
        .db
        .insert_api_key(user_id, &name, &token_hash(&key), &key[..8], &Scope::join(&scopes, ","), expires_at, created)
        .await
        .map_err(|error| FieldError::general(internal(error)))?;
    tracing::info!(user_id, key_id = row.id, "API key created");
    Ok(CreatedKey { row, key })
}

/// A key as listed: never the secret; `last_used_at` includes unflushed uses.
#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyView {
    /// Key id.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// First 8 characters of the key.
    pub key_prefix: String,
    /// Scopes.
    pub scopes: Vec<Scope>,
    /// Not revoked and not expired.
    pub is_active: bool,
    /// Last validation by the gateway.
    pub last_used_at: Option<DateTime<Utc>>,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The keys of `user_id` as listed to their owner.
pub async fn list_keys(state: &UsersState, user_id: i64) -> Result<Vec<ApiKeyView>, ApiError> {
    // The buffer is read before the database: a flush removes an entry only
    // after its commit, so a time is then in one or the other (read the other
    // way round, a flush finishing between the two reads hid it).
    let buffered = state.last_used.snapshot();
    let rows = state.db.api_keys_of(user_id).await.map_err(internal)?;
    let at = now();
    Ok(rows
        .into_iter()
        .map(|row| ApiKeyView {
            is_active: row.is_active_at(at),
            scopes: row.scope_list(),
            last_used_at: row.last_used_at.max(buffered.get(&row.id).copied()),
            id: row.id,
            name: row.name,
            key_prefix: row.key_prefix,
            expires_at: row.expires_at,
            created_at: row.created_at,
            revoked_at: row.revoked_at,
        })
        .collect())
}

/// Totals of one operation on one day.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OperationUsage {
    /// `put`, `get`, `delete`, `list`, …
    pub operation: String,
    /// Requests.
    pub requests: i64,
    /// Request body bytes.
    pub bytes_in: i64,
    /// Response body bytes.
    pub bytes_out: i64,
}

/// One day of usage.
#[derive(Debug, Clone, Serialize)]
pub struct DayUsage {
    /// The UTC day, `YYYY-MM-DD`.
    pub day: NaiveDate,
    /// Requests that day.
    pub requests: i64,
    /// Request body bytes that day.
    pub bytes_in: i64,
    /// Response body bytes that day.
    pub bytes_out: i64,
    /// The same split by operation.
    pub operations: Vec<OperationUsage>,
}

/// `GET /usage` answer.
#[derive(Debug, Clone, Serialize)]
pub struct UsageSummary {
    /// First day covered (inclusive).
    pub from: NaiveDate,
    /// Last day covered (today, UTC).
    pub to: NaiveDate,
    /// Days with any usage, newest first.
    pub days: Vec<DayUsage>,
    /// Totals over the period.
    pub total: OperationUsage,
}

/// Usage of `user_id` over the last `days` days (today included).
pub async fn usage(state: &UsersState, user_id: i64, days: u32) -> Result<UsageSummary, ApiError> {
    let to = Utc::now().date_naive();
    let from = to - ChronoDuration::days(i64::from(days.max(1)) - 1);
    let rows = state.db.usage_since(user_id, from).await.map_err(internal)?;
    let mut summary = UsageSummary {
        from,
        to,
        days: Vec::new(),
        total: OperationUsage { operation: "all".into(), ..Default::default() },
    };
    for row in rows {
        if summary.days.last().is_none_or(|last| last.day != row.day) {
            summary.days.push(DayUsage {
                day: row.day,
                requests: 0,
                bytes_in: 0,
                bytes_out: 0,
                operations: Vec::new(),
            });
        }
        let day = summary.days.last_mut().expect("pushed above");
        day.requests += row.requests;
        day.bytes_in += row.bytes_in;
        day.bytes_out += row.bytes_out;
        summary.total.requests += row.requests;
        summary.total.bytes_in += row.bytes_in;
        summary.total.bytes_out += row.bytes_out;
        day.operations.push(OperationUsage {
            operation: row.operation,
            requests: row.requests,
            bytes_in: row.bytes_in,
            bytes_out: row.bytes_out,
        });
    }
    Ok(summary)
}

/// Loads one relaxed counter.
pub fn load(counter: &std::sync::atomic::AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}
