//! `ydht backup` and `ydht restore` (issue 18) against a real `serve all`: a backup taken while
//! writes go on holds every write acknowledged before it began; restored into wiped nodes, each
//! comes back with its version, expiry and content type; a restore over newer data keeps the
//! newer data; a damaged or cut file is refused before anything is written.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

use crate::cli_support::Client;
use crate::common::{self, Cluster};

/// What a GET answers of a key: (value, ETag, content type, expiry header).
type Seen = (Vec<u8>, String, String, Option<String>);

async fn read(http: &reqwest::Client, gateway: &str, key: &str, name: &str) -> Option<Seen> {
    let response = http.get(format!("{gateway}/v1/kv/{name}")).header("x-api-key", key).send().await.unwrap();
    if response.status() == 404 {
        return None;
    }
    assert_eq!(response.status(), 200, "GET {name}");
    let header = |name: &str| response.headers().get(name).map(|value| value.to_str().unwrap().to_string());
    let (etag, content_type, expires) =
        (header("etag").unwrap(), header("content-type").unwrap(), header("x-expires-at"));
    Some((response.bytes().await.unwrap().to_vec(), etag, content_type, expires))
}

fn operator(cluster: &Cluster) -> Client {
    Client::new(&cluster.gateway, &cluster.users, Some(cluster.data_dir.path()))
}

/// Stops `serve all`, removes every node's data (and the replicator's queue), starts it again on
/// the same data dir (accounts and keys are kept).
fn wipe_nodes(cluster: Cluster) -> Cluster {
    let Cluster { mut process, data_dir, .. } = cluster;
    assert!(process.terminate().expect("serve all stops").success());
    for dir in ["node-1", "node-2", "node-3", "replicator"] {
        let path = data_dir.path().join(dir);
        if path.exists() {
            std::fs::remove_dir_all(&path).unwrap();
        }
    }
    common::start_cluster_in(data_dir, &[("RATE_LIMIT_PER_MINUTE", "0")])
}

fn flip_byte(from: &Path, to: &Path, at: usize) {
    let mut bytes = std::fs::read(from).unwrap();
    let at = at.min(bytes.len() - 1);
    bytes[at] ^= 0x20;
    std::fs::write(to, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_into_wiped_nodes_and_refuses_damaged_files() {
    let cluster = common::start_cluster_with(&[("RATE_LIMIT_PER_MINUTE", "0")]);
    let http = common::http();
    let (keeper, key) = common::tenant(&http, &cluster.users, "keeper").await;
    let (_, other_key) = common::tenant(&http, &cluster.users, "other").await;
    let gateway = cluster.gateway.clone();
    for n in 0..7 {
        let url = format!("{gateway}/v1/kv/theirs/{n}");
        assert_eq!(http.put(url).header("x-api-key", &other_key).body("x").send().await.unwrap().status(), 200);
    }

    // Acknowledged before the backup: text and binary values, TTLs, content types, a delete.
    let mut acknowledged: BTreeMap<String, Seen> = BTreeMap::new();
    for n in 0..120 {
        let name = format!("b/{n:03}");
        let mut request = http.put(format!("{gateway}/v1/kv/{name}")).header("x-api-key", &key);
        request = match n % 3 {
            0 => request.header("content-type", "text/plain").body(format!("text {n}")),
            1 => request.header("content-type", "application/octet-stream").body(vec![0u8, 255, n as u8]),
            _ => request
                .query(&[("ttl", "1h")])
                .header("content-type", "application/json")
                .body(format!("{{\"n\":{n}}}")),
        };
        assert_eq!(request.send().await.unwrap().status(), 200);
    }
    let deleted = http.delete(format!("{gateway}/v1/kv/b/000")).header("x-api-key", &key).send().await.unwrap();
    assert_eq!(deleted.status(), 200);
    for n in 1..120 {
        let name = format!("b/{n:03}");
        acknowledged.insert(name.clone(), read(&http, &gateway, &key, &name).await.unwrap());
    }

    // Writes go on while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (http, gateway, key, stop) = (http.clone(), gateway.clone(), key.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let url = format!("{gateway}/v1/kv/load/{}", n % 50);
                let _ = http.put(url).header("x-api-key", &key).body(format!("load {n}")).send().await;
                n += 1;
            }
            n
        })
    };
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("cluster.ydht");
    let client = operator(&cluster);
    let backup = {
        let (client, file) = (client, file.clone());
        tokio::task::spawn_blocking(move || client.json(&["backup", "--out", file.to_str().unwrap()])).await.unwrap()
    };
    stop.store(true, Ordering::Relaxed);
    let load_writes = writer.await.unwrap();
    assert!(load_writes > 0, "writes went on during the backup");
    let records = backup["records"].as_u64().unwrap();
    assert!(records >= 119 + 7, "{backup}");
    assert!(!scratch.path().join("cluster.partial").exists(), "the partial file was renamed");

    // --tenant: that tenant's keys only.
    let one = scratch.path().join("keeper.ydht");
    let tenant = keeper.user_id.to_string();
    let only = {
        let (client, one) = (operator(&cluster), one.clone());
        tokio::task::spawn_blocking(move || {
            client.json(&["backup", "--out", one.to_str().unwrap(), "--tenant", &tenant])
        })
        .await
        .unwrap()
    };
    // Its 119 keys and the load keys it wrote, none of the other tenant's 7.
    let load_keys = load_writes.min(50);
    assert_eq!(only["records"].as_u64().unwrap(), 119 + load_keys, "{only}");

    let cluster = wipe_nodes(cluster);
    let gateway = cluster.gateway.clone();
    let http = common::http();
    assert!(read(&http, &gateway, &key, "b/001").await.is_none(), "the nodes were wiped");

    // Damaged and cut files are refused with one line, and nothing is written.
    let client = operator(&cluster);
    let size = std::fs::metadata(&file).unwrap().len() as usize;
    for (name, at) in [("flipped-early.ydht", 20), ("flipped-middle.ydht", size / 2), ("flipped-late.ydht", size - 3)] {
        let damaged = scratch.path().join(name);
        flip_byte(&file, &damaged, at);
        let output = client.run(&["restore", damaged.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains("damaged") || stderr.contains("truncated"), "{name}: {stderr}");
        assert!(stderr.contains("nothing was restored") && stderr.lines().count() == 1, "{name}: {stderr}");
    }
    let cut = scratch.path().join("cut.ydht");
    std::fs::write(&cut, &std::fs::read(&file).unwrap()[..size * 2 / 3]).unwrap();
    let output = client.run(&["restore", cut.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("truncated"));
    assert!(read(&http, &gateway, &key, "b/001").await.is_none(), "a refused file wrote nothing");

    // The restore brings every acknowledged write back as it was.
    let restored = {
        let (client, file) = (client, file.clone());
        tokio::task::spawn_blocking(move || client.json(&["restore", file.to_str().unwrap()])).await.unwrap()
    };
    assert_eq!(restored["records"], records, "{restored}");
    assert_eq!(restored["restored"], records, "{restored}");
    for (name, before) in &acknowledged {
        let after = read(&http, &gateway, &key, name).await;
        assert_eq!(after.as_ref(), Some(before), "{name} came back with its value, version, type and expiry");
    }
    assert!(read(&http, &gateway, &key, "b/000").await.is_none(), "the deleted key stays deleted");

    // Over newer data: the newer value stays.
    let newer =
        http.put(format!("{gateway}/v1/kv/b/001")).header("x-api-key", &key).body("newer").send().await.unwrap();
    assert_eq!(newer.status(), 200);
    let client = operator(&cluster);
    let again: Value = {
        let file = file.clone();
        tokio::task::spawn_blocking(move || client.json(&["restore", file.to_str().unwrap()])).await.unwrap()
    };
    assert_eq!(again["restored"], 0, "{again}");
    assert_eq!(again["already_there"], records, "{again}");
    assert_eq!(read(&http, &gateway, &key, "b/001").await.unwrap().0, b"newer");
}
