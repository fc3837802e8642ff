//! The replicator against real storage nodes (in-process, real WALs and HTTP),
//! read back through `ydht::nodeclient::NodeClient`.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tokio::net::TcpListener;
use ydht::config::Secret;
use ydht::daemon::node::{self, NodeConfig};
use ydht::daemon::replicator::{self, ReplicatorConfig};
use ydht::nodeclient::NodeClient;
use ydht::shutdown::Shutdown;
use ydht::wal::{Record, SyncMode};
use ydht::wire::read::{Found, Lookup};

use crate::common;
use crate::in_process;
use in_process::InProcess;

const SECRET: &str = "replicator-nodes-secret";

async fn bind(port: u16) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => return listener,
            Err(error) => {
                assert!(Instant::now() < deadline, "cannot bind port {port}: {error}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn start_node(data_dir: &Path, id: &str, port: u16) -> InProcess {
    let config = NodeConfig {
        node_id: id.to_string(),
        data_dir: data_dir.join(id),
        cluster_secret: Secret::new(SECRET),
        max_value_bytes: 1 << 20,
        wal_max_bytes: 64 << 20,
        sync_mode: SyncMode::Group,
        salvage_wal: false,
        feed_retention: ydht::wal::segment::Retention { time: std::time::Duration::from_secs(600), changes: 1_000_000 },
        tombstone_grace: Duration::from_secs(3600),
        sweep_interval: Duration::from_secs(1),
        tls: None,
        anti_entropy: None,
        membership: None,
    };
    let listener = bind(port).await;
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = Shutdown::new();
    InProcess::spawn(url, shutdown.clone(), node::serve(config, listener, shutdown))
}

async fn start_replicator(data_dir: &Path) -> InProcess {
    let mut config = ReplicatorConfig::with_defaults(data_dir.to_path_buf(), Secret::new(SECRET));
    config.retry_base = Duration::from_millis(20);
    config.probe_interval = Duration::from_millis(50);
    let listener = bind(0).await;
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = Shutdown::new();
    InProcess::spawn(url, shutdown.clone(), replicator::serve(config, listener, shutdown))
}

/// One job through `POST /jobs`: `op` (`put` or `delete`) of `key` at `version`
/// to `targets`, with `value`, a content type and an expiry when given.
async fn post(
    http: &reqwest::Client,
    replicator: &str,
    key: &str,
    (op, version): (&str, u64),
    targets: &[&str],
    (content_type, expires_at): (&str, Option<u64>),
    value: &'static [u8],
) -> Value {
    let write = match op {
        "delete" => Record::delete(key, version),
        _ => Record::put(key, version, value, content_type).with_expiry(expires_at),
    };
    let targets = targets.iter().map(|target| target.to_string()).collect();
    let response = common::post_jobs_request(http, replicator, SECRET, &[(targets, write)], None).send().await.unwrap();
    assert_eq!(response.status(), 202);
    response.json().await.unwrap()
}

async fn read(client: &NodeClient, node: &str, key: &str) -> Lookup {
    client.get(node, key).await.unwrap()
}

async fn eventually_reads(client: &NodeClient, node: &str, key: &str, expected: &Lookup) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = read(client, node, key).await;
        if &got == expected {
            return;
        }
        assert!(Instant::now() < deadline, "{node} holds {got:?} for {key:?}, expected {expected:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn queue_drains(http: &reqwest::Client, replicator: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics: Value = http.get(format!("{replicator}/metrics")).send().await.unwrap().json().await.unwrap();
        if metrics["queue_size"] == 0 {
            return metrics;
        }
        assert!(Instant::now() < deadline, "queue did not drain: {metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_real_nodes_with_versions_expiry_and_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = [
        start_node(dir.path(), "node-1", 0).await,
        start_node(dir.path(), "node-2", 0).await,
        start_node(dir.path(), "node-3", 0).await,
    ];
    let targets: Vec<&str> = nodes.iter().map(|node| node.url.as_str()).collect();
    let replicator = start_replicator(dir.path()).await;
    let http = reqwest::Client::new();
    let client = NodeClient::new(Secret::new(SECRET), Duration::from_secs(5));
    let expires_at = 4_000_000_000_000u64;

    let key = "42/user:1/profile with space";
    post(
        &http,
        &replicator.url,
        key,
        ("put", (5000 << 16) | 1),
        &targets,
        ("application/json", Some(expires_at)),
        b"{\"name\":\"ada\"}",
    )
    .await;
    // An older version arriving later is acknowledged but does not win.
    post(
        &http,
        &replicator.url,
        key,
        ("put", (4000 << 16) | 1),
        &targets,
        ("application/octet-stream", None),
        b"stale",
    )
    .await;
    post(&http, &replicator.url, "42/doomed", ("put", 10 << 16), &targets, ("application/octet-stream", None), b"x")
        .await;
    post(&http, &replicator.url, "42/doomed", ("delete", 11 << 16), &targets, ("application/octet-stream", None), b"")
        .await;

    let current = Lookup::Found(Found {
        value: Bytes::from_static(b"{\"name\":\"ada\"}"),
        version: (5000 << 16) | 1,
        expires_at: Some(4_000_000_000_000),
        content_type: "application/json".into(),
    });
    let metrics = queue_drains(&http, &replicator.url).await;
    assert_eq!(metrics["successful_replicas"], 12);
    for node in &targets {
        eventually_reads(&client, node, key, &current).await;
        assert_eq!(read(&client, node, "42/doomed").await, Lookup::Tombstone(11 << 16));
        let page = client.keys(node, "42/", 10, None).await.unwrap();
        assert_eq!(page.keys.iter().map(|entry| entry.key.as_str()).collect::<Vec<_>>(), vec![key]);
        assert_eq!(client.health(node).await.unwrap().status, "healthy");
        assert_eq!(client.metrics(node).await.unwrap().key_count, 1);
    }
    replicator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_node_that_was_down_receives_its_writes_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let up = start_node(dir.path(), "node-1", 0).await;
    let returning = start_node(dir.path(), "node-2", 0).await;
    let port = reqwest::Url::parse(&returning.url).unwrap().port().unwrap();
    returning.stop().await;
    let down_url = format!("http://127.0.0.1:{port}");
    let replicator = start_replicator(dir.path()).await;
    let http = reqwest::Client::new();
    let client = NodeClient::new(Secret::new(SECRET), Duration::from_secs(5));

    for i in 0..10u64 {
        let key = format!("9/while-down-{i}");
        post(
            &http,
            &replicator.url,
            &key,
            ("put", (100 + i) << 16),
            &[&up.url, &down_url],
            ("application/octet-stream", None),
            b"v",
        )
        .await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics: Value =
            http.get(format!("{}/metrics", replicator.url)).send().await.unwrap().json().await.unwrap();
        if metrics["failed_replicas"] == 10 {
            assert_eq!(metrics["queue_size"], 10);
            break;
        }
        assert!(Instant::now() < deadline, "copies to the down node did not become handoffs: {metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let back = start_node(dir.path(), "node-2", port).await;
    queue_drains(&http, &replicator.url).await;
    for i in 0..10u64 {
        let key = format!("9/while-down-{i}");
        match read(&client, &back.url, &key).await {
            Lookup::Found(stored) => assert_eq!((stored.version, &stored.value[..]), ((100 + i) << 16, &b"v"[..])),
            other => panic!("{key} on the returned node: {other:?}"),
        }
    }
    replicator.stop().await;
}
