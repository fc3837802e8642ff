//! `POST /v1/batch` (issue 16) on `ydht serve all`: mixed operations answered one by one (a bad
//! key, an oversized value and a failed precondition fail alone while the good operations still
//! apply), limits refused whole with nothing written, scopes per operation, rate limiting per
//! operation, and tenant isolation.

use serde_json::{Value, json};

use crate::common;

async fn batch(http: &reqwest::Client, gateway: &str, key: &str, body: &Value) -> reqwest::Response {
    http.post(format!("{gateway}/v1/batch")).header("x-api-key", key).json(body).send().await.unwrap()
}

async fn results_of(response: reqwest::Response) -> Vec<Value> {
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["results"].as_array().unwrap().clone()
}

async fn strong_get(http: &reqwest::Client, gateway: &str, key: &str, name: &str) -> Option<String> {
    let response = http
        .get(format!("{gateway}/v1/kv/{name}"))
        .header("x-api-key", key)
        .header("x-consistency", "strong")
        .send()
        .await
        .unwrap();
    match response.status().as_u16() {
        200 => Some(response.text().await.unwrap()),
        404 => None,
        status => panic!("GET {name}: {status}"),
    }
}

/// The status line a gateway answers a batch declaring 5 MiB, after the first 64 KiB of it.
async fn oversized_batch_status(gateway: &str, key: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = gateway.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /v1/batch HTTP/1.1\r\nhost: {address}\r\nx-api-key: {key}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        5 << 20
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let start = format!("{{\"ops\": [{{\"op\": \"put\", \"key\": \"huge0\", \"value\": \"{}", "y".repeat(64 << 10));
    stream.write_all(start.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 256];
    let read = stream.read(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer[..read]).into_owned()
}

#[tokio::test]
async fn a_batch_answers_each_op_and_the_good_ones_apply() {
    let cluster = common::start_cluster_with(&[("RATE_LIMIT_PER_MINUTE", "0"), ("YDHT_MAX_VALUE_BYTES", "1024")]);
    let http = common::http();
    let gateway = cluster.gateway.clone();
    let (_, key) = common::tenant(&http, &cluster.users, "batcher").await;

    // Written strong: a conditional op reads a majority of the owners, which an eventual write
    // may not have reached yet (its precondition would then see no key).
    let seed = http
        .post(format!("{gateway}/v1/batch"))
        .header("x-api-key", &key)
        .header("x-consistency", "strong")
        .json(&json!({"ops": [{"op": "put", "key": "seed", "value": "1"}]}));
    let seeded = results_of(seed.send().await.unwrap()).await;
    let seed_version = seeded[0]["version"].as_u64().unwrap();
    let body = json!({"ops": [
        {"op": "put", "key": "a", "value": "alpha", "content_type": "text/plain", "ttl": "1h"},
        {"op": "put", "key": "bin", "value_base64": "AP8A"},
        {"op": "put", "key": "tab\there", "value": "bad key"},
        {"op": "put", "key": "big", "value": "x".repeat(2000)},
        {"op": "put", "key": "seed", "value": "lost", "if_match": seed_version + 1},
        {"op": "put", "key": "seed", "value": "2", "if_match": format!("\"{seed_version}\"")},
        {"op": "get", "key": "a"},
        {"op": "get", "key": "bin"},
        {"op": "get", "key": "missing"},
        {"op": "delete", "key": "missing"},
        {"op": "put", "key": "gone", "value": "soon"},
        {"op": "delete", "key": "gone"},
        {"op": "merge", "key": "a"},
    ]});
    let results = results_of(batch(&http, &gateway, &key, &body).await).await;
    let statuses: Vec<u64> = results.iter().map(|result| result["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [200, 200, 400, 413, 412, 200, 200, 200, 404, 404, 200, 200, 400], "{results:#?}");
    assert_eq!(results[2]["key"], "tab\there");
    assert!(results[2]["error"].as_str().unwrap().contains("control"), "{}", results[2]);
    assert!(results[3]["error"].as_str().unwrap().contains("1024"), "{}", results[3]);
    assert_eq!(results[4]["current_version"], format!("\"{seed_version}\""), "412 names the current ETag");
    // Ops on one key run in order: the read sees the put before it, the delete the put before it.
    assert_eq!(
        (results[6]["value"].as_str(), results[6]["content_type"].as_str()),
        (Some("alpha"), Some("text/plain"))
    );
    assert!(results[6]["expires_at"].as_u64().is_some());
    assert_eq!(results[6]["version"], results[0]["version"]);
    assert_eq!(results[7]["value_base64"], "AP8A", "a value that is not UTF-8 reads as base64");
    assert!(results[7].get("value").is_none());
    assert!(results[12]["error"].as_str().unwrap().contains("unknown op"));

    assert_eq!(strong_get(&http, &gateway, &key, "a").await.as_deref(), Some("alpha"));
    assert_eq!(strong_get(&http, &gateway, &key, "seed").await.as_deref(), Some("2"));
    assert_eq!(strong_get(&http, &gateway, &key, "big").await, None, "an oversized value is not written");
    assert_eq!(strong_get(&http, &gateway, &key, "gone").await, None);

    // Limits and malformed bodies: refused whole, nothing written.
    let too_many: Vec<Value> =
        (0..1001).map(|n| json!({"op": "put", "key": format!("many{n}"), "value": "v"})).collect();
    let refused = batch(&http, &gateway, &key, &json!({ "ops": too_many })).await;
    assert_eq!(refused.status(), 400);
    assert!(refused.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("1 to 1000"));
    assert_eq!(strong_get(&http, &gateway, &key, "many0").await, None);
    // A body over 4 MiB is refused from its Content-Length, before the rest of it is read.
    assert!(oversized_batch_status(&gateway, &key).await.starts_with("HTTP/1.1 413"));
    assert_eq!(strong_get(&http, &gateway, &key, "huge0").await, None);
    for body in [json!([]), json!({"ops": []}), json!({"ops": "put"}), json!({"ops": [{}], "atomic": true})] {
        let response = batch(&http, &gateway, &key, &body).await;
        assert_eq!(response.status(), 400, "{body}");
        assert!(response.json::<Value>().await.unwrap()["error"].is_string());
    }
    let not_json = http.post(format!("{gateway}/v1/batch")).header("x-api-key", &key).body("{").send().await.unwrap();
    assert_eq!(not_json.status(), 400);

    // Another tenant's batch never sees these keys.
    let (_, other) = common::tenant(&http, &cluster.users, "stranger").await;
    let theirs = results_of(batch(&http, &gateway, &other, &json!({"ops": [{"op": "get", "key": "a"}]})).await).await;
    assert_eq!(theirs[0]["status"], 404);

    // A read-only key reads in a batch; its writes are 403 each.
    let account = common::signup_and_login(&http, &cluster.users, "reader").await;
    let (_, reader) = common::create_key(&http, &cluster.users, &account, &["read"]).await;
    let body = json!({"ops": [{"op": "get", "key": "x"}, {"op": "put", "key": "x", "value": "no"}]});
    let mixed = results_of(batch(&http, &gateway, &reader, &body).await).await;
    assert_eq!((mixed[0]["status"].as_u64(), mixed[1]["status"].as_u64()), (Some(404), Some(403)));
}

#[tokio::test]
async fn each_op_of_a_batch_counts_against_the_rate_limit() {
    let cluster = common::start_cluster_with(&[("RATE_LIMIT_PER_MINUTE", "60"), ("RATE_LIMIT_BURST", "20")]);
    let http = common::http();
    let gateway = cluster.gateway.clone();
    let (_, key) = common::tenant(&http, &cluster.users, "limited").await;
    let ops: Vec<Value> = (0..30).map(|n| json!({"op": "put", "key": format!("k{n}"), "value": "v"})).collect();
    let response = batch(&http, &gateway, &key, &json!({ "ops": ops })).await;
    assert_eq!(response.status(), 200, "a batch larger than the burst still runs");
    assert_eq!(response.headers()["x-ratelimit-remaining"], "0");
    // 30 ops took 30 tokens of 20: the next request waits out the debt.
    let next = http.get(format!("{gateway}/v1/kv/k0")).header("x-api-key", &key).send().await.unwrap();
    assert_eq!(next.status(), 429);
    let retry: u64 = next.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((10..=12).contains(&retry), "ten tokens of debt at one per second: {retry} s");
}

/// `kv export` then `kv import` into an empty account: 10,000 keys, binary values and TTLs come
/// back exactly; a malformed file is refused whole, naming the line.
#[tokio::test]
async fn export_then_import_reproduces_an_account() {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as BASE64;

    let cluster = common::start_cluster_with(&[("RATE_LIMIT_PER_MINUTE", "0")]);
    let http = common::http();
    let gateway = cluster.gateway.clone();
    let (_, source) = common::tenant(&http, &cluster.users, "exporter").await;
    let (_, target) = common::tenant(&http, &cluster.users, "importer").await;
    const KEYS: usize = 10_000;
    let value_of = |n: usize| -> Vec<u8> { (0..(n % 64 + 1)).map(|i| ((n * 31 + i * 7) % 256) as u8).collect() };
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(1000) {
        let ops: Vec<Value> = chunk
            .iter()
            .map(|&n| {
                let mut op =
                    json!({"op": "put", "key": format!("item/{n:05}"), "value_base64": BASE64.encode(value_of(n))});
                if n % 3 == 0 {
                    op["ttl"] = json!("2h");
                    op["content_type"] = json!("application/x-test");
                }
                op
            })
            .collect();
        let results = results_of(batch(&http, &gateway, &source, &json!({ "ops": ops })).await).await;
        assert!(results.iter().all(|result| result["status"] == 200));
    }
    let client = crate::cli_support::Client::new(&gateway, &cluster.users, None);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.jsonl");
    let output = client.run(&["kv", "export", "--api-key", &source]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    std::fs::write(&file, &output.stdout).unwrap();
    let lines: Vec<Value> =
        String::from_utf8(output.stdout).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(lines.len(), KEYS);
    assert!(String::from_utf8_lossy(&output.stderr).contains("exported 10000 keys"));

    let output = client.run(&["kv", "import", file.to_str().unwrap(), "--api-key", &target]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("imported 10000 keys"));
    let again = client.run(&["kv", "export", "--api-key", &target]);
    let copied: Vec<Value> =
        String::from_utf8(again.stdout).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(copied.len(), KEYS);
    for (n, (original, copy)) in lines.iter().zip(&copied).enumerate() {
        assert_eq!(original["key"], copy["key"]);
        assert_eq!((&original["value"], &original["value_base64"]), (&copy["value"], &copy["value_base64"]), "{n}");
        assert_eq!(original["content_type"], copy["content_type"]);
        let ttl = |line: &Value| line["ttl"].as_str().map(|ttl| ydht::duration::parse(ttl).unwrap().as_secs());
        match (ttl(original), ttl(copy)) {
            (None, None) => {}
            (Some(before), Some(after)) => assert!(after <= before && before - after < 120, "{n}: {before} {after}"),
            other => panic!("{n}: the TTL changed: {other:?}"),
        }
    }
    let n = 1234;
    let line = copied.iter().find(|line| line["key"] == format!("item/{n:05}")).unwrap();
    let bytes = match (&line["value"], &line["value_base64"]) {
        (Value::String(text), _) => text.as_bytes().to_vec(),
        (_, Value::String(encoded)) => BASE64.decode(encoded).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(bytes, value_of(n), "binary values survive byte for byte");

    // A malformed line: exit 2 naming it, and nothing of the file is written.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"key\":\"fresh\",\"value\":\"x\"}\n{\"key\":\"broken\"}\n").unwrap();
    let output = client.run(&["kv", "import", bad.to_str().unwrap(), "--api-key", &target]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("line 2"), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(strong_get(&http, &gateway, &target, "fresh").await, None);

    // A key the gateway refuses (an oversized value: 413) is listed and sets the exit code; the
    // others are written.
    let refused = dir.path().join("refused.jsonl");
    let big = "x".repeat((1 << 20) + 1);
    std::fs::write(
        &refused,
        format!("{{\"key\":\"ok\",\"value\":\"fine\"}}\n{{\"key\":\"big\",\"value\":\"{big}\"}}\n"),
    )
    .unwrap();
    let output = client.run(&["kv", "import", refused.to_str().unwrap(), "--api-key", &target]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("big: 413") && stderr.contains("1 of 2 keys were not imported"), "{stderr}");
    assert_eq!(strong_get(&http, &gateway, &target, "ok").await.as_deref(), Some("fine"));
}
