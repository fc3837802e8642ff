//! `ydht serve replicator`: accepts replication jobs into a durable queue and
//! copies each write to its target nodes, in parallel, with retries and
//! hinted handoff.
//!
//! - [`batch`]: the body of `POST /jobs`, many jobs in one request.
//! - [`queue`]: the append-only queue log (group commit, done markers, compaction, torn-tail recovery).
//! - [`state`]: the in-memory queue, delivery tasks, the handoff prober and the metrics.
//! - [`routes`]: the HTTP API (`POST /jobs`, `/metrics`, `/health`).
//! - [`membership`]: follows the cluster membership, so copies for a node that left go to the key's owners.

pub mod membership;
pub mod queue;
pub mod routes;
pub mod state;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::net::TcpListener;

use crate::auth::cluster::ClusterSecret;
use crate::config::{Secret, ServerArgs};
use crate::shutdown::Shutdown;
use queue::{CompactionPolicy, QueueLog};
use state::Replicator;

/// The replicator's default port (as in the original product).
pub const DEFAULT_PORT: u16 = 8085;
/// The queue log's directory inside the data dir.
pub const QUEUE_DIR: &str = "replicator";
/// At most this many targets per job.
pub const MAX_TARGETS: usize = 16;
/// Default `--max-queue`.
pub const DEFAULT_MAX_QUEUE: u64 = 10_000;
/// Default `--max-queue-bytes` (256 MiB).
pub const DEFAULT_MAX_QUEUE_BYTES: u64 = 256 * 1024 * 1024;
/// Default `--max-value-bytes` (1 MiB, as `YDHT_MAX_VALUE_BYTES` everywhere).
pub const DEFAULT_MAX_VALUE_BYTES: u64 = 1024 * 1024;
/// Default `--compact-bytes` (64 MiB).
pub const DEFAULT_COMPACT_BYTES: u64 = 64 * 1024 * 1024;
/// How long in-flight replica writes may finish after shutdown is requested.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Flags of `ydht serve replicator`.
#[derive(Args, Debug, Clone)]
pub struct ReplicatorArgs {
    /// Shared server flags (data dir, host, cluster secret).
    #[command(flatten)]
    pub server: ServerArgs,

    /// Port to listen on (0 picks a free one)
    #[arg(long, env = "REPLICATOR_PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,

    /// Most unfinished jobs kept; beyond it new jobs get 503 with Retry-After
    #[arg(long, env = "YDHT_REPLICATOR_MAX_QUEUE", default_value_t = DEFAULT_MAX_QUEUE,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_queue: u64,

    /// Most bytes of values held by unfinished jobs; beyond it new jobs get 503
    #[arg(long, env = "YDHT_REPLICATOR_MAX_QUEUE_BYTES", default_value_t = DEFAULT_MAX_QUEUE_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_queue_bytes: u64,

    /// Largest value a job may carry, in bytes; larger bodies get 413
    #[arg(long, env = "YDHT_MAX_VALUE_BYTES", default_value_t = DEFAULT_MAX_VALUE_BYTES,
          value_parser = clap::value_parser!(u64).range(1..=(queue::MAX_RECORD_BYTES as u64 / 2)))]
    pub max_value_bytes: u64,

    /// With `x-ydht-wait`, how long to wait for the acknowledgements before answering 504
    #[arg(long, env = "YDHT_REPLICATOR_WAIT_TIMEOUT", default_value = "5s", value_parser = crate::duration::parse)]
    pub wait_timeout: Duration,

    /// Delay before the first retry of a failed replica write (doubles each retry, plus jitter)
    #[arg(long, env = "YDHT_REPLICATOR_RETRY_BASE", default_value = "100ms", value_parser = crate::duration::parse)]
    pub retry_base: Duration,

    /// How often nodes holding hinted handoffs are probed with /health
    #[arg(long, env = "YDHT_REPLICATOR_PROBE_INTERVAL", default_value = "1s", value_parser = crate::duration::parse)]
    pub probe_interval: Duration,

    /// Timeout of one request to a node
    #[arg(long, env = "YDHT_REPLICATOR_REQUEST_TIMEOUT", default_value = "5s", value_parser = crate::duration::parse)]
    pub request_timeout: Duration,

    /// Rewrite the queue log when it grows past this many bytes (mostly finished work)
    #[arg(long, env = "YDHT_REPLICATOR_COMPACT_BYTES", default_value_t = DEFAULT_COMPACT_BYTES,
          value_parser = clap::value_parser!(u64).range(4096..))]
    pub compact_bytes: u64,

    /// Follow the cluster membership at this users service: copies for a node that left the
    /// cluster (`ydht cluster leave`, also `--force`) go to the key's current owners instead
    #[arg(long, env = "YDHT_USERS_URL")]
    pub users_url: Option<String>,

    /// Copies kept of every key (N), as the gateway's (to find a key's owners)
    #[arg(long, env = "YDHT_REPLICAS", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub replicas: u64,

    /// Virtual nodes per storage node on the ring, as the gateway's
    #[arg(long, env = "YDHT_VNODES", default_value_t = 150, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub vnodes: u64,
}

/// The replicator's resolved settings (no environment reading past this point).
#[derive(Debug, Clone)]
pub struct ReplicatorConfig {
    /// The data dir; the queue lives in `<data_dir>/replicator/`.
    pub data_dir: PathBuf,
    /// Address to bind.
    pub host: String,
    /// Port to bind.
    pub port: u16,
    /// The cluster secret (required on `POST /jobs` and sent to the nodes).
    pub secret: Secret,
    /// Most unfinished jobs.
    pub max_queue: usize,
    /// Most value bytes held by unfinished jobs.
    pub max_queue_bytes: u64,
    /// Largest job body.
    pub max_value_bytes: usize,
    /// How long `x-ydht-wait` waits.
    pub wait_timeout: Duration,
    /// First retry delay.
    pub retry_base: Duration,
    /// Hinted-handoff probe period.
    pub probe_interval: Duration,
    /// Per-request timeout towards nodes.
    pub request_timeout: Duration,
    /// Queue log compaction threshold in bytes.
    pub compact_bytes: u64,
    /// How long in-flight replica writes may finish after shutdown is requested.
    pub shutdown_grace: Duration,
    /// Serve HTTPS with this certificate (`--tls-cert` / `--tls-key`); plain HTTP when `None`.
    pub tls: Option<crate::tls::TlsConfig>,
    /// The users service whose membership is followed; `None`: job targets are taken as they come.
    pub users_url: Option<String>,
    /// Copies per key (N).
    pub replicas: usize,
    /// Virtual nodes per node.
    pub vnodes: usize,
}

impl ReplicatorArgs {
    /// Resolves the data dir and cluster secret and freezes the settings.
    pub fn into_config(self) -> anyhow::Result<ReplicatorConfig> {
        let data_dir = self.server.data_dir()?;
        let secret = self.server.cluster_secret(&data_dir)?;
        let tls = self.server.tls()?;
        let users_url = match self.users_url.as_deref().map(str::trim).filter(|url| !url.is_empty()) {
            None => None,
            Some(url) => match reqwest::Url::parse(url) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {
                    Some(url.trim_end_matches('/').to_string())
                }
                _ => {
                    return Err(crate::error::Exit::usage(format!(
                        "invalid --users-url / YDHT_USERS_URL {url:?}; expected a URL like http://127.0.0.1:8081"
                    ))
                    .into());
                }
            },
        };
        Ok(ReplicatorConfig {
            data_dir,
            host: self.server.host,
            port: self.port,
            secret,
            max_queue: usize::try_from(self.max_queue).unwrap_or(usize::MAX),
            max_queue_bytes: self.max_queue_bytes,
            max_value_bytes: usize::try_from(self.max_value_bytes).unwrap_or(usize::MAX),
            wait_timeout: self.wait_timeout,
            retry_base: self.retry_base,
            probe_interval: self.probe_interval,
            request_timeout: self.request_timeout,
            compact_bytes: self.compact_bytes,
            shutdown_grace: SHUTDOWN_GRACE,
            tls,
            users_url,
            replicas: self.replicas as usize,
            vnodes: self.vnodes as usize,
        })
    }
}

impl ReplicatorConfig {
    /// Settings with every default, for `serve all` and tests.
    pub fn with_defaults(data_dir: PathBuf, secret: Secret) -> Self {
        let seconds = Duration::from_secs;
        Self {
            data_dir,
            host: "127.0.0.1".to_string(),
            port: DEFAULT_PORT,
            secret,
            max_queue: DEFAULT_MAX_QUEUE as usize,
            max_queue_bytes: DEFAULT_MAX_QUEUE_BYTES,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES as usize,
            wait_timeout: seconds(5),
            retry_base: Duration::from_millis(100),
            probe_interval: seconds(1),
            request_timeout: seconds(5),
            compact_bytes: DEFAULT_COMPACT_BYTES,
            shutdown_grace: SHUTDOWN_GRACE,
            tls: None,
            users_url: None,
            replicas: 3,
            vnodes: 150,
        }
    }

    /// Where the queue log lives.
    pub fn queue_dir(&self) -> PathBuf {
        self.data_dir.join(QUEUE_DIR)
    }
}

/// Runs the replicator on `listener` until `shutdown`: recovers the queue, resumes
/// unfinished work, serves the API, then drains and leaves what is unfinished in the log.
pub async fn serve(config: ReplicatorConfig, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let tls = config.tls.clone();
    let config = Arc::new(config);
    let dir = config.queue_dir();
    let policy = CompactionPolicy::for_threshold(config.compact_bytes);
    let (log, recovered) = tokio::task::spawn_blocking(move || QueueLog::open(&dir, policy)).await??;
    tracing::info!(
        dir = %config.queue_dir().display(),
        unfinished = recovered.unfinished.len(),
        "replication queue recovered"
    );
    let secret = ClusterSecret::new(config.secret.clone());
    let state = Replicator::new(config.clone(), secret, log, recovered.next_id, shutdown.clone());
    state.resume(recovered.unfinished);
    let prober = tokio::spawn(state.clone().run_prober());
    let follower = config.users_url.clone().map(|users_url| {
        tokio::spawn(membership::follow(state.clone(), users_url, config.secret.clone(), shutdown.clone()))
    });
    let served =
        crate::server::serve_with("replicator", listener, routes::app(state.clone()), shutdown.clone(), tls).await;
    shutdown.trigger();
    let _ = prober.await;
    if let Some(follower) = follower {
        let _ = follower.await;
    }
    state.close().await;
    tracing::info!("replicator stopped");
    served
}

/// `ydht serve replicator`: binds the port, announces it and serves until SIGINT/SIGTERM.
pub async fn run(args: ReplicatorArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    let listener = crate::server::bind(&config.host, config.port, "--port / REPLICATOR_PORT").await?;
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    crate::server::announce_with("replicator", listener.local_addr()?, config.tls.as_ref());
    serve(config, listener, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: ReplicatorArgs,
    }

    #[test]
    fn flag_defaults_match_the_programmatic_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let dir_text = dir.path().to_str().unwrap();
        let parsed = Wrapper::parse_from(["replicator", "--data-dir", dir_text, "--cluster-secret", "s"]);
        let from_flags = parsed.args.into_config().unwrap();
        let programmatic = ReplicatorConfig::with_defaults(dir.path().to_path_buf(), Secret::new("s"));
        assert_eq!(format!("{from_flags:?}"), format!("{programmatic:?}"));
        assert_eq!(from_flags.secret, programmatic.secret);
        assert_eq!(from_flags.queue_dir(), dir.path().join(QUEUE_DIR));
    }

    #[test]
    fn bad_flag_values_are_refused() {
        for bad in [
            ["--max-queue", "0"],
            ["--retry-base", "fast"],
            ["--compact-bytes", "10"],
            ["--wait-timeout", "0s"],
            ["--replicas", "0"],
        ] {
            assert!(Wrapper::try_parse_from(["replicator", bad[0], bad[1]]).is_err(), "{bad:?} accepted");
        }
        let dir = tempfile::tempdir().unwrap();
        let dir_text = dir.path().to_str().unwrap();
        let parsed = Wrapper::parse_from([
            "replicator",
            "--data-dir",
            dir_text,
            "--cluster-secret",
            "s",
            "--users-url",
            "ftp://u",
        ]);
        assert!(parsed.args.into_config().unwrap_err().to_string().contains("--users-url"));
    }
}
