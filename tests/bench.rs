//! `ydht bench` against a real `ydht serve all` cluster: the JSON figures add
//! up (every request counted, none failed). No timing assertions.

mod common;

use std::process::Command;

use serde_json::Value;

/// Runs `ydht bench <args> --output json` and returns the parsed document.
fn bench(args: &[&str]) -> Value {
    let config_dir = tempfile::tempdir().expect("temp config dir");
    let output = Command::new(env!("CARGO_BIN_EXE_ydht"))
        .arg("bench")
        .args(args)
        .args(["--output", "json", "--warmup", "200ms"])
        .env_remove("YDHT_API_KEY")
        .env_remove("YDHT_GATEWAY_URL")
        .env_remove("YDHT_CLUSTER_SECRET")
        .env("YDHT_CONFIG_DIR", config_dir.path())
        .output()
        .expect("run ydht bench");
    assert!(output.status.success(), "ydht bench {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("bench prints one JSON document")
}

fn assert_sane(summary: &Value, requests: u64) {
    assert_eq!(summary["requests"], requests, "{summary}");
    assert_eq!(summary["ok"], requests, "{summary}");
    assert_eq!(summary["errors"].as_object().map(|errors| errors.len()), Some(0), "{summary}");
    assert!(summary["ops_per_sec"].as_f64().unwrap() > 0.0, "{summary}");
    let latency = &summary["latency_ms"];
    let p50 = latency["p50"].as_f64().unwrap();
    let p99 = latency["p99"].as_f64().unwrap();
    let max = latency["max"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= max, "{summary}");
    assert!(summary["key_prefix"].as_str().unwrap().starts_with("bench/"), "{summary}");
}

#[tokio::test]
async fn bench_counts_every_request_through_the_gateway_and_on_a_node() {
    let cluster = common::start_cluster_with(&[("RATE_LIMIT_PER_MINUTE", "0")]);
    let client = common::http();
    let (_, api_key) = common::tenant(&client, &cluster.users, "bencher").await;

    let puts = bench(&["--gateway", &cluster.gateway, "--api-key", &api_key, "--requests", "200", "--clients", "4"]);
    assert_sane(&puts, 200);
    assert_eq!(puts["target"], "gateway");
    assert_eq!(puts["consistency"], "eventual");

    let strong_gets = bench(&[
        "--gateway",
        &cluster.gateway,
        "--api-key",
        &api_key,
        "--requests",
        "200",
        "--clients",
        "4",
        "--op",
        "mixed",
        "--keys",
        "50",
        "--consistency",
        "strong",
    ]);
    assert_sane(&strong_gets, 200);
    assert_eq!(strong_gets["op"], "mixed");

    let secret = cluster.secret();
    let node = bench(&[
        "--target-node",
        &cluster.nodes[0],
        "--cluster-secret",
        &secret,
        "--requests",
        "200",
        "--clients",
        "4",
        "--op",
        "get",
        "--keys",
        "20",
    ]);
    assert_sane(&node, 200);
    assert_eq!(node["target"], "node");
    // The keys the get run created are really on the node.
    let prefix = node["key_prefix"].as_str().unwrap();
    let (status, body, _) = common::read_node(&client, &cluster.nodes[0], &secret, &format!("{prefix}7")).await;
    assert_eq!(status, 200);
    assert_eq!(body.len(), 100);
}

#[test]
fn a_wrong_api_key_exits_with_the_auth_code() {
    let cluster = common::start_cluster_with(&[("RATE_LIMIT_PER_MINUTE", "0")]);
    let config_dir = tempfile::tempdir().expect("temp config dir");
    let output = Command::new(env!("CARGO_BIN_EXE_ydht"))
        .args(["bench", "--gateway", &cluster.gateway, "--api-key", "ydht_not_a_key", "--requests", "5"])
        .env("YDHT_CONFIG_DIR", config_dir.path())
        .output()
        .expect("run ydht bench");
    assert_eq!(output.status.code(), Some(3), "{}", String::from_utf8_lossy(&output.stderr));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--api-key"), "{stderr}");
}
