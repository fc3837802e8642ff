//! Test harness of the users service: runs the same test body against SQLite
//! and PostgreSQL, each test in its own fresh database (a temp SQLite file, or
//! a new PostgreSQL schema that is dropped afterwards), with in-process
//! servers on 127.0.0.1:0 talked to over real HTTP.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use ydht::config::Secret;
use ydht::daemon::users::db::Db;
use ydht::daemon::users::{Database, UsersConfig, serve};
use ydht::shutdown::Shutdown;

/// Environment variable naming the PostgreSQL server for tests.
pub const POSTGRES_ENV: &str = "YDHT_TEST_POSTGRES_URL";

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh database for one test.
pub struct TestDb {
    /// The URL the service connects to.
    pub url: String,
    /// PostgreSQL: the admin URL and the schema to drop afterwards.
    schema: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl TestDb {
    /// A new empty database; `None` (after printing why) when PostgreSQL is not configured.
    pub async fn create(backend: Backend, test: &str) -> Option<TestDb> {
        let dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}", dir.path().join("users.db").display());
                Some(TestDb { url, schema: None, _dir: dir })
            }
            Backend::Postgres => {
                let Ok(admin) = std::env::var(POSTGRES_ENV) else {
                    println!("SKIPPED {test} on PostgreSQL: {POSTGRES_ENV} is not set");
                    eprintln!("SKIPPED {test} on PostgreSQL: {POSTGRES_ENV} is not set");
                    return None;
                };
                let schema = format!("ydht_test_{}", ydht::config::random_hex(8));
                admin_execute(&admin, &format!("CREATE SCHEMA {schema}")).await;
                let separator = if admin.contains('?') { '&' } else { '?' };
                let url = format!("{admin}{separator}options[search_path]={schema}");
                Some(TestDb { url, schema: Some((admin, schema)), _dir: dir })
            }
        }
    }

    /// Drops the PostgreSQL schema (SQLite files go with the temp dir).
    pub async fn destroy(self) {
        if let Some((admin, schema)) = &self.schema {
            admin_execute(admin, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
        }
    }
}

async fn admin_execute(admin_url: &str, sql: &str) {
    use sqlx::Connection;
    let mut connection = sqlx::PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|error| panic!("cannot connect to {POSTGRES_ENV}: {error}"));
    sqlx::query(sql).execute(&mut connection).await.unwrap_or_else(|error| panic!("{sql}: {error}"));
    let _ = connection.close().await;
}

/// A started server's shutdown handle and task.
type Running = (Shutdown, JoinHandle<anyhow::Result<()>>);

/// What a test body gets: the configuration and a way to start servers on it.
#[derive(Clone)]
pub struct Ctx {
    /// The backend under test.
    pub backend: Backend,
    /// The database URL.
    pub db_url: String,
    /// The configuration servers start with.
    pub config: UsersConfig,
    servers: Arc<Mutex<Vec<Running>>>,
}

/// A running in-process users service.
pub struct Server {
    /// `http://127.0.0.1:port`.
    pub url: String,
    /// HTTP client (no redirects followed, so tests see them).
    pub client: reqwest::Client,
    /// The cluster secret for internal endpoints.
    pub cluster_secret: String,
}

impl Ctx {
    /// Starts a users service on 127.0.0.1:0 and waits until it answers /health.
    pub async fn start(&self) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = Shutdown::new();
        let task = tokio::spawn(serve(self.config.clone(), listener, shutdown.clone()));
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let started = Instant::now();
        let mut task = Some(task);
        loop {
            if task.as_ref().unwrap().is_finished() {
                let result = task.take().unwrap().await.unwrap();
                panic!("users service stopped during start-up: {result:?}");
            }
            let probe = client.get(format!("{url}/health")).timeout(Duration::from_millis(500)).send().await;
            if probe.is_ok_and(|response| response.status() == StatusCode::OK) {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "users service did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.servers.lock().unwrap().push((shutdown.clone(), task.unwrap()));
        Server { url, client, cluster_secret: self.config.cluster_secret.expose().to_string() }
    }

    /// Stops every server started by this context and waits for them.
    pub async fn stop_all(&self) {
        let servers: Vec<_> = self.servers.lock().unwrap().drain(..).collect();
        for (shutdown, task) in servers {
            shutdown.trigger();
            task.await.expect("server task panicked").expect("server failed");
        }
    }

    /// A direct connection to the test database (for simulating time passing).
    pub async fn db(&self) -> Db {
        Db::connect(&self.db_url).await.expect("connect to the test database")
    }

    /// Moves the expiry of API key `id` into the past, as if its lifetime had run out.
    pub async fn expire_api_key(&self, id: i64) {
        let past = chrono::Utc::now() - chrono::Duration::minutes(1);
        let sql = "UPDATE api_keys SET expires_at = $1 WHERE id = $2";
        match self.db().await {
            Db::Sqlite(pool) => sqlx::query(sql).bind(past).bind(id).execute(&pool).await.map(|_| ()),
            Db::Postgres(pool) => sqlx::query(sql).bind(past).bind(id).execute(&pool).await.map(|_| ()),
        }
        .expect("update expiry");
    }
}

/// Runs `body` on `backend` with the default test configuration.
pub async fn run<F, Fut>(backend: Backend, test: &str, body: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    run_with(backend, test, |_| {}, body).await
}

/// Runs `body` on a fresh database of `backend`, with `tweak` applied to the
/// configuration; stops the servers and drops the database afterwards, also
/// when the body panics.
pub async fn run_with<F, Fut>(backend: Backend, test: &str, tweak: impl FnOnce(&mut UsersConfig), body: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(db) = TestDb::create(backend, test).await else { return };
    let mut config = UsersConfig::new(
        Database::Url(db.url.clone()),
        Secret::new(format!("jwt-{}", ydht::config::random_hex(16))),
        Secret::new(format!("cluster-{}", ydht::config::random_hex(16))),
    );
    config.last_used_flush = Duration::from_millis(100);
    tweak(&mut config);
    let ctx = Ctx { backend, db_url: db.url.clone(), config, servers: Arc::default() };
    let outcome = AssertUnwindSafe(body(ctx.clone())).catch_unwind().await;
    ctx.stop_all().await;
    db.destroy().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Generates `mod name { sqlite(), postgres() }` running `name(ctx)` on each backend.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    $crate::users_support::run($crate::users_support::Backend::Sqlite, stringify!($name), super::$name).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    $crate::users_support::run($crate::users_support::Backend::Postgres, stringify!($name), super::$name).await
                }
            }
        )*
    };
}

/// An HTTP answer: status, headers and body (JSON when it parses).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Answer {
    /// The `error` message of a JSON error body (panics when there is none).
    pub fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or_else(|| panic!("no JSON error in {} {:?}", self.status, self.text))
    }

    /// Header `name` as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

impl Server {
    /// Sends a request and collects the answer.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("request failed");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("read body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer { status, headers, text, json }
    }

    /// A request to `path`, with a Bearer token when given.
    pub fn request(&self, method: Method, path: &str, bearer: Option<&str>) -> reqwest::RequestBuilder {
        let request = self.client.request(method, format!("{}{path}", self.url));
        match bearer {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: Value, bearer: Option<&str>) -> Answer {
        self.send(self.request(Method::POST, path, bearer).json(&body)).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str, bearer: Option<&str>) -> Answer {
        self.send(self.request(Method::GET, path, bearer)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str, bearer: Option<&str>) -> Answer {
        self.send(self.request(Method::DELETE, path, bearer)).await
    }

    /// `POST path` with the cluster secret.
    pub async fn internal(&self, path: &str, body: Value) -> Answer {
        self.send(self.request(Method::POST, path, None).header("x-cluster-secret", &self.cluster_secret).json(&body))
            .await
    }

    /// Creates an account (asserting 201) and returns its JSON.
    pub async fn signup(&self, email: &str, username: &str, password: &str) -> Value {
        let answer =
            self.post("/signup", json!({"email": email, "username": username, "password": password}), None).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
        answer.json
    }

    /// Logs in (asserting 200) and returns the token pair JSON.
    pub async fn login(&self, email: &str, password: &str) -> Value {
        let answer = self.post("/login", json!({"email": email, "password": password}), None).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        answer.json
    }

    /// Signs up and logs in a new user; returns (user id, access token).
    pub async fn new_user(&self, name: &str) -> (i64, String) {
        let email = format!("{name}@example.com");
        let user = self.signup(&email, name, "password-123").await;
        let tokens = self.login(&email, "password-123").await;
        (user["id"].as_i64().unwrap(), tokens["access_token"].as_str().unwrap().to_string())
    }

    /// Creates an API key (asserting 201) and returns its JSON.
    pub async fn create_key(&self, token: &str, body: Value) -> Value {
        let answer = self.post("/apikeys", body, Some(token)).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
        answer.json
    }
}

/// Asserts a 4xx JSON error with the given status.
#[track_caller]
pub fn assert_error(answer: &Answer, status: StatusCode) {
    assert_eq!(answer.status, status, "body: {}", answer.text);
    assert!(!answer.error().is_empty());
}
