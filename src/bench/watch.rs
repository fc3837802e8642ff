//! `ydht bench --watchers N [--rate R]`: N watches (`GET /v1/watch`) on one prefix while writers
//! put keys under it at R writes/s; reports the delay from each write's 200 to its event at each
//! watcher (HDR percentiles), and the events lost or repeated.
//!
//! Every write's version (from its 200) and the time of that 200 are kept; every watcher keeps
//! the version and arrival time of each put event. After the writers stop, the watchers get a
//! few seconds to receive the rest, then the two sides are matched: an event that came before
//! its write's 200 counts as 0 ms.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use reqwest::Url;
use serde::Serialize;
use tokio::time::Instant;

use super::cpu;
use super::summary::ServerCpu;
use crate::client::watch::SseParser;
use crate::error::{Exit, exit};
use crate::proto::API_KEY_HEADER;

/// Largest number of watchers.
pub const MAX_WATCHERS: usize = 1000;
/// How long the watchers may take to receive the last writes' events.
const DRAIN: Duration = Duration::from_secs(5);

/// A validated watch benchmark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchPlan {
    /// Watches opened on the run's prefix.
    pub watchers: usize,
    /// Writes per second, all writers together.
    pub rate: u64,
    /// Concurrent writers.
    pub writers: usize,
    /// How long the writes go on.
    pub duration: Duration,
    /// Distinct keys written (round robin).
    pub keys: u64,
    /// Value size in bytes.
    pub value_size: usize,
    /// The gateway.
    pub url: Url,
    /// `X-API-Key`.
    pub api_key: String,
    /// Server processes whose CPU time per write is reported.
    pub server_pids: Vec<u32>,
    /// Keep the run's keys.
    pub keep: bool,
}

/// Delay percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Delays {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// What a watch benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct WatchSummary {
    /// Watches open during the run.
    pub watchers: usize,
    /// Writes per second asked for.
    pub rate_target: u64,
    /// Writes answered 200.
    pub writes: u64,
    /// Writes that failed.
    pub write_errors: u64,
    /// Writes per second achieved.
    pub writes_per_second: f64,
    /// Events the watchers should have received (writes × watchers).
    pub events_expected: u64,
    /// Distinct events received.
    pub events_received: u64,
    /// Expected events never received.
    pub events_lost: u64,
    /// Events received more than once.
    pub events_repeated: u64,
    /// Watches that ended before the run did.
    pub watches_ended: u64,
    /// From a write's 200 to its event, per watcher.
    pub delay_ms: Delays,
    /// Server CPU per write (all `--server-pid` processes), when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu: Option<ServerCpu>,
}

impl WatchSummary {
    /// Lines for people.
    pub fn table(&self) -> String {
        let mut text = format!(
            "watch: {} watchers, {} writes at {:.0}/s (asked {}/s), {} write errors\n\
             events: {} expected, {} received, {} lost, {} repeated, {} watches ended early\n\
             delay from the write's 200 to the event: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.watchers,
            self.writes,
            self.writes_per_second,
            self.rate_target,
            self.write_errors,
            self.events_expected,
            self.events_received,
            self.events_lost,
            self.events_repeated,
            self.watches_ended,
            self.delay_ms.p50,
            self.delay_ms.p90,
            self.delay_ms.p99,
            self.delay_ms.max,
        );
        if let Some(cpu) = &self.server_cpu {
            text.push_str(&format!("\nserver CPU: {:.1} µs per write ({:.2} s)", cpu.us_per_op, cpu.seconds));
        }
        text
    }

    /// Why the run counts as failed, if it does.
    pub fn failure(&self) -> Option<String> {
        if self.writes == 0 {
            return Some("no write succeeded".into());
        }
        (self.events_lost > 0 || self.events_repeated > 0).then(|| {
            format!("{} events lost and {} repeated across the watchers", self.events_lost, self.events_repeated)
        })
    }
}

/// The version in a watch event's data, read without parsing the whole JSON.
fn version_of(data: &str) -> Option<u64> {
    let start = data.find("\"version\":")? + "\"version\":".len();
    let digits: &str = &data[start..];
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// One watcher's stream: the versions of the put events and when each arrived.
async fn watcher(mut response: reqwest::Response, stop: Arc<AtomicBool>) -> (Vec<(u64, Instant)>, bool) {
    let mut parser = SseParser::default();
    let mut seen = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let chunk = match tokio::time::timeout(Duration::from_millis(200), response.chunk()).await {
            Err(_) => continue,
            Ok(Ok(Some(chunk))) => chunk,
            Ok(_) => return (seen, true),
        };
        let at = Instant::now();
        let Ok(events) = parser.push(&chunk) else { return (seen, true) };
        for event in events {
            if event.event == "put"
                && let Some(version) = version_of(&event.data)
            {
                seen.push((version, at));
            }
        }
    }
    (seen, false)
}

/// Opens the watches, writes at the asked rate, then matches events to writes.
pub async fn execute(plan: &WatchPlan) -> anyhow::Result<WatchSummary> {
    let prefix = format!("bench/{}/", crate::config::random_hex(4));
    let client = crate::tls::client_builder()
        .pool_max_idle_per_host(plan.writers + plan.watchers)
        .tcp_nodelay(true)
        .http1_only()
        .no_proxy()
        .build()
        .context("cannot build the HTTP client")?;
    let api_key = plan.api_key.as_str();
    let mut watch_url = crate::urlpath::join(&plan.url, &["v1", "watch"])?;
    watch_url.query_pairs_mut().append_pair("prefix", &prefix);
    let stop = Arc::new(AtomicBool::new(false));
    let mut watchers = Vec::with_capacity(plan.watchers);
    for _ in 0..plan.watchers {
        let response = client
            .get(watch_url.clone())
            .header(API_KEY_HEADER, api_key)
            .send()
            .await
            .map_err(|error| Exit::new(exit::UNAVAILABLE, format!("cannot reach {}: {error}", plan.url)))?;
        match response.status().as_u16() {
            200 => watchers.push(tokio::spawn(watcher(response, stop.clone()))),
            429 => {
                return Err(Exit::new(
                    exit::UNAVAILABLE,
                    "the gateway refused a watch with 429: raise --max-watches-per-tenant (or \
                     RATE_LIMIT_PER_MINUTE=0 for benchmarks), or ask for fewer --watchers",
                )
                .into());
            }
            401 | 403 => return Err(Exit::new(exit::AUTH, "the gateway refused the API key for /v1/watch").into()),
            status => return Err(Exit::new(exit::UNAVAILABLE, format!("GET /v1/watch answered {status}")).into()),
        }
    }

    let value = super::target::value_of_size(plan.value_size);
    let mut urls = Vec::with_capacity(plan.keys as usize);
    for index in 0..plan.keys {
        urls.push(crate::urlpath::join(&plan.url, &["v1", "kv", &format!("{prefix}{index}")])?);
    }
    let urls = Arc::new(urls);
    let interval = Duration::from_secs_f64(plan.writers as f64 / plan.rate as f64);
    let started = Instant::now();
    let cpu_before = cpu::total_ticks(&plan.server_pids)?;
    let mut writers = Vec::with_capacity(plan.writers);
    for writer in 0..plan.writers {
        let (client, urls, value, api_key) = (client.clone(), urls.clone(), value.clone(), plan.api_key.clone());
        let (duration, writers_count) = (plan.duration, plan.writers);
        writers.push(tokio::spawn(async move {
            let mut written: Vec<(u64, Instant)> = Vec::new();
            let mut errors = 0u64;
            // Each writer's first write is offset, so the writes spread over the interval.
            let mut next = started + interval.mul_f64(writer as f64 / writers_count as f64);
            let mut index = writer;
            while next < started + duration {
                tokio::time::sleep_until(next).await;
                next += interval;
                let url = urls[index % urls.len()].clone();
                index += writers_count;
                let sent = client.put(url).header(API_KEY_HEADER, &api_key).body(value.clone()).send().await;
                let answered = Instant::now();
                let version = match sent {
                    Ok(response) if response.status().is_success() => {
                        response.json::<crate::proto::KvWriteResponse>().await.ok().map(|body| body.version)
                    }
                    _ => None,
                };
                match version {
                    Some(version) => written.push((version, answered)),
                    None => errors += 1,
                }
            }
            (written, errors)
        }));
    }
    let mut written: HashMap<u64, Instant> = HashMap::new();
    let mut write_errors = 0;
    for writer in writers {
        let (writes, errors) = writer.await.context("a writer task failed")?;
        written.extend(writes);
        write_errors += errors;
    }
    let elapsed = started.elapsed();
    let cpu_after = cpu::total_ticks(&plan.server_pids)?;
    tokio::time::sleep(DRAIN).await;
    stop.store(true, Ordering::Relaxed);

    let mut histogram = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds");
    let (mut received, mut repeated, mut ended) = (0u64, 0u64, 0u64);
    for watcher in watchers {
        let (events, ended_early) = watcher.await.context("a watcher task failed")?;
        ended += u64::from(ended_early);
        let mut unique = HashSet::with_capacity(events.len());
        for (version, at) in events {
            if !unique.insert(version) {
                repeated += 1;
                continue;
            }
            if let Some(answered) = written.get(&version) {
                received += 1;
                let _ = histogram.record(at.saturating_duration_since(*answered).as_micros().max(1) as u64);
            }
        }
    }
    if !plan.keep {
        delete_keys(&client, plan, &prefix).await;
    }
    let writes = written.len() as u64;
    let expected = writes * plan.watchers as u64;
    let ms = |micros: u64| micros as f64 / 1000.0;
    Ok(WatchSummary {
        watchers: plan.watchers,
        rate_target: plan.rate,
        writes,
        write_errors,
        writes_per_second: writes as f64 / elapsed.as_secs_f64().max(0.001),
        events_expected: expected,
        events_received: received,
        events_lost: expected.saturating_sub(received),
        events_repeated: repeated,
        watches_ended: ended,
        delay_ms: Delays {
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
        },
        server_cpu: (!plan.server_pids.is_empty())
            .then(|| ServerCpu::new(cpu_after.saturating_sub(cpu_before), writes + write_errors)),
    })
}

/// Deletes the run's keys with batches of 1,000 deletes.
async fn delete_keys(client: &reqwest::Client, plan: &WatchPlan, prefix: &str) {
    let Ok(url) = crate::urlpath::join(&plan.url, &["v1", "batch"]) else { return };
    let keys: Vec<u64> = (0..plan.keys).collect();
    for chunk in keys.chunks(1000) {
        let ops: Vec<serde_json::Value> =
            chunk.iter().map(|index| serde_json::json!({"op": "delete", "key": format!("{prefix}{index}")})).collect();
        let sent =
            client.post(url.clone()).header(API_KEY_HEADER, &plan.api_key).json(&serde_json::json!({ "ops": ops }));
        if sent.send().await.is_err() {
            eprintln!("note: the benchmark keys under {prefix} could not all be deleted");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_event_data() {
        assert_eq!(version_of(r#"{"key":"a","version":123,"size":1}"#), Some(123));
        assert_eq!(version_of(r#"{"key":"a","version":9}"#), Some(9));
        assert_eq!(version_of(r#"{"key":"a"}"#), None);
    }
}
