//! Where a key lives and which nodes are up: the ring (two rings while the
//! membership changes, see [`crate::membership`]) plus each node's health,
//! kept fresh by a background prober and by the outcome of real requests.
//!
//! A [`Placement`] is immutable apart from health; a membership change builds a
//! new one and swaps it into the [`Topology`], which every request reads once.
//! Health is kept across swaps: nodes in both share their [`NodeState`].

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::nodes::NodeClient;
use crate::membership::{Layout, MemberState, Membership};
use crate::proto::ClusterNode;
use crate::ring::{NodeInfo, Ring};
use crate::shutdown::Shutdown;
use crate::sync::{Lock, ReadWrite};

/// How often every node is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// What the gateway knows about one node.
#[derive(Debug)]
pub struct NodeState {
    /// Its identity and URL.
    pub info: NodeInfo,
    healthy: AtomicBool,
    since: Mutex<DateTime<Utc>>,
    key_count: Mutex<Option<u64>>,
    errors: AtomicU64,
    /// The node's clock minus the gateway's, in ms, from the last probe ([`NO_OFFSET`] until one measured it).
    clock_offset_ms: AtomicI64,
}

/// `clock_offset_ms` of a node whose clock has not been measured.
const NO_OFFSET: i64 = i64::MIN;

impl NodeState {
    fn new(info: NodeInfo) -> Self {
        Self {
            info,
            healthy: AtomicBool::new(true),
            since: Mutex::new(Utc::now()),
            key_count: Mutex::new(None),
            errors: AtomicU64::new(0),
            clock_offset_ms: AtomicI64::new(NO_OFFSET),
        }
    }
}

/// The rings and the health of their nodes; shared by every request.
#[derive(Debug)]
pub struct Placement {
    layout: Layout,
    /// Every node of either ring: the new ring's first, in its order.
    nodes: Vec<Arc<NodeState>>,
    /// Member states by id (empty for a static `YDHT_NODES` ring).
    states: Vec<(String, MemberState)>,
}

impl Placement {
    /// A settled ring over `nodes`; every node starts as healthy until a probe or request says otherwise.
    pub fn new(nodes: Vec<NodeInfo>, vnodes: usize, replicas: usize) -> Self {
        Self::from_layout(Layout::settled(nodes, vnodes, replicas), Vec::new(), None)
    }

    /// The placement of `membership`, keeping the health of nodes `previous` knew.
    pub fn of_membership(
        membership: &Membership,
        vnodes: usize,
        replicas: usize,
        previous: Option<&Placement>,
    ) -> Self {
        let states = membership.members.iter().map(|member| (member.id.clone(), member.state)).collect();
        Self::from_layout(Layout::new(membership, vnodes, replicas), states, previous)
    }

    fn from_layout(layout: Layout, states: Vec<(String, MemberState)>, previous: Option<&Placement>) -> Self {
        let mut nodes: Vec<Arc<NodeState>> = Vec::new();
        for info in layout.new.nodes().iter().chain(layout.old.nodes()) {
            if nodes.iter().any(|node| node.info.id == info.id) {
                continue;
            }
            let known = previous.and_then(|previous| previous.nodes.iter().find(|node| node.info == *info));
            nodes.push(known.cloned().unwrap_or_else(|| Arc::new(NodeState::new(info.clone()))));
        }
        Self { layout, nodes, states }
    }

    /// N: copies kept of each key (at most the number of nodes).
    pub fn replicas(&self) -> usize {
        self.layout.replicas_in(&self.layout.new)
    }

    /// The (new) ring.
    pub fn ring(&self) -> &Ring {
        &self.layout.new
    }

    /// Both rings and the membership version.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn state(&self, id: &str) -> Option<&NodeState> {
        self.nodes.iter().find(|node| node.info.id == id).map(|node| &**node)
    }

    /// Whether the node is currently considered up.
    pub fn is_healthy(&self, id: &str) -> bool {
        self.state(id).is_some_and(|node| node.healthy.load(Ordering::Acquire))
    }

    /// Records the outcome of a probe or request.
    pub fn set_health(&self, id: &str, healthy: bool) {
        let Some(node) = self.state(id) else { return };
        if node.healthy.swap(healthy, Ordering::AcqRel) != healthy {
            *node.since.locked() = Utc::now();
            if healthy {
                tracing::info!(node = %node.info, "node is back up");
            } else {
                tracing::warn!(node = %node.info, "node is down; skipping it");
            }
        }
    }

    /// Counts a failed request and marks the node down.
    pub fn record_failure(&self, id: &str) {
        if let Some(node) = self.state(id) {
            node.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.set_health(id, false);
    }

    /// The key's owners (primary first), N of them, in the new ring.
    pub fn owners(&self, key: &str) -> Vec<NodeInfo> {
        self.layout.new_owners(key)
    }

    /// Every node a write of `key` goes to: its owners, then (during a membership change)
    /// its owners in the old ring that are not owners in the new one.
    pub fn write_targets(&self, key: &str) -> Vec<NodeInfo> {
        let mut targets = self.owners(key);
        targets.extend(self.layout.old_only_owners(key));
        targets
    }

    /// The key's owners (primary first), healthy ones before down ones: the nodes a strong
    /// read or write must reach a majority of. Other nodes of the preference list never count.
    pub fn owners_healthy_first(&self, key: &str) -> Vec<NodeInfo> {
        self.healthy_before_down(self.owners(key))
    }

    /// The key's owners in the old ring (during a membership change, conditional writes need a
    /// majority of them too).
    pub fn old_owners(&self, key: &str) -> Vec<NodeInfo> {
        self.layout.old_owners(key)
    }

    /// The key's owners in the old ring, healthy ones first (during a membership change strong
    /// reads also read a majority of them).
    pub fn old_owners_healthy_first(&self, key: &str) -> Vec<NodeInfo> {
        self.healthy_before_down(self.layout.old_owners(key))
    }

    fn healthy_before_down(&self, nodes: Vec<NodeInfo>) -> Vec<NodeInfo> {
        let (up, down): (Vec<NodeInfo>, Vec<NodeInfo>) = nodes.into_iter().partition(|node| self.is_healthy(&node.id));
        up.into_iter().chain(down).collect()
    }

    /// How far the gateway's clock is behind the nodes' (positive: the nodes are ahead), in ms:
    /// the median of the last measured offsets, `None` before any probe measured one.
    pub fn clock_offset_ms(&self) -> Option<i64> {
        let mut offsets: Vec<i64> = self
            .nodes
            .iter()
            .map(|node| node.clock_offset_ms.load(Ordering::Relaxed))
            .filter(|offset| *offset != NO_OFFSET)
            .collect();
        offsets.sort_unstable();
        offsets.get(offsets.len() / 2).copied()
    }

    /// Owners in the old ring that are not owners in the new one (empty when settled).
    pub fn old_only_owners(&self, key: &str) -> Vec<NodeInfo> {
        self.layout.old_only_owners(key)
    }

    /// The preference list (owners, then old-ring owners during a membership change, then the
    /// fallbacks) with healthy nodes first (each group in that order); down nodes stay at the
    /// end as a last resort.
    pub fn healthy_first(&self, key: &str) -> Vec<NodeInfo> {
        if !self.in_transition() {
            // Settled (every request but those during a membership change): the write targets are the
            // first N of the preference list, so the list is the preference list itself. Each node's
            // health is read once, and only the result is cloned.
            let mut list: Vec<(bool, &NodeInfo)> = self
                .layout
                .new
                .preference_list(key.as_bytes())
                .into_iter()
                .map(|node| (!self.is_healthy(&node.id), node))
                .collect();
            list.sort_by_key(|(down, _)| *down);
            return list.into_iter().map(|(_, node)| node.clone()).collect();
        }
        let mut list = self.write_targets(key);
        for node in self.layout.new.preference_list(key.as_bytes()) {
            if !list.iter().any(|listed| listed.id == node.id) {
                list.push(node.clone());
            }
        }
        let (up, down): (Vec<NodeInfo>, Vec<NodeInfo>) = list.into_iter().partition(|node| self.is_healthy(&node.id));
        up.into_iter().chain(down).collect()
    }

    /// Whether data is moving between two rings.
    pub fn in_transition(&self) -> bool {
        self.layout.in_transition()
    }

    /// The nodes to write for a strong write: each owner, or — if it is down — the next healthy
    /// node after the owners in the preference list, which keeps the write as a hint (hints never
    /// count towards a strong write's majority: see the coordinator). Returns
    /// `(target, owner_it_stands_in_for)`; the owner is `None` when the target is the owner itself.
    pub fn write_set(&self, key: &str) -> Vec<(NodeInfo, Option<NodeInfo>)> {
        let list = self.layout.new.preference_list(key.as_bytes());
        let (owners, rest) = list.split_at(self.replicas().min(list.len()));
        let mut substitutes = rest.iter().filter(|node| self.is_healthy(&node.id));
        owners
            .iter()
            .map(|owner| {
                if self.is_healthy(&owner.id) {
                    ((*owner).clone(), None)
                } else {
                    match substitutes.next() {
                        Some(substitute) => ((*substitute).clone(), Some((*owner).clone())),
                        None => ((*owner).clone(), None),
                    }
                }
            })
            .collect()
    }

    /// Every node of either ring, for listings and probes.
    pub fn all(&self) -> Vec<NodeInfo> {
        self.nodes.iter().map(|node| node.info.clone()).collect()
    }

    /// Failed requests per node id.
    pub fn errors(&self) -> Vec<(String, u64)> {
        self.nodes.iter().map(|node| (node.info.id.clone(), node.errors.load(Ordering::Relaxed))).collect()
    }

    /// The nodes of both rings as `GET /cluster` shows them (shares are in the new ring).
    pub fn members(&self) -> Vec<ClusterNode> {
        let shares = self.layout.new.shares();
        self.nodes
            .iter()
            .map(|node| ClusterNode {
                id: node.info.id.clone(),
                url: node.info.url.clone(),
                healthy: node.healthy.load(Ordering::Acquire),
                since: *node.since.locked(),
                share: shares.iter().find(|(info, _)| info.id == node.info.id).map_or(0.0, |(_, share)| *share),
                vnodes: self.layout.new.vnodes(),
                key_count: *node.key_count.locked(),
                state: self
                    .states
                    .iter()
                    .find(|(id, _)| *id == node.info.id)
                    .map_or(MemberState::Active, |(_, state)| *state)
                    .as_str()
                    .to_string(),
            })
            .collect()
    }
}

/// The current [`Placement`], swapped whole when the membership changes; cheap to clone.
#[derive(Debug, Clone)]
pub struct Topology(Arc<RwLock<Arc<Placement>>>);

impl Topology {
    /// Starts with `placement`.
    pub fn new(placement: Placement) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(placement))))
    }

    /// The placement now; a request uses one snapshot throughout.
    pub fn current(&self) -> Arc<Placement> {
        self.0.reading().clone()
    }

    /// Replaces the placement.
    pub fn swap(&self, placement: Placement) {
        *self.0.writing() = Arc::new(placement);
    }

    /// Probes every node of the current placement each [`PROBE_INTERVAL`] until shutdown.
    pub async fn probe_loop(self, client: NodeClient, shutdown: Shutdown) {
        loop {
            let placement = self.current();
            let probes = placement.nodes.iter().map(|node| {
                let client = client.clone();
                async move { (node, client.probe(&node.info.url).await) }
            });
            for (node, outcome) in futures_util::future::join_all(probes).await {
                match outcome {
                    Ok(probe) => {
                        *node.key_count.locked() = probe.key_count;
                        if let Some(offset) = probe.clock_offset_ms {
                            node.clock_offset_ms.store(offset, Ordering::Relaxed);
                        }
                        placement.set_health(&node.info.id, true);
                    }
                    Err(error) => {
                        tracing::debug!(%error, "health probe failed");
                        placement.set_health(&node.info.id, false);
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(PROBE_INTERVAL) => {}
                _ = shutdown.wait() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement() -> Placement {
        let nodes = (1..=5).map(|i| NodeInfo { id: format!("node-{i}"), url: format!("http://n{i}") }).collect();
        Placement::new(nodes, 150, 3)
    }

    #[test]
    fn a_down_owner_is_replaced_by_the_next_healthy_node() {
        let placement = placement();
        let list: Vec<NodeInfo> = placement.ring().preference_list(b"7/k").into_iter().cloned().collect();
        let all_up = placement.write_set("7/k");
        assert_eq!(all_up.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(), list[..3].to_vec());
        assert!(all_up.iter().all(|(_, standing_in)| standing_in.is_none()));

        placement.record_failure(&list[1].id);
        let set = placement.write_set("7/k");
        assert_eq!(set[0], (list[0].clone(), None));
        assert_eq!(set[1], (list[3].clone(), Some(list[1].clone())));
        assert_eq!(set[2], (list[2].clone(), None));
        assert_eq!(placement.healthy_first("7/k").last(), Some(&list[1]));
        assert_eq!(placement.errors().iter().map(|(_, n)| n).sum::<u64>(), 1);

        placement.set_health(&list[1].id, true);
        assert!(placement.write_set("7/k").iter().all(|(_, standing_in)| standing_in.is_none()));
    }

    fn membership(states: &[MemberState]) -> Membership {
        Membership {
            version: 3,
            members: states
                .iter()
                .enumerate()
                .map(|(i, state)| crate::membership::Member {
                    id: format!("node-{}", i + 1),
                    url: format!("http://n{}", i + 1),
                    state: *state,
                    since: Utc::now(),
                    progress: None,
                })
                .collect(),
        }
    }

    #[test]
    fn during_a_change_writes_reach_both_rings_and_reads_fall_back_to_the_old_owners() {
        use MemberState::{Active, Joining, Leaving};
        let placement = Placement::of_membership(&membership(&[Active, Active, Active, Joining, Leaving]), 50, 3, None);
        assert!(placement.in_transition());
        assert_eq!(placement.all().len(), 5);
        let mut checked = 0;
        for i in 0..500 {
            let key = format!("1/k{i}");
            let owners = placement.owners(&key);
            let old_only = placement.old_only_owners(&key);
            assert!(owners.iter().all(|node| node.id != "node-5"), "a leaving node owns nothing new");
            let targets = placement.write_targets(&key);
            assert_eq!(targets, owners.iter().chain(&old_only).cloned().collect::<Vec<_>>());
            // Reads: the new owners, then the old-only owners, then the fallbacks.
            let order = placement.healthy_first(&key);
            assert_eq!(order[..targets.len()], targets[..]);
            // Every node of the new ring, plus the leaving node only where it holds the key.
            assert_eq!(order.len(), 4 + old_only.iter().filter(|node| node.id == "node-5").count());
            checked += usize::from(!old_only.is_empty());
        }
        assert!(checked > 0, "some keys move");
        let members = placement.members();
        let state_of = |id: &str| members.iter().find(|node| node.id == id).unwrap().state.clone();
        assert_eq!((state_of("node-4"), state_of("node-5")), ("joining".to_string(), "leaving".to_string()));
    }

    #[test]
    fn health_survives_a_membership_swap() {
        use MemberState::{Active, Joining};
        let before = Placement::of_membership(&membership(&[Active, Active, Active]), 50, 3, None);
        before.record_failure("node-2");
        let after = Placement::of_membership(&membership(&[Active, Active, Active, Joining]), 50, 3, Some(&before));
        assert!(!after.is_healthy("node-2") && after.is_healthy("node-4"));
        assert_eq!(after.errors().iter().find(|(id, _)| id == "node-2").unwrap().1, 1);
        // A shared node state: a probe through either placement is seen by both.
        after.set_health("node-2", true);
        assert!(before.is_healthy("node-2"));
        let settled = Placement::of_membership(&membership(&[Active, Active, Active, Active]), 50, 3, Some(&after));
        assert!(!settled.in_transition() && settled.old_only_owners("1/k").is_empty());
    }

    #[test]
    fn the_clock_offset_is_the_median_of_the_measured_nodes() {
        let placement = placement();
        assert_eq!(placement.clock_offset_ms(), None, "nothing measured yet");
        for (index, offset) in [(0, 40), (1, -60_000), (2, 55), (3, 30)] {
            placement.nodes[index].clock_offset_ms.store(offset, Ordering::Relaxed);
        }
        // One node with a bad clock does not make the gateway's look bad.
        assert_eq!(placement.clock_offset_ms(), Some(40));
    }

    #[test]
    fn strong_quorums_are_drawn_from_the_owners_only() {
        let placement = placement();
        let owners = placement.owners("k");
        placement.set_health(&owners[1].id, false);
        let ordered = placement.owners_healthy_first("k");
        assert_eq!(ordered.len(), 3);
        assert_eq!(ordered.last().unwrap().id, owners[1].id, "a down owner comes last, but stays");
        assert!(ordered.iter().all(|node| owners.contains(node)));
    }

    #[test]
    fn replicas_never_exceed_the_node_count() {
        let nodes = vec![NodeInfo { id: "a".into(), url: "http://a".into() }];
        let placement = Placement::new(nodes, 10, 3);
        assert_eq!(placement.replicas(), 1);
        assert_eq!(placement.owners("k").len(), 1);
    }
}
