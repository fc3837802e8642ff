//! Fetches what the dashboard shows: the gateway's `/cluster`, and every
//! service's `/metrics` and `/health`, all probes of one round in parallel.
//!
//! A probe that fails becomes the error text in the [`Snapshot`]; the poller
//! never gives up. When the gateway cannot be reached, the members it listed
//! last are still probed directly so the ring stays visible.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use serde_json::Value;
use tokio::sync::mpsc;

use super::readings::ClusterReading;
use super::update::Event;
use crate::config::Secret;
use crate::proto::CLUSTER_SECRET_HEADER;

/// Largest JSON body the poller reads from a service.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// One answer: the parsed JSON body, or why it could not be had.
pub type Probe = Result<Value, ProbeError>;

/// Why a probe got no answer; its text is one line for the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// No answer (`Connection refused`, `timed out`, …).
    #[error("{0}")]
    Unreachable(String),
    /// An error status, with the service's message.
    #[error("HTTP {status}: {message}")]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The service's `error` field, or the start of the body.
        message: String,
    },
    /// The answer was larger than the poller reads.
    #[error("answer larger than {} MiB", MAX_BODY_BYTES / 1024 / 1024)]
    TooLarge,
    /// The answer was not the JSON expected.
    #[error("invalid JSON from {url}: {reason}")]
    Json {
        /// The URL probed.
        url: String,
        /// The parser's complaint.
        reason: String,
    },
}

/// A storage node's probes.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeProbe {
    /// Node id as the gateway names it.
    pub id: String,
    /// Base URL.
    pub url: String,
    /// `GET /metrics`.
    pub metrics: Probe,
    /// `GET /health`.
    pub health: Probe,
}

/// A service's probes (replicator, users service).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceProbe {
    /// Base URL.
    pub url: String,
    /// `GET /metrics` (not fetched for services without metrics).
    pub metrics: Option<Probe>,
    /// `GET /health`.
    pub health: Probe,
}

/// Everything one polling round saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// When the round started, Unix milliseconds.
    pub taken_at_ms: u64,
    /// The gateway's `GET /cluster`.
    pub cluster: Probe,
    /// The gateway's `GET /metrics`.
    pub gateway_metrics: Probe,
    /// The gateway's `GET /health`.
    pub gateway_health: Probe,
    /// Every known ring member, in the gateway's order.
    pub nodes: Vec<NodeProbe>,
    /// The replicator, once the gateway named it.
    pub replicator: Option<ServiceProbe>,
    /// The users service, once the gateway named it.
    pub users: Option<ServiceProbe>,
}

/// Polls one cluster through its gateway.
#[derive(Debug)]
pub struct Poller {
    client: reqwest::Client,
    gateway_url: String,
    secret: Secret,
    /// The last membership the gateway reported, used while it is unreachable.
    known: ClusterReading,
}

impl Poller {
    /// A poller for the gateway at `gateway_url`; each request gives up after `timeout`.
    pub fn new(gateway_url: &str, secret: Secret, timeout: Duration) -> anyhow::Result<Self> {
        let client = crate::tls::client_builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|error| anyhow::anyhow!("cannot build the HTTP client: {error}"))?;
        Ok(Self {
            client,
            gateway_url: gateway_url.trim_end_matches('/').to_string(),
            secret,
            known: ClusterReading::default(),
        })
    }

    /// Runs one polling round.
    pub async fn poll(&mut self) -> Snapshot {
        let taken_at_ms = unix_ms(SystemTime::now());
        let gateway = &self.gateway_url;
        let (cluster, gateway_metrics, gateway_health) = tokio::join!(
            self.get(format!("{gateway}/cluster")),
            self.get(format!("{gateway}/metrics")),
            self.get(format!("{gateway}/health")),
        );
        if let Ok(value) = &cluster {
            let reading = ClusterReading::from_json(value);
            if !reading.nodes.is_empty() || self.known.nodes.is_empty() {
                self.known = reading;
            }
        }
        let this = &*self;
        let nodes = join_all(this.known.nodes.iter().map(|member| async move {
            let base = member.url.trim_end_matches('/');
            let (metrics, health) =
                tokio::join!(this.get(format!("{base}/metrics")), this.get(format!("{base}/health")));
            NodeProbe { id: member.id.clone(), url: member.url.clone(), metrics, health }
        }));
        let replicator = this.service(this.known.replicator_url.as_deref(), true);
        let users = this.service(this.known.users_url.as_deref(), false);
        let (nodes, replicator, users) = tokio::join!(nodes, replicator, users);
        Snapshot { taken_at_ms, cluster, gateway_metrics, gateway_health, nodes, replicator, users }
    }

    async fn service(&self, url: Option<&str>, with_metrics: bool) -> Option<ServiceProbe> {
        let url = url?;
        let base = url.trim_end_matches('/');
        let metrics = async { if with_metrics { Some(self.get(format!("{base}/metrics")).await) } else { None } };
        let (metrics, health) = tokio::join!(metrics, self.get(format!("{base}/health")));
        Some(ServiceProbe { url: url.to_string(), metrics, health })
    }

    /// GET `url` with the cluster secret; any failure becomes one line of text.
    async fn get(&self, url: String) -> Probe {
        let response = self
            .client
            .get(&url)
            .header(CLUSTER_SECRET_HEADER, self.secret.expose())
            .send()
            .await
            .map_err(|error| ProbeError::Unreachable(describe(&error)))?;
        let status = response.status();
        let body = read_bounded(response).await?;
        if !status.is_success() {
            let message = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|value| value.get("error").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(120).collect());
            return Err(ProbeError::Status { status: status.as_u16(), message: message.trim().to_string() });
        }
        serde_json::from_slice(&body).map_err(|error| ProbeError::Json { url, reason: error.to_string() })
    }
}

async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, ProbeError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|error| ProbeError::Unreachable(describe(&error)))? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ProbeError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A short reason for a failed request: the innermost cause (`Connection refused`) rather
/// than reqwest's generic "error sending request".
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".to_string();
    }
    let mut root: &dyn std::error::Error = error;
    while let Some(source) = root.source() {
        root = source;
    }
    let reason = root.to_string();
    let reason = reason.split(" (os error").next().unwrap_or(&reason).to_string();
    if error.is_connect() && !reason.to_lowercase().contains("connect") {
        format!("cannot connect: {reason}")
    } else {
        reason
    }
}

/// Unix milliseconds of `time` (0 before the epoch).
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// Polls every `interval` (the first round at once) and sends each snapshot as an
/// [`Event::Polled`] until the receiver is gone. One round at a time: a slow round
/// delays the next instead of piling up.
pub fn spawn(mut poller: Poller, interval: Duration, events: mpsc::Sender<Event>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let snapshot = poller.poll().await;
            if events.send(Event::Polled(Box::new(snapshot))).await.is_err() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_gateway_is_reported_not_fatal() {
        // Bind then drop a listener so the port is (almost certainly) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut poller =
            Poller::new(&format!("http://127.0.0.1:{port}/"), Secret::new("s"), Duration::from_secs(2)).unwrap();
        let snapshot = poller.poll().await;
        let error = snapshot.cluster.unwrap_err();
        assert!(error.to_string().to_lowercase().contains("refused"), "{error}");
        assert!(snapshot.gateway_health.is_err());
        assert!(snapshot.nodes.is_empty());
        assert!(snapshot.replicator.is_none());
        assert!(snapshot.taken_at_ms > 0);
    }
}
