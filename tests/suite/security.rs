//! Secrets hygiene and security headers, against a real `ydht serve all`:
//! a full flow at RUST_LOG=debug must never put the password, an access token,
//! a refresh token, an API key or the cluster secret into the logs or into an
//! error body; and every page and API answer carries the security headers.

use crate::common;

use std::time::Duration;

use common::{Service, create_key, signup_and_login, start_cluster};
use serde_json::{Value, json};

const PASSWORD: &str = "securepass123";

/// Starts `ydht serve all` at RUST_LOG=debug with its stderr in `<dir>/cluster.log`.
fn logged_cluster(dir: &tempfile::TempDir) -> (Service, std::path::PathBuf) {
    let data = dir.path().join("data");
    let log = dir.path().join("cluster.log");
    let data = data.to_str().unwrap();
    let env = [
        ("YDHT_DATA_DIR", data),
        ("GATEWAY_PORT", "0"),
        ("USERMANAGER_PORT", "0"),
        ("DHTNODE_PORT", "0"),
        ("REPLICATOR_PORT", "0"),
        ("RUST_LOG", "debug"),
    ];
    let expect = ["users", "node-1", "node-2", "node-3", "replicator", "gateway"];
    (Service::spawn_logging_to(&["serve", "all"], &env, &expect, &log), log)
}

/// Records the bodies of error answers (4xx/5xx) for the final scan.
#[derive(Default)]
struct ErrorBodies(Vec<String>);

impl ErrorBodies {
    async fn send(&mut self, request: reqwest::RequestBuilder) -> (u16, String) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = format!("{:?}", response.headers());
        let body = response.text().await.unwrap();
        if status >= 400 {
            self.0.push(format!("{status} {headers} {body}"));
        }
        (status, body)
    }
}

#[tokio::test]
async fn secrets_never_appear_in_logs_or_error_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cluster, log) = logged_cluster(&dir);
    let (users, gateway) = (cluster.url("users"), cluster.url("gateway"));
    let node = cluster.url("node-1");
    let secret = std::fs::read_to_string(dir.path().join("data/cluster.secret")).unwrap().trim().to_string();
    let http = common::http();
    let mut errors = ErrorBodies::default();

    // Signup, login, API key, writes and reads: the happy path.
    let account = signup_and_login(&http, &users, "hygiene").await;
    let login: Value = http
        .post(format!("{users}/login"))
        .json(&json!({"email": "hygiene@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refresh_token = login["refresh_token"].as_str().expect("refresh_token").to_string();
    let (_, api_key) = create_key(&http, &users, &account, &["read", "write"]).await;
    let put = http.put(format!("{gateway}/v1/kv/doc")).header("x-api-key", &api_key).body("value");
    assert_eq!(errors.send(put).await.0, 200);
    let get = http.get(format!("{gateway}/v1/kv/doc")).header("x-api-key", &api_key);
    assert_eq!(errors.send(get).await, (200, "value".to_string()));
    let (status, body) =
        errors.send(http.post(format!("{users}/refresh")).json(&json!({"refresh_token": refresh_token}))).await;
    assert_eq!(status, 200, "{body}");
    let cluster_view = http.get(format!("{gateway}/cluster")).header("x-cluster-secret", &secret);
    assert_eq!(errors.send(cluster_view).await.0, 200);

    // Near misses of every secret: each contains the real one, so an echo of the input would show it.
    let wrong_password = format!("{PASSWORD}!");
    let wrong_key = format!("{api_key}x");
    let wrong_token = format!("{}x", account.token);
    let wrong_refresh = format!("{refresh_token}x");
    let wrong_secret = format!("{secret}x");
    let attempts = [
        http.post(format!("{users}/login")).json(&json!({"email": "hygiene@example.com", "password": wrong_password})),
        http.post(format!("{users}/signup"))
            .json(&json!({"email": "hygiene@example.com", "username": "hygiene", "password": wrong_password})),
        http.post(format!("{users}/signup"))
            .json(&json!({"email": "x@example.com", "username": "x", "password": "short"})),
        http.get(format!("{gateway}/v1/kv/doc")).header("x-api-key", &wrong_key),
        http.get(format!("{gateway}/v1/kv/missing")).header("x-api-key", &api_key),
        http.put(format!("{gateway}/v1/kv/doc")).header("x-api-key", &api_key).header("x-consistency", "bogus"),
        http.get(format!("{users}/me")).bearer_auth(&wrong_token),
        http.get(format!("{users}/apikeys")).bearer_auth(&wrong_token),
        http.post(format!("{users}/refresh")).json(&json!({"refresh_token": wrong_refresh})),
        // The refresh token was rotated above: presenting it again is a reuse.
        http.post(format!("{users}/refresh")).json(&json!({"refresh_token": refresh_token})),
        http.post(format!("{users}/validate-key"))
            .header("x-cluster-secret", &wrong_secret)
            .json(&json!({"key": api_key})),
        http.post(format!("{users}/validate-key")).header("x-cluster-secret", &secret).json(&json!({"key": wrong_key})),
        http.get(format!("{gateway}/cluster")).header("x-cluster-secret", &wrong_secret),
        http.get(format!("{node}/store/x")).header("x-cluster-secret", &wrong_secret),
    ];
    for request in attempts {
        let (status, body) = errors.send(request).await;
        assert!((400..500).contains(&status), "{status} {body}");
    }

    // Stop the cluster so every log line is written, then scan.
    assert!(cluster.terminate().is_some_and(|status| status.success()), "serve all did not stop cleanly");
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("DEBUG"), "the cluster did not log at debug level:\n{logs}");
    let secrets = [
        ("password", PASSWORD.to_string()),
        ("access token", account.token.clone()),
        ("refresh token", refresh_token.clone()),
        ("API key", api_key.clone()),
        ("cluster secret", secret.clone()),
    ];
    for (name, value) in &secrets {
        assert!(!logs.contains(value.as_str()), "the {name} appears in the logs");
        for body in &errors.0 {
            assert!(!body.contains(value.as_str()), "the {name} appears in an error answer: {body}");
        }
    }
    // The signature half of the JWT alone is a secret too.
    let signature = account.token.rsplit('.').next().unwrap();
    assert!(!logs.contains(signature), "the access token's signature appears in the logs");
    assert!(errors.0.len() >= 14, "expected every near miss to be refused: {}", errors.0.len());
}

fn assert_secure_headers(what: &str, response: &reqwest::Response) {
    let header = |name: &str| response.headers().get(name).and_then(|value| value.to_str().ok()).unwrap_or_default();
    let csp = header("content-security-policy");
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"), "{what}: CSP {csp:?}");
    assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(header("x-frame-options"), "DENY", "{what}");
    assert!(!header("referrer-policy").is_empty(), "{what}: no Referrer-Policy");
}

#[tokio::test]
async fn every_page_and_api_answer_sends_security_headers() {
    let cluster = start_cluster();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let account = signup_and_login(&http, &cluster.users, "headers").await;
    let (_, key) = create_key(&http, &cluster.users, &account, &["read", "write"]).await;
    let (users, gateway) = (&cluster.users, &cluster.gateway);
    let requests = [
        ("users /", http.get(format!("{users}/"))),
        ("users /signup page", http.get(format!("{users}/signup"))),
        ("users /signin page", http.get(format!("{users}/signin"))),
        ("users /dashboard (redirect)", http.get(format!("{users}/dashboard"))),
        ("users /dashboard/keys (redirect)", http.get(format!("{users}/dashboard/keys"))),
        ("users stylesheet", http.get(format!("{users}/static/style.css"))),
        ("users 404", http.get(format!("{users}/nowhere"))),
        ("users /health", http.get(format!("{users}/health"))),
        ("users /me", http.get(format!("{users}/me")).bearer_auth(&account.token)),
        ("users /me 401", http.get(format!("{users}/me"))),
        ("users /login 400", http.post(format!("{users}/login")).json(&json!({}))),
        ("gateway /health", http.get(format!("{gateway}/health"))),
        ("gateway 404", http.get(format!("{gateway}/nowhere"))),
        ("gateway 401", http.get(format!("{gateway}/v1/kv/a"))),
        ("gateway put", http.put(format!("{gateway}/v1/kv/page")).header("x-api-key", &key).body("<script>1</script>")),
        ("gateway list", http.get(format!("{gateway}/v1/kv")).header("x-api-key", &key)),
        ("gateway 404 key", http.get(format!("{gateway}/v1/kv/none")).header("x-api-key", &key)),
    ];
    for (what, request) in requests {
        let response = request.send().await.unwrap();
        assert_secure_headers(what, &response);
    }
    // A tenant's value served as HTML is still inert: sandboxed, not sniffed, not frameable.
    let response = http
        .put(format!("{gateway}/v1/kv/html"))
        .header("x-api-key", &key)
        .header("content-type", "text/html")
        .body("<script>alert(1)</script>")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = http.get(format!("{gateway}/v1/kv/html")).header("x-api-key", &key).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_secure_headers("gateway html value", &response);
    let csp = response.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("sandbox"), "{csp}");
}

/// Every directory and file `serve all` creates in its data dir (users.db and its WAL,
/// the nodes' WAL segments, snapshots and cursors, the replicator queue, secrets) is
/// private to its owner, whatever the umask: dirs 0700, files 0600.
#[tokio::test]
async fn data_files_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: umask only sets the process's file-creation mask; 022 is the usual default,
    // which leaves created files world-readable unless ydht asks for a mode.
    unsafe { libc::umask(0o022) };
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    let cluster = common::start_cluster_with(&[("YDHT_DATA_DIR", data.to_str().unwrap())]);
    let client = common::http();
    let account = signup_and_login(&client, &cluster.users, "umask").await;
    let (_, key) = create_key(&client, &cluster.users, &account, &["read", "write"]).await;
    for consistency in ["eventual", "strong"] {
        let response = client
            .put(format!("{}/v1/kv/private-{consistency}", cluster.gateway))
            .header("X-API-Key", &key)
            .header("X-Consistency", consistency)
            .body("secret value")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    let mut pending = vec![data.clone()];
    let (mut dirs, mut files, mut exposed) = (0, 0, Vec::new());
    while let Some(path) = pending.pop() {
        let metadata = std::fs::symlink_metadata(&path).unwrap();
        let mode = metadata.permissions().mode() & 0o777;
        if metadata.is_dir() {
            dirs += 1;
            if mode != 0o700 {
                exposed.push(format!("{} is a directory with mode {mode:o}", path.display()));
            }
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
        } else {
            files += 1;
            if mode != 0o600 {
                exposed.push(format!("{} has mode {mode:o}", path.display()));
            }
        }
    }
    assert!(data.join("users.db").exists() && files >= 8 && dirs >= 4, "{files} files, {dirs} dirs");
    assert!(exposed.is_empty(), "readable by others:\n{}", exposed.join("\n"));
}
