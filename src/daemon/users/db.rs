//! Storage of the users service on SQLite or PostgreSQL.
//!
//! Both backends run the same SQL (positional `$N` parameters, always in
//! ascending order of first use, which both accept); [`Db`] dispatches every
//! query to the pool it holds. Migrations for each backend live in
//! `migrations/sqlite` and `migrations/postgres`, are embedded in the binary
//! and applied by [`Db::connect`].

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::Connection;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::error::{Exit, exit};

/// How long start-up waits for the database.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection pool on one of the two supported databases; cheap to clone.
#[derive(Clone, Debug)]
pub enum Db {
    /// Embedded SQLite (the default, a file in the data dir).
    Sqlite(SqlitePool),
    /// PostgreSQL, when `DATABASE_URL` is `postgres://…`.
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to whichever pool `$db` holds.
macro_rules! on_pool {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            Db::Sqlite($pool) => $body,
            Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// A storage failure, typed so handlers can answer 404 / 409 instead of 500.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The row does not exist (or is not the caller's).
    #[error("not found")]
    NotFound,
    /// A unique constraint refused the write; the message names the field.
    #[error("{0}")]
    Conflict(String),
    /// Any other database error.
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
}

/// Result of a storage call.
pub type DbResult<T> = Result<T, DbError>;

/// A user account.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    /// Primary key.
    pub id: i64,
    /// Lower-cased email address.
    pub email: String,
    /// Unique (case-insensitively) user name.
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Whether the account may log in and its keys work.
    pub is_active: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// Which client a session belongs to: the JSON API or the web pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// Refresh tokens of `POST /login` / `POST /refresh`.
    Api,
    /// The browser session cookie.
    Web,
}

impl SessionKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Web => "web",
        }
    }
}

/// One refresh token (or web session token) of a session family.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    /// Primary key of this token's row.
    pub id: i64,
    /// The owner.
    pub user_id: i64,
    /// The session this token belongs to (shared by its rotations).
    pub family: String,
    /// `api` or `web`.
    pub kind: String,
    /// Set once the token was exchanged for a new one.
    pub rotated_at: Option<DateTime<Utc>>,
    /// Set when the session was revoked (logout or reuse detected).
    pub revoked_at: Option<DateTime<Utc>>,
    /// After this the token is refused.
    pub expires_at: DateTime<Utc>,
}

impl SessionRow {
    /// Whether this row is of the given kind.
    pub fn is_kind(&self, kind: SessionKind) -> bool {
        self.kind == kind.as_str()
    }
}

/// An API key as stored (without the secret, which is never stored).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRow {
    /// Primary key.
    pub id: i64,
    /// The owner.
    pub user_id: i64,
    /// Display name.
    pub name: String,
    /// The first 8 characters of the key, for recognising it.
    pub key_prefix: String,
    /// Comma-separated scopes.
    pub scopes: String,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// Last time the gateway validated it (as last flushed).
    pub last_used_at: Option<DateTime<Utc>>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

impl ApiKeyRow {
    /// The scopes as a list.
    pub fn scope_list(&self) -> Vec<crate::proto::Scope> {
        crate::proto::Scope::parse_list(&self.scopes)
    }

    /// Not revoked and not expired at `now`.
    pub fn is_active_at(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|expires| expires > now)
    }
}

/// An API key looked up by its hash, with its owner's status.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyLookup {
    /// The key's id.
    pub id: i64,
    /// The owner.
    pub user_id: i64,
    /// Comma-separated scopes.
    pub scopes: String,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Whether the owner's account is active.
    pub user_active: bool,
}

/// One day's usage of one operation.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UsageRow {
    /// UTC day.
    pub day: NaiveDate,
    /// `put`, `get`, `delete`, `list`, …
    pub operation: String,
    /// Requests counted.
    pub requests: i64,
    /// Request body bytes.
    pub bytes_in: i64,
    /// Response body bytes.
    pub bytes_out: i64,
}

/// One usage increment to add to a day's totals.
#[derive(Debug, Clone)]
pub struct UsageIncrement {
    /// The tenant.
    pub user_id: i64,
    /// The operation.
    pub operation: String,
    /// Requests to add.
    pub requests: i64,
    /// Request bytes to add.
    pub bytes_in: i64,
    /// Response bytes to add.
    pub bytes_out: i64,
}

/// `url` with any password replaced by `***`, for error messages and logs.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => url.split('@').next_back().map_or_else(String::new, |rest| format!("…@{rest}")),
    }
}

/// Creates a missing SQLite database file empty with mode 0600 (SQLite opens an
/// empty file as a new database, and creates its `-wal` and `-shm` files with
/// the database file's mode), so the accounts are readable by the owner only
/// whatever the umask. In-memory databases and existing files are left alone.
fn create_private_database_file(path: &std::path::Path) -> std::io::Result<()> {
    let in_memory = path.as_os_str().is_empty() || path.to_str().is_some_and(|name| name.starts_with(":memory:"));
    if in_memory {
        return Ok(());
    }
    if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        crate::config::create_private_dir(parent)?;
    }
    match crate::config::private_file(std::fs::OpenOptions::new().write(true).create_new(true)).open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error),
    }
}

impl Db {
    /// Connects to `url` (`postgres://…`, `postgresql://…` or `sqlite:…`) and
    /// applies the embedded migrations. Any failure is a one-line error naming
    /// `DATABASE_URL`.
    pub async fn connect(url: &str) -> anyhow::Result<Db> {
        let shown = redact_url(url);
        let unreachable = |error: sqlx::Error| {
            anyhow::Error::new(Exit::new(
                exit::UNAVAILABLE,
                format!(
                    "cannot connect to the database at {shown}: {error}; check DATABASE_URL and that the database is running"
                ),
            ))
        };
        let db = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = sqlx::postgres::PgConnectOptions::from_str(url).map_err(|error| {
                Exit::usage(format!(
                    "invalid DATABASE_URL {shown}: {error}; expected postgres://user:password@host:5432/db"
                ))
            })?;
            // One direct connection first: its error says why (refused, auth, no such
            // database), where a pool would only report a timeout.
            let probe = tokio::time::timeout(CONNECT_TIMEOUT, sqlx::PgConnection::connect_with(&options))
                .await
                .map_err(|_| unreachable(sqlx::Error::PoolTimedOut))?
                .map_err(unreachable)?;
            let _ = probe.close().await;
            let pool = PgPoolOptions::new()
                .max_connections(10)
                .acquire_timeout(CONNECT_TIMEOUT)
                .connect_with(options)
                .await
                .map_err(unreachable)?;
            Db::Postgres(pool)
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|error| {
                    Exit::usage(format!("invalid DATABASE_URL {shown}: {error}; expected sqlite:///path/users.db"))
                })?
                .create_if_missing(true)
                .foreign_keys(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(5));
            create_private_database_file(options.get_filename()).map_err(|error| {
                Exit::new(
                    exit::UNAVAILABLE,
                    format!(
                        "cannot create the database file of {shown}: {error}; check DATABASE_URL and the directory"
                    ),
                )
            })?;
            let pool = SqlitePoolOptions::new()
                .max_connections(5)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(options)
                .await
                .map_err(unreachable)?;
            Db::Sqlite(pool)
        } else {
            return Err(Exit::usage(format!(
                "unsupported DATABASE_URL {shown}; use postgres://… for PostgreSQL or sqlite:///path/users.db (or unset it for the embedded default)"
            ))
            .into());
        };
        db.migrate().await.map_err(|error| {
            Exit::new(
                exit::UNAVAILABLE,
                format!("database migration failed on {shown}: {error}; fix the database named by DATABASE_URL or point it at an empty one"),
            )
        })?;
        Ok(db)
    }

    /// Applies the embedded migrations of this backend.
    async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match self {
            Db::Sqlite(pool) => sqlx::migrate!("migrations/sqlite").run(pool).await,
            Db::Postgres(pool) => sqlx::migrate!("migrations/postgres").run(pool).await,
        }
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// Closes every connection (after the last flush at shutdown).
    pub async fn close(&self) {
        on_pool!(self, |pool| pool.close().await)
    }

    /// Creates a user; 409-worthy [`DbError::Conflict`] when the email or user name is taken.
    pub async fn insert_user(
        &self,
        email: &str,
        username: &str,
        password_hash: &str,
        now: DateTime<Utc>,
    ) -> DbResult<UserRow> {
        if self.user_by_email(email).await?.is_some() {
            return Err(DbError::Conflict("an account with this email already exists".into()));
        }
        let sql = "SELECT id FROM users WHERE lower(username) = lower($1)";
        let taken: Option<(i64,)> =
            on_pool!(self, |pool| sqlx::query_as(sql).bind(username).fetch_optional(pool).await)?;
        if taken.is_some() {
            return Err(DbError::Conflict("this username is already taken".into()));
        }
        let sql = "INSERT INTO users (email, username, password_hash, is_active, created_at, updated_at) \
                   VALUES ($1, $2, $3, TRUE, $4, $4) \
                   RETURNING id, email, username, password_hash, is_active, created_at";
        let inserted = on_pool!(self, |pool| sqlx::query_as::<_, UserRow>(sql)
            .bind(email)
            .bind(username)
            .bind(password_hash)
            .bind(now)
            .fetch_one(pool)
            .await);
        inserted.map_err(|error| match &error {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                let detail = format!("{} {}", db.message(), db.constraint().unwrap_or_default());
                if detail.contains("email") {
                    DbError::Conflict("an account with this email already exists".into())
                } else {
                    DbError::Conflict("this username is already taken".into())
                }
            }
            _ => DbError::Sqlx(error),
        })
    }

    /// The user with this (lower-cased) email.
    pub async fn user_by_email(&self, email: &str) -> DbResult<Option<UserRow>> {
        let sql = "SELECT id, email, username, password_hash, is_active, created_at FROM users WHERE email = $1";
        Ok(on_pool!(self, |pool| sqlx::query_as::<_, UserRow>(sql).bind(email).fetch_optional(pool).await)?)
    }

    /// The user with this id, or [`DbError::NotFound`].
    pub async fn user_by_id(&self, id: i64) -> DbResult<UserRow> {
        let sql = "SELECT id, email, username, password_hash, is_active, created_at FROM users WHERE id = $1";
        on_pool!(self, |pool| sqlx::query_as::<_, UserRow>(sql).bind(id).fetch_optional(pool).await)?
            .ok_or(DbError::NotFound)
    }

    /// Stores a new refresh token of session `family`.
    pub async fn insert_session(
        &self,
        user_id: i64,
        family: &str,
        kind: SessionKind,
        token_hash: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> DbResult<()> {
        let sql = "INSERT INTO sessions (user_id, family, kind, refresh_token_hash, expires_at, created_at) \
                   VALUES ($1, $2, $3, $4, $5, $6)";
        on_pool!(self, |pool| sqlx::query(sql)
            .bind(user_id)
            .bind(family)
            .bind(kind.as_str())
            .bind(token_hash)
            .bind(expires_at)
            .bind(now)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// The session row holding this refresh-token hash.
    pub async fn session_by_hash(&self, token_hash: &str) -> DbResult<Option<SessionRow>> {
        let sql = "SELECT id, user_id, family, kind, rotated_at, revoked_at, expires_at \
                   FROM sessions WHERE refresh_token_hash = $1";
        Ok(on_pool!(self, |pool| sqlx::query_as::<_, SessionRow>(sql).bind(token_hash).fetch_optional(pool).await)?)
    }

    /// Marks a token as exchanged. False when it was already rotated or revoked
    /// (a concurrent or repeated use), so exactly one exchange wins.
    pub async fn mark_rotated(&self, id: i64, now: DateTime<Utc>) -> DbResult<bool> {
        let sql = "UPDATE sessions SET rotated_at = $1 WHERE id = $2 AND rotated_at IS NULL AND revoked_at IS NULL";
        let affected = on_pool!(self, |pool| sqlx::query(sql)
            .bind(now)
            .bind(id)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(affected == 1)
    }

    /// Revokes every token of session `family`.
    pub async fn revoke_session(&self, family: &str, now: DateTime<Utc>) -> DbResult<()> {
        let sql = "UPDATE sessions SET revoked_at = $1 WHERE family = $2 AND revoked_at IS NULL";
        on_pool!(self, |pool| sqlx::query(sql)
            .bind(now)
            .bind(family)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// Whether session `family` of `user_id` exists and was not revoked.
    pub async fn session_is_active(&self, family: &str, user_id: i64) -> DbResult<bool> {
        let sql = "SELECT COUNT(*) FROM sessions WHERE family = $1 AND user_id = $2 AND revoked_at IS NULL";
        let (count,): (i64,) =
            on_pool!(self, |pool| sqlx::query_as(sql).bind(family).bind(user_id).fetch_one(pool).await)?;
        Ok(count > 0)
    }

    /// Stores a new API key (only its hash) and returns the row.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_api_key(
        &self,
        user_id: i64,
        name: &str,
        key_hash: &str,
        key_prefix: &str,
        scopes: &str,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> DbResult<ApiKeyRow> {
        let sql = "INSERT INTO api_keys (user_id, name, key_hash, key_prefix, scopes, expires_at, created_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7) \
                   RETURNING id, user_id, name, key_prefix, scopes, expires_at, last_used_at, revoked_at, created_at";
        Ok(on_pool!(self, |pool| sqlx::query_as::<_, ApiKeyRow>(sql)
            .bind(user_id)
            .bind(name)
            .bind(key_hash)
            .bind(key_prefix)
            .bind(scopes)
            .bind(expires_at)
            .bind(now)
            .fetch_one(pool)
            .await)?)
    }

    /// Every API key of `user_id`, newest first.
    pub async fn api_keys_of(&self, user_id: i64) -> DbResult<Vec<ApiKeyRow>> {
        let sql = "SELECT id, user_id, name, key_prefix, scopes, expires_at, last_used_at, revoked_at, created_at \
                   FROM api_keys WHERE user_id = $1 ORDER BY id DESC";
        Ok(on_pool!(self, |pool| sqlx::query_as::<_, ApiKeyRow>(sql).bind(user_id).fetch_all(pool).await)?)
    }

    /// The key with this hash and its owner's status.
    pub async fn api_key_by_hash(&self, key_hash: &str) -> DbResult<Option<KeyLookup>> {
        let sql = "SELECT k.id, k.user_id, k.scopes, k.expires_at, k.revoked_at, u.is_active AS user_active \
                   FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.key_hash = $1";
        Ok(on_pool!(self, |pool| sqlx::query_as::<_, KeyLookup>(sql).bind(key_hash).fetch_optional(pool).await)?)
    }

    /// Revokes key `id` of `user_id` (idempotent); [`DbError::NotFound`] if it is not theirs.
    pub async fn revoke_api_key(&self, user_id: i64, id: i64, now: DateTime<Utc>) -> DbResult<()> {
        let sql = "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND user_id = $3";
        let affected = on_pool!(self, |pool| sqlx::query(sql)
            .bind(now)
            .bind(id)
            .bind(user_id)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        if affected == 0 { Err(DbError::NotFound) } else { Ok(()) }
    }

    /// Writes buffered `last_used_at` times in one transaction (never moving one backwards).
    pub async fn touch_api_keys(&self, used: &[(i64, DateTime<Utc>)]) -> DbResult<()> {
        let sql = "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)";
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            for (id, at) in used {
                sqlx::query(sql).bind(*at).bind(*id).execute(&mut *tx).await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    /// Adds a batch of usage to `day`'s totals in one transaction; rows of
    /// unknown users are skipped. Returns how many rows were applied.
    pub async fn add_usage(&self, day: NaiveDate, batch: &[UsageIncrement]) -> DbResult<u64> {
        let sql = "INSERT INTO usage_records (user_id, day, operation, requests, bytes_in, bytes_out) \
                   SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM users WHERE id = $1) \
                   ON CONFLICT (user_id, day, operation) DO UPDATE SET \
                   requests = usage_records.requests + excluded.requests, \
                   bytes_in = usage_records.bytes_in + excluded.bytes_in, \
                   bytes_out = usage_records.bytes_out + excluded.bytes_out";
        let applied = on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let mut applied = 0;
            for row in batch {
                applied += sqlx::query(sql)
                    .bind(row.user_id)
                    .bind(day)
                    .bind(&row.operation)
                    .bind(row.requests)
                    .bind(row.bytes_in)
                    .bind(row.bytes_out)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            tx.commit().await.map(|()| applied)
        })?;
        Ok(applied)
    }

    /// Usage rows of `user_id` from `since` (inclusive), newest day first.
    pub async fn usage_since(&self, user_id: i64, since: NaiveDate) -> DbResult<Vec<UsageRow>> {
        let sql = "SELECT day, operation, requests, bytes_in, bytes_out FROM usage_records \
                   WHERE user_id = $1 AND day >= $2 ORDER BY day DESC, operation";
        Ok(on_pool!(self, |pool| sqlx::query_as::<_, UsageRow>(sql).bind(user_id).bind(since).fetch_all(pool).await)?)
    }

    /// Numbers of accounts and of unrevoked API keys, for `/metrics`.
    pub async fn counts(&self) -> DbResult<(i64, i64)> {
        let users = "SELECT COUNT(*) FROM users";
        let keys = "SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL";
        let (users,): (i64,) = on_pool!(self, |pool| sqlx::query_as(users).fetch_one(pool).await)?;
        let (keys,): (i64,) = on_pool!(self, |pool| sqlx::query_as(keys).fetch_one(pool).await)?;
        Ok((users, keys))
    }
}
