//! Tombstone garbage collection: when a node may forget a delete.
//!
//! A tombstone keeps a deleted key's version so that an older copy of the key
//! (on a replica that was down, or restored) cannot bring it back. Purging it
//! after `--tombstone-grace` alone is not enough: an owner that was down
//! longer than the grace comes back with the old value and anti-entropy copies
//! it to the owners that forgot the delete. So, as ScyllaDB's repair-based
//! tombstone GC does, a node purges a tombstone only when both hold:
//!
//! 1. it is older than the grace (by its version's HLC time), and
//! 2. every peer of the current ring is known to hold it (or a newer version
//!    of the key): this node *completed* an anti-entropy exchange with the
//!    peer that *started after the tombstone arrived here*.
//!
//! Why a completed exchange is enough ([`super::antientropy`]): it compares
//! every arc both nodes own; equal arc hashes mean equal entries, and for the
//! arcs that differ every key this node holds newer is pushed (a tombstone past
//! the grace too, whenever the peer holds an older version of the key). An
//! exchange that ran out of budget or failed does not count. So every record
//! this node held when the exchange started is afterwards on the peer at an
//! equal or newer version, or the peer holds nothing for that key (see
//! [`tombstone_transferable`]).
//!
//! Arrival, not the version's time, is what counts: a delete can reach a node
//! long after it was issued (hints, retries, anti-entropy), after an exchange
//! that could not have carried it. Arrival is kept in the tombstone's slot on
//! the node-local monotonic clock [`local_millis`]; after a restart every
//! tombstone counts as arrived at recovery, which only delays purging.
//!
//! A peer that is down (or unreachable, or on another ring) blocks purging:
//! tombstones past the grace accumulate until it is back and synced; `/metrics`
//! shows how many (`tombstones_held_back`) and the oldest one's age. A member
//! removed from the ring is no longer a peer and no longer blocks. While a
//! membership change is in progress (no settled ring) nothing is purged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use crate::hlc;
use crate::sync::Lock;

/// Milliseconds on this process's monotonic clock, at least 1. Only compared
/// with other values of the same process (arrival of a tombstone against the
/// start of an exchange), so wall-clock steps cannot make a purge early.
pub fn local_millis() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Which tombstones past the grace the peers are known to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Horizon {
    /// No peer to wait for (anti-entropy off, or a ring of one node): the grace alone decides.
    Unneeded,
    /// Every peer holds the tombstones that arrived before this [`local_millis`] time.
    Before(u64),
}

/// What the sweeper does with one tombstone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Younger than the grace.
    Keep,
    /// Past the grace, but a peer is not known to hold it yet.
    HoldBack,
    /// Past the grace and held by every peer.
    Purge,
}

/// The fate of a tombstone at `version` that arrived at local time `arrived`, at
/// wall time `now` (Unix ms), with a grace of `grace` ms.
pub fn tombstone_fate(version: u64, arrived: u64, now: u64, grace: u64, horizon: Horizon) -> Fate {
    if hlc::millis_of(version).saturating_add(grace) > now {
        return Fate::Keep;
    }
    match horizon {
        Horizon::Unneeded => Fate::Purge,
        Horizon::Before(horizon) if arrived < horizon => Fate::Purge,
        Horizon::Before(_) => Fate::HoldBack,
    }
}

/// Whether anti-entropy sends a tombstone past the grace to a side that lacks its version:
/// only when that side holds an older version of the key (`other_holds_key`), which the
/// tombstone must replace.
///
/// Not to a side that holds nothing for the key. That side is either a node that already
/// purged the tombstone (sending it back would make the two nodes hand the tombstone to each
/// other for ever, each purging and receiving it again in turn) or one that never held the
/// key. Neither can lose the delete: a node holding nothing cannot bring the key back by
/// itself; it could only receive an older value later from a node Z that still holds one.
/// Every node that still holds the tombstone must, before purging it, complete an exchange
/// with Z started after the tombstone reached it, and that exchange pushes the tombstone to Z
/// (Z holds an older version). So Z receives the tombstone after handing the value on, and Z
/// itself cannot purge before completing an exchange with the receiver started after that,
/// which pushes the tombstone there too. A value can thus only travel ahead of a tombstone
/// that follows it, and the last holder of a tombstone never leaves an older value behind.
pub fn tombstone_transferable(other_holds_key: bool) -> bool {
    other_holds_key
}

#[derive(Debug, Default)]
struct Syncs {
    /// The peers of the settled ring; `None` before the first ring and during a membership change.
    peers: Option<Vec<String>>,
    /// Peer id → start ([`local_millis`]) of the latest exchange with it that completed.
    completed: HashMap<String, u64>,
}

/// Which peers this node completed an exchange with, and when it started; shared by the
/// anti-entropy task (writer) and the sweeper (reader). Cheap to clone. Starts paused:
/// nothing past the grace is purged before the first ring.
#[derive(Debug, Clone, Default)]
pub struct PeerSyncs(Arc<Mutex<Syncs>>);

impl PeerSyncs {
    fn lock(&self) -> std::sync::MutexGuard<'_, Syncs> {
        self.0.locked()
    }

    /// Follows a settled ring whose peers are `peers`. A new ring (`changed`) forgets every
    /// completed exchange: the arcs shared with each peer changed, so the old exchanges prove
    /// nothing about the new ones. Removed members stop blocking.
    pub fn set_peers(&self, peers: Vec<String>, changed: bool) {
        let mut syncs = self.lock();
        if changed {
            syncs.completed.clear();
        }
        syncs.completed.retain(|id, _| peers.contains(id));
        syncs.peers = Some(peers);
    }

    /// A membership change is in progress: purge nothing until the next settled ring.
    pub fn pause(&self) {
        self.lock().peers = None;
    }

    /// Records that an exchange with `peer` started at `started` ([`local_millis`]) completed.
    pub fn completed(&self, peer: &str, started: u64) {
        let mut syncs = self.lock();
        let known = syncs.peers.as_ref().is_some_and(|peers| peers.iter().any(|id| id == peer));
        if known {
            let latest = syncs.completed.entry(peer.to_string()).or_insert(started);
            *latest = (*latest).max(started);
        }
    }

    /// The tombstones every peer is known to hold.
    pub fn horizon(&self) -> Horizon {
        let syncs = self.lock();
        match &syncs.peers {
            None => Horizon::Before(0),
            Some(peers) if peers.is_empty() => Horizon::Unneeded,
            Some(peers) => {
                Horizon::Before(peers.iter().map(|id| syncs.completed.get(id).copied().unwrap_or(0)).min().unwrap_or(0))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: u64 = 1_000;

    fn version_at(millis: u64) -> u64 {
        hlc::from_millis(millis) + 3
    }

    #[test]
    fn a_tombstone_is_purged_only_past_the_grace_and_once_every_peer_synced_after_its_arrival() {
        let version = version_at(10_000);
        // Within the grace: kept whatever the peers did.
        assert_eq!(tombstone_fate(version, 5, 10_999, GRACE, Horizon::Unneeded), Fate::Keep);
        assert_eq!(tombstone_fate(version, 5, 10_999, GRACE, Horizon::Before(u64::MAX)), Fate::Keep);
        // Past the grace: with no peer to wait for, purged.
        assert_eq!(tombstone_fate(version, 5, 11_000, GRACE, Horizon::Unneeded), Fate::Purge);
        // With peers: only when every peer's last completed exchange started after the arrival.
        assert_eq!(tombstone_fate(version, 5, 11_000, GRACE, Horizon::Before(6)), Fate::Purge);
        assert_eq!(tombstone_fate(version, 5, 11_000, GRACE, Horizon::Before(5)), Fate::HoldBack);
        assert_eq!(tombstone_fate(version, 5, 99_000, GRACE, Horizon::Before(0)), Fate::HoldBack);
    }

    #[test]
    fn the_horizon_waits_for_every_current_peer() {
        let syncs = PeerSyncs::default();
        // Before the first ring: nothing is confirmed.
        assert_eq!(syncs.horizon(), Horizon::Before(0));
        syncs.set_peers(vec!["b".into(), "c".into()], true);
        assert_eq!(syncs.horizon(), Horizon::Before(0));
        syncs.completed("b", 50);
        // c (down) blocks.
        assert_eq!(syncs.horizon(), Horizon::Before(0));
        syncs.completed("c", 40);
        assert_eq!(syncs.horizon(), Horizon::Before(40));
        syncs.completed("c", 70);
        syncs.completed("c", 60);
        assert_eq!(syncs.horizon(), Horizon::Before(50), "the latest exchange counts, and the slowest peer");
        // A member no longer in the ring does not count.
        syncs.completed("gone", 1);
        assert_eq!(syncs.horizon(), Horizon::Before(50));
        // A membership change pauses purging; the same ring again resumes where it was.
        syncs.pause();
        assert_eq!(syncs.horizon(), Horizon::Before(0));
        syncs.set_peers(vec!["b".into(), "c".into()], false);
        assert_eq!(syncs.horizon(), Horizon::Before(50));
        // c force-removed: a new ring where only b is a peer; exchanges must be redone on it.
        syncs.set_peers(vec!["b".into()], true);
        assert_eq!(syncs.horizon(), Horizon::Before(0));
        syncs.completed("b", 90);
        assert_eq!(syncs.horizon(), Horizon::Before(90));
        // Alone on the ring: the grace alone decides.
        syncs.set_peers(Vec::new(), true);
        assert_eq!(syncs.horizon(), Horizon::Unneeded);
    }

    #[test]
    fn a_tombstone_past_the_grace_only_replaces_an_older_version() {
        assert!(tombstone_transferable(true));
        assert!(!tombstone_transferable(false));
    }

    #[test]
    fn the_local_clock_is_monotonic_and_positive() {
        let first = local_millis();
        assert!(first >= 1);
        assert!(local_millis() >= first);
    }
}
