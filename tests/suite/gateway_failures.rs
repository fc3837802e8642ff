//! Failure handling with every service as its own process: a storage node
//! killed under strong writes, and the replicator SIGKILLed with work queued.

use crate::common;

use std::time::Duration;

use common::{Separate, SeparateOptions, eventually, http, read_node, tenant};

const SECRET: &str = "failure-test-cluster-secret";

fn start_with_nodes(count: usize) -> Separate {
    Separate::start(SECRET, count, SeparateOptions::default())
}

fn start_separately() -> Separate {
    start_with_nodes(3)
}

/// What only these tests ask of the cluster.
trait GatewayView {
    async fn gateway_sees_node(&self, index: usize, healthy: bool) -> bool;
}

impl GatewayView for Separate {
    async fn gateway_sees_node(&self, index: usize, healthy: bool) -> bool {
        let view: serde_json::Value = http()
            .get(format!("{}/cluster", self.gateway.1))
            .header("x-cluster-secret", SECRET)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        view["nodes"][index]["healthy"] == healthy
    }
}

#[tokio::test]
async fn strong_writes_survive_a_dead_node_and_reach_it_when_it_returns() {
    let mut cluster = start_separately();
    let client = http();
    let (account, key) = tenant(&client, &cluster.users.1, "henry").await;
    let gateway = cluster.gateway.1.clone();
    let put = |name: String, value: String| {
        client
            .put(format!("{gateway}/v1/kv/{name}"))
            .header("X-API-Key", &key)
            .header("X-Consistency", "strong")
            .body(value)
            .send()
    };
    for i in 0..10 {
        assert_eq!(put(format!("before-{i}"), format!("b{i}")).await.unwrap().status(), 200);
    }

    // node-2 dies without warning.
    cluster.nodes[1].0.kill();
    let mut written_while_down = Vec::new();
    for i in 0..30 {
        let response = put(format!("during-{i}"), format!("d{i}")).await.unwrap();
        assert_eq!(response.status(), 200, "strong write {i} failed with node-2 down");
        let nodes = response.headers()["x-ydht-nodes"].to_str().unwrap().to_string();
        assert!(!nodes.contains(&cluster.nodes[1].1), "dead node reported as a participant: {nodes}");
        written_while_down.push(i);
    }
    assert!(eventually(Duration::from_secs(10), || cluster.gateway_sees_node(1, false)).await);

    // Every key stays readable, strong and eventual.
    for (name, value) in (0..10)
        .map(|i| (format!("before-{i}"), format!("b{i}")))
        .chain(written_while_down.iter().map(|i| (format!("during-{i}"), format!("d{i}"))))
    {
        for consistency in ["strong", "eventual"] {
            let response = client
                .get(format!("{gateway}/v1/kv/{name}"))
                .header("X-API-Key", &key)
                .header("X-Consistency", consistency)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{name} unreadable at {consistency}");
            assert_eq!(response.text().await.unwrap(), value);
        }
    }

    // node-2 comes back on its port with its own WAL; what it missed reaches it.
    cluster.restart_node(1);
    let node2 = cluster.nodes[1].1.clone();
    for i in &written_while_down {
        let storage_key = format!("{}/during-{i}", account.user_id);
        let arrived = eventually(Duration::from_secs(60), || async {
            let (status, body, _) = read_node(&client, &node2, SECRET, &storage_key).await;
            status == 200 && body == format!("d{i}").as_bytes()
        })
        .await;
        assert!(arrived, "during-{i} never reached node-2 after it restarted");
    }
    // Keys written before the crash survived in its WAL.
    let (status, body, _) = read_node(&client, &node2, SECRET, &format!("{}/before-0", account.user_id)).await;
    assert_eq!((status, body.as_slice()), (200, b"b0".as_slice()));
    assert!(eventually(Duration::from_secs(10), || cluster.gateway_sees_node(1, true)).await);
}

#[tokio::test]
async fn replicator_sigkill_with_queued_jobs_loses_none() {
    let mut cluster = start_separately();
    let client = http();
    let (account, key) = tenant(&client, &cluster.users.1, "iris").await;
    let gateway = cluster.gateway.1.clone();

    // node-3 is down, so the replicator has to keep every job for it.
    cluster.nodes[2].0.kill();
    assert!(eventually(Duration::from_secs(10), || cluster.gateway_sees_node(2, false)).await);

    let load = {
        let (client, gateway, key) = (client.clone(), gateway.clone(), key.clone());
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..60 {
                let response = client
                    .put(format!("{gateway}/v1/kv/load-{i}"))
                    .header("X-API-Key", &key)
                    .body(format!("v{i}"))
                    .send()
                    .await
                    .unwrap();
                if response.status() == 200 {
                    acknowledged.push(i);
                }
            }
            acknowledged
        })
    };
    // Kill the replicator while the load runs, once it has accepted some jobs.
    let replicator_url = cluster.replicator.1.clone();
    let accepted = eventually(Duration::from_secs(30), || async {
        let metrics: serde_json::Value = match client.get(format!("{replicator_url}/metrics")).send().await {
            Ok(response) => response.json().await.unwrap_or_default(),
            Err(_) => return false,
        };
        metrics["total_replications"].as_u64().unwrap_or(0) >= 20
    })
    .await;
    assert!(accepted, "the replicator never accepted 20 jobs");
    cluster.replicator.0.kill();
    let acknowledged = load.await.unwrap();
    assert_eq!(acknowledged.len(), 60, "eventual writes must not fail while the replicator is down");

    // The replicator restarts from its queue log; node-3 returns.
    cluster.restart_replicator();
    cluster.restart_node(2);
    let node3 = cluster.nodes[2].1.clone();
    let node_urls: Vec<String> = cluster.nodes.iter().map(|(_, url)| url.clone()).collect();
    for i in &acknowledged {
        let storage_key = format!("{}/load-{i}", account.user_id);
        let everywhere = eventually(Duration::from_secs(60), || async {
            for node in &node_urls {
                let (status, body, _) = read_node(&client, node, SECRET, &storage_key).await;
                if status != 200 || body != format!("v{i}").as_bytes() {
                    return false;
                }
            }
            true
        })
        .await;
        assert!(everywhere, "load-{i} did not reach every node (node-3 is {node3})");
    }
}

#[tokio::test]
async fn a_down_owner_is_replaced_by_the_next_node_and_gets_its_data_back() {
    let mut cluster = start_with_nodes(4);
    let client = http();
    let (account, key) = tenant(&client, &cluster.users.1, "jack").await;
    let gateway = cluster.gateway.1.clone();
    let ring = ydht::ring::Ring::new(cluster.infos(), 150);

    let node2 = cluster.nodes[1].1.clone();
    cluster.nodes[1].0.kill();
    assert!(eventually(Duration::from_secs(10), || cluster.gateway_sees_node(1, false)).await);

    // Strong writes of keys node-2 owns go to the next node of their preference list instead.
    let mut handed_over = Vec::new();
    for i in 0..40 {
        let storage_key = format!("{}/sloppy-{i}", account.user_id);
        let preference: Vec<String> =
            ring.preference_list(storage_key.as_bytes()).iter().map(|node| node.url.clone()).collect();
        if !preference[..3].contains(&node2) {
            continue;
        }
        let response = client
            .put(format!("{gateway}/v1/kv/sloppy-{i}"))
            .header("X-API-Key", &key)
            .header("X-Consistency", "strong")
            .body(format!("s{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let took_part = response.headers()["x-ydht-nodes"].to_str().unwrap().to_string();
        assert!(!took_part.contains(&node2), "{took_part}");
        // The substitute is the first node after the three owners.
        let substitute = &preference[3];
        let held = eventually(Duration::from_secs(10), || async {
            read_node(&client, substitute, SECRET, &storage_key).await.0 == 200
        })
        .await;
        assert!(held, "the substitute {substitute} does not hold sloppy-{i}");
        handed_over.push((i, storage_key));
    }
    assert!(!handed_over.is_empty(), "node-2 owns none of 40 keys");

    // node-2 returns: the replicator hands every one of them back.
    cluster.restart_node(1);
    for (i, storage_key) in &handed_over {
        let back = eventually(Duration::from_secs(60), || async {
            read_node(&client, &node2, SECRET, storage_key).await.1 == format!("s{i}").as_bytes()
        })
        .await;
        assert!(back, "sloppy-{i} was not handed back to node-2");
    }
}

/// `ydht ARGS` against a cluster, with no configuration from the environment or a home dir.
fn ydht(home: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ydht"))
        .args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home)
        .env_remove("YDHT_GATEWAY_URL")
        .env_remove("YDHT_USERS_URL")
        .env_remove("YDHT_API_KEY")
        .env_remove("YDHT_CLUSTER_SECRET")
        .env_remove("YDHT_OUTPUT")
        .output()
        .unwrap()
}

#[tokio::test]
async fn a_full_replication_queue_shows_in_health_status_and_the_writes_answer() {
    // Separate processes: this replicator does not follow the membership, so a job for an unknown
    // node stays queued (with `serve all` it would go to the key's owners instead).
    let options = SeparateOptions {
        replicator_env: vec![("YDHT_REPLICATOR_MAX_QUEUE", "1".into())],
        ..SeparateOptions::default()
    };
    let cluster = Separate::start(SECRET, 3, options);
    let (gateway, replicator_url, secret) = (cluster.gateway.1.clone(), cluster.replicator.1.clone(), SECRET);
    let client = http();
    let (account, key) = tenant(&client, &cluster.users.1, "fiona").await;
    let put = |name: &str| client.put(format!("{gateway}/v1/kv/{name}")).header("X-API-Key", &key).body("v").send();
    let answer: serde_json::Value = put("before").await.unwrap().json().await.unwrap();
    assert_eq!((answer["replicas"].as_u64(), answer.get("warning")), (Some(2), None), "{answer}");

    // One job for a node that never answers fills the queue of one.
    let dead = format!(
        "http://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    );
    // (The first write's job may still be in the queue: post until the stuck job is taken.)
    let stuck = || {
        let job = (vec![dead.clone()], ydht::wal::Record::put("0/stuck", 1, &b"v"[..], "text/plain"));
        common::post_jobs_request(&client, &replicator_url, secret, &[job], None).send()
    };
    assert!(eventually(Duration::from_secs(20), || async { stuck().await.unwrap().status() == 202 }).await);
    let health: serde_json::Value =
        client.get(format!("{replicator_url}/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!((health["status"].as_str(), health["capacity"].as_u64()), (Some("degraded"), Some(1)), "{health}");

    // The write is stored on its primary, but its answer claims no copy the replicator did not take.
    let response = put("during").await.unwrap();
    assert_eq!(response.status(), 200);
    let warning_header = response.headers().get("x-ydht-warning").map(|value| value.to_str().unwrap().to_string());
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["replicas"], 0, "{answer}");
    let warning = answer["warning"].as_str().unwrap();
    assert!(warning.starts_with("0 of 2 replica copies queued: ") && warning.contains("full"), "{warning}");
    assert_eq!(warning_header.as_deref(), Some(warning));
    let (status, _, _) =
        read_node(&client, answer["primary_node"].as_str().unwrap(), secret, &format!("{}/during", account.user_id))
            .await;
    assert_eq!(status, 200);

    // `ydht kv put` says so; `ydht status` fails and names the full queue.
    let home = tempfile::tempdir().unwrap();
    let stored = ydht(home.path(), &["kv", "put", "cli", "v", "--gateway", &gateway, "--api-key", &key]);
    let stdout = String::from_utf8_lossy(&stored.stdout);
    assert!(stdout.contains("0 of 2 replica copies queued") && !stdout.contains("+ 2 replicas"), "{stdout}");
    let status = ydht(home.path(), &["status", "--gateway", &gateway, "--cluster-secret", secret]);
    let (stdout, stderr) = (String::from_utf8_lossy(&status.stdout), String::from_utf8_lossy(&status.stderr));
    assert!(!status.status.success(), "status exited 0:\n{stdout}\n{stderr}");
    let row = stdout.lines().find(|line| line.contains("replicator")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(row.contains("DEGRADED") && stdout.contains("FULL"), "{stdout}");
    assert!(stderr.contains("replicator degraded"), "{stderr}");
}

#[tokio::test]
async fn an_over_long_content_type_is_refused_with_400_and_nothing_is_stored() {
    let cluster = common::start_cluster();
    let client = http();
    let (_, key) = tenant(&client, &cluster.users, "gus").await;
    let url = format!("{}/v1/kv/typed", cluster.gateway);
    let long = format!("text/{}", "x".repeat(297));
    assert_eq!(long.len(), 302);
    let response =
        client.put(&url).header("X-API-Key", &key).header("content-type", &long).body("v").send().await.unwrap();
    assert_eq!(response.status(), 400);
    let error: serde_json::Value = response.json().await.unwrap();
    assert!(error["error"].as_str().unwrap().contains("302 bytes"), "{error}");
    let read = client.get(&url).header("X-API-Key", &key).send().await.unwrap();
    assert_eq!(read.status(), 404, "nothing was stored");
    let longest = format!("text/{}", "x".repeat(250));
    let response =
        client.put(&url).header("X-API-Key", &key).header("content-type", &longest).body("v").send().await.unwrap();
    assert_eq!(response.status(), 200, "the nodes' own limit is accepted");
    let read = client.get(&url).header("X-API-Key", &key).send().await.unwrap();
    assert_eq!(read.headers()["content-type"], longest.as_str());
}
