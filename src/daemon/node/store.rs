//! The node's data: an ordered in-memory set of versioned entries ([`Slot`]s,
//! one per key), made durable by the WAL. Writes go through the group-commit writer, which
//! applies them to the map after their sync; reads only touch the map.
//!
//! The map sits behind a std `Mutex`: every critical section is short (one
//! lookup, one insert, or one chunk of a scan) and never awaits, so an async
//! lock would only add overhead.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use bytes::Bytes;

use super::acceptors::Acceptors;
use super::digest::Digest;
use super::gc::{self, Fate, Horizon};
use super::slot::{ContentTypes, Slot};
use crate::hlc;
use crate::paxos::{Acceptance, Acceptor, Message, Promise, Proposal, Reply};
use crate::proto::{NodeKeyEntry, NodeKeyPage, NodeRangeEntry, NodeRangePage, StoreWriteResponse};
use crate::ring::Ring;
use crate::sync::Lock;
use crate::wal::snapshot::SnapshotWriter;
use crate::wal::{
    self, AcceptorEntry, Apply, Committer, CommitterConfig, CompactionTicket, DirLock, Entry, Record, SyncMode, WalDir,
    WalError, WalStats,
};
use crate::wire::read::{Found, Lookup, Replica};

/// Settings for opening a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Directory of this node's WAL and snapshots.
    pub dir: PathBuf,
    /// Group commit or one sync per write.
    pub sync_mode: SyncMode,
    /// Compact when the active WAL segment reaches this many bytes.
    pub wal_max_bytes: u64,
    /// Truncate a corrupt segment at the damage instead of refusing to start.
    pub salvage_wal: bool,
    /// How long WAL segments a snapshot covers are kept for the change feed.
    pub feed_retention: wal::segment::Retention,
}

/// What opening the store recovered.
#[derive(Debug, Clone, Copy)]
pub struct RecoveryReport {
    /// Records loaded from the snapshot.
    pub snapshot_records: usize,
    /// Records replayed from WAL segments.
    pub replayed_records: usize,
    /// Bytes cut off a torn tail (or salvaged away).
    pub truncated_bytes: u64,
    /// Keys in the map afterwards (tombstones included).
    pub entries: usize,
}

/// Counters of the store's own work, for `/metrics`.
#[derive(Debug, Default)]
pub struct StoreCounters {
    /// Writes that became a key's current version.
    pub applied: AtomicU64,
    /// Writes ignored because the node already held a newer or equal version.
    pub ignored: AtomicU64,
    /// Entries whose value was dropped by the sweeper after expiring.
    pub expired: AtomicU64,
    /// Tombstones and expired entries removed after the grace period.
    pub purged: AtomicU64,
    /// Tombstones past the grace the last sweep kept because a peer is not known to hold them.
    pub held_back: AtomicU64,
    /// Deletion time (Unix ms) of the oldest of those; 0 when there is none.
    pub oldest_held_back: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Every key's current entry, ordered by key.
    map: BTreeSet<Slot>,
    /// The content types the entries name.
    types: ContentTypes,
    /// Tombstones in `map`.
    tombstones: usize,
    /// Expired entries the sweeper has already emptied.
    swept: usize,
    /// Per-arc hashes for anti-entropy, once enabled.
    digest: Option<Digest>,
    /// Paxos acceptor states of keys under conditional writes.
    acceptors: Acceptors,
}

impl State {
    fn lookup(&self, key: &str, now: u64) -> Lookup {
        match self.map.get(key.as_bytes()) {
            None => Lookup::Missing,
            Some(slot) if slot.tombstone => Lookup::Tombstone(slot.version),
            Some(slot) if slot.is_expired(now) => Lookup::Expired(slot.version),
            Some(slot) => Lookup::Found(Found {
                version: slot.version,
                expires_at: slot.expires_at(),
                content_type: Arc::clone(self.types.name(slot.content_type)),
                value: Bytes::copy_from_slice(slot.value()),
            }),
        }
    }

    fn replica(&self, key: &str, now: u64) -> Replica {
        let lookup = self.lookup(key, now);
        let stored = match lookup {
            Lookup::Found(Found { version, .. }) | Lookup::Tombstone(version) | Lookup::Expired(version) => {
                Some(version)
            }
            Lookup::Missing => None,
        };
        Replica { pending: self.acceptors.pending(key, stored), lookup }
    }

    fn apply(&mut self, record: Record) -> StoreWriteResponse {
        // One descent of the map in the usual case (the key is new, or this version is newer);
        // an older or equal record swaps the existing entry back in.
        let content_type = self.types.acquire(&record.content_type);
        if let Some(replaced) = self.map.replace(Slot::new(&record, content_type)) {
            if replaced.version >= record.version {
                let version = replaced.version;
                let ours = self.map.replace(replaced).expect("the entry was just inserted");
                self.types.release(ours.content_type);
                return StoreWriteResponse { applied: false, version };
            }
            if let Some(digest) = &mut self.digest {
                digest.toggle(&record.key, replaced.version, replaced.tombstone);
            }
            self.forget(&replaced);
        }
        if let Some(digest) = &mut self.digest {
            digest.toggle(&record.key, record.version, record.tombstone);
        }
        if record.tombstone {
            self.tombstones += 1;
        }
        self.acceptors.stored(&record.key, record.version);
        StoreWriteResponse { applied: true, version: record.version }
    }

    /// Drops `slot` from the counts and its content type's users (it is being replaced or removed).
    fn forget(&mut self, slot: &Slot) {
        if slot.tombstone {
            self.tombstones -= 1;
        } else if slot.swept {
            self.swept -= 1;
        }
        self.types.release(slot.content_type);
    }

    /// The key's current record (value or tombstone), if the map holds one.
    fn record(&self, key: &str) -> Option<Record> {
        self.map.get(key.as_bytes()).map(|slot| self.to_record(slot))
    }

    fn to_record(&self, slot: &Slot) -> Record {
        slot_record(slot, &self.types)
    }
}

/// The state an acceptor logs for a commit of `proposal`. The committed version counts as stored
/// even when a newer record got here first, and the state carries the newest stored versions: a
/// majority that answered a commit keeps telling later rounds that it was chosen, also after a
/// restart. (In memory the commit is applied once its record is in the map.)
fn settled_by(acceptor: &Acceptor<Record>, proposal: &Proposal<Record>) -> Acceptor<Record> {
    let newest = acceptor.held.len().saturating_sub(crate::wire::paxos::LOGGED_HELD);
    let mut settled = Acceptor {
        promised: acceptor.promised,
        accepted: acceptor.accepted.clone(),
        last_commit: acceptor.last_commit,
        held: acceptor.held[newest..].to_vec(),
    };
    settled.commit(proposal);
    settled.stored(proposal.value.version);
    settled
}

/// A map entry as a record.
fn slot_record(slot: &Slot, types: &ContentTypes) -> Record {
    let found = slot.borrowed(types);
    Record {
        key: found.key.to_string(),
        version: found.version,
        expires_at: found.expires_at,
        tombstone: found.tombstone,
        content_type: found.content_type.to_string(),
        value: Bytes::copy_from_slice(found.value),
    }
}

struct Shared {
    state: Mutex<State>,
    dir: WalDir,
    stats: Arc<WalStats>,
    counters: StoreCounters,
    snapshot_thread: Mutex<Option<JoinHandle<()>>>,
    /// How long WAL segments a snapshot covers are kept for the change feed.
    feed_retention: wal::segment::Retention,
    _lock: DirLock,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.locked()
    }
}

/// The node's store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    committer: Arc<Committer<Applier>>,
}

/// Applies committed records to the map and snapshots it when the WAL rotates.
struct Applier {
    shared: Arc<Shared>,
}

impl Apply for Applier {
    type Outcome = StoreWriteResponse;

    /// Records go into the map; an acceptor state is in memory already (it is
    /// logged after the change) and answers `applied`.
    fn apply(&mut self, entries: Vec<Entry>) -> Vec<StoreWriteResponse> {
        let mut state = self.shared.state();
        let outcomes: Vec<_> = entries
            .into_iter()
            .map(|entry| match entry {
                Entry::Record(record) => state.apply(record),
                Entry::Acceptor(_) => StoreWriteResponse { applied: true, version: 0 },
                Entry::Expired { version, .. } => StoreWriteResponse { applied: true, version },
            })
            .collect();
        drop(state);
        for outcome in &outcomes {
            let counter = if outcome.applied { &self.shared.counters.applied } else { &self.shared.counters.ignored };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        outcomes
    }

    /// Writes the snapshot on its own thread, copying the map into it a chunk at a
    /// time (never the whole map at once: no second copy of the data in memory, and
    /// writers wait at most one chunk). Every entry it copies is the one of the
    /// rotation or a newer one, which the later segments hold too, so loading the
    /// snapshot and replaying them gives the same state (see `wal::snapshot`).
    fn rotated(&mut self, generation: u64, ticket: CompactionTicket) {
        let shared = Arc::clone(&self.shared);
        let thread = std::thread::Builder::new().name("wal-snapshot".into()).spawn(move || {
            let retention = shared.feed_retention;
            wal::snapshot::compact(&shared.dir, ticket, generation, &retention, |writer| shared.copy_into(writer))
        });
        match thread {
            Ok(thread) => {
                let previous = self.shared.snapshot_thread.locked().replace(thread);
                if let Some(previous) = previous {
                    let _ = previous.join();
                }
            }
            Err(error) => {
                // The ticket went down with the closure, so a later rotation retries.
                tracing::error!(%error, "cannot start the snapshot thread; older WAL segments are kept");
            }
        }
    }
}

impl Shared {
    /// Pushes every entry of the map into `writer`, in key order, a chunk at a time.
    fn copy_into(&self, writer: &mut SnapshotWriter) -> Result<(), WalError> {
        const CHUNK: usize = 4096;
        let mut cursor: Option<Box<[u8]>> = None;
        loop {
            {
                let state = self.state();
                let start = cursor.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
                let mut copied = 0;
                for slot in state.map.range::<[u8], _>((start, Bound::Unbounded)).take(CHUNK) {
                    writer.push(slot.borrowed(&state.types))?;
                    copied += 1;
                    cursor = Some(slot.key().as_bytes().into());
                }
                if copied < CHUNK {
                    break;
                }
            }
            writer.flush()?;
        }
        let unsettled = {
            let state = self.state();
            state.acceptors.to_keep(hlc::wall_millis(), |key| state.record(key))
        };
        for (key, acceptor) in unsettled {
            writer.push_acceptor(&key, &crate::wire::paxos::encode_state(&acceptor, true)?)?;
        }
        Ok(())
    }
}

impl Store {
    /// Opens (recovers) the store in `options.dir` and starts its WAL writer.
    /// Blocking: call it from a blocking context.
    pub fn open(options: &StoreOptions) -> Result<(Self, RecoveryReport), WalError> {
        let dir = WalDir::new(&options.dir);
        dir.create()?;
        let lock = dir.lock()?;
        let mut state = State::default();
        let recovered = wal::recover(&dir, options.salvage_wal, &options.feed_retention, |entry| match entry {
            Entry::Record(record) => {
                state.apply(record);
            }
            Entry::Acceptor(entry) => state.acceptors.replay(entry),
            // Expiry follows from the record's own expires_at; the entry is for the change feed.
            Entry::Expired { .. } => {}
        })?;
        let report = RecoveryReport {
            snapshot_records: recovered.snapshot_records,
            replayed_records: recovered.replayed_records,
            truncated_bytes: recovered.truncated_bytes,
            entries: state.map.len(),
        };
        let stats = Arc::new(WalStats::default());
        stats.recovered(&recovered.segment, recovered.retired_bytes);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            dir: dir.clone(),
            stats: Arc::clone(&stats),
            counters: StoreCounters::default(),
            snapshot_thread: Mutex::new(None),
            feed_retention: options.feed_retention,
            _lock: lock,
        });
        let config = CommitterConfig { mode: options.sync_mode, max_segment_bytes: options.wal_max_bytes };
        let applier = Applier { shared: Arc::clone(&shared) };
        let committer = Arc::new(Committer::start(dir, recovered.segment, config, stats, applier));
        Ok((Self { shared, committer }, report))
    }

    /// Applies versioned writes (puts and deletes) durably: a write the node
    /// already holds a newer or equal version of is answered without touching
    /// the WAL; the rest share one append (one sync). Answers are in input order.
    pub async fn write(&self, records: Vec<Record>) -> Result<Vec<StoreWriteResponse>, WalError> {
        let mut answers = vec![None; records.len()];
        let mut pending = Vec::new();
        let mut pending_at = Vec::new();
        {
            let state = self.shared.state();
            for (index, record) in records.into_iter().enumerate() {
                match state.map.get(record.key.as_bytes()) {
                    Some(existing) if existing.version >= record.version => {
                        answers[index] = Some(StoreWriteResponse { applied: false, version: existing.version });
                    }
                    _ => {
                        pending_at.push(index);
                        pending.push(Entry::Record(record));
                    }
                }
            }
        }
        let skipped = (answers.len() - pending.len()) as u64;
        self.shared.counters.ignored.fetch_add(skipped, Ordering::Relaxed);
        if !pending.is_empty() {
            let committed = self.committer.append(pending).await?;
            for (index, outcome) in pending_at.into_iter().zip(committed.outcomes) {
                answers[index] = Some(outcome);
            }
        }
        Ok(answers.into_iter().map(|answer| answer.expect("every write answered")).collect())
    }

    /// Handles messages of conditional writes' Paxos rounds ([`crate::paxos`]), one reply
    /// each, in order: every acceptor decides under the store's lock, against its key's
    /// current record, and every change of their states is durable in the WAL (one append, one
    /// sync for all of them) before the answer. A commit writes the record and the settled
    /// state in that append, and settles the state in memory only once the record is in the map:
    /// until then the acceptor acts as if the commit had not arrived yet (a delayed message, which
    /// the protocol allows). Settling it earlier would let a prepare in between report the
    /// commit without its record, and a round built on that would miss a chosen write (the
    /// lost-update chaos test caught exactly that).
    /// A prepare's promise says which of the versions it asks about the owner stored.
    pub async fn paxos(
        &self,
        messages: Vec<(String, Message<Record>, Vec<u64>)>,
    ) -> Result<Vec<Reply<Record>>, WalError> {
        let now = hlc::wall_millis();
        let log = |key: &str, acceptor: &crate::paxos::Acceptor<Record>, held: bool| -> Result<Entry, WalError> {
            let state = crate::wire::paxos::encode_state(acceptor, held)?;
            Ok(Entry::Acceptor(AcceptorEntry { key: key.to_string(), state }))
        };
        let mut replies = Vec::with_capacity(messages.len());
        let mut entries = Vec::new();
        let mut commits = Vec::new();
        {
            let mut guard = self.shared.state();
            let state = &mut *guard;
            if state.acceptors.wants_pruning() {
                let State { map, types, acceptors, .. } = state;
                acceptors.prune(now, |key| map.get(key.as_bytes()).map(|slot| slot_record(slot, types)));
            }
            for (key, message, asked) in messages {
                let committed = state.record(&key);
                let acceptor = state.acceptors.entry(&key, now, committed.as_ref().map(|record| record.version));
                let reply = match message {
                    Message::Prepare(ballot) => {
                        let promise = acceptor.prepare_asking(ballot, committed.as_ref(), Some(&asked));
                        if let Promise::Promised { .. } = promise {
                            entries.push(log(&key, acceptor, false)?);
                        }
                        Reply::Promise(promise)
                    }
                    Message::Accept(proposal) => {
                        let before = (acceptor.promised, acceptor.accepted.as_ref().map(|accepted| accepted.ballot));
                        let acceptance = acceptor.accept(proposal, committed.as_ref());
                        let after = (acceptor.promised, acceptor.accepted.as_ref().map(|accepted| accepted.ballot));
                        if acceptance == Acceptance::Accepted && after != before {
                            entries.push(log(&key, acceptor, false)?);
                        }
                        Reply::Acceptance(acceptance)
                    }
                    Message::AcceptAfter { proposal, after } => {
                        // A fast round's proposal: when its base is the proposal accepted here, it is
                        // committed in the same append (and settled in memory once its record is in
                        // the map, as a commit is); the proposal is judged against that record.
                        let base = acceptor.accepted_base(after, proposal.ballot).cloned();
                        let view = match (&base, committed) {
                            (Some(base), Some(record)) if record.version >= base.value.version => Some(record),
                            (Some(base), _) => Some(base.value.clone()),
                            (None, committed) => committed,
                        };
                        let acceptance = acceptor.accept_fast(proposal, view.as_ref());
                        match base {
                            Some(base) => {
                                let settled = settled_by(acceptor, &base);
                                entries.push(Entry::Record(base.value.clone()));
                                entries.push(log(&key, &settled, true)?);
                                commits.push((key, base));
                            }
                            None if acceptance == Acceptance::Accepted => entries.push(log(&key, acceptor, false)?),
                            None => {}
                        }
                        Reply::Acceptance(acceptance)
                    }
                    Message::Commit(proposal) => {
                        let settled = settled_by(acceptor, &proposal);
                        entries.push(Entry::Record(proposal.value.clone()));
                        entries.push(log(&key, &settled, true)?);
                        commits.push((key, proposal));
                        Reply::Committed
                    }
                };
                replies.push(reply);
            }
        }
        if !entries.is_empty() {
            self.committer.append(entries).await?;
        }
        if !commits.is_empty() {
            let mut state = self.shared.state();
            for (key, proposal) in commits {
                let stored = state.record(&key).map(|record| record.version);
                let acceptor = state.acceptors.entry(&key, now, stored);
                acceptor.commit(&proposal);
                acceptor.stored(proposal.value.version);
            }
        }
        Ok(replies)
    }

    /// The change feed after position `after` for keys under `prefix`, at most `limit` changes
    /// ([`super::feed::read`]); when there is none yet, waits up to `wait` for one.
    pub async fn feed(
        &self,
        mut after: u64,
        prefix: &str,
        limit: usize,
        wait: std::time::Duration,
    ) -> Result<super::feed::FeedPage, WalError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before the head is read, so a sync in between still wakes it.
            let moved = self.shared.stats.head_moved();
            tokio::pin!(moved);
            moved.as_mut().enable();
            let (dir, head, prefix_owned) = (self.shared.dir.clone(), self.shared.stats.head(), prefix.to_string());
            let page = tokio::task::spawn_blocking(move || super::feed::read(&dir, head, after, &prefix_owned, limit))
                .await
                .map_err(|error| WalError::Failed(format!("the feed reader stopped: {error}")))??;
            if !page.entries.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(page);
            }
            if tokio::time::timeout_at(deadline, moved).await.is_err() {
                return Ok(page);
            }
            // Read on from where this page ended (past other keys' changes too).
            after = page.next;
        }
    }

    /// How many keys have a Paxos acceptor state in memory.
    pub fn acceptors(&self) -> usize {
        self.shared.state().acceptors.len()
    }

    /// The current state of `key` at time `now` (Unix ms).
    pub fn get(&self, key: &str, now: u64) -> Lookup {
        self.shared.state().lookup(key, now)
    }

    /// [`Store::get`] with the version of a conditional write accepted and not yet committed here,
    /// when it is newer than the record: what a majority read needs ([`Replica`]).
    pub fn get_replica(&self, key: &str, now: u64) -> Replica {
        self.shared.state().replica(key, now)
    }

    /// [`Store::get_replica`] of each of `keys`, under one lock. Once the values copied
    /// reach `max_bytes`, the remaining keys are `None` (the first key is always read).
    pub fn get_many(&self, keys: &[&str], now: u64, max_bytes: usize) -> Vec<Option<Replica>> {
        let state = self.shared.state();
        let mut bytes = 0;
        keys.iter()
            .map(|key| {
                if bytes > 0 && bytes >= max_bytes {
                    return None;
                }
                let replica = state.replica(key, now);
                if let Lookup::Found(found) = &replica.lookup {
                    bytes += found.value.len().max(1);
                }
                Some(replica)
            })
            .collect()
    }

    /// Up to `limit` live keys starting with `prefix`, in ascending order, after `cursor` (exclusive).
    pub fn list(&self, prefix: &str, cursor: Option<&str>, limit: usize, now: u64) -> NodeKeyPage {
        let state = self.shared.state();
        let start = match cursor {
            Some(cursor) if cursor >= prefix => Bound::Excluded(cursor.as_bytes()),
            _ => Bound::Included(prefix.as_bytes()),
        };
        let mut keys = Vec::new();
        let mut more = false;
        for slot in state.map.range::<[u8], _>((start, Bound::Unbounded)) {
            let key = slot.key();
            if !key.starts_with(prefix) {
                break;
            }
            if !slot.is_live(now) {
                continue;
            }
            if keys.len() == limit {
                more = true;
                break;
            }
            keys.push(NodeKeyEntry {
                key: key.to_string(),
                size: slot.value().len() as u64,
                version: slot.version,
                expires_at: slot.expires_at(),
            });
        }
        let next_cursor = if more { keys.last().map(|entry| entry.key.clone()) } else { None };
        NodeKeyPage { keys, next_cursor }
    }

    /// One pass of the background sweeper at `now` (Unix ms): drops the values of
    /// expired entries, removes expired entries older than `grace` ms, and removes
    /// tombstones older than `grace` ms that every peer is known to hold ([`gc`], `horizon`).
    /// Until then they keep their version, so an older replicated write cannot resurrect
    /// the key. Works in chunks so readers never wait long. Returns the keys whose values it
    /// found newly expired, with their versions ([`Store::log_expired`] puts them in the feed).
    pub fn sweep(&self, now: u64, grace: u64, horizon: Horizon) -> Vec<(String, u64)> {
        let mut newly_expired = Vec::new();
        const CHUNK: usize = 1024;
        let mut cursor: Option<String> = None;
        let mut held_back = 0u64;
        let mut oldest_held_back: Option<u64> = None;
        loop {
            let mut state = self.shared.state();
            let start = cursor.as_deref().map_or(Bound::Unbounded, |key| Bound::Excluded(key.as_bytes()));
            let mut expire = Vec::new();
            let mut purge = Vec::new();
            let mut scanned = 0;
            let mut last = None;
            for slot in state.map.range::<[u8], _>((start, Bound::Unbounded)).take(CHUNK) {
                scanned += 1;
                last = Some(slot.key().to_string());
                if slot.tombstone {
                    match gc::tombstone_fate(slot.version, slot.arrived_at(), now, grace, horizon) {
                        Fate::Keep => {}
                        Fate::HoldBack => {
                            held_back += 1;
                            let deleted_at = hlc::millis_of(slot.version);
                            oldest_held_back =
                                Some(oldest_held_back.map_or(deleted_at, |oldest| oldest.min(deleted_at)));
                        }
                        Fate::Purge => purge.push(slot.key().to_string()),
                    }
                    continue;
                }
                match slot.expires_at().filter(|&expires_at| expires_at <= now) {
                    Some(since) if since.saturating_add(grace) <= now => purge.push(slot.key().to_string()),
                    Some(_) if !slot.swept => expire.push(slot.key().to_string()),
                    _ => {}
                }
            }
            for key in &expire {
                if let Some(slot) = state.map.take(key.as_bytes()) {
                    newly_expired.push((key.clone(), slot.version));
                    state.map.insert(slot.swept());
                }
            }
            state.swept += expire.len();
            for key in &purge {
                if let Some(slot) = state.map.take(key.as_bytes()) {
                    if let Some(digest) = &mut state.digest {
                        digest.toggle(key, slot.version, slot.tombstone);
                    }
                    state.forget(&slot);
                }
            }
            drop(state);
            self.shared.counters.expired.fetch_add(expire.len() as u64, Ordering::Relaxed);
            self.shared.counters.purged.fetch_add(purge.len() as u64, Ordering::Relaxed);
            if scanned < CHUNK {
                break;
            }
            cursor = last;
        }
        let counters = &self.shared.counters;
        counters.held_back.store(held_back, Ordering::Relaxed);
        counters.oldest_held_back.store(oldest_held_back.unwrap_or(0), Ordering::Relaxed);
        newly_expired
    }

    /// Logs that these values expired here (key, version), so the change feed reports them.
    /// (After a restart the sweeper finds the expired values again and logs them once more;
    /// a watch merges repeats.)
    pub async fn log_expired(&self, expired: Vec<(String, u64)>) -> Result<(), WalError> {
        for chunk in expired.chunks(1024) {
            let entries = chunk.iter().map(|(key, version)| Entry::Expired { key: key.clone(), version: *version });
            self.committer.append(entries.collect()).await?;
        }
        Ok(())
    }

    /// Starts keeping the per-arc digest of `ring` (built from the current map
    /// once, then maintained by every write and purge).
    pub fn enable_digest(&self, ring: Ring) {
        let mut digest = Digest::new(ring);
        let mut state = self.shared.state();
        for slot in &state.map {
            digest.toggle(slot.key(), slot.version, slot.tombstone);
        }
        state.digest = Some(digest);
    }

    /// Whether the per-arc digest is kept.
    pub fn digest_enabled(&self) -> bool {
        self.shared.state().digest.is_some()
    }

    /// The per-arc hashes, when the digest is enabled.
    pub fn digest(&self) -> Option<Vec<u64>> {
        self.shared.state().digest.as_ref().map(|digest| digest.buckets().to_vec())
    }

    /// Up to `limit` entries (tombstones and expired entries included) whose
    /// digest bucket is in `buckets`, in ascending key order after `cursor`.
    /// Empty when the digest is off.
    pub fn range(&self, buckets: &[usize], cursor: Option<&str>, limit: usize) -> NodeRangePage {
        self.select(cursor, limit, |state, key| {
            let digest = state.digest.as_ref()?;
            Some(buckets.binary_search(&digest.bucket_of(key)).is_ok())
        })
    }

    /// Up to `limit` entries (tombstones and expired entries included) whose ring position
    /// lies in one of `intervals`, in ascending key order after `cursor`.
    pub fn scan(&self, intervals: &[(u64, u64)], cursor: Option<&str>, limit: usize) -> NodeRangePage {
        self.select(cursor, limit, |_, key| {
            let position = crate::ring::point(key.as_bytes());
            Some(intervals.iter().any(|(start, end)| crate::membership::in_interval(*start, *end, position)))
        })
    }

    /// Up to `limit` entries after `cursor` that `wanted` picks, in ascending key order. Scans
    /// in chunks of 4096 entries, taking the lock once per chunk, so writers never wait long.
    /// `wanted` returning `None` ends the page there, with no cursor.
    fn select(
        &self,
        cursor: Option<&str>,
        limit: usize,
        wanted: impl Fn(&State, &str) -> Option<bool>,
    ) -> NodeRangePage {
        const CHUNK: usize = 4096;
        let mut entries = Vec::new();
        let mut position = cursor.map(str::to_string);
        loop {
            let state = self.shared.state();
            let start = position.as_deref().map_or(Bound::Unbounded, |key| Bound::Excluded(key.as_bytes()));
            let mut scanned = 0;
            for slot in state.map.range::<[u8], _>((start, Bound::Unbounded)).take(CHUNK) {
                let key = slot.key();
                scanned += 1;
                position = Some(key.to_string());
                match wanted(&state, key) {
                    None => return NodeRangePage { entries, next_cursor: None },
                    Some(false) => continue,
                    Some(true) => {}
                }
                entries.push(NodeRangeEntry {
                    key: key.to_string(),
                    version: slot.version,
                    tombstone: slot.tombstone,
                    expires_at: slot.expires_at(),
                });
                if entries.len() == limit {
                    return NodeRangePage { entries, next_cursor: Some(key.to_string()) };
                }
            }
            if scanned < CHUNK {
                return NodeRangePage { entries, next_cursor: None };
            }
        }
    }

    /// Drops the entries of `keys` still at the given versions, without a tombstone: used for keys
    /// this node no longer owns after their owners confirmed holding them. Nothing is logged; the
    /// drop becomes durable when the snapshot it asks for (taken after the drop) replaces the
    /// older segments, so a restart does not bring the keys back.
    pub fn forget(&self, keys: &[(String, u64)]) -> usize {
        let mut state = self.shared.state();
        let mut dropped = 0;
        for (key, version) in keys {
            if state.map.get(key.as_bytes()).is_none_or(|slot| slot.version != *version) {
                continue;
            }
            if let Some(slot) = state.map.take(key.as_bytes()) {
                if let Some(digest) = &mut state.digest {
                    digest.toggle(key, slot.version, slot.tombstone);
                }
                state.forget(&slot);
                dropped += 1;
            }
        }
        drop(state);
        if dropped > 0 {
            self.committer.request_snapshot();
        }
        dropped
    }

    /// The current records (values or tombstones) of those `keys` the store holds.
    pub fn export(&self, keys: &[String]) -> Vec<Record> {
        let state = self.shared.state();
        keys.iter().filter_map(|key| state.map.get(key.as_bytes()).map(|slot| state.to_record(slot))).collect()
    }

    /// `(live keys, tombstones)`: live counts every entry that is neither a
    /// tombstone nor already swept after expiring.
    pub fn counts(&self) -> (u64, u64) {
        let state = self.shared.state();
        ((state.map.len() - state.tombstones - state.swept) as u64, state.tombstones as u64)
    }

    /// The WAL's counters.
    pub fn wal_stats(&self) -> &WalStats {
        &self.shared.stats
    }

    /// The store's own counters.
    pub fn counters(&self) -> &StoreCounters {
        &self.shared.counters
    }

    /// Bytes of WAL segments and snapshots on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.shared.dir.disk_bytes()
    }

    /// Finishes queued writes, syncs the WAL, stops the writer and waits for a running snapshot.
    pub async fn close(&self) {
        self.committer.close().await;
        let thread = self.shared.snapshot_thread.locked().take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &std::path::Path, wal_max_bytes: u64) -> Store {
        let options = StoreOptions {
            dir: dir.to_path_buf(),
            sync_mode: SyncMode::Group,
            wal_max_bytes,
            salvage_wal: false,
            feed_retention: wal::segment::Retention::NONE,
        };
        Store::open(&options).unwrap().0
    }

    #[test]
    fn an_older_record_leaves_the_entry_and_the_content_type_counts_alone() {
        let mut state = State::default();
        assert!(state.apply(Record::put("k", 5, &b"five"[..], "text/plain")).applied);
        let older = state.apply(Record::put("k", 3, &b"three"[..], "application/x-older"));
        assert_eq!(older, StoreWriteResponse { applied: false, version: 5 });
        assert_eq!(state.apply(Record::delete("k", 5)), StoreWriteResponse { applied: false, version: 5 });
        assert_eq!(state.types.count(), 1, "the refused records' content types were released");
        let found = Found {
            version: 5,
            expires_at: None,
            content_type: "text/plain".into(),
            value: Bytes::from_static(b"five"),
        };
        assert_eq!(state.lookup("k", 0), Lookup::Found(found));
        assert_eq!((state.map.len(), state.tombstones), (1, 0));
    }

    #[tokio::test]
    async fn newest_version_wins_in_any_order_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), u64::MAX);
        let answers = store
            .write(vec![
                Record::put("k", 5, &b"five"[..], "text/plain"),
                Record::put("k", 3, &b"three"[..], "text/plain"),
                Record::delete("gone", 9),
                Record::put("gone", 8, &b"old"[..], "text/plain"),
            ])
            .await
            .unwrap();
        let applied: Vec<_> = answers.iter().map(|answer| (answer.applied, answer.version)).collect();
        assert_eq!(applied, vec![(true, 5), (false, 5), (true, 9), (false, 9)]);
        // A repeat of an applied write is idempotent and skips the WAL.
        let syncs = store.wal_stats().syncs();
        let again = store.write(vec![Record::put("k", 5, &b"five"[..], "text/plain")]).await.unwrap();
        assert_eq!(again[0], StoreWriteResponse { applied: false, version: 5 });
        assert_eq!(store.wal_stats().syncs(), syncs);
        store.close().await;
        drop(store);

        let store = open(dir.path(), u64::MAX);
        match store.get("k", 0) {
            Lookup::Found(found) => assert_eq!((found.version, &found.value[..]), (5, &b"five"[..])),
            other => panic!("{other:?}"),
        }
        assert_eq!(store.get("gone", 0), Lookup::Tombstone(9));
        assert_eq!(store.counts(), (1, 1));
    }

    #[tokio::test]
    async fn listing_pages_through_live_keys_with_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), u64::MAX);
        let mut records: Vec<_> = (0..5).map(|n| Record::put(format!("u1/k{n}"), 1, &b"v"[..], "t")).collect();
        records.push(Record::put("u2/k0", 1, &b"v"[..], "t"));
        records.push(Record::delete("u1/k2", 2));
        records.push(Record::put("u1/old", 1, &b"v"[..], "t").with_expiry(Some(10)));
        store.write(records).await.unwrap();
        let first = store.list("u1/", None, 2, 100);
        assert_eq!(first.keys.iter().map(|entry| entry.key.as_str()).collect::<Vec<_>>(), ["u1/k0", "u1/k1"]);
        let second = store.list("u1/", first.next_cursor.as_deref(), 2, 100);
        assert_eq!(second.keys.iter().map(|entry| entry.key.as_str()).collect::<Vec<_>>(), ["u1/k3", "u1/k4"]);
        assert_eq!(second.next_cursor, None);
        store.close().await;
    }

    #[tokio::test]
    async fn sweeper_expires_then_purges_after_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), u64::MAX);
        let deleted_at = hlc::from_millis(1_000);
        store
            .write(vec![
                Record::put("ttl", 1, &b"v"[..], "t").with_expiry(Some(500)),
                Record::delete("del", deleted_at),
                Record::put("keep", 1, &b"v"[..], "t"),
            ])
            .await
            .unwrap();
        store.sweep(600, 1_000, Horizon::Unneeded);
        assert_eq!(store.get("ttl", 600), Lookup::Expired(1));
        assert_eq!(store.counts(), (1, 1));
        // An older write cannot resurrect an expired key during the grace period.
        let stale = store.write(vec![Record::put("ttl", 0, &b"stale"[..], "t")]).await.unwrap();
        assert!(!stale[0].applied);
        store.sweep(2_000, 1_000, Horizon::Unneeded);
        assert_eq!(store.get("ttl", 2_000), Lookup::Missing);
        assert_eq!(store.get("del", 2_000), Lookup::Missing);
        assert_eq!(store.counts(), (1, 0));
        assert_eq!(store.counters().purged.load(Ordering::Relaxed), 2);
        store.close().await;
    }

    #[tokio::test]
    async fn a_tombstone_past_the_grace_waits_until_every_peer_synced_after_it_arrived() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), u64::MAX);
        let deleted_at = hlc::from_millis(1_000);
        store
            .write(vec![Record::delete("del", deleted_at), Record::delete("young", hlc::from_millis(5_000))])
            .await
            .unwrap();
        let arrived = gc::local_millis();
        // Past the grace, but no peer is known to hold it: kept, and reported as held back.
        store.sweep(3_000, 1_000, Horizon::Before(0));
        assert_eq!(store.get("del", 3_000), Lookup::Tombstone(deleted_at));
        let counters = store.counters();
        assert_eq!(counters.held_back.load(Ordering::Relaxed), 1);
        assert_eq!(counters.oldest_held_back.load(Ordering::Relaxed), 1_000);
        // Exchanges that started before it arrived prove nothing.
        let before = store.shared.state().map.get(&b"del"[..]).unwrap().arrived_at();
        assert!(before <= arrived);
        store.sweep(3_000, 1_000, Horizon::Before(before));
        assert_eq!(store.get("del", 3_000), Lookup::Tombstone(deleted_at));
        // Every peer completed an exchange started after its arrival: purged; the young one stays.
        store.sweep(3_000, 1_000, Horizon::Before(before + 1));
        assert_eq!(store.get("del", 3_000), Lookup::Missing);
        assert_eq!(store.get("young", 3_000), Lookup::Tombstone(hlc::from_millis(5_000)));
        assert_eq!(
            (counters.held_back.load(Ordering::Relaxed), counters.oldest_held_back.load(Ordering::Relaxed)),
            (0, 0)
        );
        assert_eq!(counters.purged.load(Ordering::Relaxed), 1);
        store.close().await;
        drop(store);
        // After a restart every tombstone counts as arrived at recovery.
        let store = open(dir.path(), u64::MAX);
        let recovered = store.shared.state().map.get(&b"young"[..]).unwrap().arrived_at();
        assert!(recovered >= arrived);
        store.sweep(9_000, 1_000, Horizon::Before(recovered));
        assert_eq!(store.get("young", 9_000), Lookup::Tombstone(hlc::from_millis(5_000)));
        store.close().await;
    }

    #[tokio::test]
    async fn compaction_keeps_every_key_and_bounds_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 16 * 1024);
        for round in 1..=40u64 {
            let records = (0..20).map(|n| Record::put(format!("k{n}"), round, vec![round as u8; 200], "t")).collect();
            store.write(records).await.unwrap();
        }
        // Compactions run in the background, one at a time; once the last one ends
        // (and any segment that filled up meanwhile is compacted too) the WAL is small.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while store.wal_stats().compacting() || store.wal_stats().wal_bytes() >= 16 * 1024 {
            assert!(std::time::Instant::now() < deadline, "WAL stays at {} bytes", store.wal_stats().wal_bytes());
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(store.wal_stats().snapshots() >= 1);
        store.close().await;
        drop(store);
        let store = open(dir.path(), 16 * 1024);
        for n in 0..20 {
            match store.get(&format!("k{n}"), 0) {
                Lookup::Found(found) => assert_eq!((found.version, found.value.len()), (40, 200)),
                other => panic!("k{n}: {other:?}"),
            }
        }
        store.close().await;
    }

    /// A promise and an accepted proposal survive a restart (from the WAL, and from a snapshot once
    /// compaction dropped the segments that logged them); a commit stores the record and settles them.
    #[tokio::test]
    async fn acceptor_states_are_durable_and_settled_by_their_commit() {
        use crate::paxos::Ballot;
        let dir = tempfile::tempdir().unwrap();
        let ballot = |time| Ballot { time, proposer: 7 };
        let store = open(dir.path(), 1 << 20);
        let promised =
            store.paxos(vec![("7/k".to_string(), Message::Prepare(ballot(10)), vec![10])]).await.unwrap().remove(0);
        assert!(matches!(promised, Reply::Promise(Promise::Promised { accepted: None, committed: None, .. })));
        let proposal = Proposal { ballot: ballot(10), value: Record::put("7/k", 10, &b"v"[..], "text/plain") };
        let accepted = store
            .paxos(vec![("7/k".to_string(), Message::Accept(proposal.clone()), vec![10])])
            .await
            .unwrap()
            .remove(0);
        assert_eq!(accepted, Reply::Acceptance(Acceptance::Accepted));
        store.close().await;
        drop(store);

        let store = open(dir.path(), 1 << 20);
        // An older ballot is refused after the restart: the promise was durable.
        let refused =
            store.paxos(vec![("7/k".to_string(), Message::Prepare(ballot(9)), vec![10])]).await.unwrap().remove(0);
        assert_eq!(refused, Reply::Promise(Promise::Refused { promised: ballot(10) }));
        match store.paxos(vec![("7/k".to_string(), Message::Prepare(ballot(11)), vec![10])]).await.unwrap().remove(0) {
            Reply::Promise(Promise::Promised { accepted, .. }) => assert_eq!(accepted, Some(proposal.clone())),
            other => panic!("{other:?}"),
        }
        // Many writes to other keys: the segments holding the states are compacted away.
        for round in 1..=30u64 {
            let records = (0..20).map(|n| Record::put(format!("x{n}"), round, vec![1u8; 200], "t")).collect();
            store.write(records).await.unwrap();
        }
        store.committer.request_snapshot();
        store.write(vec![Record::put("x", 99, &b"y"[..], "t")]).await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while store.wal_stats().snapshots() == 0 || store.wal_stats().compacting() {
            assert!(std::time::Instant::now() < deadline, "no snapshot");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        store.close().await;
        drop(store);

        let store = open(dir.path(), 1 << 20);
        match store.paxos(vec![("7/k".to_string(), Message::Prepare(ballot(12)), vec![10])]).await.unwrap().remove(0) {
            Reply::Promise(Promise::Promised { accepted, .. }) => assert_eq!(accepted, Some(proposal.clone())),
            other => panic!("the snapshot lost the accepted proposal: {other:?}"),
        }
        let finished = Proposal { ballot: ballot(12), value: proposal.value.clone() };
        assert_eq!(
            store.paxos(vec![("7/k".to_string(), Message::Commit(finished), vec![10])]).await.unwrap().remove(0),
            Reply::Committed
        );
        assert!(matches!(store.get("7/k", 0), Lookup::Found(found) if found.version == 10));
        match store.paxos(vec![("7/k".to_string(), Message::Prepare(ballot(13)), vec![10])]).await.unwrap().remove(0) {
            Reply::Promise(Promise::Promised { accepted, committed, last_commit, held }) => {
                assert_eq!((accepted, last_commit), (None, Some(ballot(12))), "the commit settled the proposal");
                assert_eq!(committed.map(|record| record.version), Some(10));
                assert_eq!(held, vec![10]);
            }
            other => panic!("{other:?}"),
        }
        store.close().await;
        drop(store);

        // The stored versions a commit logged survive a restart.
        let store = open(dir.path(), 1 << 20);
        match store.paxos(vec![("7/k".to_string(), Message::Prepare(ballot(14)), vec![10])]).await.unwrap().remove(0) {
            Reply::Promise(Promise::Promised { held, .. }) => assert_eq!(held, vec![10]),
            other => panic!("{other:?}"),
        }
        store.close().await;
    }

    /// A read reports an accepted proposal newer than the record as pending; a fast round's
    /// proposal commits its base by reference (the record is stored in the same append) and is
    /// accepted on top of it, and both survive a restart.
    #[tokio::test]
    async fn a_fast_round_commits_its_base_by_reference_and_reads_report_pending_writes() {
        use crate::paxos::Ballot;
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1 << 20);
        let paxos = |message| {
            let store = &store;
            async move { store.paxos(vec![("7/k".to_string(), message, Vec::new())]).await.unwrap().remove(0) }
        };
        let base = Proposal { ballot: Ballot { time: 10, proposer: 7 }, value: Record::put("7/k", 10, &b"a"[..], "t") };
        assert!(matches!(paxos(Message::Prepare(base.ballot)).await, Reply::Promise(Promise::Promised { .. })));
        assert_eq!(paxos(Message::Accept(base.clone())).await, Reply::Acceptance(Acceptance::Accepted));
        assert_eq!(store.get_replica("7/k", 0), Replica { lookup: Lookup::Missing, pending: Some(10) });

        let fast = Proposal { ballot: Ballot::covering(10), value: Record::put("7/k", 15, &b"b"[..], "t") };
        let after = base.ballot;
        assert_eq!(
            paxos(Message::AcceptAfter { proposal: fast.clone(), after }).await,
            Reply::Acceptance(Acceptance::Accepted)
        );
        let replica = store.get_replica("7/k", 0);
        assert!(matches!(&replica.lookup, Lookup::Found(found) if found.version == 10), "the base is stored");
        assert_eq!(replica.pending, Some(15));
        // A second successor of the same base is refused.
        let other = Proposal { value: Record::put("7/k", 16, &b"c"[..], "t"), ..fast.clone() };
        assert!(matches!(
            paxos(Message::AcceptAfter { proposal: other, after }).await,
            Reply::Acceptance(Acceptance::Refused { .. })
        ));
        store.close().await;
        drop(store);

        let store = open(dir.path(), 1 << 20);
        let replica = store.get_replica("7/k", 0);
        assert!(matches!(&replica.lookup, Lookup::Found(found) if found.version == 10), "the base survives");
        assert_eq!(replica.pending, Some(15), "so does the fast proposal");
        let committed = store.paxos(vec![("7/k".to_string(), Message::Commit(fast), Vec::new())]).await.unwrap();
        assert_eq!(committed, vec![Reply::Committed]);
        let replica = store.get_replica("7/k", 0);
        assert!(matches!(&replica.lookup, Lookup::Found(found) if found.version == 15));
        assert_eq!(replica.pending, None);
        store.close().await;
    }

    #[tokio::test]
    async fn forgotten_keys_stay_gone_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        // A large segment limit: only the snapshot `forget` asks for compacts anything.
        let store = open(dir.path(), u64::MAX);
        let records = (0..50u64).map(|n| Record::put(format!("k{n}"), 7, vec![n as u8; 100], "t")).collect();
        store.write(records).await.unwrap();
        // Only the entries at the given version go: k1 at a version it does not have stays.
        let dropped = store.forget(&[("k0".into(), 7), ("k1".into(), 6), ("k2".into(), 7), ("missing".into(), 7)]);
        assert_eq!(dropped, 2);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while store.wal_stats().snapshots() == 0 || store.wal_stats().compacting() {
            assert!(std::time::Instant::now() < deadline, "forget asked for a snapshot but none was written");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        store.close().await;
        drop(store);

        let store = open(dir.path(), u64::MAX);
        for n in 0..50u64 {
            let found = matches!(store.get(&format!("k{n}"), 0), Lookup::Found(_));
            assert_eq!(found, n != 0 && n != 2, "k{n} after the restart");
        }
        store.close().await;
    }

    #[tokio::test]
    async fn snapshots_copied_in_chunks_while_writes_go_on_recover_every_latest_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 256 * 1024);
        // More keys than one chunk of the snapshot copy, overwritten while snapshots run.
        const KEYS: u64 = 6000;
        for round in 1..=3u64 {
            for start in (0..KEYS).step_by(500) {
                let records = (start..start + 500)
                    .map(|n| {
                        let content_type = if n % 2 == 0 { "text/plain" } else { "application/json" };
                        Record::put(format!("k{n:05}"), round, vec![round as u8; 64], content_type)
                    })
                    .collect();
                store.write(records).await.unwrap();
            }
            store.write(vec![Record::delete(format!("k{round:05}"), 10 + round)]).await.unwrap();
        }
        assert!(store.wal_stats().snapshots() >= 1 || store.wal_stats().compacting());
        store.close().await;
        drop(store);

        let store = open(dir.path(), 256 * 1024);
        for n in 0..KEYS {
            let key = format!("k{n:05}");
            match store.get(&key, 0) {
                Lookup::Tombstone(version) => assert!((1..=3).contains(&n) && version == 10 + n, "{key}"),
                Lookup::Found(found) => {
                    let content_type = if n % 2 == 0 { "text/plain" } else { "application/json" };
                    assert_eq!(
                        (found.version, &*found.content_type, &found.value[..]),
                        (3, content_type, &[3; 64][..])
                    );
                }
                other => panic!("{key}: {other:?}"),
            }
        }
        assert_eq!(store.counts(), (KEYS - 3, 3));
        store.close().await;
    }
}
