//! `ydht bench`: a load generator built into the binary, like
//! `redis-benchmark` or etcd's `benchmark`.
//!
//! A run creates its own keys under `bench/<random>/`, fills them first when
//! it reads (gets / mixed), warms up, then measures: ops/s, MB/s, latency
//! percentiles (HDR histogram) and errors by kind (puts and gets apart for a
//! mixed run), and deletes its keys unless `--keep`. A run with more than 5 %
//! failed requests exits 4 with the reason in one line. It targets the gateway's
//! public API by default, one node's `/store` with `--target-node` (one hop),
//! or — hidden, for `bench/compare.sh` — etcd's v3 HTTP/JSON gateway.
//!
//! - [`load`]: the worker loop over a keep-alive connection pool.
//! - [`target`]: prepared URLs and bodies per key, one request per call.
//! - [`summary`]: histogram, error kinds, table and JSON output.

pub mod cpu;
pub mod load;
pub mod summary;
pub mod target;
pub mod watch;

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use reqwest::Url;
use reqwest::header::HeaderValue;

use crate::client::output::{print_json, print_line};
use crate::client::{Context, KeyClient};
use crate::error::{Exit, exit};
use crate::hlc::Hlc;
use load::{KeyOrder, Mix, Phase, Progress, Stop};
use summary::{ErrorKind, RunInfo, ServerCpu, Summary};
use target::{Endpoint, Target, value_of_size};

/// Largest number of concurrent clients.
pub const MAX_CLIENTS: usize = 4096;
/// Largest value size (the gateway's default limit, 1 MiB).
pub const MAX_VALUE_SIZE: usize = 1 << 20;
/// Largest number of keys.
pub const MAX_KEYS: u64 = 10_000_000;
/// Largest memory the prepared keys and bodies may take (keys × per-key cost), 1 GiB.
const MAX_PREPARED_BYTES: u64 = 1 << 30;

/// The operation to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Op {
    /// Writes of random keys
    Put,
    /// Reads of random keys (created before the run)
    Get,
    /// Half reads, half writes, of random keys (created before the run)
    Mixed,
    /// Conditional writes (If-Match on the version each client last saw; a 412 teaches it the
    /// current one) of random keys (created before the run); `--keys 1` makes them contend
    Cas,
}

/// The gateway consistency level of every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConsistencyLevel {
    /// Acknowledged once the primary owner has it
    Eventual,
    /// Acknowledged once a quorum of owners has it
    Strong,
}

impl ConsistencyLevel {
    fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            ConsistencyLevel::Eventual => "eventual",
            ConsistencyLevel::Strong => "strong",
        })
    }
}

/// Flags of `ydht bench`.
#[derive(Args, Clone)]
pub struct BenchArgs {
    /// Operation to measure
    #[arg(long, value_enum, default_value_t = Op::Put)]
    pub op: Op,

    /// Concurrent clients (one keep-alive connection and one request in flight each)
    #[arg(long, short = 'c', default_value_t = 16)]
    pub clients: usize,

    /// Measure for this long (`30s`, `2m`); the default unless --requests is given
    #[arg(long, conflicts_with = "requests", value_name = "DURATION")]
    pub duration: Option<String>,

    /// Measure exactly this many requests instead of a duration
    #[arg(long, short = 'n', value_name = "N")]
    pub requests: Option<u64>,

    /// Value size in bytes
    #[arg(long, default_value_t = 100, value_name = "BYTES")]
    pub value_size: usize,

    /// Number of distinct keys (`bench/<random>/0` …)
    #[arg(long, default_value_t = 1000, value_name = "K")]
    pub keys: u64,

    /// Consistency level of gateway requests (`X-Consistency`)
    #[arg(long, value_enum, default_value_t = ConsistencyLevel::Eventual)]
    pub consistency: ConsistencyLevel,

    /// Time to live of the written keys (`10m`), so they expire after the run
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,

    /// Warm-up before measuring (not counted); `0s` skips it
    #[arg(long, default_value = "2s", value_name = "DURATION")]
    pub warmup: String,

    /// Per-request timeout
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub timeout: String,

    /// Measure one storage node's internal /store directly (one hop) instead of the gateway
    #[arg(long, value_name = "URL", requires = "cluster_secret", conflicts_with = "target_etcd")]
    pub target_node: Option<String>,

    /// Cluster secret for --target-node (the data dir's cluster.secret)
    #[arg(long, env = "YDHT_CLUSTER_SECRET", hide_env_values = true, value_name = "SECRET")]
    pub cluster_secret: Option<String>,

    /// Measure etcd's v3 HTTP/JSON gateway at this URL (for bench/compare.sh)
    #[arg(long, hide = true, value_name = "URL")]
    pub target_etcd: Option<String>,

    /// Send the puts N to a request, as one `POST /v1/batch` (gateway, --op put); every key
    /// counts as an operation, with its batch's latency (--requests counts batch requests)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(2..=1000))]
    pub batch: Option<u16>,

    /// Measure change streams instead: open N watches (GET /v1/watch) on the run's prefix while
    /// --clients writers put keys under it at --rate writes/s for --duration; report the delay
    /// from each write's 200 to its event, and events lost or repeated
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub watchers: Option<u16>,

    /// Writes per second, all writers together, with --watchers
    #[arg(long, value_name = "R", default_value_t = 5000, requires = "watchers")]
    pub rate: u64,

    /// Keep the keys the run wrote (`bench/<random>/…`) instead of deleting them afterwards
    #[arg(long)]
    pub keep: bool,

    /// Also report the CPU time (user + system) these server processes spent per
    /// measured operation, from /proc (repeat for several processes; Linux only)
    #[arg(long = "server-pid", value_name = "PID")]
    pub server_pids: Vec<u32>,

    /// The gateway and the API key (for the default target) and the config dir.
    #[command(flatten)]
    pub client: KeyClient,
}

impl std::fmt::Debug for BenchArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchArgs")
            .field("op", &self.op)
            .field("clients", &self.clients)
            .field("duration", &self.duration)
            .field("requests", &self.requests)
            .field("value_size", &self.value_size)
            .field("keys", &self.keys)
            .field("consistency", &self.consistency)
            .field("ttl", &self.ttl)
            .field("warmup", &self.warmup)
            .field("timeout", &self.timeout)
            .field("target_node", &self.target_node)
            .field("cluster_secret", &self.cluster_secret.as_ref().map(|_| "<hidden>"))
            .field("target_etcd", &self.target_etcd)
            .field("watchers", &self.watchers)
            .field("rate", &self.rate)
            .field("keep", &self.keep)
            .field("server_pids", &self.server_pids)
            .field("client", &self.client)
            .finish()
    }
}

/// Which endpoint, with its credentials, before preparation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// The gateway with an API key and a consistency level.
    Gateway {
        /// `X-API-Key`.
        api_key: String,
        /// `X-Consistency`.
        consistency: ConsistencyLevel,
    },
    /// A node with the cluster secret.
    Node {
        /// `x-cluster-secret`.
        secret: String,
    },
    /// etcd's HTTP/JSON gateway.
    Etcd,
}

/// A validated benchmark run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// What to measure.
    pub op: Op,
    /// Concurrent clients.
    pub clients: usize,
    /// When the measured phase ends.
    pub stop: Stop,
    /// Value size in bytes.
    pub value_size: usize,
    /// Distinct keys.
    pub keys: u64,
    /// The gateway's `?ttl=` value, if any.
    pub ttl: Option<String>,
    /// Warm-up length.
    pub warmup: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Base URL.
    pub url: Url,
    /// Endpoint kind and credentials.
    pub target: TargetSpec,
    /// Keep the run's keys instead of deleting them afterwards.
    pub keep: bool,
    /// Server processes whose CPU time per operation is reported.
    pub server_pids: Vec<u32>,
    /// Puts per `POST /v1/batch` request (1: one `PUT` each).
    pub batch: usize,
}

/// Default measured duration when neither --duration nor --requests is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

fn parse_duration(flag: &str, text: &str, allow_zero: bool) -> Result<Duration, Exit> {
    let digits = text.trim_end_matches(['s', 'm', 'h']);
    if allow_zero && !digits.is_empty() && digits.chars().all(|c| c == '0') {
        return Ok(Duration::ZERO);
    }
    let duration = crate::duration::parse(text)
        .map_err(|error| Exit::usage(format!("{flag} {text:?}: {error} (use e.g. 30s, 2m, 1h30m)")))?;
    if duration.is_zero() && !allow_zero {
        return Err(Exit::usage(format!("{flag} must be more than zero")));
    }
    Ok(duration)
}

fn parse_url(flag: &str, text: &str) -> Result<Url, Exit> {
    let url = Url::parse(text).map_err(|error| Exit::usage(format!("{flag} {text:?} is not a URL: {error}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(Exit::usage(format!("{flag} {text:?} must be an http:// or https:// base URL")));
    }
    Ok(url)
}

impl BenchArgs {
    /// Checks every flag and resolves them into a [`Plan`] (usage errors exit 2), with the
    /// `--gateway` URL and, asked only for the gateway, the API key.
    pub fn plan(&self, gateway: &str, api_key: impl FnOnce() -> Result<String, Exit>) -> Result<Plan, Exit> {
        if self.clients == 0 || self.clients > MAX_CLIENTS {
            return Err(Exit::usage(format!("--clients must be between 1 and {MAX_CLIENTS}")));
        }
        if self.value_size > MAX_VALUE_SIZE {
            return Err(Exit::usage(format!("--value-size must be at most {MAX_VALUE_SIZE} bytes (1 MiB)")));
        }
        if self.keys == 0 || self.keys > MAX_KEYS {
            return Err(Exit::usage(format!("--keys must be between 1 and {MAX_KEYS}")));
        }
        let per_key = if self.target_etcd.is_some() { 96 + 2 * self.value_size as u64 } else { 128 };
        if self.keys.saturating_mul(per_key) > MAX_PREPARED_BYTES {
            return Err(Exit::usage(
                "--keys × --value-size is too large to prepare in memory (over 1 GiB); use fewer keys",
            ));
        }
        for &pid in &self.server_pids {
            cpu::ticks(pid).map_err(|error| Exit::usage(format!("--server-pid {pid}: {error}")))?;
        }
        let stop = match (&self.duration, self.requests) {
            (_, Some(0)) => return Err(Exit::usage("--requests must be at least 1")),
            (_, Some(requests)) => Stop::Requests(requests),
            (Some(text), None) => Stop::After(parse_duration("--duration", text, false)?),
            (None, None) => Stop::After(DEFAULT_DURATION),
        };
        let warmup = parse_duration("--warmup", &self.warmup, true)?;
        let timeout = parse_duration("--timeout", &self.timeout, false)?;
        if let Some(ttl) = &self.ttl {
            parse_duration("--ttl", ttl, false)?;
        }
        if self.batch.is_some() && (self.op != Op::Put || self.target_node.is_some() || self.target_etcd.is_some()) {
            return Err(Exit::usage(
                "--batch measures the gateway's POST /v1/batch of puts: use it with --op put only",
            ));
        }
        if self.op == Op::Cas && (self.target_node.is_some() || self.target_etcd.is_some()) {
            return Err(Exit::usage("--op cas measures the gateway's conditional writes, not --target-node"));
        }
        let (url, target) = if let Some(node) = &self.target_node {
            if self.ttl.is_some() {
                return Err(Exit::usage("--ttl applies to the gateway only, not to --target-node"));
            }
            let secret = self.cluster_secret.clone().unwrap_or_default();
            (parse_url("--target-node", node)?, TargetSpec::Node { secret })
        } else if let Some(etcd) = &self.target_etcd {
            (parse_url("--target-etcd", etcd)?, TargetSpec::Etcd)
        } else {
            let url = parse_url("--gateway", gateway)?;
            (url, TargetSpec::Gateway { api_key: api_key()?, consistency: self.consistency })
        };
        Ok(Plan {
            op: self.op,
            clients: self.clients,
            stop,
            value_size: self.value_size,
            keys: self.keys,
            ttl: self.ttl.clone(),
            warmup,
            timeout,
            url,
            target,
            keep: self.keep,
            batch: self.batch.map_or(1, usize::from),
            server_pids: self.server_pids.clone(),
        })
    }

    /// Checks the flags of a `--watchers` run and resolves them into a [`watch::WatchPlan`].
    pub fn watch_plan(
        &self,
        watchers: usize,
        gateway: &str,
        api_key: impl FnOnce() -> Result<String, Exit>,
    ) -> Result<watch::WatchPlan, Exit> {
        if self.op != Op::Put || self.batch.is_some() || self.target_node.is_some() || self.target_etcd.is_some() {
            return Err(Exit::usage(
                "--watchers measures the gateway's watches with single puts: not with --op, --batch or --target-*",
            ));
        }
        if self.requests.is_some() {
            return Err(Exit::usage("--watchers runs for --duration, not --requests"));
        }
        if self.rate == 0 || self.rate > 1_000_000 {
            return Err(Exit::usage("--rate must be between 1 and 1000000 writes per second"));
        }
        if self.clients == 0 || self.clients > MAX_CLIENTS {
            return Err(Exit::usage(format!("--clients must be between 1 and {MAX_CLIENTS}")));
        }
        if self.value_size > MAX_VALUE_SIZE || self.keys == 0 || self.keys > 1_000_000 {
            return Err(Exit::usage("--value-size must be at most 1 MiB and --keys 1 to 1000000 with --watchers"));
        }
        for &pid in &self.server_pids {
            cpu::ticks(pid).map_err(|error| Exit::usage(format!("--server-pid {pid}: {error}")))?;
        }
        let duration = match &self.duration {
            Some(text) => parse_duration("--duration", text, false)?,
            None => DEFAULT_DURATION,
        };
        Ok(watch::WatchPlan {
            watchers,
            rate: self.rate,
            writers: self.clients,
            duration,
            keys: self.keys,
            value_size: self.value_size,
            url: parse_url("--gateway", gateway)?,
            api_key: api_key()?,
            server_pids: self.server_pids.clone(),
            keep: self.keep,
        })
    }

    /// Runs the benchmark with the client flags (`--gateway`, `--api-key` or the
    /// stored default key, `--output`) and prints the result.
    pub async fn run(self, context: &Context) -> anyhow::Result<()> {
        let api_key = || {
            context.api_key().map_err(|error| match error.downcast::<Exit>() {
                Ok(exit) => exit,
                Err(other) => Exit::new(exit::AUTH, other.to_string()),
            })
        };
        if let Some(watchers) = self.watchers {
            let plan = self.watch_plan(usize::from(watchers), &context.gateway.display, api_key)?;
            let summary = watch::execute(&plan).await?;
            if context.json() {
                print_json(&summary)?;
            } else {
                print_line(&summary.table())?;
            }
            return match summary.failure() {
                Some(reason) => Err(Exit::new(exit::UNAVAILABLE, reason).into()),
                None => Ok(()),
            };
        }
        let plan = self.plan(&context.gateway.display, api_key)?;
        let summary = execute(&plan, !context.json() && std::io::stderr().is_terminal()).await?;
        if context.json() {
            print_json(&summary)?;
        } else {
            print_line(&summary.table())?;
        }
        match summary.failure() {
            Some(reason) => Err(Exit::new(exit::UNAVAILABLE, reason).into()),
            None => Ok(()),
        }
    }
}

fn header_value(what: &str, text: &str) -> Result<HeaderValue, Exit> {
    HeaderValue::from_str(text)
        .map_err(|_| Exit::usage(format!("the {what} contains characters not allowed in a header")))
}

/// What a failed first request means for the user.
fn preflight_error(kind: ErrorKind, plan: &Plan) -> Exit {
    let url = &plan.url;
    match kind {
        ErrorKind::Status(401 | 403) => Exit::new(
            exit::AUTH,
            format!("{url} refused the credentials ({kind}): check --api-key / --cluster-secret and the key's scopes"),
        ),
        ErrorKind::Status(429) => Exit::new(
            exit::UNAVAILABLE,
            format!("{url} is rate limiting (429): start the gateway with RATE_LIMIT_PER_MINUTE=0 for benchmarks"),
        ),
        ErrorKind::Connect | ErrorKind::Timeout => Exit::new(
            exit::UNAVAILABLE,
            format!("cannot reach {url} ({kind}): is the service running at that address?"),
        ),
        other => Exit::new(exit::UNAVAILABLE, format!("the first request to {url} failed ({other})")),
    }
}

/// Prepares the target, creates the keys if the run reads, warms up and measures.
pub async fn execute(plan: &Plan, show_progress: bool) -> anyhow::Result<Summary> {
    let prefix = format!("bench/{}/", crate::config::random_hex(4));
    let (endpoint, consistency) = match &plan.target {
        TargetSpec::Gateway { api_key, consistency } => (
            Endpoint::Gateway { api_key: header_value("API key", api_key)?, consistency: consistency.header() },
            Some(consistency.to_possible_value().expect("no skipped variants").get_name().to_string()),
        ),
        TargetSpec::Node { secret } => {
            (Endpoint::Node { secret: header_value("cluster secret", secret)?, clock: Hlc::new() }, None)
        }
        TargetSpec::Etcd => (Endpoint::Etcd, None),
    };
    let info = RunInfo {
        op: plan.op.to_possible_value().expect("no skipped variants").get_name().to_string(),
        target: endpoint.name().to_string(),
        url: plan.url.to_string(),
        consistency,
        clients: plan.clients,
        value_size: plan.value_size,
        keys: plan.keys,
        key_prefix: prefix.clone(),
        batch: (plan.batch > 1).then_some(plan.batch),
    };
    let target = Arc::new(Target::new(
        endpoint,
        &plan.url,
        &prefix,
        plan.keys,
        value_of_size(plan.value_size),
        plan.ttl.as_deref(),
    )?);
    let client = crate::tls::client_builder()
        .pool_max_idle_per_host(plan.clients)
        .tcp_nodelay(true)
        .http1_only()
        .no_proxy()
        .timeout(plan.timeout)
        .build()
        .context("cannot build the HTTP client")?;

    if let Err(kind) = target.put(&client, 0).await {
        return Err(preflight_error(kind, plan).into());
    }
    let phase = |mix, stop, order| Phase { mix, stop, order, clients: plan.clients, keys: plan.keys, batch: 1 };
    if plan.op != Op::Put {
        let fill = phase(Mix::Put, Stop::Requests(plan.keys), KeyOrder::Sequential);
        let (tallies, _) = run_with_progress(&client, &target, fill, "creating keys", show_progress).await;
        if let Some((kind, count)) = tallies.put.errors.iter().next() {
            let failed: u64 = tallies.put.errors.values().sum();
            return Err(Exit::new(
                exit::UNAVAILABLE,
                format!(
                    "could not create the benchmark keys: {failed} of {} puts failed ({count}× {kind}, …)",
                    plan.keys
                ),
            )
            .into());
        }
    }
    let mix = match plan.op {
        Op::Put => Mix::Put,
        Op::Get => Mix::Get,
        Op::Mixed => Mix::Mixed,
        Op::Cas => Mix::Cas,
    };
    if !plan.warmup.is_zero() {
        run_with_progress(
            &client,
            &target,
            Phase { batch: plan.batch, ..phase(mix, Stop::After(plan.warmup), KeyOrder::Random) },
            "warming up",
            show_progress,
        )
        .await;
    }
    let measured = Phase { batch: plan.batch, ..phase(mix, plan.stop, KeyOrder::Random) };
    let cpu_before = cpu::total_ticks(&plan.server_pids)?;
    let (tallies, elapsed) = run_with_progress(&client, &target, measured, "measuring", show_progress).await;
    let cpu_after = cpu::total_ticks(&plan.server_pids)?;
    let mut summary = Summary::new(info, &tallies, elapsed);
    if !plan.server_pids.is_empty() {
        summary.server_cpu = Some(ServerCpu::new(cpu_after - cpu_before, summary.total.requests));
    }
    if !plan.keep {
        let cleanup = phase(Mix::Delete, Stop::Requests(plan.keys), KeyOrder::Sequential);
        let (tallies, _) = run_with_progress(&client, &target, cleanup, "deleting keys", show_progress).await;
        let failed: u64 = tallies.delete.errors.values().sum();
        if let Some((kind, _)) = tallies.delete.errors.iter().max_by_key(|(_, count)| **count) {
            eprintln!(
                "note: {failed} of {} benchmark keys under {prefix} could not be deleted (mostly {kind}); \
                 they stay until deleted{}",
                plan.keys,
                if plan.ttl.is_some() { " or expired" } else { "" }
            );
        }
        summary.keys_deleted = Some(plan.keys - failed);
    }
    Ok(summary)
}

/// Runs a phase with a progress bar on stderr (hidden unless `show`).
async fn run_with_progress(
    client: &reqwest::Client,
    target: &Arc<Target>,
    phase: Phase,
    label: &'static str,
    show: bool,
) -> (summary::OpTallies, Duration) {
    let progress = Arc::new(Progress::default());
    if !show {
        return load::run(client, target, phase, &progress).await;
    }
    let (length, template) = match phase.stop {
        Stop::Requests(total) => (total, "{prefix:>14} [{bar:30}] {pos}/{len} {msg}"),
        Stop::After(duration) => (duration.as_millis() as u64, "{prefix:>14} [{bar:30}] {elapsed}/{duration} {msg}"),
    };
    let bar = indicatif::ProgressBar::new(length);
    bar.set_style(indicatif::ProgressStyle::with_template(template).expect("constant template").progress_chars("=> "));
    bar.set_prefix(label);
    let ticker = {
        let (bar, progress) = (bar.clone(), progress.clone());
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let mut interval = tokio::time::interval(Duration::from_millis(200));
            loop {
                interval.tick().await;
                let done = progress.done.load(Ordering::Relaxed);
                let failed = progress.failed.load(Ordering::Relaxed);
                let elapsed = started.elapsed();
                bar.set_position(match phase.stop {
                    Stop::Requests(_) => done,
                    Stop::After(_) => elapsed.as_millis() as u64,
                });
                let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
                bar.set_message(format!("{rate:.0} ops/s, {failed} errors"));
            }
        })
    };
    let result = load::run(client, target, phase, &progress).await;
    ticker.abort();
    bar.finish_and_clear();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Harness {
        #[command(flatten)]
        bench: BenchArgs,
    }

    const GATEWAY: &str = "http://127.0.0.1:9";

    fn plan_with(args: &[&str], gateway: &str, api_key: Option<&str>) -> Result<Plan, Exit> {
        let mut argv = vec!["bench"];
        argv.extend_from_slice(args);
        let bench = Harness::try_parse_from(argv).expect("clap accepts the flags").bench;
        bench.plan(gateway, || api_key.map(str::to_string).ok_or_else(|| Exit::new(exit::AUTH, "no API key")))
    }

    fn plan(args: &[&str]) -> Result<Plan, Exit> {
        plan_with(args, GATEWAY, Some("k"))
    }

    #[test]
    fn defaults_measure_gateway_puts_for_ten_seconds() {
        let plan = plan(&[]).unwrap();
        assert_eq!(plan.op, Op::Put);
        assert_eq!(plan.stop, Stop::After(DEFAULT_DURATION));
        assert_eq!(plan.clients, 16);
        assert_eq!(plan.warmup, Duration::from_secs(2));
        assert_eq!(plan.target, TargetSpec::Gateway { api_key: "k".into(), consistency: ConsistencyLevel::Eventual });
    }

    #[test]
    fn requests_and_durations_are_parsed() {
        let by_count = plan(&["--requests", "200", "--warmup", "0s"]).unwrap();
        assert_eq!(by_count.stop, Stop::Requests(200));
        assert!(by_count.warmup.is_zero());
        let by_time = plan(&["--duration", "1m30s"]).unwrap();
        assert_eq!(by_time.stop, Stop::After(Duration::from_secs(90)));
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["--clients", "0"][..],
            &["--clients", "5000"],
            &["--requests", "0"],
            &["--duration", "soon"],
            &["--duration", "0s"],
            &["--keys", "0"],
            &["--value-size", "2000000"],
            &["--ttl", "0s"],
            &["--target-node", "http://127.0.0.1:1", "--cluster-secret", "s", "--ttl", "1h"],
            &["--server-pid", "4294967295"],
        ] {
            let error = plan(args).expect_err(&format!("{args:?} must be refused"));
            assert_eq!(error.code, exit::USAGE, "{args:?}: {}", error.message);
        }
    }

    #[test]
    fn server_pids_are_checked_and_kept() {
        let own = std::process::id().to_string();
        assert_eq!(plan(&["--server-pid", &own]).unwrap().server_pids, vec![std::process::id()]);
        let error = plan(&["--server-pid", &own, "--server-pid", "4294967295"]).unwrap_err();
        assert!(error.message.starts_with("--server-pid 4294967295:"), "{}", error.message);
    }

    #[test]
    fn a_missing_api_key_matters_only_for_the_gateway() {
        assert_eq!(plan_with(&[], GATEWAY, None).unwrap_err().code, exit::AUTH);
        assert_eq!(plan_with(&[], "ftp://x", Some("k")).unwrap_err().code, exit::USAGE);
        let node = ["--target-node", "http://127.0.0.1:1", "--cluster-secret", "s"];
        assert!(plan_with(&node, GATEWAY, None).is_ok());
        assert!(plan_with(&["--target-etcd", "http://127.0.0.1:2379"], GATEWAY, None).is_ok());
    }

    #[test]
    fn a_node_target_needs_the_cluster_secret() {
        assert!(Harness::try_parse_from(["bench", "--target-node", "http://127.0.0.1:1"]).is_err());
        let plan = plan(&["--target-node", "http://127.0.0.1:1", "--cluster-secret", "s"]).unwrap();
        assert_eq!(plan.target, TargetSpec::Node { secret: "s".into() });
        assert_eq!(plan.url.as_str(), "http://127.0.0.1:1/");
    }

    #[test]
    fn duration_and_requests_are_exclusive() {
        assert!(Harness::try_parse_from(["bench", "--duration", "1s", "--requests", "5"]).is_err());
    }

    #[test]
    fn preflight_errors_name_the_fix() {
        let plan = plan(&[]).unwrap();
        assert!(preflight_error(ErrorKind::Status(429), &plan).message.contains("RATE_LIMIT_PER_MINUTE=0"));
        assert_eq!(preflight_error(ErrorKind::Status(401), &plan).code, exit::AUTH);
        assert_eq!(preflight_error(ErrorKind::Connect, &plan).code, exit::UNAVAILABLE);
    }
}
