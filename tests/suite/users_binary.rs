//! `ydht serve users` as a real process: start-up with the embedded SQLite
//! default (migrations applied, secrets generated), PostgreSQL via
//! DATABASE_URL, clean SIGTERM shutdown, and one-line errors for bad databases.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the child process when the test ends, however it ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn ydht(data_dir: &Path, port: u16, database_url: Option<&str>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ydht"));
    command
        .args(["serve", "users", "--port", &port.to_string()])
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("DATABASE_URL")
        .env_remove("JWT_SECRET")
        .env_remove("YDHT_CLUSTER_SECRET")
        .env_remove("USERMANAGER_PORT")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(url) = database_url {
        command.env("DATABASE_URL", url);
    }
    command
}

async fn wait_healthy(child: &mut Child, base: &str) {
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
            panic!("ydht serve users exited with {status}: {stderr}");
        }
        if let Ok(response) = client.get(format!("{base}/health")).send().await {
            assert_eq!(response.status(), 200);
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body, serde_json::json!({"status": "healthy", "service": "users"}));
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "ydht serve users did not become healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Signs up and logs in through the real process.
async fn sign_up_and_log_in(base: &str) {
    let client = reqwest::Client::new();
    let body = serde_json::json!({"email": "bin@example.com", "username": "bin", "password": "password-123"});
    let response = client.post(format!("{base}/signup")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let login = serde_json::json!({"email": "bin@example.com", "password": "password-123"});
    let response = client.post(format!("{base}/login")).json(&login).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

/// Sends SIGTERM and expects a clean exit 0 within the drain deadline.
fn terminate(guard: &mut Guard) -> String {
    let pid = guard.0.id() as i32;
    // SAFETY: signalling our own child process by its pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    guard.0.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(status.success(), "exit status {status}: {stderr}");
    stderr
}

#[tokio::test]
async fn serves_on_embedded_sqlite_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut guard = Guard(ydht(dir.path(), port, None).spawn().unwrap());
    wait_healthy(&mut guard.0, &base).await;
    sign_up_and_log_in(&base).await;

    let stderr = terminate(&mut guard);
    assert!(stderr.contains("migrations applied"), "{stderr}");
    assert!(!stderr.contains("password-123"), "secrets never logged");

    // The default database is <data-dir>/users.db, migrated, holding the account.
    let db = dir.path().join("users.db");
    assert!(db.exists());
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display())).await.unwrap();
    let (migrations,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM _sqlx_migrations WHERE success").fetch_one(&pool).await.unwrap();
    assert!(migrations >= 1);
    let (users,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users").fetch_one(&pool).await.unwrap();
    assert_eq!(users, 1);
    pool.close().await;

    // The JWT secret was generated once into the data dir with mode 0600.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("jwt.secret")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn serves_on_postgres_from_database_url() {
    let Ok(admin) = std::env::var("YDHT_TEST_POSTGRES_URL") else {
        println!("SKIPPED serves_on_postgres_from_database_url: YDHT_TEST_POSTGRES_URL is not set");
        eprintln!("SKIPPED serves_on_postgres_from_database_url: YDHT_TEST_POSTGRES_URL is not set");
        return;
    };
    use sqlx::Connection;
    let schema = format!("ydht_test_{}", ydht::config::random_hex(8));
    let mut connection = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&mut connection).await.unwrap();
    let separator = if admin.contains('?') { '&' } else { '?' };
    let url = format!("{admin}{separator}options[search_path]={schema}");

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut guard = Guard(ydht(dir.path(), port, Some(&url)).spawn().unwrap());
    wait_healthy(&mut guard.0, &base).await;
    sign_up_and_log_in(&base).await;
    terminate(&mut guard);

    let (users,): (i64,) =
        sqlx::query_as(&format!("SELECT COUNT(*) FROM {schema}.users")).fetch_one(&mut connection).await.unwrap();
    assert!(!dir.path().join("users.db").exists(), "PostgreSQL was used, not the SQLite default");
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE")).execute(&mut connection).await.unwrap();
    assert_eq!(users, 1);
}

/// Runs `ydht serve users` expecting a start-up failure; returns (exit code, stderr).
fn failing_start(data_dir: &Path, database_url: &str) -> (i32, String) {
    let mut guard = Guard(ydht(data_dir, free_port(), Some(database_url)).env("RUST_LOG", "off").spawn().unwrap());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "start-up with a bad database did not fail");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    guard.0.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    (status.code().unwrap_or(-1), stderr)
}

#[track_caller]
fn assert_one_line_naming_database_url(stderr: &str) {
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("error: ") && stderr.contains("DATABASE_URL"), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
}

#[test]
fn unreachable_database_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let closed = free_port();
    let (code, stderr) = failing_start(dir.path(), &format!("postgres://ydht:secret-pw@127.0.0.1:{closed}/ydht"));
    assert_eq!(code, 4, "{stderr}");
    assert_one_line_naming_database_url(&stderr);
    assert!(!stderr.contains("secret-pw"), "the password is redacted: {stderr}");
}

#[test]
fn unsupported_database_url_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = failing_start(dir.path(), "mysql://localhost/ydht");
    assert_eq!(code, 2, "{stderr}");
    assert_one_line_naming_database_url(&stderr);
}

#[test]
fn corrupt_sqlite_database_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.db");
    std::fs::write(&file, vec![0x42u8; 8192]).unwrap();
    let (code, stderr) = failing_start(dir.path(), &format!("sqlite://{}", file.display()));
    assert_ne!(code, 0, "{stderr}");
    assert_one_line_naming_database_url(&stderr);
}

#[tokio::test]
async fn failing_migration_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("taken.db");
    let url = format!("sqlite://{}?mode=rwc", file.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE users (something_else TEXT)").execute(&pool).await.unwrap();
    pool.close().await;
    let (code, stderr) = failing_start(dir.path(), &format!("sqlite://{}", file.display()));
    assert_eq!(code, 4, "{stderr}");
    assert_one_line_naming_database_url(&stderr);
    assert!(stderr.contains("migration failed"), "{stderr}");
}
