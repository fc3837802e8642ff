//! Everything that changes the dashboard arrives as one [`Event`]: terminal
//! input, a polling round's [`Snapshot`], a clock tick, or a termination
//! signal. [`App::update`] is the only place the model changes.

use std::collections::HashMap;

use ratatui::crossterm::event::{Event as TerminalEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::poller::Snapshot;
use super::readings::{ClusterReading, GatewayReading, NodeReading, ReplicatorReading};
use super::state::{App, Counters, Health, NodeView, Severity};

/// Polls in a row the replication queue must grow before it is reported.
pub const QUEUE_GROWTH_POLLS: u32 = 3;
/// Smallest queue reported as growing (a few jobs in flight are normal).
pub const QUEUE_ALARM_MIN: u64 = 10;
/// Rate-limit refusals per second that make a storm (it ends below half of this).
pub const RATE_LIMIT_STORM_PER_SEC: f64 = 2.0;
/// Tenants listed under "top tenants".
pub const TOP_TENANTS: usize = 5;

/// Something that happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A key, mouse or resize event from the terminal.
    Input(TerminalEvent),
    /// A polling round finished.
    Polled(Box<Snapshot>),
    /// The clock advanced (Unix ms); relative times are redrawn.
    Tick(u64),
    /// SIGINT or SIGTERM arrived.
    Terminate,
}

/// What the main loop does after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Redraw and keep going.
    Continue,
    /// Restore the terminal and exit.
    Quit,
}

impl App {
    /// Applies one event to the model.
    pub fn update(&mut self, event: Event) -> Flow {
        match event {
            Event::Input(TerminalEvent::Key(key)) => return self.on_key(key),
            Event::Input(_) => {}
            Event::Polled(snapshot) => {
                if !self.paused {
                    self.apply(&snapshot);
                }
            }
            Event::Tick(now_ms) => self.now_ms = self.now_ms.max(now_ms),
            Event::Terminate => return Flow::Quit,
        }
        Flow::Continue
    }

    fn on_key(&mut self, key: KeyEvent) -> Flow {
        if key.kind == KeyEventKind::Release {
            return Flow::Continue;
        }
        match key.code {
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => return Flow::Quit,
            KeyCode::Char('q') => return Flow::Quit,
            KeyCode::Esc if self.show_help => self.show_help = false,
            KeyCode::Esc if self.zoomed => self.zoomed = false,
            KeyCode::Esc => return Flow::Quit,
            KeyCode::Char('?') => self.show_help = !self.show_help,
            KeyCode::Char('p') | KeyCode::Char(' ') => self.paused = !self.paused,
            KeyCode::Char('z') | KeyCode::Enter => self.zoomed = !self.zoomed,
            KeyCode::Tab | KeyCode::Right | KeyCode::Down => self.focus = self.focus.next(),
            KeyCode::BackTab | KeyCode::Left | KeyCode::Up => self.focus = self.focus.previous(),
            _ => {}
        }
        Flow::Continue
    }

    /// Folds a polling round into the model: health transitions, readings, rates,
    /// history and events.
    pub fn apply(&mut self, snapshot: &Snapshot) {
        let now = snapshot.taken_at_ms;
        self.now_ms = now;
        self.last_poll_ms = Some(now);
        let cluster = snapshot.cluster.as_ref().ok().map(ClusterReading::from_json);
        self.apply_gateway(snapshot, cluster.as_ref());
        self.apply_nodes(snapshot, cluster.as_ref());
        self.apply_replicator(snapshot);
        let wal_total = self
            .nodes
            .iter()
            .filter_map(|node| node.wal_size)
            .fold(None, |sum: Option<u64>, size| Some(sum.unwrap_or(0) + size));
        self.history.push(self.gateway.rps, self.replication.max_lag_ms, wal_total.map(|bytes| bytes as f64));
    }

    fn apply_gateway(&mut self, snapshot: &Snapshot, cluster: Option<&ClusterReading>) {
        let now = snapshot.taken_at_ms;
        let health = Health::of(&snapshot.gateway_health);
        if self.note_health("gateway", &self.gateway.health.clone(), &health, now) {
            self.gateway.since_ms = Some(now);
        }
        self.gateway.health = health;

        let cluster_error = snapshot.cluster.as_ref().err().map(ToString::to_string);
        if let Some(error) = &cluster_error {
            if self.gateway.health.is_up() && self.gateway.cluster_error.as_ref() != Some(error) {
                self.log(now, Severity::Alert, format!("cannot read the gateway's /cluster: {error}"));
            }
        }
        self.gateway.cluster_error = cluster_error;
        if let Some(cluster) = cluster {
            self.gateway.replicas = cluster.replicas;
            self.gateway.vnodes = cluster.vnodes;
            self.gateway.rebalance = cluster.rebalance;
        }
        if let Some(users) = &snapshot.users {
            let health = Health::of(&users.health);
            let old = self.gateway.users.clone().unwrap_or_default();
            self.note_health("users service", &old, &health, now);
            self.gateway.users = Some(health);
        }

        let reading = snapshot.gateway_metrics.as_ref().ok().map(GatewayReading::from_json).unwrap_or_default();
        let previous = self.previous.take();
        let elapsed = previous.as_ref().map_or(0, |previous| now.saturating_sub(previous.at_ms));
        let rps = rate(previous.as_ref().and_then(|p| p.requests), reading.total_requests, elapsed);
        self.gateway.rps = rps.or(reading.reported_rps);
        self.gateway.total_requests = reading.total_requests;
        self.gateway.p50_ms = reading.p50_ms;
        self.gateway.p95_ms = reading.p95_ms;
        self.gateway.p99_ms = reading.p99_ms;
        self.gateway.rate_limit_hits = reading.rate_limit_hits;
        self.gateway.rate_limit_per_sec =
            rate(previous.as_ref().and_then(|p| p.rate_limit_hits), reading.rate_limit_hits, elapsed);
        let mut tenants: Vec<(String, f64)> = reading
            .tenants
            .iter()
            .filter_map(|tenant| {
                let before = previous.as_ref().and_then(|p| p.tenants.get(&tenant.user).copied());
                let rate = rate(before, tenant.requests, elapsed).or(tenant.reported_rps)?;
                (rate > 0.0).then(|| (tenant.user.clone(), rate))
            })
            .collect();
        tenants.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        tenants.truncate(TOP_TENANTS);
        self.gateway.top_tenants = tenants;
        let mut node_errors: Vec<(String, u64)> =
            reading.node_errors.iter().filter(|(_, errors)| *errors > 0).cloned().collect();
        node_errors.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        self.gateway.node_errors = node_errors;

        if let Some(per_sec) = self.gateway.rate_limit_per_sec {
            if per_sec >= RATE_LIMIT_STORM_PER_SEC && !self.alarms.rate_limit_storm {
                self.alarms.rate_limit_storm = true;
                self.log(now, Severity::Warning, format!("rate-limit storm: {per_sec:.1} refusals/s"));
            } else if per_sec < RATE_LIMIT_STORM_PER_SEC / 2.0 && self.alarms.rate_limit_storm {
                self.alarms.rate_limit_storm = false;
                self.log(now, Severity::Info, "rate-limit storm is over");
            }
        }

        let replications = snapshot
            .replicator
            .as_ref()
            .and_then(|service| service.metrics.as_ref())
            .and_then(|metrics| metrics.as_ref().ok())
            .and_then(|metrics| ReplicatorReading::from_json(metrics).total_replications);
        self.replication.jobs_per_sec = rate(previous.as_ref().and_then(|p| p.replications), replications, elapsed);
        self.previous = Some(Counters {
            at_ms: now,
            requests: reading.total_requests,
            rate_limit_hits: reading.rate_limit_hits,
            tenants: reading.tenants.iter().filter_map(|t| Some((t.user.clone(), t.requests?))).collect(),
            replications,
        });
    }

    fn apply_nodes(&mut self, snapshot: &Snapshot, cluster: Option<&ClusterReading>) {
        let now = snapshot.taken_at_ms;
        let members: HashMap<&str, _> =
            cluster.map(|c| c.nodes.iter().map(|m| (m.id.as_str(), m)).collect()).unwrap_or_default();
        let mut nodes = Vec::with_capacity(snapshot.nodes.len());
        for probe in &snapshot.nodes {
            let mut view = self
                .nodes
                .iter()
                .find(|node| node.id == probe.id)
                .cloned()
                .unwrap_or_else(|| NodeView { id: probe.id.clone(), ..NodeView::default() });
            view.url = probe.url.clone();
            let member = members.get(probe.id.as_str());
            let health = match (&probe.metrics, &probe.health) {
                (Err(error), _) | (_, Err(error)) => Health::Down(error.to_string()),
                _ if member.and_then(|m| m.healthy) == Some(false) => {
                    Health::Down("the gateway marks it unhealthy".to_string())
                }
                _ => Health::Up,
            };
            if self.note_health(&probe.id, &view.health, &health, now) {
                view.since_ms = Some(now);
            }
            if let Some(member) = member {
                if member.healthy == Some(health.is_up()) && member.since_ms.is_some() {
                    view.since_ms = member.since_ms;
                }
                view.share = member.share.or(view.share);
                view.vnodes = member.vnodes.or(view.vnodes);
                view.key_count = member.key_count.or(view.key_count);
            }
            if let Ok(metrics) = &probe.metrics {
                let reading = NodeReading::from_json(metrics);
                view.key_count = reading.key_count.or(view.key_count);
                view.wal_size = reading.wal_size.or(view.wal_size);
                view.data_bytes = reading.data_bytes.or(view.data_bytes);
                view.disk_total = reading.disk_total.or(view.disk_total);
                view.disk_available = reading.disk_available.or(view.disk_available);
                view.anti_entropy = reading.anti_entropy.or(view.anti_entropy);
            }
            view.health = health;
            nodes.push(view);
        }
        if !self.nodes.is_empty() {
            let gone: Vec<String> =
                self.nodes.iter().filter(|old| !nodes.iter().any(|n| n.id == old.id)).map(|n| n.id.clone()).collect();
            let joined: Vec<String> =
                nodes.iter().filter(|new| !self.nodes.iter().any(|n| n.id == new.id)).map(|n| n.id.clone()).collect();
            for id in gone {
                self.log(now, Severity::Warning, format!("{id} left the ring"));
            }
            for id in joined {
                self.log(now, Severity::Info, format!("{id} joined the ring"));
            }
        }
        self.nodes = nodes;
    }

    fn apply_replicator(&mut self, snapshot: &Snapshot) {
        let Some(service) = &snapshot.replicator else { return };
        let now = snapshot.taken_at_ms;
        let health = match (&service.metrics, &service.health) {
            (Some(Err(error)), _) | (_, Err(error)) => Health::Down(error.to_string()),
            _ => Health::Up,
        };
        if self.note_health("replicator", &self.replication.health.clone(), &health, now) {
            self.replication.since_ms = Some(now);
        }
        self.replication.health = health;
        self.replication.url = Some(service.url.clone());
        let reading = service
            .metrics
            .as_ref()
            .and_then(|metrics| metrics.as_ref().ok())
            .map(ReplicatorReading::from_json)
            .unwrap_or_default();
        let previous_queue = self.replication.queue_size;
        let view = &mut self.replication;
        view.queue_size = reading.queue_size;
        view.max_lag_ms = reading.max_replication_lag_ms;
        view.average_ack_ms = reading.average_ack_time_ms;
        view.total = reading.total_replications;
        view.successes = reading.successful_replicas;
        view.failures = reading.failed_replicas;
        view.retries = reading.retries_in_progress;
        view.hinted = reading.hinted_handoffs;
        view.queue_capacity = reading.queue_capacity;
        self.track_queue(previous_queue, reading.queue_size, now);
    }

    fn track_queue(&mut self, previous: Option<u64>, current: Option<u64>, now: u64) {
        let (Some(previous), Some(current)) = (previous, current) else {
            self.alarms.queue_growth_streak = 0;
            return;
        };
        if current > previous {
            self.alarms.queue_growth_streak += 1;
        } else {
            self.alarms.queue_growth_streak = 0;
        }
        if self.alarms.queue_growth_streak >= QUEUE_GROWTH_POLLS
            && current >= QUEUE_ALARM_MIN
            && !self.alarms.queue_alarm
        {
            self.alarms.queue_alarm = true;
            self.log(
                now,
                Severity::Warning,
                format!("replication queue growing: {}", crate::units::count_of(current, "job", "jobs")),
            );
        }
        if current == 0 && self.alarms.queue_alarm {
            self.alarms.queue_alarm = false;
            self.log(now, Severity::Info, "replication queue drained");
        }
    }

    /// Logs a change of `name`'s health; returns whether it changed from a known
    /// state (the first observation says nothing about since when).
    fn note_health(&mut self, name: &str, old: &Health, new: &Health, now: u64) -> bool {
        if !new.differs_from(old) {
            return false;
        }
        match (old, new) {
            (Health::Unknown, Health::Down(error)) => {
                self.log(now, Severity::Alert, format!("{name} is DOWN: {error}"))
            }
            (_, Health::Down(error)) => self.log(now, Severity::Alert, format!("{name} went DOWN: {error}")),
            (Health::Down(_), Health::Up) => self.log(now, Severity::Info, format!("{name} is back UP")),
            _ => {}
        }
        *old != Health::Unknown
    }
}

/// Per-second rate of a monotonically increasing counter between two reads;
/// unknown when either read is missing, no time passed, or the counter went
/// backwards (the service restarted).
pub fn rate(previous: Option<u64>, current: Option<u64>, elapsed_ms: u64) -> Option<f64> {
    let (previous, current) = (previous?, current?);
    if elapsed_ms == 0 || current < previous {
        return None;
    }
    Some((current - previous) as f64 * 1000.0 / elapsed_ms as f64)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::tui::poller::{NodeProbe, ProbeError, ServiceProbe};
    use crate::tui::state::Panel;
    use serde_json::{Value, json};
    use std::time::Duration;

    const SHARES: [f64; 3] = [0.3, 0.33, 0.37];
    /// Test times are offsets from this instant (Unix ms), so they look like real timestamps.
    pub(crate) const T0: u64 = 1_700_000_000_000;

    /// A healthy three-node cluster at `T0 + at_ms`, up since `T0` (in seconds, as
    /// a gateway may report it), with the given counters.
    pub(crate) fn healthy_snapshot(at_ms: u64, requests: u64, rate_limited: u64, queue: u64) -> Snapshot {
        let at_ms = T0 + at_ms;
        let node = |n: u64| NodeProbe {
            id: format!("node-{n}"),
            url: format!("http://127.0.0.1:808{}", n + 1),
            metrics: Ok(json!({
                "node_id": format!("node-{n}"), "key_count": 1000 * n, "wal_size": 1_048_576 * n,
                "timestamp": at_ms, "data_bytes": 2_097_152 * n,
                "disk_total_bytes": 10_737_418_240u64, "disk_available_bytes": 8_589_934_592u64,
                "anti_entropy_enabled": true, "anti_entropy_rounds": 10 * n, "anti_entropy_keys_repaired": n,
                "anti_entropy_errors": 0, "anti_entropy_last_sync_age_secs": n
            })),
            health: Ok(json!({"status": "healthy", "node_id": format!("node-{n}")})),
        };
        Snapshot {
            taken_at_ms: at_ms,
            cluster: Ok(json!({
                "nodes": (1..=3).map(|n| json!({
                    "id": format!("node-{n}"), "url": format!("http://127.0.0.1:808{}", n + 1),
                    "healthy": true, "since": T0 / 1000, "share": SHARES[n as usize - 1], "vnodes": 150
                })).collect::<Vec<Value>>(),
                "replicas": 3, "vnodes": 150,
                "replicator_url": "http://127.0.0.1:8085", "users_url": "http://127.0.0.1:8081"
            })),
            gateway_metrics: Ok(json!({
                "service": "gateway", "timestamp": at_ms / 1000, "uptime_secs": 10,
                "requests_total": requests, "requests_per_second": 0.5,
                "latency_ms": {"p50": 1.25, "p95": 4.5, "p99": 12.0, "max": 20.0, "count": requests},
                "rate_limit_hits": rate_limited,
                "users": [
                    {"user_id": 42, "requests": requests / 2, "requests_per_second": 0.25},
                    {"user_id": 7, "requests": requests / 4, "requests_per_second": 0.1}
                ],
                "node_errors": {"node-1": 0, "node-2": 0, "node-3": 0},
                "replicator_failures": 0, "read_repairs": 0
            })),
            gateway_health: Ok(json!({"status": "healthy", "service": "gateway"})),
            nodes: (1..=3).map(node).collect(),
            replicator: Some(ServiceProbe {
                url: "http://127.0.0.1:8085".into(),
                metrics: Some(Ok(json!({
                    "total_replications": requests, "successful_replicas": 3 * requests, "failed_replicas": 1,
                    "queue_size": queue, "average_ack_time_ms": 3.5, "max_replication_lag_ms": 42.0,
                    "retries_in_progress": 2
                }))),
                health: Ok(json!({"status": "healthy", "service": "replicator", "queue_size": queue})),
            }),
            users: Some(ServiceProbe {
                url: "http://127.0.0.1:8081".into(),
                metrics: None,
                health: Ok(json!({"status": "healthy", "service": "users"})),
            }),
        }
    }

    /// The same cluster with `node-2` refusing connections (the gateway noticed 500 ms earlier).
    pub(crate) fn node_down_snapshot(at_ms: u64, requests: u64) -> Snapshot {
        let mut snapshot = healthy_snapshot(at_ms, requests, 0, 0);
        snapshot.nodes[1].metrics = Err(ProbeError::Unreachable("Connection refused".into()));
        snapshot.nodes[1].health = Err(ProbeError::Unreachable("Connection refused".into()));
        snapshot.cluster.as_mut().unwrap()["nodes"][1]["healthy"] = json!(false);
        snapshot.cluster.as_mut().unwrap()["nodes"][1]["since"] = json!(T0 + at_ms - 500);
        snapshot
    }

    fn app() -> App {
        App::new("http://127.0.0.1:8080", Duration::from_secs(1))
    }

    fn key(code: KeyCode) -> Event {
        Event::Input(TerminalEvent::Key(KeyEvent::new(code, KeyModifiers::NONE)))
    }

    #[test]
    fn metrics_in_model_out() {
        let mut app = app();
        app.update(Event::Polled(Box::new(healthy_snapshot(10_000, 100, 0, 4))));
        assert_eq!(app.nodes.len(), 3);
        assert_eq!(app.nodes_up(), 3);
        let node = &app.nodes[1];
        assert_eq!((node.id.as_str(), node.key_count, node.wal_size), ("node-2", Some(2000), Some(2_097_152)));
        assert_eq!(node.share, Some(0.33));
        assert_eq!(node.since_ms, Some(T0), "the gateway's since (in seconds) is used");
        assert_eq!(node.data_bytes, Some(4_194_304));
        assert_eq!(node.disk_fill(), Some(0.2));
        let progress = node.anti_entropy.expect("anti-entropy progress");
        assert_eq!((progress.rounds, progress.keys_repaired, progress.last_sync_age_secs), (20, 2, Some(2)));
        assert_eq!(app.replication.queue_size, Some(4));
        assert_eq!(app.replication.max_lag_ms, Some(42.0));
        assert_eq!(app.replication.retries, Some(2));
        assert_eq!(app.gateway.p99_ms, Some(12.0));
        assert_eq!(app.gateway.replicas, Some(3));
        assert_eq!(app.gateway.users, Some(Health::Up));
        assert_eq!(app.gateway.rps, Some(0.5), "one counter read: the gateway's own minute estimate");
        assert_eq!(app.gateway.top_tenants, vec![("42".to_string(), 0.25), ("7".to_string(), 0.1)]);
        assert!(app.events.is_empty(), "a healthy first poll is not news: {:?}", app.events);
        assert_eq!(app.history.wal_bytes.back(), Some(&Some(6.0 * 1_048_576.0)));
    }

    #[test]
    fn rates_come_from_counter_differences() {
        let mut app = app();
        app.update(Event::Polled(Box::new(healthy_snapshot(10_000, 100, 0, 0))));
        app.update(Event::Polled(Box::new(healthy_snapshot(12_000, 300, 0, 0))));
        assert_eq!(app.gateway.rps, Some(100.0));
        assert_eq!(app.replication.jobs_per_sec, Some(100.0));
        assert_eq!(app.gateway.top_tenants, vec![("42".to_string(), 50.0), ("7".to_string(), 25.0)]);
        // A restarted gateway's counters go backwards: its own estimate rather than a negative rate.
        app.update(Event::Polled(Box::new(healthy_snapshot(13_000, 5, 0, 0))));
        assert_eq!(app.gateway.rps, Some(0.5));
        assert_eq!(app.replication.jobs_per_sec, None, "the replicator reports no rate of its own");
        assert_eq!(rate(Some(10), Some(15), 500), Some(10.0));
        assert_eq!(rate(Some(10), Some(15), 0), None);
        assert_eq!(rate(None, Some(15), 1000), None);
    }

    #[test]
    fn a_down_node_is_detected_logged_and_keeps_its_last_readings() {
        let mut app = app();
        app.update(Event::Polled(Box::new(healthy_snapshot(10_000, 0, 0, 0))));
        app.update(Event::Polled(Box::new(node_down_snapshot(11_000, 0))));
        let node = &app.nodes[1];
        assert_eq!(node.health, Health::Down("Connection refused".into()));
        assert_eq!(node.since_ms, Some(T0 + 10_500), "down since the gateway noticed");
        assert_eq!(node.key_count, Some(2000), "last known key count is kept");
        assert_eq!(app.nodes_up(), 2);
        let last = app.events.back().unwrap();
        assert_eq!(last.severity, Severity::Alert);
        assert_eq!(last.text, "node-2 went DOWN: Connection refused");
        // Still down: no new event. Back up: one event.
        app.update(Event::Polled(Box::new(node_down_snapshot(12_000, 0))));
        assert_eq!(app.events.len(), 1);
        app.update(Event::Polled(Box::new(healthy_snapshot(13_000, 0, 0, 0))));
        assert_eq!(app.events.back().unwrap().text, "node-2 is back UP");
        assert_eq!(app.nodes[1].health, Health::Up);
    }

    #[test]
    fn the_gateways_unhealthy_mark_alone_means_down() {
        let mut app = app();
        let mut snapshot = healthy_snapshot(10_000, 0, 0, 0);
        snapshot.cluster.as_mut().unwrap()["nodes"][2]["healthy"] = json!(false);
        app.update(Event::Polled(Box::new(snapshot)));
        assert_eq!(app.nodes[2].health.label(), "DOWN");
        assert_eq!(app.events.back().unwrap().text, "node-3 is DOWN: the gateway marks it unhealthy");
    }

    #[test]
    fn an_unreachable_gateway_is_down_with_its_error_and_nodes_stay_visible() {
        let mut app = app();
        app.update(Event::Polled(Box::new(healthy_snapshot(10_000, 10, 0, 0))));
        let mut snapshot = healthy_snapshot(11_000, 0, 0, 0);
        snapshot.cluster = Err(ProbeError::Unreachable("Connection refused".into()));
        snapshot.gateway_metrics = Err(ProbeError::Unreachable("Connection refused".into()));
        snapshot.gateway_health = Err(ProbeError::Unreachable("Connection refused".into()));
        app.update(Event::Polled(Box::new(snapshot)));
        assert_eq!(app.gateway.health, Health::Down("Connection refused".into()));
        assert_eq!(app.gateway.rps, None);
        assert_eq!(app.nodes_up(), 3, "nodes are probed directly");
        assert_eq!(app.events.back().unwrap().text, "gateway went DOWN: Connection refused");
    }

    #[test]
    fn a_wrong_cluster_secret_is_reported_once() {
        let mut app = app();
        let mut snapshot = healthy_snapshot(10_000, 0, 0, 0);
        snapshot.cluster = Err(ProbeError::Status { status: 401, message: "missing or invalid cluster secret".into() });
        app.update(Event::Polled(Box::new(snapshot.clone())));
        app.update(Event::Polled(Box::new(snapshot)));
        assert_eq!(app.gateway.cluster_error.as_deref(), Some("HTTP 401: missing or invalid cluster secret"));
        let reports = app.events.iter().filter(|e| e.text.contains("401")).count();
        assert_eq!(reports, 1);
    }

    #[test]
    fn a_growing_queue_is_reported_once_and_its_draining_too() {
        let mut app = app();
        for (i, queue) in [5, 8, 12, 20, 30, 0].into_iter().enumerate() {
            app.update(Event::Polled(Box::new(healthy_snapshot(10_000 + i as u64 * 1000, 0, 0, queue))));
        }
        let texts: Vec<&str> = app.events.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(texts, vec!["replication queue growing: 20 jobs", "replication queue drained"]);
    }

    #[test]
    fn a_rate_limit_storm_starts_and_ends() {
        let mut app = app();
        for (i, hits) in [0, 0, 10, 30, 31, 31].into_iter().enumerate() {
            app.update(Event::Polled(Box::new(healthy_snapshot(10_000 + i as u64 * 1000, 0, hits, 0))));
        }
        let texts: Vec<&str> = app.events.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(texts, vec!["rate-limit storm: 10.0 refusals/s", "rate-limit storm is over"]);
        assert_eq!(app.gateway.rate_limit_hits, Some(31));
    }

    #[test]
    fn keys_move_focus_pause_help_and_quit() {
        let mut app = app();
        assert_eq!(app.update(key(KeyCode::Tab)), Flow::Continue);
        assert_eq!(app.focus, Panel::Replication);
        app.update(key(KeyCode::Left));
        app.update(key(KeyCode::Left));
        assert_eq!(app.focus, Panel::Events, "focus wraps around");
        app.update(key(KeyCode::Char('p')));
        assert!(app.paused);
        app.update(Event::Polled(Box::new(healthy_snapshot(10_000, 0, 0, 0))));
        assert!(app.nodes.is_empty(), "a paused dashboard ignores new data");
        app.update(key(KeyCode::Char('?')));
        assert!(app.show_help);
        assert_eq!(app.update(key(KeyCode::Esc)), Flow::Continue, "Esc first closes the help");
        assert!(!app.show_help);
        assert_eq!(app.update(key(KeyCode::Esc)), Flow::Quit);
        assert_eq!(app.update(key(KeyCode::Char('q'))), Flow::Quit);
        let ctrl_c = Event::Input(TerminalEvent::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)));
        assert_eq!(app.update(ctrl_c), Flow::Quit);
        assert_eq!(app.update(Event::Terminate), Flow::Quit);
    }

    #[test]
    fn history_is_bounded() {
        let mut app = app();
        for i in 0..(crate::tui::state::HISTORY_LEN as u64 + 10) {
            app.update(Event::Polled(Box::new(healthy_snapshot(10_000 + i * 1000, i * 10, 0, 0))));
        }
        assert_eq!(app.history.rps.len(), crate::tui::state::HISTORY_LEN);
        assert_eq!(app.history.rps.back(), Some(&Some(10.0)));
    }
}
