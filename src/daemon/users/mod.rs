//! `ydht serve users`: accounts, JWT sessions, API keys, usage records and
//! the web pages, on SQLite (default `<data-dir>/users.db`) or PostgreSQL.
//!
//! - [`db`]: the two database backends behind one type, migrations.
//! - [`routes`]: the JSON API; [`web`]: the server-rendered pages.
//! - [`accounts`]: what both do (sign-up, login, sessions, keys, usage).
//! - [`membership`]: the cluster membership (control plane of online membership changes).
//! - [`extract`]: Bearer / web-session / CSRF extractors.
//! - [`state`], [`throttle`], [`validate`]: shared state, login and sign-up throttles, input rules.
//! - [`hashing`]: password hashing bounded to about one hash per core.

pub mod accounts;
pub mod browser;
pub mod db;
pub mod extract;
pub mod hashing;
pub mod membership;
pub mod routes;
pub mod state;
pub mod throttle;
pub mod validate;
pub mod web;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::Request;
use axum::handler::Handler;
use axum::http::header;
use axum::response::Response;
use axum::routing::{delete, get, post};
use clap::Args;
use tokio::net::TcpListener;

use self::db::Db;
use self::hashing::PasswordHasher;
use self::state::{Shared, UsersState};
use self::throttle::{DEFAULT_SIGNUPS_PER_HOUR, LoginThrottle, SignupLimit, ThrottlePolicy};
use crate::auth::cluster::ClusterSecret;
use crate::auth::jwt::{DEFAULT_LIFETIME, JWT_SECRET_FILE, JwtKeys};
use crate::config::{Secret, ServerArgs, load_or_generate_secret};
use crate::error::Exit;
use crate::shutdown::Shutdown;

/// Default port of the users service.
pub const DEFAULT_PORT: u16 = 8081;
/// File name of the default SQLite database inside the data dir.
pub const SQLITE_FILE: &str = "users.db";
/// Largest request body of the public API and forms.
const MAX_BODY: usize = 64 * 1024;
/// Largest `POST /usage` body.
pub const MAX_USAGE_BODY: usize = 2 * 1024 * 1024;

/// Flags of `ydht serve users`.
#[derive(Args, Clone)]
pub struct UsersArgs {
    /// Shared server flags.
    #[command(flatten)]
    pub server: ServerArgs,

    /// Port to listen on
    #[arg(long, env = "USERMANAGER_PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,

    /// Database: postgres://user:pass@host:5432/db or sqlite:///path/users.db [default: <data-dir>/users.db]
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Secret signing access tokens (HS256) [default: generated once into <data-dir>/jwt.secret]
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Access-token lifetime, e.g. 15m, 1h, 24h
    #[arg(long, env = "JWT_EXPIRATION", default_value = "1h")]
    pub jwt_expiration: String,

    /// Mark cookies `Secure` (set when the pages are served over HTTPS)
    #[arg(long, env = "YDHT_SECURE_COOKIES")]
    pub secure_cookies: bool,

    /// Base URL of the gateway, for the dashboard's key browser
    #[arg(long, env = "YDHT_GATEWAY_URL", default_value = browser::DEFAULT_GATEWAY_URL)]
    pub gateway_url: String,

    /// Sign-ups allowed per client address (IPv6: per /64) and hour; 0 = no limit
    #[arg(long, env = "YDHT_SIGNUPS_PER_HOUR", default_value_t = DEFAULT_SIGNUPS_PER_HOUR)]
    pub signups_per_hour: usize,
}

impl std::fmt::Debug for UsersArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsersArgs")
            .field("server", &self.server)
            .field("port", &self.port)
            .field("database_url", &self.database_url.as_deref().map(db::redact_url))
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "<hidden>"))
            .field("jwt_expiration", &self.jwt_expiration)
            .field("secure_cookies", &self.secure_cookies)
            .field("gateway_url", &self.gateway_url)
            .field("signups_per_hour", &self.signups_per_hour)
            .finish()
    }
}

/// Where the accounts live.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// The embedded SQLite file.
    SqliteFile(PathBuf),
    /// A `postgres://…` or `sqlite:…` URL.
    Url(String),
}

impl Database {
    /// The connection URL.
    pub fn url(&self) -> String {
        match self {
            Database::SqliteFile(path) => format!("sqlite://{}", path.display()),
            Database::Url(url) => url.clone(),
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::SqliteFile(path) => f.debug_tuple("SqliteFile").field(path).finish(),
            Database::Url(url) => f.debug_tuple("Url").field(&db::redact_url(url)).finish(),
        }
    }
}

/// Resolved settings of the users service (no environment reading inside).
#[derive(Debug, Clone)]
pub struct UsersConfig {
    /// The database.
    pub database: Database,
    /// Secret of the access tokens.
    pub jwt_secret: Secret,
    /// Access-token lifetime.
    pub jwt_lifetime: Duration,
    /// Secret guarding `/validate-key` and `/usage`.
    pub cluster_secret: Secret,
    /// Failed-login limits.
    pub throttle: ThrottlePolicy,
    /// Sign-ups allowed per client address and hour (0: no limit).
    pub signups_per_hour: usize,
    /// Password hashes run at once (about one per core).
    pub hashing_slots: usize,
    /// Longest wait for a hashing slot before answering 503.
    pub hashing_queue_deadline: Duration,
    /// How often buffered `last_used_at` times are written.
    pub last_used_flush: Duration,
    /// Whether cookies carry `Secure`.
    pub secure_cookies: bool,
    /// Base URL of the gateway (the key browser lists, shows and deletes keys through it).
    pub gateway_url: String,
    /// Serve HTTPS with this certificate (`--tls-cert` / `--tls-key`); plain HTTP when `None`.
    pub tls: Option<crate::tls::TlsConfig>,
}

impl UsersConfig {
    /// Settings for tests and `serve all`: the given database and secrets, defaults otherwise.
    pub fn new(database: Database, jwt_secret: Secret, cluster_secret: Secret) -> Self {
        Self {
            database,
            jwt_secret,
            jwt_lifetime: DEFAULT_LIFETIME,
            cluster_secret,
            throttle: ThrottlePolicy::default(),
            signups_per_hour: DEFAULT_SIGNUPS_PER_HOUR,
            hashing_slots: hashing::default_slots(),
            hashing_queue_deadline: hashing::DEFAULT_QUEUE_DEADLINE,
            last_used_flush: Duration::from_secs(5),
            secure_cookies: false,
            gateway_url: browser::DEFAULT_GATEWAY_URL.to_string(),
            tls: None,
        }
    }

    /// The same settings with another access-token lifetime.
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.jwt_lifetime = lifetime;
        self
    }
}

impl UsersArgs {
    /// Resolves data dir, secrets, database and lifetimes.
    pub fn into_config(self) -> anyhow::Result<UsersConfig> {
        let data_dir = self.server.data_dir()?;
        let cluster_secret = self.server.cluster_secret(&data_dir)?;
        let jwt_secret = match self.jwt_secret {
            Some(secret) if !secret.is_empty() => Secret::new(secret),
            _ => load_or_generate_secret(&data_dir, JWT_SECRET_FILE)?,
        };
        let jwt_lifetime = crate::duration::parse(&self.jwt_expiration)
            .map_err(|error| Exit::usage(format!("invalid --jwt-expiration / JWT_EXPIRATION: {error}")))?;
        let database = match self.database_url {
            Some(url) if !url.trim().is_empty() => Database::Url(url.trim().to_string()),
            _ => Database::SqliteFile(data_dir.join(SQLITE_FILE)),
        };
        Ok(UsersConfig {
            secure_cookies: self.secure_cookies,
            signups_per_hour: self.signups_per_hour,
            gateway_url: self.gateway_url.trim().trim_end_matches('/').to_string(),
            tls: self.server.tls()?,
            ..UsersConfig::new(database, jwt_secret, cluster_secret).with_lifetime(jwt_lifetime)
        })
    }

    /// `ydht serve users`: bind, serve until SIGINT/SIGTERM.
    pub async fn run(self) -> anyhow::Result<()> {
        let host = self.server.host.clone();
        let port = self.port;
        let config = self.into_config()?;
        let listener = crate::server::bind(&host, port, "--port / USERMANAGER_PORT").await?;
        crate::server::announce_with("users", listener.local_addr()?, config.tls.as_ref());
        let shutdown = Shutdown::new();
        shutdown.trigger_on_signals();
        serve(config, listener, shutdown).await
    }
}

/// Connects to the database (applying migrations), then serves on `listener`
/// until `shutdown`; buffered `last_used_at` times are written before returning.
pub async fn serve(config: UsersConfig, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let url = config.database.url();
    tracing::info!(database = %db::redact_url(&url), "users: connecting to the database");
    let db = Db::connect(&url).await?;
    tracing::info!(backend = db.backend(), "users: migrations applied");
    let state = UsersState(Arc::new(Shared {
        db: db.clone(),
        jwt: JwtKeys::new(&config.jwt_secret, config.jwt_lifetime),
        cluster_secret: ClusterSecret::new(config.cluster_secret.clone()),
        throttle: LoginThrottle::new(config.throttle),
        signups: SignupLimit::new(config.signups_per_hour),
        hasher: PasswordHasher::new(config.hashing_slots, config.hashing_queue_deadline),
        last_used: Default::default(),
        flash: Default::default(),
        counters: Default::default(),
        secure_cookies: config.secure_cookies,
        gateway: browser::GatewayLink::new(config.gateway_url.clone(), config.cluster_secret.clone()),
        membership: Default::default(),
    }));
    let flusher = tokio::spawn(flush_last_used(state.clone(), config.last_used_flush, shutdown.clone()));
    let follower = tokio::spawn(membership::follow(db.clone(), state.membership.clone(), shutdown.clone()));
    if let Ok(address) = listener.local_addr() {
        let scheme = crate::tls::scheme(config.tls.as_ref());
        tracing::info!(%address, "users: listening on {scheme}://{address}");
    }
    let served =
        crate::server::serve_with("users", listener, app(state.clone()), shutdown.clone(), config.tls.clone()).await;
    shutdown.trigger();
    if let Err(error) = flusher.await {
        tracing::warn!(%error, "users: last-used flusher failed");
    }
    let _ = follower.await;
    if let Err(error) = state.last_used.flush(&state.db).await {
        tracing::warn!(%error, "users: could not write last-used times at shutdown");
    }
    db.close().await;
    tracing::info!("users: stopped");
    served
}

/// `POST /signup`: the web form when the body is URL-encoded, else the JSON API.
async fn signup(axum::extract::State(state): axum::extract::State<UsersState>, request: Request) -> Response {
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        Handler::call(web::signup_submit, request, state).await
    } else {
        Handler::call(routes::signup, request, state).await
    }
}

/// 405 as a JSON error, like every other error of the API.
async fn method_not_allowed() -> crate::error::ApiError {
    crate::error::ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this path; see the users service section of the README",
    )
}

/// Writes buffered `last_used_at` times every `every` until shutdown.
async fn flush_last_used(state: UsersState, every: Duration, shutdown: Shutdown) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.wait() => return,
        }
        if let Err(error) = state.last_used.flush(&state.db).await {
            tracing::warn!(%error, "users: could not write last-used times; will retry");
        }
    }
}

/// The OpenAPI 3 document of the JSON API, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The router: JSON API, internal endpoints, web pages and the stylesheet.
pub fn app(state: UsersState) -> Router {
    Router::new()
        .route("/signup", post(signup).get(web::signup_page))
        .route("/login", post(routes::login))
        .route("/refresh", post(routes::refresh))
        .route("/logout", post(routes::logout))
        .route("/me", get(routes::me))
        .route("/apikeys", post(routes::create_key).get(routes::list_keys))
        .route("/apikeys/{id}", delete(routes::revoke_key))
        .route("/usage", get(routes::usage).post(routes::record_usage))
        .route("/validate-key", post(routes::validate_key))
        .route("/membership", get(membership::get))
        .route("/membership/seed", post(membership::seed))
        .route("/membership/join", post(membership::join))
        .route("/membership/leave", post(membership::leave))
        .route("/membership/progress", post(membership::progress))
        .route("/health", get(routes::health))
        .route("/openapi.json", get(|| async { crate::server::openapi_response(OPENAPI) }))
        .route("/metrics", get(routes::metrics))
        .merge(web::router())
        .fallback(web::not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(web::security_headers))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &std::path::Path) -> UsersArgs {
        UsersArgs {
            server: ServerArgs {
                data_dir: Some(dir.to_path_buf()),
                host: "127.0.0.1".into(),
                cluster_secret: None,
                tls_cert: None,
                tls_key: None,
                log_format: Default::default(),
            },
            port: DEFAULT_PORT,
            database_url: None,
            jwt_secret: None,
            jwt_expiration: "1h".into(),
            secure_cookies: false,
            gateway_url: browser::DEFAULT_GATEWAY_URL.into(),
            signups_per_hour: DEFAULT_SIGNUPS_PER_HOUR,
        }
    }

    #[test]
    fn defaults_resolve_to_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let config = args(dir.path()).into_config().unwrap();
        assert_eq!(config.database, Database::SqliteFile(dir.path().join("users.db")));
        assert_eq!(config.jwt_lifetime, Duration::from_secs(3600));
        assert!(dir.path().join("jwt.secret").exists() && dir.path().join("cluster.secret").exists());
        let again = args(dir.path()).into_config().unwrap();
        assert_eq!(config.jwt_secret, again.jwt_secret, "the generated secret is kept");
    }

    #[test]
    fn bad_expiration_is_a_usage_error_and_debug_hides_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let mut bad = args(dir.path());
        bad.jwt_expiration = "soon".into();
        let error = bad.into_config().unwrap_err();
        assert_eq!(crate::error::exit_code_of(&error), crate::error::exit::USAGE);
        assert!(error.to_string().contains("JWT_EXPIRATION"), "{error}");

        let mut given = args(dir.path());
        given.jwt_secret = Some("jwt-hunter2".into());
        given.database_url = Some("postgres://ydht:pg-hunter2@db:5432/ydht".into());
        let shown = format!("{given:?} {:?}", given.clone().into_config().unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("db:5432"), "{shown}");
    }
}
