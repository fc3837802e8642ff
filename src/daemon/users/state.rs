//! The shared state of the users service: a cheap-clone handle over `Arc`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::FromRef;
use chrono::{DateTime, SubsecRound, Utc};
use sha2::{Digest, Sha256};

use super::db::Db;
use super::hashing::PasswordHasher;
use super::throttle::{LoginThrottle, SignupLimit};
use crate::auth::cluster::ClusterSecret;
use crate::auth::jwt::JwtKeys;
use crate::sync::Lock;

/// Prefix of every API key.
pub const API_KEY_PREFIX: &str = "ydht_";
/// Random characters after the prefix (hex of 20 OS-random bytes: 160 bits).
pub const API_KEY_RANDOM_CHARS: usize = 40;
/// How long an API refresh token stays valid.
pub const REFRESH_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long a web session cookie stays valid.
pub const WEB_SESSION_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a freshly created key waits to be shown on the dashboard.
const FLASH_LIFETIME: Duration = Duration::from_secs(300);

/// Handle on everything the handlers share.
#[derive(Clone)]
pub struct UsersState(pub Arc<Shared>);

impl std::ops::Deref for UsersState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl FromRef<UsersState> for ClusterSecret {
    fn from_ref(state: &UsersState) -> Self {
        state.cluster_secret.clone()
    }
}

/// The state behind [`UsersState`].
pub struct Shared {
    /// The database.
    pub db: Db,
    /// Access-token keys.
    pub jwt: JwtKeys,
    /// Guards `/validate-key` and `/usage`.
    pub cluster_secret: ClusterSecret,
    /// Failed-login throttle.
    pub throttle: LoginThrottle,
    /// Sign-ups per client address and hour.
    pub signups: SignupLimit,
    /// The bounded password-hashing slots.
    pub hasher: PasswordHasher,
    /// `last_used_at` updates waiting to be written.
    pub last_used: LastUsedBuffer,
    /// Keys just created on the dashboard, shown once.
    pub flash: NewKeyFlash,
    /// Counters for `/metrics`.
    pub counters: Counters,
    /// Whether cookies carry the `Secure` attribute (serving behind HTTPS).
    pub secure_cookies: bool,
    /// The gateway, for the dashboard's key browser.
    pub gateway: super::browser::GatewayLink,
    /// The latest cluster membership version seen; membership long-polls wait on it.
    pub membership: super::membership::MembershipWatch,
}

/// Monotonic counters reported by `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Accounts created.
    pub signups: AtomicU64,
    /// Successful logins (API and web).
    pub logins: AtomicU64,
    /// Failed logins.
    pub login_failures: AtomicU64,
    /// Logins refused by the throttle.
    pub logins_throttled: AtomicU64,
    /// Sign-ups refused by the per-address limit.
    pub signups_throttled: AtomicU64,
    /// Sign-ups and logins refused with 503 because no hashing slot was free in time.
    pub hashing_busy: AtomicU64,
    /// Refresh-token reuses detected (sessions revoked).
    pub refresh_reuse_detected: AtomicU64,
    /// `/validate-key` calls that accepted the key.
    pub keys_validated: AtomicU64,
    /// `/validate-key` calls that refused the key.
    pub keys_refused: AtomicU64,
    /// Usage rows received on `/usage`.
    pub usage_rows: AtomicU64,
}

impl Counters {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// `last_used_at` times collected in memory by `/validate-key` and written in
/// batches by a background task, so validating a key costs no database write.
#[derive(Debug, Default)]
pub struct LastUsedBuffer {
    pending: Mutex<HashMap<i64, DateTime<Utc>>>,
}

impl LastUsedBuffer {
    /// Notes that key `id` was used at `at`.
    pub fn record(&self, id: i64, at: DateTime<Utc>) {
        self.pending.locked().insert(id, at);
    }

    /// Every unflushed time, by key id.
    pub fn snapshot(&self) -> HashMap<i64, DateTime<Utc>> {
        self.pending.locked().clone()
    }

    /// Writes everything pending; on failure the entries are kept for the next try.
    pub async fn flush(&self, db: &Db) -> anyhow::Result<usize> {
        let batch: Vec<(i64, DateTime<Utc>)> = {
            let pending = self.pending.locked();
            pending.iter().map(|(id, at)| (*id, *at)).collect()
        };
        if batch.is_empty() {
            return Ok(0);
        }
        db.touch_api_keys(&batch).await?;
        let mut pending = self.pending.locked();
        for (id, at) in &batch {
            if pending.get(id) == Some(at) {
                pending.remove(id);
            }
        }
        Ok(batch.len())
    }
}

/// A key created on the dashboard, waiting to be shown exactly once.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// The key's display name.
    pub name: String,
    /// The full secret key.
    pub key: String,
}

/// One-shot storage of new keys per web session (in memory, expiring).
#[derive(Debug, Default)]
pub struct NewKeyFlash {
    entries: Mutex<HashMap<String, (Instant, NewKey)>>,
}

impl NewKeyFlash {
    /// Keeps `key` for web session `family` until it is taken or expires.
    pub fn put(&self, family: &str, key: NewKey) {
        let mut entries = self.entries.locked();
        entries.retain(|_, (at, _)| at.elapsed() < FLASH_LIFETIME);
        entries.insert(family.to_string(), (Instant::now(), key));
    }

    /// Takes the waiting key of `family`, if any (it is then gone).
    pub fn take(&self, family: &str) -> Option<NewKey> {
        let mut entries = self.entries.locked();
        entries.remove(family).filter(|(at, _)| at.elapsed() < FLASH_LIFETIME).map(|(_, key)| key)
    }
}

/// The current time at second precision (what both databases store alike).
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0)
}

/// Hex SHA-256 of a high-entropy token (API key, refresh token, session cookie).
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new API key: `ydht_` + 40 hex characters from the OS random generator.
pub fn new_api_key() -> String {
    format!("{API_KEY_PREFIX}{}", crate::config::random_hex(API_KEY_RANDOM_CHARS / 2))
}

/// Whether `key` has the shape of an API key (checked before any lookup).
pub fn looks_like_api_key(key: &str) -> bool {
    key.strip_prefix(API_KEY_PREFIX)
        .is_some_and(|rest| rest.len() == API_KEY_RANDOM_CHARS && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A new refresh token or session cookie value (256 random bits, hex).
pub fn new_session_token() -> String {
    crate::config::random_hex(32)
}

/// A new session family id.
pub fn new_family() -> String {
    crate::config::random_hex(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_have_the_documented_shape() {
        let key = new_api_key();
        assert!(key.starts_with("ydht_") && key.len() == 45, "{key}");
        assert!(looks_like_api_key(&key));
        assert_ne!(key, new_api_key());
        assert!(!looks_like_api_key("ydht_short"));
        assert!(!looks_like_api_key(&key.replace("ydht_", "xxxx_")));
        assert_eq!(token_hash("abc").len(), 64);
    }

    #[test]
    fn flash_is_shown_once() {
        let flash = NewKeyFlash::default();
        flash.put("f", NewKey { name: "n".into(), key: "k".into() });
        assert_eq!(flash.take("f").map(|key| key.key), Some("k".to_string()));
        assert!(flash.take("f").is_none());
    }
}
