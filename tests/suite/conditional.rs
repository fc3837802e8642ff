//! Conditional writes (issue 15) on `ydht serve all`: the HTTP contract
//! (ETag, If-Match, If-None-Match, 412, 304, 400), concurrent creates with one
//! winner, and the CLI's `--if-version`, `--if-absent`, `--show-version` and
//! `kv incr` with their exit codes. The lost-update test under faults is in
//! `chaos.rs`.

use crate::cli_support;
use crate::common;

use serde_json::Value;

/// The `ETag` of an answer.
fn etag_of(response: &reqwest::Response) -> Option<String> {
    response.headers().get("etag").map(|value| value.to_str().unwrap().to_string())
}

struct Tenant {
    http: reqwest::Client,
    gateway: String,
    key: String,
}

impl Tenant {
    fn url(&self, key: &str) -> String {
        format!("{}/v1/kv/{key}", self.gateway)
    }

    async fn put(&self, key: &str, value: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self.http.put(self.url(key)).header("x-api-key", &self.key).body(value.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    async fn delete(&self, key: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self.http.delete(self.url(key)).header("x-api-key", &self.key);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    async fn get(&self, key: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self.http.get(self.url(key)).header("x-api-key", &self.key);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    /// The strong read's value, or `None` for 404.
    async fn value(&self, key: &str) -> Option<String> {
        let response = self.get(key, &[("x-consistency", "strong")]).await;
        match response.status().as_u16() {
            404 => None,
            200 => Some(response.text().await.unwrap()),
            status => panic!("GET {key}: {status} {}", response.text().await.unwrap()),
        }
    }
}

async fn precondition_failed(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 412);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("precondition failed"), "{body}");
    body
}

#[tokio::test]
async fn conditional_writes_follow_the_http_contract_and_one_create_wins() {
    let cluster = common::start_cluster_with(&[("RATE_LIMIT_PER_MINUTE", "0")]);
    let http = common::http();
    let (_, key) = common::tenant(&http, &cluster.users, "casuser").await;
    let tenant = Tenant { http, gateway: cluster.gateway.clone(), key };

    // Create-only: the first succeeds with its version as ETag and in the JSON.
    let created = tenant.put("doc", "v1", &[("if-none-match", "*")]).await;
    assert_eq!(created.status(), 200);
    let etag = etag_of(&created).expect("a PUT answers its ETag");
    let body: Value = created.json().await.unwrap();
    assert_eq!(etag, format!("\"{}\"", body["version"].as_u64().unwrap()));
    let body = precondition_failed(tenant.put("doc", "other", &[("if-none-match", "*")]).await).await;
    assert_eq!(body["current_version"], etag.as_str(), "412 names the current ETag as GET sends it");

    // Every GET answers the same ETag; If-None-Match with it is 304, with another one 200.
    let read = tenant.get("doc", &[]).await;
    assert_eq!(etag_of(&read).as_deref(), Some(etag.as_str()));
    let unchanged = tenant.get("doc", &[("if-none-match", &etag)]).await;
    assert_eq!(unchanged.status(), 304);
    assert_eq!(etag_of(&unchanged).as_deref(), Some(etag.as_str()));
    assert_eq!(tenant.get("doc", &[("if-none-match", "\"1\"")]).await.status(), 200);

    // Compare-and-set: the matching ETag writes once; the same ETag again is 412 naming the new one.
    let updated = tenant.put("doc", "v2", &[("if-match", &etag)]).await;
    assert_eq!(updated.status(), 200);
    let etag2 = etag_of(&updated).unwrap();
    assert_ne!(etag2, etag);
    let body = precondition_failed(tenant.put("doc", "lost", &[("if-match", &etag)]).await).await;
    assert_eq!(body["current_version"], etag2.as_str());
    assert_eq!(tenant.value("doc").await.as_deref(), Some("v2"), "a failed precondition changes nothing");

    // A conditional write is answered before its commits land; a plain (eventual) read right
    // after it through the same gateway still sees it, every time.
    let mut etag_now = etag2.clone();
    for round in 0..20 {
        let value = format!("round-{round}");
        let written = tenant.put("doc", &value, &[("if-match", &etag_now)]).await;
        assert_eq!(written.status(), 200);
        etag_now = etag_of(&written).unwrap();
        let read = tenant.get("doc", &[]).await;
        assert_eq!(etag_of(&read).as_deref(), Some(etag_now.as_str()), "round {round}");
        assert_eq!(read.text().await.unwrap(), value);
    }
    let etag2 = etag_now;
    let body = precondition_failed(tenant.put("doc", "lost", &[("if-match", &etag)]).await).await;
    assert_eq!(body["current_version"], etag2.as_str());
    assert_eq!(tenant.put("doc", "v2", &[("if-match", &etag2)]).await.status(), 200);
    let etag2 = etag_of(&tenant.get("doc", &[("x-consistency", "strong")]).await).unwrap();

    // Malformed preconditions: 400 with a JSON error, and nothing changes.
    for headers in [
        vec![("if-match", "not-an-etag")],
        vec![("if-match", "5")],
        vec![("if-match", "*"), ("if-none-match", "*")],
        vec![("if-none-match", "\"5\"")],
    ] {
        let response = tenant.put("doc", "bad", &headers).await;
        assert_eq!(response.status(), 400, "{headers:?}");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].is_string(), "{body}");
    }
    let listing = tenant.http.get(format!("{}/v1/kv", tenant.gateway)).header("x-api-key", &tenant.key);
    let listing = listing.header("if-match", "*").send().await.unwrap();
    assert_eq!(listing.status(), 400);
    assert_eq!(tenant.delete("doc", &[("if-none-match", "*")]).await.status(), 400);
    assert_eq!(tenant.value("doc").await.as_deref(), Some("v2"));

    // Delete with If-Match: a stale tag is 412, the current one deletes; then the key is absent
    // for If-Match: * (412, current_version null) and creatable again with If-None-Match: *.
    precondition_failed(tenant.delete("doc", &[("if-match", &etag)]).await).await;
    let deleted = tenant.delete("doc", &[("if-match", &etag2)]).await;
    assert_eq!(deleted.status(), 200);
    assert!(etag_of(&deleted).is_some());
    let body = precondition_failed(tenant.put("doc", "x", &[("if-match", "*")]).await).await;
    assert_eq!(body["current_version"], Value::Null);
    assert_eq!(tenant.value("doc").await, None);
    assert_eq!(tenant.put("doc", "again", &[("if-none-match", "*")]).await.status(), 200);

    // 16 clients create one key at once: exactly one 200, every other answer is 412.
    let tenant = std::sync::Arc::new(tenant);
    let racers: Vec<_> = (0..16)
        .map(|client| {
            let tenant = std::sync::Arc::clone(&tenant);
            tokio::spawn(async move {
                let value = format!("client-{client}");
                (value.clone(), tenant.put("race", &value, &[("if-none-match", "*")]).await.status().as_u16())
            })
        })
        .collect();
    let mut winners = Vec::new();
    for racer in racers {
        let (value, status) = racer.await.unwrap();
        match status {
            200 => winners.push(value),
            412 => {}
            other => panic!("a create answered {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one create wins: {winners:?}");
    assert_eq!(tenant.value("race").await, Some(winners.remove(0)));
}

#[tokio::test]
async fn the_cli_writes_conditionally_and_counts_with_incr() {
    let cluster = common::start_cluster_with(&[("RATE_LIMIT_PER_MINUTE", "0")]);
    let http = common::http();
    let (_, key) = common::tenant(&http, &cluster.users, "cascli").await;
    let client = cli_support::Client::new(&cluster.gateway, &cluster.users, None);
    let run = |args: &[&str]| {
        let mut with_key = args.to_vec();
        with_key.extend(["--api-key", key.as_str()]);
        let output = client.run(&with_key);
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        (output.status.code(), text(&output.stdout), text(&output.stderr))
    };

    assert_eq!(run(&["kv", "put", "k", "one", "--if-absent"]).0, Some(0));
    let (code, _, stderr) = run(&["kv", "put", "k", "two", "--if-absent"]);
    assert_eq!(code, Some(5), "a failed precondition exits 5: {stderr}");
    assert!(stderr.contains("precondition failed"), "{stderr}");

    let (code, stdout, stderr) = run(&["kv", "get", "k", "--show-version"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.starts_with("one\n"), "{stdout}");
    let version = stdout.lines().find_map(|line| line.strip_prefix("version: ")).expect("a version line").to_string();
    let (_, json, _) = run(&["kv", "get", "k", "--output", "json"]);
    let document: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(document["version"].as_u64().unwrap().to_string(), version);
    assert_eq!(document["etag"], format!("\"{version}\""));

    assert_eq!(run(&["kv", "put", "k", "two", "--if-version", "1"]).0, Some(5));
    assert_eq!(run(&["kv", "put", "k", "two", "--if-version", &version]).0, Some(0));
    assert_eq!(run(&["kv", "put", "k", "three", "--if-version", &version]).0, Some(5), "the version moved on");
    assert_eq!(run(&["kv", "delete", "k", "--if-version", &version]).0, Some(5));
    assert_eq!(run(&["kv", "get", "k"]).1, "two");

    // incr: from 0 when missing, --by (also negative), JSON with the version.
    assert_eq!(run(&["kv", "incr", "n"]).1.trim(), "1");
    assert_eq!(run(&["kv", "incr", "n", "--by", "41"]).1.trim(), "42");
    assert_eq!(run(&["kv", "incr", "n", "--by", "-50"]).1.trim(), "-8");
    let (_, json, _) = run(&["kv", "incr", "n", "--output", "json"]);
    let document: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(document["value"], -7);
    assert!(document["version"].as_u64().unwrap() > 0);
    // A value that is not an integer: exit 2, left alone.
    let (code, _, stderr) = run(&["kv", "incr", "k"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("not an integer"), "{stderr}");
    assert_eq!(run(&["kv", "get", "k"]).1, "two");
}
