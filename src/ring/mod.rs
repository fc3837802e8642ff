//! Placement: a consistent-hash ring of FNV-1a points, with virtual nodes.
//!
//! Each physical node owns `vnodes` points at `fnv1a64("{id}#{i}")`. A key's
//! preference list starts at the first point clockwise from `fnv1a64(key)` and
//! walks on, collecting distinct physical nodes: the first is the primary, the
//! next N-1 are its replicas, and the rest (in order) are the fallbacks used
//! when one of them is down.

use std::fmt;

/// A physical storage node as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    /// Stable identity used for placement, e.g. `node-1`.
    pub id: String,
    /// Base URL of its internal API, e.g. `http://127.0.0.1:8082`.
    pub url: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.id, self.url)
    }
}

impl NodeInfo {
    /// Parses `YDHT_NODES`: comma-separated `id=url` entries, or bare URLs
    /// (then the URL is also the id). Blank entries are skipped; duplicates refused.
    pub fn parse_list(text: &str) -> Result<Vec<NodeInfo>, NodeListError> {
        let mut nodes: Vec<NodeInfo> = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|entry| !entry.is_empty()) {
            let (id, url) = match entry.split_once('=') {
                Some((id, url)) => (id.trim().to_string(), url.trim().to_string()),
                None => (entry.to_string(), entry.to_string()),
            };
            if id.is_empty() || !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(NodeListError::Invalid(entry.to_string()));
            }
            let url = url.trim_end_matches('/').to_string();
            if nodes.iter().any(|node| node.id == id || node.url == url) {
                return Err(NodeListError::Twice(entry.to_string()));
            }
            nodes.push(NodeInfo { id, url });
        }
        if nodes.is_empty() {
            return Err(NodeListError::Empty);
        }
        Ok(nodes)
    }
}

/// Why a node list (`YDHT_NODES`, `--peers`) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeListError {
    /// An entry that is neither `id=url` nor a URL.
    #[error("invalid node entry {0:?}; expected id=http://host:port or http://host:port")]
    Invalid(String),
    /// The same id or URL twice.
    #[error("node {0:?} is listed twice")]
    Twice(String),
    /// Nothing listed.
    #[error("no storage nodes given; set YDHT_NODES to comma-separated node URLs")]
    Empty,
}

/// 64-bit FNV-1a.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(PRIME))
}

/// FNV-1a has weak avalanche on short, similar inputs (`node-1#0`, `node-1#1`),
/// which clusters virtual nodes; a final mix spreads them over the whole ring.
/// Keys and virtual nodes are placed at `point(bytes)`.
pub fn point(bytes: &[u8]) -> u64 {
    let mut x = fnv1a64(bytes);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// The ring: immutable once built; rebuild it to change membership.
#[derive(Debug, Clone)]
pub struct Ring {
    nodes: Vec<NodeInfo>,
    /// (position, index into `nodes`), sorted by position.
    points: Vec<(u64, usize)>,
    vnodes: usize,
}

impl Ring {
    /// Builds a ring with `vnodes` points per node (at least 1).
    pub fn new(nodes: Vec<NodeInfo>, vnodes: usize) -> Self {
        let vnodes = vnodes.max(1);
        let mut points: Vec<(u64, usize)> = nodes
            .iter()
            .enumerate()
            .flat_map(|(index, node)| (0..vnodes).map(move |v| (point(format!("{}#{v}", node.id).as_bytes()), index)))
            .collect();
        points.sort_unstable();
        Self { nodes, points, vnodes }
    }

    /// The physical nodes, in the order they were given.
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    /// Virtual nodes per physical node.
    pub fn vnodes(&self) -> usize {
        self.vnodes
    }

    /// Every physical node in preference order for `key`: primary first, then
    /// replicas, then fallbacks. Take the first N for the key's owners.
    pub fn preference_list(&self, key: &[u8]) -> Vec<&NodeInfo> {
        if self.points.is_empty() {
            return Vec::new();
        }
        self.arc_preference(self.arc_of(key))
    }

    /// Number of arcs: one per point (`nodes × vnodes`). Every key of one arc
    /// has the same preference list, so an arc is the unit anti-entropy compares.
    pub fn arc_count(&self) -> usize {
        self.points.len()
    }

    /// The arc `key` falls in: the index of the first point clockwise from its
    /// position (0 on an empty ring).
    pub fn arc_of(&self, key: &[u8]) -> usize {
        if self.points.is_empty() {
            return 0;
        }
        let position = point(key);
        self.points.partition_point(|(at, _)| *at < position) % self.points.len()
    }

    /// The arc holding ring position `position` (see [`point`]): the index of the first point at or after it.
    pub fn arc_at(&self, position: u64) -> usize {
        if self.points.is_empty() {
            return 0;
        }
        self.points.partition_point(|(point, _)| *point < position) % self.points.len()
    }

    /// Every point's position, ascending (arc `i` ends at the `i`-th).
    pub fn positions(&self) -> impl Iterator<Item = u64> + '_ {
        self.points.iter().map(|(position, _)| *position)
    }

    /// The preference list shared by every key of `arc` (see [`Ring::arc_of`]).
    pub fn arc_preference(&self, arc: usize) -> Vec<&NodeInfo> {
        let mut order = Vec::with_capacity(self.nodes.len());
        if self.points.is_empty() {
            return order;
        }
        let mut seen = vec![false; self.nodes.len()];
        for offset in 0..self.points.len() {
            let (_, index) = self.points[(arc + offset) % self.points.len()];
            if !seen[index] {
                seen[index] = true;
                order.push(&self.nodes[index]);
                if order.len() == self.nodes.len() {
                    break;
                }
            }
        }
        order
    }

    /// The key's N owners (fewer if the ring has fewer nodes).
    pub fn owners(&self, key: &[u8], replicas: usize) -> Vec<&NodeInfo> {
        let mut list = self.preference_list(key);
        list.truncate(replicas);
        list
    }

    /// Each node's share of the hash space as primary owner (sums to 1).
    pub fn shares(&self) -> Vec<(&NodeInfo, f64)> {
        let mut owned = vec![0u128; self.nodes.len()];
        for (i, (position, _)) in self.points.iter().enumerate() {
            // The arc (previous point, this point] belongs to the node at the next point clockwise.
            let previous = if i == 0 { self.points[self.points.len() - 1].0 } else { self.points[i - 1].0 };
            let arc = position.wrapping_sub(previous);
            let arc = if self.points.len() == 1 { u64::MAX } else { arc };
            owned[self.points[i].1] += u128::from(arc);
        }
        let total: u128 = owned.iter().sum::<u128>().max(1);
        self.nodes.iter().zip(owned).map(|(node, arc)| (node, arc as f64 / total as f64)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn nodes(count: usize) -> Vec<NodeInfo> {
        (1..=count)
            .map(|i| NodeInfo { id: format!("node-{i}"), url: format!("http://127.0.0.1:{}", 8081 + i) })
            .collect()
    }

    #[test]
    fn fnv1a_matches_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn owners_are_distinct_and_stable() {
        let ring = Ring::new(nodes(5), 150);
        for i in 0..1000 {
            let key = format!("user:{i}");
            let owners = ring.owners(key.as_bytes(), 3);
            assert_eq!(owners.len(), 3);
            assert!(owners[0] != owners[1] && owners[1] != owners[2] && owners[0] != owners[2]);
            let again = Ring::new(nodes(5), 150);
            assert_eq!(owners, again.owners(key.as_bytes(), 3));
        }
    }

    #[test]
    fn preference_list_covers_every_node_once() {
        let ring = Ring::new(nodes(4), 150);
        let list = ring.preference_list(b"k");
        assert_eq!(list.len(), 4);
        let mut ids: Vec<_> = list.iter().map(|node| node.id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 4);
    }

    #[test]
    fn load_is_balanced_with_150_vnodes() {
        let ring = Ring::new(nodes(3), 150);
        let mut counts: HashMap<String, usize> = HashMap::new();
        for i in 0..30_000 {
            *counts.entry(ring.owners(format!("key-{i}").as_bytes(), 1)[0].id.clone()).or_default() += 1;
        }
        for (id, count) in &counts {
            assert!((7_000..13_000).contains(count), "{id} got {count} of 30000 keys");
        }
        let shares = ring.shares();
        assert!((shares.iter().map(|(_, share)| share).sum::<f64>() - 1.0).abs() < 1e-9);
        for (node, share) in shares {
            assert!((0.23..0.43).contains(&share), "{} owns {share}", node.id);
        }
    }

    #[test]
    fn adding_a_node_moves_only_its_share() {
        let before = Ring::new(nodes(3), 150);
        let after = Ring::new(nodes(4), 150);
        let moved = (0..10_000)
            .filter(|i| {
                let key = format!("k{i}");
                before.owners(key.as_bytes(), 1)[0] != after.owners(key.as_bytes(), 1)[0]
            })
            .count();
        assert!((1_500..3_500).contains(&moved), "{moved} of 10000 keys moved");
    }

    #[test]
    fn parses_node_lists() {
        let parsed = NodeInfo::parse_list("node-1=http://a:1/, http://b:2").unwrap();
        assert_eq!(parsed[0], NodeInfo { id: "node-1".into(), url: "http://a:1".into() });
        assert_eq!(parsed[1], NodeInfo { id: "http://b:2".into(), url: "http://b:2".into() });
        assert!(NodeInfo::parse_list("").is_err());
        assert!(NodeInfo::parse_list("x=ftp://a").is_err());
        assert!(NodeInfo::parse_list("http://a:1,http://a:1").is_err());
    }

    #[test]
    fn tiny_rings_work() {
        assert!(Ring::new(vec![], 150).preference_list(b"k").is_empty());
        let one = Ring::new(nodes(1), 1);
        assert_eq!(one.owners(b"k", 3).len(), 1);
        assert!((one.shares()[0].1 - 1.0).abs() < 1e-9);
    }
}
