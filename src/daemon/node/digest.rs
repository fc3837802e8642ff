//! The anti-entropy digest: one 64-bit hash per arc of the ring.
//!
//! Every key of one arc (the stretch of the hash space before one virtual
//! node's point) has the same preference list, so the keys two nodes should
//! both hold are exactly the keys of the arcs both own. A bucket is the XOR of
//! [`entry_hash`] over the node's entries of that arc, tombstones included.
//! XOR makes it incremental: a write toggles the old entry's hash out and the
//! new one's in, so the store keeps the digest current on every apply and a
//! `GET /digest` costs O(arcs), never a scan.

use crate::ring::{Ring, fnv1a64};

/// A 64-bit hash of one entry: equal entries (key, version, tombstone) hash equally on every node.
pub fn entry_hash(key: &str, version: u64, tombstone: bool) -> u64 {
    let mixed = mix(fnv1a64(key.as_bytes()) ^ mix(version));
    mix(mixed ^ u64::from(tombstone))
}

/// The splitmix64 finaliser: spreads every input bit over the whole output.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Identifies a ring layout: member ids in order, vnodes and replicas.
/// Two nodes only compare digests when their fingerprints match.
pub fn fingerprint(ring: &Ring, replicas: usize) -> u64 {
    let ids: Vec<&str> = ring.nodes().iter().map(|node| node.id.as_str()).collect();
    fnv1a64(format!("{}|{}|{replicas}", ids.join(","), ring.vnodes()).as_bytes())
}

/// Per-arc hashes of a node's entries.
#[derive(Debug, Clone)]
pub struct Digest {
    ring: Ring,
    buckets: Vec<u64>,
}

impl Digest {
    /// An empty digest over the arcs of `ring`.
    pub fn new(ring: Ring) -> Self {
        let buckets = vec![0; ring.arc_count().max(1)];
        Self { ring, buckets }
    }

    /// The bucket (arc) of `key`.
    pub fn bucket_of(&self, key: &str) -> usize {
        self.ring.arc_of(key.as_bytes())
    }

    /// Adds an entry, or removes it when it was added before (XOR).
    pub fn toggle(&mut self, key: &str, version: u64, tombstone: bool) {
        let bucket = self.bucket_of(key);
        self.buckets[bucket] ^= entry_hash(key, version, tombstone);
    }

    /// The current hash of every bucket.
    pub fn buckets(&self) -> &[u64] {
        &self.buckets
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::NodeInfo;

    fn ring() -> Ring {
        let nodes = (1..=3).map(|i| NodeInfo { id: format!("node-{i}"), url: format!("http://n{i}") }).collect();
        Ring::new(nodes, 20)
    }

    #[test]
    fn toggling_is_order_independent_and_reversible() {
        let mut first = Digest::new(ring());
        let mut second = Digest::new(ring());
        assert_eq!(first.buckets().len(), 60);
        for n in 0..100u64 {
            first.toggle(&format!("k{n}"), n, n % 3 == 0);
        }
        for n in (0..100u64).rev() {
            second.toggle(&format!("k{n}"), n, n % 3 == 0);
        }
        assert_eq!(first.buckets(), second.buckets());
        // A newer version of one key changes exactly its bucket.
        second.toggle("k7", 7, false);
        second.toggle("k7", 8, false);
        let changed: Vec<usize> = (0..60).filter(|&b| first.buckets()[b] != second.buckets()[b]).collect();
        assert_eq!(changed, vec![first.bucket_of("k7")]);
        second.toggle("k7", 8, false);
        second.toggle("k7", 7, false);
        assert_eq!(first.buckets(), second.buckets());
    }

    #[test]
    fn the_hash_covers_version_and_tombstone() {
        assert_ne!(entry_hash("k", 1, false), entry_hash("k", 2, false));
        assert_ne!(entry_hash("k", 1, false), entry_hash("k", 1, true));
        assert_ne!(entry_hash("k", 1, false), entry_hash("j", 1, false));
        assert_ne!(fingerprint(&ring(), 3), fingerprint(&ring(), 2));
    }
}
