//! Anti-entropy between real storage nodes (in-process servers, real WALs and
//! HTTP): replicas converge without the replicator, a wiped node rebuilds its
//! share, nothing is pushed to a node that does not own it, a round never
//! transfers more records than its budget, and deletes missed by a node that
//! was down longer than the tombstone grace do not come back.

use crate::common;
use crate::in_process;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpListener;
use ydht::config::Secret;
use ydht::daemon::node::antientropy::AntiEntropyConfig;
use ydht::daemon::node::{self, NodeConfig};
use ydht::hlc;
use ydht::nodeclient::{NodeClient, WriteMeta};
use ydht::proto::NodeMetrics;
use ydht::ring::{NodeInfo, Ring};
use ydht::shutdown::Shutdown;
use ydht::wire::batch;
use ydht::wire::read::Lookup;

use in_process::InProcess;
use ydht::wal::{Record, SyncMode};

const SECRET: &str = "anti-entropy-secret";
const VNODES: usize = 16;
const HOUR: Duration = Duration::from_secs(3600);

/// A node running in this process, stopped on drop.
type Node = InProcess;

/// Settings shared by the nodes of one test.
#[derive(Clone)]
struct Cluster {
    members: Vec<NodeInfo>,
    replicas: usize,
    max_keys_per_round: usize,
    tombstone_grace: Duration,
}

impl Cluster {
    fn ring(&self) -> Ring {
        Ring::new(self.members.clone(), VNODES)
    }

    fn owns(&self, node: &str, key: &str) -> bool {
        self.ring().owners(key.as_bytes(), self.replicas).iter().any(|owner| owner.id == node)
    }

    async fn start(&self, data_dir: &Path, index: usize, listener: TcpListener) -> Node {
        let id = self.members[index].id.clone();
        let config = NodeConfig {
            node_id: id.clone(),
            data_dir: data_dir.join(&id),
            cluster_secret: Secret::new(SECRET),
            max_value_bytes: 1 << 20,
            wal_max_bytes: 64 << 20,
            sync_mode: SyncMode::Group,
            salvage_wal: false,
            feed_retention: ydht::wal::segment::Retention {
                time: std::time::Duration::from_secs(600),
                changes: 1_000_000,
            },
            tombstone_grace: self.tombstone_grace,
            sweep_interval: Duration::from_millis(100),
            tls: None,
            anti_entropy: Some(AntiEntropyConfig {
                ring: self.ring(),
                node_id: id,
                replicas: self.replicas,
                interval: Duration::from_millis(100),
                max_keys_per_round: self.max_keys_per_round,
                tombstone_grace: self.tombstone_grace,
                max_batch_bytes: 8 << 20,
            }),
            membership: None,
        };
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = Shutdown::new();
        InProcess::spawn(url, shutdown.clone(), node::serve(config, listener, shutdown))
    }
}

/// Binds `count` listeners and names them node-1… with their URLs.
async fn listeners(count: usize) -> (Vec<NodeInfo>, Vec<TcpListener>) {
    let mut members = Vec::new();
    let mut bound = Vec::new();
    for index in 1..=count {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        members
            .push(NodeInfo { id: format!("node-{index}"), url: format!("http://{}", listener.local_addr().unwrap()) });
        bound.push(listener);
    }
    (members, bound)
}

/// Binds `url`'s port again (it was just released by a stopped node).
async fn rebind(url: &str) -> TcpListener {
    let address = url.trim_start_matches("http://").to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(&address).await {
            Ok(listener) => return listener,
            Err(error) => {
                assert!(Instant::now() < deadline, "cannot bind {address}: {error}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

fn client() -> NodeClient {
    NodeClient::new(Secret::new(SECRET), Duration::from_secs(10))
}

async fn write_batch(client: &NodeClient, node: &str, records: &[Record]) {
    let answer = client.batch(node, batch::encode(records).unwrap()).await.unwrap();
    // Applied now, or already brought by anti-entropy running meanwhile: either way the node holds that version.
    for (record, result) in records.iter().zip(&answer.results) {
        assert_eq!(result.version, record.version, "{}", record.key);
    }
}

/// Every live key a node holds (all pages of `/keys`).
async fn live_keys(client: &NodeClient, node: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = client.keys(node, "", 1000, cursor.as_deref()).await.unwrap();
        keys.extend(page.keys.into_iter().map(|entry| entry.key));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return keys,
        }
    }
}

async fn metrics(client: &NodeClient, node: &str) -> NodeMetrics {
    client.metrics(node).await.unwrap()
}

/// Polls `check` every 50 ms for up to 60 s; panics with `what` when it never holds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn writes_that_reached_one_replica_converge_on_all() {
    let data = tempfile::tempdir().unwrap();
    let (members, bound) = listeners(3).await;
    let cluster = Cluster { members, replicas: 3, max_keys_per_round: 10_000, tombstone_grace: HOUR };
    let mut nodes = Vec::new();
    for (index, listener) in bound.into_iter().enumerate() {
        nodes.push(cluster.start(data.path(), index, listener).await);
    }
    let client = client();
    // 50 keys only node-1 got, a newer delete only node-2 got, a newer value only node-3 got.
    // (Versions are recent clock values: tombstones older than the grace period are never transferred.)
    let base = hlc::from_millis(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64,
    );
    let records: Vec<Record> =
        (0..50).map(|n| Record::put(format!("7/k{n}"), base + n, format!("v{n}").into_bytes(), "text/plain")).collect();
    write_batch(&client, &nodes[0].url, &records).await;
    write_batch(&client, &nodes[1].url, &[Record::delete("7/k1", base + 500)]).await;
    let meta = WriteMeta { version: base + 600, expires_at: None, content_type: "text/plain".into() };
    client.put(&nodes[2].url, "7/k2", Bytes::from_static(b"newest"), &meta).await.unwrap();

    for node in &nodes {
        eventually("every node holds every write", || async {
            let newest = matches!(
                client.get(&node.url, "7/k2").await.unwrap(),
                Lookup::Found(found) if found.version == base + 600 && &found.value[..] == b"newest"
            );
            newest
                && live_keys(&client, &node.url).await.len() == 49
                && client.get(&node.url, "7/k1").await.unwrap() == Lookup::Tombstone(base + 500)
        })
        .await;
        match client.get(&node.url, "7/k49").await.unwrap() {
            Lookup::Found(found) => assert_eq!((found.version, &found.value[..]), (base + 49, &b"v49"[..])),
            other => panic!("{}: {other:?}", node.url),
        }
    }
    // A node can converge through its peers' pushes before its own first round ends, and a
    // pusher counts its repairs when its round ends: the counters catch up after convergence.
    for node in &nodes {
        assert!(metrics(&client, &node.url).await.anti_entropy_enabled);
        eventually("every node finished a round", || async {
            metrics(&client, &node.url).await.anti_entropy_rounds >= 1
        })
        .await;
    }
    // node-2 and node-3 each lacked 48 of node-1's keys, and the two single writes had to reach two nodes each.
    eventually("the repairs are counted", || async {
        let mut repaired = 0;
        for node in &nodes {
            repaired += metrics(&client, &node.url).await.anti_entropy_keys_repaired;
        }
        repaired >= 2 * 48 + 4
    })
    .await;
    eventually("a full sync is reported", || async {
        let metrics = metrics(&client, &nodes[0].url).await;
        metrics.anti_entropy_last_sync_age_secs.is_some() && metrics.anti_entropy_errors == 0
    })
    .await;
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test]
async fn a_wiped_node_rebuilds_exactly_its_share() {
    let data = tempfile::tempdir().unwrap();
    let (members, bound) = listeners(3).await;
    let cluster = Cluster { members: members.clone(), replicas: 2, max_keys_per_round: 10_000, tombstone_grace: HOUR };
    let mut nodes = Vec::new();
    for (index, listener) in bound.into_iter().enumerate() {
        nodes.push(cluster.start(data.path(), index, listener).await);
    }
    let client = client();
    // 300 keys written to both owners (as the replicator would have), then node-3's data is wiped.
    let keys: Vec<String> = (0..300).map(|n| format!("3/key-{n}")).collect();
    for (index, member) in members.iter().enumerate() {
        let owned: Vec<Record> = keys
            .iter()
            .filter(|key| cluster.owns(&member.id, key))
            .map(|key| Record::put(key.clone(), 1_000, key.clone().into_bytes(), "text/plain"))
            .collect();
        write_batch(&client, &nodes[index].url, &owned).await;
    }
    let share: BTreeSet<String> = keys.iter().filter(|key| cluster.owns("node-3", key)).cloned().collect();
    assert!(!share.is_empty() && share.len() < keys.len(), "node-3 owns {} of 300 keys", share.len());
    let third = nodes.pop().unwrap();
    let url = third.url.clone();
    third.stop().await;
    std::fs::remove_dir_all(data.path().join("node-3")).unwrap();
    let listener = rebind(&url).await;
    let rebuilt = cluster.start(data.path(), 2, listener).await;

    eventually("node-3 holds its whole share again", || async { live_keys(&client, &rebuilt.url).await == share })
        .await;
    for key in share.iter().take(5) {
        match client.get(&rebuilt.url, key).await.unwrap() {
            Lookup::Found(found) => assert_eq!(&found.value[..], key.as_bytes()),
            other => panic!("{key}: {other:?}"),
        }
    }
    // node-1 and node-2 still hold only their own shares: nothing was pushed to a non-owner.
    for (index, node) in nodes.iter().enumerate() {
        let own: BTreeSet<String> = keys.iter().filter(|key| cluster.owns(&members[index].id, key)).cloned().collect();
        assert_eq!(live_keys(&client, &node.url).await, own, "{}", members[index].id);
    }
    rebuilt.stop().await;
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test]
async fn a_round_never_transfers_more_than_its_budget() {
    let data = tempfile::tempdir().unwrap();
    let (members, bound) = listeners(2).await;
    let budget = 7;
    let cluster = Cluster { members, replicas: 2, max_keys_per_round: budget, tombstone_grace: HOUR };
    let mut nodes = Vec::new();
    for (index, listener) in bound.into_iter().enumerate() {
        nodes.push(cluster.start(data.path(), index, listener).await);
    }
    let client = client();
    let records: Vec<Record> = (0..40).map(|n| Record::put(format!("k{n}"), 1 + n, vec![b'x'; 10], "t")).collect();
    write_batch(&client, &nodes[0].url, &records).await;

    // (rounds, records repaired) over both nodes, checking each node's budget on the way.
    let totals = || async {
        let (mut rounds, mut repaired) = (0, 0);
        for node in &nodes {
            let metrics = metrics(&client, &node.url).await;
            assert!(
                metrics.anti_entropy_keys_repaired <= metrics.anti_entropy_rounds * budget as u64,
                "{} repaired {} records in {} rounds",
                metrics.node_id,
                metrics.anti_entropy_keys_repaired,
                metrics.anti_entropy_rounds
            );
            rounds += metrics.anti_entropy_rounds;
            repaired += metrics.anti_entropy_keys_repaired;
        }
        (rounds, repaired)
    };
    eventually("node-2 catches up", || async {
        totals().await;
        live_keys(&client, &nodes[1].url).await.len() == 40
    })
    .await;
    // Rounds count their repairs when they end, which may be after node-2 caught up.
    eventually("the 40 repairs are counted", || async { totals().await.1 >= 40 }).await;
    let (rounds, repaired) = totals().await;
    // 40 records at most 7 per round and node: at least six rounds between the two nodes.
    assert!(rounds >= 6, "{repaired} records repaired in {rounds} rounds");
    for node in nodes {
        node.stop().await;
    }
}

fn now_version() -> u64 {
    hlc::from_millis(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64)
}

/// Whether no node of `nodes` holds a live value of any of `keys`.
async fn all_deleted(client: &NodeClient, nodes: &[Node], keys: &[String]) -> bool {
    for node in nodes {
        for key in keys {
            if let Lookup::Found(_) = client.get(&node.url, key).await.unwrap() {
                return false;
            }
        }
    }
    true
}

/// Issue 14 item 3: node-3 is down while keys are deleted on node-1 and node-2 and stays down
/// past the tombstone grace; it comes back with the old values. The deletes must win on every
/// node, and the tombstones must still be purged once node-3 has them.
#[tokio::test]
async fn deletes_missed_by_a_node_down_past_the_grace_do_not_come_back() {
    let data = tempfile::tempdir().unwrap();
    let (members, bound) = listeners(3).await;
    let grace = Duration::from_secs(1);
    let cluster = Cluster { members, replicas: 3, max_keys_per_round: 10_000, tombstone_grace: grace };
    let mut nodes = Vec::new();
    for (index, listener) in bound.into_iter().enumerate() {
        nodes.push(cluster.start(data.path(), index, listener).await);
    }
    let client = client();
    let keys: Vec<String> = (0..10).map(|n| format!("5/deleted-{n}")).collect();
    let written = now_version();
    let values: Vec<Record> = keys.iter().map(|key| Record::put(key.clone(), written, &b"old"[..], "t")).collect();
    for node in &nodes {
        write_batch(&client, &node.url, &values).await;
    }
    let third = nodes.pop().unwrap();
    let url = third.url.clone();
    third.stop().await;

    let deleted = now_version().max(written + 1);
    let deletes: Vec<Record> = keys.iter().map(|key| Record::delete(key.clone(), deleted)).collect();
    for node in &nodes {
        write_batch(&client, &node.url, &deletes).await;
    }
    // Past the grace, the sweepers of node-1 and node-2 have seen the tombstones and kept
    // them: node-3 is not known to hold them.
    for node in &nodes {
        eventually("a sweep past the grace handled the tombstones", || async {
            let metrics = metrics(&client, &node.url).await;
            metrics.tombstones_purged >= 10 || metrics.tombstones_held_back >= 10
        })
        .await;
        let metrics = metrics(&client, &node.url).await;
        assert_eq!((metrics.tombstones, metrics.tombstones_purged), (10, 0), "{}", metrics.node_id);
        assert_eq!(metrics.tombstones_held_back, 10, "{}", metrics.node_id);
        assert!(metrics.oldest_held_back_tombstone_age_secs.is_some(), "{}", metrics.node_id);
    }

    let listener = rebind(&url).await;
    // node-3 comes back with the old values of its WAL.
    nodes.push(cluster.start(data.path(), 2, listener).await);
    eventually("every key reads as deleted on every node", || all_deleted(&client, &nodes, &keys)).await;
    // Once every node holds the deletes and has synced with the others, they are purged everywhere.
    eventually("the tombstones are purged on every node", || async {
        for node in &nodes {
            let metrics = metrics(&client, &node.url).await;
            if metrics.tombstones > 0 || metrics.tombstones_held_back > 0 {
                return false;
            }
        }
        true
    })
    .await;
    // Two more rounds on every node: nothing comes back and no tombstone is handed around again.
    let mut rounds = Vec::new();
    for node in &nodes {
        rounds.push(metrics(&client, &node.url).await.anti_entropy_rounds);
    }
    for (node, before) in nodes.iter().zip(rounds) {
        eventually("two more anti-entropy rounds", || async {
            metrics(&client, &node.url).await.anti_entropy_rounds >= before + 2
        })
        .await;
    }
    for node in &nodes {
        for key in &keys {
            assert_eq!(client.get(&node.url, key).await.unwrap(), Lookup::Missing, "{} {key}", node.url);
        }
        assert_eq!(metrics(&client, &node.url).await.tombstones, 0, "{}", node.url);
    }
    for node in nodes {
        node.stop().await;
    }
}

/// `ydht serve all` gives every node its peers: a write that reached only node-1 spreads to the others.
#[tokio::test]
async fn serve_all_runs_anti_entropy_between_its_nodes() {
    let cluster = common::start_cluster_with(&[("YDHT_ANTI_ENTROPY_INTERVAL", "200ms")]);
    let client = NodeClient::new(Secret::new(cluster.secret()), Duration::from_secs(10));
    let version = hlc::from_millis(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64,
    );
    let meta = WriteMeta { version, expires_at: None, content_type: "text/plain".into() };
    client.put(&cluster.nodes[0], "9/only-on-node-1", Bytes::from_static(b"spread"), &meta).await.unwrap();
    for node in &cluster.nodes[1..] {
        eventually("the write reaches every node", || async {
            matches!(client.get(node, "9/only-on-node-1").await.unwrap(), Lookup::Found(found) if found.version == version)
        })
        .await;
        // The write may have been pushed here by node-1 before this node finished a round of its own.
        eventually("the node reports a finished anti-entropy round", || async {
            let metrics = metrics(&client, node).await;
            metrics.anti_entropy_enabled && metrics.anti_entropy_rounds >= 1
        })
        .await;
    }
}
