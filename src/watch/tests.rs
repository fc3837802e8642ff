//! The merge under random replication, arrival orders and reconnects: across every resumed
//! session, each key's events are delivered in strictly increasing order (nothing twice, never
//! backwards), and once the feeds are read to the end each key's last event is its newest change.

use std::collections::BTreeMap;

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use super::*;

fn entry(seq: u64, key: &str, version: u64, kind: Kind) -> Entry<()> {
    Entry { seq, key: key.to_string(), version, kind, meta: () }
}

#[test]
fn cursors_round_trip_and_refuse_anything_else() {
    let mut cursor = Cursor::default();
    assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor.clone()));
    cursor.set("node-1", 7);
    cursor.set("node-2", u64::MAX);
    let text = cursor.encode();
    assert!(text.starts_with("w1."), "{text}");
    assert_eq!(Cursor::decode(&text), Ok(cursor.clone()));
    assert_eq!(Cursor::decode(&format!(" {text}\n")), Ok(cursor));
    for bad in ["", "w1", "w2.AAAA", "w1.!!!", "w1.Bm5vZGUtMQ", &text[..text.len() - 2], "12345"] {
        assert_eq!(Cursor::decode(bad), Err(CursorError::Malformed), "{bad:?}");
    }
}

#[test]
fn each_change_is_delivered_once_whichever_replica_reports_it_first() {
    let mut merge = Merge::new(Cursor::default(), 100);
    let first = merge.accept("b", entry(4, "k", 10, Kind::Put)).expect("news");
    assert_eq!(first.cursor.position("b"), Some(4));
    assert_eq!(merge.accept("a", entry(1, "k", 10, Kind::Put)), None, "the same change from another replica");
    assert_eq!(merge.accept("a", entry(1, "k", 10, Kind::Put)), None, "an entry consumed already");
    assert!(merge.accept("a", entry(2, "k", 10, Kind::Expire)).is_some(), "its expiry follows the value");
    assert_eq!(merge.accept("c", entry(9, "k", 10, Kind::Put)), None, "older than the expiry");
    assert!(merge.accept("c", entry(10, "k", 12, Kind::Delete)).is_some());
    assert_eq!(merge.accept("b", entry(5, "k", 11, Kind::Put)), None, "a late, older version is skipped");
    assert_eq!(merge.cursor().position("b"), Some(5), "skipped entries still move the cursor");
}

#[test]
fn a_resumed_merge_skips_what_the_look_back_shows_was_consumed() {
    let mut cursor = Cursor::default();
    cursor.set("a", 3);
    cursor.set("b", 1);
    let mut merge = Merge::new(cursor, 100);
    merge.seed("a", &[entry(2, "x", 5, Kind::Put), entry(3, "y", 6, Kind::Put), entry(4, "z", 7, Kind::Put)]);
    assert_eq!(merge.accept("b", entry(2, "x", 5, Kind::Put)), None, "x was consumed from a");
    assert!(merge.accept("a", entry(4, "z", 7, Kind::Put)).is_some(), "z was after the cursor");
    assert!(merge.accept("b", entry(3, "w", 1, Kind::Put)).is_some());
    // A feed that dropped what the cursor still needs is a gap; one that kept it is not.
    assert!(merge.gap("a", 10));
    assert!(!merge.gap("a", 5), "position 5 follows the consumed 4");
    assert!(!merge.gap("new-node", 100), "a node the cursor does not name starts at its beginning");
}

#[test]
fn memory_is_bounded_and_forgets_the_least_recently_touched_keys() {
    let mut merge = Merge::new(Cursor::default(), 4);
    for (seq, key) in ["a", "b", "c", "d"].into_iter().enumerate() {
        assert!(merge.accept("n", entry(seq as u64 + 1, key, 1, Kind::Put)).is_some());
    }
    assert_eq!(merge.accept("m", entry(1, "d", 1, Kind::Put)), None, "touch d");
    assert!(merge.accept("n", entry(5, "e", 1, Kind::Put)).is_some());
    assert!(merge.seen.len() <= 4);
    assert!(merge.seen.contains_key("d") && merge.seen.contains_key("e"));
}

/// One replicated history: each node's feed, built by applying changes that reach random
/// replicas in a random order (a node logs only what is newer than what it holds).
fn feeds(rng: &mut StdRng, keys: usize, nodes: usize, changes: usize) -> Vec<Vec<Entry<()>>> {
    let mut version = 0;
    let mut arrivals = Vec::new();
    for _ in 0..changes {
        version += 1;
        let key = format!("k{}", rng.random_range(0..keys));
        let kind = if rng.random_bool(0.25) { Kind::Delete } else { Kind::Put };
        let mut replicas: Vec<usize> = (0..nodes).filter(|_| rng.random_bool(0.6)).collect();
        if replicas.is_empty() {
            replicas.push(rng.random_range(0..nodes));
        }
        for node in replicas {
            arrivals.push((node, key.clone(), version, kind));
            if kind == Kind::Put && rng.random_bool(0.2) {
                arrivals.push((node, key.clone(), version, Kind::Expire));
            }
        }
    }
    // Replication lag: each arrival moves a random distance later (an expiry after its value).
    let mut scheduled: Vec<(usize, usize)> =
        arrivals.iter().enumerate().map(|(index, _)| (index + rng.random_range(0..40), index)).collect();
    scheduled.sort();
    let mut held: Vec<BTreeMap<String, (u64, bool)>> = vec![BTreeMap::new(); nodes];
    let mut feeds: Vec<Vec<Entry<()>>> = vec![Vec::new(); nodes];
    for (_, index) in scheduled {
        let (node, key, version, kind) = arrivals[index].clone();
        let order = (version, kind == Kind::Expire);
        let current = held[node].get(&key).copied();
        let applies = match kind {
            // A node expires only the value it holds.
            Kind::Expire => current == Some((version, false)),
            _ => current.is_none_or(|current| current < order),
        };
        if applies {
            held[node].insert(key.clone(), order);
            let seq = feeds[node].len() as u64 + 1;
            feeds[node].push(Entry { seq, key, version, kind, meta: () });
        }
    }
    feeds
}

/// Reads `feeds` in a random interleaving, reconnecting at random from the last event's cursor
/// (with the look-back when `look_back`); checks every key's events only ever move forward and
/// end at its newest change.
fn watch(seed: u64, keys: usize, nodes: usize, changes: usize, look_back: bool) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let feeds = feeds(&mut rng, keys, nodes, changes);
    let node_id = |node: usize| format!("node-{node}");
    let mut delivered: BTreeMap<String, Vec<(u64, bool)>> = BTreeMap::new();
    let mut resume_from = Cursor::default();
    let mut merge = Merge::new(resume_from.clone(), 1_000);
    let mut next: Vec<usize> = vec![0; nodes];
    loop {
        let open: Vec<usize> = (0..nodes).filter(|&node| next[node] < feeds[node].len()).collect();
        let Some(&node) = open.choose(&mut rng) else { break };
        if rng.random_bool(0.05) {
            // The client (or its gateway) goes away; it comes back with the last event's id.
            merge = Merge::new(resume_from.clone(), 1_000);
            for (index, feed) in feeds.iter().enumerate() {
                let consumed = resume_from.position(&node_id(index)).unwrap_or(0) as usize;
                if look_back {
                    merge.seed(&node_id(index), &feed[..consumed]);
                }
                next[index] = consumed;
            }
            continue;
        }
        let entry = feeds[node][next[node]].clone();
        next[node] += 1;
        if let Some(event) = merge.accept(&node_id(node), entry) {
            let history = delivered.entry(event.entry.key.clone()).or_default();
            let order = (event.entry.version, event.entry.kind == Kind::Expire);
            if history.last().is_some_and(|last| *last >= order) {
                return Err(format!("{} delivered {order:?} after {history:?}", event.entry.key));
            }
            history.push(order);
            resume_from = event.cursor;
        }
    }
    for feed in &feeds {
        for entry in feed {
            let newest = feeds
                .iter()
                .flatten()
                .filter(|other| other.key == entry.key)
                .map(|other| (other.version, other.kind == Kind::Expire))
                .max();
            let last = delivered.get(&entry.key).and_then(|history| history.last().copied());
            if last != newest {
                return Err(format!("{} ended at {last:?}, its newest change is {newest:?}", entry.key));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn merged_feeds_deliver_each_change_once_in_order_across_reconnects(
        seed in any::<u64>(),
        keys in 1usize..6,
        nodes in 1usize..5,
        changes in 1usize..120,
    ) {
        if let Err(violation) = watch(seed, keys, nodes, changes, true) {
            return Err(TestCaseError::fail(violation));
        }
    }
}

#[test]
fn without_the_look_back_a_resumed_watch_repeats_changes() {
    let caught = (0..500u64).find_map(|seed| watch(seed, 3, 3, 80, false).err());
    assert!(caught.is_some(), "resuming without reading back must deliver some change twice");
}
