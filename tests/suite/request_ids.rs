//! Request ids and JSON logs (issue 18): `X-Request-Id` is taken (or made) by the gateway and the
//! users service, answered on every response, errors included, and carried to the users service,
//! the nodes and the replicator, whose logs hold it; with `YDHT_LOG_FORMAT=json` every log line is
//! one JSON object.

use std::time::Duration;

use serde_json::Value;

use crate::common::{self, Service};

/// The log lines (parsed JSON) whose spans carry `id`, by the service that wrote them.
fn services_logging(lines: &[Value], id: &str) -> std::collections::BTreeSet<String> {
    lines
        .iter()
        .flat_map(|line| line["spans"].as_array().cloned().unwrap_or_default())
        .filter(|span| span["id"].as_str().is_some_and(|ids| ids.split(',').any(|one| one == id)))
        .filter_map(|span| span["service"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn a_request_id_is_answered_and_followed_through_every_service_in_json_logs() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve-all.log");
    let data = dir.path().join("data");
    let env = [
        ("YDHT_DATA_DIR", data.to_str().unwrap()),
        ("GATEWAY_PORT", "0"),
        ("USERMANAGER_PORT", "0"),
        ("DHTNODE_PORT", "0"),
        ("REPLICATOR_PORT", "0"),
        ("RATE_LIMIT_PER_MINUTE", "0"),
        ("YDHT_LOG_FORMAT", "json"),
        ("RUST_LOG", "info,ydht::server=debug"),
    ];
    let mut process = Service::spawn_logging_to(
        &["serve", "all"],
        &env,
        &["users", "node-1", "node-2", "node-3", "replicator", "gateway"],
        &log,
    );
    let (gateway, users) = (process.url("gateway"), process.url("users"));
    let http = common::http();

    // The users service answers the id it was given, and makes one when there is none.
    let signup = serde_json::json!({"email": "tracer@example.com", "username": "tracer", "password": "securepass123"});
    let response =
        http.post(format!("{users}/signup")).header("x-request-id", "signup-1").json(&signup).send().await.unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-request-id"], "signup-1");
    let (_, key) = {
        let account = common::signup_and_login(&http, &users, "tracer2").await;
        let created = common::create_key(&http, &users, &account, &["read", "write"]).await;
        (account, created.1)
    };

    // A fresh key: the gateway asks the users service, writes to a node, queues copies.
    let response = http
        .put(format!("{gateway}/v1/kv/traced"))
        .header("x-api-key", &key)
        .header("x-request-id", "trace-me-123")
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "trace-me-123");

    // Errors carry it too; a missing or unusable id is replaced by a new one.
    let refused = http.get(format!("{gateway}/v1/kv/x")).header("x-request-id", "err-7").send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["x-request-id"], "err-7");
    let made = http.get(format!("{gateway}/health")).send().await.unwrap();
    let made = made.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(made.len(), 16, "{made}");
    let bad = http.get(format!("{gateway}/health")).header("x-request-id", "x".repeat(200)).send().await.unwrap();
    assert_eq!(bad.headers()["x-request-id"].len(), 16, "a 200-character id is replaced");

    // Every service on the request's path logged within a span holding its id.
    let wanted: std::collections::BTreeSet<String> =
        ["gateway", "users", "node", "replicator"].iter().map(|name| name.to_string()).collect();
    let mut lines: Vec<Value> = Vec::new();
    let found = common::eventually(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).unwrap();
        lines = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("a log line that is not JSON: {line}")))
            .collect();
        let done = services_logging(&lines, "trace-me-123") == wanted;
        async move { done }
    })
    .await;
    assert!(found, "services that logged trace-me-123: {:?}", services_logging(&lines, "trace-me-123"));
    assert!(lines.iter().all(|line| line["timestamp"].is_string() && line["level"].is_string()));
    assert!(!services_logging(&lines, "err-7").is_empty());
    assert!(process.terminate().is_some());
}
