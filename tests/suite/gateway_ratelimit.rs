//! The per-user token bucket seen from outside: headers on every answer,
//! 429 with Retry-After once the burst is spent, other users unaffected.

use crate::common;

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

/// A wrong API key is asked of the users service once per refused-key TTL (2 s), not
/// once per request; past `YDHT_AUTH_FAILURES_PER_MINUTE` failures an address gets 429
/// for keys the gateway has not just validated. A key created meanwhile works at once.
#[tokio::test]
async fn wrong_api_keys_are_cached_briefly_and_limited_per_address() {
    let cluster = start_cluster_with(&[("YDHT_AUTH_FAILURES_PER_MINUTE", "5")]);
    let client = http();
    let keys_refused = || async {
        let metrics: Value =
            client.get(format!("{}/metrics", cluster.users)).send().await.unwrap().json().await.unwrap();
        metrics["keys_refused"].as_u64().expect("keys_refused")
    };
    let (account, _) = tenant(&client, &cluster.users, "hugo").await;
    let url = format!("{}/v1/kv/k", cluster.gateway);
    let wrong = format!("ydht_{}", "0".repeat(40));

    let before = keys_refused().await;
    let started = std::time::Instant::now();
    for _ in 0..4 {
        let response = client.get(&url).header("X-API-Key", &wrong).send().await.unwrap();
        assert_eq!(response.status(), 401);
    }
    let asked = keys_refused().await - before;
    let ttl_windows = 1 + started.elapsed().as_secs() / 2;
    assert!(asked >= 1 && asked <= ttl_windows, "4 tries of one wrong key asked the users service {asked} times");

    // The key just created was never refused: it works at once.
    let (_, fresh) = common::create_key(&client, &cluster.users, &account, &["read"]).await;
    let response = client.get(&url).header("X-API-Key", &fresh).send().await.unwrap();
    assert_eq!(response.status(), 404, "a new key works at once");

    let response = client.get(&url).header("X-API-Key", format!("ydht_{}", "1".repeat(40))).send().await.unwrap();
    assert_eq!(response.status(), 401, "the fifth failure is still a 401");
    let (_, unused) = common::create_key(&client, &cluster.users, &account, &["read"]).await;
    for key in [wrong.as_str(), unused.as_str()] {
        let response = client.get(&url).header("X-API-Key", key).send().await.unwrap();
        assert_eq!(response.status(), 429, "the address used up its failures");
        let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("invalid API keys"), "{body}");
    }
}
