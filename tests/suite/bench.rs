//! `ydht bench` against a real `ydht serve all` cluster: the JSON figures add
//! up (every request counted, none failed), a mixed run reports gets and puts
//! apart, the run's keys are deleted unless `--keep`, and a run whose requests
//! mostly failed exits 4 saying why. No timing assertions.

use crate::common;

use std::process::Command;

use serde_json::Value;

/// Runs `ydht bench <args> --output json` and returns the parsed document.
fn bench(args: &[&str]) -> Value {
    let output = bench_output(args);
    assert!(output.status.success(), "ydht bench {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("bench prints one JSON document")
}

/// Runs `ydht bench <args> --output json`, whatever its exit code.
fn bench_output(args: &[&str]) -> std::process::Output {
    let config_dir = tempfile::tempdir().expect("temp config dir");
    Command::new(env!("CARGO_BIN_EXE_ydht"))
        .arg("bench")
        .args(args)
        .args(["--output", "json", "--warmup", "200ms"])
        .env_remove("YDHT_API_KEY")
        .env_remove("YDHT_GATEWAY_URL")
        .env_remove("YDHT_CLUSTER_SECRET")
        .env("YDHT_CONFIG_DIR", config_dir.path())
        .output()
        .expect("run ydht bench")
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
    assert!(puts["mb_per_sec"].as_f64().unwrap() > 0.0, "{puts}");
    assert!(puts.get("by_op").is_none(), "{puts}");
    // The run deleted its keys afterwards: none of them is listed.
    assert_eq!(puts["keys_deleted"], 1000, "{puts}");
    let prefix = puts["key_prefix"].as_str().unwrap();
    let listed: Value = client
        .get(format!("{}/v1/kv?prefix={prefix}", cluster.gateway))
        .header("x-api-key", &api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["keys"].as_array().map(Vec::len), Some(0), "{listed}");

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
    let (gets, puts) = (&strong_gets["by_op"]["get"], &strong_gets["by_op"]["put"]);
    assert_eq!(gets["requests"].as_u64().unwrap() + puts["requests"].as_u64().unwrap(), 200, "{strong_gets}");
    assert!(gets["ok"].as_u64().unwrap() > 0 && puts["ok"].as_u64().unwrap() > 0, "{strong_gets}");

    // Conditional writes: on one key they contend, and the 412s are answers, not a failed run.
    let cas = bench(&[
        "--gateway",
        &cluster.gateway,
        "--api-key",
        &api_key,
        "--requests",
        "200",
        "--clients",
        "4",
        "--op",
        "cas",
        "--keys",
        "1",
    ]);
    assert_eq!(cas["op"], "cas");
    assert_eq!(cas["requests"], 200, "{cas}");
    let refused = cas["errors"]["http_412"].as_u64().unwrap_or(0);
    assert_eq!(cas["ok"].as_u64().unwrap() + refused, 200, "only 200s and 412s: {cas}");
    assert!(cas["ok"].as_u64().unwrap() >= 1, "{cas}");
    // Uncontended (each client its own keys): every one succeeds.
    let uncontended = bench(&[
        "--gateway",
        &cluster.gateway,
        "--api-key",
        &api_key,
        "--requests",
        "100",
        "--clients",
        "4",
        "--op",
        "cas",
        "--keys",
        "40",
    ]);
    assert_sane(&uncontended, 100);

    // Batched puts: 20 requests of 10 keys each count as 200 operations.
    let batched = bench(&[
        "--gateway",
        &cluster.gateway,
        "--api-key",
        &api_key,
        "--requests",
        "20",
        "--clients",
        "4",
        "--batch",
        "10",
    ]);
    assert_sane(&batched, 200);
    assert_eq!(batched["batch"], 10, "{batched}");
    let refused = bench_output(&["--gateway", &cluster.gateway, "--api-key", &api_key, "--op", "get", "--batch", "10"]);
    assert_eq!(refused.status.code(), Some(2), "--batch takes puts only");

    // Watches: every write's event reaches every watcher once; the figures add up.
    let watched = bench(&[
        "--gateway",
        &cluster.gateway,
        "--api-key",
        &api_key,
        "--watchers",
        "3",
        "--rate",
        "100",
        "--duration",
        "1s",
        "--clients",
        "2",
    ]);
    let writes = watched["writes"].as_u64().unwrap();
    assert!(writes > 0, "{watched}");
    assert_eq!(watched["events_expected"], writes * 3, "{watched}");
    assert_eq!(watched["events_received"], writes * 3, "{watched}");
    assert_eq!((watched["events_lost"].as_u64(), watched["events_repeated"].as_u64()), (Some(0), Some(0)), "{watched}");
    let delay = &watched["delay_ms"];
    assert!(delay["p50"].as_f64().unwrap() <= delay["p99"].as_f64().unwrap(), "{watched}");
    let refused =
        bench_output(&["--gateway", &cluster.gateway, "--api-key", &api_key, "--watchers", "2", "--op", "get"]);
    assert_eq!(refused.status.code(), Some(2), "--watchers takes single puts only");

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
        "--keep",
    ]);
    assert_sane(&node, 200);
    assert!(node["keys_deleted"].is_null(), "{node}");
    assert_eq!(node["target"], "node");
    // The keys the get run created are really on the node, kept with --keep.
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

#[test]
fn a_run_that_is_mostly_rate_limited_exits_4_and_names_the_fix() {
    let cluster = common::start_cluster_with(&[("RATE_LIMIT_PER_MINUTE", "100"), ("RATE_LIMIT_BURST", "20")]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_, api_key) = runtime.block_on(common::tenant(&common::http(), &cluster.users, "limited"));
    let args = ["--gateway", &cluster.gateway, "--api-key", &api_key, "--requests", "400", "--keys", "10"];
    let output = bench_output(&args);
    assert_eq!(output.status.code(), Some(4), "{}", String::from_utf8_lossy(&output.stderr));
    let summary: Value = serde_json::from_slice(&output.stdout).expect("the figures are printed all the same");
    assert!(summary["errors"]["http_429"].as_u64().unwrap() > 200, "{summary}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.contains("requests failed") && last.contains("RATE_LIMIT_PER_MINUTE=0"), "{stderr}");
}
