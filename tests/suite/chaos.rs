//! Fault injection under load. Every service runs as its own process; the
//! gateway, the replicator and each node reach a node only through a
//! fault-injecting TCP proxy of this test. While client tasks keep up a mixed
//! load of eventual and strong writes and reads, one fault at a time:
//! SIGKILL and restart of each node, the replicator, the gateway and the users
//! service; one node cut off the network and healed; one node's disk (a tmpfs)
//! filled and freed. After each fault heals, and the load ran on for a while,
//! the load pauses and the suite checks that every acknowledged write is
//! readable, that all replicas converge within a deadline, and that no strong
//! read returned a value older than the last acknowledged strong write; at the
//! end the whole history of strong operations goes through a linearizability
//! checker (Wing–Gong, per key).
//!
//! Two smaller tests fill a tmpfs under a single node behind a gateway, and
//! under the WAL alone.

use crate::chaos_support;
use crate::common;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chaos_support::linearizability::{self, Event, Op};
use chaos_support::proxy::Proxy;
use chaos_support::tmpfs::Tmpfs;
use common::{Separate, SeparateOptions, Service, create_key, port_of, read_node, tenant};
use tokio::sync::RwLock;
use ydht::wal::{
    Apply, Committer, CommitterConfig, CompactionTicket, Entry, Record, SyncMode, WalDir, WalError, WalStats, snapshot,
};

const SECRET: &str = "chaos-cluster-secret";
const NODES: usize = 3;
/// Client tasks of the load.
const CLIENTS: u64 = 4;
/// Eventual keys per client (each written by its client only).
const EVENTUAL_KEYS: u64 = 6;
/// Strong keys, shared by every client.
const STRONG_KEYS: u64 = 3;
/// Operations the load must complete (whatever their outcome) while a fault lasts.
const OPS_PER_FAULT: u64 = 300;
/// How long replicas may take to converge once a fault healed.
const CONVERGENCE: Duration = Duration::from_secs(40);
/// Size of the tmpfs that runs out.
const TMPFS_BYTES: u64 = 16 << 20;

/// Microseconds since `start`: the clock of the recorded history.
fn micros(start: Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").parse().expect("a node URL is http://ip:port")
}

/// Every proxy: `front[j]` carries the gateway's and replicator's traffic to node j,
/// `peer[(i, j)]` node i's anti-entropy traffic to node j.
struct Links {
    front: Vec<Proxy>,
    peer: HashMap<(usize, usize), Proxy>,
}

impl Links {
    async fn start() -> Links {
        let placeholder: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut front = Vec::new();
        let mut peer = HashMap::new();
        for to in 0..NODES {
            front.push(Proxy::start(placeholder).await);
            for from in (0..NODES).filter(|from| *from != to) {
                peer.insert((from, to), Proxy::start(placeholder).await);
            }
        }
        Links { front, peer }
    }

    /// `YDHT_NODES` as `viewer` sees the ring (`None`: the gateway and replicator).
    fn node_list(&self, viewer: Option<usize>) -> String {
        (0..NODES)
            .map(|to| {
                let proxy = match viewer {
                    Some(from) if from != to => &self.peer[&(from, to)],
                    _ => &self.front[to],
                };
                format!("node-{}={}", to + 1, proxy.url())
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Points every link to node `to` at its (new) address.
    fn retarget(&self, to: usize, addr: SocketAddr) {
        self.front[to].retarget(addr);
        for ((_, target), proxy) in &self.peer {
            if *target == to {
                proxy.retarget(addr);
            }
        }
    }

    /// Cuts (or heals) every link into and out of node `index`.
    fn isolate(&self, index: usize, cut: bool) {
        self.front[index].set_cut(cut);
        for ((from, to), proxy) in &self.peer {
            if *from == index || *to == index {
                proxy.set_cut(cut);
            }
        }
    }
}

/// The cluster, each service its own process. Field order is drop order: the
/// processes die before the tmpfs under node-3 is unmounted and the data dir removed.
struct Cluster {
    gateway: (Service, String),
    replicator: (Service, String),
    users: (Service, String),
    nodes: Vec<(Service, String)>,
    links: Links,
    tmpfs: Option<Tmpfs>,
    dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let tmpfs = match Tmpfs::mount(&dir.path().join("node-3"), TMPFS_BYTES) {
            Ok(tmpfs) => Some(tmpfs),
            Err(reason) => {
                println!("chaos: the disk-full fault is skipped: {reason}");
                None
            }
        };
        let links = Links::start().await;
        let path = dir.path().to_str().unwrap().to_string();
        let users = spawn(&["serve", "users"], &path, &[("USERMANAGER_PORT", "0".into())]);
        let mut nodes = Vec::new();
        for index in 0..NODES {
            let node = start_node(&path, &links, index, "0");
            links.retarget(index, addr_of(&node.1));
            nodes.push(node);
        }
        let replicator = spawn(&["serve", "replicator"], &path, &[("REPLICATOR_PORT", "0".into())]);
        let gateway = start_gateway(&path, &links, &users.1, &replicator.1, "0");
        Cluster { gateway, replicator, users, nodes, links, tmpfs, dir }
    }

    fn path(&self) -> String {
        self.dir.path().to_str().unwrap().to_string()
    }

    fn restart_gateway(&mut self) {
        let port = port_of(&self.gateway.1);
        self.gateway.0.kill();
        self.gateway = start_gateway(&self.path(), &self.links, &self.users.1, &self.replicator.1, &port);
    }

    fn restart_node(&mut self, index: usize) {
        self.nodes[index].0.kill();
        self.nodes[index] = start_node(&self.path(), &self.links, index, "0");
        self.links.retarget(index, addr_of(&self.nodes[index].1));
    }
}

fn spawn(args: &[&str], dir: &str, extra: &[(&'static str, String)]) -> (Service, String) {
    let mut env = vec![
        ("YDHT_DATA_DIR", dir.to_string()),
        ("YDHT_CLUSTER_SECRET", SECRET.to_string()),
        // The faults make every service log warnings by design; keep the test output readable.
        ("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into())),
    ];
    env.extend_from_slice(extra);
    let env: Vec<(&str, &str)> = env.iter().map(|(name, value)| (*name, value.as_str())).collect();
    Service::spawn_one(args, &env)
}

fn start_gateway(dir: &str, links: &Links, users: &str, replicator: &str, port: &str) -> (Service, String) {
    spawn(
        &["serve", "gateway"],
        dir,
        &[
            ("GATEWAY_PORT", port.to_string()),
            ("YDHT_NODES", links.node_list(None)),
            ("YDHT_USERS_URL", users.to_string()),
            ("YDHT_REPLICATOR_URL", replicator.to_string()),
            ("RATE_LIMIT_PER_MINUTE", "0".into()),
        ],
    )
}

fn start_node(dir: &str, links: &Links, index: usize, port: &str) -> (Service, String) {
    spawn(
        &["serve", "node"],
        dir,
        &[
            ("NODE_ID", format!("node-{}", index + 1)),
            ("DHTNODE_PORT", port.to_string()),
            ("YDHT_NODES", links.node_list(Some(index))),
            ("YDHT_ANTI_ENTROPY_INTERVAL", "1s".into()),
            // Small segments: compactions (new segment + snapshot) happen under the faults too,
            // including while node-3's disk is full.
            ("YDHT_WAL_MAX_BYTES", "32768".into()),
        ],
    )
}

/// What the load did to one eventual key (written by one client, in order).
#[derive(Debug, Default, Clone, Copy)]
struct EventualKey {
    /// Sequence number of the newest acknowledged write.
    acked: Option<u64>,
    /// Sequence number of the newest write attempted (acknowledged or not).
    attempted: u64,
}

/// Everything the load recorded.
#[derive(Default)]
struct Ledger {
    eventual: BTreeMap<String, EventualKey>,
    /// Strong writes and reads, for the checks.
    strong: Vec<Event>,
    /// Gateway answers by status (0: no answer).
    statuses: BTreeMap<u16, u64>,
}

/// The load's shared state.
struct Load {
    gateway: String,
    api_key: String,
    start: Instant,
    ledger: Mutex<Ledger>,
    /// Operations finished, any outcome.
    done: AtomicU64,
    /// Held (shared) by each operation; the checks take it exclusively to pause the load.
    gate: RwLock<()>,
    stop: tokio::sync::watch::Sender<bool>,
}

/// A small xorshift generator: the load needs variety, not quality.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

fn load_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(6))
        .connect_timeout(Duration::from_secs(1))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

impl Load {
    fn note_status(&self, status: u16) {
        *self.ledger.lock().unwrap().statuses.entry(status).or_default() += 1;
    }

    async fn run_client(self: Arc<Self>, client_id: u64) {
        let http = load_client();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (client_id + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
        let mut stop = self.stop.subscribe();
        let mut seq = 0u64;
        while !*stop.borrow() {
            {
                let _running = self.gate.read().await;
                seq += 1;
                match rng.below(100) {
                    0..30 => self.eventual_put(&http, client_id, rng.below(EVENTUAL_KEYS), seq).await,
                    30..45 => self.eventual_get(&http, client_id, rng.below(EVENTUAL_KEYS)).await,
                    45..72 => self.strong_put(&http, rng.below(STRONG_KEYS), client_id, seq).await,
                    _ => self.strong_get(&http, rng.below(STRONG_KEYS)).await,
                }
                self.done.fetch_add(1, Ordering::Relaxed);
            }
            // Pacing, so two cores also serve the faults: a modest load, not a benchmark.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(15)) => {}
                _ = stop.changed() => {}
            }
        }
    }

    fn url(&self, key: &str) -> String {
        format!("{}/v1/kv/{key}", self.gateway)
    }

    async fn eventual_put(&self, http: &reqwest::Client, client_id: u64, key: u64, seq: u64) {
        let key = format!("ev-{client_id}-{key}");
        self.ledger.lock().unwrap().eventual.entry(key.clone()).or_default().attempted = seq;
        let answer = http.put(self.url(&key)).header("X-API-Key", &self.api_key).body(format!("e{seq}")).send().await;
        let status = answer.as_ref().map_or(0, |response| response.status().as_u16());
        self.note_status(status);
        if status == 200 {
            self.ledger.lock().unwrap().eventual.get_mut(&key).unwrap().acked = Some(seq);
        }
    }

    async fn eventual_get(&self, http: &reqwest::Client, client_id: u64, key: u64) {
        let key = format!("ev-{client_id}-{key}");
        let answer = http.get(self.url(&key)).header("X-API-Key", &self.api_key).send().await;
        self.note_status(answer.as_ref().map_or(0, |response| response.status().as_u16()));
    }

    async fn strong_put(&self, http: &reqwest::Client, key: u64, client_id: u64, seq: u64) {
        let key = format!("st-{key}");
        let value = format!("s{client_id}-{seq}");
        let invoke = micros(self.start);
        let answer = http
            .put(self.url(&key))
            .header("X-API-Key", &self.api_key)
            .header("X-Consistency", "strong")
            .body(value.clone())
            .send()
            .await;
        let status = answer.as_ref().map_or(0, |response| response.status().as_u16());
        let ret = micros(self.start);
        self.note_status(status);
        // Refused outright (4xx: bad input, auth): it did nothing. Otherwise, unacknowledged, it may
        // still have been applied: its outcome is unknown.
        if (400..500).contains(&status) {
            return;
        }
        let ret = (status == 200).then_some(ret);
        self.ledger.lock().unwrap().strong.push(Event { key, invoke, ret, op: Op::Write(value) });
    }

    async fn strong_get(&self, http: &reqwest::Client, key: u64) {
        let key = format!("st-{key}");
        let invoke = micros(self.start);
        let answer =
            http.get(self.url(&key)).header("X-API-Key", &self.api_key).header("X-Consistency", "strong").send().await;
        let status = answer.as_ref().map_or(0, |response| response.status().as_u16());
        let value = match answer {
            Ok(response) if status == 200 => match response.text().await {
                Ok(text) => Some(Some(text)),
                Err(_) => None,
            },
            Ok(_) if status == 404 => Some(None),
            _ => None,
        };
        let ret = micros(self.start);
        self.note_status(status);
        if let Some(value) = value {
            self.ledger.lock().unwrap().strong.push(Event { key, invoke, ret: Some(ret), op: Op::Read(value) });
        }
    }

    /// Waits until the load finished `count` more operations.
    async fn wait_ops(&self, count: u64) {
        let target = self.done.load(Ordering::Relaxed) + count;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.done.load(Ordering::Relaxed) < target {
            assert!(Instant::now() < deadline, "the load stalled at {} operations", self.done.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Why the strong read `read` returned a stale value, if it did: a write acknowledged before
/// the read started, and invoked after the write of the value read had returned (or any
/// acknowledged write, when the read found nothing).
fn staleness(writes: &[&Event], read_invoke: u64, value: Option<&str>) -> Option<String> {
    let acked_before: Vec<&&Event> =
        writes.iter().filter(|write| write.ret.is_some_and(|ret| ret < read_invoke)).collect();
    let Some(value) = value else {
        return acked_before.first().map(|write| format!("found nothing although {:?} was acknowledged", write.op));
    };
    let Some(source) = writes.iter().find(|write| write.op == Op::Write(value.to_string())) else {
        return Some(format!("returned {value:?}, which no client wrote"));
    };
    let source_ret = source.ret?;
    acked_before
        .iter()
        .find(|newer| newer.invoke > source_ret)
        .map(|newer| format!("returned {value:?} although {:?} (started after it) was acknowledged", newer.op))
}

/// The strong writes of `key` in the history.
fn strong_writes<'a>(history: &'a [Event], key: &str) -> Vec<&'a Event> {
    history.iter().filter(|event| event.key == key && matches!(event.op, Op::Write(_))).collect()
}

/// Whether a value a key's replicas converged to is one the load allows (`None`: absent).
type Acceptable = Box<dyn Fn(Option<&str>) -> Result<(), String>>;

/// Pauses the load, then checks that every replica of every key converges to
/// the same version within [`CONVERGENCE`], holding a value no acknowledged write
/// superseded, and that the gateway serves that value at both consistencies.
async fn check_after(fault: &str, cluster: &Cluster, load: &Load, user_id: i64) {
    // First the load runs on against the healed cluster: a node that is back but still
    // missing writes is when stale reads would show.
    load.wait_ops(OPS_PER_FAULT / 2).await;
    let _paused = load.gate.write().await;
    let began = Instant::now();
    let (eventual, history) = {
        let ledger = load.ledger.lock().unwrap();
        (ledger.eventual.clone(), ledger.strong.clone())
    };
    let http = common::http();
    let now = micros(load.start);
    let mut expected: Vec<(String, Acceptable)> = Vec::new();
    for (key, written) in eventual {
        let Some(acked) = written.acked else { continue };
        let attempted = written.attempted;
        expected.push((
            key,
            Box::new(move |value| {
                let seq = value.and_then(|value| value.strip_prefix('e')?.parse::<u64>().ok());
                match seq {
                    Some(seq) if (acked..=attempted).contains(&seq) => Ok(()),
                    _ => Err(format!("holds {value:?}; the newest acknowledged write was e{acked}")),
                }
            }),
        ));
    }
    for key in (0..STRONG_KEYS).map(|key| format!("st-{key}")) {
        let writes: Vec<Event> = strong_writes(&history, &key).into_iter().cloned().collect();
        if writes.is_empty() {
            continue;
        }
        expected.push((
            key,
            Box::new(move |value| {
                let writes: Vec<&Event> = writes.iter().collect();
                staleness(&writes, now, value).map_or(Ok(()), Err)
            }),
        ));
    }
    for (key, accept) in &expected {
        let storage_key = format!("{user_id}/{key}");
        let last = RefCell::new(String::new());
        let converged = common::eventually(CONVERGENCE, || {
            let (http, storage_key, last) = (&http, &storage_key, &last);
            async move {
                let mut seen = Vec::new();
                for (_, node) in &cluster.nodes {
                    let (status, body, version) = read_node(http, node, SECRET, storage_key).await;
                    seen.push((status, String::from_utf8_lossy(&body).into_owned(), version));
                }
                *last.borrow_mut() = format!("{seen:?}");
                let first = &seen[0];
                first.0 == 200 && seen.iter().all(|other| other == first) && accept(Some(&first.1)).is_ok()
            }
        })
        .await;
        let last = last.into_inner();
        assert!(converged, "after {fault}: the replicas of {key} did not converge to an acceptable value: {last}");
        let held =
            String::from_utf8_lossy(&read_node(&http, &cluster.nodes[0].1, SECRET, &storage_key).await.1).into_owned();
        for consistency in ["strong", "eventual"] {
            let response = http
                .get(format!("{}/v1/kv/{key}", load.gateway))
                .header("X-API-Key", &load.api_key)
                .header("X-Consistency", consistency)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "after {fault}: {key} unreadable at {consistency}");
            assert_eq!(response.text().await.unwrap(), held, "after {fault}: {key} at {consistency}");
        }
    }
    println!(
        "chaos: after {fault}: {} keys converged and readable in {:.1} s ({} operations so far)",
        expected.len(),
        began.elapsed().as_secs_f64(),
        load.done.load(Ordering::Relaxed)
    );
}

/// A direct write to a node with the cluster secret: `(status, body)`.
async fn put_to_node(http: &reqwest::Client, node: &str, storage_key: &str, version: u64) -> (u16, String) {
    let response = http
        .put(format!("{node}/store/{}", storage_key.replace('/', "%2F")))
        .header("x-cluster-secret", SECRET)
        .header("x-version", version.to_string())
        .body(vec![b'p'; 1024])
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Fills node-3's disk under load: writes to it fail with a clear 507 while it keeps
/// serving reads, the gateway keeps answering without a 500, and once space is freed the
/// node takes writes again by itself — and its WAL still replays after a SIGKILL.
async fn disk_full(cluster: &mut Cluster, load: &Load, user_id: i64) {
    let Some(tmpfs) = &cluster.tmpfs else { return };
    let http = common::http();
    let node = cluster.nodes[2].1.clone();
    let probe_key = format!("{user_id}/disk-probe");
    let filled = tmpfs.fill();
    println!("chaos: filled node-3's tmpfs with {filled} bytes");
    // The WAL's last page may still have room for a few records: write until it has none.
    let mut version = 0;
    let (status, body) = loop {
        version += 1;
        let (status, body) = put_to_node(&http, &node, &probe_key, version).await;
        if status != 200 || version == 1000 {
            break (status, body);
        }
    };
    assert_eq!(status, 507, "a write to a full node: {body}");
    let error: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
    let message = error["error"].as_str().unwrap();
    assert!(
        message.starts_with("node-3: disk full at ") && message.contains("free space and the node resumes"),
        "{message}"
    );
    // Reads keep working: whatever node-3 holds is still served.
    let (status, _, _) = read_node(&http, &node, SECRET, &format!("{user_id}/st-0")).await;
    assert!(status == 200 || status == 404, "a full node still answers reads, got {status}");
    load.wait_ops(OPS_PER_FAULT).await;

    tmpfs.free();
    let last = RefCell::new((0, String::new()));
    let resumed = common::eventually(Duration::from_secs(10), || {
        let (http, node, probe_key, last) = (&http, &node, &probe_key, &last);
        async move {
            let answer = put_to_node(http, node, probe_key, version + 1).await;
            let ok = answer.0 == 200;
            *last.borrow_mut() = answer;
            ok
        }
    })
    .await;
    assert!(resumed, "node-3 did not take writes again after space was freed: {:?}", last.into_inner());
    check_after("node-3's disk filled and freed", cluster, load, user_id).await;
    // Whatever the full disk cut short was cut back: the log replays.
    cluster.restart_node(2);
    check_after("node-3 restarted after its disk was full", cluster, load, user_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_faults_under_load() {
    let started = Instant::now();
    let mut cluster = Cluster::start().await;
    let http = common::http();
    let (account, api_key) = tenant(&http, &cluster.users.1, "chaos").await;
    let (stop, _) = tokio::sync::watch::channel(false);
    let load = Arc::new(Load {
        gateway: cluster.gateway.1.clone(),
        api_key,
        start: Instant::now(),
        ledger: Mutex::default(),
        done: AtomicU64::new(0),
        gate: RwLock::new(()),
        stop,
    });
    let clients: Vec<_> = (0..CLIENTS).map(|id| tokio::spawn(Arc::clone(&load).run_client(id))).collect();
    load.wait_ops(OPS_PER_FAULT).await;
    check_after("a warm-up without faults", &cluster, &load, account.user_id).await;

    for index in 0..NODES {
        cluster.nodes[index].0.kill();
        load.wait_ops(OPS_PER_FAULT).await;
        cluster.restart_node(index);
        check_after(&format!("SIGKILL of node-{}", index + 1), &cluster, &load, account.user_id).await;
    }

    let path = cluster.path();
    cluster.replicator.0.kill();
    load.wait_ops(OPS_PER_FAULT).await;
    let port = port_of(&cluster.replicator.1);
    cluster.replicator = spawn(&["serve", "replicator"], &path, &[("REPLICATOR_PORT", port)]);
    check_after("SIGKILL of the replicator", &cluster, &load, account.user_id).await;

    cluster.gateway.0.kill();
    load.wait_ops(OPS_PER_FAULT).await;
    cluster.restart_gateway();
    check_after("SIGKILL of the gateway", &cluster, &load, account.user_id).await;

    cluster.users.0.kill();
    load.wait_ops(OPS_PER_FAULT).await;
    let port = port_of(&cluster.users.1);
    cluster.users = spawn(&["serve", "users"], &path, &[("USERMANAGER_PORT", port)]);
    check_after("SIGKILL of the users service", &cluster, &load, account.user_id).await;
    // The gateway caches validated keys: a key made after the restart proves it reaches the new process.
    let (_, fresh_key) = create_key(&http, &cluster.users.1, &account, &["read", "write"]).await;
    let response = http
        .put(format!("{}/v1/kv/after-users-restart", cluster.gateway.1))
        .header("X-API-Key", &fresh_key)
        .body("ok")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "a key made after the users service restarted");

    cluster.links.isolate(1, true);
    load.wait_ops(OPS_PER_FAULT).await;
    cluster.links.isolate(1, false);
    check_after("node-2 cut off the network", &cluster, &load, account.user_id).await;

    disk_full(&mut cluster, &load, account.user_id).await;

    load.stop.send_replace(true);
    for client in clients {
        client.await.unwrap();
    }
    let ledger = std::mem::take(&mut *load.ledger.lock().unwrap());
    println!("chaos: gateway answers by status (0 = no answer): {:?}", ledger.statuses);
    assert_eq!(ledger.statuses.get(&500), None, "the gateway answered 500: {:?}", ledger.statuses);

    // No strong read older than the last strong write acknowledged before it started.
    let reads = ledger.strong.iter().filter(|event| matches!(event.op, Op::Read(_)));
    for read in reads {
        let Op::Read(value) = &read.op else { unreachable!() };
        let writes = strong_writes(&ledger.strong, &read.key);
        if let Some(problem) = staleness(&writes, read.invoke, value.as_deref()) {
            panic!("stale strong read of {} at {} µs: {problem}", read.key, read.invoke);
        }
    }
    let acked = ledger.strong.iter().filter(|event| event.ret.is_some()).count();
    println!("chaos: {} strong operations ({acked} completed); checking linearizability", ledger.strong.len());
    let history = ledger.strong;
    // Deep searches recurse once per operation: give the checker a roomy stack.
    let verdict = std::thread::Builder::new()
        .stack_size(512 << 20)
        .spawn(move || linearizability::check(&history))
        .unwrap()
        .join()
        .unwrap();
    if let Err(problem) = verdict {
        panic!("{problem}");
    }
    println!("chaos: done in {:.1} s", started.elapsed().as_secs_f64());
}

/// Clients of the lost-update test, and increments each makes.
const INCR_CLIENTS: u64 = 8;
const INCREMENTS: u64 = 200;

/// One client of the lost-update test: `INCREMENTS` times, read the counter (strong) and write
/// the next number with `If-Match` on the version read (`If-None-Match: *` while it is absent),
/// reading again after a 412. Records every read and compare-and-set in `history`.
async fn increment(gateway: String, api_key: String, start: Instant, history: Arc<Mutex<Vec<Event>>>) -> u64 {
    let http = common::http();
    let url = format!("{gateway}/v1/kv/counter");
    let mut acknowledged = 0;
    let record = |event: Event| history.lock().unwrap().push(event);
    while acknowledged < INCREMENTS {
        let invoke = micros(start);
        let read = http.get(&url).header("x-api-key", &api_key).header("x-consistency", "strong").send().await;
        let (current, etag) = match read {
            Ok(response) if response.status() == 404 => (None, None),
            Ok(response) if response.status() == 200 => {
                let etag = response.headers()["etag"].to_str().unwrap().to_string();
                (Some(response.text().await.unwrap()), Some(etag))
            }
            // A failed read changes nothing: read again.
            _ => continue,
        };
        record(Event { key: "counter".into(), invoke, ret: Some(micros(start)), op: Op::Read(current.clone()) });
        let count: u64 = current.as_deref().map_or(0, |text| text.parse().expect("the counter holds a number"));
        let next = (count + 1).to_string();
        let request = http.put(&url).header("x-api-key", &api_key).body(next.clone());
        let request = match &etag {
            Some(etag) => request.header("if-match", etag),
            None => request.header("if-none-match", "*"),
        };
        let invoke = micros(start);
        let answer = request.send().await.map(|response| response.status().as_u16());
        let applied = match answer {
            Ok(200) => Some(true),
            Ok(412) => Some(false),
            other => {
                println!("chaos: an increment's outcome is unknown: {other:?}");
                None
            }
        };
        let ret = applied.map(|_| micros(start));
        record(Event { key: "counter".into(), invoke, ret, op: Op::Cas { expected: current, new: next, applied } });
        if applied == Some(true) {
            acknowledged += 1;
        }
    }
    acknowledged
}

/// The lost-update test: 8 clients × 200 increments of one counter through the gateway while
/// node-1 is SIGKILLed and restarted, then node-2 is cut off the network and healed. The final
/// counter equals the acknowledged increments exactly, and the history of reads and
/// compare-and-sets is linearizable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_increments_lose_no_update_under_faults() {
    let started = Instant::now();
    let mut cluster = Cluster::start().await;
    let http = common::http();
    let (_, api_key) = tenant(&http, &cluster.users.1, "counter").await;
    let history = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..INCR_CLIENTS)
        .map(|_| tokio::spawn(increment(cluster.gateway.1.clone(), api_key.clone(), started, Arc::clone(&history))))
        .collect();
    let applied = || {
        history.lock().unwrap().iter().filter(|event| matches!(event.op, Op::Cas { applied: Some(true), .. })).count()
            as u64
    };
    let wait_for = |count: u64| {
        let applied = &applied;
        async move {
            let deadline = Instant::now() + Duration::from_secs(300);
            while applied() < count {
                assert!(Instant::now() < deadline, "the increments stalled at {}", applied());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let total = INCR_CLIENTS * INCREMENTS;
    wait_for(total / 6).await;
    cluster.nodes[0].0.kill();
    wait_for(2 * total / 6).await;
    cluster.restart_node(0);
    wait_for(3 * total / 6).await;
    cluster.links.isolate(1, true);
    wait_for(4 * total / 6).await;
    cluster.links.isolate(1, false);
    let mut acknowledged = 0;
    for client in clients {
        acknowledged += client.await.unwrap();
    }
    assert_eq!(acknowledged, total);
    let mut history = std::mem::take(&mut *history.lock().unwrap());
    let unknown = history.iter().filter(|event| event.ret.is_none()).count();
    let refused = history.iter().filter(|event| matches!(event.op, Op::Cas { applied: Some(false), .. })).count();
    println!("chaos: {acknowledged} increments acknowledged, {refused} refused (412), {unknown} unknown");
    assert_eq!(unknown, 0, "every conditional write got an answer (the faults never took a majority)");
    let invoke = micros(started);
    let response = http
        .get(format!("{}/v1/kv/counter", cluster.gateway.1))
        .header("x-api-key", &api_key)
        .header("x-consistency", "strong")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    history.push(Event { key: "counter".into(), invoke, ret: Some(micros(started)), op: Op::Read(Some(text.clone())) });
    let counter: u64 = text.parse().unwrap();
    println!("chaos: the counter reads {counter}");
    let metrics: serde_json::Value =
        http.get(format!("{}/metrics", cluster.gateway.1)).send().await.unwrap().json().await.unwrap();
    println!(
        "chaos: {} increments took one round trip (fast rounds), {} strong reads met a pending write and settled it",
        metrics["conditional_fast"], metrics["reads_settled"]
    );
    let (history, verdict) = std::thread::Builder::new()
        .stack_size(512 << 20)
        .spawn(move || {
            let verdict = linearizability::check(&history);
            (history, verdict)
        })
        .unwrap()
        .join()
        .unwrap();
    if counter != acknowledged || verdict.is_err() {
        // The whole history is too long for the test output: it goes to a file, for the post-mortem.
        let dump = std::env::temp_dir().join(format!("ydht-lost-update-{}.txt", std::process::id()));
        let lines: Vec<String> = history.iter().map(|event| format!("{event:?}")).collect();
        std::fs::write(&dump, lines.join("\n")).unwrap();
        let verdict = verdict.err().map_or("linearizable".to_string(), |problem| problem.chars().take(2000).collect());
        panic!(
            "the counter reads {counter} after {acknowledged} acknowledged increments; the history ({}) is {verdict}",
            dump.display()
        );
    }
    println!("chaos: lost-update test done in {:.1} s", started.elapsed().as_secs_f64());
}

/// With every copy of a key on one full node, the gateway answers the client 507
/// with the node's own one-line advice — not a 500 — and the same write goes
/// through once space is freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_reaches_the_client_as_507_naming_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let tmpfs = match Tmpfs::mount(&dir.path().join("node-1"), 1 << 20) {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let path = dir.path().to_str().unwrap().to_string();
    let users = spawn(&["serve", "users"], &path, &[("USERMANAGER_PORT", "0".into())]);
    let node = spawn(&["serve", "node"], &path, &[("NODE_ID", "node-1".into()), ("DHTNODE_PORT", "0".into())]);
    let gateway = spawn(
        &["serve", "gateway"],
        &path,
        &[
            ("GATEWAY_PORT", "0".into()),
            ("YDHT_NODES", format!("node-1={}", node.1)),
            ("YDHT_REPLICAS", "1".into()),
            ("YDHT_USERS_URL", users.1.clone()),
            // Nothing to copy with one replica; the replicator is never asked.
            ("YDHT_REPLICATOR_URL", "http://127.0.0.1:9".into()),
            ("RATE_LIMIT_PER_MINUTE", "0".into()),
        ],
    );
    let http = common::http();
    let (_, api_key) = tenant(&http, &users.1, "full").await;
    let put = |consistency: &'static str, value: String| {
        http.put(format!("{}/v1/kv/k", gateway.1))
            .header("X-API-Key", &api_key)
            .header("X-Consistency", consistency)
            .body(value)
            .send()
    };
    assert_eq!(put("strong", "before".into()).await.unwrap().status(), 200);
    tmpfs.fill();
    for consistency in ["eventual", "strong"] {
        // Space the WAL set aside before the disk filled up (up to 1 MiB of zeros written
        // ahead of its records) still takes records: write until that is used up too.
        let mut answer = None;
        for _ in 0..200 {
            let response = put(consistency, "v".repeat(32 << 10)).await.unwrap();
            if response.status() != 200 {
                answer = Some((response.status().as_u16(), response.text().await.unwrap()));
                break;
            }
        }
        let (status, body) = answer.expect("writes kept succeeding on a full disk");
        assert_eq!(status, 507, "{consistency}: {body}");
        let message = serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"].as_str().unwrap().to_string();
        assert!(message.contains("node-1: disk full at "), "{consistency}: {message}");
        assert!(message.contains("free space and the node resumes"), "{consistency}: {message}");
    }
    let read = http.get(format!("{}/v1/kv/k", gateway.1)).header("X-API-Key", &api_key).send().await.unwrap();
    assert_eq!(read.status(), 200, "reads keep working on a full disk");
    tmpfs.free();
    let response = put("strong", "after".into()).await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let read = http.get(format!("{}/v1/kv/k", gateway.1)).header("X-API-Key", &api_key).send().await.unwrap();
    assert_eq!(read.text().await.unwrap(), "after");
    drop((gateway, node, users));
    drop(tmpfs);
}

/// Applies nothing; remembers the keys in log order.
struct KeyLog(Arc<Mutex<Vec<String>>>);

impl Apply for KeyLog {
    type Outcome = ();

    fn apply(&mut self, records: Vec<Entry>) -> Vec<()> {
        let mut keys = self.0.lock().unwrap();
        records.into_iter().map(|record| keys.extend(record.into_record().map(|record| record.key))).collect()
    }

    fn rotated(&mut self, _generation: u64, _ticket: CompactionTicket) {}
}

/// The WAL itself on a full tmpfs: appends are refused with `DiskFull` (the writer is not
/// poisoned), a snapshot fails without leaving its temporary file, and once space is freed
/// appends go on — and the log replays every acknowledged record and nothing else.
#[tokio::test]
async fn the_wal_refuses_appends_on_a_full_disk_and_resumes_with_a_valid_log() {
    let dir = tempfile::tempdir().unwrap();
    let tmpfs = match Tmpfs::mount(dir.path(), 256 << 10) {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let wal = WalDir::new(dir.path().join("wal"));
    let recovered = ydht::wal::recover(&wal, false, &ydht::wal::segment::Retention::NONE, |_| {}).unwrap();
    let applied = Arc::new(Mutex::new(Vec::new()));
    let config = CommitterConfig { mode: SyncMode::Group, max_segment_bytes: u64::MAX };
    let stats = Arc::new(WalStats::default());
    let committer = Committer::start(wal.clone(), recovered.segment, config, stats, KeyLog(Arc::clone(&applied)));
    let record = |key: String| Entry::from(Record::put(key, 1, vec![b'v'; 1000], "application/octet-stream"));
    let mut acknowledged = Vec::new();
    for n in 0..10 {
        committer.append(vec![record(format!("before-{n}"))]).await.unwrap();
        acknowledged.push(format!("before-{n}"));
    }

    tmpfs.fill();
    let mut refused = None;
    for n in 0..1000 {
        match committer.append(vec![record(format!("full-{n}"))]).await {
            Ok(_) => acknowledged.push(format!("full-{n}")),
            Err(error) => {
                refused = Some(error);
                break;
            }
        }
    }
    let refused = refused.expect("appends kept succeeding on a full disk");
    assert!(matches!(refused, WalError::DiskFull(_)), "{refused:?}");
    let message = refused.to_string();
    assert!(message.contains("disk full at ") && message.contains("free space"), "{message}");
    // Refused again, not poisoned: the same error while the disk stays full.
    assert!(matches!(committer.append(vec![record("again".into())]).await, Err(WalError::DiskFull(_))));
    let snapshot = snapshot::write(&wal, 1, &[Record::put("snap", 1, vec![b'v'; 1000], "application/octet-stream")]);
    assert!(snapshot.is_err(), "a snapshot cannot fit on a full disk");
    assert!(wal.list().unwrap().temporaries.is_empty(), "the half-written snapshot was removed");

    tmpfs.free();
    committer.append(vec![record("after".into())]).await.unwrap();
    acknowledged.push("after".into());
    committer.close().await;
    assert_eq!(*applied.lock().unwrap(), acknowledged);

    let mut replayed = Vec::new();
    let recovered = ydht::wal::recover(&wal, false, &ydht::wal::segment::Retention::NONE, |found| {
        replayed.extend(found.into_record().map(|found| found.key))
    })
    .unwrap();
    assert_eq!(replayed, acknowledged, "the log holds exactly the acknowledged records");
    assert_eq!(recovered.truncated_bytes, 0, "no partial record was left behind");
}

/// A small cluster of separate processes without proxies: `nodes` storage nodes (no anti-entropy,
/// so nothing but the gateway and the replicator moves data), users, replicator and gateway.
fn plain(nodes: usize, gateway_env: &[(&'static str, String)]) -> Separate {
    let options = SeparateOptions {
        env: vec![("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()))],
        gateway_env: gateway_env.to_vec(),
        ..SeparateOptions::default()
    };
    Separate::start(SECRET, nodes, options)
}

/// A strong operation against the gateway, recorded for the linearizability checker.
async fn strong_op(
    http: &reqwest::Client,
    gateway: &str,
    api_key: &str,
    start: Instant,
    key: &str,
    write: Option<&str>,
) -> (u16, Event) {
    let url = format!("{gateway}/v1/kv/{key}");
    let invoke = micros(start);
    let request = match write {
        Some(value) => http.put(&url).body(value.to_string()),
        None => http.get(&url),
    };
    let response = request.header("X-API-Key", api_key).header("X-Consistency", "strong").send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    let ret = micros(start);
    let event = match write {
        // A write refused with a 5xx may still have been applied: its outcome is unknown.
        Some(value) => {
            Event { key: key.into(), invoke, ret: (status == 200).then_some(ret), op: Op::Write(value.into()) }
        }
        None => {
            assert!(status == 200 || status == 404, "strong read of {key}: {status} {body}");
            Event { key: key.into(), invoke, ret: Some(ret), op: Op::Read((status == 200).then_some(body)) }
        }
    };
    (status, event)
}

/// Issue 14, item 2: with two of a key's three owners down, a strong write must not be
/// acknowledged by the surviving owner plus a stand-in (whose copy is only a hint): once the
/// stand-in and the surviving owner are gone and the two other owners are back, a strong read
/// reads a majority of the owners that shares no node with such a write, and would return the
/// value it replaced. The write is refused with 503 instead, and the history stays linearizable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strong_writes_need_a_majority_of_the_owners_not_of_stand_ins() {
    let mut cluster = plain(4, &[]);
    let http = common::http();
    let (account, api_key) = tenant(&http, &cluster.users.1, "owners").await;
    let layout = ydht::membership::Layout::settled(cluster.infos(), 150, 3);
    let owner_ids = |key: &str| -> Vec<String> {
        let mut ids: Vec<String> =
            layout.new_owners(&format!("{}/{key}", account.user_id)).into_iter().map(|node| node.id).collect();
        ids.sort();
        ids
    };
    // Five keys with the same three owners, so one set of faults covers them all.
    let owners = owner_ids("reg-0");
    let keys: Vec<String> =
        (0..1000).map(|i| format!("reg-{i}")).filter(|key| owner_ids(key) == owners).take(5).collect();
    assert_eq!(keys.len(), 5);
    let index_of = |id: &str| id.trim_start_matches("node-").parse::<usize>().unwrap() - 1;
    let owner_indices: Vec<usize> = owners.iter().map(|id| index_of(id)).collect();
    let stand_in = (0..4).find(|index| !owner_indices.contains(index)).unwrap();
    let (survivor, killed) = (owner_indices[0], [owner_indices[1], owner_indices[2]]);

    let start = Instant::now();
    let gateway = cluster.gateway.1.clone();
    let mut history = Vec::new();
    for key in &keys {
        let (status, event) = strong_op(&http, &gateway, &api_key, start, key, Some(&format!("{key}=v1"))).await;
        assert_eq!(status, 200, "strong write of v1 with every node up");
        history.push(event);
    }
    for index in killed {
        cluster.nodes[index].0.kill();
    }
    for key in &keys {
        let (status, event) = strong_op(&http, &gateway, &api_key, start, key, Some(&format!("{key}=v2"))).await;
        assert_eq!(status, 503, "a strong write reaching one owner of three (plus a stand-in) must be refused");
        history.push(event);
    }
    // The stand-in, the replicator and the surviving owner go; the two other owners come back.
    cluster.nodes[stand_in].0.kill();
    cluster.replicator.0.kill();
    cluster.nodes[survivor].0.kill();
    for index in killed {
        cluster.restart_node(index);
    }
    for key in &keys {
        let (status, event) = strong_op(&http, &gateway, &api_key, start, key, None).await;
        assert_eq!(status, 200, "a strong read of two owners of three");
        history.push(event);
    }
    let verdict = linearizability::check(&history);
    assert!(verdict.is_ok(), "{}", verdict.unwrap_err());
}

/// Writes `value` of `storage_key` straight to a node at `version`, as a gateway would.
async fn put_version(http: &reqwest::Client, node: &str, storage_key: &str, version: u64, value: &str) {
    let mut url = reqwest::Url::parse(node).unwrap();
    url.path_segments_mut().unwrap().pop_if_empty().extend(["store", storage_key]);
    let response = http
        .put(url)
        .header("x-cluster-secret", SECRET)
        .header("x-version", version.to_string())
        .body(value.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// Issue 14, item 4: a gateway whose clock ran ahead left every owner holding a version from the
/// future; writes through a gateway with a good clock must still win (the node answers with the
/// version it holds, the gateway moves its clock past it and writes again), never be answered 200
/// while the nodes keep the old value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_after_a_write_from_the_future_win() {
    let cluster = plain(3, &[]);
    let http = common::http();
    let (account, api_key) = tenant(&http, &cluster.users.1, "future").await;
    let gateway = &cluster.gateway.1;
    let mut ahead = 0;
    for consistency in ["eventual", "strong"] {
        for round in 0..3 {
            let key = format!("{consistency}-{round}");
            let storage_key = format!("{}/{key}", account.user_id);
            // Each time further ahead than the gateway's clock, which moved past the last one.
            ahead += 60_000;
            let future = ydht::hlc::from_millis(ydht::hlc::wall_millis() + ahead);
            for node in &cluster.nodes {
                put_version(&http, &node.1, &storage_key, future, "v1 from the future").await;
            }
            let response = http
                .put(format!("{gateway}/v1/kv/{key}"))
                .header("X-API-Key", &api_key)
                .header("X-Consistency", consistency)
                .body("v2")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
            let read = |level: &'static str| {
                let request = http.get(format!("{gateway}/v1/kv/{key}")).header("X-API-Key", &api_key);
                async move { request.header("X-Consistency", level).send().await.unwrap().text().await.unwrap() }
            };
            // A strong read sees the acknowledged write at once.
            assert_eq!(read("strong").await, "v2", "strong read after a {consistency} write");
            // An eventual read may reach an owner the write has not reached yet (a strong write
            // answers after two of three), but never keeps the older version for good.
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut seen = read("eventual").await;
            while seen != "v2" && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
                seen = read("eventual").await;
            }
            assert_eq!(seen, "v2", "eventual read after a {consistency} write");
        }
    }
    let metrics: serde_json::Value = http.get(format!("{gateway}/metrics")).send().await.unwrap().json().await.unwrap();
    assert!(metrics["writes_overtaken"].as_u64().unwrap() >= 6, "{metrics}");
}

/// libfaketime, which runs a process with a skewed clock (Debian's `faketime` package).
fn libfaketime() -> Option<&'static str> {
    let path = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    if std::path::Path::new(path).exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("YDHT_REQUIRE_FAKETIME").is_none(),
        "YDHT_REQUIRE_FAKETIME is set but {path} is missing (apt-get install faketime)"
    );
    None
}

/// Issue 14, item 4: a gateway whose clock runs 60 s ahead of the nodes' must not stamp writes
/// with versions from the future: it measures the offset (health probes) and refuses writes with
/// a 503 naming the cause, past `--max-clock-offset`; reads still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_with_a_skewed_clock_refuses_writes() {
    let Some(library) = libfaketime() else {
        println!("skipped: libfaketime is not installed (apt-get install faketime)");
        return;
    };
    let skewed = [
        ("LD_PRELOAD", library.to_string()),
        ("FAKETIME", "+60s".to_string()),
        // Timers and timeouts keep real time; only the wall clock is off.
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
    ];
    let cluster = plain(3, &skewed);
    let http = common::http();
    let (_, api_key) = tenant(&http, &cluster.users.1, "skewed").await;
    let gateway = &cluster.gateway.1;
    let put = || async {
        let response =
            http.put(format!("{gateway}/v1/kv/k")).header("X-API-Key", &api_key).body("v").send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    // The first probe may not have measured the offset yet: poll until writes are refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = put().await;
    while last.0 != 503 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = put().await;
    }
    assert_eq!(last.0, 503, "a gateway 60 s ahead kept writing: {last:?}");
    assert!(last.1.contains("clock") && last.1.contains("ahead"), "{}", last.1);
    let metrics: serde_json::Value = http.get(format!("{gateway}/metrics")).send().await.unwrap().json().await.unwrap();
    let offset = metrics["clock_offset_ms"].as_i64().unwrap();
    assert!((-61_000..=-59_000).contains(&offset), "{metrics}");
    let response = http.get(format!("{gateway}/v1/kv/k")).header("X-API-Key", &api_key).send().await.unwrap();
    assert!(matches!(response.status().as_u16(), 200 | 404), "reads still work: {}", response.status());
}
