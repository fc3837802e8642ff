//! Where a key lives and which nodes are up: the ring plus each node's health,
//! kept fresh by a background prober and by the outcome of real requests.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::nodes::NodeClient;
use crate::proto::ClusterNode;
use crate::ring::{NodeInfo, Ring};
use crate::shutdown::Shutdown;

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
}

/// The ring and the health of its nodes; shared by every request.
#[derive(Debug)]
pub struct Placement {
    ring: Ring,
    /// Same order as `ring.nodes()`.
    nodes: Vec<NodeState>,
    replicas: usize,
}

impl Placement {
    /// Builds the ring over `nodes`; every node starts as healthy until a probe or request says otherwise.
    pub fn new(nodes: Vec<NodeInfo>, vnodes: usize, replicas: usize) -> Self {
        let now = Utc::now();
        let states = nodes
            .iter()
            .map(|info| NodeState {
                info: info.clone(),
                healthy: AtomicBool::new(true),
                since: Mutex::new(now),
                key_count: Mutex::new(None),
                errors: AtomicU64::new(0),
            })
            .collect();
        let replicas = replicas.clamp(1, nodes.len().max(1));
        Self { ring: Ring::new(nodes, vnodes), nodes: states, replicas }
    }

    /// N: copies kept of each key (at most the number of nodes).
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// The ring.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    fn state(&self, id: &str) -> Option<&NodeState> {
        self.nodes.iter().find(|node| node.info.id == id)
    }

    /// Whether the node is currently considered up.
    pub fn is_healthy(&self, id: &str) -> bool {
        self.state(id).is_some_and(|node| node.healthy.load(Ordering::Acquire))
    }

    /// Records the outcome of a probe or request.
    pub fn set_health(&self, id: &str, healthy: bool) {
        let Some(node) = self.state(id) else { return };
        if node.healthy.swap(healthy, Ordering::AcqRel) != healthy {
            *node.since.lock().expect("placement lock poisoned") = Utc::now();
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

    /// The key's owners (primary first), N of them.
    pub fn owners(&self, key: &str) -> Vec<NodeInfo> {
        self.ring.owners(key.as_bytes(), self.replicas).into_iter().cloned().collect()
    }

    /// The whole preference list with healthy nodes first (each group in ring order);
    /// down nodes stay at the end as a last resort.
    pub fn healthy_first(&self, key: &str) -> Vec<NodeInfo> {
        let list = self.ring.preference_list(key.as_bytes());
        let (up, down): (Vec<&NodeInfo>, Vec<&NodeInfo>) = list.into_iter().partition(|node| self.is_healthy(&node.id));
        up.into_iter().chain(down).cloned().collect()
    }

    /// The nodes to write for a strong write: each owner, or — if it is down — the next healthy
    /// node after the owners in the preference list (sloppy quorum). Returns
    /// `(target, owner_it_stands_in_for)`; the owner is `None` when the target is the owner itself.
    pub fn write_set(&self, key: &str) -> Vec<(NodeInfo, Option<NodeInfo>)> {
        let list = self.ring.preference_list(key.as_bytes());
        let (owners, rest) = list.split_at(self.replicas.min(list.len()));
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

    /// Every node, for listings and probes.
    pub fn all(&self) -> Vec<NodeInfo> {
        self.ring.nodes().to_vec()
    }

    /// Failed requests per node id.
    pub fn errors(&self) -> Vec<(String, u64)> {
        self.nodes.iter().map(|node| (node.info.id.clone(), node.errors.load(Ordering::Relaxed))).collect()
    }

    /// The ring members as `GET /cluster` shows them.
    pub fn members(&self) -> Vec<ClusterNode> {
        let shares = self.ring.shares();
        self.nodes
            .iter()
            .zip(shares)
            .map(|(node, (_, share))| ClusterNode {
                id: node.info.id.clone(),
                url: node.info.url.clone(),
                healthy: node.healthy.load(Ordering::Acquire),
                since: *node.since.lock().expect("placement lock poisoned"),
                share,
                vnodes: self.ring.vnodes(),
                key_count: *node.key_count.lock().expect("placement lock poisoned"),
            })
            .collect()
    }

    /// Probes every node each [`PROBE_INTERVAL`] until shutdown.
    pub async fn probe_loop(self: std::sync::Arc<Self>, client: NodeClient, shutdown: Shutdown) {
        loop {
            let probes = self.nodes.iter().map(|node| {
                let client = client.clone();
                async move { (node, client.probe(&node.info.url).await) }
            });
            for (node, outcome) in futures_util::future::join_all(probes).await {
                match outcome {
                    Ok(key_count) => {
                        *node.key_count.lock().expect("placement lock poisoned") = key_count;
                        self.set_health(&node.info.id, true);
                    }
                    Err(error) => {
                        tracing::debug!(%error, "health probe failed");
                        self.set_health(&node.info.id, false);
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

    #[test]
    fn replicas_never_exceed_the_node_count() {
        let nodes = vec![NodeInfo { id: "a".into(), url: "http://a".into() }];
        let placement = Placement::new(nodes, 10, 3);
        assert_eq!(placement.replicas(), 1);
        assert_eq!(placement.owners("k").len(), 1);
    }
}
