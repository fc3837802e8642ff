//! `ydht status`: one table of every service — URL, health, key count, WAL
//! size, anti-entropy progress (rounds, keys repaired, last full sync),
//! replication queue and lag, gateway p99 — from the gateway's `/cluster` and
//! each service's `/health` and `/metrics`. Exit 4 if any is down or degraded
//! (a replicator whose queue is full).

use clap::Args;
use futures_util::future::join_all;
use serde::Serialize;
use serde_json::Value;

use super::api::Endpoint;
use super::output::{human_bytes, human_count, human_millis, print_json, print_line, table};
use super::{Context, OperatorArgs, ServicesClient, cluster};
use crate::error::{Exit, exit};
use crate::units::count_of;

/// Arguments of `ydht status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Where the cluster secret comes from (needed to list the nodes and the replicator).
    #[command(flatten)]
    pub operator: OperatorArgs,

    /// The gateway, the users service and the config dir.
    #[command(flatten)]
    pub client: ServicesClient,
}

/// What kind of service a row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The public KV API.
    Gateway,
    /// Accounts and API keys.
    Users,
    /// The replication queue.
    Replicator,
    /// A storage node.
    Node,
}

/// One service's row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceStatus {
    /// `gateway`, `users`, `replicator`, or the node id.
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// Its base URL.
    pub url: String,
    /// Whether `/health` answered healthy.
    pub healthy: bool,
    /// Why it is not healthy.
    pub error: Option<String>,
    /// Why it answers but cannot do its job in full (`/health` status `degraded`, e.g. a full replication queue).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degraded: Option<String>,
    /// Live keys (nodes).
    pub key_count: Option<u64>,
    /// Write-ahead log bytes (nodes).
    pub wal_size: Option<u64>,
    /// Jobs waiting (replicator).
    pub queue_size: Option<u64>,
    /// Age of the oldest unfinished replication job, ms (replicator).
    pub lag_ms: Option<f64>,
    /// Request latency p99, ms (gateway).
    pub p99_ms: Option<f64>,
    /// Anti-entropy progress (nodes that report it).
    pub anti_entropy: Option<AntiEntropyStatus>,
    /// Membership state (nodes): `joining`, `active`, `leaving` or `down`.
    pub state: Option<String>,
}

/// A node's anti-entropy progress, from its `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AntiEntropyStatus {
    /// Whether the node runs anti-entropy at all (it needs its peers).
    pub enabled: bool,
    /// Rounds finished since the node started.
    pub rounds: u64,
    /// Records pulled or pushed that became the current version on the other side.
    pub keys_repaired: u64,
    /// Failed peer exchanges since start.
    pub errors: u64,
    /// Seconds since every peer was last compared successfully; `None` before the first such round.
    pub last_sync_age_secs: Option<u64>,
}

impl AntiEntropyStatus {
    /// The table cell: `off`, or `<rounds> rounds, <n> repaired, synced <age> ago` (or `never synced`).
    fn summary(&self) -> String {
        if !self.enabled {
            return "off".to_string();
        }
        let synced = self
            .last_sync_age_secs
            .map_or_else(|| "never synced".to_string(), |age| format!("synced {} ago", age_text(age)));
        let errors =
            if self.errors > 0 { format!(", {}", count_of(self.errors, "error", "errors")) } else { String::new() };
        format!(
            "{}, {} repaired{errors}, {synced}",
            count_of(self.rounds, "round", "rounds"),
            human_count(self.keys_repaired)
        )
    }
}

impl StatusArgs {
    /// Probes every service and prints the table.
    pub async fn run(self, context: &Context) -> anyhow::Result<()> {
        let mut targets = vec![(context.gateway.clone(), Kind::Gateway)];
        let mut problem: Option<anyhow::Error> = None;
        let mut users = context.users.clone();
        let mut states: Vec<(String, Option<String>)> = Vec::new();
        match self.operator.cluster_secret()? {
            None => {
                problem = Some(
                    Exit::usage(
                        "nodes and replicator not shown: no cluster secret; pass --cluster-secret, set \
                         YDHT_CLUSTER_SECRET, or point --data-dir at the cluster's data dir",
                    )
                    .into(),
                );
            }
            Some(secret) => match cluster::fetch(context, &secret).await {
                Ok(view) => {
                    if let Some(url) = &view.users_url {
                        users = Endpoint::parse("users service", url, "the gateway's cluster view")?;
                    }
                    if let Some(url) = &view.replicator_url {
                        targets.push((
                            Endpoint::parse("replicator", url, "the gateway's cluster view")?,
                            Kind::Replicator,
                        ));
                    }
                    for member in &view.members {
                        let endpoint = Endpoint::parse(member.id.clone(), &member.url, "the cluster view")?;
                        targets.push((endpoint, Kind::Node));
                        states.push((member.id.clone(), member.state.clone()));
                    }
                }
                Err(error) => problem = Some(error),
            },
        }
        targets.insert(1, (users, Kind::Users));
        let mut rows = join_all(targets.iter().map(|(endpoint, kind)| probe(context, endpoint, *kind))).await;
        for row in rows.iter_mut().filter(|row| row.kind == Kind::Node) {
            row.state = states.iter().find(|(id, _)| *id == row.name).and_then(|(_, state)| state.clone());
        }
        let down: Vec<&str> = rows.iter().filter(|row| !row.healthy).map(|row| row.name.as_str()).collect();
        let degraded: Vec<String> = rows
            .iter()
            .filter_map(|row| row.degraded.as_ref().map(|reason| format!("{} degraded: {reason}", row.name)))
            .collect();
        if context.json() {
            let healthy = down.is_empty() && degraded.is_empty() && problem.is_none();
            print_json(&serde_json::json!({ "healthy": healthy, "services": rows }))?;
        } else {
            print_line(&render(&rows))?;
        }
        if !down.is_empty() {
            let total = rows.len();
            return Err(Exit::new(
                exit::UNAVAILABLE,
                format!("{} of {total} services down: {}", down.len(), down.join(", ")),
            )
            .into());
        }
        if !degraded.is_empty() {
            return Err(Exit::new(exit::UNAVAILABLE, degraded.join("; ")).into());
        }
        match problem {
            // Without the secret the visible services are all up: say what is missing, but succeed.
            Some(error) if crate::error::exit_code_of(&error) == exit::USAGE => {
                eprintln!("note: {error}");
                Ok(())
            }
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// Asks one service for `/health` and `/metrics`.
async fn probe(context: &Context, endpoint: &Endpoint, kind: Kind) -> ServiceStatus {
    let name = match kind {
        Kind::Gateway => "gateway".to_string(),
        Kind::Users => "users".to_string(),
        Kind::Replicator => "replicator".to_string(),
        Kind::Node => endpoint.name.clone(),
    };
    let mut row = ServiceStatus {
        name,
        kind,
        url: endpoint.display.clone(),
        healthy: false,
        error: None,
        degraded: None,
        key_count: None,
        wal_size: None,
        queue_size: None,
        lag_ms: None,
        p99_ms: None,
        anti_entropy: None,
        state: None,
    };
    let (health, metrics) = tokio::join!(
        context.api.get_json::<Value>(endpoint, &["health"], None),
        context.api.get_json::<Value>(endpoint, &["metrics"], None)
    );
    match health {
        Ok(body) if body.get("status").and_then(Value::as_str) == Some("healthy") => row.healthy = true,
        Ok(body) if body.get("status").and_then(Value::as_str) == Some("degraded") => {
            row.healthy = true;
            let reason = body.get("reason").and_then(Value::as_str).unwrap_or("no reason given");
            row.degraded = Some(reason.to_string());
        }
        Ok(body) => row.error = Some(format!("unhealthy: {body}")),
        Err(error) => {
            // The URL has its own column: keep only the reason.
            let text = error.to_string();
            let prefix = format!("cannot reach {} at {}: ", endpoint.name, endpoint.display);
            row.error = Some(text.strip_prefix(&prefix).map_or(text.clone(), str::to_string));
        }
    }
    if let Ok(metrics) = metrics {
        fill_metrics(&mut row, &metrics);
    }
    row
}

/// Picks the row's figures out of a service's `/metrics`.
fn fill_metrics(row: &mut ServiceStatus, metrics: &Value) {
    match row.kind {
        Kind::Node => {
            row.key_count = metrics.get("key_count").and_then(Value::as_u64);
            row.wal_size = metrics.get("wal_size").and_then(Value::as_u64);
            row.anti_entropy = anti_entropy_of(metrics);
        }
        Kind::Replicator => {
            row.queue_size = metrics.get("queue_size").and_then(Value::as_u64);
            row.lag_ms = metrics.get("max_replication_lag_ms").and_then(Value::as_f64);
        }
        Kind::Gateway => {
            // `latency_ms.p99` of [`crate::proto::GatewayMetrics`].
            row.p99_ms = metrics.pointer("/latency_ms/p99").and_then(Value::as_f64);
        }
        Kind::Users => {}
    }
}

/// `42s`, `5m`, `3h`: an age at the precision that matters for it.
fn age_text(secs: u64) -> String {
    match secs {
        0..120 => format!("{secs}s"),
        120..7200 => format!("{}m", secs / 60),
        _ => format!("{}h", secs / 3600),
    }
}

/// The anti-entropy fields of a node's `/metrics` ([`crate::proto::NodeMetrics`]), if it reports them.
fn anti_entropy_of(metrics: &Value) -> Option<AntiEntropyStatus> {
    let enabled = metrics.get("anti_entropy_enabled").and_then(Value::as_bool)?;
    let count = |name: &str| metrics.get(name).and_then(Value::as_u64).unwrap_or(0);
    Some(AntiEntropyStatus {
        enabled,
        rounds: count("anti_entropy_rounds"),
        keys_repaired: count("anti_entropy_keys_repaired"),
        errors: count("anti_entropy_errors"),
        last_sync_age_secs: metrics.get("anti_entropy_last_sync_age_secs").and_then(Value::as_u64),
    })
}

/// The status table.
pub fn render(rows: &[ServiceStatus]) -> String {
    let mut rendered = table(["SERVICE", "URL", "HEALTH", "KEYS", "WAL", "ANTI-ENTROPY", "QUEUE", "LAG", "P99"]);
    let dash = || "-".to_string();
    for row in rows {
        let mut health = if let Some(reason) = &row.degraded {
            format!("DEGRADED: {reason}")
        } else if row.healthy {
            "up".to_string()
        } else {
            format!("DOWN: {}", row.error.as_deref().unwrap_or("no answer"))
        };
        // A member in the middle of a membership change says so next to its health.
        if let Some(state) = row.state.as_deref().filter(|state| *state != "active") {
            health = format!("{health} ({state})");
        }
        rendered.add_row([
            row.name.clone(),
            row.url.clone(),
            health,
            row.key_count.map_or_else(dash, human_count),
            row.wal_size.map_or_else(dash, human_bytes),
            row.anti_entropy.as_ref().map_or_else(dash, AntiEntropyStatus::summary),
            row.queue_size.map_or_else(dash, human_count),
            row.lag_ms.map_or_else(dash, human_millis),
            row.p99_ms.map_or_else(dash, human_millis),
        ]);
    }
    rendered.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(name: &str, kind: Kind) -> ServiceStatus {
        ServiceStatus {
            name: name.into(),
            kind,
            url: format!("http://{name}"),
            healthy: true,
            error: None,
            degraded: None,
            key_count: None,
            wal_size: None,
            queue_size: None,
            lag_ms: None,
            p99_ms: None,
            anti_entropy: None,
            state: None,
        }
    }

    #[test]
    fn metrics_fill_the_right_columns() {
        let mut node = row("node-1", Kind::Node);
        fill_metrics(&mut node, &json!({"node_id": "node-1", "key_count": 42, "wal_size": 2048, "timestamp": 1}));
        assert_eq!((node.key_count, node.wal_size), (Some(42), Some(2048)));
        let mut replicator = row("replicator", Kind::Replicator);
        fill_metrics(&mut replicator, &json!({"queue_size": 3, "max_replication_lag_ms": 12.5}));
        assert_eq!((replicator.queue_size, replicator.lag_ms), (Some(3), Some(12.5)));
        assert_eq!(node.anti_entropy, None, "a node that does not report anti-entropy shows none");
        let mut gateway = row("gateway", Kind::Gateway);
        fill_metrics(&mut gateway, &json!({"latency_ms": {"p50": 1.0, "p99": 7.5}}));
        assert_eq!(gateway.p99_ms, Some(7.5));
    }

    #[test]
    fn table_shows_down_services_with_their_reason() {
        let mut node = row("node-2", Kind::Node);
        node.healthy = false;
        node.error = Some("cannot reach node-2 at http://node-2: connection refused".into());
        let mut up = row("node-1", Kind::Node);
        up.key_count = Some(5);
        up.wal_size = Some(1536);
        let text = render(&[up, node]);
        assert!(text.contains("DOWN: cannot reach node-2"));
        assert!(text.contains("1.5 KiB") && text.contains("node-1"));
    }

    #[test]
    fn a_degraded_service_says_why_in_its_health_cell() {
        let mut replicator = row("replicator", Kind::Replicator);
        replicator.degraded = Some("replication queue FULL (10 of 10 jobs, --max-queue)".into());
        let text = render(&[replicator.clone(), row("gateway", Kind::Gateway)]);
        assert!(line_of(&text, "replicator").contains("DEGRADED: replication queue FULL"), "{text}");
        assert!(line_of(&text, "gateway").contains(" up "), "{text}");
        assert!(serde_json::to_value(&replicator).unwrap()["degraded"].as_str().unwrap().contains("FULL"));
    }

    #[test]
    fn members_in_a_change_show_their_state_and_active_ones_do_not() {
        let mut joining = row("node-4", Kind::Node);
        joining.state = Some("joining".into());
        let mut active = row("node-1", Kind::Node);
        active.state = Some("active".into());
        let mut down = row("node-2", Kind::Node);
        (down.healthy, down.error, down.state) = (false, Some("connection refused".into()), Some("down".into()));
        let text = render(&[active, joining, down]);
        assert!(line_of(&text, "node-4").contains("up (joining)"), "{text}");
        assert!(line_of(&text, "node-2").contains("DOWN: connection refused (down)"), "{text}");
        assert!(!line_of(&text, "node-1").contains('('), "{text}");
    }

    #[test]
    fn anti_entropy_progress_is_read_and_shown_per_node() {
        let mut syncing = row("node-1", Kind::Node);
        fill_metrics(
            &mut syncing,
            &json!({"key_count": 7, "anti_entropy_enabled": true, "anti_entropy_rounds": 12,
                    "anti_entropy_keys_repaired": 3, "anti_entropy_errors": 0, "anti_entropy_last_sync_age_secs": 4}),
        );
        let expected =
            AntiEntropyStatus { enabled: true, rounds: 12, keys_repaired: 3, errors: 0, last_sync_age_secs: Some(4) };
        assert_eq!(syncing.anti_entropy, Some(expected));
        let mut starting = row("node-2", Kind::Node);
        fill_metrics(
            &mut starting,
            &json!({"anti_entropy_enabled": true, "anti_entropy_rounds": 0, "anti_entropy_keys_repaired": 0,
                    "anti_entropy_errors": 2, "anti_entropy_last_sync_age_secs": null}),
        );
        let mut off = row("node-3", Kind::Node);
        fill_metrics(&mut off, &json!({"anti_entropy_enabled": false, "anti_entropy_rounds": 0}));
        let text = render(&[syncing.clone(), starting, off]);
        assert!(text.contains("ANTI-ENTROPY"), "{text}");
        assert!(text.contains("12 rounds, 3 repaired, synced 4s ago"), "{text}");
        assert!(text.contains("0 rounds, 0 repaired, 2 errors, never synced"), "{text}");
        assert!(line_of(&text, "node-3").contains(" off "), "{text}");
        assert_eq!((age_text(119), age_text(600), age_text(7200)), ("119s".into(), "10m".into(), "2h".into()));

        let json = serde_json::to_value(&syncing).unwrap();
        assert_eq!(json["anti_entropy"]["rounds"], 12);
        assert_eq!(json["anti_entropy"]["keys_repaired"], 3);
        assert_eq!(json["anti_entropy"]["last_sync_age_secs"], 4);
    }

    #[test]
    fn counts_are_pluralised_grouped_and_lag_shares_tops_format() {
        let one =
            AntiEntropyStatus { enabled: true, rounds: 1, keys_repaired: 2088, errors: 1, last_sync_age_secs: Some(4) };
        assert_eq!(one.summary(), "1 round, 2,088 repaired, 1 error, synced 4s ago");
        let mut node = row("node-1", Kind::Node);
        node.key_count = Some(2088);
        let mut replicator = row("replicator", Kind::Replicator);
        (replicator.queue_size, replicator.lag_ms) = (Some(12_000), Some(3770.0));
        let text = render(&[node, replicator]);
        assert!(line_of(&text, "node-1").contains(" 2,088 "), "{text}");
        assert!(line_of(&text, "replicator").contains(" 12,000 ") && line_of(&text, "replicator").contains("3.8 s"));
        assert_eq!(crate::tui::ui::format::millis(3770.0), "3.8 s", "`ydht top` shows the same lag");
        assert_eq!(crate::tui::ui::format::count(2088), "2,088");
    }

    fn line_of<'a>(text: &'a str, needle: &str) -> &'a str {
        text.lines().find(|line| line.contains(needle)).unwrap_or_else(|| panic!("no {needle} in {text}"))
    }
}
