//! The gateway's view of the nodes' internal API: [`crate::nodeclient`] (one
//! pooled keep-alive client) adapted to the gateway's records and mutations,
//! plus the `/metrics` probe used as the health check.
//!
//! Writes to one node are batched by [`crate::nodewriter`] (the replicator's
//! copies go the same way). Reads are coalesced ([`crate::coalesce`]) into one
//! `POST /read` of several keys; a lone read is a plain `GET`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::quorum::{Mutation, MutationKind};
use crate::coalesce::{self, Coalescer};
use crate::config::Secret;
use crate::nodeclient;
use crate::nodewriter::{NodeWriter, Writable};
use crate::proto::{NodeKeyPage, StoreWriteResponse};
use crate::sync::Lock;
use crate::wal::record::RecordRef;
use crate::wire::read::Replica;

pub use crate::nodeclient::{DEFAULT_CONTENT_TYPE, NodeError};

/// Time allowed for one node request (an fsync'd write is well within it).
pub const NODE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether a failed request says the node is unwell (unreachable, garbled or 5xx), as opposed to
/// refusing this particular request. A 507 (its disk is full) is not "down": the node still
/// serves reads, and takes writes again by itself once space is freed.
pub fn node_is_down(error: &NodeError) -> bool {
    match error {
        NodeError::Unreachable { .. } | NodeError::InvalidResponse { .. } => true,
        NodeError::Status { status, .. } => {
            status.is_server_error() && *status != reqwest::StatusCode::INSUFFICIENT_STORAGE
        }
        NodeError::InvalidUrl { .. } => false,
    }
}

/// Builds the pooled keep-alive HTTP client used for the users service, the replicator and probes.
pub fn http_client() -> reqwest::Client {
    crate::tls::client_builder()
        .connect_timeout(Duration::from_secs(1))
        .timeout(NODE_TIMEOUT)
        // Below the servers' idle keep-alive timeout (crate::server::Limits), so the pool drops a connection first.
        .pool_idle_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .build()
        .expect("the HTTP client configuration is valid")
}

/// A reqwest error with its causes on one line (`error sending request: … Connection refused`), without the URL.
pub fn describe(error: reqwest::Error) -> String {
    nodeclient::causes(&error.without_url())
}

/// How writes to one node are batched: up to 256 records or 4 MiB per `/batch`
/// (a node takes at least 8 MiB), one batch in flight per node: the next batch
/// collects everything that arrives meanwhile. Measured on 2 cores (bench/RESULTS.md):
/// with 4 in flight most batches held one write, and eventual PUTs cost 115 µs of
/// server CPU each instead of 76.
const WRITE_LIMITS: coalesce::Limits =
    coalesce::Limits { max_items: 256, max_bytes: 4 << 20, in_flight: 1, queue: 4096 };

/// One write waiting for its node's next batch.
#[derive(Debug)]
struct Write {
    key: String,
    mutation: Mutation,
}

impl Writable for Write {
    fn record(&self) -> RecordRef<'_> {
        self.mutation.record(&self.key)
    }

    fn value(&self) -> Bytes {
        match &self.mutation.kind {
            MutationKind::Put { value, .. } => value.clone(),
            MutationKind::Delete => Bytes::new(),
        }
    }
}

/// How reads of one node are batched: up to 128 keys per `/read`, one batch in
/// flight per node (as for writes: 19 µs of server CPU per eventual GET instead of 28 with 4).
const READ_LIMITS: coalesce::Limits =
    coalesce::Limits { max_items: 128, max_bytes: 128 * 4096, in_flight: 1, queue: 4096 };

/// Paxos messages per request to one node: every message of the concurrent rounds.
const PAXOS_LIMITS: coalesce::Limits =
    coalesce::Limits { max_items: crate::wire::paxos::MAX_MESSAGES, max_bytes: 4 << 20, in_flight: 2, queue: 4096 };

/// A Paxos message's weight against the batch's byte limit: its record's value.
fn paxos_size(request: &crate::wire::paxos::Request) -> usize {
    use crate::paxos::Message;
    match &request.message {
        Message::Prepare(_) => 32 + request.key.len(),
        Message::Accept(proposal) | Message::Commit(proposal) | Message::AcceptAfter { proposal, .. } => {
            64 + request.key.len() + proposal.value.value.len()
        }
    }
}

/// The batching task of the Paxos messages to one node.
type NodePaxos = Coalescer<crate::wire::paxos::Request, Result<crate::paxos::Reply<crate::wal::Record>, NodeError>>;

/// The batching task of the reads of one node.
type NodeReads = Coalescer<String, Result<Replica, NodeError>>;

/// One batching task per node, started on the node's first request.
type PerNode<T> = Arc<Mutex<HashMap<String, T>>>;

/// A typed client for the cluster's nodes; cheap to clone.
#[derive(Debug, Clone)]
pub struct NodeClient {
    client: nodeclient::NodeClient,
    http: reqwest::Client,
    writes: NodeWriter<Write>,
    reads: PerNode<NodeReads>,
    paxos: PerNode<NodePaxos>,
}

impl NodeClient {
    /// A client authenticating with the cluster `secret`; `http` is used for the unauthenticated probes.
    pub fn new(http: reqwest::Client, secret: Secret) -> Self {
        let client = nodeclient::NodeClient::new(secret, NODE_TIMEOUT);
        let writes = NodeWriter::new(client.clone(), WRITE_LIMITS);
        Self { writes, client, http, reads: Arc::default(), paxos: Arc::default() }
    }

    /// Writes `mutation` of `key` to the node at `base`, batched with the other
    /// writes to that node in flight; answers once the node has synced it.
    pub async fn write(&self, base: &str, key: &str, mutation: &Mutation) -> Result<StoreWriteResponse, NodeError> {
        self.writes.write(base, Write { key: key.to_string(), mutation: mutation.clone() }).await
    }

    /// Reads `key` from the node at `base`, batched with the other reads of that node in flight.
    pub async fn read(&self, base: &str, key: &str) -> Result<Replica, NodeError> {
        let reads = per_node(&self.reads, base, || {
            let (client, target) = (self.client.clone(), base.to_string());
            Coalescer::spawn(READ_LIMITS, String::len, move |keys: Vec<String>| {
                let (client, target) = (client.clone(), target.clone());
                async move { read_batch(&client, &target, &keys).await }
            })
        });
        reads.submit(key.to_string()).await.unwrap_or_else(|| Err(stopped(base, "read")))
    }

    /// Sends one Paxos message about `request.key` to the node at `base`, batched with the
    /// other Paxos messages to that node in flight (one request, one WAL sync on the node).
    pub async fn paxos(
        &self,
        base: &str,
        request: crate::wire::paxos::Request,
    ) -> Result<crate::paxos::Reply<crate::wal::Record>, NodeError> {
        let batches = per_node(&self.paxos, base, || {
            let (client, target) = (self.client.clone(), base.to_string());
            Coalescer::spawn(PAXOS_LIMITS, paxos_size, move |requests: Vec<crate::wire::paxos::Request>| {
                let (client, target) = (client.clone(), target.clone());
                async move {
                    match client.paxos(&target, &requests).await {
                        Ok(replies) => replies.into_iter().map(Ok).collect(),
                        Err(error) => requests.iter().map(|_| Err(error.duplicate())).collect(),
                    }
                }
            })
        });
        batches.submit(request).await.unwrap_or_else(|| Err(stopped(base, "Paxos")))
    }

    /// The node's `/health` (its id).
    pub async fn health(&self, base: &str) -> Result<crate::proto::NodeHealth, NodeError> {
        self.client.health(base).await
    }

    /// One page of the node's live keys under `prefix`, after `cursor` (exclusive).
    pub async fn list(
        &self,
        base: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<NodeKeyPage, NodeError> {
        self.client.keys(base, prefix, limit, cursor).await
    }

    /// One page of the node's change feed after `after` under `prefix`, waiting up to `wait` for
    /// a change when there is none yet ([`crate::daemon::node::feed`]).
    pub async fn feed(
        &self,
        base: &str,
        after: u64,
        prefix: &str,
        limit: usize,
        wait: std::time::Duration,
    ) -> Result<crate::proto::NodeFeedPage, NodeError> {
        self.client.feed(base, after, prefix, limit, wait).await
    }

    /// The node's `/metrics` (unauthenticated), used as its health check: its key count and how far
    /// its clock is from this process's, when it reports them.
    pub async fn probe(&self, base: &str) -> Result<Probe, ProbeFailed> {
        let sent = crate::hlc::wall_millis();
        let response = self
            .http
            .get(format!("{base}/metrics"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .map_err(|error| ProbeFailed::Transport(describe(error)))?;
        if !response.status().is_success() {
            return Err(ProbeFailed::Status(response.status()));
        }
        let metrics: serde_json::Value =
            response.json().await.map_err(|error| ProbeFailed::Transport(describe(error)))?;
        let received = crate::hlc::wall_millis();
        let node_time = metrics.get("timestamp_ms").and_then(serde_json::Value::as_u64);
        Ok(Probe {
            key_count: metrics.get("key_count").and_then(serde_json::Value::as_u64),
            clock_offset_ms: node_time.and_then(|node_time| clock_offset_ms(sent, node_time, received)),
        })
    }
}

/// Why a health probe of a node failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeFailed {
    /// No usable answer (the causes on one line).
    #[error("{0}")]
    Transport(String),
    /// An error status.
    #[error("answered {0}")]
    Status(reqwest::StatusCode),
}

/// What a health probe learnt about a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Its live keys, if reported.
    pub key_count: Option<u64>,
    /// Its clock minus ours, in ms, if it reported its time and the exchange was quick enough to tell.
    pub clock_offset_ms: Option<i64>,
}

/// The offset of a clock that read `remote` (ms) while ours went from `sent` to `received`:
/// measured against the middle of the exchange, so it is off by at most half the round trip.
/// `None` when the round trip took over a second (too slow to tell a skew from a delay).
pub fn clock_offset_ms(sent: u64, remote: u64, received: u64) -> Option<i64> {
    let round_trip = received.checked_sub(sent)?;
    (round_trip <= 1000).then(|| remote as i64 - (sent + round_trip / 2) as i64)
}

/// The batching task of `base` in `tasks`, started with `start` if there is none yet.
fn per_node<T: Clone>(tasks: &PerNode<T>, base: &str, start: impl FnOnce() -> T) -> T {
    let mut tasks = tasks.locked();
    if let Some(task) = tasks.get(base) {
        return task.clone();
    }
    let task = start();
    tasks.insert(base.to_string(), task.clone());
    task
}

/// The error of a request whose batching task has stopped (the runtime is shutting down).
fn stopped(base: &str, what: &str) -> NodeError {
    NodeError::InvalidResponse { url: base.to_string(), message: format!("the {what} batching task stopped") }
}

/// Reads `keys` from the node at `base`: one key alone as `GET /store/{key}`,
/// several as one `POST /read`. Keys the answer left out (it was full), and
/// every key of a read the node refuses whole (a node without `/read` answers
/// 404), are read alone.
async fn read_batch(client: &nodeclient::NodeClient, base: &str, keys: &[String]) -> Vec<Result<Replica, NodeError>> {
    if keys.len() > 1 {
        let names: Vec<&str> = keys.iter().map(String::as_str).collect();
        match client.read_many(base, &names).await {
            Ok(entries) => {
                let reads = keys.iter().zip(entries).map(|(key, entry)| async move {
                    match entry {
                        Some(read) => Ok(read),
                        None => read_alone(client, base, key).await,
                    }
                });
                return futures_util::future::join_all(reads).await;
            }
            Err(error) if !error.is_permanent() => return keys.iter().map(|_| Err(error.duplicate())).collect(),
            Err(_) => {}
        }
    }
    futures_util::future::join_all(keys.iter().map(|key| read_alone(client, base, key))).await
}

async fn read_alone(client: &nodeclient::NodeClient, base: &str, key: &str) -> Result<Replica, NodeError> {
    client.get_replica(base, key).await
}

#[cfg(test)]
mod tests {
    use super::clock_offset_ms;

    #[test]
    fn clock_offsets_are_measured_against_the_middle_of_the_exchange() {
        // Sent at 1000, answered at 1010: the node read 61005 in the middle, 60 s ahead.
        assert_eq!(clock_offset_ms(1000, 61_005, 1010), Some(60_000));
        assert_eq!(clock_offset_ms(61_000, 1_005, 61_010), Some(-60_000));
        assert_eq!(clock_offset_ms(1000, 1000, 3000), None, "a 2 s round trip tells nothing");
        assert_eq!(clock_offset_ms(1000, 1000, 999), None, "our clock went backwards");
    }
}
