//! Anti-entropy: replicas converge even when the replicator's queue and hints are lost.
//!
//! Every `interval`, the node compares itself with each peer, one at a time:
//!
//! 1. `GET /digest` of the peer: one hash per ring arc ([`super::digest`]).
//!    Only arcs whose N owners include both nodes are compared, so a node is
//!    never sent keys it does not own (and never asks for them).
//! 2. For the arcs whose hashes differ, both sides list their entries of those
//!    arcs (`POST /range` on the peer, [`Store::range`] locally), page by page
//!    in key order, and compare versions key by key.
//! 3. Keys the peer holds newer are pulled (`POST /export`, then one local WAL
//!    append); keys this node holds newer are pushed (`POST /batch`).
//!
//! The ring can change (online membership, [`crate::membership`]): the task
//! follows a [`RingSource`]; on a new ring it rebuilds the digest and its peer
//! list, and while a membership change is in progress (no ring) it pauses and
//! answers `/digest` with fingerprint 0, which matches no peer.
//!
//! Throttling: a round transfers at most `max_keys_per_round` records in all
//! (pulled + pushed), in requests of at most one page (and one batch body)
//! each, one request at a time; the rest waits for the next round. Expired
//! entries past their grace period are not transferred (each node's sweeper
//! purges them on its own); tombstones past it only to replace an older version
//! of the key ([`gc::tombstone_transferable`]).
//!
//! An exchange that compared every shared arc, failed no request and was not
//! cut short by the budget is *complete*: every record this node held when it
//! started is then on the peer at an equal or newer version (or the peer holds
//! nothing for a tombstone past the grace). Its start is recorded in
//! [`gc::PeerSyncs`], which tells the sweeper which tombstones it may purge ([`gc`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::AntiEntropyHandle;
use super::digest::fingerprint;
use super::gc;
use super::store::Store;
use crate::hlc;
use crate::nodeclient::{NodeClient, NodeError};
use crate::proto::{NodeRangeEntry, NodeRangePage, NodeRangeRequest};
use crate::ring::{NodeInfo, Ring};
use crate::shutdown::Shutdown;
use crate::sync::Lock;
use crate::wire::batch;

/// Entries per `/range` page and keys per `/export` request.
pub const PAGE: usize = 1000;

/// Anti-entropy settings of one node.
#[derive(Debug, Clone)]
pub struct AntiEntropyConfig {
    /// The cluster's ring (the same on every node).
    pub ring: Ring,
    /// This node's id on the ring.
    pub node_id: String,
    /// Copies kept of every key (N).
    pub replicas: usize,
    /// Time between rounds.
    pub interval: Duration,
    /// Most records transferred (pulled + pushed) per round.
    pub max_keys_per_round: usize,
    /// Tombstones and expired entries older than this are not transferred.
    pub tombstone_grace: Duration,
    /// Largest batch body sent to a peer.
    pub max_batch_bytes: usize,
}

/// Progress counters, read by `/metrics`. One lock so a reader never sees a
/// round's keys without the round itself.
#[derive(Debug, Default, Clone, Copy)]
pub struct AntiEntropyStatus {
    /// Rounds finished.
    pub rounds: u64,
    /// Records pulled or pushed that became the current version on the receiving side.
    pub keys_repaired: u64,
    /// Peer exchanges that failed.
    pub errors: u64,
    /// When a round last compared every peer successfully.
    pub last_full_sync: Option<Instant>,
}

/// Shared handle on the status.
#[derive(Debug, Default, Clone)]
pub struct AntiEntropyStats(Arc<Mutex<AntiEntropyStatus>>);

impl AntiEntropyStats {
    /// A copy of the current status.
    pub fn snapshot(&self) -> AntiEntropyStatus {
        *self.0.locked()
    }

    fn finish_round(&self, repaired: u64, errors: u64) {
        let mut status = self.0.locked();
        status.rounds += 1;
        status.keys_repaired += repaired;
        status.errors += errors;
        if errors == 0 {
            status.last_full_sync = Some(Instant::now());
        }
    }
}

/// The ring anti-entropy compares by: fixed (`YDHT_NODES`), or set by the membership watcher;
/// `None` pauses anti-entropy (a membership change is moving data). Cheap to clone.
#[derive(Debug, Clone)]
pub struct RingSource(Arc<tokio::sync::watch::Sender<Option<Ring>>>);

impl RingSource {
    /// Starts with `ring`.
    pub fn new(ring: Option<Ring>) -> Self {
        Self(Arc::new(tokio::sync::watch::channel(ring).0))
    }

    /// Switches to `ring` (`None` pauses).
    pub fn set(&self, ring: Option<Ring>) {
        self.0.send_replace(ring);
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<Option<Ring>> {
        self.0.subscribe()
    }
}

/// The fingerprint `/digest` reports (0: paused); shared with the HTTP handlers.
#[derive(Debug, Clone, Default)]
pub struct SharedFingerprint(Arc<AtomicU64>);

impl SharedFingerprint {
    /// The current fingerprint.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Sets the fingerprint.
    pub fn set(&self, fingerprint: u64) {
        self.0.store(fingerprint, Ordering::Release);
    }
}

/// One peer and the arcs this node shares with it.
struct Peer {
    node: NodeInfo,
    /// Sorted arc indexes whose owners include both nodes.
    shared: Vec<usize>,
}

/// The background task: a round every `interval` until `shutdown`, over the ring `rings` gives.
pub async fn run(
    store: Store,
    mut config: AntiEntropyConfig,
    client: NodeClient,
    handle: AntiEntropyHandle,
    rings: RingSource,
    shutdown: Shutdown,
) {
    let AntiEntropyHandle { stats, fingerprint: reported, syncs } = handle;
    let mut rings = rings.subscribe();
    let mut active = rings.borrow_and_update().is_some();
    let mut peers = peers_of(&config);
    if active {
        syncs.set_peers(peer_ids(&peers), true);
    }
    let mut ours = fingerprint(&config.ring, config.replicas);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + config.interval, config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(peers = peers.len(), interval_ms = config.interval.as_millis() as u64, "anti-entropy started");
    loop {
        tokio::select! {
            () = shutdown.wait() => return,
            changed = rings.changed() => {
                if changed.is_err() {
                    return;
                }
                let ring = rings.borrow_and_update().clone();
                match ring {
                    None => {
                        active = false;
                        reported.set(0);
                        syncs.pause();
                    }
                    Some(ring) => {
                        active = true;
                        let changed = fingerprint(&ring, config.replicas) != ours || !store.digest_enabled();
                        if changed {
                            config.ring = ring;
                            store.enable_digest(config.ring.clone());
                            peers = peers_of(&config);
                            ours = fingerprint(&config.ring, config.replicas);
                            tracing::info!(peers = peers.len(), "anti-entropy: ring updated");
                        }
                        syncs.set_peers(peer_ids(&peers), changed);
                        reported.set(ours);
                    }
                }
                continue;
            }
            _ = ticker.tick() => {}
        }
        if !active {
            continue;
        }
        let round = Round { store: &store, config: &config, client: &client, fingerprint: ours };
        let mut budget = config.max_keys_per_round;
        let mut repaired = 0;
        let mut errors = 0;
        for peer in &peers {
            let started = gc::local_millis();
            let exchange = tokio::select! {
                () = shutdown.wait() => return,
                exchange = round.with_peer(peer, &mut budget) => exchange,
            };
            match exchange {
                Ok(Exchange { repaired: count, complete }) => {
                    repaired += count;
                    if complete {
                        syncs.completed(&peer.node.id, started);
                    }
                }
                Err(error) => {
                    errors += 1;
                    tracing::warn!(peer = %peer.node.id, %error, "anti-entropy exchange failed; retrying next round");
                }
            }
        }
        if repaired > 0 {
            tracing::info!(repaired, "anti-entropy repaired records");
        }
        stats.finish_round(repaired, errors);
    }
}

/// The ids of `peers`.
fn peer_ids(peers: &[Peer]) -> Vec<String> {
    peers.iter().map(|peer| peer.node.id.clone()).collect()
}

/// Every other node of the ring with the arcs both own.
fn peers_of(config: &AntiEntropyConfig) -> Vec<Peer> {
    let ring = &config.ring;
    let mut peers: BTreeMap<&str, Peer> = ring
        .nodes()
        .iter()
        .filter(|node| node.id != config.node_id)
        .map(|node| (node.id.as_str(), Peer { node: node.clone(), shared: Vec::new() }))
        .collect();
    for arc in 0..ring.arc_count() {
        let mut owners = ring.arc_preference(arc);
        owners.truncate(config.replicas);
        if !owners.iter().any(|node| node.id == config.node_id) {
            continue;
        }
        for owner in owners {
            if let Some(peer) = peers.get_mut(owner.id.as_str()) {
                peer.shared.push(arc);
            }
        }
    }
    let order: Vec<&str> = ring.nodes().iter().map(|node| node.id.as_str()).collect();
    let mut list: Vec<Peer> = peers.into_values().filter(|peer| !peer.shared.is_empty()).collect();
    list.sort_by_key(|peer| order.iter().position(|id| *id == peer.node.id));
    list
}

/// Why an exchange with a peer failed.
#[derive(Debug, thiserror::Error)]
enum ExchangeError {
    /// A request failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The peer was started with another member list, vnodes or replicas.
    #[error("peer {0} uses a different ring (YDHT_NODES / YDHT_VNODES / YDHT_REPLICAS differ); not comparing")]
    RingMismatch(String),
    /// Local records could not be written or encoded.
    #[error("{0}")]
    Local(String),
}

/// What an exchange with one peer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Exchange {
    /// Records that became the current version on the receiving side.
    repaired: u64,
    /// Every difference was transferred (the budget cut nothing short).
    complete: bool,
}

struct Round<'a> {
    store: &'a Store,
    config: &'a AntiEntropyConfig,
    client: &'a NodeClient,
    fingerprint: u64,
}

impl Round<'_> {
    /// Compares this node with `peer` and exchanges what differs.
    async fn with_peer(&self, peer: &Peer, budget: &mut usize) -> Result<Exchange, ExchangeError> {
        if *budget == 0 {
            return Ok(Exchange { repaired: 0, complete: false });
        }
        let url = peer.node.url.as_str();
        let theirs = self.client.digest(url).await?;
        if theirs.fingerprint != self.fingerprint {
            return Err(ExchangeError::RingMismatch(peer.node.id.clone()));
        }
        let ours = self.store.digest().unwrap_or_default();
        let differing: Vec<usize> =
            peer.shared.iter().copied().filter(|&arc| ours.get(arc) != theirs.buckets.get(arc)).collect();
        if differing.is_empty() {
            return Ok(Exchange { repaired: 0, complete: true });
        }
        let mut repaired = 0;
        let mut cursor: Option<String> = None;
        loop {
            if *budget == 0 {
                return Ok(Exchange { repaired, complete: false });
            }
            let request = NodeRangeRequest { buckets: differing.clone(), cursor: cursor.clone(), limit: PAGE };
            let remote = self.client.range(url, &request).await?;
            let local = self.store.range(&differing, cursor.as_deref(), PAGE);
            let bound = window_end(&remote, &local);
            let (mut pull, mut push) = self.compare(&remote.entries, &local.entries, bound.as_deref());
            let cut = pull.len() + push.len() > *budget;
            pull.truncate(*budget);
            push.truncate(*budget - pull.len());
            *budget -= pull.len() + push.len();
            repaired += self.pull(url, pull).await?;
            repaired += self.push(url, push).await?;
            if cut {
                return Ok(Exchange { repaired, complete: false });
            }
            match bound {
                Some(bound) => cursor = Some(bound),
                None => return Ok(Exchange { repaired, complete: true }),
            }
        }
    }

    /// Keys to pull and keys to push among the entries up to `bound` (inclusive; `None`: all).
    fn compare(
        &self,
        remote: &[NodeRangeEntry],
        local: &[NodeRangeEntry],
        bound: Option<&str>,
    ) -> (Vec<String>, Vec<String>) {
        let within = |entry: &&NodeRangeEntry| bound.is_none_or(|bound| entry.key.as_str() <= bound);
        let theirs: BTreeMap<&str, &NodeRangeEntry> =
            remote.iter().filter(within).map(|entry| (entry.key.as_str(), entry)).collect();
        let ours: BTreeMap<&str, &NodeRangeEntry> =
            local.iter().filter(within).map(|entry| (entry.key.as_str(), entry)).collect();
        transfers(&theirs, &ours, crate::hlc::wall_millis(), self.config.tombstone_grace.as_millis() as u64)
    }

    /// Fetches `keys` from the peer and applies them locally; returns how many became current.
    async fn pull(&self, url: &str, keys: Vec<String>) -> Result<u64, ExchangeError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut records = self.client.export(url, keys.clone()).await?;
        records.retain(|record| keys.binary_search(&record.key).is_ok());
        let answers = self.store.write(records).await.map_err(|error| ExchangeError::Local(error.to_string()))?;
        Ok(answers.iter().filter(|answer| answer.applied).count() as u64)
    }

    /// Sends this node's records of `keys` to the peer in bounded batches; returns how many became current there.
    async fn push(&self, url: &str, keys: Vec<String>) -> Result<u64, ExchangeError> {
        let records = self.store.export(&keys);
        let mut applied = 0;
        for chunk in batch::chunks(records, self.config.max_batch_bytes) {
            let body = batch::encode(&chunk).map_err(|error| ExchangeError::Local(error.to_string()))?;
            let answer = self.client.batch(url, body).await?;
            applied += answer.results.iter().filter(|result| result.applied).count() as u64;
        }
        Ok(applied)
    }
}

/// Keys to pull (`theirs` holds newer) and keys to push (`ours` holds newer) at `now` (Unix ms).
/// Expired entries past the grace are not sent; tombstones past it only over an older version.
fn transfers(
    theirs: &BTreeMap<&str, &NodeRangeEntry>,
    ours: &BTreeMap<&str, &NodeRangeEntry>,
    now: u64,
    grace: u64,
) -> (Vec<String>, Vec<String>) {
    let sendable = |entry: &NodeRangeEntry, other: Option<&&NodeRangeEntry>| {
        if entry.tombstone {
            let dead_since = hlc::millis_of(entry.version);
            dead_since.saturating_add(grace) > now || gc::tombstone_transferable(other.is_some())
        } else {
            entry.expires_at.is_none_or(|since| since.saturating_add(grace) > now)
        }
    };
    let version = |entry: Option<&&NodeRangeEntry>| entry.map_or(0, |entry| entry.version);
    let mut pull = Vec::new();
    let mut push = Vec::new();
    for (key, entry) in theirs {
        let mine = ours.get(key);
        if entry.version > version(mine) && sendable(entry, mine) {
            pull.push(key.to_string());
        }
    }
    for (key, entry) in ours {
        let other = theirs.get(key);
        if entry.version > version(other) && sendable(entry, other) {
            push.push(key.to_string());
        }
    }
    (pull, push)
}

/// The last key both listings cover: the smaller `next_cursor` of the two, or
/// `None` when both listings reached their end.
fn window_end(remote: &NodeRangePage, local: &NodeRangePage) -> Option<String> {
    match (&remote.next_cursor, &local.next_cursor) {
        (None, None) => None,
        (Some(end), None) | (None, Some(end)) => Some(end.clone()),
        (Some(first), Some(second)) => Some(first.min(second).clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(count: usize) -> Ring {
        let nodes = (1..=count).map(|i| NodeInfo { id: format!("node-{i}"), url: format!("http://n{i}") }).collect();
        Ring::new(nodes, 30)
    }

    fn config(count: usize, replicas: usize) -> AntiEntropyConfig {
        AntiEntropyConfig {
            ring: ring(count),
            node_id: "node-1".into(),
            replicas,
            interval: Duration::from_secs(1),
            max_keys_per_round: 10,
            tombstone_grace: Duration::from_secs(60),
            max_batch_bytes: 1 << 20,
        }
    }

    #[test]
    fn peers_share_exactly_the_arcs_both_own() {
        let config = config(4, 2);
        let peers = peers_of(&config);
        for peer in &peers {
            for arc in 0..config.ring.arc_count() {
                let owners: Vec<_> = config.ring.arc_preference(arc).into_iter().take(2).collect();
                let both = owners.iter().any(|n| n.id == "node-1") && owners.iter().any(|n| n.id == peer.node.id);
                assert_eq!(peer.shared.contains(&arc), both, "{} arc {arc}", peer.node.id);
            }
        }
        // With N equal to the node count, every node shares every arc with every other.
        let full = config_all();
        assert!(peers_of(&full).iter().all(|peer| peer.shared.len() == full.ring.arc_count()));
    }

    fn config_all() -> AntiEntropyConfig {
        config(3, 3)
    }

    fn entry(key: &str, version: u64, tombstone: bool) -> NodeRangeEntry {
        NodeRangeEntry { key: key.into(), version, tombstone, expires_at: None }
    }

    fn by_key(entries: &[NodeRangeEntry]) -> BTreeMap<&str, &NodeRangeEntry> {
        entries.iter().map(|entry| (entry.key.as_str(), entry)).collect()
    }

    #[test]
    fn a_tombstone_past_the_grace_replaces_an_older_value_but_is_not_handed_back_to_a_node_that_purged_it() {
        let grace = 1_000;
        let old = hlc::from_millis(1_000);
        let deleted = hlc::from_millis(2_000);
        let now = 10_000;
        // The node that was down holds the old values; this one the deletes, long past the grace.
        let ours = [entry("a", deleted, true), entry("b", deleted, true), entry("c", deleted, true)];
        let theirs = [entry("a", old, false), entry("b", old, true)];
        let (pull, push) = transfers(&by_key(&theirs), &by_key(&ours), now, grace);
        // "c": the peer holds nothing (it already purged it, or never had the key): not sent, no ping-pong.
        assert_eq!((pull, push), (vec![], vec!["a".to_string(), "b".to_string()]));
        // The same from the other side: the returning node pulls the deletes over its old values.
        let (pull, push) = transfers(&by_key(&ours), &by_key(&theirs), now, grace);
        assert_eq!((pull, push), (vec!["a".to_string(), "b".to_string()], vec![]));
        // Within the grace a tombstone goes everywhere.
        let young = [entry("c", hlc::from_millis(9_500), true)];
        assert_eq!(transfers(&by_key(&[]), &by_key(&young), now, grace).1, vec!["c".to_string()]);
        // An expired value past the grace is never sent; a live one is.
        let expired = NodeRangeEntry { expires_at: Some(5_000), ..entry("e", old, false) };
        let live = NodeRangeEntry { expires_at: Some(20_000), ..entry("l", old, false) };
        let ours = [expired, live];
        assert_eq!(transfers(&by_key(&theirs[..0]), &by_key(&ours), now, grace).1, vec!["l".to_string()]);
    }

    #[test]
    fn the_window_ends_at_the_shorter_listing() {
        let page = |next: Option<&str>| NodeRangePage { entries: Vec::new(), next_cursor: next.map(str::to_string) };
        assert_eq!(window_end(&page(None), &page(None)), None);
        assert_eq!(window_end(&page(Some("m")), &page(None)).as_deref(), Some("m"));
        assert_eq!(window_end(&page(Some("m")), &page(Some("c"))).as_deref(), Some("c"));
    }
}
