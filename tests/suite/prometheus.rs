//! Prometheus exposition (issue 18): every service's `/metrics` answers OpenMetrics when asked the
//! way Prometheus asks, the text format 0.0.4 for `text/plain`, and its JSON otherwise; the
//! figures follow the traffic, and `promtool check metrics` accepts every service's text.

use std::process::{Command, Stdio};

use serde_json::Value;

use crate::common;

/// What Prometheus 2.x sends.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
                                 text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

async fn scrape(http: &reqwest::Client, base: &str, accept: Option<&str>) -> (String, String) {
    let mut request = http.get(format!("{base}/metrics"));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{base}/metrics");
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    (content_type, response.text().await.unwrap())
}

/// The value of the sample line `name` (labels included, exactly) in an exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// `promtool check metrics` on `text`: `None` when promtool is not installed.
fn promtool(text: &str) -> Option<(bool, String)> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    Some((output.status.success(), report))
}

/// `serve all` after `writes` PUTs of a new tenant `name`.
async fn cluster_after_writes(name: &str, writes: usize) -> (common::Cluster, reqwest::Client) {
    let cluster = common::start_cluster_with(&[("RATE_LIMIT_PER_MINUTE", "0")]);
    let http = common::http();
    let (_, key) = common::tenant(&http, &cluster.users, name).await;
    for n in 0..writes {
        let request = http.put(format!("{}/v1/kv/{name}{n}", cluster.gateway)).header("x-api-key", &key).body("v");
        assert_eq!(request.send().await.unwrap().status(), 200);
    }
    (cluster, http)
}

/// Fails when CI requires Prometheus's tools (`YDHT_REQUIRE_PROMTOOL`), else says what is skipped.
fn skip_without_prometheus(what: &str) {
    assert!(
        std::env::var_os("YDHT_REQUIRE_PROMTOOL").is_none(),
        "Prometheus's tools are required (YDHT_REQUIRE_PROMTOOL) but not installed: apt-get install prometheus"
    );
    println!("SKIPPED {what}: Prometheus's tools are not installed (apt-get install prometheus)");
}

#[tokio::test]
async fn every_service_speaks_openmetrics_text_and_json_and_promtool_accepts_them() {
    let (cluster, http) = cluster_after_writes("scraped", 5).await;

    let services = [
        ("gateway", cluster.gateway.clone(), "ydht_gateway_requests_total"),
        ("users", cluster.users.clone(), "ydht_users_signups_total"),
        ("node", cluster.nodes[0].clone(), "ydht_node_wal_syncs_total"),
        ("replicator", cluster.replicator.clone(), "ydht_replicator_jobs_total"),
    ];
    for (service, base, counter) in &services {
        let (content_type, open) = scrape(&http, base, Some(PROMETHEUS_ACCEPT)).await;
        assert!(content_type.starts_with("application/openmetrics-text"), "{service}: {content_type}");
        assert!(open.ends_with("# EOF\n"), "{service}: {open}");
        assert!(sample(&open, counter).is_some_and(|value| value >= 1.0), "{service}: {counter} in\n{open}");

        let (content_type, text) = scrape(&http, base, Some("text/plain;version=0.0.4")).await;
        assert!(content_type.starts_with("text/plain; version=0.0.4"), "{service}: {content_type}");
        assert!(!text.contains("# EOF"), "{service}");
        assert!(text.contains(&format!("# TYPE {counter} counter")), "{service}: {text}");

        let (content_type, json) = scrape(&http, base, None).await;
        assert!(content_type.starts_with("application/json"), "{service}: {content_type}");
        serde_json::from_str::<Value>(&json).unwrap();

        match promtool(&text) {
            Some((ok, report)) => {
                assert!(ok, "promtool check metrics refused the {service}'s exposition:\n{report}\n{text}")
            }
            None => skip_without_prometheus(&format!("promtool check metrics of the {service}")),
        }
    }

    // The gateway's counters and histogram follow the traffic.
    let (_, open) = scrape(&http, &cluster.gateway, Some(PROMETHEUS_ACCEPT)).await;
    assert!(sample(&open, "ydht_gateway_requests_total").unwrap() >= 5.0, "{open}");
    let count = sample(&open, "ydht_gateway_request_duration_seconds_count").unwrap();
    assert!(count >= 5.0, "{open}");
    assert_eq!(sample(&open, "ydht_gateway_request_duration_seconds_bucket{le=\"+Inf\"}"), Some(count), "{open}");
    let (_, node) = scrape(&http, &cluster.nodes[0], Some(PROMETHEUS_ACCEPT)).await;
    assert!(sample(&node, "ydht_node_disk_available_bytes").unwrap() > 0.0, "{node}");
}

/// The names of the samples in an exposition.
fn sample_names(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next().map(str::to_string))
        .collect()
}

fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Every metric the Grafana dashboard queries is in the services' exposition, and promtool
/// accepts the deployment's Prometheus configurations.
#[tokio::test]
async fn the_dashboard_queries_only_metrics_that_exist_and_the_configs_are_valid() {
    let (cluster, http) = cluster_after_writes("dashboard", 1).await;
    let mut exposed = std::collections::BTreeSet::new();
    for base in [&cluster.gateway, &cluster.users, &cluster.nodes[0], &cluster.replicator] {
        exposed.extend(sample_names(&scrape(&http, base, Some(PROMETHEUS_ACCEPT)).await.1));
    }
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(repo("deploy/grafana/ydht-dashboard.json")).unwrap()).unwrap();
    let mut queried = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(start) = rest.find("ydht_") {
                let name: String =
                    rest[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                rest = &rest[start + name.len()..];
                queried.insert(name);
            }
        }
    }
    assert!(queried.len() >= 15, "the dashboard queries {queried:?}");
    let missing: Vec<&String> = queried.iter().filter(|name| !exposed.contains(*name)).collect();
    assert!(missing.is_empty(), "the dashboard queries metrics no service exposes: {missing:?}");

    for config in ["prometheus-compose.yml", "prometheus-systemd.yml", "prometheus-kubernetes.yml"] {
        let path = repo(&format!("deploy/prometheus/{config}"));
        match Command::new("promtool").args(["check", "config"]).arg(&path).output() {
            Ok(output) => assert!(output.status.success(), "{config}: {}", String::from_utf8_lossy(&output.stdout)),
            Err(_) => skip_without_prometheus(&format!("promtool check config {config}")),
        }
    }
}

/// A Prometheus server that is killed when dropped.
struct PrometheusServer(std::process::Child);

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real Prometheus server scrapes `serve all`; a PromQL query through its HTTP API returns the
/// gateway's request count after some traffic.
#[tokio::test]
async fn a_real_prometheus_scrapes_the_cluster_and_answers_promql() {
    if Command::new("prometheus").arg("--version").output().is_err() {
        return skip_without_prometheus("the real Prometheus scrape");
    }
    let (cluster, http) = cluster_after_writes("promql", 12).await;
    let dir = tempfile::tempdir().unwrap();
    let target = |url: &str| url.trim_start_matches("http://").to_string();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ydht-gateway\n    static_configs:\n      - targets: [\"{}\"]\n  \
         - job_name: ydht-node\n    static_configs:\n      - targets: [\"{}\"]\n",
        target(&cluster.gateway),
        target(&cluster.nodes[0])
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    let _server = PrometheusServer(server);
    let query = format!("http://127.0.0.1:{port}/api/v1/query?query=ydht_gateway_requests_total");
    let last = std::sync::Arc::new(std::sync::Mutex::new(Value::Null));
    let answered = common::eventually(std::time::Duration::from_secs(60), || {
        let (http, query, last) = (http.clone(), query.clone(), last.clone());
        async move {
            let Ok(response) = http.get(&query).send().await else { return false };
            let Ok(body) = response.json::<Value>().await else { return false };
            let value = body["data"]["result"][0]["value"][1].as_str().and_then(|value| value.parse::<f64>().ok());
            *last.lock().unwrap() = body;
            value.is_some_and(|value| value >= 12.0)
        }
    })
    .await;
    let last = last.lock().unwrap().clone();
    assert!(answered, "Prometheus did not answer the gateway's request count: {last}");
    // Both targets are scraped and up (the node's first scrape may come a moment after the gateway's).
    let up_query = format!("http://127.0.0.1:{port}/api/v1/query?query=up");
    let last_up = std::sync::Arc::new(std::sync::Mutex::new(Value::Null));
    let both_up = common::eventually(std::time::Duration::from_secs(30), || {
        let (http, query, last) = (http.clone(), up_query.clone(), last_up.clone());
        async move {
            let Ok(response) = http.get(&query).send().await else { return false };
            let Ok(body) = response.json::<Value>().await else { return false };
            let targets = body["data"]["result"].as_array().cloned().unwrap_or_default();
            *last.lock().unwrap() = body;
            targets.len() == 2 && targets.iter().all(|target| target["value"][1] == "1")
        }
    })
    .await;
    assert!(both_up, "both targets up: {}", last_up.lock().unwrap());
}
