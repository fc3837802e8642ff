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

#[tokio::test]
async fn every_service_speaks_openmetrics_text_and_json_and_promtool_accepts_them() {
    let cluster = common::start_cluster_with(&[("RATE_LIMIT_PER_MINUTE", "0")]);
    let http = common::http();
    let (_, key) = common::tenant(&http, &cluster.users, "scraped").await;
    for n in 0..5 {
        let response = http
            .put(format!("{}/v1/kv/m{n}", cluster.gateway))
            .header("x-api-key", &key)
            .body("v")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

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
            None => {
                assert!(
                    std::env::var_os("YDHT_REQUIRE_PROMTOOL").is_none(),
                    "promtool is required (YDHT_REQUIRE_PROMTOOL) but not installed: apt-get install prometheus"
                );
                println!("SKIPPED promtool check of {service}: promtool is not installed (apt-get install prometheus)");
            }
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
