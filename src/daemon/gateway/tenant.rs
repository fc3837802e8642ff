//! Who is calling: the `X-API-Key` header checked against the users service's
//! `/validate-key`, cached briefly, with the scope the request method needs.
//! Refused keys are cached too, for [`REFUSED_KEY_CACHE_TTL`], and failed
//! checks are limited per client address ([`super::authlimit`]).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::Method;
use axum::http::request::Parts;
use reqwest::StatusCode;
use std::time::Instant;

use super::state::GatewayState;
use crate::config::Secret;
use crate::error::ApiError;
use crate::proto::{API_KEY_HEADER, CLUSTER_SECRET_HEADER, Scope, ValidateKeyRequest, ValidateKeyResponse};
use crate::sync::Lock;

/// How long a validated key is trusted without asking the users service again.
/// Kept under the 5 s in which a revoked key must stop working.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(3);

/// How long a refused key is answered 401 without asking the users service
/// again. Short: a key that was refused because its account is disabled works
/// again at most this long after the account is re-enabled. (A newly created
/// key is never in this cache: keys are random, so no one sent it before.)
pub const REFUSED_KEY_CACHE_TTL: Duration = Duration::from_secs(2);

/// Cached keys (each of the two caches) before expired entries are swept.
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
    /// The key's scopes (shared: a tenant is cloned a few times per request).
    pub scopes: Arc<[Scope]>,
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

    /// Whether the key grants `scope`.
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scopes.iter().any(|held| held.grants(scope))
    }
}

/// The scope a request needs by its method; a batch (`POST /v1/batch`) needs read, and each of
/// its writes needs write ([`crate::daemon::gateway::batch`]).
pub fn required_scope(method: &Method, path: &str) -> Scope {
    let batch = method == Method::POST && path.trim_end_matches('/') == "/v1/batch";
    if method == Method::GET || method == Method::HEAD || batch { Scope::Read } else { Scope::Write }
}

/// A cached key's fingerprint: 128 bits of a keyed hash of the key.
type Fingerprint = u128;

/// Validated keys by a keyed fingerprint of the key (the key itself is never kept).
/// A std `Mutex`: held for a map lookup, never across an `.await`.
///
/// The fingerprint is SipHash (std's `RandomState`, keyed with random bits drawn when the gateway
/// starts) of the key with two different suffixes: 128 bits nobody outside this process can compute,
/// so no one can choose a key that lands on another tenant's entry. The secret itself was checked by
/// the users service before an entry is made; a hit only saves asking it again. Cheaper per request
/// than SHA-256, which a hit used to cost.
#[derive(Debug, Default)]
pub struct KeyCache {
    seed: RandomState,
    entries: Mutex<HashMap<Fingerprint, (Instant, Tenant)>>,
    refused: Mutex<HashMap<Fingerprint, Instant>>,
}

impl KeyCache {
    /// The fingerprint of `key` under this cache's random seed.
    pub fn fingerprint(&self, key: &str) -> Fingerprint {
        let high = self.seed.hash_one((key, 0u8));
        let low = self.seed.hash_one((key, 1u8));
        (u128::from(high) << 64) | u128::from(low)
    }

    fn get(&self, digest: &Fingerprint) -> Option<Tenant> {
        self.get_at(digest, Instant::now())
    }

    fn get_at(&self, digest: &Fingerprint, now: Instant) -> Option<Tenant> {
        let entries = self.entries.locked();
        entries
            .get(digest)
            .filter(|(at, _)| now.saturating_duration_since(*at) < KEY_CACHE_TTL)
            .map(|(_, tenant)| tenant.clone())
    }

    fn insert(&self, digest: Fingerprint, tenant: Tenant) {
        let mut entries = self.entries.locked();
        if entries.len() >= MAX_CACHED_KEYS {
            entries.retain(|_, (at, _)| at.elapsed() < KEY_CACHE_TTL);
            if entries.len() >= MAX_CACHED_KEYS {
                entries.clear();
            }
        }
        entries.insert(digest, (Instant::now(), tenant));
    }

    /// Whether the users service refused this key less than [`REFUSED_KEY_CACHE_TTL`] ago.
    fn is_refused_at(&self, digest: &Fingerprint, now: Instant) -> bool {
        let refused = self.refused.locked();
        refused.get(digest).is_some_and(|at| now.saturating_duration_since(*at) < REFUSED_KEY_CACHE_TTL)
    }

    fn insert_refused(&self, digest: Fingerprint) {
        let mut refused = self.refused.locked();
        if refused.len() >= MAX_CACHED_KEYS {
            refused.retain(|_, at| at.elapsed() < REFUSED_KEY_CACHE_TTL);
            if refused.len() >= MAX_CACHED_KEYS {
                refused.clear();
            }
        }
        refused.insert(digest, Instant::now());
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
    let response = crate::requestid::propagate(http.post(format!("{users_url}/validate-key")))
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
        let digest = state.keys.fingerprint(key);
        let tenant = match state.keys.get(&digest) {
            Some(tenant) => tenant,
            None => {
                let crate::extract::ClientAddress(address) = crate::extract::ClientAddress::of(parts);
                if let Some(wait) = state.auth_failures.blocked(&address) {
                    return Err(ApiError::too_many_requests(
                        "too many requests with invalid API keys from your address; check the key and retry later",
                        wait.as_secs_f64().ceil() as u64,
                    ));
                }
                let refused = || {
                    state.auth_failures.record(&address);
                    ApiError::unauthorized("invalid, revoked or expired API key")
                };
                if state.keys.is_refused_at(&digest, Instant::now()) {
                    return Err(refused());
                }
                let validated =
                    validate_key(&state.http, &state.config.users_url, &state.config.cluster_secret, key).await?;
                let Some(validated) = validated else {
                    state.keys.insert_refused(digest);
                    return Err(refused());
                };
                let tenant = Tenant { user_id: validated.user_id, scopes: validated.scopes.into() };
                state.keys.insert(digest, tenant.clone());
                tenant
            }
        };
        let scope = required_scope(&parts.method, parts.uri.path());
        if !tenant.has_scope(scope) {
            return Err(ApiError::forbidden(format!("this API key lacks the {:?} scope", scope.as_str())));
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
        assert_eq!(required_scope(&Method::GET, "/v1/kv/a"), Scope::Read);
        assert_eq!(required_scope(&Method::PUT, "/v1/kv/a"), Scope::Write);
        assert_eq!(required_scope(&Method::DELETE, "/v1/kv/a"), Scope::Write);
        assert_eq!(required_scope(&Method::POST, "/v1/batch"), Scope::Read, "each write checks its own");
        let reader = Tenant { user_id: 1, scopes: vec![Scope::Read].into() };
        assert!(reader.has_scope(Scope::Read) && !reader.has_scope(Scope::Write));
        let admin = Tenant { user_id: 1, scopes: vec![Scope::Admin].into() };
        assert!(admin.has_scope(Scope::Write));
        assert_eq!(reader.storage_key("a/b"), "1/a/b");
    }

    #[test]
    fn cached_keys_expire_after_the_ttl() {
        let cache = KeyCache::default();
        let tenant = Tenant { user_id: 3, scopes: Vec::new().into() };
        let digest = cache.fingerprint("ydht_key");
        cache.insert(digest, tenant.clone());
        let now = Instant::now();
        assert_eq!(cache.get_at(&digest, now), Some(tenant));
        assert_eq!(cache.get_at(&cache.fingerprint("ydht_kez"), now), None);
        assert_eq!(cache.get_at(&digest, now + KEY_CACHE_TTL), None);
        assert!(KEY_CACHE_TTL < std::time::Duration::from_secs(5));
    }

    #[test]
    fn refused_keys_are_remembered_briefly() {
        let cache = KeyCache::default();
        let digest = cache.fingerprint("ydht_wrong");
        let now = Instant::now();
        assert!(!cache.is_refused_at(&digest, now));
        cache.insert_refused(digest);
        assert!(cache.is_refused_at(&digest, now));
        assert!(!cache.is_refused_at(&cache.fingerprint("ydht_other"), now));
        let later = Instant::now() + REFUSED_KEY_CACHE_TTL;
        assert!(!cache.is_refused_at(&digest, later), "gone after the TTL");
        assert!(cache.get(&digest).is_none(), "a refused key is never a valid one");
    }
}
