//! The real node binary: acknowledged writes survive SIGKILL, TTLs survive a
//! restart, compaction keeps every key and bounds the WAL, and damaged WAL
//! files are handled as documented.

use crate::node_process;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use node_process::{NodeProcess, SECRET, metrics, node_dir, now_millis, store_url};
use rand::{Rng, SeedableRng};
use ydht::wal::Record;

/// The key and value of an acknowledged write.
type AckedWrite = (String, Vec<u8>);

/// What a client was told about one key.
#[derive(Debug, Clone)]
enum Acked {
    Put { value: Vec<u8>, version: u64, expires_at: Option<u64>, content_type: String },
    Delete { version: u64 },
}

/// A put that was acknowledged, followed by a delete that was sent but never
/// answered (the node died): either outcome is correct.
#[derive(Debug, Clone)]
struct Uncertain {
    put: Acked,
    delete_version: u64,
}

async fn put(
    client: &reqwest::Client,
    node: &str,
    key: &str,
    value: Vec<u8>,
    version: u64,
    expires_at: Option<u64>,
) -> reqwest::Result<reqwest::Response> {
    let mut request = client
        .put(store_url(node, key))
        .header("x-cluster-secret", SECRET)
        .header("x-version", version.to_string())
        .header("content-type", "application/x-test")
        .body(value);
    if let Some(expires_at) = expires_at {
        request = request.header("x-expires-at", expires_at.to_string());
    }
    request.send().await
}

async fn delete(client: &reqwest::Client, node: &str, key: &str, version: u64) -> reqwest::Result<reqwest::Response> {
    client
        .delete(store_url(node, key))
        .header("x-cluster-secret", SECRET)
        .header("x-version", version.to_string())
        .send()
        .await
}

async fn read(client: &reqwest::Client, node: &str, key: &str) -> reqwest::Response {
    client.get(store_url(node, key)).header("x-cluster-secret", SECRET).send().await.unwrap()
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get(name).map(|value| value.to_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_write_survives_sigkill() {
    let data = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start(data.path(), &[], &[]);
    let node_url = node.url.clone();
    let acked: Arc<Mutex<HashMap<String, Acked>>> = Arc::default();
    let uncertain: Arc<Mutex<HashMap<String, Uncertain>>> = Arc::default();
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::new();
    let far_future = now_millis() + 3_600_000;
    // Versions are hybrid-logical-clock values, as a coordinator would send.
    let base = ydht::hlc::from_millis(now_millis());

    let writers: Vec<_> = (0..32u64)
        .map(|writer| {
            let (acked, acknowledged, client) = (Arc::clone(&acked), Arc::clone(&acknowledged), client.clone());
            let uncertain = Arc::clone(&uncertain);
            let target = node_url.clone();
            tokio::spawn(async move {
                let mut random = rand::rngs::StdRng::seed_from_u64(writer);
                for n in 0u64.. {
                    let key = format!("tenant-{writer}/key/{n}");
                    let version = base + n;
                    let value: Vec<u8> = (0..random.random_range(0..3000)).map(|_| random.random()).collect();
                    let expires_at = (n % 3 == 0).then_some(far_future + n);
                    let Ok(response) = put(&client, &target, &key, value.clone(), version, expires_at).await else {
                        return;
                    };
                    assert_eq!(response.status(), 200, "put {key}");
                    let body: serde_json::Value = response.json().await.unwrap();
                    assert_eq!(body["applied"], true);
                    let content_type = "application/x-test".to_string();
                    acked.lock().unwrap().insert(key.clone(), Acked::Put { value, version, expires_at, content_type });
                    acknowledged.fetch_add(1, Ordering::Relaxed);
                    if n % 10 == 9 {
                        let victim = format!("tenant-{writer}/key/{}", n - 5);
                        let Ok(response) = delete(&client, &target, &victim, version + 100).await else {
                            let put = acked.lock().unwrap().remove(&victim).expect("the victim was acknowledged");
                            uncertain.lock().unwrap().insert(victim, Uncertain { put, delete_version: version + 100 });
                            return;
                        };
                        assert_eq!(response.status(), 200, "delete {victim}");
                        acked.lock().unwrap().insert(victim, Acked::Delete { version: version + 100 });
                    }
                }
            })
        })
        .collect();
    while acknowledged.load(Ordering::Relaxed) < 1500 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert!(!writers.iter().any(|writer| writer.is_finished()), "a writer stopped early:\n{}", node.stderr());
    }
    node.kill();
    for writer in writers {
        writer.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 1400);

    let node = NodeProcess::start(data.path(), &[], &[]);
    let uncertain = uncertain.lock().unwrap().clone();
    for (key, Uncertain { put, delete_version }) in uncertain {
        let response = read(&client, &node.url, &key).await;
        if response.status() == 404 {
            assert_eq!(header(&response, "x-version"), Some(delete_version.to_string()), "{key}");
        } else {
            let Acked::Put { value, version, .. } = put else { unreachable!("only puts are deleted") };
            assert_eq!(header(&response, "x-version"), Some(version.to_string()), "{key}");
            assert_eq!(&response.bytes().await.unwrap()[..], &value[..], "{key}");
        }
    }
    for (key, expected) in &acked {
        let response = read(&client, &node.url, key).await;
        match expected {
            Acked::Put { value, version, expires_at, content_type } => {
                assert_eq!(response.status(), 200, "{key} lost after SIGKILL: {:?}", response.headers());
                assert_eq!(header(&response, "x-version"), Some(version.to_string()), "{key}");
                assert_eq!(header(&response, "x-expires-at"), expires_at.map(|at| at.to_string()), "{key}");
                assert_eq!(header(&response, "content-type").as_deref(), Some(content_type.as_str()));
                assert_eq!(&response.bytes().await.unwrap()[..], &value[..], "{key}");
            }
            Acked::Delete { version } => {
                assert_eq!(response.status(), 404, "{key} deleted before SIGKILL");
                assert_eq!(header(&response, "x-tombstone").as_deref(), Some("true"));
                assert_eq!(header(&response, "x-version"), Some(version.to_string()));
            }
        }
    }
}

#[tokio::test]
async fn ttl_survives_a_restart_and_shutdown_is_graceful() {
    let data = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut node = NodeProcess::start(data.path(), &[], &[]);
    let soon = now_millis() + 4_000;
    let later = now_millis() + 3_600_000;
    assert_eq!(put(&client, &node.url, "short", b"s".to_vec(), 1, Some(soon)).await.unwrap().status(), 200);
    assert_eq!(put(&client, &node.url, "long", b"l".to_vec(), 1, Some(later)).await.unwrap().status(), 200);
    let status = node.terminate();
    assert!(status.success(), "SIGTERM should exit 0, got {status}; stderr:\n{}", node.stderr());
    assert!(node.stderr().contains("WAL synced"), "{}", node.stderr());

    let node = NodeProcess::start(data.path(), &[], &[]);
    let response = read(&client, &node.url, "long").await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-expires-at"), Some(later.to_string()));
    let response = read(&client, &node.url, "short").await;
    if now_millis() + 500 < soon {
        assert_eq!(response.status(), 200, "read before its expiry");
        assert_eq!(header(&response, "x-expires-at"), Some(soon.to_string()));
    }
    // The restarted node still expires it: it disappears from reads and listings.
    loop {
        let response = read(&client, &node.url, "short").await;
        if response.status() == 404 {
            assert!(now_millis() >= soon, "expired early");
            break;
        }
        assert!(now_millis() < soon + 10_000, "the key outlived its TTL after a restart");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let page: serde_json::Value =
        client.get(node.at("/keys")).header("x-cluster-secret", SECRET).send().await.unwrap().json().await.unwrap();
    let keys: Vec<_> = page["keys"].as_array().unwrap().iter().map(|entry| entry["key"].clone()).collect();
    assert_eq!(keys, vec![serde_json::json!("long")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compaction_keeps_every_live_key_and_bounds_the_wal() {
    const MAX: u64 = 64 * 1024;
    let data = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    // No feed retention: what is measured is that compaction removes the covered segments.
    let mut node = NodeProcess::start(
        data.path(),
        &["--wal-max-bytes", &MAX.to_string(), "--feed-retention", "0", "--feed-retention-changes", "0"],
        &[],
    );
    let base = ydht::hlc::from_millis(now_millis());
    // 8 writers overwrite 40 keys 1 KiB at a time: ~2.5 MiB of log for 40 KiB of live data.
    let tasks: Vec<_> = (0..8u64)
        .map(|writer| {
            let (client, target) = (client.clone(), node.url.clone());
            tokio::spawn(async move {
                for round in 1..=60u64 {
                    for n in 0..5u64 {
                        let key = format!("k{}", writer * 5 + n);
                        let value = vec![(round % 251) as u8; 1024];
                        let response = put(&client, &target, &key, value, base + round, None).await.unwrap();
                        assert_eq!(response.status(), 200);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(delete(&client, &node.url, "k0", base + 1_000).await.unwrap().status(), 200);
    // Snapshots run in the background; poll until the last one has caught up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let metrics = loop {
        let metrics = metrics(&client, &node).await;
        let wal_size = metrics["wal_size"].as_u64().unwrap();
        if wal_size < MAX {
            break metrics;
        }
        assert!(std::time::Instant::now() < deadline, "WAL stays at {wal_size} bytes (threshold {MAX}): {metrics}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(metrics["snapshots_written"].as_u64().unwrap() >= 1, "{metrics}");
    let on_disk: u64 = std::fs::read_dir(node_dir(data.path()))
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("wal-"))
        .map(|entry| entry.metadata().unwrap().len())
        .sum();
    assert!(on_disk < 2 * MAX, "{on_disk} bytes of WAL files on disk");
    assert_eq!(metrics["key_count"], 39);

    node.kill();
    let node = NodeProcess::start(data.path(), &[], &[]);
    for n in 1..40 {
        let response = read(&client, &node.url, &format!("k{n}")).await;
        assert_eq!(response.status(), 200, "k{n}");
        assert_eq!(header(&response, "x-version"), Some((base + 60).to_string()));
        assert_eq!(&response.bytes().await.unwrap()[..], &vec![60u8; 1024][..]);
    }
    let response = read(&client, &node.url, "k0").await;
    assert_eq!((response.status().as_u16(), header(&response, "x-tombstone")), (404, Some("true".into())));
}

fn segment_path(data: &std::path::Path) -> std::path::PathBuf {
    let mut segments: Vec<_> = std::fs::read_dir(node_dir(data))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
        .collect();
    segments.sort();
    segments.pop().expect("a WAL segment")
}

#[tokio::test]
async fn torn_tails_are_truncated_and_corruption_stops_startup_unless_salvaged() {
    let data = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut node = NodeProcess::start(data.path(), &[], &[]);
    for n in 0..10u64 {
        let response = put(&client, &node.url, &format!("k{n}"), vec![n as u8; 100], n + 1, None).await.unwrap();
        assert_eq!(response.status(), 200);
    }
    assert!(node.terminate().success());
    let segment = segment_path(data.path());
    let clean = std::fs::read(&segment).unwrap();

    // A torn tail (half a record) is cut off with a log line saying how much.
    let mut torn = clean.clone();
    let mut frame = Vec::new();
    ydht::wal::record::encode(&Record::put("k10", 11, vec![7; 100], "application/x-test"), &mut frame).unwrap();
    torn.extend_from_slice(&frame[..70]);
    std::fs::write(&segment, &torn).unwrap();
    let mut node = NodeProcess::start(data.path(), &[], &[]);
    assert!(node.stderr().contains("truncated 70 bytes"), "{}", node.stderr());
    assert_eq!(read(&client, &node.url, "k9").await.status(), 200);
    assert!(node.terminate().success());
    assert_eq!(std::fs::read(&segment).unwrap(), clean);

    // A flipped byte in the middle stops start-up, naming the file and offset.
    let mut damaged = clean.clone();
    let middle = clean.len() / 2;
    damaged[middle] ^= 0x55;
    std::fs::write(&segment, &damaged).unwrap();
    let (status, stderr) = NodeProcess::start_failing(data.path(), &[]);
    assert!(!status.success());
    assert!(stderr.contains(&segment.display().to_string()) && stderr.contains("byte offset"), "{stderr}");
    assert!(stderr.contains("--salvage-wal"), "{stderr}");
    assert_eq!(std::fs::read(&segment).unwrap(), damaged, "a refused start must not change the file");

    // --salvage-wal keeps what precedes the damage.
    let node = NodeProcess::start(data.path(), &["--salvage-wal"], &[]);
    assert!(node.stderr().contains("--salvage-wal: truncated"), "{}", node.stderr());
    assert_eq!(read(&client, &node.url, "k0").await.status(), 200);
    assert_eq!(read(&client, &node.url, "k9").await.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_exits_zero_and_keeps_every_acknowledged_write() {
    let data = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start(data.path(), &[], &[]);
    let client = reqwest::Client::new();
    let base = ydht::hlc::from_millis(now_millis());
    let acked: Arc<Mutex<Vec<AckedWrite>>> = Arc::default();
    let writers: Vec<_> = (0..16u64)
        .map(|writer| {
            let (client, target, acked) = (client.clone(), node.url.clone(), Arc::clone(&acked));
            tokio::spawn(async move {
                for n in 0u64.. {
                    let key = format!("w{writer}/{n}");
                    let value = format!("{writer}:{n}").into_bytes();
                    match put(&client, &target, &key, value.clone(), base + n, None).await {
                        Ok(response) if response.status() == 200 => acked.lock().unwrap().push((key, value)),
                        Ok(response) => panic!("{key}: {}", response.status()),
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    while acked.lock().unwrap().len() < 300 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let status = node.terminate();
    assert!(status.success(), "SIGTERM under load should exit 0, got {status}; stderr:\n{}", node.stderr());
    for writer in writers {
        writer.await.unwrap();
    }
    let node = NodeProcess::start(data.path(), &[], &[]);
    let acked = acked.lock().unwrap().clone();
    for (key, value) in &acked {
        let response = read(&client, &node.url, key).await;
        assert_eq!(response.status(), 200, "{key} acknowledged before SIGTERM but lost");
        assert_eq!(&response.bytes().await.unwrap()[..], &value[..]);
    }
}
