//! Wire types and header names shared by the daemons and the client.
//!
//! Values travel as raw bytes in bodies; their metadata travels in headers so
//! binary values never need an encoding.

use serde::{Deserialize, Serialize};

/// Header carrying the cluster secret on internal requests.
pub const CLUSTER_SECRET_HEADER: &str = "x-cluster-secret";
/// Header carrying a record's version (a hybrid logical clock value, decimal u64).
pub const VERSION_HEADER: &str = "x-version";
/// Header carrying a record's absolute expiry (Unix milliseconds), absent when it never expires.
pub const EXPIRES_AT_HEADER: &str = "x-expires-at";
/// Header set to `true` on a node's 404 when the key is a tombstone (deleted at `x-version`).
pub const TOMBSTONE_HEADER: &str = "x-tombstone";
/// Header on a node's answer to a read naming the version of a conditional write it accepted and
/// has not seen committed, newer than what it holds ([`crate::wire::read::Replica::pending`]).
pub const PENDING_HEADER: &str = "x-pending";
/// Header the client sends to choose the consistency level.
pub const CONSISTENCY_HEADER: &str = "x-consistency";
/// Header carrying the end-user API key.
pub const API_KEY_HEADER: &str = "x-api-key";
/// Header naming the nodes that took part in a gateway operation (comma-separated URLs).
pub const NODES_HEADER: &str = "x-ydht-nodes";
/// Optional header of the replicator's `POST /jobs`: answer only once every job has this many acknowledged targets.
pub const JOB_WAIT_HEADER: &str = "x-ydht-wait";
/// Set on a write's answer when its copies could not be handed over durably (the text says why).
pub const WARNING_HEADER: &str = "x-ydht-warning";
/// Longest content type a value may be stored with, in bytes: the nodes' limit, checked by the gateway
/// and the replicator with the same constant so no service accepts what a node refuses.
pub const MAX_CONTENT_TYPE_BYTES: usize = 255;
/// The content type a value is stored with when its write names none.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";
/// Longest storage key a node or the replicator accepts, in bytes: a user key (at most 1024 bytes,
/// checked by the gateway) plus its `{user_id}/` tenant prefix.
pub const MAX_STORAGE_KEY_BYTES: usize = 2048;

/// Why a key was refused (the one key rule of the gateway, the nodes and the replicator).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No key.
    #[error("the key is empty")]
    Empty,
    /// Longer than the service takes.
    #[error("the key is {len} bytes long; the maximum is {max} bytes")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Control characters.
    #[error("the key contains control characters; use printable UTF-8 only")]
    Control,
}

/// Checks a key: 1..=`max` bytes of UTF-8 without control characters.
pub fn check_key(key: &str, max: usize) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > max {
        return Err(KeyError::TooLong { len: key.len(), max });
    }
    if key.chars().any(char::is_control) {
        return Err(KeyError::Control);
    }
    Ok(())
}

/// A node's answer to a versioned write (PUT or DELETE on `/store/{key}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreWriteResponse {
    /// Whether this write became the node's current version of the key.
    pub applied: bool,
    /// The version the node now holds for the key.
    pub version: u64,
}

/// One entry of a node's key listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeKeyEntry {
    /// The stored key (as the node sees it, tenant prefix included).
    pub key: String,
    /// Value size in bytes.
    pub size: u64,
    /// The record's version.
    pub version: u64,
    /// Absolute expiry in Unix milliseconds, if any.
    pub expires_at: Option<u64>,
}

/// One change in a node's feed (`GET /feed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFeedEntry {
    /// Its position in the node's feed; ask `after` it for what follows.
    pub position: u64,
    /// The node's storage key.
    pub key: String,
    /// The record's version.
    pub version: u64,
    /// `put`, `delete` or `expire`.
    pub kind: String,
    /// The value's size in bytes.
    pub size: u64,
    /// The value's content type (empty for a delete).
    pub content_type: String,
    /// When the value expires (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

/// A page of a node's change feed: `GET /feed?after=&prefix=&limit=&wait_ms=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFeedPage {
    /// The changes after `after` under the prefix, in the order the node logged them.
    pub entries: Vec<NodeFeedEntry>,
    /// The position to ask after next.
    pub next: u64,
    /// The first position the feed still holds; asking after an older one may miss changes.
    pub oldest: u64,
}

/// A page of a node's key listing: `GET /keys?prefix=&limit=&cursor=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeKeyPage {
    /// Live keys in ascending byte order.
    pub keys: Vec<NodeKeyEntry>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /health` of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHealth {
    /// Always `healthy` when the node answers.
    pub status: String,
    /// The node's id, e.g. `node-1`.
    pub node_id: String,
    /// Whether it follows the cluster membership (started with `--join`), so it can take part in a change.
    #[serde(default)]
    pub follows_membership: bool,
}

/// `GET /health` of the users service, gateway and other services.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceHealth {
    /// Always `healthy` when the service answers.
    pub status: String,
    /// `users`, `gateway`, `replicator`.
    pub service: String,
}

/// What an API key may do. On the wire and in the database, the lowercase
/// names `read`, `write` and `admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// `GET` / `HEAD` of the tenant's keys.
    Read,
    /// `PUT` / `DELETE` of the tenant's keys.
    Write,
    /// Everything `read` and `write` allow.
    Admin,
}

/// A scope name that is not `read`, `write` or `admin`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope {0:?}; use read, write, admin")]
pub struct UnknownScope(pub String);

impl Scope {
    /// Every scope, in canonical order.
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Admin];

    /// The scope's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    /// Whether a key holding this scope may do what `needed` allows.
    pub fn grants(self, needed: Scope) -> bool {
        self == needed || self == Scope::Admin
    }

    /// The scopes of a comma-separated list as stored (`read,write`); unknown names are skipped.
    pub fn parse_list(list: &str) -> Vec<Scope> {
        list.split(',').filter_map(|name| name.trim().parse().ok()).collect()
    }

    /// `scopes` as a comma-separated list, as stored.
    pub fn join(scopes: &[Scope], separator: &str) -> String {
        scopes.iter().map(|scope| scope.as_str()).collect::<Vec<_>>().join(separator)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == name).ok_or_else(|| UnknownScope(name.to_string()))
    }
}

/// The header naming one request across services (taken from the client, or made up).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// `POST /validate-key` request (users service, cluster secret required).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidateKeyRequest {
    /// The full API key as the end user sent it.
    pub key: String,
}

/// `POST /validate-key` answer for an active, unexpired key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidateKeyResponse {
    /// The owning user.
    pub user_id: i64,
    /// The key's scopes.
    pub scopes: Vec<Scope>,
}

/// One aggregated usage row the gateway reports to the users service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReport {
    /// The tenant.
    pub user_id: i64,
    /// `put`, `get`, `delete` or `list`.
    pub operation: String,
    /// Number of requests in this batch.
    pub requests: u64,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes.
    pub bytes_out: u64,
}

/// `POST /usage` body (users service, cluster secret required): a batch of reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageBatch {
    /// The aggregated rows; the users service adds them to today's totals.
    pub records: Vec<UsageReport>,
}

/// `GET /metrics` of the replicator: the original product's fields first, then ydht's additions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicatorMetrics {
    /// Jobs accepted since start.
    pub total_replications: u64,
    /// Replica writes that succeeded.
    pub successful_replicas: u64,
    /// Replica writes that failed after all retries.
    pub failed_replicas: u64,
    /// Jobs waiting or in flight.
    pub queue_size: u64,
    /// Mean time from acceptance to a replica's acknowledgement.
    pub average_ack_time_ms: f64,
    /// Age of the oldest unfinished job (0 when the queue is empty).
    pub max_replication_lag_ms: f64,
    /// Replica writes waiting for a retry.
    pub retries_in_progress: u64,
    /// Most unfinished jobs (`--max-queue`); at it, new jobs are refused with 503.
    #[serde(default)]
    pub queue_capacity: u64,
    /// Copies parked as hinted handoffs until their target answers again.
    #[serde(default)]
    pub hinted_handoffs: u64,
    /// Jobs refused with 503 because the queue was full, since start.
    #[serde(default)]
    pub refused_jobs: u64,
    /// Copies given up since start: refused for good by their node, or meant for a node that left the cluster.
    #[serde(default)]
    pub dropped_copies: u64,
    /// Copies meant for a node that left the cluster, re-sent to the key's current owners instead, since start.
    #[serde(default)]
    pub retargeted_copies: u64,
}

/// `GET /metrics` of a storage node: the original product's fields first, then ydht's additions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMetrics {
    /// The node's id, e.g. `node-1`.
    pub node_id: String,
    /// Live keys (tombstones excluded; a key that just expired counts until the sweeper passes, within a second).
    pub key_count: u64,
    /// Bytes of WAL segments on disk.
    pub wal_size: u64,
    /// When these metrics were taken (Unix seconds).
    pub timestamp: u64,
    /// The same in Unix milliseconds: gateways measure their clock offset against it.
    #[serde(default)]
    pub timestamp_ms: u64,
    /// Deleted keys remembered until their grace period ends.
    pub tombstones: u64,
    /// Bytes of this node's WAL segments and snapshot.
    pub data_bytes: u64,
    /// Size of the file system holding the data dir.
    pub disk_total_bytes: u64,
    /// Free space on that file system available to ydht.
    pub disk_available_bytes: u64,
    /// `group` or `per-write`.
    pub sync_mode: String,
    /// fdatasync calls since start.
    pub wal_syncs: u64,
    /// Records appended to the WAL since start.
    pub wal_records: u64,
    /// Snapshots (compactions) written since start.
    pub snapshots_written: u64,
    /// Size of the latest snapshot written since start.
    pub last_snapshot_bytes: u64,
    /// When the latest snapshot was written (Unix seconds), if one was since start.
    pub last_snapshot_at: Option<u64>,
    /// Writes that became a key's current version since start.
    pub writes_applied: u64,
    /// Writes ignored because the node held a newer or equal version.
    pub writes_ignored: u64,
    /// Expired values dropped by the sweeper since start.
    pub expired_swept: u64,
    /// Tombstones and expired entries purged after the grace period since start.
    pub tombstones_purged: u64,
    /// Tombstones past the grace period kept because a peer (down, or not yet synced) is not
    /// known to hold them yet, as of the last sweep (every second).
    #[serde(default)]
    pub tombstones_held_back: u64,
    /// Seconds since the oldest of those deletes; absent when none is held back.
    #[serde(default)]
    pub oldest_held_back_tombstone_age_secs: Option<u64>,
    /// Seconds since the node started.
    pub uptime_secs: u64,
    /// Whether this node runs anti-entropy (it was given its peers and a non-zero interval).
    #[serde(default)]
    pub anti_entropy_enabled: bool,
    /// Anti-entropy rounds finished since start.
    #[serde(default)]
    pub anti_entropy_rounds: u64,
    /// Records this node pulled from or pushed to its peers that became the current version there.
    #[serde(default)]
    pub anti_entropy_keys_repaired: u64,
    /// Peer exchanges that failed (peer down, wrong secret, different ring) since start.
    #[serde(default)]
    pub anti_entropy_errors: u64,
    /// Seconds since the last round in which every peer was compared successfully; absent before the first.
    #[serde(default)]
    pub anti_entropy_last_sync_age_secs: Option<u64>,
}

/// `POST /batch` answer of a storage node: one result per record, in the batch's order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeBatchResponse {
    /// What each write did.
    pub results: Vec<StoreWriteResponse>,
}

/// The replicator's answer to `POST /jobs`: 202 once every job of the body is
/// durable in its queue log (and, with `x-ydht-wait: N`, acknowledged by N targets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobsAccepted {
    /// The jobs' ids in the replicator's queue, in the order of the body.
    pub job_ids: Vec<u64>,
    /// With `x-ydht-wait: N`: how many targets acknowledged each job before the answer (each at least N).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked: Option<Vec<u32>>,
}

/// The replicator's 504 when some job of a `POST /jobs` with `x-ydht-wait: N`
/// did not reach N acknowledgements in time. The jobs stay queued and are still delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobsWaitTimedOut {
    /// What happened, in one line, naming the jobs short of N.
    pub error: String,
    /// The jobs' ids (durable, and still being delivered), in the order of the body.
    pub job_ids: Vec<u64>,
    /// How many targets acknowledged each job before the answer.
    pub acked: Vec<u32>,
}

/// `GET /health` of the replicator: the original product's fields first, then ydht's additions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicatorHealth {
    /// `healthy`, or `degraded` while the queue is full (new jobs are refused with 503).
    pub status: String,
    /// Always `replicator`.
    pub service: String,
    /// Jobs waiting or in flight.
    pub queue_size: u64,
    /// Most unfinished jobs (`--max-queue`).
    #[serde(default)]
    pub capacity: u64,
    /// Bytes of values held by unfinished jobs.
    #[serde(default)]
    pub queue_bytes: u64,
    /// Most value bytes held (`--max-queue-bytes`).
    #[serde(default)]
    pub capacity_bytes: u64,
    /// Why the replicator is degraded, for an operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The gateway's answer to `PUT` and `DELETE /v1/kv/{key}` (the original product's shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvWriteResponse {
    /// Always `true` on a 200.
    pub success: bool,
    /// The key as the client named it (without the tenant prefix).
    pub key: String,
    /// Base URL of the node that made the write durable first (the ring primary unless it was down).
    pub primary_node: String,
    /// That node's id (`node-1`), for people; absent if the gateway no longer knows the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_node_id: Option<String>,
    /// Further copies (beside `primary_node`) that are durable or durably queued at the replicator; at most N-1.
    pub replicas: usize,
    /// The version the write stored (also sent as `ETag: "<version>"`); 0 from gateways before conditional writes.
    #[serde(default)]
    pub version: u64,
    /// Set when fewer than N-1 copies could be handed over durably: why, and what it means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// One key of the gateway's listing `GET /v1/kv`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvListEntry {
    /// The key as the client named it.
    pub key: String,
    /// Value size in bytes.
    pub size: u64,
    /// When the key expires, if it has a TTL.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The version listed (its ETag is `"<version>"`); 0 from gateways before conditional writes.
    #[serde(default)]
    pub version: u64,
}

/// The `data:` of a `put`, `delete` or `expire` event of `GET /v1/watch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// The key as the client named it.
    pub key: String,
    /// The version of the change (an expiry has its value's version).
    pub version: u64,
    /// The value's size in bytes (0 for a delete or an expiry).
    pub size: u64,
    /// The value's content type (`null` for a delete or an expiry).
    pub content_type: Option<String>,
    /// When the value expires, if it has a TTL.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// With `values=true`: the value, when it is UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// With `values=true`: the value in standard base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
    /// With `values=true`: `true` when the value was already overwritten, deleted or expired
    /// when the event was sent (a later event reports that); the value is then left out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub superseded: bool,
}

/// `GET /v1/kv?prefix=&limit=&cursor=`: a page of the tenant's own keys, ascending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvListResponse {
    /// The keys of this page.
    pub keys: Vec<KvListEntry>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyPercentiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest request seen.
    pub max: f64,
    /// Number of requests measured.
    pub count: u64,
}

/// Request counters of one tenant at the gateway.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserRequestRate {
    /// The tenant.
    pub user_id: i64,
    /// Requests since the gateway started.
    pub requests: u64,
    /// Requests per second over roughly the last minute.
    pub requests_per_second: f64,
}

/// `GET /metrics` of the gateway.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GatewayMetrics {
    /// Always `gateway`.
    pub service: String,
    /// Unix seconds when the metrics were taken.
    pub timestamp: u64,
    /// Seconds since the gateway started.
    pub uptime_secs: u64,
    /// `/v1` requests since start (every status).
    pub requests_total: u64,
    /// `/v1` requests per second over roughly the last minute.
    pub requests_per_second: f64,
    /// Latency of `/v1` requests since start.
    pub latency_ms: LatencyPercentiles,
    /// Requests refused with 429.
    pub rate_limit_hits: u64,
    /// Per-tenant request counters, busiest first; only for callers with the cluster secret
    /// (absent otherwise: user ids and their traffic are not public).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<UserRequestRate>>,
    /// Failed requests per node id (unreachable, timeout or 5xx).
    pub node_errors: std::collections::BTreeMap<String, u64>,
    /// Replication jobs the replicator could not take (the gateway copied the data itself).
    pub replicator_failures: u64,
    /// Stale replicas repaired after a strong read.
    pub read_repairs: u64,
    /// Writes rewritten with a newer version because a node already held a newer one.
    #[serde(default)]
    pub writes_overtaken: u64,
    /// Conditional writes (If-Match / If-None-Match) that were written.
    #[serde(default)]
    pub conditional_written: u64,
    /// Conditional writes refused with 412 (the precondition did not hold).
    #[serde(default)]
    pub conditional_failed: u64,
    /// Conditional writes chosen by a fast round (one round trip, on this gateway's previous
    /// write of the key).
    #[serde(default)]
    pub conditional_fast: u64,
    /// Strong reads that met a conditional write not yet committed and settled the key through a
    /// Paxos round before answering.
    #[serde(default)]
    pub reads_settled: u64,
    /// Watches (`GET /v1/watch`) open now.
    #[serde(default)]
    pub watches_open: u64,
    /// Watch events sent.
    #[serde(default)]
    pub watch_events: u64,
    /// Watches dropped because their client read too slowly.
    #[serde(default)]
    pub watches_dropped: u64,
    /// The storage nodes' clocks minus this gateway's (median, ms); `null` before the first probe.
    #[serde(default)]
    pub clock_offset_ms: Option<i64>,
}

/// One operation's answer in `POST /v1/batch` (in the order of the request's `ops`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct OpResult {
    /// The HTTP status the operation alone would have had.
    pub status: u16,
    /// The key (`null` when the operation did not name one).
    pub key: Option<String>,
    /// The version read or written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// A value read, when it is UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// A value read that is not UTF-8, in standard base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
    /// The content type of a value read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// When a value read expires (Unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// On a 412: the key's current ETag (`null` when it does not exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<Option<String>>,
}

/// The answer to `POST /v1/batch`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchResponse {
    /// One result per operation, in order.
    pub results: Vec<OpResult>,
}

/// One ring member in the gateway's `GET /cluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterNode {
    /// Node id used for placement, e.g. `node-1`.
    pub id: String,
    /// Base URL of its internal API.
    pub url: String,
    /// Whether the gateway currently considers it up.
    pub healthy: bool,
    /// When it last changed between healthy and down (or when the gateway started).
    pub since: chrono::DateTime<chrono::Utc>,
    /// Its share of the hash space as primary owner (0..1).
    pub share: f64,
    /// Virtual nodes it has on the ring.
    pub vnodes: usize,
    /// Its live key count from its last successful health check.
    pub key_count: Option<u64>,
    /// Its membership state: `joining`, `active`, `leaving` or `down`.
    #[serde(default = "active")]
    pub state: String,
}

fn active() -> String {
    "active".to_string()
}

/// The gateway's `GET /cluster` (cluster secret): ring members and the services it uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The storage nodes, in configuration order.
    pub nodes: Vec<ClusterNode>,
    /// Copies kept of every key (N).
    pub replicas: usize,
    /// Virtual nodes per physical node.
    pub vnodes: usize,
    /// Base URL of the replicator.
    pub replicator_url: String,
    /// Base URL of the users service.
    pub users_url: String,
    /// The membership version the ring was built from (0: the static `YDHT_NODES` ring).
    #[serde(default)]
    pub membership_version: u64,
    /// Progress of the membership change in progress (absent on a static ring).
    #[serde(default)]
    pub rebalance: Option<RebalanceSummary>,
}

/// Where a membership change stands, as `GET /cluster` and `ydht top` show it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebalanceSummary {
    /// The membership version.
    pub version: u64,
    /// No member is joining, leaving or down.
    pub settled: bool,
    /// Ring segments pulled so far, summed over the nodes.
    pub arcs_done: u64,
    /// Ring segments to pull in all.
    pub arcs_total: u64,
    /// Nodes of the new ring that finished.
    pub nodes_done: u64,
    /// Nodes of the new ring.
    pub nodes: u64,
}

/// A node's `GET /digest` (cluster secret): one hash per ring arc for anti-entropy.
///
/// Every key of one arc of the ring has the same owners, so two nodes compare
/// exactly the arcs both own. `buckets[arc]` is the XOR of a 64-bit hash of
/// (key, version, tombstone) over the node's entries in that arc, tombstones
/// included; it is maintained on every write, so a digest costs O(arcs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDigest {
    /// The answering node's id.
    pub node_id: String,
    /// Hash of the ring (member ids, vnodes, replicas): digests are only comparable when equal.
    pub fingerprint: u64,
    /// One hash per arc, indexed like the ring's points.
    pub buckets: Vec<u64>,
}

/// A node's `POST /range` request (cluster secret): its entries in some arcs, by key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRangeRequest {
    /// The arcs (digest bucket indexes) to list.
    pub buckets: Vec<usize>,
    /// List keys after this one (exclusive); absent to start at the beginning.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Most entries to return (1..=1000).
    pub limit: usize,
}

/// One entry of a [`NodeRangePage`]: a key's current version, tombstones included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRangeEntry {
    /// The stored key.
    pub key: String,
    /// Its current version.
    pub version: u64,
    /// Whether that version is a delete.
    pub tombstone: bool,
    /// Absolute expiry in Unix milliseconds, if any.
    #[serde(default)]
    pub expires_at: Option<u64>,
}

/// A node's answer to `POST /range`: entries in ascending key order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRangePage {
    /// The entries.
    pub entries: Vec<NodeRangeEntry>,
    /// The last key returned when more follow; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A node's `POST /export` request (cluster secret): the answer is a `/batch`
/// body holding the node's current record (value or tombstone) of each key it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeExportRequest {
    /// The keys wanted (at most 1000).
    pub keys: Vec<String>,
}

/// A node's `POST /scan` request (cluster secret): its entries whose ring position lies in
/// some intervals, by key. Rebalancing pulls the segments a node gains with it; unlike
/// `/range` it does not depend on the node's own view of the ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeScanRequest {
    /// Ring intervals `(start, end]` (see [`crate::membership::in_interval`]).
    pub intervals: Vec<(u64, u64)>,
    /// List keys after this one (exclusive); absent to start at the beginning.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Most entries to return (1..=1000).
    pub limit: usize,
}
