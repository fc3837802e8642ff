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
}

/// The whole result of a run (the `--output json` document).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// What ran.
    #[serde(flatten)]
    pub info: RunInfo,
    /// Measured requests (successes + errors), warm-up excluded.
    pub requests: u64,
    /// Successful (2xx) requests.
    pub ok: u64,
    /// Failed requests by kind (`http_429`, `connect`, `timeout`, `transport`).
    pub errors: BTreeMap<String, u64>,
    /// Wall-clock seconds of the measured phase.
    pub elapsed_secs: f64,
    /// Successful requests per second.
    pub ops_per_sec: f64,
    /// Latency of the successful requests.
    pub latency_ms: Latency,
}

fn millis(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

impl Summary {
    /// Summarises a merged tally over `elapsed`.
    pub fn new(info: RunInfo, tally: &Tally, elapsed: Duration) -> Summary {
        let ok = tally.latencies.len();
        let failed: u64 = tally.errors.values().sum();
        let secs = elapsed.as_secs_f64();
        let histogram = &tally.latencies;
        let quantile = |q: f64| if ok == 0 { 0.0 } else { millis(histogram.value_at_quantile(q)) };
        Summary {
            info,
            requests: ok + failed,
            ok,
            errors: tally.errors.iter().map(|(kind, count)| (kind.to_string(), *count)).collect(),
            elapsed_secs: secs,
            ops_per_sec: if secs > 0.0 { ok as f64 / secs } else { 0.0 },
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

    /// The human-readable report.
    pub fn table(&self) -> String {
        let info = &self.info;
        let consistency = info.consistency.as_deref().map(|c| format!(", {c}")).unwrap_or_default();
        let mut table = comfy_table::Table::new();
        table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
        table.set_header(["", "value"]);
        let rows: Vec<(&str, String)> = vec![
            ("ops/s", format!("{:.0}", self.ops_per_sec)),
            ("requests", self.requests.to_string()),
            ("ok", self.ok.to_string()),
            ("errors", self.error_count().to_string()),
            ("elapsed", format!("{:.2} s", self.elapsed_secs)),
            ("p50", format!("{:.3} ms", self.latency_ms.p50)),
            ("p95", format!("{:.3} ms", self.latency_ms.p95)),
            ("p99", format!("{:.3} ms", self.latency_ms.p99)),
            ("p99.9", format!("{:.3} ms", self.latency_ms.p99_9)),
            ("max", format!("{:.3} ms", self.latency_ms.max)),
            ("mean", format!("{:.3} ms", self.latency_ms.mean)),
        ];
        for (name, value) in rows {
            table.add_row([name.to_string(), value]);
        }
        for (kind, count) in &self.errors {
            table.add_row([format!("  {kind}"), count.to_string()]);
        }
        format!(
            "{} {} {}{consistency}: {} clients, {} B values, {} keys under {}\n{table}",
            info.op, info.target, info.url, info.clients, info.value_size, info.keys, info.key_prefix
        )
    }
}

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
        }
    }

    #[test]
    fn percentiles_follow_the_recorded_latencies() {
        let mut tally = Tally::default();
        for millis in 1..=1000u64 {
            tally.success(Duration::from_millis(millis));
        }
        let summary = Summary::new(info(), &tally, Duration::from_secs(2));
        assert_eq!(summary.ok, 1000);
        assert_eq!(summary.requests, 1000);
        assert_eq!(summary.ops_per_sec, 500.0);
        let latency = &summary.latency_ms;
        // Three significant digits: within 0.1 % of the exact value.
        for (got, want) in [(latency.p50, 500.0), (latency.p95, 950.0), (latency.p99, 990.0), (latency.p99_9, 999.0)] {
            assert!((got - want).abs() <= want * 0.001, "{got} vs {want}");
        }
        assert!((latency.max - 1000.0).abs() <= 1.0);
        assert!(latency.p50 <= latency.p95 && latency.p95 <= latency.p99 && latency.p99 <= latency.p99_9);
    }

    #[test]
    fn merged_tallies_count_errors_by_kind() {
        let mut first = Tally::default();
        first.success(Duration::from_micros(300));
        first.failure(ErrorKind::Status(429));
        first.failure(ErrorKind::Timeout);
        let mut second = Tally::default();
        second.failure(ErrorKind::Status(429));
        second.failure(ErrorKind::Connect);
        second.success(Duration::from_micros(500));
        first.merge(&second);
        let summary = Summary::new(info(), &first, Duration::from_secs(1));
        assert_eq!(summary.ok, 2);
        assert_eq!(summary.requests, 6);
        assert_eq!(summary.error_count(), 4);
        assert_eq!(summary.errors["http_429"], 2);
        assert_eq!(summary.errors["timeout"], 1);
        assert_eq!(summary.errors["connect"], 1);
        assert_eq!(summary.ops_per_sec, 2.0);
    }

    #[test]
    fn json_has_the_documented_shape() {
        let mut tally = Tally::default();
        tally.success(Duration::from_millis(2));
        tally.failure(ErrorKind::Status(503));
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
        let mut tally = Tally::default();
        tally.failure(ErrorKind::Connect);
        let summary = Summary::new(info(), &tally, Duration::from_secs(1));
        assert_eq!(summary.latency_ms.p99, 0.0);
        assert_eq!(summary.ops_per_sec, 0.0);
        let table = summary.table();
        assert!(table.contains("connect"), "{table}");
        assert!(table.contains("strong"), "{table}");
    }

    #[test]
    fn huge_latencies_are_clamped_not_dropped() {
        let mut tally = Tally::default();
        tally.success(Duration::from_secs(3600));
        assert_eq!(tally.latencies.len(), 1);
    }
}
