//! The gateway's own measurements: request rates (overall and per tenant),
//! latency percentiles from an HDR histogram, rate-limit hits and failures.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use std::time::Instant;

use crate::proto::{GatewayMetrics, LatencyPercentiles, UserRequestRate};
use crate::sync::Lock;

const WINDOW: Duration = Duration::from_secs(60);

/// Requests per second over a sliding minute, estimated from two fixed windows.
#[derive(Debug, Clone)]
struct RateCounter {
    total: u64,
    window_start: Instant,
    current: u64,
    previous: u64,
}

impl RateCounter {
    fn new(now: Instant) -> Self {
        Self { total: 0, window_start: now, current: 0, previous: 0 }
    }

    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= WINDOW * 2 {
            self.previous = 0;
            self.current = 0;
            self.window_start = now;
        } else if elapsed >= WINDOW {
            self.previous = self.current;
            self.current = 0;
            self.window_start += WINDOW;
        }
    }

    fn hit(&mut self, now: Instant) {
        self.roll(now);
        self.total += 1;
        self.current += 1;
    }

    fn per_second(&mut self, now: Instant) -> f64 {
        self.roll(now);
        let into_window = now.saturating_duration_since(self.window_start).as_secs_f64() / WINDOW.as_secs_f64();
        (self.previous as f64 * (1.0 - into_window) + self.current as f64) / WINDOW.as_secs_f64()
    }
}

/// Counters shared by every request; std `Mutex`es are held for a few operations, never across an `.await`.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    overall: Mutex<RateCounter>,
    users: Mutex<HashMap<i64, RateCounter>>,
    latency_us: Mutex<Histogram<u64>>,
    rate_limit_hits: AtomicU64,
    replicator_failures: AtomicU64,
    read_repairs: AtomicU64,
    writes_overtaken: AtomicU64,
    conditional_written: AtomicU64,
    conditional_failed: AtomicU64,
    conditional_fast: AtomicU64,
    reads_settled: AtomicU64,
    watch_events: AtomicU64,
    watches_dropped: AtomicU64,
    /// `/v1` answers by operation ([`OPERATIONS`]) and status class (1xx–5xx).
    answers: [[AtomicU64; 5]; OPERATIONS.len()],
}

/// The operations `/v1` answers are counted by.
pub const OPERATIONS: [&str; 6] = ["get", "put", "delete", "list", "batch", "watch"];

impl Default for Metrics {
    fn default() -> Self {
        let now = Instant::now();
        Self {
            started: now,
            overall: Mutex::new(RateCounter::new(now)),
            users: Mutex::new(HashMap::new()),
            latency_us: Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds are valid")),
            rate_limit_hits: AtomicU64::new(0),
            replicator_failures: AtomicU64::new(0),
            read_repairs: AtomicU64::new(0),
            writes_overtaken: AtomicU64::new(0),
            conditional_written: AtomicU64::new(0),
            conditional_failed: AtomicU64::new(0),
            conditional_fast: AtomicU64::new(0),
            reads_settled: AtomicU64::new(0),
            watch_events: AtomicU64::new(0),
            watches_dropped: AtomicU64::new(0),
            answers: Default::default(),
        }
    }
}

impl Metrics {
    /// Records one finished `/v1` request.
    pub fn record_request(&self, user_id: Option<i64>, latency: Duration) {
        self.record_request_at(user_id, latency, Instant::now());
    }

    fn record_request_at(&self, user_id: Option<i64>, latency: Duration, now: Instant) {
        self.overall.locked().hit(now);
        if let Some(user_id) = user_id {
            self.users.locked().entry(user_id).or_insert_with(|| RateCounter::new(now)).hit(now);
        }
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
        self.latency_us.locked().saturating_record(micros);
    }

    /// Counts an answer of `operation` (one of [`OPERATIONS`]) with `status`.
    pub fn count_answer(&self, operation: &str, status: u16) {
        let (Some(row), Some(class)) =
            (OPERATIONS.iter().position(|known| *known == operation), (status / 100).checked_sub(1))
        else {
            return;
        };
        if let Some(counter) = self.answers[row].get(usize::from(class)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The answers counted so far: `(operation, "2xx", count)`, only those seen.
    pub fn answers(&self) -> Vec<(&'static str, String, u64)> {
        let mut answers = Vec::new();
        for (operation, row) in OPERATIONS.iter().zip(&self.answers) {
            for (class, counter) in row.iter().enumerate() {
                let count = counter.load(Ordering::Relaxed);
                if count > 0 {
                    answers.push((*operation, format!("{}xx", class + 1), count));
                }
            }
        }
        answers
    }

    /// Counts a 429.
    pub fn rate_limited(&self) {
        self.rate_limit_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a replication job the replicator did not take.
    pub fn replicator_failed(&self) {
        self.replicator_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a stale replica repaired after a strong read.
    pub fn read_repaired(&self) {
        self.read_repairs.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a write rewritten with a newer version because a node held a newer one.
    pub fn write_overtaken(&self) {
        self.writes_overtaken.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a conditional write that was written (`true`) or answered 412.
    pub fn conditional(&self, written: bool) {
        let counter = if written { &self.conditional_written } else { &self.conditional_failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a conditional write chosen by a fast round.
    pub fn conditional_fast(&self) {
        self.conditional_fast.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a strong read settled through a Paxos round.
    pub fn read_settled(&self) {
        self.reads_settled.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a watch event sent.
    pub fn watch_event(&self) {
        self.watch_events.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a watch dropped for reading too slowly.
    pub fn watch_dropped(&self) {
        self.watches_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// The request latencies since start as a Prometheus histogram: (sum in seconds, count,
    /// cumulative buckets).
    pub fn latency_buckets(&self) -> (f64, u64, Vec<(f64, u64)>) {
        crate::exposition::latency_buckets(&self.latency_us.locked())
    }

    /// A snapshot for `GET /metrics`; `node_errors` comes from the placement.
    pub fn snapshot(&self, node_errors: Vec<(String, u64)>) -> GatewayMetrics {
        self.snapshot_at(node_errors, Instant::now())
    }

    fn snapshot_at(&self, node_errors: Vec<(String, u64)>, now: Instant) -> GatewayMetrics {
        let (requests_total, requests_per_second) = {
            let mut overall = self.overall.locked();
            (overall.total, overall.per_second(now))
        };
        let mut users: Vec<UserRequestRate> = self
            .users
            .locked()
            .iter_mut()
            .map(|(user_id, counter)| UserRequestRate {
                user_id: *user_id,
                requests: counter.total,
                requests_per_second: counter.per_second(now),
            })
            .collect();
        users.sort_by(|a, b| b.requests_per_second.total_cmp(&a.requests_per_second).then(b.requests.cmp(&a.requests)));
        let latency_ms = {
            let histogram = self.latency_us.locked();
            let ms = |micros: u64| micros as f64 / 1000.0;
            LatencyPercentiles {
                p50: ms(histogram.value_at_quantile(0.50)),
                p95: ms(histogram.value_at_quantile(0.95)),
                p99: ms(histogram.value_at_quantile(0.99)),
                max: ms(histogram.max()),
                count: histogram.len(),
            }
        };
        GatewayMetrics {
            service: "gateway".to_string(),
            timestamp: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs()),
            uptime_secs: now.saturating_duration_since(self.started).as_secs(),
            requests_total,
            requests_per_second,
            latency_ms,
            rate_limit_hits: self.rate_limit_hits.load(Ordering::Relaxed),
            users: Some(users),
            node_errors: node_errors.into_iter().collect(),
            replicator_failures: self.replicator_failures.load(Ordering::Relaxed),
            read_repairs: self.read_repairs.load(Ordering::Relaxed),
            writes_overtaken: self.writes_overtaken.load(Ordering::Relaxed),
            conditional_written: self.conditional_written.load(Ordering::Relaxed),
            conditional_failed: self.conditional_failed.load(Ordering::Relaxed),
            conditional_fast: self.conditional_fast.load(Ordering::Relaxed),
            reads_settled: self.reads_settled.load(Ordering::Relaxed),
            watches_open: 0,
            watch_events: self.watch_events.load(Ordering::Relaxed),
            watches_dropped: self.watches_dropped.load(Ordering::Relaxed),
            clock_offset_ms: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_per_user_rates() {
        let metrics = Metrics::default();
        let now = metrics.started;
        for ms in 1..=100 {
            metrics.record_request_at(Some(1), Duration::from_millis(ms), now);
        }
        metrics.record_request_at(Some(2), Duration::from_millis(5), now);
        metrics.rate_limited();
        let snapshot = metrics.snapshot_at(vec![("node-1".into(), 4)], now);
        assert_eq!(snapshot.requests_total, 101);
        assert_eq!(snapshot.latency_ms.count, 101);
        assert!((49.0..=51.0).contains(&snapshot.latency_ms.p50), "{:?}", snapshot.latency_ms);
        assert!((98.0..=100.1).contains(&snapshot.latency_ms.p99), "{:?}", snapshot.latency_ms);
        assert_eq!(snapshot.rate_limit_hits, 1);
        assert_eq!(snapshot.users.as_ref().unwrap()[0].user_id, 1);
        assert_eq!(snapshot.users.as_ref().unwrap()[0].requests, 100);
        assert_eq!(snapshot.node_errors["node-1"], 4);
        // 101 requests in the current minute.
        assert!((snapshot.requests_per_second - 101.0 / 60.0).abs() < 1e-6);
        // Two minutes later nothing is recent any more.
        assert_eq!(metrics.snapshot_at(vec![], now + Duration::from_secs(121)).requests_per_second, 0.0);
    }
}
