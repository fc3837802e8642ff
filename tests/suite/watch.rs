//! `GET /v1/watch` and `ydht kv watch` (issue 16): puts, deletes and expiries each reported once,
//! resumed without a miss or a repeat after the client, the gateway (SIGKILL) or a node went
//! away, `reset` past the change-log retention, the slow-consumer limit, the per-tenant limit,
//! tenant isolation and bad requests.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use serde_json::{Value, json};
use ydht::client::watch::{SseEvent, SseParser};

use crate::common::{self, Separate, SeparateOptions};

const SECRET: &str = "watch-test-secret";
/// Longest wait for an expected event.
const PATIENCE: Duration = Duration::from_secs(30);

/// One open watch, read event by event.
struct Watch {
    response: reqwest::Response,
    parser: SseParser,
    pending: VecDeque<SseEvent>,
    /// The id of the last event read that had one.
    last_id: Option<String>,
}

impl Watch {
    async fn open(http: &reqwest::Client, gateway: &str, key: &str, query: &str, last_id: Option<&str>) -> Watch {
        let response = Self::request(http, gateway, key, query, last_id).await;
        assert_eq!(response.status(), 200, "GET /v1/watch?{query}");
        let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        Watch { response, parser: SseParser::default(), pending: VecDeque::new(), last_id: None }
    }

    async fn request(
        http: &reqwest::Client,
        gateway: &str,
        key: &str,
        query: &str,
        last_id: Option<&str>,
    ) -> reqwest::Response {
        let mut request =
            http.get(format!("{gateway}/v1/watch?{query}")).header("x-api-key", key).timeout(Duration::from_secs(600));
        if let Some(id) = last_id {
            request = request.header("last-event-id", id);
        }
        request.send().await.unwrap()
    }

    /// The next event, or `None` when the stream ended or nothing came `within`.
    async fn next_within(&mut self, within: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(event) = self.pending.pop_front() {
                if event.id.is_some() {
                    self.last_id = event.id.clone();
                }
                return Some(event);
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => self.pending.extend(self.parser.push(&chunk).unwrap()),
                _ => return None,
            }
        }
    }

    async fn next(&mut self) -> SseEvent {
        self.next_within(PATIENCE).await.expect("an event within 30 s")
    }

    /// Reads changes until the put of `sentinel`; returns those before it as (event, key, version).
    async fn until(&mut self, sentinel: &str) -> Vec<(String, String, u64)> {
        let mut changes = Vec::new();
        loop {
            let event = self.next().await;
            let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
            let key = data["key"].as_str().unwrap_or_default().to_string();
            if event.event == "put" && key == sentinel {
                return changes;
            }
            changes.push((event.event, key, data["version"].as_u64().unwrap_or(0)));
        }
    }
}

async fn put(http: &reqwest::Client, gateway: &str, key: &str, name: &str, value: &str, query: &str) -> u64 {
    let response =
        http.put(format!("{gateway}/v1/kv/{name}{query}")).header("x-api-key", key).body(value.to_string()).send();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200, "PUT {name}");
    response.json::<Value>().await.unwrap()["version"].as_u64().unwrap()
}

async fn delete(http: &reqwest::Client, gateway: &str, key: &str, name: &str) -> u64 {
    let response = http.delete(format!("{gateway}/v1/kv/{name}")).header("x-api-key", key).send().await.unwrap();
    assert_eq!(response.status(), 200, "DELETE {name}");
    response.json::<Value>().await.unwrap()["version"].as_u64().unwrap()
}

/// Writes `names` (value = name) and returns the puts a watch should report.
async fn put_all(http: &reqwest::Client, gateway: &str, key: &str, names: &[String]) -> Vec<(String, String, u64)> {
    let mut expected = Vec::new();
    for name in names {
        let version = put(http, gateway, key, name, name, "").await;
        expected.push(("put".to_string(), name.clone(), version));
    }
    expected
}

fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| format!("{prefix}{n:03}")).collect()
}

fn sorted(mut changes: Vec<(String, String, u64)>) -> Vec<(String, String, u64)> {
    changes.sort();
    changes
}

#[tokio::test]
async fn puts_deletes_and_expiries_are_reported_once_each_to_their_tenant_only() {
    let cluster = common::start_cluster_with(&[("RATE_LIMIT_PER_MINUTE", "0")]);
    let (http, gateway) = (common::http(), cluster.gateway.clone());
    let (_, key) = common::tenant(&http, &cluster.users, "watcher").await;
    let (_, other) = common::tenant(&http, &cluster.users, "neighbour").await;

    let mut prefix = Watch::open(&http, &gateway, &key, "prefix=w/", None).await;
    let mut one_key = Watch::open(&http, &gateway, &key, "key=w/a&values=true", None).await;
    let mut everything = Watch::open(&http, &gateway, &key, "", None).await;
    let mut neighbour = Watch::open(&http, &gateway, &other, "prefix=w/", None).await;

    let a1 = put(&http, &gateway, &key, "w/a", "first", "").await;
    let outside = put(&http, &gateway, &key, "elsewhere", "x", "").await;
    let soon = put(&http, &gateway, &key, "w/soon", "short-lived", "?ttl=1s").await;
    let a2 = put(&http, &gateway, &key, "w/a", "second", "").await;
    let gone = delete(&http, &gateway, &key, "w/a").await;
    let theirs = put(&http, &gateway, &other, "w/theirs", "t", "").await;

    // The expiry comes from a node's TTL sweeper (every second) within a few seconds.
    let mut changes = Vec::new();
    while !changes.iter().any(|(event, _, _): &(String, String, u64)| event == "expire") {
        let event = prefix.next().await;
        let data: Value = serde_json::from_str(&event.data).unwrap();
        if event.event == "put" && data["key"] == "w/soon" {
            assert_eq!(data["size"], 11);
            assert!(data["expires_at"].is_string(), "{data}");
            assert!(data["content_type"].is_string(), "{data}");
        }
        changes.push((event.event, data["key"].as_str().unwrap().to_string(), data["version"].as_u64().unwrap()));
    }
    put(&http, &gateway, &key, "w/zz", "sentinel", "").await;
    changes.extend(prefix.until("w/zz").await);
    let expected = vec![
        ("put".to_string(), "w/a".to_string(), a1),
        ("put".into(), "w/soon".into(), soon),
        ("put".into(), "w/a".into(), a2),
        ("delete".into(), "w/a".into(), gone),
        ("expire".into(), "w/soon".into(), soon),
    ];
    assert_eq!(sorted(changes.clone()), sorted(expected.clone()), "each change once, nothing outside the prefix");
    let of_a: Vec<u64> = changes.iter().filter(|change| change.1 == "w/a").map(|change| change.2).collect();
    assert_eq!(of_a, vec![a1, a2, gone], "a key's changes in version order");

    // key=: only that key, with its values.
    let mut values = Vec::new();
    for _ in 0..3 {
        let event = one_key.next().await;
        let data: Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(data["key"], "w/a", "{data}");
        values.push((event.event, data["value"].clone(), data["superseded"].clone()));
    }
    assert_eq!(values[2], ("delete".to_string(), Value::Null, Value::Null));
    for (event, value, superseded) in &values[..2] {
        assert_eq!(event, "put");
        assert!(
            value == "first" || value == "second" || *superseded == json!(true),
            "a put carries its value, or says it was superseded: {value} {superseded}"
        );
    }
    assert!(one_key.next_within(Duration::from_millis(500)).await.is_none(), "nothing else of w/a");

    // No prefix: every key of the tenant, none of the neighbour's.
    put(&http, &gateway, &key, "w/zz2", "sentinel", "").await;
    let all = everything.until("w/zz2").await;
    assert!(all.contains(&("put".into(), "elsewhere".into(), outside)), "{all:?}");
    assert!(all.iter().all(|change| change.1 != "w/theirs"), "another tenant's change leaked: {all:?}");

    put(&http, &gateway, &other, "w/zz", "sentinel", "").await;
    assert_eq!(neighbour.until("w/zz").await, vec![("put".into(), "w/theirs".into(), theirs)]);
}

/// A watch resumed with its last event's id, after the client disconnected, after the gateway was
/// SIGKILLed and restarted, and across a node killed and restarted: every change once.
#[tokio::test]
async fn a_resumed_watch_misses_nothing_and_repeats_nothing() {
    let mut cluster = Separate::start(SECRET, 3, SeparateOptions::default());
    let http = common::http();
    let (account, key) = common::tenant(&http, &cluster.users.1, "resumer").await;
    let gateway = cluster.gateway.1.clone();

    // The client goes away after half the events.
    let mut watch = Watch::open(&http, &gateway, &key, "prefix=r/", None).await;
    let first = put_all(&http, &gateway, &key, &names("r/a", 0..20)).await;
    let mut seen = Vec::new();
    for _ in 0..10 {
        let event = watch.next().await;
        let data: Value = serde_json::from_str(&event.data).unwrap();
        seen.push((event.event, data["key"].as_str().unwrap().to_string(), data["version"].as_u64().unwrap()));
    }
    let cursor = watch.last_id.clone().unwrap();
    drop(watch);
    let second = put_all(&http, &gateway, &key, &names("r/b", 0..10)).await;
    let mut watch = Watch::open(&http, &gateway, &key, "prefix=r/", Some(&cursor)).await;
    put(&http, &gateway, &key, "r/zz1", "s", "").await;
    seen.extend(watch.until("r/zz1").await);
    let mut expected = [first, second].concat();
    assert_eq!(sorted(seen), sorted(expected.clone()), "after the client disconnected");

    // The gateway is SIGKILLed; changes made while it is down and after its restart reach the
    // watch resumed (with ?since=) on the new one.
    let cursor = watch.last_id.clone().unwrap();
    drop(watch);
    cluster.restart_gateway();
    // The old gateway's pooled connections died with it.
    let http = common::http();
    let gateway = cluster.gateway.1.clone();
    let third = put_all(&http, &gateway, &key, &names("r/c", 0..10)).await;
    let mut watch = Watch::open(&http, &gateway, &key, &format!("prefix=r/&since={cursor}"), None).await;
    put(&http, &gateway, &key, "r/zz2", "s", "").await;
    let seen = watch.until("r/zz2").await;
    assert_eq!(sorted(seen), sorted(third.clone()), "after the gateway restarted");
    expected.extend(third);

    // A node is killed while the watch is open; writes go on to the other two, the node comes
    // back and is handed its copies: each change is still reported once, also to a watch that
    // resumes after that.
    cluster.nodes[1].0.kill();
    let fourth = put_all(&http, &gateway, &key, &names("r/d", 0..10)).await;
    put(&http, &gateway, &key, "r/zz3", "s", "").await;
    let mut seen = watch.until("r/zz3").await;
    let cursor = watch.last_id.clone().unwrap();
    cluster.restart_node(1);
    let node = cluster.nodes[1].1.clone();
    let copied = common::eventually(PATIENCE, || async {
        let mut all = true;
        for (_, name, _) in &fourth {
            let storage_key = format!("{}/{name}", account.user_id);
            all &= common::read_node(&http, &node, SECRET, &storage_key).await.0 == 200;
        }
        all
    })
    .await;
    assert!(copied, "the restarted node was handed its copies");
    let fifth = put_all(&http, &gateway, &key, &names("r/e", 0..5)).await;
    put(&http, &gateway, &key, "r/zz4", "s", "").await;
    seen.extend(watch.until("r/zz4").await);
    assert_eq!(sorted(seen), sorted([fourth.clone(), fifth.clone()].concat()), "across a node's restart");

    drop(watch);
    let mut resumed = Watch::open(&http, &gateway, &key, "prefix=r/", Some(&cursor)).await;
    put(&http, &gateway, &key, "r/zz5", "s", "").await;
    let seen = resumed.until("r/zz5").await;
    let mut wanted = fifth;
    wanted.push(("put".into(), "r/zz4".into(), 0));
    let seen: Vec<(String, String, u64)> = seen
        .into_iter()
        .map(|(event, name, version)| if name == "r/zz4" { (event, name, 0) } else { (event, name, version) })
        .collect();
    assert_eq!(sorted(seen), sorted(wanted), "resumed after the node's copies arrived: none again");
}

#[tokio::test]
async fn a_cursor_past_the_retention_gets_reset_then_the_changes_after_it() {
    let cluster = common::start_cluster_with(&[
        ("RATE_LIMIT_PER_MINUTE", "0"),
        ("YDHT_FEED_RETENTION", "0"),
        ("YDHT_FEED_RETENTION_CHANGES", "0"),
        ("YDHT_WAL_MAX_BYTES", "4096"),
    ]);
    let (http, gateway) = (common::http(), cluster.gateway.clone());
    let (_, key) = common::tenant(&http, &cluster.users, "late").await;
    let mut watch = Watch::open(&http, &gateway, &key, "prefix=old/", None).await;
    put(&http, &gateway, &key, "old/first", "x", "").await;
    watch.next().await;
    let cursor = watch.last_id.clone().unwrap();
    drop(watch);

    // Enough writes for the nodes to snapshot and drop the segments the cursor points into.
    let value = "v".repeat(400);
    let compacted = common::eventually(Duration::from_secs(60), || async {
        for n in 0..20 {
            put(&http, &gateway, &key, &format!("filler/{n}"), &value, "").await;
        }
        let mut all = true;
        for node in &cluster.nodes {
            let page: Value = http
                .get(format!("{node}/feed?after=0&limit=1"))
                .header("x-cluster-secret", cluster.secret())
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            all &= page["oldest"].as_u64().unwrap() > 1 << 40;
        }
        all
    })
    .await;
    assert!(compacted, "every node dropped its first WAL segment");

    let mut watch = Watch::open(&http, &gateway, &key, "prefix=old/", Some(&cursor)).await;
    let reset = watch.next().await;
    assert_eq!(reset.event, "reset", "{reset:?}");
    assert!(reset.data.contains("list the keys again"), "{}", reset.data);
    assert!(reset.id.is_some(), "a reset carries the cursor to go on from");
    let after = put(&http, &gateway, &key, "old/after", "y", "").await;
    put(&http, &gateway, &key, "old/zz", "s", "").await;
    assert_eq!(watch.until("old/zz").await, vec![("put".into(), "old/after".into(), after)]);
}

/// A client that stops reading is sent `dropped` once its buffer stayed full for the stall time,
/// and the stream ends; resumed from the last event it read, it gets the rest, none twice.
#[tokio::test]
async fn a_slow_consumer_is_dropped_and_resumes_where_it_stopped() {
    let cluster = common::start_cluster_with(&[("RATE_LIMIT_PER_MINUTE", "0")]);
    let (http, gateway) = (common::http(), cluster.gateway.clone());
    let (_, key) = common::tenant(&http, &cluster.users, "slowpoke").await;
    let mut watch = Watch::open(&http, &gateway, &key, "prefix=s/", None).await;
    // Long keys make big events, so the socket buffers hold few of them.
    let total = 12_000;
    let long = "k".repeat(900);
    for start in (0..total).step_by(1000) {
        let ops: Vec<Value> = (start..start + 1000)
            .map(|n| json!({"op": "put", "key": format!("s/{n:05}/{long}"), "value": "v"}))
            .collect();
        let response = http
            .post(format!("{gateway}/v1/batch"))
            .header("x-api-key", &key)
            .json(&json!({ "ops": ops }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    // The gateway counts the watch dropped (it stalled on a full buffer for 10 s) before the
    // client reads on.
    let counted = common::eventually(Duration::from_secs(60), || async {
        let metrics: Value = http.get(format!("{gateway}/metrics")).send().await.unwrap().json().await.unwrap();
        metrics["watches_dropped"] == 1
    })
    .await;
    assert!(counted, "the gateway dropped the watch");
    let mut received = BTreeSet::new();
    let mut dropped = false;
    while let Some(event) = watch.next_within(PATIENCE).await {
        if event.event == "dropped" {
            assert!(event.data.contains("Last-Event-ID"), "{}", event.data);
            dropped = true;
            continue;
        }
        assert!(!dropped, "nothing after dropped");
        let data: Value = serde_json::from_str(&event.data).unwrap();
        assert!(received.insert(data["key"].as_str().unwrap().to_string()), "twice: {}", data["key"]);
    }
    assert!(dropped, "the slow client was dropped ({} events read)", received.len());
    assert!(received.len() < total, "it was dropped before the end");

    let cursor = watch.last_id.clone().unwrap();
    let mut resumed = Watch::open(&http, &gateway, &key, "prefix=s/", Some(&cursor)).await;
    while received.len() < total {
        let event = resumed.next().await;
        assert_eq!(event.event, "put", "{}", event.data);
        let data: Value = serde_json::from_str(&event.data).unwrap();
        assert!(received.insert(data["key"].as_str().unwrap().to_string()), "twice after resuming: {}", data["key"]);
    }
    assert!(resumed.next_within(Duration::from_millis(500)).await.is_none(), "nothing more");
}

#[tokio::test]
async fn watches_are_limited_per_tenant_and_bad_requests_are_refused() {
    let cluster = common::start_cluster_with(&[("RATE_LIMIT_PER_MINUTE", "0"), ("YDHT_MAX_WATCHES_PER_TENANT", "2")]);
    let (http, gateway) = (common::http(), cluster.gateway.clone());
    let (account, key) = common::tenant(&http, &cluster.users, "limited").await;
    let (_, other) = common::tenant(&http, &cluster.users, "unlimited").await;

    let first = Watch::open(&http, &gateway, &key, "prefix=a", None).await;
    let _second = Watch::open(&http, &gateway, &key, "prefix=b", None).await;
    let third = Watch::request(&http, &gateway, &key, "prefix=c", None).await;
    assert_eq!(third.status(), 429);
    assert!(third.text().await.unwrap().contains("at most 2"));
    let _theirs = Watch::open(&http, &gateway, &other, "", None).await;
    drop(first);
    let reopened = common::eventually(Duration::from_secs(10), || async {
        Watch::request(&http, &gateway, &key, "prefix=c", None).await.status() == 200
    })
    .await;
    assert!(reopened, "a closed watch frees its place");

    let (_, reader) = common::create_key(&http, &cluster.users, &account, &["read"]).await;
    let (_, writer) = common::create_key(&http, &cluster.users, &account, &["write"]).await;
    let _read_only = Watch::open(&http, &gateway, &other, "prefix=x", None).await;
    assert_eq!(Watch::request(&http, &gateway, &writer, "prefix=x", None).await.status(), 403, "needs read scope");
    for (query, words) in [
        ("prefix=a&key=b", "not both"),
        ("since=not-a-cursor", "not a ydht watch cursor"),
        ("values=maybe", "values must be"),
        (&format!("key={}", "k".repeat(2000)), "key"),
    ] {
        let response = Watch::request(&http, &gateway, &reader, query, None).await;
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains(words), "{query}: {body}");
    }
    let response = Watch::request(&http, &gateway, &reader, "", Some("w1.%%%")).await;
    assert_eq!(response.status(), 400, "a malformed Last-Event-ID");
    let response = http.get(format!("{gateway}/v1/watch")).send().await.unwrap();
    assert_eq!(response.status(), 401);
}

/// `ydht kv watch` prints one JSON line per change, reconnects by itself after the gateway was
/// SIGKILLed and restarted (printing what changed meanwhile, nothing twice), and ends with exit 0
/// on Ctrl-C.
#[tokio::test]
async fn the_cli_watch_prints_changes_and_resumes_by_itself() {
    use std::io::BufRead;
    let mut cluster = Separate::start(SECRET, 3, SeparateOptions::default());
    let http = common::http();
    let (_, key) = common::tenant(&http, &cluster.users.1, "clwatch").await;
    let gateway = cluster.gateway.1.clone();
    let client = crate::cli_support::Client::new(&gateway, &cluster.users.1, None);
    let mut child = client
        .command(&["kv", "watch", "--prefix", "c/", "--output", "json"])
        .env("YDHT_API_KEY", &key)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, printed) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if lines.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let next_line = || {
        let line = printed.recv_timeout(PATIENCE).expect("a line within 30 s");
        let event: Value = serde_json::from_str(&line).unwrap();
        (
            event["event"].as_str().unwrap().to_string(),
            event["key"].as_str().unwrap().to_string(),
            event["version"].as_u64().unwrap(),
        )
    };

    // The watch starts at once: a write right after it started may still precede it, so wait
    // for a first line.
    let started = common::eventually(PATIENCE, || async {
        put(&http, &gateway, &key, "c/start", "s", "").await;
        matches!(printed.recv_timeout(Duration::from_millis(200)), Ok(line) if line.contains("c/start"))
    })
    .await;
    assert!(started, "kv watch printed a change");
    while printed.recv_timeout(Duration::from_millis(300)).is_ok() {}

    let before = put_all(&http, &gateway, &key, &names("c/a", 0..5)).await;
    let got: Vec<_> = (0..5).map(|_| next_line()).collect();
    assert_eq!(sorted(got), sorted(before));

    cluster.restart_gateway();
    let http = common::http();
    let during = put_all(&http, &gateway, &key, &names("c/b", 0..5)).await;
    put(&http, &gateway, &key, "c/zz", "s", "").await;
    let mut got = Vec::new();
    loop {
        let change = next_line();
        if change.1 == "c/zz" {
            break;
        }
        got.push(change);
    }
    assert_eq!(sorted(got), sorted(during), "after the reconnect: what changed meanwhile, none twice");

    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(status.success(), "Ctrl-C ends kv watch with exit 0: {status:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("reconnecting"), "{stderr}");
}
