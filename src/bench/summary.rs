//! What one benchmark run measured: the latency histogram, error counts by
//! kind, and their rendering as a table or as JSON for scripts.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histogram tracks (larger values are clamped to it): 5 minutes, in microseconds.
const MAX_TRACKED_MICROS: u64 = 300_000_000;

/// A latency histogram in microseconds (1 µs … 5 min, 3 significant digits).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_MICROS, 3).expect("constant histogram bounds are valid")
}

/// Records one latency, clamped into the histogram's range.
pub fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).clamp(1, MAX_TRACKED_MICROS);
    histogram.saturating_record(micros);
}

/// Why a request did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// The server answered with this non-2xx HTTP status.
    Status(u16),
    /// The connection could not be made (refused, reset before a response).
    Connect,
    /// No complete answer within the request timeout.
    Timeout,
    /// Anything else at the transport level (a broken body, a protocol error).
    Transport,
}

impl ErrorKind {
    /// Classifies a reqwest transport error.
    pub fn of(error: &reqwest::Error) -> Self {
        if error.is_timeout() {
            ErrorKind::Timeout
        } else if error.is_connect() {
            ErrorKind::Connect
        } else {
            ErrorKind::Transport
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Status(status) => write!(f, "http_{status}"),
            ErrorKind::Connect => f.write_str("connect"),
            ErrorKind::Timeout => f.write_str("timeout"),
            ErrorKind::Transport => f.write_str("transport"),
        }
    }
}

/// What one worker (or, merged, the whole run) observed.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Latencies of the successful requests, in microseconds.
    pub latencies: Histogram<u64>,
    /// Failed requests by kind.
    pub errors: BTreeMap<ErrorKind, u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally { latencies: new_histogram(), errors: BTreeMap::new() }
    }
}

impl Tally {
    /// Records a success that took `latency`.
    pub fn success(&mut self, latency: Duration) {
        record(&mut self.latencies, latency);
    }

    /// Records a failure.
    pub fn failure(&mut self, kind: ErrorKind) {
        *self.errors.entry(kind).or_default() += 1;
    }

    /// Adds another tally into this one.
    pub fn merge(&mut self, other: &Tally) {
        self.latencies.add(&other.latencies).expect("histograms share the same bounds");
        for (kind, count) in &other.errors {
            *self.errors.entry(*kind).or_default() += count;
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// Slowest request.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

/// Separate tallies of puts, gets and deletes.
#[derive(Debug, Clone, Default)]
pub struct OpTallies {
    /// Writes.
    pub put: Tally,
    /// Reads.
    pub get: Tally,
    /// Deletes (the clean-up after a run).
    pub delete: Tally,
}

impl OpTallies {
    /// The tally of `operation`.
    pub fn of(&mut self, operation: super::load::Operation) -> &mut Tally {
        match operation {
            super::load::Operation::Put | super::load::Operation::Cas => &mut self.put,
            super::load::Operation::Get => &mut self.get,
            super::load::Operation::Delete => &mut self.delete,
        }
    }

    /// Adds other tallies into these.
    pub fn merge(&mut self, other: &OpTallies) {
        self.put.merge(&other.put);
        self.get.merge(&other.get);
        self.delete.merge(&other.delete);
    }

    /// All operations together.
    pub fn total(&self) -> Tally {
        let mut total = self.put.clone();
        total.merge(&self.get);
        total.merge(&self.delete);
        total
    }
}

/// The description of a run, printed with its results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunInfo {
    /// `put`, `get` or `mixed`.
    pub op: String,
    /// `gateway`, `node` or `etcd`.
    pub target: String,
    /// The base URL that was measured.
    pub url: String,
    /// `eventual` / `strong` through the gateway; none for a node or etcd.
    pub consistency: Option<String>,
    /// Concurrent clients (connections).
    pub clients: usize,
    /// Value size in bytes.
    pub value_size: usize,
    /// Number of distinct keys.
    pub keys: u64,
    /// The key prefix the run wrote under.
    pub key_prefix: String,
    /// Puts per `POST /v1/batch` request, when batched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
}

/// What was measured for a set of requests (the whole run, or one operation of a mixed run).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figures {
    /// Measured requests (successes + errors), warm-up excluded.
    pub requests: u64,
    /// Successful (2xx) requests.
    pub ok: u64,
    /// Failed requests by kind (`http_429`, `connect`, `timeout`, `transport`).
    pub errors: BTreeMap<String, u64>,
    /// Successful requests per second.
    pub ops_per_sec: f64,
    /// Value bytes written or read by the successful requests, in MB (10^6 bytes) per second.
    pub mb_per_sec: f64,
    /// Latency of the successful requests.
    pub latency_ms: Latency,
}

impl Figures {
    fn new(tally: &Tally, elapsed: Duration, value_size: usize) -> Figures {
        let ok = tally.latencies.len();
        let failed: u64 = tally.errors.values().sum();
        let secs = elapsed.as_secs_f64();
        let histogram = &tally.latencies;
        let quantile = |q: f64| if ok == 0 { 0.0 } else { millis(histogram.value_at_quantile(q)) };
        let per_sec = |amount: f64| if secs > 0.0 { amount / secs } else { 0.0 };
        Figures {
            requests: ok + failed,
            ok,
            errors: tally.errors.iter().map(|(kind, count)| (kind.to_string(), *count)).collect(),
            ops_per_sec: per_sec(ok as f64),
            mb_per_sec: per_sec(ok as f64 * value_size as f64 / 1e6),
            latency_ms: Latency {
                p50: quantile(0.50),
                p95: quantile(0.95),
                p99: quantile(0.99),
                p99_9: quantile(0.999),
                max: if ok == 0 { 0.0 } else { millis(histogram.max()) },
                mean: if ok == 0 { 0.0 } else { histogram.mean() / 1000.0 },
            },
        }
    }

    /// Total failed requests.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The table rows of these figures, in order.
    fn rows(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ops/s", group_thousands(self.ops_per_sec.round() as u64)),
            ("MB/s", format!("{:.2}", self.mb_per_sec)),
            ("requests", group_thousands(self.requests)),
            ("ok", group_thousands(self.ok)),
            ("errors", group_thousands(self.error_count())),
            ("p50", format!("{:.3} ms", self.latency_ms.p50)),
            ("p95", format!("{:.3} ms", self.latency_ms.p95)),
            ("p99", format!("{:.3} ms", self.latency_ms.p99)),
            ("p99.9", format!("{:.3} ms", self.latency_ms.p99_9)),
            ("max", format!("{:.3} ms", self.latency_ms.max)),
            ("mean", format!("{:.3} ms", self.latency_ms.mean)),
        ]
    }
}

/// Share of failed requests above which a run is a failure (exit 4).
const MAX_ERROR_SHARE: f64 = 0.05;

/// The whole result of a run (the `--output json` document).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// What ran.
    #[serde(flatten)]
    pub info: RunInfo,
    /// All measured requests.
    #[serde(flatten)]
    pub total: Figures,
    /// Wall-clock seconds of the measured phase.
    pub elapsed_secs: f64,
    /// Puts and gets separately (`--op mixed` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_op: Option<BTreeMap<&'static str, Figures>>,
    /// How many of the run's keys were deleted afterwards; none with `--keep`.
    pub keys_deleted: Option<u64>,
    /// CPU time of the `--server-pid` processes during the measured phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu: Option<ServerCpu>,
}

/// What the measured phase cost the servers named by `--server-pid`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerCpu {
    /// User + system CPU seconds of all of them together.
    pub seconds: f64,
    /// Those seconds per measured request, in microseconds.
    pub us_per_op: f64,
}

impl ServerCpu {
    /// From the clock ticks spent over `requests` requests.
    pub fn new(ticks: u64, requests: u64) -> Self {
        let seconds = ticks as f64 / super::cpu::TICKS_PER_SECOND as f64;
        let us_per_op = if requests == 0 { 0.0 } else { seconds * 1e6 / requests as f64 };
        Self { seconds, us_per_op }
    }
}

fn millis(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

impl Summary {
    /// Summarises the measured tallies over `elapsed`; puts and gets apart when both ran.
    pub fn new(info: RunInfo, tallies: &OpTallies, elapsed: Duration) -> Summary {
        let total = Figures::new(&tallies.total(), elapsed, info.value_size);
        let by_op = (info.op == "mixed").then(|| {
            BTreeMap::from([
                ("get", Figures::new(&tallies.get, elapsed, info.value_size)),
                ("put", Figures::new(&tallies.put, elapsed, info.value_size)),
            ])
        });
        Summary { info, total, elapsed_secs: elapsed.as_secs_f64(), by_op, keys_deleted: None, server_cpu: None }
    }

    /// Why the run counts as failed, in one line: more than 5 % of its requests
    /// failed. Names the dominating error kind and, for 429s, the fix.
    pub fn failure(&self) -> Option<String> {
        // A conditional write refused with 412 is an answer, not a failure (a contended --op cas
        // run is mostly 412s by design).
        let refused = if self.info.op == "cas" { self.total.errors.get("http_412").copied().unwrap_or(0) } else { 0 };
        let failed = self.total.error_count() - refused;
        if failed == 0 || (failed as f64) <= self.total.requests as f64 * MAX_ERROR_SHARE {
            return None;
        }
        let (kind, count) = self
            .total
            .errors
            .iter()
            .filter(|(kind, _)| refused == 0 || kind.as_str() != "http_412")
            .max_by_key(|(_, count)| **count)?;
        let share = 100.0 * failed as f64 / self.total.requests as f64;
        let hint = match kind.as_str() {
            "http_429" => {
                ": the gateway is rate limiting; start it with RATE_LIMIT_PER_MINUTE=0 for benchmarks".to_string()
            }
            "http_401" | "http_403" => ": check the API key and its scopes (read, write)".to_string(),
            "connect" | "timeout" => {
                format!(": is {} up and not overloaded? (try fewer --clients)", self.info.url)
            }
            _ => String::new(),
        };
        Some(format!(
            "the benchmark failed: {} of {} requests failed ({share:.1} %), most with {kind} ({}){hint}",
            group_thousands(failed),
            group_thousands(self.total.requests),
            group_thousands(*count),
        ))
    }

    /// The human-readable report.
    pub fn table(&self) -> String {
        let info = &self.info;
        let consistency = info.consistency.as_deref().map(|c| format!(", {c}")).unwrap_or_default();
        let mut table = comfy_table::Table::new();
        table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
        let columns: Vec<&Figures> = match &self.by_op {
            Some(by_op) => {
                table.set_header(["", "ALL", "GET", "PUT"]);
                std::iter::once(&self.total).chain(by_op.values()).collect()
            }
            None => {
                table.set_header(["", "VALUE"]);
                vec![&self.total]
            }
        };
        let rows: Vec<Vec<(&str, String)>> = columns.iter().map(|figures| figures.rows()).collect();
        for (index, (name, _)) in rows[0].iter().enumerate() {
            let mut row = vec![name.to_string()];
            row.extend(rows.iter().map(|column| column[index].1.clone()));
            table.add_row(row);
        }
        table.add_row(vec!["elapsed".to_string(), format!("{:.2} s", self.elapsed_secs)]);
        if let Some(cpu) = &self.server_cpu {
            table.add_row(vec!["server CPU".to_string(), format!("{:.2} s, {:.1} µs/op", cpu.seconds, cpu.us_per_op)]);
        }
        let kinds: std::collections::BTreeSet<&String> =
            columns.iter().flat_map(|figures| figures.errors.keys()).collect();
        for kind in kinds {
            let mut row = vec![format!("  {kind}")];
            row.extend(columns.iter().map(|figures| group_thousands(figures.errors.get(kind).copied().unwrap_or(0))));
            table.add_row(row);
        }
        let cleanup = match self.keys_deleted {
            Some(_) => format!("the keys under {} were deleted afterwards (--keep keeps them)", info.key_prefix),
            None => format!("the keys under {} were kept", info.key_prefix),
        };
        let batch = info.batch.map(|batch| format!(", {batch} puts per batch request")).unwrap_or_default();
        format!(
            "{} {} {}{consistency}: {} clients, {} B values, {} keys under {}{batch}\n{table}\n{cleanup}",
            info.op,
            info.target,
            info.url,
            info.clients,
            info.value_size,
            group_thousands(info.keys),
            info.key_prefix
        )
    }
}

/// `142700` → `142,700`.
use crate::units::group_thousands;

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> RunInfo {
        RunInfo {
            op: "put".into(),
            target: "gateway".into(),
            url: "http://127.0.0.1:8080".into(),
            consistency: Some("strong".into()),
            clients: 4,
            value_size: 100,
            keys: 10,
            key_prefix: "bench/abcd/".into(),
            batch: None,
        }
    }

    #[test]
    fn percentiles_follow_the_recorded_latencies() {
        let mut tally = OpTallies::default();
        for millis in 1..=1000u64 {
            tally.put.success(Duration::from_millis(millis));
        }
        let summary = Summary::new(info(), &tally, Duration::from_secs(2));
        assert_eq!(summary.total.ok, 1000);
        assert_eq!(summary.total.requests, 1000);
        assert_eq!(summary.total.ops_per_sec, 500.0);
        let latency = &summary.total.latency_ms;
        // Three significant digits: within 0.1 % of the exact value.
        for (got, want) in [(latency.p50, 500.0), (latency.p95, 950.0), (latency.p99, 990.0), (latency.p99_9, 999.0)] {
            assert!((got - want).abs() <= want * 0.001, "{got} vs {want}");
        }
        assert!((latency.max - 1000.0).abs() <= 1.0);
        assert!(latency.p50 <= latency.p95 && latency.p95 <= latency.p99 && latency.p99 <= latency.p99_9);
    }

    #[test]
    fn merged_tallies_count_errors_by_kind() {
        let mut first = OpTallies::default();
        first.put.success(Duration::from_micros(300));
        first.put.failure(ErrorKind::Status(429));
        first.put.failure(ErrorKind::Timeout);
        let mut second = OpTallies::default();
        second.get.failure(ErrorKind::Status(429));
        second.get.failure(ErrorKind::Connect);
        second.get.success(Duration::from_micros(500));
        first.merge(&second);
        let summary = Summary::new(info(), &first, Duration::from_secs(1));
        assert_eq!(summary.total.ok, 2);
        assert_eq!(summary.total.requests, 6);
        assert_eq!(summary.total.error_count(), 4);
        assert_eq!(summary.total.errors["http_429"], 2);
        assert_eq!(summary.total.errors["timeout"], 1);
        assert_eq!(summary.total.errors["connect"], 1);
        assert_eq!(summary.total.ops_per_sec, 2.0);
    }

    #[test]
    fn json_has_the_documented_shape() {
        let mut tally = OpTallies::default();
        tally.put.success(Duration::from_millis(2));
        tally.put.failure(ErrorKind::Status(503));
        let json = serde_json::to_value(Summary::new(info(), &tally, Duration::from_secs(1))).unwrap();
        for field in ["op", "target", "url", "consistency", "clients", "value_size", "keys", "key_prefix"] {
            assert!(json.get(field).is_some(), "missing {field} in {json}");
        }
        assert_eq!(json["requests"], 2);
        assert_eq!(json["ok"], 1);
        assert_eq!(json["errors"]["http_503"], 1);
        assert_eq!(json["ops_per_sec"], 1.0);
        for field in ["p50", "p95", "p99", "p99_9", "max", "mean"] {
            assert!(json["latency_ms"][field].as_f64().unwrap() > 1.9, "{field} in {json}");
        }
    }

    #[test]
    fn an_all_error_run_has_zero_latencies_and_a_table() {
        let mut tally = OpTallies::default();
        tally.put.failure(ErrorKind::Connect);
        let summary = Summary::new(info(), &tally, Duration::from_secs(1));
        assert_eq!(summary.total.latency_ms.p99, 0.0);
        assert_eq!(summary.total.ops_per_sec, 0.0);
        let table = summary.table();
        assert!(table.contains("connect"), "{table}");
        assert!(table.contains("strong"), "{table}");
    }

    #[test]
    fn mixed_runs_report_gets_and_puts_apart_with_mb_per_sec() {
        let mut tally = OpTallies::default();
        for _ in 0..30 {
            tally.get.success(Duration::from_millis(1));
        }
        for _ in 0..10 {
            tally.put.success(Duration::from_millis(4));
        }
        let mixed = RunInfo { op: "mixed".into(), value_size: 1_000_000, ..info() };
        let summary = Summary::new(mixed, &tally, Duration::from_secs(10));
        let by_op = summary.by_op.as_ref().expect("a mixed run has per-operation figures");
        assert_eq!(by_op["get"].ok, 30);
        assert_eq!(by_op["put"].ok, 10);
        assert_eq!(by_op["get"].mb_per_sec, 3.0);
        assert_eq!(summary.total.mb_per_sec, 4.0);
        assert!(by_op["put"].latency_ms.p50 > by_op["get"].latency_ms.p50);
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["by_op"]["put"]["ok"], 10, "{json}");
        assert_eq!(json["mb_per_sec"], 4.0, "{json}");
        let table = summary.table();
        assert!(table.contains("GET") && table.contains("PUT") && table.contains("MB/s"), "{table}");
        // A put-only run has no breakdown.
        assert!(Summary::new(info(), &tally, Duration::from_secs(1)).by_op.is_none());
    }

    #[test]
    fn a_mostly_failed_run_is_a_failure_naming_the_cause() {
        let mut tally = OpTallies::default();
        tally.put.success(Duration::from_millis(1));
        tally.put.success(Duration::from_millis(1));
        for _ in 0..142_700 {
            tally.put.failure(ErrorKind::Status(429));
        }
        let summary = Summary::new(info(), &tally, Duration::from_secs(10));
        let reason = summary.failure().expect("99.9 % failed");
        assert!(reason.contains("142,700 of 142,702 requests failed"), "{reason}");
        assert!(reason.contains("http_429") && reason.contains("RATE_LIMIT_PER_MINUTE=0"), "{reason}");
        assert!(!reason.contains('\n'));
        // 5 % errors or fewer is a run with a few errors, not a failure.
        let mut tally = OpTallies::default();
        for _ in 0..95 {
            tally.put.success(Duration::from_millis(1));
        }
        for _ in 0..5 {
            tally.put.failure(ErrorKind::Timeout);
        }
        assert_eq!(Summary::new(info(), &tally, Duration::from_secs(1)).failure(), None);
        tally.put.failure(ErrorKind::Timeout);
        let reason = Summary::new(info(), &tally, Duration::from_secs(1)).failure().unwrap();
        assert!(reason.contains("timeout") && reason.contains("--clients"), "{reason}");
    }

    #[test]
    fn huge_latencies_are_clamped_not_dropped() {
        let mut tally = OpTallies::default();
        tally.put.success(Duration::from_secs(3600));
        assert_eq!(tally.put.latencies.len(), 1);
    }
}
