//! The JSON API of the users service (see SPEC "Users service").

use axum::Json;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::accounts::{self, ApiKeyView, load};
use super::db::{DbError, SessionKind, UsageIncrement, UserRow};
use super::extract::{BearerUser, internal, storage};
use super::state::{Counters, UsersState, looks_like_api_key, now, token_hash};
use crate::auth::cluster::Internal;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, ClientAddress};
use crate::proto::{Scope, ServiceHealth, UsageBatch, ValidateKeyRequest, ValidateKeyResponse};

/// Most rows accepted in one `POST /usage` batch.
pub const MAX_USAGE_ROWS: usize = 10_000;
/// Largest count accepted in one usage row (keeps sums far from overflow).
const MAX_USAGE_VALUE: u64 = 1 << 50;

/// An account as the API shows it (never the password hash).
#[derive(Debug, Clone, Serialize)]
pub struct UserView {
    /// Account id (the tenant id at the gateway).
    pub id: i64,
    /// Email address.
    pub email: String,
    /// User name.
    pub username: String,
    /// Whether the account is active.
    pub is_active: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

impl From<UserRow> for UserView {
    fn from(user: UserRow) -> Self {
        Self {
            id: user.id,
            email: user.email,
            username: user.username,
            is_active: user.is_active,
            created_at: user.created_at,
        }
    }
}

/// `POST /signup` body.
#[derive(Debug, Deserialize)]
pub struct SignupRequest {
    /// Email address.
    pub email: String,
    /// User name, 3–32 of `[A-Za-z0-9_-]`.
    pub username: String,
    /// Password, at least 8 characters.
    pub password: String,
}

/// `POST /signup` → 201 user.
pub async fn signup(
    axum::extract::State(state): axum::extract::State<UsersState>,
    ClientAddress(address): ClientAddress,
    ApiJson(body): ApiJson<SignupRequest>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let user = accounts::sign_up(&state, &body.email, &body.username, &body.password, &address).await?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// `POST /login` body.
#[derive(Debug, Deserialize)]
pub struct LoginRequest {
    /// Email address.
    pub email: String,
    /// Password.
    pub password: String,
}

/// `POST /login` and `POST /refresh` answer.
#[derive(Debug, Serialize)]
pub struct TokenPair {
    /// JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// Single-use token for `POST /refresh`.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Access-token lifetime in seconds.
    pub expires_in: u64,
    /// The account.
    pub user: UserView,
}

fn token_pair(state: &UsersState, user: UserRow, family: &str, refresh_token: String) -> Result<TokenPair, ApiError> {
    let access_token = state.jwt.issue(user.id, family).map_err(internal)?;
    Ok(TokenPair {
        access_token,
        refresh_token,
        token_type: "Bearer",
        expires_in: state.jwt.lifetime().as_secs(),
        user: user.into(),
    })
}

/// `POST /login` → 200 token pair; 401 on any mismatch; 429 when throttled.
pub async fn login(
    axum::extract::State(state): axum::extract::State<UsersState>,
    ClientAddress(address): ClientAddress,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Json<TokenPair>, ApiError> {
    let user = accounts::authenticate(&state, &body.email, &body.password, &address).await?;
    let (family, refresh) = accounts::open_session(&state, user.id, SessionKind::Api, None).await?;
    Ok(Json(token_pair(&state, user, &family, refresh)?))
}

/// `POST /refresh` body.
#[derive(Debug, Deserialize)]
pub struct RefreshRequest {
    /// The refresh token from `/login` or the previous `/refresh`.
    pub refresh_token: String,
}

/// `POST /refresh` → 200 new pair; the old refresh token is spent.
pub async fn refresh(
    axum::extract::State(state): axum::extract::State<UsersState>,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Json<TokenPair>, ApiError> {
    let (user, family, token) = accounts::rotate_refresh(&state, &body.refresh_token).await?;
    Ok(Json(token_pair(&state, user, &family, token)?))
}

/// `POST /logout` → 204; the session's access and refresh tokens stop working.
pub async fn logout(
    axum::extract::State(state): axum::extract::State<UsersState>,
    bearer: BearerUser,
) -> Result<StatusCode, ApiError> {
    state.db.revoke_session(&bearer.session, now()).await.map_err(internal)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /me` → 200 user.
pub async fn me(bearer: BearerUser) -> Json<UserView> {
    Json(bearer.user.into())
}

/// `POST /apikeys` body.
#[derive(Debug, Deserialize)]
pub struct CreateKeyRequest {
    /// Display name.
    pub name: String,
    /// Scopes (`read`, `write`, `admin`); defaults to read + write.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Lifetime in days (1–3650); absent or null for a key that never expires.
    #[serde(default)]
    pub expires_in_days: Option<i64>,
}

fn default_scopes() -> Vec<String> {
    vec!["read".into(), "write".into()]
}

/// `POST /apikeys` answer: the only time the full key is shown.
#[derive(Debug, Serialize)]
pub struct CreatedKeyView {
    /// Key id.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// First 8 characters of the key.
    pub key_prefix: String,
    /// The full key.
    pub key: String,
    /// Scopes.
    pub scopes: Vec<Scope>,
    /// Always true for a new key.
    pub is_active: bool,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// `POST /apikeys` → 201 with the key.
pub async fn create_key(
    axum::extract::State(state): axum::extract::State<UsersState>,
    bearer: BearerUser,
    ApiJson(body): ApiJson<CreateKeyRequest>,
) -> Result<(StatusCode, Json<CreatedKeyView>), ApiError> {
    let created = accounts::create_key(&state, bearer.user.id, &body.name, &body.scopes, body.expires_in_days).await?;
    let row = created.row;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKeyView {
            id: row.id,
            scopes: row.scope_list(),
            name: row.name,
            key_prefix: row.key_prefix,
            key: created.key,
            is_active: true,
            expires_at: row.expires_at,
            created_at: row.created_at,
        }),
    ))
}

/// `GET /apikeys` answer.
#[derive(Debug, Serialize)]
pub struct KeyList {
    /// The keys, newest first, never with the secret.
    pub api_keys: Vec<ApiKeyView>,
    /// How many.
    pub count: usize,
}

/// `GET /apikeys` → 200 list.
pub async fn list_keys(
    axum::extract::State(state): axum::extract::State<UsersState>,
    bearer: BearerUser,
) -> Result<Json<KeyList>, ApiError> {
    let api_keys = accounts::list_keys(&state, bearer.user.id).await?;
    Ok(Json(KeyList { count: api_keys.len(), api_keys }))
}

/// `DELETE /apikeys/{id}` → 204; 404 when the key is not the caller's.
pub async fn revoke_key(
    axum::extract::State(state): axum::extract::State<UsersState>,
    bearer: BearerUser,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    match state.db.revoke_api_key(bearer.user.id, id, now()).await {
        Ok(()) => {
            tracing::info!(user_id = bearer.user.id, key_id = id, "API key revoked");
            Ok(StatusCode::NO_CONTENT)
        }
        Err(DbError::NotFound) => Err(ApiError::not_found(format!("API key {id} not found"))),
        Err(error) => Err(internal(error)),
    }
}

/// `GET /usage` query.
#[derive(Debug, Deserialize)]
pub struct UsageQuery {
    /// Days to cover, today included (1–366, default 30).
    pub days: Option<u32>,
}

/// `GET /usage?days=N` → 200 per-day usage by operation.
pub async fn usage(
    axum::extract::State(state): axum::extract::State<UsersState>,
    bearer: BearerUser,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> Result<Json<accounts::UsageSummary>, ApiError> {
    let days = query.days.unwrap_or(30);
    if !(1..=366).contains(&days) {
        return Err(ApiError::bad_request(format!("days must be between 1 and 366 (got {days})")));
    }
    Ok(Json(accounts::usage(&state, bearer.user.id, days).await?))
}

/// `POST /validate-key` (cluster secret) → 200 `{user_id, scopes}`; 401 for an
/// unknown, revoked or expired key. Marks the key used (written in batches).
pub async fn validate_key(
    axum::extract::State(state): axum::extract::State<UsersState>,
    _: Internal,
    ApiJson(body): ApiJson<ValidateKeyRequest>,
) -> Result<Json<ValidateKeyResponse>, ApiError> {
    let refuse = |message: &str| {
        Counters::bump(&state.counters.keys_refused);
        ApiError::unauthorized(message)
    };
    if !looks_like_api_key(&body.key) {
        return Err(refuse("invalid API key"));
    }
    let Some(key) = state.db.api_key_by_hash(&token_hash(&body.key)).await.map_err(storage)? else {
        return Err(refuse("invalid API key"));
    };
    let at = now();
    if key.revoked_at.is_some() {
        return Err(refuse("API key has been revoked"));
    }
    if key.expires_at.is_some_and(|expires| expires <= at) {
        return Err(refuse("API key has expired"));
    }
    if !key.user_active {
        return Err(refuse("the account owning this API key is disabled"));
    }
    state.last_used.record(key.id, at);
    Counters::bump(&state.counters.keys_validated);
    let scopes = Scope::parse_list(&key.scopes);
    Ok(Json(ValidateKeyResponse { user_id: key.user_id, scopes }))
}

/// `POST /usage` (cluster secret) → 204 after adding the batch to today's totals.
pub async fn record_usage(
    axum::extract::State(state): axum::extract::State<UsersState>,
    _: Internal,
    ApiJson(batch): ApiJson<UsageBatch, { super::MAX_USAGE_BODY }>,
) -> Result<StatusCode, ApiError> {
    if batch.records.len() > MAX_USAGE_ROWS {
        return Err(ApiError::too_large(format!("a usage batch may hold at most {MAX_USAGE_ROWS} records")));
    }
    let mut rows = Vec::with_capacity(batch.records.len());
    for report in batch.records {
        let operation = report.operation.trim();
        if operation.is_empty()
            || operation.len() > 32
            || !operation.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(ApiError::bad_request(format!(
                "invalid usage operation {:?}; use 1-32 characters of [A-Za-z0-9_-]",
                report.operation
            )));
        }
        if [report.requests, report.bytes_in, report.bytes_out].iter().any(|value| *value > MAX_USAGE_VALUE) {
            return Err(ApiError::bad_request(format!("usage values must be at most {MAX_USAGE_VALUE}")));
        }
        rows.push(UsageIncrement {
            user_id: report.user_id,
            operation: operation.to_string(),
            requests: report.requests as i64,
            bytes_in: report.bytes_in as i64,
            bytes_out: report.bytes_out as i64,
        });
    }
    let received = rows.len();
    let applied = state.db.add_usage(Utc::now().date_naive(), &rows).await.map_err(internal)?;
    if applied < received as u64 {
        tracing::warn!(received, applied, "usage rows of unknown users were skipped");
    }
    state.counters.usage_rows.fetch_add(applied, std::sync::atomic::Ordering::Relaxed);
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /health`.
pub async fn health() -> Json<ServiceHealth> {
    Json(ServiceHealth { status: "healthy".into(), service: "users".into() })
}

/// `GET /metrics` answer.
#[derive(Debug, Serialize)]
pub struct UsersMetrics {
    /// Always `healthy` when the service answers.
    pub status: &'static str,
    /// Always `users`.
    pub service: &'static str,
    /// `sqlite` or `postgres`.
    pub database: &'static str,
    /// Accounts.
    pub users: i64,
    /// Unrevoked API keys.
    pub active_api_keys: i64,
    /// Accounts created since start.
    pub signups: u64,
    /// Successful logins since start.
    pub logins: u64,
    /// Failed logins since start.
    pub login_failures: u64,
    /// Logins refused by throttling since start.
    pub logins_throttled: u64,
    /// Sign-ups refused by the per-address limit since start.
    pub signups_throttled: u64,
    /// Sign-ups and logins refused with 503 (no password-hashing slot in time) since start.
    pub hashing_busy: u64,
    /// Refresh-token reuses detected since start.
    pub refresh_reuse_detected: u64,
    /// Keys accepted by `/validate-key` since start.
    pub keys_validated: u64,
    /// Keys refused by `/validate-key` since start.
    pub keys_refused: u64,
    /// Usage rows recorded since start.
    pub usage_rows: u64,
    /// Unix milliseconds of this snapshot.
    pub timestamp: i64,
}

/// `GET /metrics`.
pub async fn metrics(
    axum::extract::State(state): axum::extract::State<UsersState>,
    headers: axum::http::HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    let (users, active_api_keys) = state.db.counts().await.map_err(internal)?;
    let counters = &state.counters;
    let snapshot = UsersMetrics {
        status: "healthy",
        service: "users",
        database: state.db.backend(),
        users,
        active_api_keys,
        signups: load(&counters.signups),
        logins: load(&counters.logins),
        login_failures: load(&counters.login_failures),
        logins_throttled: load(&counters.logins_throttled),
        signups_throttled: load(&counters.signups_throttled),
        hashing_busy: load(&counters.hashing_busy),
        refresh_reuse_detected: load(&counters.refresh_reuse_detected),
        keys_validated: load(&counters.keys_validated),
        keys_refused: load(&counters.keys_refused),
        usage_rows: load(&counters.usage_rows),
        timestamp: Utc::now().timestamp_millis(),
    };
    let format = crate::exposition::Format::negotiate(&headers);
    let mut exposition = crate::exposition::Exposition::new("users");
    let m = &snapshot;
    exposition.gauge("accounts", "Accounts in the database", m.users as f64);
    exposition.gauge("active_api_keys", "API keys neither revoked nor expired", m.active_api_keys as f64);
    exposition.counter("signups", "Accounts created", m.signups);
    exposition.counters(
        "logins",
        "Login attempts by result",
        "result",
        [
            ("ok".to_string(), m.logins),
            ("failed".to_string(), m.login_failures),
            ("throttled".to_string(), m.logins_throttled),
        ],
    );
    exposition.counter("signups_throttled", "Sign-ups refused by the per-address limit", m.signups_throttled);
    exposition.counter(
        "hashing_busy",
        "Sign-ups and logins refused with 503 for want of a hashing slot",
        m.hashing_busy,
    );
    exposition.counter(
        "refresh_reuse_detected",
        "Refresh-token reuses detected (sessions revoked)",
        m.refresh_reuse_detected,
    );
    exposition.counters(
        "key_validations",
        "API-key validations for the gateway by result",
        "result",
        [("accepted".to_string(), m.keys_validated), ("refused".to_string(), m.keys_refused)],
    );
    exposition.counter("usage_rows", "Usage rows received from gateways", m.usage_rows);
    Ok(exposition.respond(format, || Json(snapshot).into_response()))
}
