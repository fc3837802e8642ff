//! Online membership: which storage nodes form the ring, in which state, and
//! what a change in progress means for placement.
//!
//! The membership lives in the users service's database (the control plane,
//! [`crate::daemon::users::membership`]); every change bumps its version. A
//! member is `joining` (taking over its share), `active`, `leaving` (handing
//! its share to the others) or `down` (gone for good: its share is rebuilt
//! from the other copies). While any member is joining, leaving or down, the
//! cluster is between two rings ([`Layout`]):
//!
//! - the *old* ring: active + leaving + down members (where the data is);
//! - the *new* ring: active + joining members (where the data goes).
//!
//! Writes go to the owners in both rings; reads ask the new owners first and
//! fall back to the old ones. Every member of the new ring pulls the
//! [`Segment`]s it gains from their old owners and reports progress; when all
//! of them report done for the current version, the transition completes:
//! joining members become active, leaving and down members are removed, and
//! nodes drop the keys they no longer own.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ring::{NodeInfo, Ring, point};

/// Longest a membership long-poll (`GET /membership?after=V&wait=S`) waits for a change.
pub const MAX_WAIT: Duration = Duration::from_secs(25);

/// A member's place in the cluster's life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Added to the new ring; pulling its share from the old owners.
    Joining,
    /// A full member.
    Active,
    /// Being removed; its share moves to the others before it goes.
    Leaving,
    /// Declared dead by an operator; its share is rebuilt from the other copies.
    Down,
}

impl MemberState {
    /// The name stored in the database and shown to operators.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Joining => "joining",
            Self::Active => "active",
            Self::Leaving => "leaving",
            Self::Down => "down",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Joining, Self::Active, Self::Leaving, Self::Down].into_iter().find(|state| state.as_str() == text)
    }

    /// Whether a member in this state holds data placed by the old ring.
    pub fn in_old_ring(self) -> bool {
        matches!(self, Self::Active | Self::Leaving | Self::Down)
    }

    /// Whether a member in this state is an owner in the new ring.
    pub fn in_new_ring(self) -> bool {
        matches!(self, Self::Active | Self::Joining)
    }
}

/// How far one node got moving the data of one membership version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebalanceProgress {
    /// The membership version the node is working on.
    pub version: u64,
    /// Ring segments the node gains in this transition.
    pub arcs_total: u64,
    /// Segments it has finished pulling.
    pub arcs_done: u64,
    /// Records it pulled that were newer than what it held.
    pub keys_moved: u64,
    /// Whether it holds everything it gains.
    pub done: bool,
}

/// One storage node of the membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Node id, hashed for placement.
    pub id: String,
    /// Base URL other services reach it at.
    pub url: String,
    /// Where it is in its life cycle.
    pub state: MemberState,
    /// When its state or URL last changed.
    pub since: DateTime<Utc>,
    /// Its last progress report for the current version, if any.
    #[serde(default)]
    pub progress: Option<RebalanceProgress>,
}

impl Member {
    /// Its id and URL.
    pub fn info(&self) -> NodeInfo {
        NodeInfo { id: self.id.clone(), url: self.url.clone() }
    }
}

/// The whole membership at one version (`GET /membership`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Bumped by every change; 0 before the first.
    pub version: u64,
    /// Members in the order they were added.
    pub members: Vec<Member>,
}

impl Membership {
    /// No member is joining, leaving or down.
    pub fn is_settled(&self) -> bool {
        self.members.iter().all(|member| member.state == MemberState::Active)
    }

    /// The member with this id.
    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|member| member.id == id)
    }

    /// Members of the old ring (active, leaving, down).
    pub fn old_nodes(&self) -> Vec<NodeInfo> {
        self.members.iter().filter(|member| member.state.in_old_ring()).map(Member::info).collect()
    }

    /// Members of the new ring (active, joining).
    pub fn new_nodes(&self) -> Vec<NodeInfo> {
        self.members.iter().filter(|member| member.state.in_new_ring()).map(Member::info).collect()
    }

    /// `(done, total)`: members of the new ring that reported done for this version, of all of them.
    pub fn rebalance_done(&self) -> (usize, usize) {
        let movers: Vec<&Member> = self.members.iter().filter(|member| member.state.in_new_ring()).collect();
        let done = movers
            .iter()
            .filter(|member| member.progress.is_some_and(|progress| progress.version == self.version && progress.done))
            .count();
        (done, movers.len())
    }

    /// The summary `GET /cluster` and `ydht top` show.
    pub fn summary(&self) -> crate::proto::RebalanceSummary {
        let (arcs_done, arcs_total) = self.arcs_moved();
        let (nodes_done, nodes) = self.rebalance_done();
        crate::proto::RebalanceSummary {
            version: self.version,
            settled: self.is_settled(),
            arcs_done,
            arcs_total,
            nodes_done: nodes_done as u64,
            nodes: nodes as u64,
        }
    }

    /// Segments moved so far and in all, summed over the members' reports for this version.
    pub fn arcs_moved(&self) -> (u64, u64) {
        self.members
            .iter()
            .filter_map(|member| member.progress.filter(|progress| progress.version == self.version))
            .fold((0, 0), |(done, total), progress| (done + progress.arcs_done, total + progress.arcs_total))
    }
}

/// `POST /membership/join`: add a storage node (or update the URL of a known one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// Base URL of the node.
    pub url: String,
    /// Its node id; the gateway asks the node's `/health` when absent.
    #[serde(default)]
    pub id: Option<String>,
}

/// `POST /membership/leave`: remove a storage node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveRequest {
    /// The node id.
    pub id: String,
    /// The node is gone for good: rebuild its data from the other copies instead of from it.
    #[serde(default)]
    pub force: bool,
}

/// `POST /membership/seed`: the gateway's configured nodes (`YDHT_NODES`), made the
/// membership when there is none yet; a listed id already known gets the listed URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedRequest {
    /// The nodes.
    pub nodes: Vec<NodeInfo>,
}

/// `POST /membership/progress`: a node's rebalancing progress for one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressReport {
    /// The reporting node.
    pub node_id: String,
    /// The progress.
    #[serde(flatten)]
    pub progress: RebalanceProgress,
}

/// Query of `GET /membership`: answer at once if the version is past `after`, else wait up to `wait` seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipQuery {
    /// The version the caller already has.
    #[serde(default)]
    pub after: Option<u64>,
    /// Seconds to wait for a newer version (at most [`MAX_WAIT`]).
    #[serde(default)]
    pub wait: Option<u64>,
}

/// Whether `position` lies in the ring interval `(start, end]` (wrapping past the top;
/// `start == end` is the whole ring).
pub fn in_interval(start: u64, end: u64, position: u64) -> bool {
    if start < end { start < position && position <= end } else { position > start || position <= end }
}

/// A stretch `(start, end]` of the hash space whose owners are the same in both rings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Exclusive start position.
    pub start: u64,
    /// Inclusive end position.
    pub end: u64,
    /// Owners in the old ring.
    pub old_owners: Vec<NodeInfo>,
    /// Owners in the new ring.
    pub new_owners: Vec<NodeInfo>,
}

impl Segment {
    /// Whether `key` lies in this segment.
    pub fn contains(&self, key: &str) -> bool {
        in_interval(self.start, self.end, point(key.as_bytes()))
    }
}

/// Placement at one membership version: the old and the new ring (equal when settled).
#[derive(Debug, Clone)]
pub struct Layout {
    /// The membership version (0 for a static `YDHT_NODES` ring).
    pub version: u64,
    /// Where the data is.
    pub old: Ring,
    /// Where the data goes.
    pub new: Ring,
    replicas: usize,
    /// Ids of members declared down (never asked for data).
    down: Vec<String>,
}

impl Layout {
    /// The layout of `membership` with `vnodes` per node and `replicas` copies per key.
    pub fn new(membership: &Membership, vnodes: usize, replicas: usize) -> Self {
        let down = membership
            .members
            .iter()
            .filter(|member| member.state == MemberState::Down)
            .map(|member| member.id.clone())
            .collect();
        Self {
            version: membership.version,
            old: Ring::new(membership.old_nodes(), vnodes),
            new: Ring::new(membership.new_nodes(), vnodes),
            replicas: replicas.max(1),
            down,
        }
    }

    /// A settled layout over `nodes` (the static ring of `YDHT_NODES`).
    pub fn settled(nodes: Vec<NodeInfo>, vnodes: usize, replicas: usize) -> Self {
        let ring = Ring::new(nodes, vnodes);
        Self { version: 0, old: ring.clone(), new: ring, replicas: replicas.max(1), down: Vec::new() }
    }

    /// Whether data is moving (the two rings have different members).
    pub fn in_transition(&self) -> bool {
        fn ids(ring: &Ring) -> Vec<&str> {
            let mut ids: Vec<&str> = ring.nodes().iter().map(|node| node.id.as_str()).collect();
            ids.sort_unstable();
            ids
        }
        ids(&self.old) != ids(&self.new)
    }

    /// Copies per key in `ring` (never more than its nodes).
    pub fn replicas_in(&self, ring: &Ring) -> usize {
        self.replicas.min(ring.nodes().len().max(1))
    }

    /// The configured copies per key (N).
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// Whether the member was declared down.
    pub fn is_down(&self, id: &str) -> bool {
        self.down.iter().any(|down| down == id)
    }

    /// The key's owners in the new ring.
    pub fn new_owners(&self, key: &str) -> Vec<NodeInfo> {
        self.new.owners(key.as_bytes(), self.replicas_in(&self.new)).into_iter().cloned().collect()
    }

    /// The key's owners in the old ring.
    pub fn old_owners(&self, key: &str) -> Vec<NodeInfo> {
        self.old.owners(key.as_bytes(), self.replicas_in(&self.old)).into_iter().cloned().collect()
    }

    /// Owners in the old ring that are not owners in the new one, except members declared down
    /// (none when settled): during a change they still get writes and are asked by reads.
    pub fn old_only_owners(&self, key: &str) -> Vec<NodeInfo> {
        if !self.in_transition() {
            return Vec::new();
        }
        let new = self.new_owners(key);
        self.old_owners(key)
            .into_iter()
            .filter(|old| !self.is_down(&old.id) && !new.iter().any(|node| node.id == old.id))
            .collect()
    }

    /// The hash space cut at every point of both rings, each piece with its owners in each.
    pub fn segments(&self) -> Vec<Segment> {
        let mut ends: Vec<u64> = self.old.positions().chain(self.new.positions()).collect();
        ends.sort_unstable();
        ends.dedup();
        let owners = |ring: &Ring, end: u64| -> Vec<NodeInfo> {
            if ring.nodes().is_empty() {
                return Vec::new();
            }
            let mut list = ring.arc_preference(ring.arc_at(end));
            list.truncate(self.replicas_in(ring));
            list.into_iter().cloned().collect()
        };
        (0..ends.len())
            .map(|index| {
                let end = ends[index];
                let start = if index == 0 { ends[ends.len() - 1] } else { ends[index - 1] };
                Segment { start, end, old_owners: owners(&self.old, end), new_owners: owners(&self.new, end) }
            })
            .collect()
    }

    /// The segments `id` owns in the new ring but not in the old one: what it must pull.
    pub fn gained_by(&self, id: &str) -> Vec<Segment> {
        if !self.in_transition() {
            return Vec::new();
        }
        self.segments()
            .into_iter()
            .filter(|segment| {
                segment.new_owners.iter().any(|node| node.id == id)
                    && !segment.old_owners.iter().any(|node| node.id == id)
            })
            .collect()
    }

    /// Where a gained segment's data can be pulled from: its old owners, except `id` and members declared down.
    pub fn sources(&self, segment: &Segment, id: &str) -> Vec<NodeInfo> {
        segment.old_owners.iter().filter(|node| node.id != id && !self.is_down(&node.id)).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(i: usize, state: MemberState) -> Member {
        Member { id: format!("node-{i}"), url: format!("http://n{i}"), state, since: Utc::now(), progress: None }
    }

    fn membership(states: &[MemberState]) -> Membership {
        Membership { version: 7, members: states.iter().enumerate().map(|(i, state)| member(i + 1, *state)).collect() }
    }

    use MemberState::{Active, Down, Joining, Leaving};

    #[test]
    fn old_and_new_rings_follow_the_states() {
        let m = membership(&[Active, Active, Active, Joining, Leaving]);
        let ids = |nodes: Vec<NodeInfo>| nodes.into_iter().map(|node| node.id).collect::<Vec<_>>();
        assert_eq!(ids(m.old_nodes()), ["node-1", "node-2", "node-3", "node-5"]);
        assert_eq!(ids(m.new_nodes()), ["node-1", "node-2", "node-3", "node-4"]);
        assert!(!m.is_settled());
        assert!(membership(&[Active, Active]).is_settled());
        assert!(Layout::new(&m, 50, 3).in_transition());
        assert!(!Layout::new(&membership(&[Active, Active, Active]), 50, 3).in_transition());
    }

    #[test]
    fn a_joining_node_gains_exactly_the_segments_where_it_becomes_an_owner() {
        let layout = Layout::new(&membership(&[Active, Active, Active, Joining]), 50, 3);
        let segments = layout.segments();
        let gained = layout.gained_by("node-4");
        assert!(!gained.is_empty() && gained.len() < segments.len());
        for segment in &segments {
            let new_has = segment.new_owners.iter().any(|node| node.id == "node-4");
            assert!(!segment.old_owners.iter().any(|node| node.id == "node-4"));
            assert_eq!(gained.contains(segment), new_has);
            // Adding one node keeps at least N-1 old owners in every segment.
            let kept = segment.new_owners.iter().filter(|node| segment.old_owners.contains(node)).count();
            assert!(kept >= 2, "{segment:?}");
        }
        // Old active members gain nothing when a node joins.
        assert!(layout.gained_by("node-1").is_empty());
        // Segments tile the ring: every key is in exactly one, with the owners the rings give it.
        for i in 0..2000 {
            let key = format!("{i}/k{i}");
            let holding: Vec<&Segment> = segments.iter().filter(|segment| segment.contains(&key)).collect();
            assert_eq!(holding.len(), 1, "{key}");
            assert_eq!(holding[0].new_owners, layout.new_owners(&key));
            assert_eq!(holding[0].old_owners, layout.old_owners(&key));
        }
    }

    #[test]
    fn transition_owner_sets() {
        let layout = Layout::new(&membership(&[Active, Active, Active, Active, Leaving]), 50, 3);
        let mut moved = 0;
        for i in 0..2000 {
            let key = format!("k{i}");
            let new = layout.new_owners(&key);
            let old = layout.old_owners(&key);
            assert_eq!(new.len(), 3);
            assert!(!new.iter().any(|node| node.id == "node-5"));
            let old_only = layout.old_only_owners(&key);
            // Old-only owners are exactly the old owners missing from the new set.
            assert_eq!(old_only.len(), old.iter().filter(|node| !new.contains(node)).count());
            if old.iter().any(|node| node.id == "node-5") {
                assert_eq!(old_only.iter().map(|node| node.id.as_str()).collect::<Vec<_>>(), ["node-5"]);
                moved += 1;
            } else {
                assert!(old_only.is_empty());
                assert_eq!(new, old);
            }
        }
        assert!(moved > 0);
        // The leaving node is a source, never a gainer; a down node is never a source.
        for segment in layout.gained_by("node-1") {
            assert!(segment.old_owners.iter().any(|node| node.id == "node-5"));
        }
        let down = Layout::new(&membership(&[Active, Active, Active, Active, Down]), 50, 3);
        assert!((0..500).all(|i| down.old_only_owners(&format!("k{i}")).is_empty()), "a dead node gets nothing");
        for segment in down.gained_by("node-2") {
            let sources = down.sources(&segment, "node-2");
            assert!(!sources.is_empty() && sources.iter().all(|node| node.id != "node-5" && node.id != "node-2"));
        }
    }

    #[test]
    fn settled_layouts_have_no_old_only_owners() {
        let nodes = (1..=3).map(|i| NodeInfo { id: format!("node-{i}"), url: format!("http://n{i}") }).collect();
        let layout = Layout::settled(nodes, 50, 3);
        assert!(!layout.in_transition());
        assert!(layout.old_only_owners("k").is_empty());
        assert!(layout.gained_by("node-1").is_empty());
    }

    #[test]
    fn progress_counts_only_the_current_version() {
        let mut m = membership(&[Active, Active, Joining]);
        m.members[0].progress = Some(RebalanceProgress { version: 7, done: true, ..Default::default() });
        m.members[1].progress = Some(RebalanceProgress { version: 6, done: true, ..Default::default() });
        m.members[2].progress =
            Some(RebalanceProgress { version: 7, arcs_total: 10, arcs_done: 4, keys_moved: 9, done: false });
        assert_eq!(m.rebalance_done(), (1, 3));
        assert_eq!(m.arcs_moved(), (4, 10));
    }

    #[test]
    fn intervals_wrap() {
        assert!(in_interval(10, 20, 20) && !in_interval(10, 20, 10) && !in_interval(10, 20, 21));
        assert!(in_interval(20, 10, 5) && in_interval(20, 10, u64::MAX) && !in_interval(20, 10, 15));
        assert!(in_interval(5, 5, 0) && in_interval(5, 5, 5));
    }

    #[test]
    fn states_round_trip() {
        for state in [Joining, Active, Leaving, Down] {
            assert_eq!(MemberState::parse(state.as_str()), Some(state));
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
        assert_eq!(MemberState::parse("gone"), None);
    }
}
