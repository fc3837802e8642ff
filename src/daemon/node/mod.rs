//! `ydht serve node`: one storage node. It keeps key → versioned value in
//! memory, made durable by a write-ahead log with group commit
//! ([`crate::wal`]), and serves the internal API the gateway and replicator use.
//!
//! - [`store`]: the map, versioned writes through the WAL, TTL sweeping, listing.
//! - [`slot`]: how the map holds one key compactly, and the shared content-type table.
//! - [`routes`]: the HTTP API (`/store/{key}`, `/keys`, `/batch`, `/metrics`, `/health`).
//! - [`batch`]: the binary body of `POST /batch`.
//! - [`digest`]: per-arc hashes of the node's entries, kept current on every write.
//! - [`antientropy`]: the background task that compares digests with peers and repairs differences.
//! - [`gc`]: when a tombstone may be purged (past the grace and held by every peer).
//! - [`membership`]: with `--join`: registering, following the membership, rebalancing, clean-up.

pub mod acceptors;
pub mod antientropy;
pub mod digest;
pub mod feed;
pub mod gc;
pub mod membership;
pub mod routes;
pub mod slot;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::FromRef;
use clap::Args;
use tokio::net::TcpListener;

use crate::auth::cluster::ClusterSecret;
use crate::config::{Secret, ServerArgs};
use crate::error::Exit;
use crate::nodeclient::NodeClient;
use crate::ring::{NodeInfo, Ring};
use crate::shutdown::Shutdown;
use crate::wal::SyncMode;
use antientropy::{AntiEntropyConfig, AntiEntropyStats, RingSource, SharedFingerprint};
use clap::builder::TypedValueParser;
use membership::MembershipSettings;

pub use routes::app;
pub use store::{Store, StoreOptions};

/// Arguments of `ydht serve node`.
#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// Port to listen on
    #[arg(long, env = "DHTNODE_PORT", default_value_t = 8082)]
    pub port: u16,

    /// This node's id; its WAL and snapshots live in <data-dir>/<node-id>/
    #[arg(long, env = "NODE_ID", default_value = "node-1")]
    pub node_id: String,

    /// Largest value accepted, in bytes (larger bodies get 413 before being read)
    #[arg(long, env = "YDHT_MAX_VALUE_BYTES", default_value_t = 1 << 20)]
    pub max_value_bytes: usize,

    /// Snapshot and start a new WAL segment when the active one reaches this many bytes
    #[arg(long, env = "YDHT_WAL_MAX_BYTES", default_value_t = 64 << 20)]
    pub wal_max_bytes: u64,

    /// group: concurrent writes share one fdatasync; per-write: one fdatasync per write (for benchmarks)
    #[arg(
        long,
        env = "YDHT_SYNC_MODE",
        default_value = "group",
        value_parser = clap::builder::PossibleValuesParser::new(SyncMode::ALL.map(SyncMode::as_str))
            .try_map(|name| name.parse::<SyncMode>())
    )]
    pub sync_mode: SyncMode,

    /// Start despite a corrupt WAL segment by truncating it at the first bad record (later records are lost)
    #[arg(long, env = "YDHT_SALVAGE_WAL")]
    pub salvage_wal: bool,

    /// How long the change feed (`GET /feed`, for watches) keeps changes: WAL segments a snapshot
    /// covers are removed only once they were last written this long ago (0: at once)
    #[arg(long, env = "YDHT_FEED_RETENTION", default_value = "10m", value_parser = crate::duration::parse_or_off)]
    pub feed_retention: Duration,

    /// How many changes the change feed keeps at least: a WAL segment a snapshot covers is also
    /// kept until this many WAL entries were logged after it (0: no minimum)
    #[arg(long, env = "YDHT_FEED_RETENTION_CHANGES", default_value_t = 1_000_000)]
    pub feed_retention_changes: u64,

    /// How long tombstones and expired entries keep their version before being purged; with peers, a
    /// tombstone is purged only once every peer is also known to hold it (a peer that is down holds them back)
    #[arg(long, env = "YDHT_TOMBSTONE_GRACE", default_value = "24h", value_parser = crate::duration::parse)]
    pub tombstone_grace: Duration,

    /// Every storage node of the cluster, this one included (id=url,… or bare URLs, the gateway's format;
    /// a bare URL is this node when it is its --advertise-url or the host:port it listens on);
    /// enables anti-entropy with the others
    #[arg(long, env = "YDHT_NODES", value_name = "ID=URL|URL,…")]
    pub peers: Option<String>,

    /// Copies kept of every key (must match the gateway's; decides which keys this node shares with each peer)
    #[arg(long, env = "YDHT_REPLICAS", default_value_t = 3)]
    pub replicas: usize,

    /// Virtual nodes per physical node on the ring (must match the gateway's)
    #[arg(long, env = "YDHT_VNODES", default_value_t = 150)]
    pub vnodes: usize,

    /// Time between anti-entropy rounds with the peers; 0 disables anti-entropy
    #[arg(long, env = "YDHT_ANTI_ENTROPY_INTERVAL", default_value = "30s", value_parser = crate::duration::parse_or_off)]
    pub anti_entropy_interval: Duration,

    /// Most records one anti-entropy round transfers (pulled + pushed), so repairs never starve client traffic
    #[arg(long, env = "YDHT_ANTI_ENTROPY_MAX_KEYS", default_value_t = 10_000)]
    pub anti_entropy_max_keys: usize,

    /// Register this node at start through the gateway at this URL and follow the cluster
    /// membership: online joins and removals, rebalancing, anti-entropy with every member
    #[arg(long, env = "YDHT_JOIN", value_name = "GATEWAY_URL")]
    pub join: Option<String>,

    /// The URL other services reach this node at [default: http(s)://HOST:PORT it bound]
    #[arg(long, env = "YDHT_ADVERTISE_URL", value_name = "URL")]
    pub advertise_url: Option<String>,

    /// Most records per second this node pulls while rebalancing after a membership change
    #[arg(long, env = "YDHT_REBALANCE_RATE", default_value_t = 5000)]
    pub rebalance_rate: u32,

    /// Shared server flags.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Smallest accepted `--wal-max-bytes`.
pub const MIN_WAL_MAX_BYTES: u64 = 4096;

/// A node's resolved settings (no environment reading past this point).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's id.
    pub node_id: String,
    /// `<data-dir>/<node-id>`: WAL segments and snapshots.
    pub data_dir: PathBuf,
    /// The cluster secret internal requests must carry.
    pub cluster_secret: Secret,
    /// Largest value accepted, in bytes.
    pub max_value_bytes: usize,
    /// Compaction threshold of the active WAL segment.
    pub wal_max_bytes: u64,
    /// Group commit or one sync per write.
    pub sync_mode: SyncMode,
    /// Truncate a corrupt WAL segment instead of refusing to start.
    pub salvage_wal: bool,
    /// How long covered WAL segments are kept for the change feed.
    pub feed_retention: crate::wal::segment::Retention,
    /// How long tombstones and expired entries are kept.
    pub tombstone_grace: Duration,
    /// How often the TTL sweeper runs.
    pub sweep_interval: Duration,
    /// Serve HTTPS with this certificate (`--tls-cert` / `--tls-key`); plain HTTP when `None`.
    pub tls: Option<crate::tls::TlsConfig>,
    /// Anti-entropy with the peers; `None` when the node was given no peers (nor `--join`) or a zero interval.
    pub anti_entropy: Option<AntiEntropyConfig>,
    /// Online membership (`--join`); `None` for a node on a fixed ring.
    pub membership: Option<MembershipSettings>,
}

impl NodeArgs {
    /// Resolves the data dir and the cluster secret, and checks the flags.
    pub fn into_config(self) -> anyhow::Result<NodeConfig> {
        validate_node_id(&self.node_id)?;
        if self.wal_max_bytes < MIN_WAL_MAX_BYTES {
            return Err(Exit::usage(format!(
                "--wal-max-bytes / YDHT_WAL_MAX_BYTES is {}; it must be at least {MIN_WAL_MAX_BYTES}",
                self.wal_max_bytes
            ))
            .into());
        }
        if self.max_value_bytes == 0 {
            return Err(Exit::usage("--max-value-bytes / YDHT_MAX_VALUE_BYTES must be positive").into());
        }
        let anti_entropy = self.anti_entropy_config()?;
        let membership = self.membership_settings()?;
        let data_dir = self.server.data_dir()?;
        let cluster_secret = self.server.cluster_secret(&data_dir)?;
        Ok(NodeConfig {
            data_dir: data_dir.join(&self.node_id),
            node_id: self.node_id,
            cluster_secret,
            max_value_bytes: self.max_value_bytes,
            wal_max_bytes: self.wal_max_bytes,
            sync_mode: self.sync_mode,
            salvage_wal: self.salvage_wal,
            feed_retention: crate::wal::segment::Retention {
                time: self.feed_retention,
                changes: self.feed_retention_changes,
            },
            tombstone_grace: self.tombstone_grace,
            sweep_interval: Duration::from_secs(1),
            tls: self.server.tls()?,
            anti_entropy,
            membership,
        })
    }

    fn membership_settings(&self) -> anyhow::Result<Option<MembershipSettings>> {
        let Some(gateway) = self.join.as_deref().map(str::trim).filter(|url| !url.is_empty()) else {
            return Ok(None);
        };
        let check =
            |flag: &str, url: &str| -> anyhow::Result<String> {
                let url = url.trim().trim_end_matches('/');
                match reqwest::Url::parse(url) {
                    Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(url.to_string()),
                    _ => Err(Exit::usage(format!("invalid {flag} {url:?}; expected a URL like http://127.0.0.1:8080"))
                        .into()),
                }
            };
        if self.rebalance_rate == 0 {
            return Err(Exit::usage("--rebalance-rate / YDHT_REBALANCE_RATE must be positive").into());
        }
        let unspecified = self.server.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified());
        if unspecified && self.advertise_url.as_deref().is_none_or(|url| url.trim().is_empty()) {
            return Err(Exit::usage(format!(
                "--join needs --advertise-url / YDHT_ADVERTISE_URL when listening on {}: the other services \
                 cannot reach this node there; give the URL they reach it at",
                self.server.host
            ))
            .into());
        }
        Ok(Some(MembershipSettings {
            gateway_url: check("--join / YDHT_JOIN", gateway)?,
            advertise_url: match self.advertise_url.as_deref().filter(|url| !url.trim().is_empty()) {
                Some(url) => Some(check("--advertise-url / YDHT_ADVERTISE_URL", url)?),
                None => None,
            },
            rebalance_rate: self.rebalance_rate,
            vnodes: self.vnodes.max(1),
            replicas: self.replicas.max(1),
        }))
    }

    fn anti_entropy_config(&self) -> anyhow::Result<Option<AntiEntropyConfig>> {
        let peers = self.peers.as_deref().filter(|peers| !peers.trim().is_empty());
        let joins = self.join.as_deref().is_some_and(|url| !url.trim().is_empty());
        let nodes = match peers {
            Some(peers) => {
                NodeInfo::parse_list(peers).map_err(|error| Exit::usage(format!("--peers / YDHT_NODES: {error}")))?
            }
            // The membership gives the ring later.
            None if joins => Vec::new(),
            None => return Ok(None),
        };
        let ring_id = match self.own_entry(&nodes) {
            Some(node) => node.id.clone(),
            None if peers.is_none() => self.node_id.clone(),
            None => {
                return Err(Exit::usage(format!(
                    "--peers / YDHT_NODES does not list this node ({} at {}); list every node, this one included, \
                     as id=url or as the URL it listens on (or --advertise-url)",
                    self.node_id,
                    self.own_url(),
                ))
                .into());
            }
        };
        if self.replicas == 0 || self.vnodes == 0 {
            return Err(Exit::usage("--replicas / YDHT_REPLICAS and --vnodes / YDHT_VNODES must be at least 1").into());
        }
        if self.anti_entropy_max_keys == 0 {
            return Err(Exit::usage(
                "--anti-entropy-max-keys / YDHT_ANTI_ENTROPY_MAX_KEYS must be positive (use --anti-entropy-interval 0 to disable)",
            )
            .into());
        }
        if self.anti_entropy_interval.is_zero() {
            return Ok(None);
        }
        Ok(Some(AntiEntropyConfig {
            ring: Ring::new(nodes, self.vnodes),
            node_id: ring_id,
            replicas: self.replicas,
            interval: self.anti_entropy_interval,
            max_keys_per_round: self.anti_entropy_max_keys,
            tombstone_grace: self.tombstone_grace,
            max_batch_bytes: max_batch_bytes(self.max_value_bytes),
        }))
    }

    /// The URL this node is reached at: `--advertise-url`, else `http(s)://HOST:PORT` from the flags.
    fn own_url(&self) -> String {
        match self.advertise_url.as_deref().map(str::trim).filter(|url| !url.is_empty()) {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => {
                let scheme = if self.server.tls_cert.is_some() { "https" } else { "http" };
                let host = &self.server.host;
                let host =
                    if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.clone() };
                format!("{scheme}://{host}:{}", self.port)
            }
        }
    }

    /// This node's entry in `--peers`: the one with its id, else the one whose URL is the node's own
    /// (`--advertise-url`, else the host and port it listens on), so a list of bare URLs works too.
    fn own_entry<'a>(&self, nodes: &'a [NodeInfo]) -> Option<&'a NodeInfo> {
        nodes
            .iter()
            .find(|node| node.id == self.node_id)
            .or_else(|| nodes.iter().find(|node| same_address(&node.url, &self.own_url())))
    }

    /// Runs the node until SIGINT/SIGTERM.
    pub async fn run(self) -> anyhow::Result<()> {
        let port = self.port;
        let host = self.server.host.clone();
        let config = self.into_config()?;
        let listener = crate::server::bind(&host, port, "--port / DHTNODE_PORT").await?;
        let shutdown = Shutdown::new();
        shutdown.trigger_on_signals();
        serve(config, listener, shutdown).await
    }
}

/// Whether two node URLs name the same host and port (`localhost`, `127.0.0.1` and `::1` count as one host).
fn same_address(a: &str, b: &str) -> bool {
    let address = |url: &str| {
        let url = reqwest::Url::parse(url).ok()?;
        let host = url.host_str()?.to_ascii_lowercase();
        let loopback = host == "localhost"
            || host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        let host = if loopback { "loopback".to_string() } else { host };
        Some((host, url.port_or_known_default()?))
    };
    matches!((address(a), address(b)), (Some(a), Some(b)) if a == b)
}

/// Node ids name a directory: letters, digits, `-`, `_`, `.`, not starting with `.`.
fn validate_node_id(id: &str) -> anyhow::Result<()> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(Exit::usage(format!(
            "invalid node id {id:?}; use up to 64 letters, digits, '-', '_' or '.' (e.g. node-1) with --node-id / NODE_ID"
        ))
        .into())
    }
}

/// Settings handlers read.
#[derive(Debug)]
pub struct NodeSettings {
    /// The node's id.
    pub node_id: String,
    /// `<data-dir>/<node-id>`.
    pub data_dir: PathBuf,
    /// Largest value accepted, in bytes.
    pub max_value_bytes: usize,
    /// Group commit or one sync per write.
    pub sync_mode: SyncMode,
    /// When the node started.
    pub started: Instant,
    /// Whether it follows the cluster membership (`--join`).
    pub follows_membership: bool,
}

impl NodeSettings {
    /// Largest `POST /batch` body: room for several maximum-size values, at least 8 MiB.
    pub fn max_batch_bytes(&self) -> usize {
        max_batch_bytes(self.max_value_bytes)
    }
}

fn max_batch_bytes(max_value_bytes: usize) -> usize {
    max_value_bytes.saturating_mul(4).max(8 << 20)
}

/// What the HTTP API needs to know about anti-entropy.
#[derive(Debug, Clone)]
pub struct AntiEntropyHandle {
    /// The ring fingerprint `/digest` reports (0 while paused).
    pub fingerprint: SharedFingerprint,
    /// Progress counters for `/metrics`.
    pub stats: AntiEntropyStats,
    /// The exchanges completed with each peer, which decide the tombstones the sweeper may purge.
    pub syncs: gc::PeerSyncs,
}

/// Shared handler state; cheap to clone.
#[derive(Clone)]
pub struct NodeState {
    /// The data.
    pub store: Store,
    /// The secret internal requests must carry.
    pub secret: ClusterSecret,
    /// Fixed settings.
    pub settings: Arc<NodeSettings>,
    /// Anti-entropy, when enabled (`/digest` and `/range` answer 404 otherwise).
    pub anti_entropy: Option<AntiEntropyHandle>,
}

impl FromRef<NodeState> for ClusterSecret {
    fn from_ref(state: &NodeState) -> Self {
        state.secret.clone()
    }
}

/// Recovers the node's data, announces `ydht node listening on …` (once it can
/// answer), serves it on `listener` until `shutdown`, then drains requests,
/// syncs and closes the WAL.
pub async fn serve(config: NodeConfig, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    serve_announcing(config, listener, shutdown, true).await
}

/// [`serve`] without the announce line: `ydht serve all` announces its nodes by id itself, before its banner.
pub async fn serve_in_cluster(config: NodeConfig, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    serve_announcing(config, listener, shutdown, false).await
}

async fn serve_announcing(
    config: NodeConfig,
    listener: TcpListener,
    shutdown: Shutdown,
    announce: bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let options = StoreOptions {
        dir: config.data_dir.clone(),
        sync_mode: config.sync_mode,
        wal_max_bytes: config.wal_max_bytes,
        salvage_wal: config.salvage_wal,
        feed_retention: config.feed_retention,
    };
    let (store, report) =
        tokio::task::spawn_blocking(move || Store::open(&options)).await.context("the recovery task failed")??;
    tracing::info!(
        node_id = %config.node_id,
        dir = %config.data_dir.display(),
        snapshot_records = report.snapshot_records,
        replayed_records = report.replayed_records,
        truncated_bytes = report.truncated_bytes,
        keys = report.entries,
        elapsed_ms = started.elapsed().as_millis() as u64,
        sync_mode = config.sync_mode.as_str(),
        "recovered node data"
    );
    let anti_entropy = config.anti_entropy.clone().map(|settings| {
        let fingerprint = SharedFingerprint::default();
        // A node given no peers (only --join) waits for the membership's ring.
        let initial = (!settings.ring.nodes().is_empty()).then(|| settings.ring.clone());
        if let Some(ring) = &initial {
            store.enable_digest(ring.clone());
            fingerprint.set(digest::fingerprint(ring, settings.replicas));
        }
        let handle =
            AntiEntropyHandle { fingerprint, stats: AntiEntropyStats::default(), syncs: gc::PeerSyncs::default() };
        (settings, handle, RingSource::new(initial))
    });
    let state = NodeState {
        anti_entropy: anti_entropy.as_ref().map(|(_, handle, _)| handle.clone()),
        store: store.clone(),
        secret: ClusterSecret::new(config.cluster_secret.clone()),
        settings: Arc::new(NodeSettings {
            node_id: config.node_id.clone(),
            data_dir: config.data_dir.clone(),
            max_value_bytes: config.max_value_bytes,
            sync_mode: config.sync_mode,
            started,
            follows_membership: config.membership.is_some(),
        }),
    };
    let syncs = anti_entropy.as_ref().map(|(_, handle, _)| handle.syncs.clone());
    let sweeper =
        tokio::spawn(sweep(store.clone(), config.sweep_interval, config.tombstone_grace, syncs, shutdown.clone()));
    let rings = anti_entropy.as_ref().map_or_else(|| RingSource::new(None), |(_, _, rings)| rings.clone());
    let repairer = anti_entropy.map(|(settings, handle, rings)| {
        let client = NodeClient::new(config.cluster_secret.clone(), Duration::from_secs(30));
        let task = antientropy::run(store.clone(), settings, client, handle, rings, shutdown.clone());
        tokio::spawn(task)
    });
    let address = listener.local_addr()?;
    let follower = config.membership.clone().map(|settings| {
        let url = settings
            .advertise_url
            .clone()
            .unwrap_or_else(|| format!("{}://{address}", crate::tls::scheme(config.tls.as_ref())));
        let member = membership::Follower {
            store: store.clone(),
            node_id: config.node_id.clone(),
            url,
            data_dir: config.data_dir.clone(),
            secret: config.cluster_secret.clone(),
            settings,
            rings,
        };
        tokio::spawn(membership::run(member, shutdown.clone()))
    });
    if announce {
        crate::server::announce_with("node", address, config.tls.as_ref());
    }
    let served = crate::server::serve_with("node", listener, app(state), shutdown.clone(), config.tls.clone()).await;
    shutdown.trigger();
    let _ = sweeper.await;
    if let Some(repairer) = repairer {
        let _ = repairer.await;
    }
    if let Some(follower) = follower {
        let _ = follower.await;
    }
    store.close().await;
    tracing::info!(node_id = %config.node_id, "node stopped; WAL synced");
    served
}

/// The TTL sweeper: every `interval`, drops expired values and purges old tombstones (with
/// anti-entropy, only those `syncs` shows every peer holds; without, after the grace alone).
async fn sweep(store: Store, interval: Duration, grace: Duration, syncs: Option<gc::PeerSyncs>, shutdown: Shutdown) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let grace = grace.as_millis() as u64;
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = ticker.tick() => {}
        }
        let store = store.clone();
        let horizon = syncs.as_ref().map_or(gc::Horizon::Unneeded, gc::PeerSyncs::horizon);
        let sweeping = store.clone();
        let swept =
            tokio::task::spawn_blocking(move || sweeping.sweep(crate::hlc::wall_millis(), grace, horizon)).await;
        if let Some(expired) = swept.ok().filter(|expired| !expired.is_empty()) {
            if let Err(error) = store.log_expired(expired).await {
                tracing::warn!(%error, "cannot log expired values for the change feed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::same_address;

    #[test]
    fn addresses_match_on_host_and_port_with_loopback_names_equal() {
        assert!(same_address("http://127.0.0.1:8082", "http://localhost:8082"));
        assert!(same_address("http://LOCALHOST:8082/", "http://[::1]:8082"));
        assert!(same_address("http://node1.example", "http://node1.example:80"));
        assert!(!same_address("http://127.0.0.1:8082", "http://127.0.0.1:8083"));
        assert!(!same_address("http://node1.example:8082", "http://node2.example:8082"));
        assert!(!same_address("not a url", "not a url"));
    }
}
