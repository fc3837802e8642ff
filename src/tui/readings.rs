//! What the services report, read defensively.
//!
//! Metrics shapes grow between versions, so the dashboard looks fields up by
//! the names in [`crate::proto`] and treats anything missing or malformed as
//! unknown — never as an error (an older or newer server still shows what it can).

use serde_json::Value;

/// The value at a dotted `path` (`latency_ms.p99`) inside `value`.
pub fn at<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |current, part| current.get(part))
}

/// The first of `paths` holding a finite number (or a numeric string).
pub fn number(value: &Value, paths: &[&str]) -> Option<f64> {
    paths.iter().find_map(|path| at(value, path).and_then(as_f64))
}

/// Like [`number`], for non-negative counts.
pub fn count(value: &Value, paths: &[&str]) -> Option<u64> {
    number(value, paths).filter(|n| *n >= 0.0).map(|n| n.round() as u64)
}

/// The first of `paths` holding a non-empty string.
pub fn text(value: &Value, paths: &[&str]) -> Option<String> {
    paths.iter().find_map(|path| match at(value, path)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    })
}

fn as_f64(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|n: &f64| n.is_finite())
}

/// A point in time as Unix milliseconds, from Unix seconds, Unix milliseconds
/// or an RFC 3339 string.
pub fn timestamp_ms(value: &Value) -> Option<u64> {
    if let Value::String(s) = value {
        if let Ok(time) = chrono::DateTime::parse_from_rfc3339(s.trim()) {
            return u64::try_from(time.timestamp_millis()).ok();
        }
    }
    let n = as_f64(value).filter(|n| *n > 0.0)?;
    // Anything below 10^11 is seconds (10^11 ms is 1973; 10^11 s is the year 5138).
    Some(if n >= 1e11 { n as u64 } else { (n * 1000.0) as u64 })
}

/// One member of the ring as the gateway's `GET /cluster` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct RingMember {
    /// Node id, e.g. `node-1`.
    pub id: String,
    /// Base URL of the node.
    pub url: String,
    /// The gateway's own view of the node's health.
    pub healthy: Option<bool>,
    /// Since when (Unix ms) the node has been in its current health state.
    pub since_ms: Option<u64>,
    /// The node's share of the hash space as primary owner, 0..=1.
    pub share: Option<f64>,
    /// Virtual nodes the node has on the ring.
    pub vnodes: Option<u64>,
    /// Key count, when the gateway reports it.
    pub key_count: Option<u64>,
}

/// The gateway's `GET /cluster`: ring membership and the other services' URLs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterReading {
    /// Ring members in the gateway's order.
    pub nodes: Vec<RingMember>,
    /// Replication factor N.
    pub replicas: Option<u64>,
    /// Virtual nodes per node.
    pub vnodes: Option<u64>,
    /// The replicator's base URL.
    pub replicator_url: Option<String>,
    /// The users service's base URL.
    pub users_url: Option<String>,
    /// The membership change in progress, if the gateway follows a membership.
    pub rebalance: Option<crate::proto::RebalanceSummary>,
}

impl ClusterReading {
    /// Reads `/cluster`; members without a URL are skipped (nothing to probe).
    pub fn from_json(value: &Value) -> Self {
        let nodes = at(value, "nodes")
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(RingMember::from_json).collect())
            .unwrap_or_default();
        Self {
            nodes,
            replicas: count(value, &["replicas"]),
            vnodes: count(value, &["vnodes"]),
            replicator_url: text(value, &["replicator_url"]),
            users_url: text(value, &["users_url"]),
            rebalance: at(value, "rebalance").and_then(|value| serde_json::from_value(value.clone()).ok()),
        }
    }
}

impl RingMember {
    fn from_json(value: &Value) -> Option<Self> {
        let url = text(value, &["url"])?;
        let share = number(value, &["share"]).map(|share| if share > 1.0 { share / 100.0 } else { share });
        Some(Self {
            id: text(value, &["id"]).unwrap_or_else(|| url.clone()),
            url,
            healthy: at(value, "healthy").and_then(Value::as_bool),
            since_ms: at(value, "since").and_then(timestamp_ms),
            share,
            vnodes: count(value, &["vnodes"]),
            key_count: count(value, &["key_count"]),
        })
    }
}

/// A node's anti-entropy progress (the `anti_entropy_*` fields of [`crate::proto::NodeMetrics`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AntiEntropyReading {
    /// Whether the node runs anti-entropy (it was given its peers).
    pub enabled: bool,
    /// Rounds finished since the node started.
    pub rounds: u64,
    /// Records that became the current version on one side of an exchange.
    pub keys_repaired: u64,
    /// Failed peer exchanges since start.
    pub errors: u64,
    /// Seconds since every peer was last compared successfully; `None` before the first such round.
    pub last_sync_age_secs: Option<u64>,
}

impl AntiEntropyReading {
    /// Reads the fields; `None` from a node that does not report anti-entropy at all.
    pub fn from_json(value: &Value) -> Option<Self> {
        let enabled = at(value, "anti_entropy_enabled")?.as_bool()?;
        Some(Self {
            enabled,
            rounds: count(value, &["anti_entropy_rounds"]).unwrap_or(0),
            keys_repaired: count(value, &["anti_entropy_keys_repaired"]).unwrap_or(0),
            errors: count(value, &["anti_entropy_errors"]).unwrap_or(0),
            last_sync_age_secs: count(value, &["anti_entropy_last_sync_age_secs"]),
        })
    }
}

/// A storage node's `GET /metrics` ([`crate::proto::NodeMetrics`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NodeReading {
    /// Live keys on the node.
    pub key_count: Option<u64>,
    /// Bytes of WAL segments.
    pub wal_size: Option<u64>,
    /// Bytes of the node's WAL segments and snapshot.
    pub data_bytes: Option<u64>,
    /// Size of the file system holding the data.
    pub disk_total: Option<u64>,
    /// Free space on that file system.
    pub disk_available: Option<u64>,
    /// Anti-entropy progress, when the node reports it.
    pub anti_entropy: Option<AntiEntropyReading>,
}

impl NodeReading {
    /// Reads a node's metrics.
    pub fn from_json(value: &Value) -> Self {
        Self {
            key_count: count(value, &["key_count"]),
            wal_size: count(value, &["wal_size"]),
            data_bytes: count(value, &["data_bytes"]),
            disk_total: count(value, &["disk_total_bytes"]),
            disk_available: count(value, &["disk_available_bytes"]),
            anti_entropy: AntiEntropyReading::from_json(value),
        }
    }
}

/// The replicator's `GET /metrics` ([`crate::proto::ReplicatorMetrics`] and any additions).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReplicatorReading {
    /// Jobs accepted since start (a counter).
    pub total_replications: Option<u64>,
    /// Replica writes that succeeded.
    pub successful_replicas: Option<u64>,
    /// Replica writes that failed after all retries.
    pub failed_replicas: Option<u64>,
    /// Jobs waiting or in flight.
    pub queue_size: Option<u64>,
    /// Mean acceptance-to-acknowledgement time.
    pub average_ack_time_ms: Option<f64>,
    /// Age of the oldest unfinished job.
    pub max_replication_lag_ms: Option<f64>,
    /// Replica writes waiting for a retry.
    pub retries_in_progress: Option<u64>,
    /// Replica writes parked as hinted handoffs until their target is back.
    pub hinted_handoffs: Option<u64>,
    /// Most unfinished jobs (`--max-queue`), when reported.
    pub queue_capacity: Option<u64>,
}

impl ReplicatorReading {
    /// Reads the replicator's metrics.
    pub fn from_json(value: &Value) -> Self {
        Self {
            total_replications: count(value, &["total_replications"]),
            successful_replicas: count(value, &["successful_replicas"]),
            failed_replicas: count(value, &["failed_replicas"]),
            queue_size: count(value, &["queue_size"]),
            average_ack_time_ms: number(value, &["average_ack_time_ms"]),
            max_replication_lag_ms: number(value, &["max_replication_lag_ms"]),
            retries_in_progress: count(value, &["retries_in_progress"]),
            hinted_handoffs: count(value, &["hinted_handoffs"]),
            queue_capacity: count(value, &["queue_capacity"]),
        }
    }
}

/// One tenant's line in the gateway's metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantReading {
    /// The user id (as text).
    pub user: String,
    /// Requests since the gateway started (a counter).
    pub requests: Option<u64>,
    /// A rate the gateway computed itself, used when there is no counter.
    pub reported_rps: Option<f64>,
}

/// The gateway's `GET /metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GatewayReading {
    /// Requests since start (a counter).
    pub total_requests: Option<u64>,
    /// A rate the gateway computed itself, used when there is no counter.
    pub reported_rps: Option<f64>,
    /// Median latency in milliseconds.
    pub p50_ms: Option<f64>,
    /// 95th percentile latency in milliseconds.
    pub p95_ms: Option<f64>,
    /// 99th percentile latency in milliseconds.
    pub p99_ms: Option<f64>,
    /// Requests refused by the rate limiter since start (a counter).
    pub rate_limit_hits: Option<u64>,
    /// Per-tenant request counters.
    pub tenants: Vec<TenantReading>,
    /// Errors talking to each node since start, by node id or URL.
    pub node_errors: Vec<(String, u64)>,
}

impl GatewayReading {
    /// Reads the gateway's metrics ([`crate::proto::GatewayMetrics`]).
    pub fn from_json(value: &Value) -> Self {
        let tenants = at(value, "users")
            .and_then(Value::as_array)
            .map(|users| {
                users
                    .iter()
                    .filter_map(|user| {
                        let user_id =
                            text(user, &["user_id"]).or_else(|| count(user, &["user_id"]).map(|id| id.to_string()));
                        Some(TenantReading {
                            user: user_id?,
                            requests: count(user, &["requests"]),
                            reported_rps: number(user, &["requests_per_second"]),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let node_errors = at(value, "node_errors")
            .and_then(Value::as_object)
            .map(|errors| errors.iter().filter_map(|(node, count)| Some((node.clone(), count.as_u64()?))).collect())
            .unwrap_or_default();
        Self {
            total_requests: count(value, &["requests_total"]),
            reported_rps: number(value, &["requests_per_second"]),
            p50_ms: number(value, &["latency_ms.p50"]),
            p95_ms: number(value, &["latency_ms.p95"]),
            p99_ms: number(value, &["latency_ms.p99"]),
            rate_limit_hits: count(value, &["rate_limit_hits"]),
            tenants,
            node_errors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cluster_lists_members_and_service_urls() {
        let cluster = ClusterReading::from_json(&json!({
            "nodes": [
                {"id": "node-1", "url": "http://a", "healthy": true, "since": 1_700_000_000_000u64, "share": 0.34, "vnodes": 150},
                {"id": "node-2", "url": "http://b", "healthy": false, "since": "2023-11-14T22:13:20Z", "share": 33.0},
                {"id": "broken"}
            ],
            "replicas": 3, "vnodes": 150, "replicator_url": "http://r", "users_url": "http://u"
        }));
        assert_eq!(cluster.nodes.len(), 2, "a member without a URL cannot be probed");
        assert_eq!(cluster.nodes[0].since_ms, Some(1_700_000_000_000));
        assert_eq!(cluster.nodes[1].since_ms, Some(1_700_000_000_000), "RFC 3339 since");
        assert_eq!(cluster.nodes[1].share, Some(0.33), "percent shares are normalised");
        assert_eq!(cluster.nodes[1].healthy, Some(false));
        assert_eq!(cluster.replicator_url.as_deref(), Some("http://r"));
        assert_eq!(cluster.replicas, Some(3));
    }

    #[test]
    fn node_metrics_are_read_and_garbage_is_unknown() {
        let metrics = crate::proto::NodeMetrics {
            node_id: "node-1".into(),
            key_count: 12,
            wal_size: 4096,
            data_bytes: 5000,
            disk_total_bytes: 1000,
            disk_available_bytes: 400,
            anti_entropy_enabled: true,
            anti_entropy_rounds: 9,
            anti_entropy_keys_repaired: 4,
            anti_entropy_errors: 1,
            anti_entropy_last_sync_age_secs: Some(30),
            ..Default::default()
        };
        let node = NodeReading::from_json(&serde_json::to_value(metrics).unwrap());
        let anti_entropy =
            AntiEntropyReading { enabled: true, rounds: 9, keys_repaired: 4, errors: 1, last_sync_age_secs: Some(30) };
        let expected = NodeReading {
            key_count: Some(12),
            wal_size: Some(4096),
            data_bytes: Some(5000),
            disk_total: Some(1000),
            disk_available: Some(400),
            anti_entropy: Some(anti_entropy),
        };
        assert_eq!(node, expected);
        assert_eq!(NodeReading::from_json(&json!("garbage")), NodeReading::default());
    }

    #[test]
    fn the_gateways_own_shapes_are_read() {
        // `GatewayMetrics` and `ClusterView` as the gateway serialises them.
        let metrics = GatewayReading::from_json(&json!({
            "service": "gateway", "timestamp": 1_700_000_000u64, "uptime_secs": 60,
            "requests_total": 120, "requests_per_second": 2.0,
            "latency_ms": {"p50": 1.0, "p95": 2.0, "p99": 3.0, "max": 9.0, "count": 120},
            "rate_limit_hits": 4,
            "users": [{"user_id": 3, "requests": 100, "requests_per_second": 1.5}],
            "node_errors": {"node-1": 0, "node-2": 5},
            "replicator_failures": 0, "read_repairs": 1
        }));
        assert_eq!(metrics.total_requests, Some(120));
        assert_eq!(metrics.reported_rps, Some(2.0));
        assert_eq!((metrics.p50_ms, metrics.p95_ms, metrics.p99_ms), (Some(1.0), Some(2.0), Some(3.0)));
        assert_eq!(metrics.rate_limit_hits, Some(4));
        assert_eq!(
            metrics.tenants,
            vec![TenantReading { user: "3".into(), requests: Some(100), reported_rps: Some(1.5) }]
        );
        assert_eq!(metrics.node_errors, vec![("node-1".to_string(), 0), ("node-2".to_string(), 5)]);
        let cluster = ClusterReading::from_json(&json!({
            "nodes": [{"id": "node-1", "url": "http://127.0.0.1:8082", "healthy": true,
                       "since": "2026-11-26T19:00:00Z", "share": 0.5, "vnodes": 150, "key_count": null}],
            "replicas": 3, "vnodes": 150, "replicator_url": "http://127.0.0.1:8085", "users_url": "http://127.0.0.1:8081"
        }));
        assert_eq!(cluster.nodes[0].key_count, None);
        assert_eq!(cluster.nodes[0].since_ms, Some(1_795_719_600_000));
    }

    #[test]
    fn replicator_reads_the_original_fields_and_hints() {
        let metrics =
            crate::proto::ReplicatorMetrics { queue_size: 4, max_replication_lag_ms: 12.5, ..Default::default() };
        let mut value = serde_json::to_value(metrics).unwrap();
        value["hinted_handoffs"] = json!(2);
        let reading = ReplicatorReading::from_json(&value);
        assert_eq!(reading.queue_size, Some(4));
        assert_eq!(reading.max_replication_lag_ms, Some(12.5));
        assert_eq!(reading.hinted_handoffs, Some(2));
        assert_eq!(reading.failed_replicas, Some(0));
    }
}
