//! A node's part in online membership changes ([`crate::membership`]), when
//! started with `--join GATEWAY_URL`:
//!
//! 1. At start it registers itself (`POST /membership/join` with its id and
//!    advertised URL) through the gateway, retrying until the gateway answers.
//! 2. It follows the membership (`GET /membership?after=V&wait=…`).
//! 3. While a change is in progress and the node is in the new ring, it pulls
//!    the [`Segment`]s it gains from their old owners: `POST /scan` lists an
//!    owner's entries of a few segments page by page, newer ones are fetched
//!    with `POST /export` and applied through the WAL. Pulls are throttled to
//!    `--rebalance-rate` records per second. A durable cursor
//!    (`rebalance.json` in the node's data dir) records the segments done, so a
//!    restarted node resumes where it stopped. Progress is reported to the
//!    gateway after every chunk; the last "done" report completes the change.
//! 4. Once the membership is settled, it drops (without tombstones; a
//!    snapshot right after makes the drop durable) the keys it no longer
//!    owns, but only after every owner of
//!    such a key confirmed holding that version or a newer one; an owner that
//!    lacks it is sent the record first (`POST /batch`). The clean-up repeats
//!    every 10 s, so stray copies (a late write from a gateway that had not
//!    seen the change yet, a replication job for a former owner) reach their
//!    owners and go too.
//!
//! Anti-entropy follows the settled ring and pauses during a change.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use super::antientropy::{PAGE, RingSource};
use super::store::Store;
use crate::config::Secret;
use crate::membership::{JoinRequest, Layout, Membership, MembershipQuery, ProgressReport, RebalanceProgress, Segment};
use crate::nodeclient::NodeClient;
use crate::proto::{CLUSTER_SECRET_HEADER, NodeRangeEntry, NodeScanRequest};
use crate::ring::NodeInfo;
use crate::shutdown::Shutdown;
use crate::wire::read::Lookup;

/// How long a membership long-poll waits at the gateway.
const WATCH_WAIT: Duration = Duration::from_secs(10);
/// Pause after a failed call.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// Time for every gateway to learn of a change before data moves, so none still writes by the old ring alone.
const SETTLE_DELAY: Duration = Duration::from_secs(2);
/// Segments pulled per chunk (one cursor update and progress report each).
const CHUNK_SEGMENTS: usize = 16;
/// Time between clean-ups of keys this node does not own.
const CLEANUP_INTERVAL: Duration = Duration::from_secs(10);
/// The durable rebalancing cursor in the node's data dir.
const CURSOR_FILE: &str = "rebalance.json";
/// Largest `/batch` body the clean-up sends (nodes accept at least 8 MiB).
const MAX_HANDOFF_BYTES: usize = 4 << 20;

/// How a node takes part in membership changes.
#[derive(Debug, Clone)]
pub struct MembershipSettings {
    /// The gateway to register with and follow.
    pub gateway_url: String,
    /// The URL others reach this node at; `None`: the address it bound.
    pub advertise_url: Option<String>,
    /// Most records pulled per second while rebalancing.
    pub rebalance_rate: u32,
    /// Virtual nodes per node (as the gateway's).
    pub vnodes: usize,
    /// Copies per key (as the gateway's).
    pub replicas: usize,
}

/// Everything the membership task works with.
#[derive(Clone)]
pub struct Follower {
    /// The node's data.
    pub store: Store,
    /// This node's id.
    pub node_id: String,
    /// The URL it registers.
    pub url: String,
    /// `<data-dir>/<node-id>`, for the cursor.
    pub data_dir: PathBuf,
    /// The cluster secret.
    pub secret: Secret,
    /// The settings.
    pub settings: MembershipSettings,
    /// Where anti-entropy takes its ring from.
    pub rings: RingSource,
}

/// The durable rebalancing cursor: segments done for one membership version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    version: u64,
    arcs_done: u64,
    keys_moved: u64,
}

impl Cursor {
    fn load(dir: &Path) -> Option<Cursor> {
        serde_json::from_slice(&std::fs::read(dir.join(CURSOR_FILE)).ok()?).ok()
    }

    /// Written to a temporary file, synced, then renamed over the old one.
    fn save(&self, dir: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let temporary = dir.join(format!("{CURSOR_FILE}.tmp"));
        let mut file = crate::config::create_private_file(&temporary)?;
        file.write_all(&serde_json::to_vec(self).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&temporary, dir.join(CURSOR_FILE))?;
        std::fs::File::open(dir)?.sync_all()
    }
}

impl Follower {
    fn http(&self) -> reqwest::Client {
        crate::tls::client_builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("the HTTP client configuration is valid")
    }

    async fn call<T: Serialize>(
        &self,
        http: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
        query: Option<MembershipQuery>,
        body: Option<&T>,
    ) -> Result<Membership, CallError> {
        let wait = query.and_then(|query| query.wait).unwrap_or(0);
        let mut request = http
            .request(method, format!("{}/{path}", self.settings.gateway_url))
            .header(CLUSTER_SECRET_HEADER, self.secret.expose())
            .timeout(Duration::from_secs(wait + 10));
        if let Some(query) = query {
            request = request.query(&query);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let unreachable =
            |error: reqwest::Error| CallError { refused: false, message: error.without_url().to_string() };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let text = response.text().await.map_err(unreachable)?;
        if !status.is_success() {
            return Err(CallError {
                refused: status.is_client_error(),
                message: format!("the gateway answered {status}: {text}"),
            });
        }
        serde_json::from_str(&text)
            .map_err(|error| CallError { refused: false, message: format!("unreadable membership: {error}") })
    }

    async fn report(&self, http: &reqwest::Client, progress: RebalanceProgress) -> Result<Membership, CallError> {
        let report = ProgressReport { node_id: self.node_id.clone(), progress };
        self.call(http, reqwest::Method::POST, "membership/progress", None, Some(&report)).await
    }
}

/// A failed call to the gateway.
#[derive(Debug)]
struct CallError {
    /// The gateway refused it (4xx): retrying the same request will not help.
    refused: bool,
    /// What went wrong, for the log.
    message: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Registers the node, then follows the membership until shutdown.
pub async fn run(member: Follower, shutdown: Shutdown) {
    let http = member.http();
    let join = JoinRequest { url: member.url.clone(), id: Some(member.node_id.clone()) };
    let mut known: Option<u64> = None;
    let mut was_member = false;
    let mut failures = 0u32;
    let mut mover: Option<(u64, JoinHandle<()>)> = None;
    let mut cleaner: Option<(u64, JoinHandle<()>)> = None;
    loop {
        let call = async {
            match known {
                None => member.call(&http, reqwest::Method::POST, "membership/join", None, Some(&join)).await,
                Some(after) => {
                    let query = MembershipQuery { after: Some(after), wait: Some(WATCH_WAIT.as_secs()) };
                    member.call::<()>(&http, reqwest::Method::GET, "membership", Some(query), None).await
                }
            }
        };
        let outcome = tokio::select! {
            () = shutdown.wait() => break,
            outcome = call => outcome,
        };
        let membership = match outcome {
            Ok(membership) => membership,
            Err(error) if known.is_none() && error.refused => {
                // E.g. this node is leaving: it cannot join again, but it still follows the membership.
                tracing::warn!(%error, "the gateway refused to register this node; following the membership without joining");
                known = Some(0);
                continue;
            }
            Err(error) => {
                failures += 1;
                // The gateway often starts after its nodes: only keep complaining.
                if known.is_none() && failures % 10 == 0 {
                    tracing::warn!(%error, gateway = %member.settings.gateway_url, "cannot register with the gateway yet; retrying");
                } else {
                    tracing::debug!(%error, "membership poll failed");
                }
                tokio::select! {
                    () = shutdown.wait() => break,
                    () = tokio::time::sleep(RETRY_DELAY) => {}
                }
                continue;
            }
        };
        failures = 0;
        if known.is_none() {
            tracing::info!(version = membership.version, node_id = %member.node_id, url = %member.url, "registered with the cluster");
        }
        known = Some(membership.version);
        let layout = Layout::new(&membership, member.settings.vnodes, member.settings.replicas);
        let in_new_ring = layout.new.nodes().iter().any(|node| node.id == member.node_id);
        let is_member = membership.member(&member.node_id).is_some();
        if was_member && !is_member {
            tracing::warn!(node_id = %member.node_id, "this node was removed from the cluster; its data is no longer served, stop it");
        }
        was_member = is_member;
        member.rings.set((!layout.in_transition() && in_new_ring).then(|| layout.new.clone()));
        // A newer version replaces any work for an older one.
        for task in [&mut mover, &mut cleaner] {
            if task.as_ref().is_some_and(|(version, _)| *version != membership.version) {
                if let Some((_, handle)) = task.take() {
                    handle.abort();
                }
            }
        }
        if layout.in_transition() && in_new_ring && mover.is_none() {
            let reported_done = membership
                .member(&member.node_id)
                .and_then(|me| me.progress)
                .is_some_and(|progress| progress.version == membership.version && progress.done);
            if !reported_done {
                let task = tokio::spawn(rebalance(member.clone(), layout.clone()));
                mover = Some((membership.version, task));
            }
        }
        if !layout.in_transition() && in_new_ring && cleaner.is_none() {
            cleaner = Some((membership.version, tokio::spawn(clean_up_loop(member.clone(), layout))));
        }
    }
    for (_, task) in [mover, cleaner].into_iter().flatten() {
        task.abort();
    }
}

/// Pulls every segment this node gains in `layout`, reporting progress, then reports done.
async fn rebalance(member: Follower, layout: Layout) {
    tokio::time::sleep(SETTLE_DELAY).await;
    let http = member.http();
    let client = NodeClient::new(member.secret.clone(), Duration::from_secs(30));
    let gained = layout.gained_by(&member.node_id);
    let total = gained.len() as u64;
    let mut cursor = Cursor::load(&member.data_dir)
        .filter(|cursor| cursor.version == layout.version && cursor.arcs_done <= total)
        .unwrap_or(Cursor { version: layout.version, ..Cursor::default() });
    if cursor.arcs_done > 0 {
        tracing::info!(version = layout.version, done = cursor.arcs_done, total, "resuming rebalancing");
    } else {
        tracing::info!(version = layout.version, segments = total, "rebalancing: pulling the segments this node gains");
    }
    let progress = |cursor: &Cursor, done: bool| RebalanceProgress {
        version: layout.version,
        arcs_total: total,
        arcs_done: cursor.arcs_done,
        keys_moved: cursor.keys_moved,
        done,
    };
    let _ = member.report(&http, progress(&cursor, false)).await;
    let puller = Puller { member: &member, client: &client, layout: &layout };
    let mut failures = 0u32;
    while (cursor.arcs_done as usize) < gained.len() {
        let start = cursor.arcs_done as usize;
        let chunk = &gained[start..(start + CHUNK_SEGMENTS).min(gained.len())];
        match puller.pull(chunk).await {
            Ok(moved) => {
                failures = 0;
                cursor.arcs_done += chunk.len() as u64;
                cursor.keys_moved += moved;
                if let Err(error) = cursor.save(&member.data_dir) {
                    tracing::warn!(%error, "cannot save the rebalancing cursor; a restart redoes this chunk");
                }
                if let Err(error) = member.report(&http, progress(&cursor, false)).await {
                    tracing::debug!(%error, "progress report failed");
                }
            }
            Err(error) => {
                failures += 1;
                tracing::warn!(%error, failures, "rebalancing: pulling a chunk failed; retrying");
                tokio::time::sleep(RETRY_DELAY * failures.min(10)).await;
            }
        }
    }
    loop {
        match member.report(&http, progress(&cursor, true)).await {
            Ok(membership) => {
                tracing::info!(
                    version = layout.version,
                    segments = total,
                    keys = cursor.keys_moved,
                    now = membership.version,
                    "rebalancing done"
                );
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot report rebalancing done; retrying");
                tokio::time::sleep(RETRY_DELAY).await;
            }
        }
    }
}

/// Why moving records between nodes (rebalancing, clean-up) failed this time.
#[derive(Debug, thiserror::Error)]
enum MoveError {
    /// A peer's request failed.
    #[error("{peer}: {source}")]
    Peer {
        /// The peer's node id.
        peer: String,
        /// What went wrong.
        source: crate::nodeclient::NodeError,
    },
    /// This node's store refused the records.
    #[error(transparent)]
    Store(#[from] crate::wal::WalError),
    /// A record could not be framed for a batch.
    #[error(transparent)]
    Encode(#[from] crate::wal::record::EncodeError),
}

impl MoveError {
    fn peer(node: &NodeInfo, source: crate::nodeclient::NodeError) -> Self {
        Self::Peer { peer: node.id.clone(), source }
    }
}

struct Puller<'a> {
    member: &'a Follower,
    client: &'a NodeClient,
    layout: &'a Layout,
}

impl Puller<'_> {
    /// Pulls `segments` from each of their sources; returns the records that were newer here.
    async fn pull(&self, segments: &[Segment]) -> Result<u64, MoveError> {
        let mut by_source: BTreeMap<String, (NodeInfo, Vec<(u64, u64)>)> = BTreeMap::new();
        for segment in segments {
            for source in self.layout.sources(segment, &self.member.node_id) {
                by_source
                    .entry(source.id.clone())
                    .or_insert_with(|| (source.clone(), Vec::new()))
                    .1
                    .push((segment.start, segment.end));
            }
        }
        let mut moved = 0;
        for (source, intervals) in by_source.into_values() {
            moved += self.pull_from(&source, intervals).await?;
        }
        Ok(moved)
    }

    async fn pull_from(&self, source: &NodeInfo, intervals: Vec<(u64, u64)>) -> Result<u64, MoveError> {
        let store = &self.member.store;
        let rate = f64::from(self.member.settings.rebalance_rate.max(1));
        let mut moved = 0;
        let mut cursor = None;
        loop {
            let request = NodeScanRequest { intervals: intervals.clone(), cursor: cursor.clone(), limit: PAGE };
            let page = self.client.scan(&source.url, &request).await.map_err(|error| MoveError::peer(source, error))?;
            let wanted: Vec<String> = page
                .entries
                .iter()
                .filter(|entry| newer_than_local(store, entry))
                .map(|entry| entry.key.clone())
                .collect();
            let started = tokio::time::Instant::now();
            let count = wanted.len();
            moved += self.fetch(source, wanted).await?;
            // Throttle: at most `rate` records per second.
            let budget = Duration::from_secs_f64(count as f64 / rate);
            tokio::time::sleep_until(started + budget).await;
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(moved),
            }
        }
    }

    /// Copies `keys` from `source` (in as many `/export` calls as its size bound needs).
    async fn fetch(&self, source: &NodeInfo, mut keys: Vec<String>) -> Result<u64, MoveError> {
        let mut applied = 0;
        while !keys.is_empty() {
            let records =
                self.client.export(&source.url, keys.clone()).await.map_err(|error| MoveError::peer(source, error))?;
            let Some(last) = records.last() else { break };
            let answered = keys.iter().position(|key| *key == last.key).map_or(keys.len(), |index| index + 1);
            keys.drain(..answered);
            let answers = self.member.store.write(records).await?;
            applied += answers.iter().filter(|answer| answer.applied).count() as u64;
        }
        Ok(applied)
    }
}

fn local_version(store: &Store, key: &str) -> Option<u64> {
    match store.get(key, crate::hlc::wall_millis()) {
        Lookup::Missing => None,
        Lookup::Tombstone(version) | Lookup::Expired(version) => Some(version),
        Lookup::Found(entry) => Some(entry.version),
    }
}

fn newer_than_local(store: &Store, entry: &NodeRangeEntry) -> bool {
    local_version(store, &entry.key).is_none_or(|version| entry.version > version)
}

/// Drops the keys this node does not own in the settled `layout`, now and every [`CLEANUP_INTERVAL`].
async fn clean_up_loop(member: Follower, layout: Layout) {
    tokio::time::sleep(SETTLE_DELAY).await;
    let client = NodeClient::new(member.secret.clone(), Duration::from_secs(30));
    loop {
        match clean_up(&member, &client, &layout).await {
            Ok(0) => {}
            Ok(dropped) => tracing::info!(dropped, version = layout.version, "dropped keys this node no longer owns"),
            Err(error) => tracing::warn!(%error, "clean-up of keys this node no longer owns failed; retrying later"),
        }
        tokio::time::sleep(CLEANUP_INTERVAL).await;
    }
}

async fn clean_up(member: &Follower, client: &NodeClient, layout: &Layout) -> Result<usize, MoveError> {
    let whole_ring = [(0, 0)];
    let mut cursor: Option<String> = None;
    let mut dropped = 0;
    loop {
        let page = member.store.scan(&whole_ring, cursor.as_deref(), PAGE);
        let foreign: Vec<(NodeRangeEntry, Vec<NodeInfo>)> = page
            .entries
            .into_iter()
            .filter_map(|entry| {
                let owners = layout.new_owners(&entry.key);
                (!owners.iter().any(|owner| owner.id == member.node_id)).then_some((entry, owners))
            })
            .collect();
        if !foreign.is_empty() {
            let confirmed = confirmed_elsewhere(&member.store, client, &foreign).await?;
            dropped += member.store.forget(&confirmed);
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(dropped),
        }
    }
}

/// The entries every owner holds at the same or a newer version (a tombstone also when an owner
/// has nothing: it never saw the key or already purged the delete). Owners that hold an older
/// version or none are sent this node's record first.
async fn confirmed_elsewhere(
    store: &Store,
    client: &NodeClient,
    foreign: &[(NodeRangeEntry, Vec<NodeInfo>)],
) -> Result<Vec<(String, u64)>, MoveError> {
    let mut asks: BTreeMap<String, (NodeInfo, Vec<String>)> = BTreeMap::new();
    for (entry, owners) in foreign {
        for owner in owners {
            asks.entry(owner.id.clone()).or_insert_with(|| (owner.clone(), Vec::new())).1.push(entry.key.clone());
        }
    }
    // owner id → key → version held
    let mut held: HashMap<String, HashMap<String, u64>> = HashMap::new();
    for (owner, mut keys) in asks.into_values() {
        let versions = held.entry(owner.id.clone()).or_default();
        while !keys.is_empty() {
            let records =
                client.export(&owner.url, keys.clone()).await.map_err(|error| MoveError::peer(&owner, error))?;
            let Some(last) = records.last() else { break };
            let answered = keys.iter().position(|key| *key == last.key).map_or(keys.len(), |index| index + 1);
            keys.drain(..answered);
            for record in records {
                versions.insert(record.key.clone(), record.version);
            }
        }
    }
    let confirmed = |owner: &NodeInfo, entry: &NodeRangeEntry, held: &HashMap<String, HashMap<String, u64>>| match held
        .get(&owner.id)
        .and_then(|versions| versions.get(&entry.key))
    {
        Some(version) => *version >= entry.version,
        None => entry.tombstone,
    };
    // Hand this node's records to the owners that lack them (a late write only this node got).
    let mut lacking: BTreeMap<String, (NodeInfo, Vec<String>)> = BTreeMap::new();
    for (entry, owners) in foreign {
        for owner in owners.iter().filter(|owner| !confirmed(owner, entry, &held)) {
            lacking.entry(owner.id.clone()).or_insert_with(|| (owner.clone(), Vec::new())).1.push(entry.key.clone());
        }
    }
    for (owner, keys) in lacking.into_values() {
        let versions = held.entry(owner.id.clone()).or_default();
        for chunk in crate::wire::batch::chunks(store.export(&keys), MAX_HANDOFF_BYTES) {
            let body = crate::wire::batch::encode(&chunk)?;
            let answer = client.batch(&owner.url, body).await.map_err(|error| MoveError::peer(&owner, error))?;
            for (record, result) in chunk.iter().zip(answer.results) {
                versions.insert(record.key.clone(), result.version);
            }
        }
    }
    Ok(foreign
        .iter()
        .filter(|(entry, owners)| owners.iter().all(|owner| confirmed(owner, entry, &held)))
        .map(|(entry, _)| (entry.key.clone(), entry.version))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Cursor::load(dir.path()), None);
        let cursor = Cursor { version: 4, arcs_done: 32, keys_moved: 1000 };
        cursor.save(dir.path()).unwrap();
        assert_eq!(Cursor::load(dir.path()), Some(cursor));
        std::fs::write(dir.path().join(CURSOR_FILE), b"garbage").unwrap();
        assert_eq!(Cursor::load(dir.path()), None, "an unreadable cursor starts over");
    }
}
