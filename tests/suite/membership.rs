//! Online membership changes: the control-plane endpoints of the users service
//! (on SQLite and on PostgreSQL), and real clusters that grow and shrink under
//! load: no acknowledged key is ever unreadable, every key ends on exactly its
//! N owners, and a node killed mid-rebalance finishes the move after a restart.

use crate::common;
use crate::users_support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Cluster, Service, http, start_cluster_with, tenant};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use users_support::{Ctx, assert_error};
use ydht::membership::{MemberState, Membership};
use ydht::ring::{NodeInfo, Ring};

// ---------------------------------------------------------------- control plane

both_backends!(membership_endpoints);

async fn membership_endpoints(ctx: Ctx) {
    let s = ctx.start().await;
    let get = |after: Option<u64>, wait: u64| {
        let mut url = format!("{}/membership", s.url);
        if let Some(after) = after {
            url.push_str(&format!("?after={after}&wait={wait}"));
        }
        s.client.get(url).header("x-cluster-secret", &s.cluster_secret)
    };
    let membership = |answer: &users_support::Answer| -> Membership {
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        serde_json::from_value(answer.json.clone()).unwrap()
    };
    let node = |i: u32| json!({"id": format!("node-{i}"), "url": format!("http://127.0.0.1:{}", 9000 + i)});

    // The cluster secret guards every endpoint.
    let refused = s.send(s.client.get(format!("{}/membership", s.url)).header("x-cluster-secret", "nope")).await;
    assert_error(&refused, StatusCode::UNAUTHORIZED);
    let empty = membership(&s.send(get(None, 0)).await);
    assert_eq!(empty, Membership { version: 0, members: vec![] });

    // Seeding fills an empty membership, once.
    let seeded = membership(&s.internal("/membership/seed", json!({"nodes": [node(1), node(2), node(3)]})).await);
    assert_eq!(seeded.version, 1);
    assert!(seeded.members.iter().all(|member| member.state == MemberState::Active));
    assert_eq!(seeded.members.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["node-1", "node-2", "node-3"]);
    let twice = json!({"nodes": [node(1), node(1)]});
    assert_error(&s.internal("/membership/seed", twice).await, StatusCode::BAD_REQUEST);
    let again = membership(&s.internal("/membership/seed", json!({"nodes": [node(1), node(7)]})).await);
    assert_eq!(again.version, 1, "a second seed changes nothing");

    // Joins: a new node is joining; the same join again is a no-op; bad input is refused.
    let joined = membership(&s.internal("/membership/join", node(4)).await);
    assert_eq!((joined.version, joined.member("node-4").unwrap().state), (2, MemberState::Joining));
    assert_eq!(membership(&s.internal("/membership/join", node(4)).await).version, 2);
    let taken = json!({"id": "node-9", "url": "http://127.0.0.1:9001"});
    assert_error(&s.internal("/membership/join", taken).await, StatusCode::CONFLICT);
    assert_error(
        &s.internal("/membership/join", json!({"id": "bad id!", "url": "http://x:1"})).await,
        StatusCode::BAD_REQUEST,
    );
    assert_error(&s.internal("/membership/join", json!({"id": "n", "url": "ftp://x"})).await, StatusCode::BAD_REQUEST);
    assert_error(&s.internal("/membership/join", json!({"url": "http://x:1"})).await, StatusCode::BAD_REQUEST);
    assert_error(&s.internal("/membership/leave", json!({"id": "node-77"})).await, StatusCode::NOT_FOUND);

    // A long-poll wakes up when the membership changes.
    let waiting = tokio::spawn({
        let request = get(Some(2), 20);
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.json::<Membership>().await.unwrap())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let leaving = membership(&s.internal("/membership/leave", json!({"id": "node-1"})).await);
    assert_eq!((leaving.version, leaving.member("node-1").unwrap().state), (3, MemberState::Leaving));
    let (status, woken) = tokio::time::timeout(Duration::from_secs(15), waiting).await.unwrap().unwrap();
    assert_eq!((status, woken.version), (StatusCode::OK, 3));

    // Progress: a stale version is ignored; the last "done" of the new ring completes the change.
    let report = |id: &str, version: u64, done: bool| json!({"node_id": id, "version": version, "arcs_total": 8, "arcs_done": if done { 8 } else { 3 }, "keys_moved": 5, "done": done});
    assert_eq!(membership(&s.internal("/membership/progress", report("node-2", 2, true)).await).version, 3);
    let bad =
        json!({"node_id": "node-2", "version": 3, "arcs_total": 1, "arcs_done": 2, "keys_moved": 0, "done": false});
    assert_error(&s.internal("/membership/progress", bad).await, StatusCode::BAD_REQUEST);
    let partial = membership(&s.internal("/membership/progress", report("node-4", 3, false)).await);
    assert_eq!(partial.arcs_moved(), (3, 8));
    for id in ["node-2", "node-3", "node-4"] {
        s.internal("/membership/progress", report(id, 3, true)).await;
    }
    let settled = membership(&s.send(get(None, 0)).await);
    assert_eq!(settled.version, 4);
    assert!(settled.is_settled());
    assert_eq!(settled.members.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["node-2", "node-3", "node-4"]);

    // A second service on the same database sees changes made through the first.
    let other = ctx.start().await;
    let watching = tokio::spawn({
        let request = other
            .client
            .get(format!("{}/membership?after=4&wait=20", other.url))
            .header("x-cluster-secret", &other.cluster_secret);
        async move { request.send().await.unwrap().json::<Membership>().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    membership(&s.internal("/membership/leave", json!({"id": "node-3", "force": true})).await);
    let seen = tokio::time::timeout(Duration::from_secs(15), watching).await.unwrap().unwrap();
    assert_eq!((seen.version, seen.member("node-3").unwrap().state), (5, MemberState::Down));

    // Another schema (or cluster) in the same PostgreSQL database notifies on the same channel with
    // its own version: that wakes no watcher of this one early.
    if let ydht::daemon::users::db::Db::Postgres(pool) = ctx.db().await {
        let started = Instant::now();
        let waiting = tokio::spawn(get(Some(5), 2).send());
        sqlx::query("SELECT pg_notify($1, '99')")
            .bind(ydht::daemon::users::membership::CHANNEL)
            .execute(&pool)
            .await
            .unwrap();
        let answer = waiting.await.unwrap().unwrap().json::<Membership>().await.unwrap();
        assert_eq!(answer.version, 5);
        assert!(started.elapsed() >= Duration::from_millis(1900), "woken after {:?}", started.elapsed());
    }
}

// ---------------------------------------------------------------- real clusters

const REPLICAS: usize = 3;
const VNODES: usize = 150;

struct Harness {
    cluster: Cluster,
    client: reqwest::Client,
    secret: String,
    api_key: String,
    user_id: i64,
}

impl Harness {
    async fn start() -> Harness {
        let cluster = start_cluster_with(&[("RATE_LIMIT_PER_MINUTE", "0")]);
        let client = http();
        let secret = cluster.secret();
        let (account, api_key) = tenant(&client, &cluster.users, "mover").await;
        Harness { cluster, client, secret, api_key, user_id: account.user_id }
    }

    fn node_env(&self, logging: bool) -> Vec<(&'static str, String)> {
        let mut env = vec![("YDHT_CLUSTER_SECRET", self.secret.clone())];
        if logging {
            env.push(("RUST_LOG", "info".to_string()));
        }
        env
    }

    /// `ydht serve node --join` with its data under `dir`.
    fn spawn_node(
        &self,
        id: &str,
        dir: &std::path::Path,
        port: u16,
        extra: &[&str],
        log: Option<&std::path::Path>,
    ) -> (Service, String) {
        let port = port.to_string();
        let dir = dir.to_str().unwrap();
        let mut args =
            vec!["serve", "node", "--node-id", id, "--port", &port, "--join", &self.cluster.gateway, "--data-dir", dir];
        args.extend_from_slice(extra);
        let env = self.node_env(log.is_some());
        let env: Vec<(&str, &str)> = env.iter().map(|(name, value)| (*name, value.as_str())).collect();
        match log {
            Some(log) => Service::spawn_one_logging_to(&args, &env, log),
            None => Service::spawn_one(&args, &env),
        }
    }

    async fn membership(&self) -> Membership {
        let response = self
            .client
            .get(format!("{}/membership", self.cluster.gateway))
            .header("x-cluster-secret", &self.secret)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// Waits until the membership is settled with exactly `ids` as members.
    async fn wait_settled(&self, ids: &[&str], timeout: Duration) -> Membership {
        let deadline = Instant::now() + timeout;
        loop {
            let membership = self.membership().await;
            let members: BTreeSet<&str> = membership.members.iter().map(|m| m.id.as_str()).collect();
            if membership.is_settled() && members == ids.iter().copied().collect() {
                return membership;
            }
            assert!(Instant::now() < deadline, "membership never settled on {ids:?}: {membership:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn put(&self, key: &str, value: &str, strong: bool) -> StatusCode {
        let request = self
            .client
            .put(format!("{}/v1/kv/{key}", self.cluster.gateway))
            .header("x-api-key", &self.api_key)
            .header("x-consistency", if strong { "strong" } else { "eventual" })
            .body(value.to_string());
        request.send().await.map_or(StatusCode::BAD_GATEWAY, |response| response.status())
    }

    async fn get(&self, key: &str, strong: bool) -> (StatusCode, String) {
        let request = self
            .client
            .get(format!("{}/v1/kv/{key}", self.cluster.gateway))
            .header("x-api-key", &self.api_key)
            .header("x-consistency", if strong { "strong" } else { "eventual" });
        match request.send().await {
            Ok(response) => (response.status(), response.text().await.unwrap_or_default()),
            Err(error) => (StatusCode::BAD_GATEWAY, error.to_string()),
        }
    }

    async fn preload(&self, prefix: &str, count: usize) -> Vec<String> {
        let keys: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
        let results: Vec<StatusCode> = futures_util::stream::iter(keys.iter())
            .map(|key| async move { self.put(key, &format!("value of {key}"), false).await })
            .buffer_unordered(16)
            .collect()
            .await;
        assert!(results.iter().all(|status| *status == StatusCode::OK), "preload failed: {results:?}");
        keys
    }

    /// A node's live keys of this tenant.
    async fn node_keys(&self, url: &str) -> BTreeSet<String> {
        let prefix = format!("{}/", self.user_id);
        let mut keys = BTreeSet::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = vec![("prefix", prefix.clone()), ("limit", "1000".to_string())];
            if let Some(cursor) = &cursor {
                query.push(("cursor", cursor.clone()));
            }
            let page: Value = self
                .client
                .get(format!("{url}/keys"))
                .query(&query)
                .header("x-cluster-secret", &self.secret)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            for entry in page["keys"].as_array().unwrap() {
                keys.insert(entry["key"].as_str().unwrap().to_string());
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return keys,
            }
        }
    }

    /// Where each member's keys should be: node id → storage keys it owns.
    fn expected(&self, membership: &Membership, keys: &[String]) -> BTreeMap<String, BTreeSet<String>> {
        let ring = Ring::new(membership.new_nodes(), VNODES);
        let mut expected: BTreeMap<String, BTreeSet<String>> =
            membership.members.iter().map(|member| (member.id.clone(), BTreeSet::new())).collect();
        for key in keys {
            let storage = format!("{}/{key}", self.user_id);
            for owner in ring.owners(storage.as_bytes(), REPLICAS) {
                expected.get_mut(&owner.id).unwrap().insert(storage.clone());
            }
        }
        expected
    }

    /// Waits until every key is on exactly its N owners among the members (clean-up runs in the background).
    async fn assert_placed(&self, membership: &Membership, keys: &[String]) {
        let expected = self.expected(membership, keys);
        let members: Vec<NodeInfo> = membership.members.iter().map(|member| member.info()).collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut wrong = Vec::new();
            for member in &members {
                let actual = self.node_keys(&member.url).await;
                let want = &expected[&member.id];
                if actual != *want {
                    let missing = want.difference(&actual).count();
                    let extra = actual.difference(want).count();
                    wrong.push(format!("{}: {missing} missing, {extra} extra", member.id));
                }
            }
            if wrong.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "keys not on exactly their owners: {wrong:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn assert_all_readable(&self, keys: &[String]) {
        let results: Vec<(String, StatusCode, String)> = futures_util::stream::iter(keys.iter())
            .map(|key| async move {
                let (status, body) = self.get(key, false).await;
                (key.clone(), status, body)
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let bad: Vec<_> = results
            .iter()
            .filter(|(key, status, body)| *status != StatusCode::OK || !body.ends_with(&format!("of {key}")))
            .collect();
        assert!(bad.is_empty(), "{} of {} keys unreadable, e.g. {:?}", bad.len(), keys.len(), bad.first());
    }
}

/// What the load tasks saw.
#[derive(Default)]
struct Ledger {
    acked: Mutex<Vec<String>>,
    failures: Mutex<Vec<String>>,
}

/// A client task: writes new keys (eventual and strong, alternately), records the acknowledged
/// ones, and reads back earlier acknowledged ones; every failure is recorded.
async fn load(harness: Arc<Harness>, task: usize, ledger: Arc<Ledger>, stop: Arc<AtomicBool>) {
    let mut mine: Vec<String> = Vec::new();
    let mut n = 0usize;
    while !stop.load(Ordering::Acquire) {
        let key = format!("load-{task}-{n}");
        let strong = n % 2 == 1;
        match harness.put(&key, &format!("value of {key}"), strong).await {
            StatusCode::OK => mine.push(key),
            status => ledger.failures.lock().unwrap().push(format!("write {key} (strong: {strong}): {status}")),
        }
        if !mine.is_empty() {
            // The newest key, and one older one.
            for pick in [mine.len() - 1, (n * 7919) % mine.len()] {
                let key = &mine[pick];
                let (status, body) = harness.get(key, n % 3 == 0).await;
                if status != StatusCode::OK || !body.ends_with(&format!("of {key}")) {
                    ledger.failures.lock().unwrap().push(format!("read {key}: {status} {body}"));
                }
            }
        }
        n += 1;
    }
    ledger.acked.lock().unwrap().extend(mine);
}

fn ydht_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ydht"))
        .args(args)
        .env_remove("YDHT_CLUSTER_SECRET")
        .env("NO_COLOR", "1")
        .output()
        .expect("run ydht")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_stay_readable_while_nodes_join_and_leave() {
    let harness = Arc::new(Harness::start().await);
    let dirs = tempfile::tempdir().unwrap();
    let mut keys = harness.preload("before", 300).await;
    let first = harness.wait_settled(&["node-1", "node-2", "node-3"], Duration::from_secs(30)).await;
    harness.assert_placed(&first, &keys).await;

    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> =
        (0..4).map(|task| tokio::spawn(load(harness.clone(), task, ledger.clone(), stop.clone()))).collect();

    // A 4th and a 5th node join (each registers itself with --join).
    // Throttled, so the moves overlap plenty of client traffic.
    let slow: &[&str] = &["--rebalance-rate", "500"];
    let (_node4, _) = harness.spawn_node("node-4", &dirs.path().join("4"), 0, slow, None);
    harness.wait_settled(&["node-1", "node-2", "node-3", "node-4"], Duration::from_secs(60)).await;
    let (_node5, node5_url) = harness.spawn_node("node-5", &dirs.path().join("5"), 0, slow, None);
    harness.wait_settled(&["node-1", "node-2", "node-3", "node-4", "node-5"], Duration::from_secs(60)).await;

    // `cluster join` of a member is a no-op; `cluster leave` waits until node-2's keys have moved.
    let gateway = harness.cluster.gateway.clone();
    let secret = harness.secret.clone();
    let joined = tokio::task::spawn_blocking({
        let (gateway, secret, url) = (gateway.clone(), secret.clone(), node5_url.clone());
        move || ydht_cli(&["cluster", "join", &url, "--gateway", &gateway, "--cluster-secret", &secret])
    })
    .await
    .unwrap();
    assert!(joined.status.success(), "{}", String::from_utf8_lossy(&joined.stderr));
    let left = tokio::task::spawn_blocking({
        let (gateway, secret) = (gateway.clone(), secret.clone());
        move || ydht_cli(&["cluster", "leave", "node-2", "--gateway", &gateway, "--cluster-secret", &secret])
    })
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&left.stdout);
    assert!(left.status.success(), "{said} {}", String::from_utf8_lossy(&left.stderr));
    assert!(said.contains("settled") && !said.contains("node-2"), "{said}");
    let last = harness.wait_settled(&["node-1", "node-3", "node-4", "node-5"], Duration::from_secs(10)).await;

    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Release);
    for task in tasks {
        task.await.unwrap();
    }
    let failures = ledger.failures.lock().unwrap().clone();
    let acked = ledger.acked.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failures under load, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(acked.len() > 20, "the load wrote only {} keys", acked.len());
    println!("{} keys acknowledged under load", acked.len());
    keys.extend(acked);
    harness.assert_all_readable(&keys).await;
    harness.assert_placed(&last, &keys).await;

    // A stray copy on a node that does not own the key (as a late write by the old ring would
    // leave) is handed to the owners and dropped there.
    let storage_key = format!("{}/stray", harness.user_id);
    let ring = Ring::new(last.new_nodes(), VNODES);
    let owners = ring.owners(storage_key.as_bytes(), REPLICAS);
    let outsider = last.members.iter().find(|member| !owners.iter().any(|owner| owner.id == member.id)).unwrap();
    let version = ydht::hlc::from_millis(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64,
    );
    let stored = harness
        .client
        .put(format!("{}/store/{}", outsider.url, storage_key.replace('/', "%2F")))
        .header("x-cluster-secret", &harness.secret)
        .header("x-version", version.to_string())
        .body("value of stray")
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), StatusCode::OK);
    keys.push("stray".to_string());
    harness.assert_placed(&last, &keys).await;
    harness.assert_all_readable(&keys).await;

    let status = ydht_cli(&["cluster", "status", "--gateway", &gateway, "--cluster-secret", &secret]);
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success() && shown.contains("node-5") && shown.contains("settled"), "{shown}");

    // A node that does not follow the membership cannot be joined: it could never move its share.
    let dir = dirs.path().join("9");
    let env = [("YDHT_CLUSTER_SECRET", secret.as_str())];
    let (_static_node, url) = Service::spawn_one(
        &["serve", "node", "--node-id", "node-9", "--port", "0", "--data-dir", dir.to_str().unwrap()],
        &env,
    );
    let refused = ydht_cli(&["cluster", "join", &url, "--gateway", &gateway, "--cluster-secret", &secret]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && said.contains("--join"), "{said}");
    assert!(harness.membership().await.member("node-9").is_none());
}

/// The membership endpoints of the gateway and the nodes' `/scan` refuse bad input with a 4xx JSON error.
async fn bad_requests_are_refused(harness: &Harness) {
    let (client, gateway, secret) = (&harness.client, &harness.cluster.gateway, &harness.secret);
    let post = |url: String, body: &'static str, with_secret: bool| {
        let mut request = client.post(url).header("content-type", "application/json").body(body);
        if with_secret {
            request = request.header("x-cluster-secret", secret.as_str());
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert!(body["error"].as_str().is_some_and(|error| !error.is_empty()), "{status}: {body}");
            status
        }
    };
    let join = format!("{gateway}/membership/join");
    assert_eq!(post(join.clone(), r#"{"url":"http://127.0.0.1:1"}"#, false).await, StatusCode::UNAUTHORIZED);
    assert_eq!(post(join.clone(), r#"{"url":"ftp://x"}"#, true).await, StatusCode::BAD_REQUEST);
    assert_eq!(post(join.clone(), "{not json", true).await, StatusCode::BAD_REQUEST);
    assert_eq!(post(join, r#"{"url":"http://127.0.0.1:1"}"#, true).await, StatusCode::BAD_GATEWAY);
    let leave = format!("{gateway}/membership/leave");
    assert_eq!(post(leave, r#"{"id":"node-77"}"#, true).await, StatusCode::NOT_FOUND);
    let scan = format!("{}/scan", harness.cluster.nodes[0]);
    assert_eq!(post(scan.clone(), r#"{"intervals":[[0,0]],"limit":10}"#, false).await, StatusCode::UNAUTHORIZED);
    assert_eq!(post(scan.clone(), r#"{"intervals":[[0,0]],"limit":0}"#, true).await, StatusCode::BAD_REQUEST);
    assert_eq!(post(scan.clone(), r#"{"intervals":"all","limit":10}"#, true).await, StatusCode::BAD_REQUEST);
    let page: Value = client
        .post(scan)
        .header("x-cluster-secret", secret.as_str())
        .json(&json!({"intervals": [[0, 0]], "limit": 5}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["entries"].as_array().unwrap().len(), 5, "the whole ring, one page: {page}");
    assert!(page["next_cursor"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_mid_rebalance_finishes_the_move_after_a_restart() {
    let harness = Harness::start().await;
    let dirs = tempfile::tempdir().unwrap();
    let keys = harness.preload("crash", 1200).await;
    bad_requests_are_refused(&harness).await;
    harness.wait_settled(&["node-1", "node-2", "node-3"], Duration::from_secs(30)).await;

    // Slowly, so the kill lands in the middle of the move.
    let dir = dirs.path().join("4");
    let (mut node4, url) = harness.spawn_node("node-4", &dir, 0, &["--rebalance-rate", "100"], None);
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let membership = harness.membership().await;
        let progress = membership.member("node-4").and_then(|member| member.progress);
        if progress.is_some_and(|progress| progress.arcs_done > 0 && !progress.done) {
            break;
        }
        assert!(!membership.is_settled() || membership.member("node-4").is_none(), "the move finished before the kill");
        assert!(Instant::now() < deadline, "node-4 never reported progress: {membership:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node4.kill();
    let cursor: Value =
        serde_json::from_slice(&std::fs::read(dir.join("node-4").join("rebalance.json")).unwrap()).unwrap();
    assert!(cursor["arcs_done"].as_u64().unwrap() > 0, "{cursor}");
    // Every key stays readable while node-4 is down mid-move.
    harness.assert_all_readable(&keys).await;

    let log = dirs.path().join("node-4.log");
    let (mut node4, _) = harness.spawn_node("node-4", &dir, port, &[], Some(&log));
    let settled = harness.wait_settled(&["node-1", "node-2", "node-3", "node-4"], Duration::from_secs(60)).await;
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("resuming rebalancing"), "{logged}");
    harness.assert_all_readable(&keys).await;
    harness.assert_placed(&settled, &keys).await;

    // node-4 dies for good: `leave --force` rebuilds its share from the other copies.
    node4.kill();
    let (gateway, secret) = (harness.cluster.gateway.clone(), harness.secret.clone());
    let left = tokio::task::spawn_blocking(move || {
        ydht_cli(&["cluster", "leave", "node-4", "--force", "--gateway", &gateway, "--cluster-secret", &secret])
    })
    .await
    .unwrap();
    assert!(left.status.success(), "{}", String::from_utf8_lossy(&left.stderr));
    let rebuilt = harness.wait_settled(&["node-1", "node-2", "node-3"], Duration::from_secs(10)).await;
    harness.assert_all_readable(&keys).await;
    harness.assert_placed(&rebuilt, &keys).await;
}
