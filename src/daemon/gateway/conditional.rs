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

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rand::Rng;
use tokio::time::Instant;

use super::quorum::{Mutation, MutationKind};
use super::state::GatewayState;
use crate::error::ApiError;
use crate::paxos::{Ballot, Change, Message, Outcome, Proposer, Quorum, Reply, Step};
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
    record.and_then(|record| live(record.version, record.tombstone, record.expires_at, now))
}

/// `version` when a record of it with `tombstone` and `expires_at` is live at `now`.
fn live(version: u64, tombstone: bool, expires_at: Option<u64>, now: u64) -> Option<u64> {
    (!tombstone && expires_at.is_none_or(|expires_at| expires_at > now)).then_some(version)
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

/// What a gateway remembers of its last chosen write of a key: the base of a fast round
/// ([`crate::paxos::Proposer::after`]), one round trip instead of two.
#[derive(Debug, Clone)]
struct FastBase {
    /// The ballot the write was proposed at.
    after: Ballot,
    /// Its record without the value: version and liveness.
    version: u64,
    tombstone: bool,
    expires_at: Option<u64>,
    /// The owner ids and groups the round ran over; a fast round needs the same.
    members: Vec<String>,
    groups: Vec<Vec<usize>>,
}

/// Keys whose last chosen write this gateway remembers; past it the memory starts over.
const MAX_FAST_BASES: usize = 65_536;

/// The last chosen write of each key this gateway wrote conditionally (bounded by
/// [`MAX_FAST_BASES`]). A request takes a key's entry out while it runs, so two requests never
/// build a fast round on the same base.
#[derive(Debug, Default)]
pub struct FastBases(std::sync::Mutex<HashMap<String, FastBase>>);

impl FastBases {
    fn take(&self, key: &str) -> Option<FastBase> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(key)
    }

    fn put(&self, key: &str, base: FastBase) {
        let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_FAST_BASES && !map.contains_key(key) {
            map.clear();
        }
        map.insert(key.to_string(), base);
    }
}

/// The chosen conditional writes whose commits this gateway is still sending, by storage key. A
/// strong read that meets one of them pending on the owners answers it without a round: it is
/// chosen (this gateway answered it), and nothing newer was found.
#[derive(Debug, Default)]
pub struct Committing {
    records: std::sync::Mutex<HashMap<String, Record>>,
    /// How many records are held: reads skip the lock while there are none.
    count: std::sync::atomic::AtomicUsize,
}

impl Committing {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Record>> {
        self.records.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn begin(&self, record: &Record) {
        let mut map = self.lock();
        map.insert(record.key.clone(), record.clone());
        self.count.store(map.len(), std::sync::atomic::Ordering::Release);
    }

    fn end(&self, record: &Record) {
        let mut map = self.lock();
        if map.get(&record.key).is_some_and(|held| held.version == record.version) {
            map.remove(&record.key);
        }
        self.count.store(map.len(), std::sync::atomic::Ordering::Release);
    }

    /// This gateway's chosen write of `key` whose commits are still on their way, if any: an
    /// eventual read answers it, so a client reads its own conditional write at once.
    pub fn current(&self, key: &str) -> Option<Record> {
        if self.count.load(std::sync::atomic::Ordering::Acquire) == 0 {
            return None;
        }
        self.lock().get(key).cloned()
    }

    /// The record of `key` at `version` if it is one of this gateway's chosen writes still being committed.
    pub fn chosen(&self, key: &str, version: u64) -> Option<Record> {
        self.lock().get(key).filter(|record| record.version == version).cloned()
    }
}

/// The owners a round of `key` runs over, and the groups of them that each need a majority:
/// the key's owners, and during a membership change the old ring's owners too.
fn round_members(
    placement: &crate::daemon::gateway::placement::Placement,
    key: &str,
) -> Result<(Vec<NodeInfo>, Vec<Vec<usize>>), ApiError> {
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
    Ok((members, groups))
}

/// How a run of rounds ended: chosen or refused, with the owners that answered its last phase.
struct Settled<F> {
    outcome: Outcome<Record>,
    answered: BTreeSet<usize>,
    proposer: Proposer<Record, F>,
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
        let (members, groups) = round_members(&self.placement(), key)?;
        let change = |current: Option<&Record>, version: u64| {
            if condition.holds(live_version(current, crate::hlc::wall_millis())) {
                Change::Write(record_of(key, &kind, version))
            } else {
                Change::Refuse
            }
        };
        let quorum = Quorum::new(groups.clone());
        let ids: Vec<String> = members.iter().map(|member| member.id.clone()).collect();
        // After this gateway's own chosen write of the key, a write whose precondition holds
        // against it skips the prepare. (One that does not goes through an ordinary round: the
        // key may have changed since, and only a round can tell.)
        let fast =
            self.fast_bases.take(key).filter(|base| base.members == ids && base.groups == groups).filter(|base| {
                condition.holds(live(base.version, base.tombstone, base.expires_at, crate::hlc::wall_millis()))
            });
        let is_fast = fast.is_some();
        let proposer = match fast {
            Some(base) => {
                let record = record_of(key, &kind, self.hlc.now());
                Proposer::after(quorum, base.after, base.version, record, change)
            }
            None => Proposer::new(quorum, self.ballot(), change),
        };
        let Settled { outcome, answered, mut proposer } = self.settle(&members, key, proposer, is_fast).await?;
        match outcome {
            Outcome::Written(record) => {
                self.metrics.conditional(true);
                if let Some(chosen) = proposer.chosen() {
                    if chosen.ballot == Ballot::covering(chosen.ballot.time) {
                        self.metrics.conditional_fast();
                    }
                    let base = FastBase {
                        after: chosen.ballot,
                        version: record.version,
                        tombstone: record.tombstone,
                        expires_at: record.expires_at,
                        members: ids,
                        groups,
                    };
                    self.fast_bases.put(key, base);
                }
                let holders: Vec<String> = answered.iter().map(|&index| members[index].url.clone()).collect();
                self.commit_in_background(key, &members, &record, proposer.background(), answered).await;
                Ok(Conditional::Written { version: record.version, committed: holders })
            }
            Outcome::Refused(current) => {
                self.metrics.conditional(false);
                Ok(Conditional::Failed(live_version(current.as_ref(), crate::hlc::wall_millis())))
            }
            Outcome::Contended(_) | Outcome::Unavailable { .. } => unreachable!("settle retries these"),
        }
    }

    /// Reads `key` through a Paxos round, which first finishes any conditional write a majority
    /// may have chosen but not yet committed: what a majority read does when it meets one
    /// ([`crate::paxos::needs_round`]). The answer is on a majority of the owners.
    pub async fn read_settled(&self, key: &str) -> Result<Option<Record>, ApiError> {
        let (members, groups) = round_members(&self.placement(), key)?;
        let proposer = Proposer::new(Quorum::new(groups), self.ballot(), |_: Option<&Record>, _| Change::Refuse);
        match self.settle(&members, key, proposer, false).await?.outcome {
            Outcome::Refused(current) => Ok(current),
            other => unreachable!("a round that refuses every change ends refused, not {other:?}"),
        }
    }

    /// Sends a chosen write's commits (or, for a record a round already committed to a majority,
    /// hands it to the owners that missed it) without holding up the answer.
    async fn commit_in_background(
        &self,
        key: &str,
        members: &[NodeInfo],
        record: &Record,
        commits: Vec<(usize, Message<Record>)>,
        answered: BTreeSet<usize>,
    ) {
        if commits.is_empty() {
            let missed: Vec<NodeInfo> = members
                .iter()
                .enumerate()
                .filter(|(index, _)| !answered.contains(index))
                .map(|(_, member)| member.clone())
                .collect();
            self.replication.enqueue(key, &mutation_of(record), missed).await;
            return;
        }
        let (this, key, members, record) = (self.clone(), key.to_string(), members.to_vec(), record.clone());
        self.committing.begin(&record);
        tokio::spawn(async move {
            let sent = commits.into_iter().map(|(owner, message)| {
                let (this, node, key) = (this.clone(), members[owner].clone(), key.clone());
                async move {
                    let reply = this.paxos_one(&node, Request { key, message, held: Vec::new() }).await;
                    (reply != Reply::Committed).then_some(node)
                }
            });
            let missed: Vec<NodeInfo> = futures_util::future::join_all(sent).await.into_iter().flatten().collect();
            this.committing.end(&record);
            this.replication.enqueue(&key, &mutation_of(&record), missed).await;
        });
    }

    /// Runs rounds of `proposer` (a `fast` one first: [`crate::paxos::Proposer::after`]) until
    /// one is chosen or refused, retrying contention and failures at later ballots after a short
    /// random pause, until [`DEADLINE`].
    async fn settle<F>(
        &self,
        members: &[NodeInfo],
        key: &str,
        mut proposer: Proposer<Record, F>,
        fast: bool,
    ) -> Result<Settled<F>, ApiError>
    where
        F: FnMut(Option<&Record>, u64) -> Change<Record>,
    {
        let deadline = Instant::now() + DEADLINE;
        let mut rounds = 0u32;
        loop {
            let (outcome, answered) = self.drive(members, key, &mut proposer).await;
            rounds += 1;
            let in_doubt = match outcome {
                Outcome::Written(_) | Outcome::Refused(_) => return Ok(Settled { outcome, answered, proposer }),
                Outcome::Contended(ballot) => {
                    self.hlc.observe(ballot.time);
                    false
                }
                Outcome::Unavailable { in_doubt } => in_doubt,
            };
            if Instant::now() >= deadline {
                let doubt = if in_doubt { " It may still take effect: read the key before retrying." } else { "" };
                return Err(ApiError::unavailable(format!(
                    "the conditional operation did not complete in {} ({rounds} rounds): too few of the key's owners \
                     answered, or other writers kept contending for it; retry.{doubt}",
                    crate::duration::format(DEADLINE)
                )));
            }
            // A fast round that met anything newer goes straight to an ordinary round.
            if rounds > 1 || !fast {
                let pause = rand::rng().random_range(0..=MAX_BACKOFF_MS.min(1 << rounds.min(6)));
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            proposer = proposer.retry(self.ballot());
        }
    }

    /// A fresh ballot: later than every ballot this gateway made or saw.
    fn ballot(&self) -> Ballot {
        Ballot { time: self.hlc.now(), proposer: self.proposer }
    }

    /// Runs one round to its end; returns the outcome and the members that
    /// answered yes in the round's last phase (accepted, or stored a commit).
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
            if matches!(reply, Reply::Committed | Reply::Acceptance(crate::paxos::Acceptance::Accepted)) {
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
