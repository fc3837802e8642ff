//! The replicator over real HTTP: jobs in, versioned writes out to target nodes.
//!
//! The targets here are small axum servers implementing the node's
//! `PUT/DELETE /store/{key}`, `POST /batch` and `/health` contract and recording what they
//! received — stand-ins for *remote peers*, so delivery, retries and hinted
//! handoff can be observed exactly. End-to-end tests with real nodes live with
//! the cluster tests.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post, put};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use ydht::config::Secret;
use ydht::daemon::replicator::{ReplicatorConfig, serve};
use ydht::membership::{Member, MemberState, Membership, MembershipQuery};
use ydht::shutdown::Shutdown;
use ydht::wal::Record;
use ydht::wire::batch as node_batch;
use ydht::wire::jobs::{self as jobs_body, JOBS_CONTENT_TYPE};

const SECRET: &str = "replicator-test-secret";

/// One write a target received.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Received {
    op: &'static str,
    key: String,
    version: u64,
    expires_at: Option<u64>,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// A stand-in remote node that records every authorized write; it refuses
/// keys under `refused/` for good (400), recording them as op `refused` when
/// written alone (a batch holding one is refused whole and records nothing, as a node does).
struct TargetNode {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    task: JoinHandle<()>,
}

impl Drop for TargetNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TargetNode {
    async fn start() -> Self {
        Self::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    /// Starts on a port reserved earlier (the node "comes back").
    fn start_on_reserved(reserved: ReservedPort) -> Self {
        Self::start_on(reserved.socket.listen(1024).unwrap())
    }

    fn start_on(listener: TcpListener) -> Self {
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/store/{*key}", put(store_put).delete(store_delete))
            .route("/batch", post(store_batch))
            .route("/health", get(|| async { axum::Json(json!({"status": "healthy", "node_id": "stand-in"})) }))
            .with_state(received.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url: format!("http://127.0.0.1:{port}"), received, task }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn keys(&self) -> BTreeSet<String> {
        self.received().into_iter().map(|write| write.key).collect()
    }
}

type Log = Arc<Mutex<Vec<Received>>>;

fn record(log: &Log, op: &'static str, key: String, headers: &HeaderMap, body: &[u8]) -> (StatusCode, String) {
    if headers.get("x-cluster-secret").and_then(|v| v.to_str().ok()) != Some(SECRET) {
        return (StatusCode::UNAUTHORIZED, json!({"error": "wrong cluster secret"}).to_string());
    }
    let number = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let Some(version) = number("x-version") else {
        return (StatusCode::BAD_REQUEST, json!({"error": "missing x-version"}).to_string());
    };
    let refused = key.starts_with("refused/");
    log.lock().unwrap().push(Received {
        op: if refused { "refused" } else { op },
        key,
        version,
        expires_at: number("x-expires-at"),
        content_type: headers.get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string),
        body: body.to_vec(),
    });
    if refused {
        return (StatusCode::BAD_REQUEST, json!({"error": "this stand-in refuses keys under refused/"}).to_string());
    }
    (StatusCode::OK, json!({"applied": true, "version": version}).to_string())
}

async fn store_put(
    State(log): State<Log>,
    UrlPath(key): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    record(&log, "put", key, &headers, &body)
}

async fn store_delete(
    State(log): State<Log>,
    UrlPath(key): UrlPath<String>,
    headers: HeaderMap,
) -> (StatusCode, String) {
    record(&log, "delete", key, &headers, &[])
}

async fn store_batch(State(log): State<Log>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    if headers.get("x-cluster-secret").and_then(|v| v.to_str().ok()) != Some(SECRET) {
        return (StatusCode::UNAUTHORIZED, json!({"error": "wrong cluster secret"}).to_string());
    }
    let records = match node_batch::decode(&body) {
        Ok(records) => records,
        Err(error) => return (StatusCode::BAD_REQUEST, json!({ "error": error.to_string() }).to_string()),
    };
    if records.iter().any(|record| record.key.starts_with("refused/")) {
        return (StatusCode::BAD_REQUEST, json!({"error": "this stand-in refuses keys under refused/"}).to_string());
    }
    let mut results = Vec::new();
    let mut received = log.lock().unwrap();
    for record in records {
        results.push(json!({"applied": true, "version": record.version}));
        received.push(Received {
            op: if record.tombstone { "delete" } else { "put" },
            key: record.key,
            version: record.version,
            expires_at: record.expires_at,
            content_type: (!record.tombstone).then_some(record.content_type),
            body: record.value.to_vec(),
        });
    }
    (StatusCode::OK, json!({ "results": results }).to_string())
}

/// A port with nothing listening on it (a node that is down), to be started later.
/// A port held for a node that is down: bound but not listening, so connecting to it is
/// refused at once and no other test of this process can take it meanwhile.
struct ReservedPort {
    socket: tokio::net::TcpSocket,
    port: u16,
}

fn reserve_port() -> ReservedPort {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    ReservedPort { socket, port }
}

/// The replicator running in this process.
struct Running {
    url: String,
    shutdown: Shutdown,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    async fn start(config: ReplicatorConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = Shutdown::new();
        let task = tokio::spawn(serve(config, listener, shutdown.clone()));
        Self { url, shutdown, task: Some(task) }
    }

    async fn stop(mut self) {
        self.shutdown.trigger();
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

fn config(dir: &Path) -> ReplicatorConfig {
    let mut config = ReplicatorConfig::with_defaults(dir.to_path_buf(), Secret::new(SECRET));
    config.retry_base = Duration::from_millis(20);
    config.probe_interval = Duration::from_millis(50);
    config.request_timeout = Duration::from_secs(2);
    config.shutdown_grace = Duration::from_millis(500);
    config
}

/// One job through `POST /jobs`: a put of `value` (or, with `("op", "delete")`,
/// a delete) of `key` to `targets`. `options` set the job's fields: `op`,
/// `version` (default 1000), `expires_at`, `content_type`, and `wait` (the
/// `x-ydht-wait` header).
async fn post_job(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    targets: &[&str],
    options: &[(&str, &str)],
    value: &[u8],
) -> reqwest::Response {
    try_post_job(http, base, key, targets, options, value).await.unwrap()
}

/// [`post_job`], with transport errors returned (the replicator may be killed meanwhile).
async fn try_post_job(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    targets: &[&str],
    options: &[(&str, &str)],
    value: &[u8],
) -> reqwest::Result<reqwest::Response> {
    let option = |name: &str| options.iter().rev().find(|(option, _)| *option == name).map(|(_, value)| *value);
    let version = option("version").map_or(1000, |text| text.parse().unwrap());
    let write = match option("op") {
        Some("delete") => Record { value: value.to_vec().into(), ..Record::delete(key, version) },
        _ => Record::put(key, version, value.to_vec(), option("content_type").unwrap_or("application/octet-stream"))
            .with_expiry(option("expires_at").map(|text| text.parse().unwrap())),
    };
    let wait = option("wait").map(|text| text.parse().unwrap());
    let targets = targets.iter().map(|target| target.to_string()).collect();
    common::post_jobs_request(http, base, SECRET, &[(targets, write)], wait).send().await
}

/// `POST /jobs` with the secret: `jobs` as (targets, write).
async fn post_jobs(http: &reqwest::Client, base: &str, jobs: &[(Vec<String>, Record)]) -> reqwest::Response {
    common::post_jobs_request(http, base, SECRET, jobs, None).send().await.unwrap()
}

async fn post_jobs_body(http: &reqwest::Client, base: &str, body: Vec<u8>) -> reqwest::Response {
    http.post(format!("{base}/jobs"))
        .header("x-cluster-secret", SECRET)
        .header("content-type", JOBS_CONTENT_TYPE)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn json_of(http: &reqwest::Client, url: String) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// Polls `condition` until it holds; panics naming `what` after 30 s.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the replicator's metrics until `condition` holds.
async fn metrics_until(http: &reqwest::Client, base: &str, what: &str, condition: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = json_of(http, format!("{base}/metrics")).await;
        if condition(&metrics) {
            return metrics;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; metrics: {metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_job_reaches_every_target_with_its_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = [TargetNode::start().await, TargetNode::start().await, TargetNode::start().await];
    let targets: Vec<&str> = nodes.iter().map(|node| node.url.as_str()).collect();
    let replicator = Running::start(config(dir.path())).await;
    let http = reqwest::Client::new();

    let mut expected = Vec::new();
    for i in 0..10u64 {
        let key = format!("7/user:{i}/with space%and?odd#chars");
        let value = format!("{{\"n\":{i}}}");
        let version = (1000 + i).to_string();
        let response = post_job(
            &http,
            &replicator.url,
            &key,
            &targets,
            &[("version", &version), ("expires_at", "1999999999999"), ("content_type", "application/json")],
            value.as_bytes(),
        )
        .await;
        assert_eq!(response.status(), 202);
        let accepted: Value = response.json().await.unwrap();
        assert!(accepted["job_ids"][0].as_u64().is_some(), "{accepted}");
        expected.push(Received {
            op: "put",
            key,
            version: 1000 + i,
            expires_at: Some(1_999_999_999_999),
            content_type: Some("application/json".to_string()),
            body: value.into_bytes(),
        });
    }
    let response =
        post_job(&http, &replicator.url, "7/gone", &targets, &[("op", "delete"), ("version", "2000")], b"").await;
    assert_eq!(response.status(), 202);

    for node in &nodes {
        eventually("all 11 writes on every target", || node.received().len() == 11).await;
        let mut puts: Vec<Received> = node.received().into_iter().filter(|write| write.op == "put").collect();
        puts.sort_by_key(|write| write.version);
        assert_eq!(puts, expected);
        let deletes: Vec<Received> = node.received().into_iter().filter(|write| write.op == "delete").collect();
        assert_eq!(deletes.len(), 1);
        assert_eq!((deletes[0].key.as_str(), deletes[0].version), ("7/gone", 2000));
    }
    let metrics = metrics_until(&http, &replicator.url, "an empty queue", |m| m["queue_size"] == 0).await;
    assert_eq!(metrics["total_replications"], 11);
    assert_eq!(metrics["successful_replicas"], 33);
    assert_eq!(metrics["failed_replicas"], 0);
    assert_eq!(metrics["max_replication_lag_ms"], 0.0);
    replicator.stop().await;
}

#[tokio::test]
async fn a_batch_of_jobs_is_durable_together_and_every_copy_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = [TargetNode::start().await, TargetNode::start().await, TargetNode::start().await];
    let replicator = Running::start(config(dir.path())).await;
    let http = reqwest::Client::new();

    // 60 jobs, each to two of the three nodes; every fifth a delete.
    let jobs: Vec<(Vec<String>, Record)> = (0..60u64)
        .map(|i| {
            let targets = vec![nodes[i as usize % 3].url.clone(), nodes[(i as usize + 1) % 3].url.clone()];
            let write = if i % 5 == 0 {
                Record::delete(format!("7/k{i}"), 100 + i)
            } else {
                Record::put(format!("7/k{i}"), 100 + i, format!("v{i}").into_bytes(), "text/plain")
                    .with_expiry(Some(1_999_999_999_999))
            };
            (targets, write)
        })
        .collect();
    let response = post_jobs(&http, &replicator.url, &jobs).await;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    let ids: Vec<u64> = accepted["job_ids"].as_array().unwrap().iter().map(|id| id.as_u64().unwrap()).collect();
    assert_eq!(ids.len(), 60);
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");

    for (index, node) in nodes.iter().enumerate() {
        let wanted: Vec<&Record> =
            jobs.iter().filter(|(targets, _)| targets.contains(&node.url)).map(|(_, w)| w).collect();
        eventually("every copy on its node", || node.received().len() == wanted.len()).await;
        let mut received = node.received();
        received.sort_by_key(|write| write.version);
        for (got, write) in received.iter().zip(&wanted) {
            assert_eq!((got.key.as_str(), got.version), (write.key.as_str(), write.version), "node {index}");
            assert_eq!(got.op, if write.tombstone { "delete" } else { "put" });
            if !write.tombstone {
                assert_eq!(got.body, write.value);
                assert_eq!((got.content_type.as_deref(), got.expires_at), (Some("text/plain"), write.expires_at));
            }
        }
    }
    let metrics = metrics_until(&http, &replicator.url, "an empty queue", |m| m["queue_size"] == 0).await;
    assert_eq!(
        (metrics["total_replications"].as_u64(), metrics["successful_replicas"].as_u64()),
        (Some(60), Some(120))
    );
    assert_eq!(metrics["failed_replicas"], 0);
    replicator.stop().await;
}

#[tokio::test]
async fn a_bad_batch_is_refused_whole_and_nothing_is_enqueued() {
    let dir = tempfile::tempdir().unwrap();
    let node = TargetNode::start().await;
    let mut settings = config(dir.path());
    settings.max_value_bytes = 1024;
    settings.max_queue = 3;
    let replicator = Running::start(settings).await;
    let http = reqwest::Client::new();
    let base = replicator.url.as_str();
    let good = |key: &str| (vec![node.url.clone()], Record::put(key, 1, &b"v"[..], "text/plain"));

    let unauthorized = http.post(format!("{base}/jobs")).body(vec![1u8; 10]).send().await.unwrap();
    assert_eq!(unauthorized.status(), 401);
    /// (name, jobs, expected status, a word the error names)
    type Case<'a> = (&'a str, Vec<(Vec<String>, Record)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "a bad target",
            vec![good("a"), (vec!["ftp://x:1".into()], Record::put("b", 1, &b"v"[..], ""))],
            400,
            "job 1 of 2",
        ),
        ("no targets", vec![(Vec::new(), Record::put("b", 1, &b"v"[..], ""))], 400, "job 0 of 1"),
        ("a zero version", vec![good("a"), (vec![node.url.clone()], Record::delete("b", 0))], 400, "version"),
        ("a control character", vec![good("bad\u{1}key")], 400, "control"),
        (
            "a value too large",
            vec![good("a"), (vec![node.url.clone()], Record::put("b", 1, vec![0; 1025], ""))],
            413,
            "job 1",
        ),
        ("more jobs than the queue holds", (0..4).map(|i| good(&format!("k{i}"))).collect(), 503, "queue is full"),
    ];
    for (name, jobs, status, needle) in cases {
        let response = post_jobs(&http, base, &jobs).await;
        assert_eq!(response.status(), status, "{name}");
        let error: Value = response.json().await.unwrap();
        assert!(error["error"].as_str().is_some_and(|message| message.contains(needle)), "{name}: {error}");
    }
    let mut body = jobs_body::encode([(&["http://a:1"][..], Record::delete("k", 1).borrowed())].into_iter()).unwrap();
    body.push(0);
    assert_eq!(post_jobs_body(&http, base, body).await.status(), 400);
    assert_eq!(post_jobs_body(&http, base, b"{}".to_vec()).await.status(), 400);

    let metrics = json_of(&http, format!("{base}/metrics")).await;
    assert_eq!((metrics["total_replications"].as_u64(), metrics["queue_size"].as_u64()), (Some(0), Some(0)));
    assert!(node.received().is_empty());
    // A batch that fits is taken whole, even when the body is larger than one value may be.
    let big = |key: &str| (vec![node.url.clone()], Record::put(key, 1, vec![7u8; 1000], "text/plain"));
    let response = post_jobs(&http, base, &[big("x"), big("y"), big("z")]).await;
    assert_eq!(response.status(), 202);
    eventually("the three copies delivered", || node.received().len() == 3).await;
    assert!(node.received().iter().all(|write| write.body == vec![7u8; 1000]));
    replicator.stop().await;
}

#[tokio::test]
async fn a_down_target_gets_retries_then_a_hinted_handoff_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let up = TargetNode::start().await;
    let down_port = reserve_port();
    let down_url = format!("http://127.0.0.1:{}", down_port.port);
    let replicator = Running::start(config(dir.path())).await;
    let http = reqwest::Client::new();

    let response = post_job(&http, &replicator.url, "k1", &[&up.url, &down_url], &[], b"v1").await;
    assert_eq!(response.status(), 202);
    eventually("the live target got the write", || up.keys().contains("k1")).await;
    // The down target's copy exhausts its retries and waits as a hinted handoff.
    let metrics = metrics_until(&http, &replicator.url, "the copy to fail", |m| m["failed_replicas"] == 1).await;
    assert_eq!(metrics["queue_size"], 1);
    assert_eq!(metrics["successful_replicas"], 1);
    assert_eq!(metrics["retries_in_progress"], 1);
    let health = json_of(&http, format!("{}/health", replicator.url)).await;
    assert_eq!(health["queue_size"], 1);

    let back = TargetNode::start_on_reserved(down_port);
    eventually("the returning target got the handed-off write", || back.keys().contains("k1")).await;
    assert_eq!(back.received()[0].body, b"v1");
    let metrics = metrics_until(&http, &replicator.url, "the queue to drain", |m| m["queue_size"] == 0).await;
    assert_eq!(metrics["successful_replicas"], 2);
    assert_eq!(metrics["failed_replicas"], 1);
    assert_eq!(metrics["retries_in_progress"], 0);
    replicator.stop().await;
}

#[tokio::test]
async fn x_ydht_wait_answers_after_n_acks_or_504_with_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let a = TargetNode::start().await;
    let b = TargetNode::start().await;
    let down_port = reserve_port();
    let down = format!("http://127.0.0.1:{}", down_port.port);
    let mut settings = config(dir.path());
    settings.wait_timeout = Duration::from_millis(300);
    let replicator = Running::start(settings).await;
    let http = reqwest::Client::new();

    let response = post_job(&http, &replicator.url, "strong", &[&a.url, &b.url, &down], &[("wait", "2")], b"x").await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["acked"], json!([2]), "{body}");
    assert!(a.keys().contains("strong") && b.keys().contains("strong"));

    let response = post_job(&http, &replicator.url, "all", &[&a.url, &b.url, &down], &[("wait", "3")], b"y").await;
    assert_eq!(response.status(), 504);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["acked"], json!([2]), "{body}");
    let job = body["job_ids"][0].as_u64().unwrap();
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("3 requested") && error.contains(&format!("job {job}: 2")), "{body}");

    // The job is durable and stays queued for the missing target.
    let metrics = json_of(&http, format!("{}/metrics", replicator.url)).await;
    assert_eq!(metrics["queue_size"], 2);

    // Several jobs in one body: the answer waits for every one of them, and names the one short.
    let to = |targets: &[&str], key: &str| {
        (targets.iter().map(|t| t.to_string()).collect(), Record::put(key, 7, &b"z"[..], "text/plain"))
    };
    let jobs = [to(&[&a.url, &b.url], "pair/1"), to(&[&b.url], "pair/2")];
    let response = common::post_jobs_request(&http, &replicator.url, SECRET, &jobs, Some(1)).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert!(body["acked"][0].as_u64() >= Some(1) && body["acked"][1] == 1, "{body}");
    assert!(b.keys().contains("pair/2"));
    let jobs = [to(&[&a.url], "short/1"), to(&[&down], "short/2")];
    let response = common::post_jobs_request(&http, &replicator.url, SECRET, &jobs, Some(1)).send().await.unwrap();
    assert_eq!(response.status(), 504);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["acked"], json!([1, 0]), "{body}");
    let short = body["job_ids"][1].as_u64().unwrap();
    assert!(body["error"].as_str().unwrap().contains(&format!("job {short}: 0")), "{body}");
    replicator.stop().await;
}

#[tokio::test]
async fn unfinished_jobs_survive_a_restart_of_the_replicator() {
    let dir = tempfile::tempdir().unwrap();
    let port = reserve_port();
    let target = format!("http://127.0.0.1:{}", port.port);
    let replicator = Running::start(config(dir.path())).await;
    let http = reqwest::Client::new();
    for i in 0..20 {
        let response = post_job(&http, &replicator.url, &format!("restart-{i}"), &[&target], &[], b"v").await;
        assert_eq!(response.status(), 202);
    }
    replicator.stop().await;

    let node = TargetNode::start_on_reserved(port);
    let replicator = Running::start(config(dir.path())).await;
    let expected: BTreeSet<String> = (0..20).map(|i| format!("restart-{i}")).collect();
    eventually("every job accepted before the restart delivered", || node.keys() == expected).await;
    metrics_until(&http, &replicator.url, "an empty queue", |m| m["queue_size"] == 0).await;
    replicator.stop().await;

    // Finished work is not delivered again by a further restart.
    let delivered = node.received().len();
    let replicator = Running::start(config(dir.path())).await;
    let health = json_of(&http, format!("{}/health", replicator.url)).await;
    assert_eq!(health["queue_size"], 0);
    assert_eq!(node.received().len(), delivered);
    replicator.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_and_nothing_is_enqueued() {
    let dir = tempfile::tempdir().unwrap();
    let node = TargetNode::start().await;
    let mut settings = config(dir.path());
    settings.max_value_bytes = 1024;
    let replicator = Running::start(settings).await;
    let http = reqwest::Client::new();
    let good = [node.url.as_str()];
    let base = replicator.url.as_str();

    let one = |write: Record| vec![(vec![node.url.clone()], write)];
    let unauthorized = common::post_jobs_request(&http, base, "wrong", &one(Record::delete("k", 1)), None);
    assert_eq!(unauthorized.send().await.unwrap().status(), 401);
    /// (name, targets, options as for `post_job`, value, expected status)
    type Case<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, &'a str)>, Vec<u8>, u16);
    let cases: Vec<Case> = vec![
        ("zero version", good.to_vec(), vec![("version", "0")], vec![], 400),
        ("no targets", vec![], vec![], vec![], 400),
        ("ftp target", vec!["ftp://127.0.0.1:1"], vec![], vec![], 400),
        ("bare host target", vec!["127.0.0.1:1"], vec![], vec![], 400),
        ("wait beyond targets", good.to_vec(), vec![("wait", "2")], vec![], 400),
        ("delete with a value", good.to_vec(), vec![("op", "delete")], b"x".to_vec(), 400),
        ("value too large", good.to_vec(), vec![], vec![0u8; 1025], 413),
    ];
    for (name, targets, options, value, status) in cases {
        let response = post_job(&http, base, "k", &targets, &options, &value).await;
        assert_eq!(response.status(), status, "{name}");
        let error: Value = response.json().await.unwrap();
        assert!(error["error"].as_str().is_some_and(|message| !message.is_empty()), "{name}: {error}");
    }
    let many: Vec<String> = (0..17).map(|i| format!("http://127.0.0.1:{}", 1000 + i)).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(post_job(&http, base, "k", &many, &[], b"").await.status(), 400);
    assert_eq!(post_job(&http, base, "bad\u{1}key", &good, &[], b"").await.status(), 400);
    assert_eq!(post_job(&http, base, "", &good, &[], b"").await.status(), 400);
    // A wait that is not a number, a body that is not a jobs body, one of format 1.
    let bad_wait = common::post_jobs_request(&http, base, SECRET, &one(Record::delete("k", 1)), None)
        .header("x-ydht-wait", "two")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_wait.status(), 400);
    let mut old =
        jobs_body::encode([(&[node.url.as_str()][..], Record::delete("k", 1).borrowed())].into_iter()).unwrap();
    old[ydht::wal::record::FILE_HEADER_BYTES - 1] = 1; // the format version byte
    let refused = post_jobs_body(&http, base, old).await;
    assert_eq!(refused.status(), 400);
    let error: Value = refused.json().await.unwrap();
    assert!(error["error"].as_str().unwrap().contains("format version 1"), "{error}");
    // A chunked body larger than the limit (no content-length) is refused too.
    let limit = ydht::daemon::replicator::routes::max_batch_body_bytes(1024);
    let chunks = futures_util::stream::iter((0..limit / 4096 + 2).map(|_| Ok::<_, std::io::Error>(vec![1u8; 4096])));
    let streamed = http
        .post(format!("{base}/jobs"))
        .header("x-cluster-secret", SECRET)
        .header("content-type", JOBS_CONTENT_TYPE)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 413);

    let metrics = json_of(&http, format!("{base}/metrics")).await;
    assert_eq!((metrics["total_replications"].as_u64(), metrics["queue_size"].as_u64()), (Some(0), Some(0)));
    // A good job still works afterwards, and it is the only write the node ever saw.
    assert_eq!(post_job(&http, base, "k", &good, &[], b"ok").await.status(), 202);
    eventually("the good job delivered", || node.received().len() == 1).await;
    assert_eq!(node.received()[0].body, b"ok");
    replicator.stop().await;
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let down_port = reserve_port();
    let down = format!("http://127.0.0.1:{}", down_port.port);
    let mut settings = config(dir.path());
    settings.max_queue = 2;
    let replicator = Running::start(settings).await;
    let http = reqwest::Client::new();
    for key in ["a", "b"] {
        assert_eq!(post_job(&http, &replicator.url, key, &[&down], &[], b"v").await.status(), 202);
    }
    let refused = post_job(&http, &replicator.url, "c", &[&down], &[], b"v").await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let metrics = json_of(&http, format!("{}/metrics", replicator.url)).await;
    assert_eq!(metrics["total_replications"], 2);
    assert_eq!(metrics["queue_size"], 2);
    replicator.stop().await;
}

#[tokio::test]
async fn metrics_and_health_keep_the_original_fields_first() {
    let dir = tempfile::tempdir().unwrap();
    let replicator = Running::start(config(dir.path())).await;
    let http = reqwest::Client::new();
    let health = json_of(&http, format!("{}/health", replicator.url)).await;
    assert_eq!(
        health,
        json!({"status": "healthy", "service": "replicator", "queue_size": 0, "capacity": 10_000,
               "queue_bytes": 0, "capacity_bytes": 256 * 1024 * 1024})
    );
    let metrics = json_of(&http, format!("{}/metrics", replicator.url)).await;
    let fields: Vec<&str> = metrics.as_object().unwrap().keys().map(String::as_str).collect();
    let original = [
        "total_replications",
        "successful_replicas",
        "failed_replicas",
        "queue_size",
        "average_ack_time_ms",
        "max_replication_lag_ms",
        "retries_in_progress",
    ];
    let additions = ["queue_capacity", "hinted_handoffs", "refused_jobs", "dropped_copies", "retargeted_copies"];
    assert_eq!(fields.iter().copied().collect::<BTreeSet<_>>(), original.iter().chain(&additions).copied().collect());
    assert!(metrics["average_ack_time_ms"].is_f64() && metrics["max_replication_lag_ms"].is_f64());
    let missing = http.get(format!("{}/nope", replicator.url)).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.json::<Value>().await.unwrap()["error"].is_string());
    replicator.stop().await;
}

/// A stand-in users service answering `GET /membership` with whatever the test sets.
struct MembershipService {
    url: String,
    current: Arc<Mutex<Membership>>,
    task: JoinHandle<()>,
}

impl Drop for MembershipService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MembershipService {
    async fn start(membership: Membership) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let current = Arc::new(Mutex::new(membership));
        let state = current.clone();
        let app = Router::new().route(
            "/membership",
            get(move |headers: HeaderMap, Query(query): Query<MembershipQuery>| {
                let state = state.clone();
                async move {
                    assert_eq!(headers["x-cluster-secret"], SECRET);
                    // A short long-poll: answer at once when there is news, else after a moment.
                    let news = |state: &Mutex<Membership>| {
                        query.after.is_none_or(|after| state.lock().unwrap().version > after)
                    };
                    let deadline = Instant::now() + Duration::from_millis(500);
                    while !news(&state) && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    axum::Json(state.lock().unwrap().clone())
                }
            }),
        );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, current, task }
    }

    fn set(&self, membership: Membership) {
        *self.current.lock().unwrap() = membership;
    }
}

fn members(version: u64, nodes: &[(&str, &str, MemberState)]) -> Membership {
    let members = nodes
        .iter()
        .map(|(id, url, state)| Member {
            id: id.to_string(),
            url: url.to_string(),
            state: *state,
            since: chrono::Utc::now(),
            progress: None,
        })
        .collect();
    Membership { version, members }
}

#[tokio::test]
async fn copies_for_a_force_removed_member_go_to_the_keys_owners_and_the_queue_drains() {
    let dir = tempfile::tempdir().unwrap();
    let (a, c) = (TargetNode::start().await, TargetNode::start().await);
    let dead_port = reserve_port();
    let dead = format!("http://127.0.0.1:{}", dead_port.port);
    let active = [("node-a", a.url.as_str(), MemberState::Active), ("node-b", dead.as_str(), MemberState::Active)];
    let users = MembershipService::start(members(1, &active)).await;
    let mut settings = config(dir.path());
    settings.users_url = Some(users.url.clone());
    settings.replicas = 2;
    let replicator = Running::start(settings).await;
    let http = reqwest::Client::new();

    // While node-b is a member, its copies wait for it (retries, then a hinted handoff).
    for i in 0..5 {
        let response = post_job(&http, &replicator.url, &format!("7/k{i}"), &[&a.url, &dead], &[], b"v").await;
        assert_eq!(response.status(), 202);
    }
    let metrics =
        metrics_until(&http, &replicator.url, "copies parked for node-b", |m| m["hinted_handoffs"] == 5).await;
    assert_eq!(metrics["queue_size"], 5);

    // node-b is removed for good and node-c takes its place: the copies go to the keys' owners now.
    users.set(members(
        2,
        &[
            ("node-a", a.url.as_str(), MemberState::Active),
            ("node-b", dead.as_str(), MemberState::Down),
            ("node-c", c.url.as_str(), MemberState::Joining),
        ],
    ));
    let metrics = metrics_until(&http, &replicator.url, "the queue to drain", |m| m["queue_size"] == 0).await;
    assert_eq!(metrics["retargeted_copies"], 5, "{metrics}");
    assert_eq!(metrics["retries_in_progress"], 0, "{metrics}");
    let expected: BTreeSet<String> = (0..5).map(|i| format!("7/k{i}")).collect();
    assert_eq!(c.keys(), expected, "node-c, an owner of every key in the 2-node ring, got each copy");
    assert_eq!(a.keys(), expected);

    // A job from a gateway that has not heard of the change yet goes to the current owners at once.
    let key = "7/late".to_string();
    let response = post_job(&http, &replicator.url, &key, &[&dead], &[("wait", "1")], b"late").await;
    assert_eq!(response.status(), 202, "acknowledged by an owner, not stuck on the dead node");
    eventually("the late job on node-c", || c.keys().contains(&key)).await;
    metrics_until(&http, &replicator.url, "the queue to drain again", |m| m["queue_size"] == 0).await;
    replicator.stop().await;
}

#[tokio::test]
async fn copies_for_a_member_removed_while_the_replicator_was_down_drain_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (a, c) = (TargetNode::start().await, TargetNode::start().await);
    let dead_port = reserve_port();
    let dead = format!("http://127.0.0.1:{}", dead_port.port);
    // Queued before the replicator knew any membership.
    let replicator = Running::start(config(dir.path())).await;
    let http = reqwest::Client::new();
    for i in 0..5 {
        let response = post_job(&http, &replicator.url, &format!("7/r{i}"), &[&a.url, &dead], &[], b"v").await;
        assert_eq!(response.status(), 202);
    }
    eventually("the live copies delivered", || a.keys().len() == 5).await;
    replicator.stop().await;

    let nodes = [
        ("node-a", a.url.as_str(), MemberState::Active),
        ("node-b", dead.as_str(), MemberState::Down),
        ("node-c", c.url.as_str(), MemberState::Active),
    ];
    let users = MembershipService::start(members(4, &nodes)).await;
    let mut settings = config(dir.path());
    settings.users_url = Some(users.url.clone());
    settings.replicas = 2;
    let replicator = Running::start(settings.clone()).await;
    let metrics = metrics_until(&http, &replicator.url, "the recovered queue to drain", |m| m["queue_size"] == 0).await;
    assert_eq!(metrics["retargeted_copies"], 5, "{metrics}");
    assert_eq!(c.keys(), (0..5).map(|i| format!("7/r{i}")).collect());
    replicator.stop().await;

    // The dead node's copies are finished in the log: nothing comes back on the next start.
    let replicator = Running::start(settings).await;
    let health = json_of(&http, format!("{}/health", replicator.url)).await;
    assert_eq!(health["queue_size"], 0, "{health}");
    replicator.stop().await;
}

#[tokio::test]
async fn a_full_queue_makes_health_degraded_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let down_port = reserve_port();
    let down = format!("http://127.0.0.1:{}", down_port.port);
    let mut settings = config(dir.path());
    settings.max_queue = 2;
    let replicator = Running::start(settings).await;
    let http = reqwest::Client::new();
    assert_eq!(post_job(&http, &replicator.url, "a", &[&down], &[], b"v").await.status(), 202);
    let health = json_of(&http, format!("{}/health", replicator.url)).await;
    assert_eq!((health["status"].as_str(), health["capacity"].as_u64()), (Some("healthy"), Some(2)), "{health}");
    assert_eq!(post_job(&http, &replicator.url, "b", &[&down], &[], b"v").await.status(), 202);
    assert_eq!(post_job(&http, &replicator.url, "c", &[&down], &[], b"v").await.status(), 503);
    let health = json_of(&http, format!("{}/health", replicator.url)).await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!((health["service"].as_str(), health["queue_size"].as_u64()), (Some("replicator"), Some(2)));
    assert!(health["reason"].as_str().unwrap().contains("FULL: 2 of 2 jobs"), "{health}");
    let metrics = json_of(&http, format!("{}/metrics", replicator.url)).await;
    assert_eq!((metrics["refused_jobs"].as_u64(), metrics["queue_capacity"].as_u64()), (Some(1), Some(2)));
    replicator.stop().await;
}

#[tokio::test]
async fn a_batch_a_node_refuses_whole_is_sent_copy_by_copy_and_the_bad_copy_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let node = TargetNode::start().await;
    let replicator = Running::start(config(dir.path())).await;
    let http = reqwest::Client::new();
    let write = |key: &str| (vec![node.url.clone()], Record::put(key, 5, &b"v"[..], "text/plain"));
    let response = post_jobs(&http, &replicator.url, &[write("7/one"), write("refused/bad"), write("8/two")]).await;
    assert_eq!(response.status(), 202);
    let metrics = metrics_until(&http, &replicator.url, "the queue to drain", |m| m["queue_size"] == 0).await;
    assert_eq!(node.keys(), ["7/one", "8/two", "refused/bad"].map(String::from).into(), "each sent alone once refused");
    assert_eq!(node.received().iter().filter(|write| write.op == "put").count(), 2);
    assert_eq!((metrics["dropped_copies"].as_u64(), metrics["successful_replicas"].as_u64()), (Some(1), Some(2)));
    replicator.stop().await;
}

/// The real binary, killed on drop.
struct Binary {
    child: Child,
    url: String,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Binary {
    fn start(data_dir: &Path, log_name: &str) -> Self {
        let log = std::fs::File::create(data_dir.join(log_name)).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ydht"))
            .args(["serve", "replicator", "--port", "0", "--retry-base", "20ms", "--probe-interval", "50ms"])
            .arg("--data-dir")
            .arg(data_dir)
            .env("YDHT_CLUSTER_SECRET", SECRET)
            .env("RUST_LOG", "info")
            .env_remove("REPLICATOR_PORT")
            .env_remove("YDHT_MAX_VALUE_BYTES")
            .env_remove("YDHT_REPLICATOR_MAX_QUEUE")
            .env_remove("YDHT_REPLICATOR_MAX_QUEUE_BYTES")
            .env_remove("YDHT_REPLICATOR_COMPACT_BYTES")
            .env_remove("YDHT_REPLICATOR_REQUEST_TIMEOUT")
            .env_remove("YDHT_REPLICATOR_WAIT_TIMEOUT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let address: SocketAddr = line
            .trim()
            .strip_prefix("ydht replicator listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Self { child, url: format!("http://{address}") }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_202_loses_no_job() {
    let dir = tempfile::tempdir().unwrap();
    let live = TargetNode::start().await;
    let down_port = reserve_port();
    let down = format!("http://127.0.0.1:{}", down_port.port);
    let replicator = Binary::start(dir.path(), "first.log");
    let http = reqwest::Client::new();

    let posts = (0..40).map(|i| {
        let (http, base, targets) = (http.clone(), replicator.url.clone(), [live.url.clone(), down.clone()]);
        async move {
            let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
            post_job(&http, &base, &format!("job-{i}"), &targets, &[], format!("value-{i}").as_bytes()).await.status()
        }
    });
    for status in futures_util::future::join_all(posts).await {
        assert_eq!(status, 202);
    }
    // SIGKILL right after the last 202: no chance to flush anything more.
    drop(replicator);

    let back = TargetNode::start_on_reserved(down_port);
    let replicator = Binary::start(dir.path(), "second.log");
    let expected: BTreeSet<String> = (0..40).map(|i| format!("job-{i}")).collect();
    eventually("every accepted job on the target that was down", || back.keys() == expected).await;
    eventually("every accepted job on the live target", || live.keys() == expected).await;
    for write in back.received() {
        let n = write.key.strip_prefix("job-").unwrap();
        assert_eq!(write.body, format!("value-{n}").into_bytes());
    }
    metrics_until(&http, &replicator.url, "an empty queue", |m| m["queue_size"] == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_cleanly_and_keeps_unfinished_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let down_port = reserve_port();
    let down = format!("http://127.0.0.1:{}", down_port.port);
    let mut replicator = Binary::start(dir.path(), "first.log");
    let http = reqwest::Client::new();
    for i in 0..5 {
        assert_eq!(post_job(&http, &replicator.url, &format!("term-{i}"), &[&down], &[], b"v").await.status(), 202);
    }
    let pid = i32::try_from(replicator.child.id()).unwrap();
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = replicator.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the replicator did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status}");

    let back = TargetNode::start_on_reserved(down_port);
    let _replicator = Binary::start(dir.path(), "second.log");
    let expected: BTreeSet<String> = (0..5).map(|i| format!("term-{i}")).collect();
    eventually("every job accepted before SIGTERM delivered after restart", || back.keys() == expected).await;
}

#[tokio::test]
async fn a_copy_a_node_refuses_for_good_is_dropped_not_retried_forever() {
    let dir = tempfile::tempdir().unwrap();
    let node = TargetNode::start().await;
    let mut settings = config(dir.path());
    settings.wait_timeout = Duration::from_secs(20);
    let replicator = Running::start(settings.clone()).await;
    let http = reqwest::Client::new();

    let response = post_job(&http, &replicator.url, "refused/k", &[&node.url], &[("wait", "1")], b"v").await;
    // The refusal settles the wait at once (no 20 s timeout): 504 with no acknowledgement.
    assert_eq!(response.status(), 504);
    assert_eq!(response.json::<Value>().await.unwrap()["acked"], json!([0]));
    let metrics = metrics_until(&http, &replicator.url, "the refusal", |m| m["queue_size"] == 0).await;
    assert_eq!((metrics["failed_replicas"].as_u64(), metrics["successful_replicas"].as_u64()), (Some(1), Some(0)));
    assert_eq!(metrics["retries_in_progress"], 0);
    replicator.stop().await;

    // The refused copy is finished in the log: a restart does not send it again.
    assert_eq!(node.received().len(), 1);
    let replicator = Running::start(settings).await;
    let health = json_of(&http, format!("{}/health", replicator.url)).await;
    assert_eq!(health["queue_size"], 0);
    let response = post_job(&http, &replicator.url, "fine", &[&node.url], &[("wait", "1")], b"v").await;
    assert_eq!(response.status(), 202);
    let ops: Vec<&str> = node.received().iter().map(|write| write.op).collect();
    assert_eq!(ops, vec!["refused", "put"]);
    let metrics = json_of(&http, format!("{}/metrics", replicator.url)).await;
    assert_eq!(metrics["failed_replicas"], 0);
    replicator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_the_middle_of_a_load_loses_no_accepted_job() {
    let dir = tempfile::tempdir().unwrap();
    let live = TargetNode::start().await;
    let down_port = reserve_port();
    let targets = [live.url.clone(), format!("http://127.0.0.1:{}", down_port.port)];
    let replicator = Binary::start(dir.path(), "first.log");
    let accepted = Arc::new(Mutex::new(BTreeSet::new()));
    let http = reqwest::Client::new();

    // 8 writers post jobs as fast as they can until the process dies under them.
    let writers: Vec<JoinHandle<()>> = (0..8)
        .map(|writer| {
            let (http, base, targets, accepted) =
                (http.clone(), replicator.url.clone(), targets.clone(), accepted.clone());
            tokio::spawn(async move {
                let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
                for i in 0.. {
                    let key = format!("load-{writer}-{i}");
                    match try_post_job(&http, &base, &key, &targets, &[], key.as_bytes()).await {
                        Ok(response) if response.status() == 202 => {
                            accepted.lock().unwrap().insert(key);
                        }
                        _ => return,
                    }
                }
            })
        })
        .collect();
    eventually("some jobs accepted", || accepted.lock().unwrap().len() >= 200).await;
    drop(replicator);
    for writer in writers {
        writer.await.unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();

    let back = TargetNode::start_on_reserved(down_port);
    let replicator = Binary::start(dir.path(), "second.log");
    eventually("every accepted job on the target that was down", || back.keys().is_superset(&accepted)).await;
    eventually("every accepted job on the live target", || live.keys().is_superset(&accepted)).await;
    metrics_until(&http, &replicator.url, "an empty queue", |m| m["queue_size"] == 0).await;
}
