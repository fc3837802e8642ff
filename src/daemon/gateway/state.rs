//! The gateway's shared state: a cheap-clone handle over everything requests use.

use std::ops::Deref;
use std::sync::Arc;

use axum::extract::FromRef;

use super::GatewayConfig;
use super::authlimit::AuthFailures;
use super::metrics::Metrics;
use super::nodes::{NodeClient, http_client};
use super::placement::{Placement, Topology};
use super::ratelimit::RateLimiter;
use super::replication::Replication;
use super::tenant::KeyCache;
use super::usage::UsageLog;
use crate::auth::cluster::ClusterSecret;
use crate::hlc::Hlc;

/// Everything the handlers share.
#[derive(Debug)]
pub struct Shared {
    /// The resolved settings.
    pub config: GatewayConfig,
    /// The ring(s) and node health, swapped when the membership changes.
    pub topology: Topology,
    /// Client for the nodes' internal API.
    pub nodes: NodeClient,
    /// The pooled keep-alive client for the users service and replicator.
    pub http: reqwest::Client,
    /// Source of write versions.
    pub hlc: Hlc,
    /// Recently validated (and refused) API keys.
    pub keys: KeyCache,
    /// Failed API-key checks per client address.
    pub auth_failures: AuthFailures,
    /// Per-user token buckets.
    pub limiter: RateLimiter,
    /// Usage totals waiting to be flushed.
    pub usage: UsageLog,
    /// Request metrics.
    pub metrics: Arc<Metrics>,
    /// Replication job sender.
    pub replication: Replication,
    /// Guards `GET /cluster`.
    pub cluster_secret: ClusterSecret,
    /// Whether the users service has been offered `YDHT_NODES` as the initial membership.
    pub seeded: std::sync::atomic::AtomicBool,
    /// This gateway's Paxos proposer id (random, so unique among gateways); it breaks ballot ties.
    pub proposer: u64,
    /// The last chosen conditional write of each key this gateway wrote: fast rounds build on it.
    pub fast_bases: super::conditional::FastBases,
    /// This gateway's chosen conditional writes whose commits are still on their way.
    pub committing: super::conditional::Committing,
    /// The readers of the nodes' change feeds shared by this gateway's watches.
    pub watches: super::watch::WatchHub,
    /// Triggered when the gateway starts shutting down: long polls answer at once
    /// instead of holding the drain for up to their wait.
    pub stopping: crate::shutdown::Shutdown,
}

/// The handle in the router's state; clones share one [`Shared`].
#[derive(Debug, Clone)]
pub struct GatewayState(Arc<Shared>);

impl GatewayState {
    /// Builds the state for `config`.
    pub fn new(config: GatewayConfig) -> Self {
        let http = http_client();
        let topology = Topology::new(Placement::new(config.nodes.clone(), config.vnodes, config.replicas));
        let nodes = NodeClient::new(http.clone(), config.cluster_secret.clone());
        let metrics = Arc::new(Metrics::default());
        let replication = Replication::new(
            http.clone(),
            config.replicator_url.clone(),
            config.cluster_secret.clone(),
            nodes.clone(),
            topology.clone(),
            metrics.clone(),
        );
        Self(Arc::new(Shared {
            limiter: RateLimiter::new(config.rate_limit_per_minute, config.rate_limit_burst),
            auth_failures: AuthFailures::new(config.auth_failures_per_minute),
            cluster_secret: ClusterSecret::new(config.cluster_secret.clone()),
            watches: super::watch::WatchHub::new(config.max_watches_per_tenant),
            config,
            topology,
            nodes,
            http,
            hlc: Hlc::new(),
            keys: KeyCache::default(),
            usage: UsageLog::default(),
            metrics,
            replication,
            seeded: Default::default(),
            // Below u64::MAX, the proposer of the ballots that cover a record's version.
            proposer: rand::random::<u64>() >> 1,
            fast_bases: Default::default(),
            committing: Default::default(),
            stopping: crate::shutdown::Shutdown::new(),
        }))
    }
}

impl GatewayState {
    /// The current placement (take it once per request).
    pub fn placement(&self) -> Arc<Placement> {
        self.topology.current()
    }
}

impl Deref for GatewayState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl FromRef<GatewayState> for ClusterSecret {
    fn from_ref(state: &GatewayState) -> Self {
        state.cluster_secret.clone()
    }
}
