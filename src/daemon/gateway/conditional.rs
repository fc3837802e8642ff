//! Conditional writes (`If-Match` / `If-None-Match`): the gateway drives one
//! [`crate::paxos::Proposer`] per request over the key's owners (and, during a
//! membership change, the old ring's owners too: a majority of each group).
//!
//! Each round takes a fresh ballot from the hybrid logical clock, with this
//! gateway's random proposer id breaking ties, so the record it writes carries
//! the ballot's time as its version. A round that meets a higher ballot, or
//! too few owners, is retried after a short random pause at a later ballot,
//! until [`DEADLINE`]; the retries remember what the operation proposed, so a
//! write that took effect in an earlier round is answered as written, never
//! applied twice.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rand::Rng;
use tokio::time::Instant;

use super::quorum::{Mutation, MutationKind};
use super::state::GatewayState;
use crate::error::ApiError;
use crate::paxos::{Ballot, Change, Outcome, Proposer, Quorum, Reply, Step};
use crate::precondition::Condition;
use crate::ring::NodeInfo;
use crate::wal::Record;
use crate::wire::paxos::Request;

/// How long a conditional write keeps retrying under contention or failures.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// The longest random pause between two rounds.
const MAX_BACKOFF_MS: u64 = 64;

/// How a conditional write ended.
#[derive(Debug, Clone)]
pub enum Conditional {
    /// Written at `version`; `committed` are the owners that stored it before the answer.
    Written {
        /// The new record's version.
        version: u64,
        /// Base URLs of the owners holding it.
        committed: Vec<String>,
    },
    /// The precondition does not hold; the key's live version (`None`: absent,
    /// deleted or expired). Nothing was written.
    Failed(Option<u64>),
}

/// The key's live version in `record`: `None` for a tombstone or an expired value.
fn live_version(record: Option<&Record>, now: u64) -> Option<u64> {
    record
        .filter(|record| !record.tombstone && record.expires_at.is_none_or(|expires_at| expires_at > now))
        .map(|record| record.version)
}

/// The record a conditional write stores at `version`.
fn record_of(key: &str, kind: &MutationKind, version: u64) -> Record {
    match kind {
        MutationKind::Put { value, content_type, expires_at } => {
            Record::put(key, version, value.clone(), content_type.clone()).with_expiry(*expires_at)
        }
        MutationKind::Delete => Record::delete(key, version),
    }
}

/// The mutation that hands `record` to an owner that missed it.
fn mutation_of(record: &Record) -> Mutation {
    let kind = if record.tombstone {
        MutationKind::Delete
    } else {
        MutationKind::Put {
            value: record.value.clone(),
            content_type: record.content_type.clone(),
            expires_at: record.expires_at,
        }
    };
    Mutation { version: record.version, kind }
}

impl GatewayState {
    /// Writes `kind` to the storage key `key` if `condition` holds, linearizably.
    pub async fn write_conditional(
        &self,
        key: &str,
        condition: Condition,
        kind: MutationKind,
    ) -> Result<Conditional, ApiError> {
        self.check_clock()?;
        let placement = self.placement();
        let mut members: Vec<NodeInfo> = placement.owners(key);
        let mut groups = vec![(0..members.len()).collect::<Vec<_>>()];
        if placement.in_transition() {
            let mut old = Vec::new();
            for owner in placement.old_owners(key) {
                let index = members.iter().position(|member| member.id == owner.id).unwrap_or_else(|| {
                    members.push(owner);
                    members.len() - 1
                });
                old.push(index);
            }
            groups.push(old);
        }
        if groups.iter().any(Vec::is_empty) {
            return Err(ApiError::unavailable("the key has no owners; the cluster has no storage nodes"));
        }
        let change = |current: Option<&Record>, version: u64| {
            if condition.holds(live_version(current, crate::hlc::wall_millis())) {
                Change::Write(record_of(key, &kind, version))
            } else {
                Change::Refuse
            }
        };
        let deadline = Instant::now() + DEADLINE;
        let mut proposer = Proposer::new(Quorum::new(groups), self.ballot(), change);
        let mut rounds = 0u32;
        loop {
            let (outcome, committed) = self.drive(&members, key, &mut proposer).await;
            rounds += 1;
            let in_doubt = match outcome {
                Outcome::Written(record) => {
                    self.metrics.conditional(true);
                    let holders: Vec<NodeInfo> = committed.iter().map(|&index| members[index].clone()).collect();
                    let missed: Vec<NodeInfo> =
                        members.iter().filter(|member| !holders.contains(member)).cloned().collect();
                    self.replication.enqueue(key, &mutation_of(&record), missed).await;
                    let committed = holders.into_iter().map(|node| node.url).collect();
                    return Ok(Conditional::Written { version: record.version, committed });
                }
                Outcome::Refused(current) => {
                    self.metrics.conditional(false);
                    return Ok(Conditional::Failed(live_version(current.as_ref(), crate::hlc::wall_millis())));
                }
                Outcome::Contended(ballot) => {
                    self.hlc.observe(ballot.time);
                    false
                }
                Outcome::Unavailable { in_doubt } => in_doubt,
            };
            if Instant::now() >= deadline {
                let doubt = if in_doubt { " It may still take effect: read the key before retrying." } else { "" };
                return Err(ApiError::unavailable(format!(
                    "the conditional write did not complete in {} ({rounds} rounds): too few of the key's owners \
                     answered, or other writers kept contending for it; retry.{doubt}",
                    crate::duration::format(DEADLINE)
                )));
            }
            let pause = rand::rng().random_range(0..=MAX_BACKOFF_MS.min(1 << rounds.min(6)));
            tokio::time::sleep(Duration::from_millis(pause)).await;
            proposer = proposer.retry(self.ballot());
        }
    }

    /// A fresh ballot: later than every ballot this gateway made or saw.
    fn ballot(&self) -> Ballot {
        Ballot { time: self.hlc.now(), proposer: self.proposer }
    }

    /// Runs one round to its end; returns the outcome and the members that
    /// stored a record in the round's last commit phase.
    async fn drive<F>(
        &self,
        members: &[NodeInfo],
        key: &str,
        proposer: &mut Proposer<Record, F>,
    ) -> (Outcome<Record>, BTreeSet<usize>)
    where
        F: FnMut(Option<&Record>, u64) -> Change<Record>,
    {
        let mut step = proposer.start();
        let held = proposer.proposed_versions();
        let mut in_flight = FuturesUnordered::new();
        let mut committed = BTreeSet::new();
        loop {
            match step {
                Step::Done(outcome) => {
                    // Messages still on their way (commits to the slower owners) finish in the background.
                    if !in_flight.is_empty() {
                        tokio::spawn(async move { while in_flight.next().await.is_some() {} });
                    }
                    return (outcome, committed);
                }
                Step::Send(messages) => {
                    // A new phase: answers to the previous one no longer count (the proposer
                    // ignores owners it did not ask in this phase), but they still arrive.
                    let leftover = std::mem::take(&mut in_flight);
                    if !leftover.is_empty() {
                        tokio::spawn(async move {
                            let mut leftover = leftover;
                            while leftover.next().await.is_some() {}
                        });
                    }
                    committed.clear();
                    for (owner, message) in messages {
                        let this = self.clone();
                        let node = members[owner].clone();
                        let request = Request { key: key.to_string(), message, held: held.clone() };
                        in_flight.push(tokio::spawn(async move { (owner, this.paxos_one(&node, request).await) }));
                    }
                }
                Step::Wait => {}
            }
            let Some(answer) = in_flight.next().await else {
                // Every owner asked has answered and the round still waits: cannot happen with a
                // well-formed proposer, but never hang on it.
                return (Outcome::Unavailable { in_doubt: true }, committed);
            };
            // A message task that panicked answered nothing: the proposer keeps waiting for the others.
            let Ok((owner, reply)) = answer else {
                step = Step::Wait;
                continue;
            };
            if reply == Reply::Committed {
                committed.insert(owner);
            }
            step = proposer.on_reply(owner, reply);
        }
    }

    async fn paxos_one(&self, node: &NodeInfo, request: Request) -> Reply<Record> {
        let outcome = self.nodes.paxos(&node.url, request).await;
        self.note(node, outcome.as_ref().err());
        match outcome {
            Ok(reply) => reply,
            Err(error) => {
                tracing::debug!(node = %node.id, %error, "Paxos message failed");
                Reply::Failed
            }
        }
    }
}
