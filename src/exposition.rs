//! `/metrics` for Prometheus: every service answers OpenMetrics text when the `Accept` header
//! prefers `application/openmetrics-text`, the Prometheus text format 0.0.4 when it prefers
//! `text/plain`, and its original JSON otherwise ([`Format::negotiate`]).
//!
//! A service builds an [`Exposition`] from its counters at scrape time (the request paths keep
//! their own atomics; nothing is added to them) with the `prometheus-client` crate, which writes
//! the OpenMetrics text. The 0.0.4 text is derived from it: no `# EOF` and `# UNIT` lines, and a
//! counter's `HELP` and `TYPE` lines name its `_total` samples.
//!
//! Names follow Prometheus conventions: `ydht_<service>_…`, counters end in `_total`, durations
//! are histograms in seconds, labels have bounded values (operation, result, node id).

use std::sync::atomic::AtomicU64;

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// Content type of the OpenMetrics answer.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the Prometheus text format answer.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a `/metrics` request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics text 1.0.
    OpenMetrics,
    /// Prometheus text 0.0.4.
    Text,
    /// The service's JSON, as before.
    Json,
}

impl Format {
    /// The format the `Accept` header prefers among OpenMetrics and text (by `q`, OpenMetrics on
    /// a tie); JSON when it names neither.
    pub fn negotiate(headers: &HeaderMap) -> Format {
        let Some(accept) = headers.get(header::ACCEPT).and_then(|value| value.to_str().ok()) else {
            return Format::Json;
        };
        let mut best: Option<(f32, Format)> = None;
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let format = match parts.next().map(str::to_ascii_lowercase).as_deref() {
                Some("application/openmetrics-text") => Format::OpenMetrics,
                Some("text/plain") => Format::Text,
                _ => continue,
            };
            let q = parts
                .filter_map(|parameter| parameter.strip_prefix("q="))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            let better = match best {
                None => q > 0.0,
                Some((best_q, best_format)) => {
                    q > best_q || (q == best_q && format == Format::OpenMetrics && best_format == Format::Text)
                }
            };
            if better {
                best = Some((q, format));
            }
        }
        best.map_or(Format::Json, |(_, format)| format)
    }
}

/// A histogram whose buckets were counted elsewhere (cumulative counts per upper bound).
#[derive(Debug)]
struct CountedHistogram {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl EncodeMetric for CountedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The metrics of one scrape.
#[derive(Debug)]
pub struct Exposition {
    registry: Registry,
}

impl Exposition {
    /// An empty exposition; every name gets the `ydht_<service>_` prefix.
    pub fn new(service: &str) -> Self {
        Self { registry: Registry::with_prefix(format!("ydht_{service}")) }
    }

    /// A counter (`name` without `_total`).
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        let counter: Counter = Counter::default();
        counter.inc_by(value);
        self.registry.register(name, help, counter);
    }

    /// A counter with one label.
    pub fn counters(&mut self, name: &str, help: &str, label: &str, values: impl IntoIterator<Item = (String, u64)>) {
        let labeled = values.into_iter().map(|(value, count)| (vec![(label.to_string(), value)], count));
        self.labeled_counters(name, help, labeled);
    }

    /// A counter with several labels per sample.
    pub fn labeled_counters(
        &mut self,
        name: &str,
        help: &str,
        values: impl IntoIterator<Item = (Vec<(String, String)>, u64)>,
    ) {
        let family = Family::<Vec<(String, String)>, Counter>::default();
        for (labels, count) in values {
            family.get_or_create(&labels).inc_by(count);
        }
        self.registry.register(name, help, family);
    }

    /// A gauge.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        let gauge: Gauge<f64, AtomicU64> = Gauge::default();
        gauge.set(value);
        self.registry.register(name, help, gauge);
    }

    /// A gauge in `unit` (its name gets the unit's suffix).
    pub fn gauge_in(&mut self, name: &str, help: &str, unit: Unit, value: f64) {
        let gauge: Gauge<f64, AtomicU64> = Gauge::default();
        gauge.set(value);
        self.registry.register_with_unit(name, help, unit, gauge);
    }

    /// A histogram of seconds from bucket counts (`(upper bound, values above the previous bound
    /// and at most it)`), as [`latency_buckets`] makes them.
    pub fn histogram_seconds(&mut self, name: &str, help: &str, sum: f64, count: u64, buckets: Vec<(f64, u64)>) {
        let histogram = CountedHistogram { sum, count, buckets };
        self.registry.register_with_unit(name, help, Unit::Seconds, histogram);
    }

    /// The OpenMetrics text.
    pub fn openmetrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }

    /// The answer in `format` (`json` when JSON was asked for).
    pub fn respond(&self, format: Format, json: impl FnOnce() -> Response) -> Response {
        let (text, content_type) = match format {
            Format::Json => return json(),
            Format::OpenMetrics => (self.openmetrics(), OPENMETRICS_CONTENT_TYPE),
            Format::Text => (text_format(&self.openmetrics()), TEXT_CONTENT_TYPE),
        };
        ([(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], text).into_response()
    }
}

/// The Prometheus text format 0.0.4 of an OpenMetrics text: without `# EOF` and `# UNIT`, and
/// with each counter's `HELP` and `TYPE` naming its `_total` samples.
pub fn text_format(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(renamed) => text.push_str(&renamed),
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

/// The sum (in seconds), count and bucket counts of a latency histogram recorded in
/// microseconds, at the upper bounds [`LATENCY_BUCKETS`] and `+Inf`. Each bucket holds the
/// values above the previous bound (the encoder makes them cumulative, as the formats want).
pub fn latency_buckets(micros: &hdrhistogram::Histogram<u64>) -> (f64, u64, Vec<(f64, u64)>) {
    let sum: f64 =
        micros.iter_recorded().map(|value| value.value_iterated_to() as f64 * value.count_at_value() as f64).sum();
    let mut below = 0;
    let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
        .iter()
        .map(|&bound| {
            let cumulative = micros.count_between(0, (bound * 1e6) as u64);
            let bucket = (bound, cumulative.saturating_sub(below));
            below = cumulative;
            bucket
        })
        .collect();
    // prometheus-client writes the bucket of `f64::MAX` as `le="+Inf"`.
    buckets.push((f64::MAX, micros.len().saturating_sub(below)));
    (sum / 1e6, micros.len(), buckets)
}

/// Upper bounds of the latency histograms, in seconds (0.1 ms to 10 s).
pub const LATENCY_BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0];

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn the_accept_header_picks_the_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
                          text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(&accept(prometheus)), Format::OpenMetrics);
        assert_eq!(
            Format::negotiate(&accept("text/plain;version=0.0.4;q=0.9,application/openmetrics-text;q=0.5")),
            Format::Text
        );
        assert_eq!(Format::negotiate(&accept("text/plain")), Format::Text);
        assert_eq!(Format::negotiate(&accept("*/*")), Format::Json);
        assert_eq!(Format::negotiate(&accept("application/json")), Format::Json);
        assert_eq!(Format::negotiate(&accept("text/plain;q=0")), Format::Json);
        assert_eq!(Format::negotiate(&HeaderMap::new()), Format::Json);
    }

    #[test]
    fn both_texts_name_counters_gauges_and_histograms_by_convention() {
        let mut exposition = Exposition::new("test");
        exposition.counter("requests", "Requests served", 7);
        exposition.counters("errors", "Errors by node", "node", [("node-1".to_string(), 2)]);
        exposition.gauge("queue_depth", "Jobs waiting", 3.0);
        let mut micros = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap();
        micros.record(300).unwrap();
        micros.record(3_000).unwrap();
        let (sum, count, buckets) = latency_buckets(&micros);
        exposition.histogram_seconds("request_duration", "Latency", sum, count, buckets);
        let open = exposition.openmetrics();
        assert!(open.contains("# TYPE ydht_test_requests counter\nydht_test_requests_total 7\n"), "{open}");
        assert!(open.contains("ydht_test_errors_total{node=\"node-1\"} 2"), "{open}");
        assert!(open.contains("ydht_test_queue_depth 3"), "{open}");
        assert!(open.contains("# UNIT ydht_test_request_duration_seconds seconds"), "{open}");
        assert!(open.contains("ydht_test_request_duration_seconds_bucket{le=\"0.0005\"} 1"), "{open}");
        assert!(open.contains("ydht_test_request_duration_seconds_count 2"), "{open}");
        assert!(open.ends_with("# EOF\n"));
        let text = text_format(&open);
        assert!(text.contains("# TYPE ydht_test_requests_total counter\nydht_test_requests_total 7\n"), "{text}");
        assert!(text.contains("# HELP ydht_test_requests_total Requests served"), "{text}");
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
        assert!(text.contains("# TYPE ydht_test_request_duration_seconds histogram"), "{text}");
    }
}
