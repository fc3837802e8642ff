//! `ydht serve gateway`: the public, multi-tenant KV API (`/v1/kv…`) over the
//! storage nodes, with API-key authentication, per-user rate limits, usage
//! accounting and tunable consistency.
//!
//! - [`routes`]: the HTTP surface and the `/v1` guard layer.
//! - [`tenant`]: the API-key extractor (users service `/validate-key`, cached, refusals too).
//! - [`authlimit`]: failed API-key checks limited per client address.
//! - [`ratelimit`]: per-user token buckets.
//! - [`usage`]: usage totals flushed to the users service.
//! - [`metrics`]: request rates, latency percentiles, failures.
//! - [`input`]: key, consistency and TTL checks.
//! - [`placement`]: the ring (two during a membership change) and node health.
//! - [`membership`]: follows the membership in the users service; the `/membership…` endpoints.
//! - [`coordinator`]: reads and writes at eventual / strong consistency.
//! - [`quorum`]: records, mutations and newest-version resolution.
//! - [`nodes`]: the HTTP client for the nodes' internal API.
//! - [`replication`]: replicator jobs, with a fallback copy from the gateway.
//! - [`batch`]: `POST /v1/batch`, many operations in one request.
//! - [`watch`]: `GET /v1/watch`, change streams over the nodes' change feeds.

pub mod authlimit;
pub mod batch;
pub mod conditional;
pub mod coordinator;
pub mod input;
pub mod membership;
pub mod metrics;
pub mod nodes;
pub mod placement;
pub mod quorum;
pub mod ratelimit;
pub mod replication;
pub mod routes;
pub mod state;
pub mod tenant;
pub mod usage;
pub mod watch;

use std::time::Duration;

use clap::Args;
use tokio::net::TcpListener;

pub use routes::app;
pub use state::GatewayState;

use crate::config::{Secret, ServerArgs};
use crate::error::Exit;
use crate::ring::NodeInfo;
use crate::shutdown::Shutdown;
use crate::tls::TlsConfig;

/// Default `YDHT_NODES`: the three nodes of the original README.
pub const DEFAULT_NODES: &str =
    "node-1=http://127.0.0.1:8082,node-2=http://127.0.0.1:8083,node-3=http://127.0.0.1:8084";

/// Flags of `ydht serve gateway`.
#[derive(Args, Debug, Clone)]
pub struct GatewayArgs {
    /// Shared server flags.
    #[command(flatten)]
    pub server: ServerArgs,

    /// Port to listen on (0 picks a free one)
    #[arg(long, env = "GATEWAY_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Storage nodes: comma-separated `id=http://host:port` (or bare URLs)
    #[arg(long, env = "YDHT_NODES", default_value = DEFAULT_NODES)]
    pub nodes: String,

    /// Base URL of the replicator
    #[arg(long, env = "YDHT_REPLICATOR_URL", default_value = "http://127.0.0.1:8085")]
    pub replicator_url: String,

    /// Base URL of the users service (API-key validation, usage)
    #[arg(long, env = "YDHT_USERS_URL", default_value = "http://127.0.0.1:8081")]
    pub users_url: String,

    /// Copies kept of every key (N)
    #[arg(long, env = "YDHT_REPLICAS", default_value_t = 3)]
    pub replicas: usize,

    /// Virtual nodes per storage node on the ring
    #[arg(long, env = "YDHT_VNODES", default_value_t = 150)]
    pub vnodes: usize,

    /// Requests per minute each user's bucket refills (0 disables rate limiting)
    #[arg(long, env = "RATE_LIMIT_PER_MINUTE", default_value_t = 100)]
    pub rate_limit_per_minute: u32,

    /// Requests a user may make in a burst
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 10)]
    pub rate_limit_burst: u32,

    /// Largest value accepted, in bytes (larger → 413)
    #[arg(long, env = "YDHT_MAX_VALUE_BYTES", default_value_t = 1024 * 1024)]
    pub max_value_bytes: usize,

    /// Failed API-key checks allowed per client address and minute before 429 (0 disables)
    #[arg(long, env = "YDHT_AUTH_FAILURES_PER_MINUTE", default_value_t = authlimit::DEFAULT_AUTH_FAILURES_PER_MINUTE)]
    pub auth_failures_per_minute: u32,
    /// Largest offset between this gateway's clock and the storage nodes' (median) it writes
    /// with; past it writes get 503 until the clocks agree again (`500ms`, `2s`)
    #[arg(long, env = "YDHT_MAX_CLOCK_OFFSET", default_value = "500ms", value_parser = crate::duration::parse)]
    pub max_clock_offset: Duration,

    /// Most watches (`GET /v1/watch`) one account may have open on this gateway (429 past it)
    #[arg(long, env = "YDHT_MAX_WATCHES_PER_TENANT", default_value_t = watch::DEFAULT_MAX_WATCHES_PER_TENANT)]
    pub max_watches_per_tenant: usize,
}

/// The gateway's resolved settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The storage nodes on the ring.
    pub nodes: Vec<NodeInfo>,
    /// Base URL of the replicator (no trailing slash).
    pub replicator_url: String,
    /// Base URL of the users service (no trailing slash).
    pub users_url: String,
    /// Copies kept of every key (N).
    pub replicas: usize,
    /// Virtual nodes per storage node.
    pub vnodes: usize,
    /// Rate-limit refill per minute (0 disables).
    pub rate_limit_per_minute: u32,
    /// Rate-limit burst.
    pub rate_limit_burst: u32,
    /// Largest value accepted, in bytes.
    pub max_value_bytes: usize,
    /// Failed API-key checks allowed per client address and minute (0 disables).
    pub auth_failures_per_minute: u32,
    /// Largest clock offset from the nodes the gateway writes with.
    pub max_clock_offset: Duration,
    /// Most watches one account may have open on this gateway.
    pub max_watches_per_tenant: usize,
    /// The cluster secret for internal calls.
    pub cluster_secret: Secret,
    /// Serve HTTPS with this certificate (`--tls-cert` / `--tls-key`); plain HTTP when `None`.
    pub tls: Option<TlsConfig>,
}

fn check_url(flag: &str, url: &str) -> anyhow::Result<String> {
    let url = url.trim().trim_end_matches('/');
    match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(url.to_string()),
        _ => Err(Exit::usage(format!("invalid {flag} {url:?}; expected a URL like http://127.0.0.1:8081")).into()),
    }
}

impl GatewayArgs {
    /// Resolves the flags (and the data dir's cluster secret) into a config.
    pub fn into_config(self) -> anyhow::Result<GatewayConfig> {
        let nodes =
            NodeInfo::parse_list(&self.nodes).map_err(|error| Exit::usage(format!("--nodes / YDHT_NODES: {error}")))?;
        if self.replicas == 0 {
            return Err(Exit::usage("--replicas / YDHT_REPLICAS must be at least 1").into());
        }
        if self.max_watches_per_tenant == 0 {
            return Err(Exit::usage("--max-watches-per-tenant / YDHT_MAX_WATCHES_PER_TENANT must be at least 1").into());
        }
        if self.max_value_bytes == 0 {
            return Err(Exit::usage("--max-value-bytes / YDHT_MAX_VALUE_BYTES must be at least 1").into());
        }
        let data_dir = self.server.data_dir()?;
        Ok(GatewayConfig {
            nodes,
            replicator_url: check_url("--replicator-url / YDHT_REPLICATOR_URL", &self.replicator_url)?,
            users_url: check_url("--users-url / YDHT_USERS_URL", &self.users_url)?,
            replicas: self.replicas,
            vnodes: self.vnodes,
            rate_limit_per_minute: self.rate_limit_per_minute,
            rate_limit_burst: self.rate_limit_burst,
            max_value_bytes: self.max_value_bytes,
            auth_failures_per_minute: self.auth_failures_per_minute,
            max_clock_offset: self.max_clock_offset,
            max_watches_per_tenant: self.max_watches_per_tenant,
            cluster_secret: self.server.cluster_secret(&data_dir)?,
            tls: self.server.tls()?,
        })
    }
}

/// Serves the gateway on `listener` until `shutdown`, with its background
/// node prober and usage flusher; flushes usage once more on the way out.
pub async fn serve(config: GatewayConfig, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let state = GatewayState::new(config);
    if state.placement().replicas() < state.config.replicas {
        tracing::warn!(
            nodes = state.config.nodes.len(),
            replicas = state.config.replicas,
            "fewer nodes than replicas; keeping one copy per node"
        );
    }
    let prober = tokio::spawn(state.topology.clone().probe_loop(state.nodes.clone(), shutdown.clone()));
    let watcher = tokio::spawn(membership::watch_loop(state.clone(), shutdown.clone()));
    let flusher = {
        let state = state.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let (http, users_url, secret) =
                (state.http.clone(), state.config.users_url.clone(), state.config.cluster_secret.clone());
            state.usage.flush_loop(http, users_url, secret, shutdown).await;
        })
    };
    let stopping = {
        let (stopping, shutdown) = (state.stopping.clone(), shutdown.clone());
        tokio::spawn(async move {
            shutdown.wait().await;
            tracing::info!("gateway: shutting down");
            stopping.trigger();
        })
    };
    let tls = state.config.tls.clone();
    let served = crate::server::serve_with("gateway", listener, app(state), shutdown, tls).await;
    let _ = prober.await;
    let _ = watcher.await;
    let _ = flusher.await;
    let _ = stopping.await;
    tracing::info!("gateway: stopped");
    served
}

/// `ydht serve gateway`: binds, announces, serves until SIGINT/SIGTERM.
pub async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let host = args.server.host.clone();
    let port = args.port;
    let config = args.into_config()?;
    let listener = crate::server::bind(&host, port, "--port / GATEWAY_PORT").await?;
    crate::server::announce_with("gateway", listener.local_addr()?, config.tls.as_ref());
    tracing::info!(nodes = config.nodes.len(), replicas = config.replicas, "gateway ready");
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    serve(config, listener, shutdown).await
}
