//! The dashboard's model: everything the screen shows, nothing about how.
//!
//! [`App`] is changed only by [`App::update`](super::update) and read by
//! the renderer, so all the logic is testable without a terminal.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use super::poller::ProbeError;
use super::readings::AntiEntropyReading;

/// Samples kept per history series (five minutes at the default 1 s interval).
pub const HISTORY_LEN: usize = 300;
/// Entries kept in the events log.
pub const EVENT_LOG_LEN: usize = 200;

/// The panels, in focus order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Panel {
    /// Ring members and their health.
    Ring,
    /// The replicator's queue and lag.
    Replication,
    /// Gateway traffic and latency.
    Gateway,
    /// Sparklines of rps, lag and WAL size.
    History,
    /// The log of changes.
    Events,
}

impl Panel {
    /// Every panel in focus order.
    pub const ALL: [Panel; 5] = [Panel::Ring, Panel::Replication, Panel::Gateway, Panel::History, Panel::Events];

    /// The panel after this one (wrapping).
    pub fn next(self) -> Self {
        let index = Self::ALL.iter().position(|panel| *panel == self).unwrap_or(0);
        Self::ALL[(index + 1) % Self::ALL.len()]
    }

    /// The panel before this one (wrapping).
    pub fn previous(self) -> Self {
        let index = Self::ALL.iter().position(|panel| *panel == self).unwrap_or(0);
        Self::ALL[(index + Self::ALL.len() - 1) % Self::ALL.len()]
    }

    /// The panel's title.
    pub fn title(self) -> &'static str {
        match self {
            Panel::Ring => "Ring",
            Panel::Replication => "Replication",
            Panel::Gateway => "Gateway",
            Panel::History => "History",
            Panel::Events => "Events",
        }
    }
}

/// Whether a service answers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Health {
    /// Not polled yet.
    #[default]
    Unknown,
    /// Answered its probes.
    Up,
    /// Did not answer, with the reason.
    Down(String),
}

impl NodeView {
    /// How full the file system holding the node's data is, 0..=1.
    pub fn disk_fill(&self) -> Option<f64> {
        let total = self.disk_total.filter(|total| *total > 0)?;
        let available = self.disk_available?.min(total);
        Some((total - available) as f64 / total as f64)
    }
}

impl Health {
    /// From a probe result: any error means down.
    pub fn of<T>(probe: &Result<T, ProbeError>) -> Self {
        match probe {
            Ok(_) => Health::Up,
            Err(error) => Health::Down(error.to_string()),
        }
    }

    /// Whether the service answered.
    pub fn is_up(&self) -> bool {
        *self == Health::Up
    }

    /// `UP`, `DOWN` or `?`.
    pub fn label(&self) -> &'static str {
        match self {
            Health::Unknown => "?",
            Health::Up => "UP",
            Health::Down(_) => "DOWN",
        }
    }

    /// The reason it is down.
    pub fn error(&self) -> Option<&str> {
        match self {
            Health::Down(error) => Some(error),
            _ => None,
        }
    }

    /// Whether `other` is a different state (a new error text alone is not a change).
    pub fn differs_from(&self, other: &Health) -> bool {
        std::mem::discriminant(self) != std::mem::discriminant(other)
    }
}

/// One ring member as shown.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeView {
    /// Node id.
    pub id: String,
    /// Base URL.
    pub url: String,
    /// Whether it answers (and the gateway considers it healthy).
    pub health: Health,
    /// Since when (Unix ms) it has been in its current state.
    pub since_ms: Option<u64>,
    /// Share of the hash space, 0..=1.
    pub share: Option<f64>,
    /// Virtual nodes on the ring.
    pub vnodes: Option<u64>,
    /// Live keys (last known while down).
    pub key_count: Option<u64>,
    /// WAL bytes (last known while down).
    pub wal_size: Option<u64>,
    /// Bytes of WAL and snapshot on disk (last known while down).
    pub data_bytes: Option<u64>,
    /// Size of the file system holding the data.
    pub disk_total: Option<u64>,
    /// Free space on that file system.
    pub disk_available: Option<u64>,
    /// Anti-entropy progress (last known while down).
    pub anti_entropy: Option<AntiEntropyReading>,
}

/// The replicator as shown.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplicationView {
    /// Base URL, once the gateway named it.
    pub url: Option<String>,
    /// Whether it answers.
    pub health: Health,
    /// Since when (Unix ms) it has been in its current state.
    pub since_ms: Option<u64>,
    /// Jobs waiting or in flight.
    pub queue_size: Option<u64>,
    /// Age of the oldest unfinished job, ms.
    pub max_lag_ms: Option<f64>,
    /// Mean acknowledgement time, ms.
    pub average_ack_ms: Option<f64>,
    /// Jobs accepted since start.
    pub total: Option<u64>,
    /// Jobs accepted per second (from the counter).
    pub jobs_per_sec: Option<f64>,
    /// Replica writes that succeeded.
    pub successes: Option<u64>,
    /// Replica writes that failed after all retries.
    pub failures: Option<u64>,
    /// Replica writes waiting for a retry.
    pub retries: Option<u64>,
    /// Hinted handoffs waiting for their target, when reported.
    pub hinted: Option<u64>,
    /// Most unfinished jobs, when reported; at it, new jobs are refused.
    pub queue_capacity: Option<u64>,
}

impl ReplicationView {
    /// Whether the queue is at its capacity (the replicator refuses new jobs).
    pub fn queue_full(&self) -> bool {
        matches!((self.queue_size, self.queue_capacity), (Some(size), Some(capacity)) if capacity > 0 && size >= capacity)
    }
}

/// The gateway as shown.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GatewayView {
    /// Whether it answers.
    pub health: Health,
    /// Since when (Unix ms) it has been in its current state.
    pub since_ms: Option<u64>,
    /// Why `/cluster` could not be read (e.g. a wrong cluster secret), if it could not.
    pub cluster_error: Option<String>,
    /// Replication factor.
    pub replicas: Option<u64>,
    /// Virtual nodes per node.
    pub vnodes: Option<u64>,
    /// The membership change in progress (or settled), if the gateway follows a membership.
    pub rebalance: Option<crate::proto::RebalanceSummary>,
    /// Whether the users service answers, once the gateway named it.
    pub users: Option<Health>,
    /// Requests per second.
    pub rps: Option<f64>,
    /// Requests since the gateway started.
    pub total_requests: Option<u64>,
    /// Latency p50, ms.
    pub p50_ms: Option<f64>,
    /// Latency p95, ms.
    pub p95_ms: Option<f64>,
    /// Latency p99, ms.
    pub p99_ms: Option<f64>,
    /// Rate-limit refusals since start.
    pub rate_limit_hits: Option<u64>,
    /// Rate-limit refusals per second.
    pub rate_limit_per_sec: Option<f64>,
    /// The busiest tenants, highest rate first.
    pub top_tenants: Vec<(String, f64)>,
    /// Errors talking to each node since start, most first.
    pub node_errors: Vec<(String, u64)>,
}

/// How serious an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Good news (a service back up, a queue drained).
    Info,
    /// Worth a look (a queue growing, a rate-limit storm).
    Warning,
    /// Something is down.
    Alert,
}

/// One line of the events log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// When it was seen, Unix ms.
    pub at_ms: u64,
    /// How serious it is.
    pub severity: Severity,
    /// What happened.
    pub text: String,
}

/// The last [`HISTORY_LEN`] values of the charted series (`None` = unknown at that poll).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// Gateway requests per second.
    pub rps: VecDeque<Option<f64>>,
    /// Replication lag (max), ms.
    pub lag_ms: VecDeque<Option<f64>>,
    /// Sum of the nodes' WAL sizes, bytes.
    pub wal_bytes: VecDeque<Option<f64>>,
}

impl History {
    /// Appends one sample to each series, dropping the oldest beyond [`HISTORY_LEN`].
    pub fn push(&mut self, rps: Option<f64>, lag_ms: Option<f64>, wal_bytes: Option<f64>) {
        for (series, value) in [(&mut self.rps, rps), (&mut self.lag_ms, lag_ms), (&mut self.wal_bytes, wal_bytes)] {
            series.push_back(value);
            while series.len() > HISTORY_LEN {
                series.pop_front();
            }
        }
    }
}

/// Counter values of the previous poll, to turn counters into rates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// When they were read, Unix ms.
    pub at_ms: u64,
    /// Gateway requests.
    pub requests: Option<u64>,
    /// Gateway rate-limit refusals.
    pub rate_limit_hits: Option<u64>,
    /// Requests per tenant.
    pub tenants: HashMap<String, u64>,
    /// Replication jobs accepted.
    pub replications: Option<u64>,
}

/// Alarms that fire once per episode, with what re-arms them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Alarms {
    /// Consecutive polls in which the replication queue grew.
    pub queue_growth_streak: u32,
    /// Whether "queue growing" was reported and the queue has not drained since.
    pub queue_alarm: bool,
    /// Whether a rate-limit storm is in progress.
    pub rate_limit_storm: bool,
}

/// The whole dashboard.
#[derive(Debug, Clone)]
pub struct App {
    /// The gateway being watched.
    pub gateway_url: String,
    /// Polling interval.
    pub interval: Duration,
    /// The focused panel.
    pub focus: Panel,
    /// Whether the focused panel fills the screen.
    pub zoomed: bool,
    /// Whether new data is ignored (the screen is frozen).
    pub paused: bool,
    /// Whether the help overlay is shown.
    pub show_help: bool,
    /// The current time, Unix ms (from the latest tick or poll).
    pub now_ms: u64,
    /// When the shown data was polled, Unix ms.
    pub last_poll_ms: Option<u64>,
    /// Ring members in the gateway's order.
    pub nodes: Vec<NodeView>,
    /// The replicator.
    pub replication: ReplicationView,
    /// The gateway.
    pub gateway: GatewayView,
    /// Charted series.
    pub history: History,
    /// Newest last; at most [`EVENT_LOG_LEN`].
    pub events: VecDeque<LogEntry>,
    /// Counters of the previous poll.
    pub previous: Option<Counters>,
    /// Once-per-episode alarm state.
    pub alarms: Alarms,
}

impl App {
    /// A dashboard that has not polled yet.
    pub fn new(gateway_url: impl Into<String>, interval: Duration) -> Self {
        Self {
            gateway_url: gateway_url.into(),
            interval,
            focus: Panel::Ring,
            zoomed: false,
            paused: false,
            show_help: false,
            now_ms: 0,
            last_poll_ms: None,
            nodes: Vec::new(),
            replication: ReplicationView::default(),
            gateway: GatewayView::default(),
            history: History::default(),
            events: VecDeque::new(),
            previous: None,
            alarms: Alarms::default(),
        }
    }

    /// Adds an entry to the events log, dropping the oldest beyond [`EVENT_LOG_LEN`].
    pub fn log(&mut self, at_ms: u64, severity: Severity, text: impl Into<String>) {
        self.events.push_back(LogEntry { at_ms, severity, text: text.into() });
        while self.events.len() > EVENT_LOG_LEN {
            self.events.pop_front();
        }
    }

    /// How many ring members are up.
    pub fn nodes_up(&self) -> usize {
        self.nodes.iter().filter(|node| node.health.is_up()).count()
    }
}
