//! The real `ydht` client against a real cluster (`ydht serve all` on
//! ephemeral ports): signup → login → apikey create --use → kv put/get/list/
//! delete/locate → status, stdin and binary values, the credentials file,
//! token refresh after expiry, and every exit code.

use crate::cli_support;
use crate::common;

use std::time::{SystemTime, UNIX_EPOCH};

use cli_support::{Client, closed_port, expect_code, one_error_line};
use serde_json::Value;

const PASSWORD: &[u8] = b"securepass123\n";

fn client_for(cluster: &common::Cluster) -> Client {
    Client::new(&cluster.gateway, &cluster.users, Some(cluster.data_dir.path()))
}

/// Signs up `name` (which logs in), creates a default API key; returns its id.
fn onboard(client: &Client, name: &str) -> i64 {
    let email = format!("{name}@example.com");
    let args = ["signup", "--email", &email, "--username", name, "--password-stdin"];
    expect_code(&client.run_with_stdin(&args, PASSWORD), 0, &args);
    let created = client.json(&["apikey", "create", "--name", "cli", "--use"]);
    assert_eq!(created["default"], true);
    created["id"].as_i64().expect("key id")
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[test]
fn account_keys_values_locate_and_status_end_to_end() {
    let cluster = common::start_cluster();
    let client = client_for(&cluster);

    // signup logs in; the tokens are in a file of mode 0600.
    let args = ["signup", "--email", "alice@example.com", "--username", "alice", "--password-stdin"];
    let output = client.run_with_stdin(&args, PASSWORD);
    expect_code(&output, 0, &args);
    assert!(String::from_utf8_lossy(&output.stdout).contains("Signed up and logged in as alice"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(client.credentials_path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "credentials.json mode");
    }
    let credentials = client.credentials();
    assert!(credentials["session"]["access_token"].as_str().is_some_and(|token| !token.is_empty()));
    let me = client.json(&["whoami"]);
    assert_eq!(me["user"]["username"], "alice");
    let user_id = me["user"]["id"].as_i64().expect("user id");

    // logout revokes; login again; a wrong password is exit 3.
    client.ok(&["logout"]);
    assert!(!client.credentials_path().exists() || client.credentials()["session"].is_null());
    expect_code(&client.run(&["whoami"]), 3, &["whoami"]);
    let args = ["login", "--email", "alice@example.com", "--password-stdin"];
    expect_code(&client.run_with_stdin(&args, b"wrong-password\n"), 3, &args);
    expect_code(&client.run_with_stdin(&args, PASSWORD), 0, &args);

    // An API key, shown once, stored as the default.
    let created = client.json(&["apikey", "create", "--name", "laptop", "--scopes", "read,write", "--use"]);
    let key_id = created["id"].as_i64().expect("key id");
    assert!(created["key"].as_str().is_some_and(|key| key.starts_with("ydht_")));
    assert_eq!(client.credentials()["api_key"]["key"], created["key"]);
    let listed = client.json(&["apikey", "list"]);
    assert_eq!(listed["count"], 1);
    assert_eq!(listed["api_keys"][0]["name"], "laptop");
    assert!(listed["api_keys"][0].get("key").is_none(), "the list never shows the full key");
    let table = String::from_utf8(client.ok(&["apikey", "list"])).unwrap();
    assert!(table.contains("laptop") && table.contains("read,write"), "{table}");

    // put from the argument, get the exact bytes back.
    client.ok(&["kv", "put", "greeting", "hello world"]);
    assert_eq!(client.ok(&["kv", "get", "greeting"]), b"hello world");

    // Binary values from stdin and from a file; `get -o FILE` writes them unchanged.
    let binary: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 256) as u8).collect();
    let args = ["kv", "put", "blob/bin"];
    expect_code(&client.run_with_stdin(&args, &binary), 0, &args);
    assert_eq!(client.ok(&["kv", "get", "blob/bin"]), binary);
    let out = client.config_dir.path().join("out.bin");
    client.ok(&["kv", "get", "blob/bin", "-o", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), binary);
    let input = client.config_dir.path().join("in.json");
    std::fs::write(&input, br#"{"name":"John"}"#).unwrap();
    let written = client.json(&[
        "kv",
        "put",
        "user:123",
        "--file",
        input.to_str().unwrap(),
        "--content-type",
        "application/json",
        "--consistency",
        "strong",
    ]);
    assert_eq!(written["success"], true);
    assert_eq!(written["key"], "user:123");
    let read = client.json(&["kv", "get", "user:123", "--consistency", "strong"]);
    assert_eq!(read["value"], r#"{"name":"John"}"#);
    assert_eq!(read["content_type"], "application/json");
    let read = client.json(&["kv", "get", "blob/bin"]);
    assert!(read["value_base64"].is_string(), "binary values are base64 in JSON: {read}");

    // TTL shows in the listing; prefix and limit work.
    client.ok(&["kv", "put", "session:1", "s", "--ttl", "1h"]);
    let listed = client.json(&["kv", "list"]);
    let keys: Vec<&str> = listed["keys"].as_array().unwrap().iter().map(|k| k["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["blob/bin", "greeting", "session:1", "user:123"]);
    let session = &listed["keys"][2];
    assert!(!session["expires_at"].is_null(), "TTL key has an expiry: {session}");
    assert_eq!(listed["keys"][0]["size"], 4096);
    let listed = client.json(&["kv", "list", "--prefix", "user:"]);
    assert_eq!(listed["keys"].as_array().unwrap().len(), 1);
    let listed = client.json(&["kv", "list", "--limit", "2"]);
    assert_eq!(listed["keys"].as_array().unwrap().len(), 2);
    assert!(listed["next_cursor"].is_string());
    let table = String::from_utf8(client.ok(&["kv", "list"])).unwrap();
    assert!(table.contains("greeting") && table.contains("4.0 KiB") && table.contains("4 keys"), "{table}");

    // locate: three owners of "{user_id}/greeting"; replication brings the value to all of them.
    let mut located = Value::Null;
    let replicated = cli_support::eventually(20, || {
        located = client.json(&["kv", "locate", "greeting"]);
        located["owners"].as_array().unwrap().iter().all(|owner| owner["record"]["state"] == "live")
    });
    assert!(replicated, "every owner holds the value: {located}");
    assert_eq!(located["stored_as"], format!("{user_id}/greeting"));
    let owners = located["owners"].as_array().unwrap();
    assert_eq!(owners.len(), 3);
    assert_eq!(owners[0]["role"], "primary");
    let versions: Vec<&Value> = owners.iter().map(|owner| &owner["record"]["version"]).collect();
    assert!(versions.iter().all(|version| *version == &located["newest_version"]), "{located}");
    let table = String::from_utf8(client.ok(&["kv", "locate", "greeting"])).unwrap();
    assert!(table.contains("primary") && table.contains("value (newest)"), "{table}");

    // delete; then get, delete and locate are exit 1.
    client.ok(&["kv", "delete", "greeting"]);
    let output = client.run(&["kv", "get", "greeting"]);
    expect_code(&output, 1, &["kv", "get", "greeting"]);
    assert_eq!(one_error_line(&output), "error: key not found: greeting");
    expect_code(&client.run(&["kv", "delete", "greeting"]), 1, &["kv", "delete", "greeting"]);
    expect_code(&client.run(&["kv", "locate", "greeting"]), 1, &["kv", "locate", "greeting"]);

    // status: every service up, nodes with key counts.
    let status = client.json(&["status"]);
    assert_eq!(status["healthy"], true, "{status}");
    let names: Vec<&str> = status["services"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    for expected in ["gateway", "users", "replicator", "node-1", "node-2", "node-3"] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
    let node_keys: u64 = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|service| service["kind"] == "node")
        .map(|service| service["key_count"].as_u64().expect("node key_count"))
        .sum();
    assert!(node_keys >= 3, "the nodes hold the keys: {status}");
    // `serve all` gives every node its peers: each reports its anti-entropy progress.
    for node in status["services"].as_array().unwrap().iter().filter(|service| service["kind"] == "node") {
        assert_eq!(node["anti_entropy"]["enabled"], true, "{node}");
        assert!(node["anti_entropy"]["rounds"].is_u64() && node["anti_entropy"]["keys_repaired"].is_u64(), "{node}");
    }
    let table = String::from_utf8(client.ok(&["status"])).unwrap();
    assert!(table.contains("node-1") && table.contains("replicator") && table.contains("up"), "{table}");
    assert!(table.contains("ANTI-ENTROPY") && table.contains(" rounds, "), "{table}");

    // revoke the default key: it is forgotten, and the gateway stops accepting it.
    let old_key = client.credentials()["api_key"]["key"].as_str().unwrap().to_string();
    let revoked = client.json(&["apikey", "revoke", &key_id.to_string()]);
    assert_eq!(revoked["forgot_default"], true);
    expect_code(&client.run(&["kv", "get", "user:123"]), 3, &["kv", "get", "user:123"]);
    let args = ["kv", "get", "user:123", "--api-key", &old_key];
    assert!(cli_support::eventually(10, || client.run(&args).status.code() == Some(3)), "revoked key refused");
    expect_code(&client.run(&["apikey", "revoke", "999999"]), 1, &["apikey", "revoke", "999999"]);
}

#[test]
fn every_exit_code_against_a_live_cluster() {
    let cluster = common::start_cluster();
    let client = client_for(&cluster);
    onboard(&client, "bob");

    // 0
    client.ok(&["kv", "put", "k", "v"]);

    // A refused access token that has not expired yet (here: damaged) is refreshed once and the request retried.
    let mut credentials = client.credentials();
    credentials["session"]["access_token"] = Value::from("not-a-jwt");
    std::fs::write(client.credentials_path(), serde_json::to_vec(&credentials).unwrap()).unwrap();
    assert_eq!(client.json(&["whoami"])["user"]["username"], "bob");
    assert_ne!(client.credentials()["session"]["access_token"], "not-a-jwt");

    // config.json supplies the URLs when neither flags nor environment do.
    let config = format!(r#"{{"gateway_url": "{}", "users_url": "{}"}}"#, cluster.gateway, cluster.users);
    std::fs::write(client.config_dir.path().join("config.json"), config).unwrap();
    let mut command = client.command(&["kv", "get", "k"]);
    command.env_remove("YDHT_GATEWAY_URL").env_remove("YDHT_USERS_URL");
    let output = cli_support::run(command, b"");
    expect_code(&output, 0, &["kv", "get", "k (URLs from config.json)"]);
    assert_eq!(output.stdout, b"v");
    // 1: missing key
    let output = client.run(&["kv", "get", "missing"]);
    expect_code(&output, 1, &["kv", "get", "missing"]);
    assert_eq!(one_error_line(&output), "error: key not found: missing");
    // 2: the gateway refuses bad input (a control character in the key), the users service a duplicate
    let bad_key = "bad\u{1}key";
    let output = client.run(&["kv", "put", bad_key, "v"]);
    expect_code(&output, 2, &["kv", "put", bad_key, "v"]);
    assert!(one_error_line(&output).contains("gateway answered 400"));
    dot_keys_are_refused_and_dots_between_slashes_round_trip(&cluster, &client);
    let args = ["signup", "--email", "bob@example.com", "--username", "bob", "--password-stdin"];
    let output = client.run_with_stdin(&args, PASSWORD);
    expect_code(&output, 2, &args);
    assert!(one_error_line(&output).contains("409"));
    // 3: a wrong API key, a wrong cluster secret
    let args = ["kv", "get", "k", "--api-key", "ydht_not_a_real_key_0000000000000000"];
    expect_code(&client.run(&args), 3, &args);
    let args = ["kv", "locate", "k", "--cluster-secret", "wrong"];
    let output = client.run(&args);
    expect_code(&output, 3, &args);
    assert!(one_error_line(&output).contains("cluster secret"));
    // status without the cluster secret: the public services only, a note, exit 0.
    let no_secret = Client::new(&cluster.gateway, &cluster.users, None);
    let output = no_secret.run(&["status", "--output", "json"]);
    expect_code(&output, 0, &["status (no secret)"]);
    let document: Value = serde_json::from_slice(&output.stdout).unwrap();
    let names: Vec<&str> =
        document["services"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["gateway", "users"]);
    assert!(String::from_utf8_lossy(&output.stderr).starts_with("note: nodes and replicator not shown"));

    // 4: the gateway unreachable
    let port = closed_port();
    let args = ["--gateway", &format!("http://127.0.0.1:{port}"), "kv", "get", "k"];
    let output = client.run(&args);
    expect_code(&output, 4, &args);
    assert_eq!(
        one_error_line(&output),
        format!("error: cannot reach gateway at http://127.0.0.1:{port}: connection refused")
    );
    let output = client.run(&["--gateway", &format!("http://127.0.0.1:{port}"), "status"]);
    expect_code(&output, 4, &["status"]);
}

/// The keys `.` and `..` cannot travel in a URL (parsers drop dot segments, `%2E` included): put, get
/// and delete are exit 2 with one line, never the key listing; the gateway refuses them sent raw,
/// `%2E%2E` decoded; keys with dot segments between slashes are one segment and round-trip.
fn dot_keys_are_refused_and_dots_between_slashes_round_trip(cluster: &common::Cluster, client: &Client) {
    for dots in [".", ".."] {
        for args in [&["kv", "put", dots, "v"][..], &["kv", "get", dots], &["kv", "delete", dots]] {
            let output = client.run(args);
            expect_code(&output, 2, args);
            assert!(one_error_line(&output).contains("not allowed"), "{args:?}");
            assert!(output.stdout.is_empty(), "{args:?} printed {:?}", String::from_utf8_lossy(&output.stdout));
        }
    }
    let api_key = client.credentials()["api_key"]["key"].as_str().unwrap().to_string();
    let address = cluster.gateway.trim_start_matches("http://").to_string();
    for path in ["/v1/kv/%2E%2E", "/v1/kv/%2e", "/v1/kv/.."] {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        let request = format!(
            "PUT {path} HTTP/1.1\r\nHost: {address}\r\nX-API-Key: {api_key}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nv"
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(answer.contains("not allowed"), "{path}: {answer}");
    }
    let listed = client.json(&["kv", "list"]);
    assert!(listed["keys"].as_array().unwrap().iter().all(|k| k["key"] != "." && k["key"] != ".."), "{listed}");
    for key in ["a/../b", "./x", "x/..", "..."] {
        client.ok(&["kv", "put", key, key]);
        assert_eq!(client.ok(&["kv", "get", key]), key.as_bytes(), "{key:?}");
        client.ok(&["kv", "delete", key]);
        expect_code(&client.run(&["kv", "get", key]), 1, &["kv", "get", key]);
    }
}

#[test]
fn expired_access_token_is_refreshed_automatically() {
    let cluster = common::start_cluster_with(&[("JWT_EXPIRATION", "2s")]);
    let client = client_for(&cluster);
    onboard(&client, "carol");
    let before = client.credentials();
    let expires_at = before["session"]["access_expires_at"].as_u64().expect("expiry");
    assert!(expires_at <= unix_now() + 3, "a 2 s token: {before}");

    // Wait until the stored access token is really refused by the users service.
    let token = before["session"]["access_token"].as_str().unwrap().to_string();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let http = common::http();
    let me = format!("{}/me", cluster.users);
    let expired = cli_support::eventually(15, || {
        runtime.block_on(async { http.get(&me).bearer_auth(&token).send().await.unwrap().status() == 401 })
    });
    assert!(expired, "the access token expired");

    // whoami still works: the client refreshed and stored the rotated pair.
    let whoami = client.json(&["whoami"]);
    assert_eq!(whoami["user"]["username"], "carol");
    let after = client.credentials();
    assert_ne!(after["session"]["access_token"], before["session"]["access_token"]);
    assert_ne!(after["session"]["refresh_token"], before["session"]["refresh_token"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(client.credentials_path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "still 0600 after the refresh rewrote it");
    }
    // And so does an authorized command after the next expiry.
    client.ok(&["apikey", "list"]);

    // A session whose refresh token is no longer accepted (logged out) asks to log in again.
    let mut stale = client.credentials();
    client.ok(&["logout"]);
    stale["session"]["access_expires_at"] = Value::from(0);
    std::fs::write(client.credentials_path(), serde_json::to_vec(&stale).unwrap()).unwrap();
    let output = client.run(&["whoami"]);
    expect_code(&output, 3, &["whoami"]);
    assert!(one_error_line(&output).contains("ydht login"));
    assert!(client.credentials()["session"].is_null(), "the dead session is forgotten");
}

/// `ydht serve all` prints its banner once, after every service announced itself (no
/// "listening" line after "Press Ctrl-C to stop"), logs readable membership changes (no Rust
/// debug output), and stops promptly on SIGTERM although the nodes hold long polls on the
/// gateway, saying so.
#[test]
fn serve_all_banner_comes_last_and_sigterm_stops_promptly() {
    use std::io::{BufRead, BufReader};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    let data_dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ydht"));
    command
        .args(["serve", "all"])
        .env("YDHT_DATA_DIR", data_dir.path())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (name, value) in
        [("GATEWAY_PORT", "0"), ("USERMANAGER_PORT", "0"), ("DHTNODE_PORT", "0"), ("REPLICATOR_PORT", "0")]
    {
        command.env(name, value);
    }
    for name in ["YDHT_NODES", "YDHT_CLUSTER_SECRET", "DATABASE_URL", "JWT_SECRET", "YDHT_JOIN", "YDHT_ADVERTISE_URL"] {
        command.env_remove(name);
    }
    let mut child = command.spawn().expect("spawn ydht serve all");
    let collect = |stream: Box<dyn std::io::Read + Send>| {
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        lines
    };
    let stdout = collect(Box::new(child.stdout.take().unwrap()));
    let stderr = collect(Box::new(child.stderr.take().unwrap()));
    let registered =
        || stderr.lock().unwrap().iter().filter(|line| line.contains("registered with the cluster")).count();
    // Every node registered and is now following the membership with a long poll on the gateway.
    let ready = cli_support::eventually(60, || registered() == 3);
    if !ready {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the nodes did not register: {:?}", stderr.lock().unwrap());
    }

    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let asked = Instant::now();
    let mut status = None;
    while asked.elapsed() < Duration::from_secs(30) && status.is_none() {
        status = child.try_wait().unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = asked.elapsed();
    if status.is_none() {
        let _ = child.kill();
    }
    let _ = child.wait();
    assert!(status.is_some_and(|status| status.success()), "serve all did not stop cleanly: {status:?}");
    assert!(took < Duration::from_secs(3), "stopping took {took:?}");

    let stdout = stdout.lock().unwrap().clone();
    let banner_end = stdout.iter().position(|line| line.contains("Press Ctrl-C to stop")).expect("a banner");
    assert!(!stdout[banner_end..].iter().any(|line| line.contains("listening")), "{stdout:#?}");
    assert_eq!(stdout.iter().filter(|line| line.contains("listening on")).count(), 6, "{stdout:#?}");
    let stderr = stderr.lock().unwrap().clone();
    assert!(stderr.iter().any(|line| line.contains("gateway: shutting down")), "{stderr:#?}");
    assert!(stderr.iter().any(|line| line.contains("gateway: stopped")), "{stderr:#?}");
    let changed = stderr.iter().find(|line| line.contains("membership changed")).expect("a membership log line");
    assert!(changed.contains("change=seed node-1=http://") && !changed.contains("NodeInfo {"), "{changed}");
}

/// `GET {url}/health` over plain HTTP: the status code, or why there is none.
fn health_status(url: &str) -> Result<u16, String> {
    use std::io::{Read, Write};
    let address = url.strip_prefix("http://").ok_or_else(|| format!("not an http URL: {url}"))?;
    let mut stream = std::net::TcpStream::connect(address).map_err(|error| format!("{url}: {error}"))?;
    let timeout = Some(std::time::Duration::from_secs(5));
    stream.set_read_timeout(timeout).and_then(|()| stream.set_write_timeout(timeout)).map_err(|e| e.to_string())?;
    let request = format!("GET /health HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|error| format!("{url}: {error}"))?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(|error| format!("{url}/health: no answer: {error}"))?;
    let status = answer.split(' ').nth(1).and_then(|code| code.parse().ok());
    status.ok_or_else(|| format!("{url}/health: not an HTTP answer: {answer:?}"))
}

/// `ydht serve all` prints its banner only once every service serves: at the moment the
/// "Press Ctrl-C to stop" line appears, every URL of the banner answers `/health` 200, and
/// the nodes' recovery, the users service's migrations and the replicator's queue recovery
/// were all logged before the banner (stdout and stderr share one pipe, so the order of
/// the lines is the order of the writes).
#[test]
fn serve_all_prints_its_banner_once_every_service_serves() {
    use std::io::{BufRead, BufReader};
    use std::time::Duration;

    /// Kills and reaps the server on every path.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    let data_dir = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ydht"));
    command
        .args(["serve", "all", "--gateway-port", "0", "--users-port", "0", "--node-port", "0"])
        .args(["--replicator-port", "0"])
        .env("YDHT_DATA_DIR", data_dir.path())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(writer.try_clone().unwrap())
        .stderr(writer);
    for name in ["YDHT_NODES", "YDHT_CLUSTER_SECRET", "DATABASE_URL", "JWT_SECRET", "YDHT_JOIN", "YDHT_ADVERTISE_URL"] {
        command.env_remove(name);
    }
    let server = Reap(command.spawn().expect("spawn ydht serve all"));
    drop(command); // our copies of the pipe's write end: EOF once the server exits
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });

    let mut seen = Vec::new();
    let mut urls = Vec::new();
    loop {
        let Ok(line) = received.recv_timeout(Duration::from_secs(60)) else {
            panic!("no banner within 60 s (or serve all exited): {seen:#?}");
        };
        if line.contains("Press Ctrl-C to stop") {
            break;
        }
        // Banner rows: `  gateway     http://127.0.0.1:PORT`.
        let fields: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with("  ") && fields.len() == 2 && fields[1].starts_with("http://") {
            urls.push((fields[0].to_string(), fields[1].to_string()));
        }
        seen.push(line);
    }
    // At once, before reading anything else.
    let answers: Vec<_> = urls.iter().map(|(name, url)| (name.clone(), health_status(url))).collect();
    drop(server);

    let names: Vec<&str> = urls.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["gateway", "users", "replicator", "node-1", "node-2", "node-3"], "{seen:#?}");
    for (name, answer) in answers {
        assert_eq!(answer, Ok(200), "{name} at the banner: {seen:#?}");
    }
    let logged = |text: &str| seen.iter().filter(|line| line.contains(text)).count();
    assert_eq!(logged("recovered node data"), 3, "every node recovered before the banner: {seen:#?}");
    assert_eq!(logged("migrations applied"), 1, "the users database was migrated before the banner: {seen:#?}");
    assert_eq!(logged("replication queue recovered"), 1, "the replicator recovered before the banner: {seen:#?}");
}
