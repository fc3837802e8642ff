//! The original README's flows against a real `ydht serve all` on ephemeral
//! ports: signup → login → API key → put (eventual, strong, TTL) → get →
//! delete → metrics, plus tenancy, scopes, revocation, listing and bad input.

use crate::common;

use std::time::Duration;

use common::{Cluster, create_key, eventually, http, read_node, start_cluster, tenant};
use serde_json::Value;

fn kv(cluster: &Cluster, key: &str) -> String {
    format!("{}/v1/kv/{key}", cluster.gateway)
}

#[tokio::test]
async fn readme_quick_start_flow() {
    let cluster = start_cluster();
    let client = http();
    let (account, api_key) = tenant(&client, &cluster.users, "testuser").await;
    assert!(api_key.starts_with("ydht_"));

    // Store a value (eventual consistency - default)
    let response = client
        .put(kv(&cluster, "user:123"))
        .header("X-API-Key", &api_key)
        .header("Content-Type", "application/json")
        .body(r#"{"name":"John Doe","email":"john@example.com"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-ratelimit-limit"));
    assert!(response.headers().contains_key("x-ratelimit-remaining"));
    let nodes_header = response.headers()["x-ydht-nodes"].to_str().unwrap().to_string();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["success"], true);
    assert_eq!(body["key"], "user:123");
    assert_eq!(body["replicas"], 2);
    let primary = body["primary_node"].as_str().unwrap();
    assert!(cluster.nodes.iter().any(|node| node == primary), "{primary} is not a node of {:?}", cluster.nodes);
    assert_eq!(nodes_header, primary);

    // Store with strong consistency: a majority (2 of 3) took part.
    let response = client
        .put(kv(&cluster, "config:app"))
        .header("X-API-Key", &api_key)
        .header("X-Consistency", "strong")
        .header("Content-Type", "application/json")
        .body(r#"{"theme":"dark","language":"en"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let took_part = response.headers()["x-ydht-nodes"].to_str().unwrap().split(',').count();
    assert!(took_part >= 2, "strong write acknowledged by {took_part} nodes");

    // Store with TTL (expires in 1 hour)
    let response = client
        .put(format!("{}?ttl=1h", kv(&cluster, "session:abc123")))
        .header("X-API-Key", &api_key)
        .header("Content-Type", "application/json")
        .body(r#"{"user_id":123,"expires":"2024-12-31"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Retrieve values: the raw bytes with the stored content type.
    let response = client.get(kv(&cluster, "user:123")).header("X-API-Key", &api_key).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.text().await.unwrap(), r#"{"name":"John Doe","email":"john@example.com"}"#);
    let response = client
        .get(kv(&cluster, "config:app"))
        .header("X-API-Key", &api_key)
        .header("X-Consistency", "strong")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), r#"{"theme":"dark","language":"en"}"#);

    // The TTL key lists with an expiry about an hour away.
    let response = client.get(format!("{}/v1/kv", cluster.gateway)).header("X-API-Key", &api_key).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let listing: Value = response.json().await.unwrap();
    let keys: Vec<&str> = listing["keys"].as_array().unwrap().iter().map(|k| k["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["config:app", "session:abc123", "user:123"]);
    let session = &listing["keys"][1];
    let expires: chrono::DateTime<chrono::Utc> = session["expires_at"].as_str().unwrap().parse().unwrap();
    let left = expires - chrono::Utc::now();
    assert!(left > chrono::Duration::minutes(55) && left <= chrono::Duration::minutes(60), "{left}");
    assert!(listing["keys"][0]["expires_at"].is_null());
    assert_eq!(listing["next_cursor"], Value::Null);

    // Eventual writes reach every replica (through the replicator).
    let storage_key = format!("{}/user:123", account.user_id);
    let secret = cluster.secret();
    let replicated = eventually(Duration::from_secs(20), || async {
        let mut on = 0;
        for node in &cluster.nodes {
            if read_node(&client, node, &secret, &storage_key).await.0 == 200 {
                on += 1;
            }
        }
        on == 3
    })
    .await;
    assert!(replicated, "user:123 did not reach all three nodes");

    // Delete a value; then it is gone, and deleting again is a 404.
    let response = client.delete(kv(&cluster, "user:123")).header("X-API-Key", &api_key).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!((body["success"].as_bool(), body["key"].as_str()), (Some(true), Some("user:123")));
    let response = client.get(kv(&cluster, "user:123")).header("X-API-Key", &api_key).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "Key not found");
    let response = client.delete(kv(&cluster, "user:123")).header("X-API-Key", &api_key).send().await.unwrap();
    assert_eq!(response.status(), 404);

    // Metrics of every service answer with their documented fields.
    let metrics: Value = client.get(format!("{}/metrics", cluster.gateway)).send().await.unwrap().json().await.unwrap();
    assert!(metrics["requests_total"].as_u64().unwrap() >= 8, "{metrics}");
    assert!(metrics["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    // Tenants' ids and traffic only for holders of the cluster secret.
    assert!(metrics.get("users").is_none(), "the public /metrics lists tenants: {metrics}");
    let insider = client.get(format!("{}/metrics", cluster.gateway)).header("x-cluster-secret", cluster.secret());
    let metrics: Value = insider.send().await.unwrap().json().await.unwrap();
    assert_eq!(metrics["users"][0]["user_id"], account.user_id);
    for node in &cluster.nodes {
        let node_metrics: Value = client.get(format!("{node}/metrics")).send().await.unwrap().json().await.unwrap();
        assert!(node_metrics["key_count"].is_u64() && node_metrics["wal_size"].is_u64(), "{node_metrics}");
    }
    let replicator: Value =
        client.get(format!("{}/metrics", cluster.replicator)).send().await.unwrap().json().await.unwrap();
    assert!(replicator["total_replications"].as_u64().unwrap() >= 1, "{replicator}");
    let health: Value = client.get(format!("{}/health", cluster.gateway)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health, serde_json::json!({"status": "healthy", "service": "gateway"}));

    // The operator view needs the cluster secret.
    let response = client.get(format!("{}/cluster", cluster.gateway)).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let view: Value = client
        .get(format!("{}/cluster", cluster.gateway))
        .header("x-cluster-secret", &secret)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["replicas"], 3);
    assert_eq!(view["nodes"].as_array().unwrap().len(), 3);
    let share: f64 = view["nodes"].as_array().unwrap().iter().map(|n| n["share"].as_f64().unwrap()).sum();
    assert!((share - 1.0).abs() < 1e-6);
    assert!(view["nodes"].as_array().unwrap().iter().all(|n| n["healthy"] == true));

    // Usage reaches the users service in batches.
    let reported = eventually(Duration::from_secs(20), || async {
        let usage: Value = client
            .get(format!("{}/usage?days=1", cluster.users))
            .bearer_auth(&account.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or(Value::Null);
        // Three PUTs stored 46 + 32 + 38 value bytes; reads, deletes and listings send none.
        usage["total"]["bytes_in"] == 116 && usage["total"]["requests"].as_u64().unwrap_or(0) >= 8
    })
    .await;
    assert!(reported, "usage (116 bytes in over at least 8 requests) never reached the users service");
}

#[tokio::test]
async fn tenants_scopes_and_revocation() {
    let cluster = start_cluster();
    let client = http();
    let (alice, alice_key) = tenant(&client, &cluster.users, "alice").await;
    let (_bob, bob_key) = tenant(&client, &cluster.users, "bob").await;

    // Two users writing the same key never see or overwrite each other's value.
    for (key, value) in [(&alice_key, "alice's"), (&bob_key, "bob's")] {
        let response = client.put(kv(&cluster, "user:123")).header("X-API-Key", key).body(value).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    for (key, value) in [(&alice_key, "alice's"), (&bob_key, "bob's")] {
        let response = client.get(kv(&cluster, "user:123")).header("X-API-Key", key).send().await.unwrap();
        assert_eq!(response.text().await.unwrap(), value);
    }
    let response =
        client.put(kv(&cluster, "only-alice")).header("X-API-Key", &alice_key).body("x").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let response = client.get(kv(&cluster, "only-alice")).header("X-API-Key", &alice_key).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "application/octet-stream", "the default content type");
    let response = client.get(kv(&cluster, "only-alice")).header("X-API-Key", &bob_key).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let response = client.delete(kv(&cluster, "only-alice")).header("X-API-Key", &bob_key).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let listing: Value = client
        .get(format!("{}/v1/kv", cluster.gateway))
        .header("X-API-Key", &bob_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listing["keys"].as_array().unwrap().len(), 1, "{listing}");
    assert_eq!(listing["keys"][0]["key"], "user:123");

    // Missing and unknown keys are 401.
    let response = client.get(kv(&cluster, "user:123")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("x-ratelimit-limit"));
    let response = client.get(kv(&cluster, "user:123")).header("X-API-Key", "ydht_nope").send().await.unwrap();
    assert_eq!(response.status(), 401);

    // A read-only key can read and list but not write or delete.
    let (_, read_only) = create_key(&client, &cluster.users, &alice, &["read"]).await;
    let response = client.get(kv(&cluster, "user:123")).header("X-API-Key", &read_only).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "alice's");
    let response =
        client.put(kv(&cluster, "user:123")).header("X-API-Key", &read_only).body("no").send().await.unwrap();
    assert_eq!(response.status(), 403);
    let response = client.delete(kv(&cluster, "user:123")).header("X-API-Key", &read_only).send().await.unwrap();
    assert_eq!(response.status(), 403);
    let response = client.get(kv(&cluster, "user:123")).header("X-API-Key", &alice_key).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "alice's", "a refused write changed the value");

    // A revoked key stops working within 5 s.
    let (key_id, doomed) = create_key(&client, &cluster.users, &alice, &["read", "write"]).await;
    let response = client.get(kv(&cluster, "user:123")).header("X-API-Key", &doomed).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let response =
        client.delete(format!("{}/apikeys/{key_id}", cluster.users)).bearer_auth(&alice.token).send().await.unwrap();
    assert_eq!(response.status(), 204);
    // The gateway trusts a validated key for at most 3 s; poll up to the promised 5 s.
    let refused = eventually(Duration::from_secs(5), || async {
        client.get(kv(&cluster, "user:123")).header("X-API-Key", &doomed).send().await.unwrap().status() == 401
    })
    .await;
    assert!(refused, "revoked key still works 5 s after revocation");
}

#[tokio::test]
async fn bad_input_is_refused_and_nothing_is_written() {
    let cluster = start_cluster_with_small_values();
    let client = http();
    let (_, key) = tenant(&client, &cluster.users, "carol").await;
    let put = |url: String| client.put(url).header("X-API-Key", &key);

    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (put(kv(&cluster, "bad-consistency")).header("X-Consistency", "quorum").body("v"), 400, "bad-consistency"),
        (put(format!("{}?ttl=soon", kv(&cluster, "bad-ttl"))).body("v"), 400, "bad-ttl"),
        (put(format!("{}?ttl=0s", kv(&cluster, "zero-ttl"))).body("v"), 400, "zero-ttl"),
        (put(format!("{}?ttl=-1h", kv(&cluster, "negative-ttl"))).body("v"), 400, "negative-ttl"),
        (put(format!("{}?ttl=", kv(&cluster, "empty-ttl"))).body("v"), 400, "empty-ttl"),
        (put(kv(&cluster, "too-big")).body(vec![b'x'; 1025]), 413, "too-big"),
        (put(kv(&cluster, "much-too-big")).body(vec![b'x'; 1_500_000]), 413, "much-too-big"),
        (put(kv(&cluster, "ctl%01key")).body("v"), 400, "ctl\u{1}key"),
        (put(kv(&cluster, "bad-utf8-%FF")).body("v"), 400, ""),
        (put(kv(&cluster, &"k".repeat(1025))).body("v"), 400, ""),
        (put(format!("{}/v1/kv/", cluster.gateway)).body("v"), 400, ""),
    ];
    for (request, status, _) in cases {
        let response = request.send().await.unwrap();
        let code = response.status().as_u16();
        let body: Value = response.json().await.expect("errors are JSON");
        assert_eq!(code, status, "{body}");
        assert!(body["error"].as_str().is_some_and(|message| !message.is_empty()), "{body}");
    }
    // A streamed body without Content-Length over the limit is refused too.
    let chunks = futures_util::stream::iter((0..4).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 512])));
    let response = put(kv(&cluster, "streamed")).body(reqwest::Body::wrap_stream(chunks)).send().await.unwrap();
    assert_eq!(response.status(), 413);
    // Exactly the maximum is fine, for values and keys.
    let response = put(kv(&cluster, "just-fits")).body(vec![b'x'; 1024]).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let longest = "k".repeat(1024);
    let response = put(kv(&cluster, &longest)).body("v").send().await.unwrap();
    assert_eq!(response.status(), 200);

    for (url, status) in [
        (format!("{}/v1/kv?limit=0", cluster.gateway), 400),
        (format!("{}/v1/kv?limit=many", cluster.gateway), 400),
        (format!("{}/v1/kv?limit=1001", cluster.gateway), 400),
        (format!("{}?x=1", kv(&cluster, "just-fits")), 200),
    ] {
        let response = client.get(&url).header("X-API-Key", &key).send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{url}");
    }
    let response = client
        .get(kv(&cluster, "just-fits"))
        .header("X-API-Key", &key)
        .header("X-Consistency", "all")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // Nothing but the one good write exists.
    let listing: Value = client
        .get(format!("{}/v1/kv", cluster.gateway))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys: Vec<&str> = listing["keys"].as_array().unwrap().iter().map(|k| k["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["just-fits", longest.as_str()]);
    let metrics: Value = client.get(format!("{}/metrics", cluster.gateway)).send().await.unwrap().json().await.unwrap();
    assert!(metrics["requests_total"].as_u64().unwrap() > 10);
}

fn start_cluster_with_small_values() -> Cluster {
    common::start_cluster_with(&[("YDHT_MAX_VALUE_BYTES", "1024")])
}

#[tokio::test]
async fn listing_pages_with_prefix_and_cursor() {
    let cluster = start_cluster();
    let client = http();
    let (_, key) = tenant(&client, &cluster.users, "dave").await;
    for i in 0..25 {
        let response = client
            .put(kv(&cluster, &format!("item/{i:02}")))
            .header("X-API-Key", &key)
            .body(format!("value-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let response = client.put(kv(&cluster, "other")).header("X-API-Key", &key).body("o").send().await.unwrap();
    assert_eq!(response.status(), 200);
    // Overwrite one and delete another: the listing shows the newest state.
    let response =
        client.put(kv(&cluster, "item/03")).header("X-API-Key", &key).body("longer value").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let response = client.delete(kv(&cluster, "item/04")).header("X-API-Key", &key).send().await.unwrap();
    assert_eq!(response.status(), 200);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..20 {
        let mut url = reqwest::Url::parse(&format!("{}/v1/kv", cluster.gateway)).unwrap();
        url.query_pairs_mut().append_pair("prefix", "item/").append_pair("limit", "10");
        if let Some(cursor) = &cursor {
            url.query_pairs_mut().append_pair("cursor", cursor);
        }
        let page: Value = client.get(url).header("X-API-Key", &key).send().await.unwrap().json().await.unwrap();
        for entry in page["keys"].as_array().unwrap() {
            seen.push((entry["key"].as_str().unwrap().to_string(), entry["size"].as_u64().unwrap()));
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let expected: Vec<(String, u64)> = (0..25)
        .filter(|i| *i != 4)
        .map(|i| (format!("item/{i:02}"), if i == 3 { 12 } else { format!("value-{i}").len() as u64 }))
        .collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn strong_write_then_strong_read_from_another_gateway() {
    let cluster = start_cluster();
    let client = http();
    let (_, key) = tenant(&client, &cluster.users, "erin").await;
    // A second gateway over the same nodes, as a separate process.
    let secret = cluster.secret();
    let dir = cluster.data_dir.path().to_str().unwrap().to_string();
    let nodes =
        cluster.nodes.iter().enumerate().map(|(i, url)| format!("node-{}={url}", i + 1)).collect::<Vec<_>>().join(",");
    let second = common::Service::spawn(
        &["serve", "gateway"],
        &[
            ("YDHT_DATA_DIR", &dir),
            ("GATEWAY_PORT", "0"),
            ("YDHT_NODES", &nodes),
            ("YDHT_USERS_URL", &cluster.users),
            ("YDHT_REPLICATOR_URL", &cluster.replicator),
            ("YDHT_CLUSTER_SECRET", &secret),
            ("RATE_LIMIT_PER_MINUTE", "0"),
        ],
        &["gateway"],
    );
    let other = second.url("gateway");
    for i in 0..20 {
        let value = format!("strong-{i}");
        let response = client
            .put(kv(&cluster, &format!("s{i}")))
            .header("X-API-Key", &key)
            .header("X-Consistency", "strong")
            .body(value.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let response = client
            .get(format!("{other}/v1/kv/s{i}"))
            .header("X-API-Key", &key)
            .header("X-Consistency", "strong")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), value);
    }
}

#[tokio::test]
async fn serve_all_stops_cleanly_and_restarts_with_its_data() {
    let mut cluster = start_cluster();
    let client = http();
    let account = common::signup_and_login(&client, &cluster.users, "judy").await;
    let (_, key) = create_key(&client, &cluster.users, &account, &["read", "write"]).await;
    let response = client
        .put(kv(&cluster, "kept"))
        .header("X-API-Key", &key)
        .header("X-Consistency", "strong")
        .body("still here")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // SIGTERM: every service drains and the process exits 0.
    let status = cluster.process.terminate().expect("serve all did not stop within 30 s");
    assert!(status.success(), "serve all exited with {status}");
    assert!(client.get(format!("{}/health", cluster.gateway)).send().await.is_err(), "gateway still answers");

    // Same data dir: the secrets, the account, the key and the value are all still there.
    let Cluster { data_dir, .. } = cluster;
    let cluster = common::start_cluster_in(data_dir, &[]);
    let response = client.get(kv(&cluster, "kept")).header("X-API-Key", &key).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "still here");
}

#[tokio::test]
async fn strong_read_returns_the_newest_version_and_repairs_stale_replicas() {
    let cluster = start_cluster();
    let client = http();
    let (account, key) = tenant(&client, &cluster.users, "kim").await;
    let secret = cluster.secret();
    let response =
        client.put(kv(&cluster, "rr")).header("X-API-Key", &key).header("X-Consistency", "strong").body("old");
    assert_eq!(response.send().await.unwrap().status(), 200);

    // Find the key's owners as the gateway places it.
    let storage_key = format!("{}/rr", account.user_id);
    let nodes: Vec<ydht::ring::NodeInfo> = cluster
        .nodes
        .iter()
        .enumerate()
        .map(|(i, url)| ydht::ring::NodeInfo { id: format!("node-{}", i + 1), url: url.clone() })
        .collect();
    let ring = ydht::ring::Ring::new(nodes, 150);
    let owners: Vec<String> = ring.owners(storage_key.as_bytes(), 3).iter().map(|node| node.url.clone()).collect();
    let (primary, second) = (&owners[0], &owners[1]);
    assert!(
        eventually(Duration::from_secs(20), || async {
            // The strong write's majority may not include the primary; wait for both copies.
            read_node(&client, second, &secret, &storage_key).await.0 == 200
                && read_node(&client, primary, &secret, &storage_key).await.0 == 200
        })
        .await
    );
    let (_, _, old_version) = read_node(&client, primary, &secret, &storage_key).await;
    let newer = old_version.expect("the primary holds a version") + 1;

    // A newer version lands on the primary only (as if the other copies were still in flight).
    let mut url = reqwest::Url::parse(primary).unwrap();
    url.path_segments_mut().unwrap().extend(["store", &storage_key]);
    let response = client
        .put(url)
        .header("x-cluster-secret", &secret)
        .header("x-version", newer.to_string())
        .header("content-type", "text/plain")
        .body("new")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // A strong read asks a majority (primary + second), answers the newest, and repairs the second
    // before it answers: by the time the answer arrives the newest version is on a majority.
    let response = client
        .get(kv(&cluster, "rr"))
        .header("X-API-Key", &key)
        .header("X-Consistency", "strong")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/plain");
    assert_eq!(response.text().await.unwrap(), "new");
    assert_eq!(
        read_node(&client, second, &secret, &storage_key).await,
        (200, b"new".to_vec(), Some(newer)),
        "the stale replica was not repaired before the strong read answered"
    );
    let metrics: Value = client.get(format!("{}/metrics", cluster.gateway)).send().await.unwrap().json().await.unwrap();
    assert!(metrics["read_repairs"].as_u64().unwrap() >= 1, "{metrics}");

    // A newer tombstone on the primary wins over the values elsewhere: 404.
    let mut url = reqwest::Url::parse(primary).unwrap();
    url.path_segments_mut().unwrap().extend(["store", &storage_key]);
    let response = client
        .delete(url)
        .header("x-cluster-secret", &secret)
        .header("x-version", (newer + 1).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = client
        .get(kv(&cluster, "rr"))
        .header("X-API-Key", &key)
        .header("X-Consistency", "strong")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}
