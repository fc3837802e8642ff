//! The web flow as a browser does it: a real headless Chromium (Debian's
//! `chromium` + `chromium-driver`, installed by `.ci/run`) signs up through the
//! form, signs in, creates an API key on the dashboard; the test reads the key
//! from the page and validates it through `/validate-key`. A screenshot of the
//! dashboard is kept at `<target dir>/web-flow.png`.
//!
//! ChromeDriver is driven over its W3C WebDriver HTTP API with reqwest (no
//! extra crate): a handful of JSON calls is all this flow needs.

use crate::users_support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use users_support::Backend;

/// The W3C key under which WebDriver returns element references.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Kills ChromeDriver (and with it the browser) when the test ends.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).flat_map(|dir| names.iter().map(move |name| dir.join(name))).find(|p| p.is_file())
}

/// A WebDriver session on a spawned ChromeDriver.
struct Browser {
    http: reqwest::Client,
    session: String,
    _driver: ChildGuard,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn launch() -> Browser {
        let driver = find_program(&["chromedriver"])
            .expect("chromedriver not found: install Debian's chromium and chromium-driver (.ci/run does)");
        let chromium = find_program(&["chromium", "chromium-browser"])
            .expect("chromium not found: install Debian's chromium and chromium-driver (.ci/run does)");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let guard = ChildGuard(child);
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let started = Instant::now();
        loop {
            if let Ok(response) = http.get(format!("{base}/status")).send().await {
                let status: Value = response.json().await.unwrap_or_default();
                if status["value"]["ready"] == true {
                    break;
                }
            }
            assert!(started.elapsed() < Duration::from_secs(30), "chromedriver did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--no-first-run".into(),
            "--window-size=1280,1600".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let response: Value =
            http.post(format!("{base}/session")).json(&capabilities).send().await.unwrap().json().await.unwrap();
        let session = response["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver refused the session: {response}"))
            .to_string();
        Browser { http, session: format!("{base}/session/{session}"), _driver: guard, _profile: profile }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response: Value = request.send().await.unwrap().json().await.unwrap();
        if response["value"].get("error").is_some() {
            panic!("WebDriver {path}: {}", response["value"]);
        }
        response["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url}))).await;
    }

    async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None).await.as_str().unwrap().to_string()
    }

    /// Waits (polling) until the current URL satisfies `condition`.
    async fn wait_for_url(&self, what: &str, condition: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let url = self.url().await;
            if condition(&url) {
                return url;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "never reached {what}; still at {url}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn element(&self, css: &str) -> String {
        let found =
            self.call(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css}))).await;
        found[ELEMENT_KEY].as_str().unwrap_or_else(|| panic!("no element {css}: {found}")).to_string()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{element}/clear"), Some(json!({}))).await;
        self.call(reqwest::Method::POST, &format!("/element/{element}/value"), Some(json!({"text": text}))).await;
    }

    async fn click(&self, css: &str) {
        let element = self.element(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{element}/click"), Some(json!({}))).await;
    }

    async fn text(&self, css: &str) -> String {
        let element = self.element(css).await;
        self.call(reqwest::Method::GET, &format!("/element/{element}/text"), None).await.as_str().unwrap().to_string()
    }

    async fn value(&self, css: &str) -> String {
        let element = self.element(css).await;
        let value = self.call(reqwest::Method::GET, &format!("/element/{element}/property/value"), None).await;
        value.as_str().unwrap().to_string()
    }

    /// Runs `script` (a function body) in the page and returns its result.
    async fn execute(&self, script: &str) -> Value {
        self.call(reqwest::Method::POST, "/execute/sync", Some(json!({"script": script, "args": []}))).await
    }

    async fn set_window_size(&self, width: u32, height: u32) {
        self.call(reqwest::Method::POST, "/window/rect", Some(json!({"width": width, "height": height}))).await;
    }

    async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None).await.as_str().unwrap().to_string()
    }

    async fn screenshot(&self) -> Vec<u8> {
        let data = self.call(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD.decode(data.as_str().unwrap()).unwrap()
    }

    async fn quit(&self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}

/// `<target dir>/web-flow.png` (the test binary lives in `<target>/debug/deps/`).
fn screenshot_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target"));
    target.join("web-flow.png")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_signs_up_signs_in_and_creates_a_key() {
    users_support::run(Backend::Sqlite, "browser_signs_up_signs_in_and_creates_a_key", |ctx| async move {
        let server = ctx.start().await;
        let base = server.url.clone();
        let browser = Browser::launch().await;

        // Landing page → sign-up form.
        browser.goto(&format!("{base}/")).await;
        assert!(browser.source().await.contains("Quick start"));
        browser.click("a.button[href='/signup']").await;
        browser.wait_for_url("/signup", |url| url.ends_with("/signup")).await;

        // A bad password is reported next to its field, without JavaScript.
        browser.type_into("#email", "web@example.com").await;
        browser.type_into("#username", "webuser").await;
        browser.type_into("#password", "short").await;
        browser.click("#signup-submit").await;
        let started = Instant::now();
        while !browser.source().await.contains("password-error") {
            assert!(started.elapsed() < Duration::from_secs(30), "no field error shown");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(browser.text("#password-error").await.contains("at least 8"));
        assert_eq!(browser.value("#email").await, "web@example.com", "entered values are kept");

        browser.type_into("#password", "correct-horse-battery").await;
        browser.click("#signup-submit").await;
        browser.wait_for_url("/signin?registered=1", |url| url.contains("/signin?registered=1")).await;
        assert!(browser.text("#notice").await.contains("account is ready"));

        // Sign in → dashboard.
        browser.type_into("#email", "web@example.com").await;
        browser.type_into("#password", "correct-horse-battery").await;
        browser.click("#signin-submit").await;
        browser.wait_for_url("/dashboard", |url| url.ends_with("/dashboard")).await;
        assert_eq!(browser.text("#account-username").await, "webuser");

        // Usage reported by the gateway appears in the dashboard's chart.
        let user_id: i64 = browser.text("#account-id").await.parse().unwrap();
        let usage = json!({"records": [
            {"user_id": user_id, "operation": "put", "requests": 1_200, "bytes_in": 48_000, "bytes_out": 2_400},
            {"user_id": user_id, "operation": "get", "requests": 300, "bytes_in": 0, "bytes_out": 150_000},
        ]});
        assert_eq!(server.internal("/usage", usage).await.status, reqwest::StatusCode::NO_CONTENT);
        browser.goto(&format!("{base}/dashboard")).await;
        let bars = browser.text(".bars").await;
        assert!(bars.contains("1,500 requests"), "counts with thousands separators: {bars}");

        // Create a key; it is shown once, with a copy hint.
        browser.type_into("#key-name", "browser key").await;
        browser.type_into("#expires-in-days", "30").await;
        browser.click("#create-key").await;
        browser.wait_for_url("/dashboard#new-key", |url| url.ends_with("/dashboard#new-key")).await;
        let key = browser.value("#new-api-key").await;
        assert!(key.starts_with("ydht_") && key.len() >= 37, "{key}");
        assert!(browser.text("#new-key").await.contains("shown only this once"));
        assert!(browser.text("#keys").await.contains(&key[..8]));
        // The banner shows how to use this key, not how to make another.
        let usage = browser.text("#new-key-usage").await;
        assert!(usage.contains(&format!("export YDHT_API_KEY={key}")) && usage.contains("X-API-Key"), "{usage}");
        assert!(!browser.text("#new-key").await.contains("apikey create"));

        let png = browser.screenshot().await;
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        let path = screenshot_path();
        std::fs::write(&path, &png).unwrap();
        println!("screenshot: {}", path.display());

        // The key read from the page is valid at the internal endpoint.
        let valid = server.internal("/validate-key", json!({"key": key})).await;
        assert_eq!(valid.status, reqwest::StatusCode::OK, "{}", valid.text);
        assert_eq!(valid.json["scopes"], json!(["read", "write"]));

        // Reloading no longer shows the secret.
        browser.goto(&format!("{base}/dashboard")).await;
        assert!(!browser.source().await.contains(&key));

        // On a 400 px wide screen the dashboard fits: no sideways scrolling, Revoke on screen.
        browser.set_window_size(400, 900).await;
        let fit = browser
            .execute(
                "const revoke = document.querySelector('#keys button.danger').getBoundingClientRect();
                 return {inner: window.innerWidth, page: document.documentElement.scrollWidth,
                         left: revoke.left, right: revoke.right};",
            )
            .await;
        let inner = fit["inner"].as_f64().unwrap();
        assert!(inner <= 420.0, "the window did not narrow to 400 px: {fit}");
        assert!(fit["page"].as_f64().unwrap() <= inner, "the page is wider than the screen: {fit}");
        assert!(
            fit["left"].as_f64().unwrap() >= 0.0 && fit["right"].as_f64().unwrap() <= inner,
            "Revoke is off-screen: {fit}"
        );
        browser.set_window_size(1280, 1600).await;

        // Sign out through the header button.
        browser.click("#signout").await;
        browser.wait_for_url("/", |url| url.trim_end_matches('/') == base).await;
        browser.goto(&format!("{base}/dashboard")).await;
        browser.wait_for_url("/signin", |url| url.ends_with("/signin")).await;
        browser.quit().await;
    })
    .await;
}
