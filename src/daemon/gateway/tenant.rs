//! Who is calling: the `X-API-Key` header checked against the users service's
//! `/validate-key`, cached briefly, with the scope the request method needs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::Method;
use axum::http::request::Parts;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use std::time::Instant;

use super::state::GatewayState;
use crate::config::Secret;
use crate::error::ApiError;
use crate::proto::{API_KEY_HEADER, CLUSTER_SECRET_HEADER, ValidateKeyRequest, ValidateKeyResponse};

/// How long a validated key is trusted without asking the users service again.
/// Kept under the 5 s in which a revoked key must stop working.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(3);

/// Cached keys before expired entries are swept.
const MAX_CACHED_KEYS: usize = 10_000;

/// The authenticated tenant of a `/v1` request (an axum extractor).
///
/// Rejects with 401 when the key is missing, unknown, revoked or expired, and
/// 403 when it lacks the scope of the method (`read` for GET, `write` for
/// PUT/DELETE; `admin` grants both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// The user the key belongs to.
    pub user_id: i64,
    /// The key's scopes.
    pub scopes: Vec<String>,
}

impl Tenant {
    /// The prefix under which this tenant's keys are stored on the nodes.
    pub fn prefix(&self) -> String {
        format!("{}/", self.user_id)
    }

    /// The node-side key for the tenant's `key`.
    pub fn storage_key(&self, key: &str) -> String {
        format!("{}/{key}", self.user_id)
    }

    fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|held| held == scope || held == "admin")
    }
}

/// The scope a request method needs.
pub fn required_scope(method: &Method) -> &'static str {
    if method == Method::GET || method == Method::HEAD { "read" } else { "write" }
}

/// Validated keys by SHA-256 of the key (the key itself is never kept).
/// A std `Mutex`: held for a map lookup, never across an `.await`.
#[derive(Debug, Default)]
pub struct KeyCache {
    entries: Mutex<HashMap<[u8; 32], (Instant, Tenant)>>,
}

impl KeyCache {
    fn get(&self, digest: &[u8; 32]) -> Option<Tenant> {
        self.get_at(digest, Instant::now())
    }

    fn get_at(&self, digest: &[u8; 32], now: Instant) -> Option<Tenant> {
        let entries = self.entries.lock().expect("key cache lock poisoned");
        entries
            .get(digest)
            .filter(|(at, _)| now.saturating_duration_since(*at) < KEY_CACHE_TTL)
            .map(|(_, tenant)| tenant.clone())
    }

    fn insert(&self, digest: [u8; 32], tenant: Tenant) {
        let mut entries = self.entries.lock().expect("key cache lock poisoned");
        if entries.len() >= MAX_CACHED_KEYS {
            entries.retain(|_, (at, _)| at.elapsed() < KEY_CACHE_TTL);
            if entries.len() >= MAX_CACHED_KEYS {
                entries.clear();
            }
        }
        entries.insert(digest, (Instant::now(), tenant));
    }
}

/// Asks the users service whether `key` is valid: `Ok(None)` when it is not.
pub async fn validate_key(
    http: &reqwest::Client,
    users_url: &str,
    secret: &Secret,
    key: &str,
) -> Result<Option<ValidateKeyResponse>, ApiError> {
    let unavailable = |detail: String| {
        ApiError::unavailable(format!("cannot check the API key: users service at {users_url} {detail}"))
    };
    let response = http
        .post(format!("{users_url}/validate-key"))
        .header(CLUSTER_SECRET_HEADER, secret.expose())
        .json(&ValidateKeyRequest { key: key.to_string() })
        .send()
        .await
        .map_err(|error| unavailable(format!("is unreachable: {}", super::nodes::describe(error))))?;
    match response.status() {
        StatusCode::OK => response
            .json::<ValidateKeyResponse>()
            .await
            .map(Some)
            .map_err(|error| unavailable(format!("sent an unreadable answer: {}", super::nodes::describe(error)))),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => Ok(None),
        status => Err(unavailable(format!("answered {status}"))),
    }
}

impl FromRequestParts<GatewayState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &GatewayState) -> Result<Self, Self::Rejection> {
        if let Some(tenant) = parts.extensions.get::<Tenant>() {
            return Ok(tenant.clone());
        }
        let key = parts
            .headers
            .get(API_KEY_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|key| !key.is_empty())
            .ok_or_else(|| ApiError::unauthorized("missing X-API-Key header; create a key with POST /apikeys"))?;
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let tenant = match state.keys.get(&digest) {
            Some(tenant) => tenant,
            None => {
                let validated =
                    validate_key(&state.http, &state.config.users_url, &state.config.cluster_secret, key).await?;
                let Some(validated) = validated else {
                    return Err(ApiError::unauthorized("invalid, revoked or expired API key"));
                };
                let tenant = Tenant { user_id: validated.user_id, scopes: validated.scopes };
                state.keys.insert(digest, tenant.clone());
                tenant
            }
        };
        let scope = required_scope(&parts.method);
        if !tenant.has_scope(scope) {
            return Err(ApiError::forbidden(format!("this API key lacks the {scope:?} scope")));
        }
        parts.extensions.insert(tenant.clone());
        Ok(tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_follow_the_method_and_admin_grants_all() {
        assert_eq!(required_scope(&Method::GET), "read");
        assert_eq!(required_scope(&Method::PUT), "write");
        assert_eq!(required_scope(&Method::DELETE), "write");
        let reader = Tenant { user_id: 1, scopes: vec!["read".into()] };
        assert!(reader.has_scope("read") && !reader.has_scope("write"));
        let admin = Tenant { user_id: 1, scopes: vec!["admin".into()] };
        assert!(admin.has_scope("write"));
        assert_eq!(reader.storage_key("a/b"), "1/a/b");
    }

    #[test]
    fn cached_keys_expire_after_the_ttl() {
        let cache = KeyCache::default();
        let tenant = Tenant { user_id: 3, scopes: vec![] };
        cache.insert([1; 32], tenant.clone());
        let now = Instant::now();
        assert_eq!(cache.get_at(&[1; 32], now), Some(tenant));
        assert_eq!(cache.get_at(&[1; 32], now + KEY_CACHE_TTL), None);
        assert!(KEY_CACHE_TTL < std::time::Duration::from_secs(5));
    }
}
