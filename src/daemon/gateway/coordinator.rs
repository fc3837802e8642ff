//! Reads, writes and listings across the ring at the requested consistency.
//!
//! - eventual write: the first healthy node of the preference list makes it
//!   durable while (in parallel) a replicator job is queued to copy it to the
//!   other owners; if that node fails, the next one takes it, with its own job.
//!   (A write answered 502 because a node refused it may still reach the other owners.)
//! - strong write: every owner (or, for a down owner, the next healthy node,
//!   which keeps a hint) is written in parallel; the answer waits for a
//!   majority *of the key's owners*. Hints never count: a write and a later
//!   read that each reached a majority of the owners share at least one owner.
//!   Owners that missed it get a replicator job, which hands the data back.
//! - eventual read: owners in preference order until one holds the key.
//! - strong read: a majority of the owners is read; the newest version wins;
//!   stale owners are repaired before the answer.
//!
//! Every write's version comes from the gateway's hybrid logical clock. A node
//! that already holds a newer version ignores an older write and says which
//! version it holds; the gateway then observes that version (the HLC receive
//! rule), so its clock moves past it, and writes again with a newer version: a
//! write that completes after another one wins, whatever the clocks say. A
//! gateway whose clock is further than `--max-clock-offset` from the nodes'
//! refuses writes instead of stamping them with versions from the future.

use std::collections::{BTreeMap, HashSet};

use axum::http::StatusCode;
use futures_util::StreamExt;

use super::input::Consistency;
use super::nodes::{NodeError, node_is_down};
use super::quorum::{Mutation, majority, resolve};
use super::state::GatewayState;
use crate::error::ApiError;
use crate::fanout::{self, Verdict};
use crate::proto::{NodeKeyEntry, StoreWriteResponse};
use crate::ring::NodeInfo;
use crate::wire::read::{Found, Lookup, Replica};

/// Which nodes took part in a write.
#[derive(Debug, Clone)]
pub struct WriteOutcome {
    /// The node reported as `primary_node`: the ring primary if it acknowledged, else the first that did.
    pub primary: String,
    /// Every node that acknowledged before the answer.
    pub participants: Vec<String>,
    /// The version the write was stored with (newer than the one asked for when it had to be rewritten).
    pub version: u64,
}

/// How one attempt at a write ended.
enum Attempt {
    /// Stored as the consistency level promises.
    Stored(WriteOutcome),
    /// A node already held this newer version, so the write did not take effect there.
    Overtaken(u64),
}

/// Times a write overtaken by a newer version is rewritten with a newer one before giving up.
const OVERTAKEN_RETRIES: usize = 3;

/// A record read from the cluster, with the nodes consulted.
#[derive(Debug, Clone)]
pub struct ReadOutcome {
    /// The newest record found (`Missing` if none had the key).
    pub record: Lookup,
    /// The nodes that answered.
    pub participants: Vec<String>,
}

/// A merged page of node listings (keys still carry the tenant prefix).
#[derive(Debug, Clone)]
pub struct ListOutcome {
    /// Keys ascending, newest version of each.
    pub entries: Vec<NodeKeyEntry>,
    /// Storage key after which the next page starts, if there may be more.
    pub next_cursor: Option<String>,
    /// The nodes that answered.
    pub participants: Vec<String>,
}

fn bad_gateway(error: &NodeError) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, format!("storage node refused the request: {error}"))
}

/// The node's own message when it refused a write because its disk is full (507).
fn disk_full_message(error: &NodeError) -> Option<&str> {
    match error {
        NodeError::Status { status, message, .. } if *status == StatusCode::INSUFFICIENT_STORAGE => Some(message),
        _ => None,
    }
}

/// Whether a write this node failed should go to another node instead: the node is down, or its
/// disk is full (it stays up for reads).
fn try_elsewhere(error: &NodeError) -> bool {
    node_is_down(error) || disk_full_message(error).is_some()
}

/// A write that was not stored: 507 naming the full nodes (with the nodes' own advice) when a full
/// disk is why, else 503 with `cause`.
fn not_stored(summary: &str, cause: &str, disk_full: &[String]) -> ApiError {
    if disk_full.is_empty() {
        ApiError::unavailable(format!("{summary}; {cause}"))
    } else {
        ApiError::new(StatusCode::INSUFFICIENT_STORAGE, format!("{summary}; {}", disk_full.join("; ")))
    }
}

/// The newer version a node holds instead of `mutation`, when it ignored the write for it.
/// (The same version again is a repeat of this very write: stored.)
fn overtaken(mutation: &Mutation, answer: &StoreWriteResponse) -> Option<u64> {
    (!answer.applied && answer.version > mutation.version).then_some(answer.version)
}

/// What a reader sees of `record` now: an expired value is missing.
fn lookup_of(record: Option<crate::wal::Record>) -> Lookup {
    match record {
        None => Lookup::Missing,
        Some(record) if record.tombstone => Lookup::Tombstone(record.version),
        Some(record) if record.expires_at.is_some_and(|at| at <= crate::hlc::wall_millis()) => Lookup::Missing,
        Some(record) => Lookup::Found(Found {
            version: record.version,
            expires_at: record.expires_at,
            content_type: record.content_type.into(),
            value: record.value,
        }),
    }
}

/// An eventual write that `node` answered.
fn stored_alone(node: NodeInfo, mutation: &Mutation, answer: &StoreWriteResponse) -> Attempt {
    match overtaken(mutation, answer) {
        Some(held) => Attempt::Overtaken(held),
        None => Attempt::Stored(WriteOutcome {
            primary: node.url.clone(),
            participants: vec![node.url],
            version: mutation.version,
        }),
    }
}

impl GatewayState {
    async fn write_one(
        &self,
        node: &NodeInfo,
        key: &str,
        mutation: &Mutation,
    ) -> Result<StoreWriteResponse, NodeError> {
        let outcome = self.nodes.write(&node.url, key, mutation).await;
        self.note(node, outcome.as_ref().err());
        outcome
    }

    async fn read_one(&self, node: &NodeInfo, key: &str) -> Result<Lookup, NodeError> {
        Ok(self.read_replica(node, key).await?.lookup)
    }

    /// What `node` holds for `key`, with the version of a conditional write pending there.
    async fn read_replica(&self, node: &NodeInfo, key: &str) -> Result<Replica, NodeError> {
        let outcome = self.nodes.read(&node.url, key).await;
        self.note(node, outcome.as_ref().err());
        if let Ok(replica) = &outcome {
            for version in replica.lookup.version().into_iter().chain(replica.pending) {
                self.hlc.observe(version);
            }
        }
        outcome
    }

    /// Updates a node's health from the outcome of a request to it.
    pub(super) fn note(&self, node: &NodeInfo, error: Option<&NodeError>) {
        match error {
            None => self.placement().set_health(&node.id, true),
            Some(error) if node_is_down(error) => {
                let placement = self.placement();
                // One line when a node goes down, not one per failed request while it stays down.
                if placement.is_healthy(&node.id) {
                    tracing::warn!(node = %node.id, %error, "node request failed; marking it down");
                }
                placement.record_failure(&node.id);
            }
            Some(_) => {}
        }
    }

    /// Writes `mutation` of the storage key `key` at `consistency`.
    pub async fn write(
        &self,
        key: &str,
        mut mutation: Mutation,
        consistency: Consistency,
    ) -> Result<WriteOutcome, ApiError> {
        self.check_clock()?;
        for _ in 0..=OVERTAKEN_RETRIES {
            let attempt = match consistency {
                Consistency::Eventual => self.write_eventual(key, &mutation).await?,
                Consistency::Strong => self.write_strong(key, &mutation).await?,
            };
            match attempt {
                Attempt::Stored(outcome) => return Ok(outcome),
                Attempt::Overtaken(held) => {
                    tracing::debug!(held, ours = mutation.version, "write overtaken by a newer version; rewriting");
                    self.metrics.write_overtaken();
                    self.hlc.observe(held);
                    mutation.version = self.hlc.now();
                }
            }
        }
        Err(ApiError::unavailable(format!(
            "the write was overtaken by a newer version {} times in a row; retry it (if this persists, a \
             gateway's clock may be ahead: compare the clock_offset_ms of every gateway's /metrics)",
            OVERTAKEN_RETRIES + 1
        )))
    }

    /// Refuses writes while this gateway's clock is further from the nodes' than `--max-clock-offset`:
    /// its versions would outlast later writes from gateways with good clocks.
    pub(super) fn check_clock(&self) -> Result<(), ApiError> {
        let Some(offset) = self.placement().clock_offset_ms() else { return Ok(()) };
        let max = self.config.max_clock_offset.as_millis() as i64;
        if offset.abs() <= max {
            return Ok(());
        }
        let (amount, direction) =
            (offset.unsigned_abs() as f64 / 1000.0, if offset < 0 { "ahead of" } else { "behind" });
        Err(ApiError::unavailable(format!(
            "this gateway's clock is {amount:.1} s {direction} the storage nodes' (at most {} allowed, \
             --max-clock-offset / YDHT_MAX_CLOCK_OFFSET); writes are refused until its time is synchronised (NTP)",
            crate::duration::format(self.config.max_clock_offset)
        )))
    }

    async fn write_eventual(&self, key: &str, mutation: &Mutation) -> Result<Attempt, ApiError> {
        let placement = self.placement();
        // During a membership change, the old ring's owners get a copy too.
        let owners = placement.write_targets(key);
        let mut candidates = placement.healthy_first(key).into_iter();
        let Some(first) = candidates.next() else {
            return Err(ApiError::unavailable("no storage node could take the write; every node is down"));
        };
        // The usual case: the first candidate takes the write. Its copies for the other owners are
        // handed to the replicator at the same time (two fsyncs in parallel, not in a row); if the
        // first candidate fails, the copies below cover whichever node took the write instead.
        let others = |durable: &NodeInfo| -> Vec<NodeInfo> {
            owners.iter().filter(|owner| owner.id != durable.id).cloned().collect()
        };
        let (outcome, ()) = tokio::join!(
            self.write_one(&first, key, mutation),
            self.replication.enqueue(key, mutation, others(&first))
        );
        let mut disk_full = Vec::new();
        match outcome {
            Ok(answer) => return Ok(stored_alone(first, mutation, &answer)),
            Err(error) if try_elsewhere(&error) => disk_full.extend(disk_full_message(&error).map(str::to_string)),
            Err(error) => return Err(bad_gateway(&error)),
        }
        for node in candidates {
            match self.write_one(&node, key, mutation).await {
                Ok(answer) => {
                    if overtaken(mutation, &answer).is_none() {
                        self.replication.enqueue(key, mutation, others(&node)).await;
                    }
                    return Ok(stored_alone(node, mutation, &answer));
                }
                Err(error) if try_elsewhere(&error) => disk_full.extend(disk_full_message(&error).map(str::to_string)),
                Err(error) => return Err(bad_gateway(&error)),
            }
        }
        Err(not_stored("no storage node could take the write", "every node is down", &disk_full))
    }

    async fn write_strong(&self, key: &str, mutation: &Mutation) -> Result<Attempt, ApiError> {
        let placement = self.placement();
        let owners = placement.owners(key);
        let need = majority(owners.len());
        let write_set = placement.write_set(key);
        let tried: HashSet<String> = write_set.iter().map(|(target, _)| target.id.clone()).collect();
        let this = self.clone();
        let (call_key, call_mutation) = (key.to_string(), mutation.clone());
        let gathered = fanout::gather(
            write_set.clone(),
            write_set.len(),
            need,
            move |(target, _): (NodeInfo, Option<NodeInfo>)| {
                let (this, key, mutation) = (this.clone(), call_key.clone(), call_mutation.clone());
                async move { this.write_one(&target, &key, &mutation).await }
            },
            |(_, standing_in_for), outcome| match outcome {
                Ok(answer) if overtaken(mutation, answer).is_some() => Verdict::Stop,
                // Only owners count; a hint on a stand-in does not.
                Ok(_) if standing_in_for.is_none() => Verdict::Counts,
                _ => Verdict::Misses,
            },
        )
        .await;
        let mut tried = tried;
        // Owners that stored the write: only these count towards the majority.
        let mut acked: Vec<NodeInfo> = Vec::new();
        let mut missed: Vec<NodeInfo> = Vec::new();
        let mut newer_held = None;
        let mut refusal = None;
        let mut disk_full = Vec::new();
        for ((target, standing_in_for), outcome, _) in gathered.answers {
            match outcome {
                Ok(answer) => {
                    newer_held = newer_held.or(overtaken(mutation, &answer));
                    match standing_in_for {
                        // A hint on a stand-in: the owner still needs the write, and it does not count.
                        Some(owner) => missed.push(owner),
                        None => acked.push(target),
                    }
                }
                Err(error) => {
                    disk_full.extend(disk_full_message(&error).map(str::to_string));
                    if !try_elsewhere(&error) {
                        refusal = Some(error);
                    }
                    missed.push(standing_in_for.unwrap_or(target));
                }
            }
        }
        if let Some(error) = refusal.filter(|_| acked.len() < need) {
            return Err(bad_gateway(&error));
        }
        // Still short of a majority of the owners: owners believed down are tried directly after all
        // (a stand-in's copy cannot make up for them).
        if acked.len() < need && newer_held.is_none() {
            for owner in placement.owners_healthy_first(key) {
                if acked.len() >= need {
                    break;
                }
                if !tried.insert(owner.id.clone()) {
                    continue;
                }
                match self.write_one(&owner, key, mutation).await {
                    Ok(answer) => match overtaken(mutation, &answer) {
                        Some(held) => {
                            newer_held = Some(held);
                            break;
                        }
                        None => acked.push(owner),
                    },
                    Err(error) => disk_full.extend(disk_full_message(&error).map(str::to_string)),
                }
            }
        }
        // Writes still in flight finish in the background; owners they miss get a job too. A late
        // answer naming a newer version moves the clock past it for the next write.
        let this = self.clone();
        let (background_key, background_mutation) = (key.to_string(), mutation.clone());
        let late = gathered.late;
        tokio::spawn(async move {
            let mut missed_late = Vec::new();
            for ((target, standing_in_for), outcome) in late.answers().await {
                if let Some(held) = outcome.as_ref().ok().and_then(|answer| overtaken(&background_mutation, answer)) {
                    this.hlc.observe(held);
                }
                match (outcome, standing_in_for) {
                    (Ok(_), Some(owner)) => missed_late.push(owner),
                    (Ok(_), None) => {}
                    (Err(_), standing_in_for) => missed_late.push(standing_in_for.unwrap_or(target)),
                }
            }
            this.replication.enqueue(&background_key, &background_mutation, missed_late).await;
        });
        if let Some(held) = newer_held {
            return Ok(Attempt::Overtaken(held));
        }
        let acked_ids: HashSet<&str> = acked.iter().map(|node| node.id.as_str()).collect();
        let mut hand_back: Vec<NodeInfo> = Vec::new();
        // During a membership change the old ring's owners get it too (best effort, not waited for).
        for owner in missed.into_iter().chain(placement.old_only_owners(key)) {
            if !acked_ids.contains(owner.id.as_str()) && !hand_back.contains(&owner) {
                hand_back.push(owner);
            }
        }
        self.replication.enqueue(key, mutation, hand_back).await;
        if acked.len() < need {
            let summary = format!(
                "strong write reached only {} of the {need} owners of the key it needs (copies on other nodes do \
                 not count)",
                acked.len()
            );
            return Err(not_stored(&summary, "it may still be applied later, retry it", &disk_full));
        }
        let primary =
            owners.first().filter(|primary| acked_ids.contains(primary.id.as_str())).unwrap_or(&acked[0]).url.clone();
        let participants = acked.into_iter().map(|node| node.url).collect();
        Ok(Attempt::Stored(WriteOutcome { primary, participants, version: mutation.version }))
    }

    /// Reads the storage key `key` at `consistency`.
    pub async fn read(&self, key: &str, consistency: Consistency) -> Result<ReadOutcome, ApiError> {
        match consistency {
            Consistency::Eventual => self.read_eventual(key).await,
            Consistency::Strong => self.read_strong(key).await,
        }
    }

    async fn read_eventual(&self, key: &str) -> Result<ReadOutcome, ApiError> {
        // A conditional write this gateway answered is chosen; until its commits land, the
        // owners may still hold the record before it.
        if let Some(record) = self.committing.current(key) {
            return Ok(ReadOutcome { record: lookup_of(Some(record)), participants: Vec::new() });
        }
        let placement = self.placement();
        // The owners, and during a membership change the old ring's owners (which may not have
        // handed the key over yet), are all asked before answering "not found".
        let replicas =
            if placement.in_transition() { placement.write_targets(key).len() } else { placement.replicas() };
        let mut participants = Vec::new();
        for node in placement.healthy_first(key) {
            match self.read_one(&node, key).await {
                Ok(Lookup::Missing) => {
                    participants.push(node.url);
                    // A missing key may just not have been copied here yet: ask the other owners.
                    if participants.len() >= replicas {
                        break;
                    }
                }
                Ok(record) => {
                    participants.push(node.url);
                    return Ok(ReadOutcome { record, participants });
                }
                Err(error) if node_is_down(&error) => continue,
                Err(error) => return Err(bad_gateway(&error)),
            }
        }
        if participants.is_empty() {
            return Err(ApiError::unavailable("no storage node could be read; every node is down"));
        }
        Ok(ReadOutcome { record: Lookup::Missing, participants })
    }

    async fn read_strong(&self, key: &str) -> Result<ReadOutcome, ApiError> {
        let placement = self.placement();
        let owners = placement.owners_healthy_first(key);
        let need = majority(owners.len());
        let mut responders: Vec<(NodeInfo, Replica)> = Vec::new();
        self.read_majority(key, owners, need, &mut responders).await?;
        if placement.in_transition() {
            // The newest version may still be only on the old ring's owners: read a majority there too.
            let old_owners = placement.old_owners_healthy_first(key);
            let old_need = majority(old_owners.len());
            self.read_majority(key, old_owners, old_need, &mut responders).await?;
        }
        let records: Vec<Lookup> = responders.iter().map(|(_, replica)| replica.lookup.clone()).collect();
        let resolution = resolve(&records);
        let participants: Vec<String> = responders.iter().map(|(node, _)| node.url.clone()).collect();
        let newest = resolution.newest.and_then(|index| records[index].version());
        let pending = responders.iter().filter_map(|(_, replica)| replica.pending).max();
        if crate::paxos::needs_round(newest, pending.into_iter()) {
            // A conditional write newer than every record read may be chosen already (it is
            // answered before its commits land). This gateway's own, still being committed, is
            // chosen: answer it. Any other: settle the key through a round and answer that.
            if let Some(record) = pending.and_then(|version| self.committing.chosen(key, version)) {
                return Ok(ReadOutcome { record: lookup_of(Some(record)), participants });
            }
            self.metrics.read_settled();
            let record = self.read_settled(key).await?;
            return Ok(ReadOutcome { record: lookup_of(record), participants });
        }
        let Some(newest) = resolution.newest else {
            return Ok(ReadOutcome { record: Lookup::Missing, participants });
        };
        let record = records[newest].clone();
        // Before answering, the newest version must be durable on a majority: otherwise a strong
        // write still in flight could be seen here and missed by a later read of another majority.
        // Every stale responder is repaired now and awaited, not in the background.
        let holders = responders.len() - resolution.stale.len();
        if let Some(repair) = Mutation::restoring(&record).filter(|_| !resolution.stale.is_empty()) {
            let repairs = resolution.stale.iter().map(|&index| {
                let (node, repair) = (&responders[index].0, &repair);
                async move { self.write_one(node, key, repair).await.is_ok() }
            });
            let repaired = futures_util::future::join_all(repairs).await.into_iter().filter(|ok| *ok).count();
            for _ in 0..repaired {
                self.metrics.read_repaired();
            }
            if holders + repaired < need {
                return Err(ApiError::unavailable(format!(
                    "strong read found a newer version on {holders} node(s) but could not copy it to a majority of \
                     {need}; retry, or read with X-Consistency: eventual"
                )));
            }
        }
        Ok(ReadOutcome { record, participants })
    }

    /// Reads `key` from `candidates` (a node that is down is replaced by the next one) until
    /// `need` of them (counting those already in `responders`) answered.
    async fn read_majority(
        &self,
        key: &str,
        candidates: Vec<NodeInfo>,
        need: usize,
        responders: &mut Vec<(NodeInfo, Replica)>,
    ) -> Result<(), ApiError> {
        let read_already = |node: &NodeInfo, responders: &[(NodeInfo, Replica)]| {
            responders.iter().any(|(responder, _)| responder.id == node.id)
        };
        let mut have = candidates.iter().filter(|node| read_already(node, responders)).count();
        let candidates = candidates.into_iter().filter(|node| !read_already(node, responders)).collect::<Vec<_>>();
        let short = need.saturating_sub(have);
        if short > 0 {
            let this = self.clone();
            let call_key = key.to_string();
            let gathered = fanout::gather(
                candidates,
                short,
                short,
                move |node: NodeInfo| {
                    let (this, key) = (this.clone(), call_key.clone());
                    async move { this.read_replica(&node, &key).await }
                },
                |_, outcome| match outcome {
                    Ok(_) => Verdict::Counts,
                    Err(error) if node_is_down(error) => Verdict::Misses,
                    Err(_) => Verdict::Stop,
                },
            )
            .await;
            for (node, outcome, _) in gathered.answers {
                match outcome {
                    Ok(record) => {
                        responders.push((node, record));
                        have += 1;
                    }
                    Err(error) if node_is_down(&error) => {}
                    Err(error) => return Err(bad_gateway(&error)),
                }
            }
        }
        if have < need {
            return Err(ApiError::unavailable(format!(
                "strong read reached only {have} of the {need} nodes it needs; retry, or read with X-Consistency: eventual"
            )));
        }
        Ok(())
    }

    /// Lists live keys under the storage prefix `prefix`, after the storage key `cursor`:
    /// every node's listing merged, only entries from a key's owners, newest version of each.
    /// Listings omit tombstones, so where owners disagree (a delete or write not yet copied
    /// everywhere) the silent owners are asked directly and a newer tombstone hides the key.
    pub async fn list(&self, prefix: &str, cursor: Option<&str>, limit: usize) -> Result<ListOutcome, ApiError> {
        let placement = self.placement();
        let nodes = placement.all();
        let listings = nodes.iter().map(|node| async move {
            let outcome = self.nodes.list(&node.url, prefix, cursor, limit).await;
            self.note(node, outcome.as_ref().err());
            (node, outcome)
        });
        // key → (newest entry, ids of the owners that listed it)
        let mut merged: BTreeMap<String, (NodeKeyEntry, Vec<String>)> = BTreeMap::new();
        let mut bound: Option<String> = None;
        let mut failed = 0;
        let mut answered: Vec<NodeInfo> = Vec::new();
        for (node, outcome) in futures_util::future::join_all(listings).await {
            let page = match outcome {
                Ok(page) => page,
                Err(error) if node_is_down(&error) => {
                    failed += 1;
                    continue;
                }
                Err(error) => return Err(bad_gateway(&error)),
            };
            answered.push(node.clone());
            let last = page.keys.last().filter(|_| page.next_cursor.is_some());
            if let Some(last) = last.filter(|last| bound.as_ref().is_none_or(|bound| last.key < *bound)) {
                bound = Some(last.key.clone());
            }
            for entry in page.keys {
                if !placement.write_targets(&entry.key).iter().any(|owner| owner.id == node.id) {
                    continue;
                }
                let slot = merged.entry(entry.key.clone()).or_insert_with(|| (entry.clone(), Vec::new()));
                if entry.version > slot.0.version {
                    slot.0 = entry;
                }
                slot.1.push(node.id.clone());
            }
        }
        // Every key lives on N nodes: with more than N-1 of them silent, some keys could be missing.
        if failed >= placement.replicas() || answered.is_empty() {
            return Err(ApiError::unavailable(format!(
                "{failed} storage nodes did not answer; the listing would be incomplete, retry later"
            )));
        }
        let total = merged.len();
        let page: Vec<(NodeKeyEntry, Vec<String>)> = merged
            .into_values()
            .filter(|(entry, _)| bound.as_ref().is_none_or(|bound| entry.key <= *bound))
            .take(limit)
            .collect();
        let more = bound.is_some() || page.len() < total;
        let next_cursor = match (more, page.last()) {
            (false, _) => None,
            (true, Some((last, _))) => Some(last.key.clone()),
            (true, None) => bound,
        };
        let (answered, placement) = (&answered, &placement);
        let checks = page.into_iter().map(|(entry, listed_by)| async move {
            let silent: Vec<NodeInfo> = placement
                .write_targets(&entry.key)
                .into_iter()
                .filter(|owner| !listed_by.contains(&owner.id) && answered.iter().any(|node| node.id == owner.id))
                .collect();
            let mut entry = entry;
            for owner in silent {
                match self.read_one(&owner, &entry.key).await {
                    Ok(Lookup::Tombstone(version)) if version > entry.version => return None,
                    Ok(Lookup::Found(Found { value, version, expires_at, .. })) if version > entry.version => {
                        entry = NodeKeyEntry { size: value.len() as u64, version, expires_at, key: entry.key };
                    }
                    _ => {}
                }
            }
            Some(entry)
        });
        let entries: Vec<NodeKeyEntry> =
            futures_util::stream::iter(checks).buffered(16).filter_map(|entry| async move { entry }).collect().await;
        let participants = answered.iter().map(|node| node.url.clone()).collect();
        Ok(ListOutcome { entries, next_cursor, participants })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: StatusCode, message: &str) -> NodeError {
        NodeError::Status { url: "http://n3/store/k".into(), status, message: message.into() }
    }

    #[test]
    fn only_a_newer_version_held_overtakes_a_write() {
        let mutation = Mutation { version: 100, kind: super::super::quorum::MutationKind::Delete };
        let answer = |applied, version| StoreWriteResponse { applied, version };
        assert_eq!(overtaken(&mutation, &answer(true, 100)), None);
        assert_eq!(overtaken(&mutation, &answer(false, 100)), None, "a repeat of this very write is stored");
        assert_eq!(overtaken(&mutation, &answer(false, 250)), Some(250));
        let node = NodeInfo { id: "node-1".into(), url: "http://n1".into() };
        assert!(matches!(stored_alone(node.clone(), &mutation, &answer(false, 250)), Attempt::Overtaken(250)));
        let Attempt::Stored(outcome) = stored_alone(node, &mutation, &answer(true, 100)) else { panic!("stored") };
        assert_eq!((outcome.primary.as_str(), outcome.version), ("http://n1", 100));
    }

    #[test]
    fn a_full_node_turns_into_507_with_its_own_advice() {
        let full = answered(StatusCode::INSUFFICIENT_STORAGE, "node-3: disk full at /d/node-3: free space and …");
        let busy = answered(StatusCode::SERVICE_UNAVAILABLE, "the write was not stored");
        assert_eq!(disk_full_message(&full), Some("node-3: disk full at /d/node-3: free space and …"));
        assert_eq!(disk_full_message(&busy), None);
        assert!(!node_is_down(&full), "a full node still serves reads");
        assert!(try_elsewhere(&full) && try_elsewhere(&busy));
        assert!(!try_elsewhere(&answered(StatusCode::BAD_REQUEST, "bad key")));

        let error = not_stored(
            "strong write reached only 1 of the 2 nodes it needs",
            "retry it",
            &["node-3: disk full at /d/node-3: free space and …".into()],
        );
        assert_eq!(error.status, StatusCode::INSUFFICIENT_STORAGE);
        assert!(error.message.starts_with("strong write reached only 1 of the 2"), "{}", error.message);
        assert!(error.message.contains("node-3: disk full at /d/node-3"), "{}", error.message);

        let error = not_stored("no storage node could take the write", "every node is down", &[]);
        assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error.message, "no storage node could take the write; every node is down");
    }
}
