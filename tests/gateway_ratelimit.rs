//! The per-user token bucket seen from outside: headers on every answer,
//! 429 with Retry-After once the burst is spent, other users unaffected.

mod common;

use common::{http, start_cluster_with, tenant};
use serde_json::Value;

#[tokio::test]
async fn burst_then_429_with_retry_after_and_headers() {
    let cluster = start_cluster_with(&[("RATE_LIMIT_PER_MINUTE", "1"), ("RATE_LIMIT_BURST", "3")]);
    let client = http();
    let (_, frank) = tenant(&client, &cluster.users, "frank").await;
    let (_, grace) = tenant(&client, &cluster.users, "grace").await;
    let url = format!("{}/v1/kv/k", cluster.gateway);

    let mut remaining = Vec::new();
    for _ in 0..3 {
        let response = client.put(&url).header("X-API-Key", &frank).body("v").send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-ratelimit-limit"], "1");
        remaining.push(response.headers()["x-ratelimit-remaining"].to_str().unwrap().to_string());
    }
    assert_eq!(remaining, ["2", "1", "0"]);

    let response = client.get(&url).header("X-API-Key", &frank).send().await.unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(response.headers()["x-ratelimit-remaining"], "0");
    assert_eq!(response.headers()["x-ratelimit-limit"], "1");
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("rate limit"), "{body}");

    // Grace has a bucket of her own.
    let response = client.get(&url).header("X-API-Key", &grace).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["x-ratelimit-remaining"], "2");

    let metrics: Value = client.get(format!("{}/metrics", cluster.gateway)).send().await.unwrap().json().await.unwrap();
    assert_eq!(metrics["rate_limit_hits"], 1, "{metrics}");
}
