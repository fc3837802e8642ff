//! The real node binary's internal API: bad input gets a clear 4xx JSON error
//! and changes nothing; `/batch`, listing, health and metrics work as documented;
//! the gateway's batched writes and reads answer each caller, and its reads fall back
//! to one GET per key on a node without `POST /read`.

use crate::node_process;

use node_process::{NodeProcess, SECRET, metrics, now_millis, store_url};
use reqwest::StatusCode;
use ydht::wal::Record;
use ydht::wire::{batch, read};

/// Sends a request and returns its status and JSON error message.
async fn refused(request: reqwest::RequestBuilder) -> (StatusCode, String) {
    let response = request.send().await.unwrap();
    let status = response.status();
    let body: serde_json::Value = response.json().await.expect("errors are JSON");
    (status, body["error"].as_str().expect("an error message").to_string())
}

#[tokio::test]
async fn bad_input_is_refused_with_a_clear_4xx_and_nothing_is_written() {
    let data = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(data.path(), &[], &[("YDHT_MAX_VALUE_BYTES", "1024")]);
    let client = reqwest::Client::new();
    let url = store_url(&node.url, "victim");
    let put = || client.put(url.clone()).header("x-version", "7");

    let (status, message) = refused(put().body("v")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(message.contains("x-cluster-secret"), "{message}");

    let (status, message) = refused(put().header("x-cluster-secret", "wrong").body("v")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(message.contains("wrong cluster secret"), "{message}");

    let authorized = || put().header("x-cluster-secret", SECRET);
    let (status, message) = refused(authorized().body(vec![b'x'; 4096])).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(message.contains("maximum is 1024"), "{message}");

    // Without a content-length (chunked), the limit still holds.
    let chunks = futures_util::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 512])));
    let (status, _) = refused(authorized().body(reqwest::Body::wrap_stream(chunks))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    for bad in ["", "abc", "-1", "1.5", "18446744073709551616"] {
        let request = client.put(url.clone()).header("x-cluster-secret", SECRET).header("x-version", bad).body("v");
        let (status, message) = refused(request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "x-version {bad:?}");
        assert!(message.contains("x-version"), "{message}");
    }
    let (status, message) = refused(client.put(url.clone()).header("x-cluster-secret", SECRET).body("v")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.contains("missing x-version"), "{message}");

    let (status, message) = refused(authorized().header("x-expires-at", "soon").body("v")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.contains("x-expires-at"), "{message}");

    let (status, _) = refused(client.delete(url.clone()).header("x-cluster-secret", SECRET)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let long_key = store_url(&node.url, &"k".repeat(3000));
    let request = client.put(long_key).header("x-cluster-secret", SECRET).header("x-version", "1").body("v");
    assert_eq!(refused(request).await.0, StatusCode::BAD_REQUEST);

    let batch_url = node.at("/batch");
    let (status, message) =
        refused(client.post(&batch_url).header("x-cluster-secret", SECRET).body("{\"not\": \"a batch\"}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.contains("not a ydht batch"), "{message}");
    let oversized = batch::encode(&[Record::put("victim", 9, vec![0u8; 2048], "x")]).unwrap();
    let request = client.post(&batch_url).header("x-cluster-secret", SECRET).body(oversized);
    assert_eq!(refused(request).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    let mut truncated = batch::encode(&[Record::put("victim", 9, &b"v"[..], "x"), Record::delete("other", 9)]).unwrap();
    truncated.pop();
    let request = client.post(&batch_url).header("x-cluster-secret", SECRET).body(truncated);
    assert_eq!(refused(request).await.0, StatusCode::BAD_REQUEST);
    let request = client.post(&batch_url).body(batch::encode(&[Record::delete("victim", 9)]).unwrap());
    assert_eq!(refused(request).await.0, StatusCode::UNAUTHORIZED);

    let read_url = node.at("/read");
    let (status, message) =
        refused(client.post(&read_url).header("x-cluster-secret", SECRET).body("{\"keys\": [\"victim\"]}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.contains("not a ydht read request"), "{message}");
    let control = read::encode_request(["victim", "bad\u{7}key"].into_iter()).unwrap();
    let (status, message) = refused(client.post(&read_url).header("x-cluster-secret", SECRET).body(control)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.contains("key 1: the key contains control characters"), "{message}");
    let mut truncated = read::encode_request(["victim"].into_iter()).unwrap();
    truncated.pop();
    let request = client.post(&read_url).header("x-cluster-secret", SECRET).body(truncated);
    assert_eq!(refused(request).await.0, StatusCode::BAD_REQUEST);
    let request = client.post(&read_url).body(read::encode_request(["victim"].into_iter()).unwrap());
    assert_eq!(refused(request).await.0, StatusCode::UNAUTHORIZED);

    let request = client.get(node.at("/keys?limit=0")).header("x-cluster-secret", SECRET);
    assert_eq!(refused(request).await.0, StatusCode::BAD_REQUEST);
    let request = client.get(node.at("/keys?limit=many")).header("x-cluster-secret", SECRET);
    assert_eq!(refused(request).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(refused(client.get(node.at("/keys"))).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(refused(client.get(url.clone())).await.0, StatusCode::UNAUTHORIZED);

    // Nothing was written.
    let (status, message) = refused(client.get(url.clone()).header("x-cluster-secret", SECRET)).await;
    assert_eq!((status, message.as_str()), (StatusCode::NOT_FOUND, "Key not found"));
    let metrics = metrics(&client, &node).await;
    assert_eq!((metrics["key_count"].as_u64(), metrics["wal_records"].as_u64()), (Some(0), Some(0)), "{metrics}");
}

#[tokio::test]
async fn batches_listing_health_and_metrics() {
    let data = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(data.path(), &[], &[]);
    let client = reqwest::Client::new();
    let version = ydht::hlc::from_millis(now_millis());
    let expires_at = now_millis() + 3_600_000;
    let records = vec![
        Record::put("u1/a", version, &b"alpha"[..], "text/plain").with_expiry(Some(expires_at)),
        Record::put("u1/b", version, &b"beta"[..], "text/plain"),
        Record::put("u1/c/with/slashes", version, vec![0u8, 1, 2], "application/octet-stream"),
        Record::put("u2/a", version, &b"other tenant"[..], "text/plain"),
        Record::delete("u1/b", version + 1),
        Record::put("u1/a", version - 1, &b"stale"[..], "text/plain"),
    ];
    let response = client
        .post(node.at("/batch"))
        .header("x-cluster-secret", SECRET)
        .header("content-type", batch::BATCH_CONTENT_TYPE)
        .body(batch::encode(&records).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: ydht::proto::NodeBatchResponse = response.json().await.unwrap();
    let applied: Vec<_> = answer.results.iter().map(|result| result.applied).collect();
    assert_eq!(applied, [true, true, true, true, true, false]);
    assert_eq!(answer.results[5].version, version);

    let response = client.get(store_url(&node.url, "u1/a")).header("x-cluster-secret", SECRET).send().await.unwrap();
    assert_eq!(response.headers()["x-expires-at"], expires_at.to_string().as_str());
    assert_eq!(response.headers()["content-type"], "text/plain");
    assert_eq!(&response.bytes().await.unwrap()[..], b"alpha");
    let response = client.get(store_url(&node.url, "u1/b")).header("x-cluster-secret", SECRET).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.headers()["x-tombstone"], "true");
    assert_eq!(response.headers()["x-version"], (version + 1).to_string().as_str());

    // A stale single write is ignored and says so.
    let response = client
        .put(store_url(&node.url, "u1/a"))
        .header("x-cluster-secret", SECRET)
        .header("x-version", (version - 5).to_string())
        .body("older")
        .send()
        .await
        .unwrap();
    let answer: ydht::proto::StoreWriteResponse = response.json().await.unwrap();
    assert_eq!(answer, ydht::proto::StoreWriteResponse { applied: false, version });

    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut request = client.get(node.at("/keys")).header("x-cluster-secret", SECRET);
        request = request.query(&[("prefix", "u1/"), ("limit", "1")]);
        if let Some(cursor) = &cursor {
            request = request.query(&[("cursor", cursor)]);
        }
        let page: ydht::proto::NodeKeyPage = request.send().await.unwrap().json().await.unwrap();
        listed.extend(page.keys.iter().map(|entry| (entry.key.clone(), entry.size)));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(listed, [("u1/a".to_string(), 5), ("u1/c/with/slashes".to_string(), 3)]);

    let health: serde_json::Value = client.get(node.at("/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health, serde_json::json!({"status": "healthy", "node_id": "node-t", "follows_membership": false}));
    let metrics = metrics(&client, &node).await;
    assert_eq!(metrics["node_id"], "node-t");
    assert_eq!(metrics["key_count"], 3);
    assert_eq!(metrics["tombstones"], 1);
    assert_eq!(metrics["wal_syncs"], 1, "one batch, one sync: {metrics}");
    assert!(metrics["wal_size"].as_u64().unwrap() > 0);
    assert!(metrics["timestamp"].as_u64().unwrap() >= now_millis() / 1000 - 5);
    assert!(metrics["disk_total_bytes"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn a_second_node_on_the_same_data_refuses_to_start() {
    let data = tempfile::tempdir().unwrap();
    let _node = NodeProcess::start(data.path(), &[], &[]);
    let (status, stderr) = NodeProcess::start_failing(data.path(), &[]);
    assert!(!status.success());
    assert!(stderr.contains("already using"), "{stderr}");
}

/// A port free right now on 127.0.0.1 (for a node that must be listed by URL before it starts).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn nodes_find_themselves_in_a_list_of_bare_urls_and_repair_each_other() {
    let (first_port, second_port) = (free_port(), free_port());
    // The gateway's form, set once for every process; `localhost` and 127.0.0.1 are the same host.
    let nodes = format!("http://127.0.0.1:{first_port},http://localhost:{second_port}");
    let env = [("YDHT_NODES", nodes.as_str()), ("YDHT_ANTI_ENTROPY_INTERVAL", "200ms")];
    let (first_data, second_data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = NodeProcess::start(first_data.path(), &["--port", &first_port.to_string()], &env);
    let second = NodeProcess::start(second_data.path(), &["--port", &second_port.to_string()], &env);
    let client = reqwest::Client::new();
    assert_eq!(metrics(&client, &first).await["anti_entropy_enabled"], true);

    let put = client
        .put(store_url(&first.url, "bare-url-key"))
        .header("x-cluster-secret", SECRET)
        .header("x-version", "5")
        .body("value")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let answer =
            client.get(store_url(&second.url, "bare-url-key")).header("x-cluster-secret", SECRET).send().await.unwrap();
        if answer.status() == StatusCode::OK {
            assert_eq!(answer.text().await.unwrap(), "value");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "anti-entropy never copied the key; {}", second.stderr());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // A list that names neither this node's id nor its address is still refused.
    let other = tempfile::tempdir().unwrap();
    let (status, stderr) = NodeProcess::start_failing(
        other.path(),
        &["--port", &free_port().to_string(), "--peers", &format!("http://127.0.0.1:{first_port}")],
    );
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("does not list this node"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_batched_writes_answer_each_writer_and_a_bad_one_fails_alone() {
    use ydht::config::Secret;
    use ydht::daemon::gateway::nodes::{NodeClient, http_client};
    use ydht::daemon::gateway::quorum::{Mutation, MutationKind};
    use ydht::wire::read::{Found, Lookup};

    let data = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(data.path(), &[], &[]);
    let nodes = NodeClient::new(http_client(), Secret::new(SECRET));
    let put = |version: u64, value: &str| Mutation {
        version,
        kind: MutationKind::Put {
            value: value.to_string().into(),
            content_type: "text/plain".into(),
            expires_at: None,
        },
    };
    // 64 writers at once (they share /batch requests), one of them with a key the node refuses.
    let writers: Vec<_> = (0..64u64)
        .map(|n| {
            let (nodes, base) = (nodes.clone(), node.url.clone());
            let key = if n == 13 { "k".repeat(3000) } else { format!("u/{n}") };
            let mutation =
                if n == 7 { Mutation { version: 100, kind: MutationKind::Delete } } else { put(100 + n, "v") };
            tokio::spawn(async move { (n, nodes.write(&base, &key, &mutation).await) })
        })
        .collect();
    for writer in writers {
        let (n, answer) = writer.await.unwrap();
        match answer {
            Ok(written) => assert!(n != 13 && written.applied, "writer {n}: {written:?}"),
            Err(error) => assert!(n == 13 && error.is_permanent(), "writer {n}: {error}"),
        }
    }
    for n in (0..64u64).filter(|n| *n != 13) {
        let record = nodes.read(&node.url, &format!("u/{n}")).await.unwrap().lookup;
        match (n, record) {
            (7, Lookup::Tombstone(version)) => assert_eq!(version, 100),
            (_, Lookup::Found(Found { value, version, .. })) => assert_eq!((&value[..], version), (&b"v"[..], 100 + n)),
            (n, other) => panic!("u/{n}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_batched_reads_answer_each_reader_even_past_the_byte_limit() {
    use ydht::config::Secret;
    use ydht::daemon::gateway::nodes::{NodeClient, http_client};
    use ydht::nodeclient;
    use ydht::wire::read::{Found, Lookup};

    const BIG: usize = 3 << 20;
    let data = tempfile::tempdir().unwrap();
    // 3 MiB values: one answer carries at most 12 MiB of values (4 × the largest value).
    let node = NodeProcess::start(data.path(), &[], &[("YDHT_MAX_VALUE_BYTES", &BIG.to_string())]);
    let client = reqwest::Client::new();
    let mut records = vec![
        Record::put("u/small", 5, &b"tiny"[..], "text/plain").with_expiry(Some(now_millis() + 3_600_000)),
        Record::delete("u/gone", 6),
        Record::put("u/expired", 7, &b"old"[..], "text/plain").with_expiry(Some(now_millis() - 1_000)),
    ];
    for n in 0..5u8 {
        records.push(Record::put(format!("u/big{n}"), 10 + u64::from(n), vec![n; BIG], "application/x-big"));
    }
    for record in records {
        let response = client
            .post(node.at("/batch"))
            .header("x-cluster-secret", SECRET)
            .body(batch::encode(&[record]).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    // One /read of everything: four big values fill the answer, the fifth is left out.
    let keys = ["u/small", "u/gone", "u/expired", "u/never", "u/big0", "u/big1", "u/big2", "u/big3", "u/big4"];
    let direct = nodeclient::NodeClient::new(Secret::new(SECRET), std::time::Duration::from_secs(10));
    let answer: Vec<Option<Lookup>> = direct
        .read_many(&node.url, &keys)
        .await
        .unwrap()
        .into_iter()
        .map(|read| read.map(|read| read.lookup))
        .collect();
    assert_eq!(answer.len(), keys.len());
    match &answer[0] {
        Some(Lookup::Found(found)) => {
            assert_eq!((&found.value[..], found.version, &*found.content_type), (&b"tiny"[..], 5, "text/plain"));
            assert!(found.expires_at.is_some());
        }
        other => panic!("u/small: {other:?}"),
    }
    assert_eq!(answer[1], Some(Lookup::Tombstone(6)));
    assert_eq!(answer[2], Some(Lookup::Missing), "an expired value reads as missing");
    assert_eq!(answer[3], Some(Lookup::Missing));
    for (n, entry) in answer[4..8].iter().enumerate() {
        match entry {
            Some(Lookup::Found(found)) => assert!(found.value.len() == BIG && found.value[0] == n as u8),
            other => panic!("u/big{n}: {:?}", other.as_ref().map(|_| "not a value")),
        }
    }
    assert!(answer[8].is_none(), "the fifth big value is past the answer's limit");

    // The gateway's client: every reader at once gets its own key, the left-out one included.
    let nodes = NodeClient::new(http_client(), Secret::new(SECRET));
    let readers: Vec<_> = (0..64)
        .map(|n| {
            let (nodes, base) = (nodes.clone(), node.url.clone());
            let key = keys[n % keys.len()];
            tokio::spawn(async move { (key, nodes.read(&base, key).await.unwrap().lookup) })
        })
        .collect();
    for reader in readers {
        let (key, record) = reader.await.unwrap();
        match (key, record) {
            ("u/small", Lookup::Found(Found { value, version: 5, .. })) => assert_eq!(&value[..], b"tiny"),
            ("u/gone", Lookup::Tombstone(6)) => {}
            ("u/expired" | "u/never", Lookup::Missing) => {}
            (big, Lookup::Found(Found { value, version, content_type, .. })) if big.starts_with("u/big") => {
                let n = big.as_bytes()[5] - b'0';
                assert_eq!((value.len(), value[BIG - 1], version), (BIG, n, 10 + u64::from(n)));
                assert_eq!(&*content_type, "application/x-big");
            }
            (key, other) => panic!("{key}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_fall_back_to_one_get_per_key_on_a_node_without_read() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::extract::Path;
    use axum::routing::{get, post};
    use ydht::config::Secret;
    use ydht::daemon::gateway::nodes::{NodeClient, http_client};
    use ydht::wire::read::{Found, Lookup};

    // A node from before `POST /read` existed: it answers only `GET /store/{key}`.
    let read_requests = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&read_requests);
    let app = axum::Router::new()
        .route(
            "/read",
            post(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { StatusCode::NOT_FOUND }
            }),
        )
        .route(
            "/store/{*key}",
            get(|Path(key): Path<String>| async move { ([("x-version", "7")], format!("value of {key}")) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let nodes = NodeClient::new(http_client(), Secret::new(SECRET));
    let readers: Vec<_> = (0..16)
        .map(|n| {
            let (nodes, base) = (nodes.clone(), base.clone());
            tokio::spawn(async move { (n, nodes.read(&base, &format!("u/{n}")).await) })
        })
        .collect();
    for reader in readers {
        let (n, record) = reader.await.unwrap();
        match record.unwrap().lookup {
            Lookup::Found(Found { value, version: 7, .. }) => assert_eq!(value, format!("value of u/{n}")),
            other => panic!("u/{n}: {other:?}"),
        }
    }
    assert!(read_requests.load(Ordering::SeqCst) >= 1, "16 readers at once never shared a POST /read");
    server.abort();
}

/// `GET /feed`: the real node's changes in log order by prefix, a long poll that a write wakes,
/// positions that survive a restart, and bad queries refused.
#[tokio::test]
async fn the_change_feed_pages_long_polls_and_survives_a_restart() {
    use std::time::{Duration, Instant};
    use ydht::config::Secret;
    use ydht::nodeclient::NodeClient;

    let data = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start(data.path(), &[], &[]);
    let nodes = NodeClient::new(Secret::new(SECRET), Duration::from_secs(10));
    nodes
        .put(
            &node.url,
            "5/a",
            b"one".to_vec().into(),
            &ydht::nodeclient::WriteMeta { version: 10, expires_at: None, content_type: "text/plain".into() },
        )
        .await
        .unwrap();
    nodes
        .put(
            &node.url,
            "6/other",
            b"x".to_vec().into(),
            &ydht::nodeclient::WriteMeta { version: 11, expires_at: None, content_type: "t".into() },
        )
        .await
        .unwrap();
    nodes.delete(&node.url, "5/a", 12).await.unwrap();
    let page = nodes.feed(&node.url, 0, "5/", 100, Duration::ZERO).await.unwrap();
    let seen: Vec<(&str, u64, &str)> =
        page.entries.iter().map(|entry| (entry.key.as_str(), entry.version, entry.kind.as_str())).collect();
    assert_eq!(seen, [("5/a", 10, "put"), ("5/a", 12, "delete")]);
    assert_eq!((page.entries[0].size, page.entries[0].content_type.as_str()), (3, "text/plain"));
    assert!(page.oldest <= page.entries[0].position && page.entries[1].position <= page.next);

    // A long poll returns as soon as a change under its prefix is on disk, not at its deadline.
    let (poll_nodes, poll_url, after) = (nodes.clone(), node.url.clone(), page.next);
    let started = Instant::now();
    let poll = tokio::spawn(async move { poll_nodes.feed(&poll_url, after, "5/", 100, Duration::from_secs(20)).await });
    nodes
        .put(
            &node.url,
            "6/noise",
            b"n".to_vec().into(),
            &ydht::nodeclient::WriteMeta { version: 13, expires_at: None, content_type: "t".into() },
        )
        .await
        .unwrap();
    nodes
        .put(
            &node.url,
            "5/b",
            b"two".to_vec().into(),
            &ydht::nodeclient::WriteMeta { version: 14, expires_at: None, content_type: "t".into() },
        )
        .await
        .unwrap();
    let woken = poll.await.unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(15), "the write woke the poll");
    assert_eq!(woken.entries.iter().map(|entry| entry.key.as_str()).collect::<Vec<_>>(), ["5/b"]);
    let quiet = nodes.feed(&node.url, woken.next, "5/", 100, Duration::from_millis(200)).await.unwrap();
    assert!(quiet.entries.is_empty() && quiet.next >= woken.next, "nothing new: an empty page at the deadline");

    // After a restart the same positions name the same changes.
    assert!(node.terminate().success());
    let node = NodeProcess::start(data.path(), &[], &[]);
    let again = nodes.feed(&node.url, 0, "5/", 100, Duration::ZERO).await.unwrap();
    assert_eq!(again.entries[..2], page.entries[..]);
    assert_eq!(again.entries[2], woken.entries[0]);

    let client = reqwest::Client::new();
    let feed = |query: &str| client.get(format!("{}/feed?{query}", node.url)).header("x-cluster-secret", SECRET);
    for query in ["limit=0", "limit=10001", "wait_ms=30001", "after=-1", "after=x"] {
        let (status, message) = refused(feed(query)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {message}");
    }
    let (status, _) = refused(client.get(format!("{}/feed", node.url))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
