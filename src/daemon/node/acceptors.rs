//! The node's Paxos acceptor states ([`crate::paxos::Acceptor`]), one per key
//! that took part in a conditional write. They live in the store's state,
//! under its lock, next to the records they refer to; each change is logged in
//! the WAL ([`crate::wal::Entry::Acceptor`]) before the node answers, and
//! replay joins the logged states ([`Acceptor::merge`]).
//!
//! A settled state (one that says nothing the key's record does not) is
//! dropped once it has not been used for [`IDLE_MS`] and there are more than
//! [`MAX_ACCEPTORS`] states, so the map is bounded by the keys under active
//! conditional writes. Dropping it forgets the key's `held` versions, which only
//! a round retrying within those seconds needs.

use std::collections::HashMap;

use crate::paxos::Acceptor;
use crate::wal::{AcceptorEntry, Record};
use crate::wire::paxos::decode_state;

/// States kept before settled, idle ones are dropped.
pub const MAX_ACCEPTORS: usize = 65_536;
/// How long a settled state is kept after its last use, in milliseconds.
pub const IDLE_MS: u64 = 60_000;

/// One key's state and when it was last used (Unix ms).
#[derive(Debug, Default)]
struct Tracked {
    acceptor: Acceptor<Record>,
    touched: u64,
}

/// Every key's acceptor state.
#[derive(Debug, Default)]
pub struct Acceptors {
    map: HashMap<String, Tracked>,
    /// Insertions since the last pruning pass.
    inserted: usize,
}

impl Acceptors {
    /// The state of `key`, created when it has none (knowing that the store holds `stored`, the
    /// version of the key's current record); `now` marks it used.
    pub fn entry(&mut self, key: &str, now: u64, stored: Option<u64>) -> &mut Acceptor<Record> {
        if !self.map.contains_key(key) {
            self.inserted += 1;
            let mut tracked = Tracked::default();
            tracked.acceptor.held.extend(stored);
            self.map.insert(key.to_string(), tracked);
        }
        let tracked = self.map.get_mut(key).expect("just ensured");
        tracked.touched = now;
        &mut tracked.acceptor
    }

    /// Whether pruning is due: many states, and many new ones since the last pass.
    pub fn wants_pruning(&self) -> bool {
        self.map.len() > MAX_ACCEPTORS && self.inserted > MAX_ACCEPTORS / 16
    }

    /// Drops settled states idle since before `now - IDLE_MS`; `record` gives a
    /// key's current record.
    pub fn prune<'a>(&mut self, now: u64, record: impl Fn(&str) -> Option<Record> + 'a) {
        self.inserted = 0;
        self.map.retain(|key, tracked| {
            tracked.touched + IDLE_MS > now || !tracked.acceptor.is_settled(record(key).as_ref())
        });
    }

    /// The version of a proposal accepted for `key` and not seen committed that is newer than the
    /// store's record, at `stored` ([`Acceptor::pending`]).
    pub fn pending(&self, key: &str, stored: Option<u64>) -> Option<u64> {
        if self.map.is_empty() {
            return None;
        }
        let accepted = self.map.get(key)?.acceptor.accepted.as_ref()?;
        Some(accepted.value.version).filter(|version| Some(*version) > stored)
    }

    /// Notes that the store now holds `version` of `key`.
    pub fn stored(&mut self, key: &str, version: u64) {
        if let Some(tracked) = self.map.get_mut(key) {
            tracked.acceptor.stored(version);
        }
    }

    /// Folds a logged state in during recovery.
    pub fn replay(&mut self, entry: AcceptorEntry) {
        match decode_state(&entry.state) {
            Ok(logged) => self.map.entry(entry.key).or_default().acceptor.merge(logged),
            Err(error) => tracing::error!(key = %entry.key, %error, "skipping an unreadable acceptor state in the WAL"),
        }
    }

    /// The states a snapshot must keep: those not settled by their record, and those used in the
    /// last [`IDLE_MS`] (a round retrying now may need their stored versions).
    pub fn to_keep(&self, now: u64, record: impl Fn(&str) -> Option<Record>) -> Vec<(String, Acceptor<Record>)> {
        self.map
            .iter()
            .filter(|(key, tracked)| {
                tracked.touched + IDLE_MS > now || !tracked.acceptor.is_settled(record(key).as_ref())
            })
            .map(|(key, tracked)| (key.clone(), tracked.acceptor.clone()))
            .collect()
    }

    /// How many keys have a state.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key has a state.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
