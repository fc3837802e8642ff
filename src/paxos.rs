//! Per-key single-decree Paxos for conditional writes, as a pure state machine.
//!
//! The protocol is Cassandra's lightweight-transaction Paxos (prepare with the
//! read folded in, propose, commit) over the replicas' ordinary records, in the
//! style of CASPaxos (Rystsov, 2018): each conditional write is one round that
//! reads the key's current record under a promise and proposes its successor.
//! Nothing here does I/O; the node persists an [`Acceptor`]'s state before it
//! answers, and the gateway drives a [`Proposer`] over HTTP.
//!
//! # Acceptor (one per key on each owner)
//! - `promised`: the highest ballot it promised; `accepted`: the last proposal
//!   it accepted and has not seen committed. Both are durable before a reply.
//! - Its committed record (the key's ordinary, versioned record in the store)
//!   counts as an implicit promise for every ballot whose time is not after the
//!   record's version ([`Ballot::covering`]). A conditional write's new record
//!   takes its ballot's time as its version, so versions only grow, and a node
//!   can forget a promise that its record already covers ([`Acceptor::is_settled`]).
//! - `prepare(b)`: refuse when `b` is not above the barrier; else promise `b` and
//!   answer the accepted proposal and the committed record.
//! - `accept(p)`: refuse when a higher ballot was promised, or when the record
//!   already holds a version at or after the proposal's (the proposal is stale);
//!   accept when the very record is already committed here.
//! - `commit(b)`: the record is applied to the store by the caller (last writer
//!   wins); an accepted proposal with a ballot up to `b` is cleared.
//!
//! # Proposer (one per conditional request, in the gateway)
//! 1. Prepare at a fresh ballot on every owner; wait for promises from a
//!    majority of each owner group (two groups while the ring changes).
//! 2. The current state is the newest committed record among the promises. If a
//!    promise carries an accepted proposal (the highest ballot wins) made after
//!    the latest commit any promiser applied and newer than that record, an
//!    earlier round may have chosen it: re-propose and commit it first, then
//!    start again at a later ballot. (A re-proposed record keeps its version, so
//!    versions alone cannot tell which proposal is stale; commit ballots can.)
//! 3. Evaluate the change against the current state. A refused precondition
//!    commits the current state to the promisers that lack it (so what the 412
//!    reveals is on a majority, as a strong read's repair does) and answers.
//! 4. Otherwise propose the new record at this ballot. Once a majority of each
//!    group accepted it, it is chosen: the write is answered, and the commits go
//!    out in the background. A majority read that meets an accepted proposal
//!    newer than every record it read ([`Acceptor::pending`]) cannot tell
//!    whether it was chosen, so it settles the key through a round first
//!    ([`needs_round`]); a strong read after the answer therefore sees it.
//!
//! # Fast rounds (one round trip)
//! A proposer that just had its own proposal chosen knows the key's current
//! record without asking. Its next write of the key skips the prepare
//! ([`Proposer::after`]): it proposes at the ballot covering the chosen
//! record's version, which outranks every ballot that could still choose
//! anything but that record, and each owner accepts only when it knows of
//! nothing newer ([`Acceptor::accept_fast`]), committing the chosen proposal by
//! reference first when it is the one accepted there. Any refusal sends the
//! operation back to an ordinary round.
//!
//! A round that meets a higher ballot ends as [`Outcome::Contended`]; the
//! caller retries at a later ballot with the same [`Proposer::retry`], which
//! remembers what this operation proposed before. When a later round finds one
//! of those proposals chosen, the operation took effect and answers so, instead
//! of applying its change twice. To find it even when later writes have
//! replaced it, every owner remembers the last [`HELD_VERSIONS`] versions it
//! stored for the key (`held`, answered with each promise), and a round never
//! builds on a record that is not yet in a majority's stores: it commits the
//! current record to the promisers that lack it first (one more round trip, only
//! when they disagree). So a chosen record that was replaced is in the `held`
//! lists of a majority, which every later prepare quorum meets.

use std::collections::BTreeSet;
use std::fmt::Debug;

/// A proposal number: the proposer's clock reading, ties broken by its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ballot {
    /// A hybrid-logical-clock reading; the version of the record it proposes.
    pub time: u64,
    /// The proposing process's id, unique among proposers.
    pub proposer: u64,
}

impl Ballot {
    /// The implicit promise of a committed record at `version`: every ballot
    /// at or before that time is refused.
    pub fn covering(version: u64) -> Self {
        Self { time: version, proposer: u64::MAX }
    }
}

/// What a register holds: a record with a version (a tombstone is a record too).
pub trait Versioned: Clone + PartialEq + Debug {
    /// The record's version; newer records have larger versions.
    fn version(&self) -> u64;
}

/// How many recently stored versions an acceptor remembers per key: enough for
/// every write of a hot key during a retrying operation's deadline (a key takes
/// at most a few hundred conditional writes a second).
pub const HELD_VERSIONS: usize = 4096;

/// A record proposed at a ballot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal<V> {
    /// The ballot it was proposed at.
    pub ballot: Ballot,
    /// The record.
    pub value: V,
}

/// One owner's durable Paxos state for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acceptor<V> {
    /// The highest ballot promised.
    pub promised: Option<Ballot>,
    /// The last proposal accepted and not yet seen committed.
    pub accepted: Option<Proposal<V>>,
    /// The ballot of the latest commit applied here. A proposal accepted
    /// anywhere at an earlier ballot is settled by it: if it was chosen, the
    /// round that committed later saw and finished it (Cassandra's most
    /// recent commit).
    pub last_commit: Option<Ballot>,
    /// The versions most recently stored for the key, oldest first (at most
    /// [`HELD_VERSIONS`]); kept in memory, rebuilt from the log on restart.
    pub held: Vec<u64>,
}

impl<V> Default for Acceptor<V> {
    fn default() -> Self {
        Self { promised: None, accepted: None, last_commit: None, held: Vec::new() }
    }
}

/// An acceptor's answer to a prepare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Promise<V> {
    /// Promised: the proposal it accepted (if any) and its committed record.
    Promised {
        /// The last accepted, uncommitted proposal.
        accepted: Option<Proposal<V>>,
        /// The key's record in the store.
        committed: Option<V>,
        /// The ballot of the latest commit applied.
        last_commit: Option<Ballot>,
        /// The versions recently stored for the key.
        held: Vec<u64>,
    },
    /// Refused: it stands behind this ballot.
    Refused {
        /// The promise (explicit or implied by the record) that outranks the prepare.
        promised: Ballot,
    },
}

/// An acceptor's answer to a proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acceptance {
    /// Accepted (or already committed here).
    Accepted,
    /// Refused: it stands behind this ballot.
    Refused {
        /// The promise (explicit or implied by the record) that outranks the proposal.
        promised: Ballot,
    },
}

impl<V: Versioned> Acceptor<V> {
    /// The ballot every prepare must exceed: the explicit promise or the record's.
    fn barrier(&self, committed: Option<&V>) -> Option<Ballot> {
        self.promised.max(committed.map(|record| Ballot::covering(record.version())))
    }

    /// Handles a prepare at `ballot`, given the key's record in the store.
    /// On a promise the caller persists the new state before answering.
    pub fn prepare(&mut self, ballot: Ballot, committed: Option<&V>) -> Promise<V> {
        self.prepare_asking(ballot, committed, None)
    }

    /// [`Acceptor::prepare`] whose promise lists, of the stored versions, only
    /// those in `asked` (`None`: all). A proposer only looks for the versions it
    /// proposed, so it asks for those and the promise stays small.
    pub fn prepare_asking(&mut self, ballot: Ballot, committed: Option<&V>, asked: Option<&[u64]>) -> Promise<V> {
        match self.barrier(committed) {
            Some(barrier) if barrier >= ballot => Promise::Refused { promised: barrier },
            _ => {
                self.promised = Some(ballot);
                let held = match asked {
                    None => self.held.clone(),
                    Some(asked) => asked.iter().copied().filter(|version| self.held.contains(version)).collect(),
                };
                Promise::Promised {
                    accepted: self.accepted.clone(),
                    committed: committed.cloned(),
                    last_commit: self.last_commit,
                    held,
                }
            }
        }
    }

    /// Handles a proposal, given the key's record in the store. On acceptance
    /// the caller persists the new state before answering.
    pub fn accept(&mut self, proposal: Proposal<V>, committed: Option<&V>) -> Acceptance {
        if committed == Some(&proposal.value) {
            return Acceptance::Accepted;
        }
        if let Some(promised) = self.promised.max(self.last_commit).filter(|promised| *promised > proposal.ballot) {
            return Acceptance::Refused { promised };
        }
        if let Some(record) = committed.filter(|record| record.version() >= proposal.value.version()) {
            let covering = Ballot::covering(record.version());
            return Acceptance::Refused { promised: self.promised.map_or(covering, |promised| promised.max(covering)) };
        }
        self.promised = Some(proposal.ballot);
        self.accepted = Some(proposal);
        Acceptance::Accepted
    }

    /// The proposal accepted here that a fast proposal names as its base: made
    /// at `after`, with the record version the fast ballot covers. The caller
    /// commits it (stores its record) along with the fast proposal.
    pub fn accepted_base(&self, after: Ballot, fast: Ballot) -> Option<&Proposal<V>> {
        self.accepted.as_ref().filter(|accepted| accepted.ballot == after && accepted.value.version() == fast.time)
    }

    /// Handles a fast proposal ([`Message::AcceptAfter`]): one made without a
    /// prepare on top of the proposer's own chosen record, whose version `base`
    /// its ballot covers (`Ballot::covering(base)`). `committed` is the key's
    /// record, or the base record when the caller commits it by reference
    /// ([`Acceptor::accepted_base`]). Accepted only when this owner knows of
    /// nothing after the base: no promise or commit above the fast ballot, the
    /// base itself as its record (so a write that landed since is noticed), and
    /// no other proposal newer than the base accepted. A ballot covering the
    /// base outranks every ballot that could still choose a record other than
    /// the base (their time is at most the base's version), and each owner
    /// accepts at most one record newer than the base at it.
    pub fn accept_fast(&mut self, proposal: Proposal<V>, committed: Option<&V>) -> Acceptance {
        if self.accepted.as_ref() == Some(&proposal) || committed == Some(&proposal.value) {
            return Acceptance::Accepted;
        }
        let base = proposal.ballot.time;
        let fast = Ballot::covering(base);
        let refused = |acceptor: &Self| {
            let covering = committed.map(|record| Ballot::covering(record.version()));
            Acceptance::Refused {
                promised: acceptor.promised.max(acceptor.last_commit).max(covering).unwrap_or(fast).max(fast),
            }
        };
        if proposal.ballot != fast
            || proposal.value.version() <= base
            || self.promised.max(self.last_commit).is_some_and(|promised| promised > fast)
            || committed.map(Versioned::version) != Some(base)
            || self.accepted.as_ref().is_some_and(|accepted| accepted.value.version() > base)
        {
            return refused(self);
        }
        self.promised = Some(fast);
        self.accepted = Some(proposal);
        Acceptance::Accepted
    }

    /// The version of a proposal accepted here that is newer than the record:
    /// it may be chosen already, so a majority read that meets it must settle
    /// the key through a round before answering ([`needs_round`]).
    pub fn pending(&self, committed: Option<&V>) -> Option<u64> {
        let stored = committed.map(Versioned::version);
        self.accepted.as_ref().map(|accepted| accepted.value.version()).filter(|version| Some(*version) > stored)
    }

    /// Handles the commit of `proposal` (the caller applies its record to the
    /// store): a proposal accepted at an earlier ballot, or this very one, is
    /// settled by it. (A round commits the current record to promisers that
    /// lack it at its own ballot before proposing at that ballot, so another
    /// proposal at the same ballot is newer than the commit.)
    pub fn commit(&mut self, proposal: &Proposal<V>) {
        self.last_commit = self.last_commit.max(Some(proposal.ballot));
        if self.accepted.as_ref().is_some_and(|accepted| accepted.ballot < proposal.ballot || accepted == proposal) {
            self.accepted = None;
        }
    }

    /// Notes that the store now holds `version` for the key (by a commit or any
    /// other write), so a later round can tell that it was chosen.
    pub fn stored(&mut self, version: u64) {
        if self.held.last() != Some(&version) {
            if self.held.len() >= HELD_VERSIONS {
                // Forget the oldest eighth at once (not one shift per write).
                self.held.drain(..HELD_VERSIONS / 8);
            }
            self.held.push(version);
        }
    }

    /// Folds in a logged state of the same key. Acceptor states are logged
    /// after each change but concurrent changes may reach the log in another
    /// order than they were made, so replay joins them: the highest promise
    /// and commit, the accepted proposal with the highest ballot unless a
    /// later commit settled it, and the newest stored versions of both.
    pub fn merge(&mut self, logged: Self) {
        self.promised = self.promised.max(logged.promised);
        self.last_commit = self.last_commit.max(logged.last_commit);
        let accepted = match (self.accepted.take(), logged.accepted) {
            (Some(mine), Some(theirs)) => Some(if theirs.ballot > mine.ballot { theirs } else { mine }),
            (mine, theirs) => mine.or(theirs),
        };
        self.accepted = accepted.filter(|proposal| Some(proposal.ballot) >= self.last_commit);
        let mut held: Vec<u64> = self.held.drain(..).chain(logged.held).collect();
        held.sort_unstable();
        held.dedup();
        self.held = held.split_off(held.len().saturating_sub(HELD_VERSIONS));
    }

    /// Whether this state says nothing the record does not: no accepted
    /// proposal, and no promise or commit beyond the record's implicit one. A
    /// settled state can be dropped from memory and from the log.
    pub fn is_settled(&self, committed: Option<&V>) -> bool {
        let covering = committed.map(|record| Ballot::covering(record.version()));
        self.accepted.is_none() && self.promised <= covering && self.last_commit <= covering
    }
}

/// Which owners must answer: a majority of every group (the key's owners on
/// the ring, and on the old ring too while the membership changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quorum {
    groups: Vec<Vec<usize>>,
}

impl Quorum {
    /// A quorum over owner groups, each a list of owner indices.
    pub fn new(groups: Vec<Vec<usize>>) -> Self {
        assert!(groups.iter().all(|group| !group.is_empty()), "every owner group has a member");
        Self { groups }
    }

    /// Every owner that takes part, in index order.
    pub fn members(&self) -> BTreeSet<usize> {
        self.groups.iter().flatten().copied().collect()
    }

    /// Whether `yes` holds a majority of every group.
    pub fn reached(&self, yes: &BTreeSet<usize>) -> bool {
        self.groups.iter().all(|group| group.iter().filter(|owner| yes.contains(owner)).count() > group.len() / 2)
    }

    /// Whether a majority of every group is still possible without `no`.
    pub fn possible(&self, no: &BTreeSet<usize>) -> bool {
        self.groups.iter().all(|group| group.iter().filter(|owner| !no.contains(owner)).count() > group.len() / 2)
    }
}

/// Whether a majority read whose newest record has version `newest` must go
/// through a Paxos round before answering: a replica reported a pending
/// proposal ([`Acceptor::pending`]) newer than that record. A conditional write
/// is answered once a majority accepted it, before its record is stored
/// everywhere, so such a proposal may be chosen; the round finishes it.
pub fn needs_round(newest: Option<u64>, mut pending: impl Iterator<Item = u64>) -> bool {
    pending.any(|version| Some(version) > newest)
}

/// What the proposer sends to an owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<V> {
    /// Promise this ballot and tell me your state.
    Prepare(Ballot),
    /// Accept this proposal.
    Accept(Proposal<V>),
    /// Accept this proposal, made without a prepare right after the proposer's
    /// own proposal at `after` was chosen (a fast round, [`Proposer::after`]);
    /// commit that one first if it is the proposal accepted here.
    AcceptAfter {
        /// The new proposal, at the ballot covering the chosen record's version.
        proposal: Proposal<V>,
        /// The ballot the chosen proposal was made at.
        after: Ballot,
    },
    /// Store this record; settle proposals up to the ballot.
    Commit(Proposal<V>),
}

/// An owner's answer, as the proposer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<V> {
    /// The answer to a prepare.
    Promise(Promise<V>),
    /// The answer to a proposal.
    Acceptance(Acceptance),
    /// The record of a commit is durable in the owner's store.
    Committed,
    /// No answer (down, timed out, or an error).
    Failed,
}

/// The change a conditional write makes, given the current record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<V> {
    /// Write this record (its version must be the one offered).
    Write(V),
    /// The precondition does not hold; nothing is written.
    Refuse,
}

/// How a conditional write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<V> {
    /// The record is chosen: a majority of each group accepted it (its commits
    /// go out in the background, [`Proposer::background`]), or an earlier
    /// round's proposal of this operation was found chosen.
    Written(V),
    /// The precondition failed against this current record (`None`: no record),
    /// which is in a majority of each group's stores.
    Refused(Option<V>),
    /// A higher ballot got in the way: retry at a ballot after this one.
    Contended(Ballot),
    /// Too many owners failed for a majority. `in_doubt` when a proposal of
    /// this operation may have been accepted (it may still take effect).
    Unavailable {
        /// Whether the write may still take effect.
        in_doubt: bool,
    },
}

/// What the proposer asks its driver to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<V> {
    /// Send each message to its owner and feed the replies back.
    Send(Vec<(usize, Message<V>)>),
    /// Wait for more replies.
    Wait,
    /// The round is over.
    Done(Outcome<V>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase<V> {
    Prepare,
    /// Re-proposing an accepted proposal an earlier round may have chosen.
    Finish(Proposal<V>),
    /// Committing the finished proposal.
    FinishCommit(Proposal<V>),
    /// Proposing this operation's record.
    Propose(Proposal<V>),
    /// Committing the current record to the promisers that lack it, then
    /// proposing this operation's record.
    Settle {
        current: Proposal<V>,
        next: Proposal<V>,
    },
    /// Making the refusal's current record a majority's before answering 412.
    Repair(Option<V>),
    Done,
}

/// One round of a conditional write, driven by replies.
#[derive(Debug, Clone)]
pub struct Proposer<V, F> {
    quorum: Quorum,
    ballot: Ballot,
    change: F,
    phase: Phase<V>,
    /// Owners asked in the current phase, and those that answered yes / no.
    asked: BTreeSet<usize>,
    yes: BTreeSet<usize>,
    no: BTreeSet<usize>,
    /// The owners that answered the prepare, with their state.
    promises: Vec<(usize, Option<Proposal<V>>, Option<V>)>,
    /// Versions the promisers recently stored.
    held: BTreeSet<u64>,
    /// The latest commit any promiser applied.
    last_commit: Option<Ballot>,
    /// The highest ballot a refusal named.
    outranked_by: Option<Ballot>,
    /// Every record this operation proposed, in any round.
    mine: Vec<V>,
    /// Whether a proposal of this operation was sent in any round.
    proposed: bool,
    /// For a fast round: the ballot of the chosen proposal it builds on.
    fast_after: Option<Ballot>,
    /// This operation's proposal once chosen, with its ballot.
    chosen: Option<Proposal<V>>,
    /// Messages to send without waiting for their answers (the commits of a
    /// proposal answered as soon as a majority accepted it).
    background: Vec<(usize, Message<V>)>,
}

impl<V: Versioned, F: FnMut(Option<&V>, u64) -> Change<V>> Proposer<V, F> {
    /// A round at `ballot` applying `change` (given the current record and the
    /// version the new record must carry) over `quorum`.
    pub fn new(quorum: Quorum, ballot: Ballot, change: F) -> Self {
        Self::round(quorum, ballot, change, Vec::new(), false)
    }

    /// A fast round: proposes `record` without a prepare, on top of this
    /// proposer's own proposal made at `after` that a majority accepted, with
    /// the record version `base` (the last write of the key it knows of; see
    /// [`Proposer::chosen`]). One round trip instead of two; when an owner knows
    /// of anything newer the round ends [`Outcome::Contended`] and the caller
    /// retries with an ordinary round ([`Proposer::retry`]).
    pub fn after(quorum: Quorum, after: Ballot, base: u64, record: V, change: F) -> Self {
        assert!(record.version() > base, "a fast proposal is newer than the record it builds on");
        let mut proposer = Self::round(quorum, Ballot::covering(base), change, vec![record], false);
        proposer.fast_after = Some(after);
        proposer
    }

    /// The same operation, again at a later `ballot` after contention or
    /// failures; it remembers what it proposed before.
    pub fn retry(self, ballot: Ballot) -> Self {
        assert!(ballot > self.ballot, "a retry needs a later ballot");
        Self::round(self.quorum, ballot, self.change, self.mine, self.proposed)
    }

    /// A round that has heard nothing yet, for an operation that proposed `mine`.
    fn round(quorum: Quorum, ballot: Ballot, change: F, mine: Vec<V>, proposed: bool) -> Self {
        Self {
            quorum,
            ballot,
            change,
            phase: Phase::Prepare,
            asked: BTreeSet::new(),
            yes: BTreeSet::new(),
            no: BTreeSet::new(),
            promises: Vec::new(),
            held: BTreeSet::new(),
            last_commit: None,
            outranked_by: None,
            mine,
            proposed,
            fast_after: None,
            chosen: None,
            background: Vec::new(),
        }
    }

    /// The ballot of this round.
    pub fn ballot(&self) -> Ballot {
        self.ballot
    }

    /// The versions this operation proposed in earlier rounds: a prepare needs to ask the owners
    /// only whether they stored one of these (`held` in their promises) to tell whether it was chosen.
    pub fn proposed_versions(&self) -> Vec<u64> {
        self.mine.iter().map(Versioned::version).collect()
    }

    /// The quorum this round needs.
    pub fn quorum(&self) -> &Quorum {
        &self.quorum
    }

    /// This operation's proposal, once a round ended [`Outcome::Written`] by
    /// choosing it (not when an earlier round's proposal was found chosen): the
    /// base of a later fast round ([`Proposer::after`]).
    pub fn chosen(&self) -> Option<&Proposal<V>> {
        self.chosen.as_ref()
    }

    /// Messages to send once the round is done, without waiting for answers:
    /// the commits of a proposal answered when a majority accepted it.
    pub fn background(&mut self) -> Vec<(usize, Message<V>)> {
        std::mem::take(&mut self.background)
    }

    /// The first messages: a prepare to every owner, or a fast round's proposal.
    pub fn start(&mut self) -> Step<V> {
        if let Some(after) = self.fast_after.take() {
            let proposal = Proposal { ballot: self.ballot, value: self.mine[0].clone() };
            self.proposed = true;
            self.phase = Phase::Propose(proposal.clone());
            return self.broadcast(|_| Message::AcceptAfter { proposal: proposal.clone(), after });
        }
        self.phase = Phase::Prepare;
        self.broadcast(Message::Prepare)
    }

    fn broadcast(&mut self, message: impl Fn(Ballot) -> Message<V>) -> Step<V> {
        self.yes.clear();
        self.no.clear();
        self.asked = self.quorum.members();
        Step::Send(self.asked.iter().map(|&owner| (owner, message(self.ballot))).collect())
    }

    fn finish(&mut self, outcome: Outcome<V>) -> Step<V> {
        self.phase = Phase::Done;
        Step::Done(outcome)
    }

    /// Feeds one owner's reply to the current phase. Replies to an earlier
    /// phase (a late or duplicated answer) must not be fed; the driver tags
    /// each request with the phase it belongs to and drops stale answers.
    pub fn on_reply(&mut self, owner: usize, reply: Reply<V>) -> Step<V> {
        if !self.asked.contains(&owner) || self.yes.contains(&owner) || self.no.contains(&owner) {
            return Step::Wait;
        }
        match (&self.phase, reply) {
            (Phase::Done, _) => Step::Wait,
            (Phase::Prepare, Reply::Promise(Promise::Promised { accepted, committed, last_commit, held })) => {
                self.yes.insert(owner);
                self.held.extend(held);
                self.last_commit = self.last_commit.max(last_commit);
                self.promises.push((owner, accepted, committed));
                if self.quorum.reached(&self.yes) { self.prepared() } else { Step::Wait }
            }
            (Phase::Finish(_) | Phase::Propose(_), Reply::Acceptance(Acceptance::Accepted)) => {
                self.yes.insert(owner);
                if !self.quorum.reached(&self.yes) {
                    return Step::Wait;
                }
                match self.phase.clone() {
                    Phase::Propose(proposal) => {
                        // Chosen: answer now, and commit in the background. A majority read that
                        // meets the proposal before its commit finishes it first (`needs_round`).
                        self.background = self
                            .quorum
                            .members()
                            .into_iter()
                            .map(|owner| (owner, Message::Commit(proposal.clone())))
                            .collect();
                        self.chosen = Some(proposal.clone());
                        self.finish(Outcome::Written(proposal.value))
                    }
                    Phase::Finish(proposal) => {
                        self.phase = Phase::FinishCommit(proposal.clone());
                        self.broadcast(|_| Message::Commit(proposal.clone()))
                    }
                    _ => unreachable!("only proposing phases count acceptances"),
                }
            }
            (Phase::FinishCommit(_) | Phase::Repair(_) | Phase::Settle { .. }, Reply::Committed) => {
                self.yes.insert(owner);
                if self.quorum.reached(&self.yes) { self.on_committed_quorum() } else { Step::Wait }
            }
            (_, reply) => {
                if let Reply::Promise(Promise::Refused { promised })
                | Reply::Acceptance(Acceptance::Refused { promised }) = reply
                {
                    self.outranked_by = self.outranked_by.max(Some(promised));
                }
                self.no.insert(owner);
                // Owners not asked in this phase will not answer either.
                let silent = self
                    .quorum
                    .members()
                    .into_iter()
                    .filter(|owner| !self.asked.contains(owner) && !self.yes.contains(owner));
                if self.quorum.possible(&self.no.iter().copied().chain(silent).collect()) {
                    return Step::Wait;
                }
                match self.outranked_by {
                    Some(ballot) => self.finish(Outcome::Contended(ballot)),
                    None => {
                        let in_doubt = self.proposed;
                        self.finish(Outcome::Unavailable { in_doubt })
                    }
                }
            }
        }
    }

    /// A majority of every group stored the record of a commit phase.
    fn on_committed_quorum(&mut self) -> Step<V> {
        match self.phase.clone() {
            Phase::Settle { next, .. } => self.propose(next),
            Phase::Repair(current) => self.finish(Outcome::Refused(current)),
            Phase::FinishCommit(proposal) if self.mine.contains(&proposal.value) => {
                self.chosen = Some(proposal.clone());
                self.finish(Outcome::Written(proposal.value))
            }
            // Another operation's write is settled; ours needs a later ballot.
            Phase::FinishCommit(proposal) => {
                self.finish(Outcome::Contended(Ballot::covering(proposal.value.version())))
            }
            _ => unreachable!("only commit phases count commits"),
        }
    }

    /// A majority of every group promised: settle an unfinished proposal, or
    /// evaluate the change against the current record.
    fn prepared(&mut self) -> Step<V> {
        let current = self
            .promises
            .iter()
            .filter_map(|(_, _, committed)| committed.as_ref())
            .max_by_key(|record| record.version())
            .cloned();
        let newest_version = current.as_ref().map(Versioned::version);
        let unfinished = self
            .promises
            .iter()
            .filter_map(|(_, accepted, _)| accepted.as_ref())
            .max_by_key(|proposal| proposal.ballot)
            .filter(|proposal| {
                Some(proposal.ballot) >= self.last_commit && Some(proposal.value.version()) > newest_version
            })
            .cloned();
        if let Some(unfinished) = unfinished {
            let proposal = Proposal { ballot: self.ballot, value: unfinished.value };
            self.phase = Phase::Finish(proposal.clone());
            return self.broadcast(|_| Message::Accept(proposal.clone()));
        }
        let chosen =
            self.mine.iter().find(|record| current.as_ref() == Some(*record) || self.held.contains(&record.version()));
        if let Some(record) = chosen.cloned() {
            // An earlier round of this operation was chosen (and maybe replaced since).
            return self.finish(Outcome::Written(record));
        }
        if newest_version.is_some_and(|version| version >= self.ballot.time) {
            return self.finish(Outcome::Contended(Ballot::covering(newest_version.unwrap_or_default())));
        }
        match (self.change)(current.as_ref(), self.ballot.time) {
            Change::Write(record) => {
                assert_eq!(record.version(), self.ballot.time, "a conditional write's version is its ballot's time");
                self.mine.push(record.clone());
                let next = Proposal { ballot: self.ballot, value: record };
                let lacking = self.lacking(current.as_ref());
                match current.filter(|_| !lacking.is_empty()) {
                    Some(current) => {
                        let current = Proposal { ballot: self.ballot, value: current };
                        self.phase = Phase::Settle { current: current.clone(), next };
                        self.commit_to(lacking, current)
                    }
                    None => self.propose(next),
                }
            }
            Change::Refuse => {
                let lacking = self.lacking(current.as_ref());
                let Some(record) = current.clone().filter(|_| !lacking.is_empty()) else {
                    return self.finish(Outcome::Refused(current));
                };
                self.phase = Phase::Repair(current);
                let proposal = Proposal { ballot: self.ballot, value: record };
                self.commit_to(lacking, proposal)
            }
        }
    }

    /// The promisers whose store does not hold `current`.
    fn lacking(&self, current: Option<&V>) -> Vec<usize> {
        self.promises
            .iter()
            .filter(|(_, _, committed)| committed.as_ref() != current)
            .map(|(owner, _, _)| *owner)
            .collect()
    }

    /// Commits `proposal`'s record to `lacking`; the promisers that hold it
    /// already count as committed.
    fn commit_to(&mut self, lacking: Vec<usize>, proposal: Proposal<V>) -> Step<V> {
        self.yes = self.promises.iter().map(|(owner, _, _)| *owner).filter(|owner| !lacking.contains(owner)).collect();
        self.no.clear();
        if self.quorum.reached(&self.yes) {
            return self.on_committed_quorum();
        }
        self.asked = lacking.iter().copied().collect();
        Step::Send(lacking.into_iter().map(|owner| (owner, Message::Commit(proposal.clone()))).collect())
    }

    /// Proposes this operation's record to every owner.
    fn propose(&mut self, proposal: Proposal<V>) -> Step<V> {
        self.proposed = true;
        self.phase = Phase::Propose(proposal.clone());
        self.broadcast(|_| Message::Accept(proposal.clone()))
    }
}

#[cfg(test)]
mod tests;
