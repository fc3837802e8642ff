//! Shared helpers for tests that run the real `ydht` binary: starting
//! `ydht serve all` or single services on ephemeral ports, reading their
//! `ydht <service> listening on http://ADDR` lines, and killing them on drop.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long a service may take to announce itself.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A `ydht` child process, killed (and reaped) when dropped.
pub struct Service {
    child: Child,
    /// `service name → base URL` from the announce lines.
    pub urls: HashMap<String, String>,
}

impl Service {
    /// Spawns `ydht <args>` with `env`, then waits until every service in `expect` announced itself.
    pub fn spawn(args: &[&str], env: &[(&str, &str)], expect: &[&str]) -> Service {
        Service::spawn_until(args, env, &|urls| expect.iter().all(|name| urls.contains_key(*name)), Stdio::inherit())
    }

    /// Like [`Service::spawn`], with the process's stderr (its logs) written to `log`.
    pub fn spawn_logging_to(args: &[&str], env: &[(&str, &str)], expect: &[&str], log: &std::path::Path) -> Service {
        let file = std::fs::File::create(log).expect("create log file");
        Service::spawn_until(args, env, &|urls| expect.iter().all(|name| urls.contains_key(*name)), Stdio::from(file))
    }

    fn spawn_until(
        args: &[&str],
        env: &[(&str, &str)],
        done: &dyn Fn(&HashMap<String, String>) -> bool,
        stderr: Stdio,
    ) -> Service {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ydht"));
        command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(stderr);
        for name in [
            "YDHT_NODES",
            "YDHT_REPLICATOR_URL",
            "YDHT_USERS_URL",
            "YDHT_CLUSTER_SECRET",
            "DATABASE_URL",
            "JWT_SECRET",
            "NODE_ID",
            "GATEWAY_PORT",
            "USERMANAGER_PORT",
            "DHTNODE_PORT",
            "REPLICATOR_PORT",
            "RATE_LIMIT_PER_MINUTE",
            "RATE_LIMIT_BURST",
            "YDHT_JOIN",
            "YDHT_ADVERTISE_URL",
            "YDHT_REBALANCE_RATE",
        ] {
            command.env_remove(name);
        }
        command.env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()));
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("spawn ydht");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    // Nobody listens any more; keep draining so the child never blocks on stdout.
                    continue;
                }
            }
        });
        let mut service = Service { child, urls: HashMap::new() };
        let deadline = Instant::now() + START_TIMEOUT;
        while !done(&service.urls) {
            let left = deadline.saturating_duration_since(Instant::now());
            match receiver.recv_timeout(left) {
                Ok(line) => {
                    if let Some((name, url)) = parse_announce(&line) {
                        service.urls.insert(name, url);
                    }
                }
                Err(_) => {
                    let status = service.child.try_wait().ok().flatten();
                    panic!(
                        "ydht {args:?} did not announce its services (got {:?}; exit status {status:?})",
                        service.urls
                    );
                }
            }
        }
        service
    }

    /// Like [`Service::spawn_one`], with the process's stderr (its logs) written to `log`.
    pub fn spawn_one_logging_to(args: &[&str], env: &[(&str, &str)], log: &std::path::Path) -> (Service, String) {
        let file = std::fs::File::create(log).expect("create log file");
        let service = Service::spawn_until(args, env, &|urls| !urls.is_empty(), Stdio::from(file));
        let url = service.urls.values().next().expect("one announce line").clone();
        (service, url)
    }

    /// Spawns a single service (`ydht serve <name>`) and returns it with the URL it announced.
    pub fn spawn_one(args: &[&str], env: &[(&str, &str)]) -> (Service, String) {
        let service = Service::spawn_until(args, env, &|urls| !urls.is_empty(), Stdio::inherit());
        let url = service.urls.values().next().expect("one announce line").clone();
        (service, url)
    }

    /// The announced URL of `name`.
    pub fn url(&self, name: &str) -> String {
        self.urls.get(name).unwrap_or_else(|| panic!("{name} was not announced: {:?}", self.urls)).clone()
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits (up to 30 s) for the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `ydht users listening on http://127.0.0.1:1234` → `("users", "http://127.0.0.1:1234")`.
pub fn parse_announce(line: &str) -> Option<(String, String)> {
    let rest = line.trim().strip_prefix("ydht ")?;
    let (name, url) = rest.split_once(" listening on ")?;
    Some((name.to_string(), url.trim().to_string()))
}

/// A whole cluster from `ydht serve all` in a temporary data dir.
pub struct Cluster {
    /// The `serve all` process.
    pub process: Service,
    /// The data dir (removed on drop, after the process is killed).
    pub data_dir: tempfile::TempDir,
    /// Gateway base URL.
    pub gateway: String,
    /// Users service base URL.
    pub users: String,
    /// Replicator base URL.
    pub replicator: String,
    /// Node base URLs, node-1 first.
    pub nodes: Vec<String>,
}

impl Cluster {
    /// The cluster secret `serve all` generated in the data dir.
    pub fn secret(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("cluster.secret")).expect("cluster.secret").trim().to_string()
    }
}

/// Starts `ydht serve all` with every port 0 and `extra_env` (e.g. a small RATE_LIMIT_BURST).
pub fn start_cluster_with(extra_env: &[(&str, &str)]) -> Cluster {
    start_cluster_in(tempfile::tempdir().expect("temp dir"), extra_env)
}

/// Starts `ydht serve all` on an existing data dir (e.g. to restart a stopped cluster).
pub fn start_cluster_in(data_dir: tempfile::TempDir, extra_env: &[(&str, &str)]) -> Cluster {
    let dir = data_dir.path().to_str().expect("utf-8 temp dir").to_string();
    let mut env: Vec<(&str, &str)> = vec![
        ("YDHT_DATA_DIR", &dir),
        ("GATEWAY_PORT", "0"),
        ("USERMANAGER_PORT", "0"),
        ("DHTNODE_PORT", "0"),
        ("REPLICATOR_PORT", "0"),
        ("RATE_LIMIT_PER_MINUTE", "6000"),
        ("RATE_LIMIT_BURST", "1000"),
    ];
    env.retain(|(name, _)| !extra_env.iter().any(|(extra, _)| extra == name));
    env.extend_from_slice(extra_env);
    let process =
        Service::spawn(&["serve", "all"], &env, &["users", "node-1", "node-2", "node-3", "replicator", "gateway"]);
    let nodes = (1..=3).map(|i| process.url(&format!("node-{i}"))).collect();
    Cluster {
        gateway: process.url("gateway"),
        users: process.url("users"),
        replicator: process.url("replicator"),
        nodes,
        process,
        data_dir,
    }
}

/// Starts `ydht serve all` with every port 0.
pub fn start_cluster() -> Cluster {
    start_cluster_with(&[])
}

/// The HTTP client tests use (30 s timeout per request).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// An account with a bearer token.
pub struct Account {
    /// Its access token.
    pub token: String,
    /// Its user id.
    pub user_id: i64,
}

/// Signs up `name` (`name@example.com`, password `securepass123`) and logs in, as the README does.
pub async fn signup_and_login(client: &reqwest::Client, users: &str, name: &str) -> Account {
    let email = format!("{name}@example.com");
    let response = client
        .post(format!("{users}/signup"))
        .json(&json!({"email": email, "username": name, "password": "securepass123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "signup: {}", response.text().await.unwrap());
    let created: Value = response.json().await.unwrap();
    let response = client
        .post(format!("{users}/login"))
        .json(&json!({"email": email, "password": "securepass123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let login: Value = response.json().await.unwrap();
    Account {
        token: login["access_token"].as_str().expect("access_token").to_string(),
        user_id: created["id"].as_i64().expect("user id"),
    }
}

/// Creates an API key with `scopes`; returns `(key id, full key)`.
pub async fn create_key(client: &reqwest::Client, users: &str, account: &Account, scopes: &[&str]) -> (i64, String) {
    let response = client
        .post(format!("{users}/apikeys"))
        .bearer_auth(&account.token)
        .json(&json!({"name": "test key", "scopes": scopes, "expires_in_days": 90}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "create key: {}", response.text().await.unwrap());
    let key: Value = response.json().await.unwrap();
    (key["id"].as_i64().expect("key id"), key["key"].as_str().expect("key").to_string())
}

/// A user with a read+write key, in one call.
pub async fn tenant(client: &reqwest::Client, users: &str, name: &str) -> (Account, String) {
    let account = signup_and_login(client, users, name).await;
    let (_, key) = create_key(client, users, &account, &["read", "write"]).await;
    (account, key)
}

/// Polls `check` every 100 ms until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A node's view of a storage key: `(status, body, version header)`, read with the cluster secret.
pub async fn read_node(
    client: &reqwest::Client,
    node: &str,
    secret: &str,
    storage_key: &str,
) -> (u16, Vec<u8>, Option<u64>) {
    let mut url = reqwest::Url::parse(node).unwrap();
    url.path_segments_mut().unwrap().pop_if_empty().extend(["store", storage_key]);
    let response = client.get(url).header("x-cluster-secret", secret).send().await.unwrap();
    let status = response.status().as_u16();
    let version = response.headers().get("x-version").and_then(|v| v.to_str().ok()?.parse().ok());
    (status, response.bytes().await.unwrap().to_vec(), version)
}

/// The port of a `http://host:port` URL.
pub fn port_of(url: &str) -> String {
    url.rsplit(':').next().expect("a URL with a port").to_string()
}

/// Users, storage nodes, a replicator and a gateway, each its own `ydht serve …` process on
/// port 0, sharing a data dir and a cluster secret. Nodes run without peers (no anti-entropy).
/// Field order is drop order: the processes die before the data dir is removed.
pub struct Separate {
    /// The gateway and its URL.
    pub gateway: (Service, String),
    /// The replicator and its URL.
    pub replicator: (Service, String),
    /// The users service and its URL.
    pub users: (Service, String),
    /// The nodes (`node-1` first) and their URLs.
    pub nodes: Vec<(Service, String)>,
    /// The shared data dir, removed on drop.
    _dir: tempfile::TempDir,
    /// Environment every process gets (data dir, cluster secret, plus the caller's).
    env: Vec<(&'static str, String)>,
    /// The gateway's own environment (its nodes, users service and replicator).
    gateway_env: Vec<(&'static str, String)>,
}

/// What [`Separate::start`] varies.
#[derive(Default)]
pub struct SeparateOptions {
    /// Extra environment for every process (e.g. `RUST_LOG`).
    pub env: Vec<(&'static str, String)>,
    /// Extra environment for the replicator.
    pub replicator_env: Vec<(&'static str, String)>,
    /// Extra environment for the gateway.
    pub gateway_env: Vec<(&'static str, String)>,
}

impl Separate {
    /// Starts `nodes` storage nodes and the other services with the cluster `secret`; the
    /// gateway has rate limiting off.
    pub fn start(secret: &str, nodes: usize, options: SeparateOptions) -> Separate {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut env =
            vec![("YDHT_DATA_DIR", dir.path().to_str().unwrap().to_string()), ("YDHT_CLUSTER_SECRET", secret.into())];
        env.extend(options.env);
        let spawn = |args: &[&str], extra: &[(&'static str, String)]| spawn_with(args, &env, extra);
        let users = spawn(&["serve", "users"], &[("USERMANAGER_PORT", "0".into())]);
        let nodes: Vec<(Service, String)> = (1..=nodes).map(|index| spawn_node(&env, index, "0")).collect();
        let mut replicator_env = vec![("REPLICATOR_PORT", "0".to_string())];
        replicator_env.extend(options.replicator_env);
        let replicator = spawn(&["serve", "replicator"], &replicator_env);
        let mut gateway_env = vec![
            ("GATEWAY_PORT", "0".to_string()),
            ("YDHT_NODES", node_list(&nodes)),
            ("YDHT_USERS_URL", users.1.clone()),
            ("YDHT_REPLICATOR_URL", replicator.1.clone()),
            ("RATE_LIMIT_PER_MINUTE", "0".into()),
        ];
        gateway_env.extend(options.gateway_env);
        let gateway = spawn(&["serve", "gateway"], &gateway_env);
        Separate { gateway, replicator, users, nodes, _dir: dir, env, gateway_env }
    }

    /// The nodes as the ring sees them (`node-1` first).
    pub fn infos(&self) -> Vec<ydht::ring::NodeInfo> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(index, (_, url))| ydht::ring::NodeInfo { id: format!("node-{}", index + 1), url: url.clone() })
            .collect()
    }

    /// Kills node `index` (0-based) if it still runs and starts it again on its port and data.
    pub fn restart_node(&mut self, index: usize) {
        let port = port_of(&self.nodes[index].1);
        self.nodes[index].0.kill();
        self.nodes[index] = spawn_node(&self.env, index + 1, &port);
    }

    /// Kills (SIGKILL) the gateway if it still runs and starts it again on its port.
    pub fn restart_gateway(&mut self) {
        let port = port_of(&self.gateway.1);
        self.gateway.0.kill();
        let mut env = self.gateway_env.clone();
        env.retain(|(name, _)| *name != "GATEWAY_PORT");
        env.push(("GATEWAY_PORT", port));
        self.gateway = spawn_with(&["serve", "gateway"], &self.env, &env);
    }

    /// Kills the replicator if it still runs and starts it again on its port and queue log.
    pub fn restart_replicator(&mut self) {
        let port = port_of(&self.replicator.1);
        self.replicator.0.kill();
        self.replicator = spawn_with(&["serve", "replicator"], &self.env, &[("REPLICATOR_PORT", port)]);
    }
}

fn spawn_with(args: &[&str], env: &[(&'static str, String)], extra: &[(&'static str, String)]) -> (Service, String) {
    let env: Vec<(&str, &str)> = env.iter().chain(extra).map(|(name, value)| (*name, value.as_str())).collect();
    Service::spawn_one(args, &env)
}

fn spawn_node(env: &[(&'static str, String)], index: usize, port: &str) -> (Service, String) {
    spawn_with(&["serve", "node"], env, &[("NODE_ID", format!("node-{index}")), ("DHTNODE_PORT", port.to_string())])
}

fn node_list(nodes: &[(Service, String)]) -> String {
    nodes.iter().enumerate().map(|(index, (_, url))| format!("node-{}={url}", index + 1)).collect::<Vec<_>>().join(",")
}

/// The replicator's `POST /jobs` (with the cluster secret `secret`): `jobs` as
/// (target base URLs, write), encoded by `ydht::wire::jobs`; with `wait`,
/// `x-ydht-wait: N`.
pub fn post_jobs_request(
    http: &reqwest::Client,
    replicator: &str,
    secret: &str,
    jobs: &[(Vec<String>, ydht::wal::Record)],
    wait: Option<u32>,
) -> reqwest::RequestBuilder {
    let body =
        ydht::wire::jobs::encode(jobs.iter().map(|(targets, write)| (targets.as_slice(), write.borrowed()))).unwrap();
    let mut request = http
        .post(format!("{}/jobs", replicator.trim_end_matches('/')))
        .header("x-cluster-secret", secret)
        .header("content-type", ydht::wire::jobs::JOBS_CONTENT_TYPE)
        .body(body);
    if let Some(wait) = wait {
        request = request.header("x-ydht-wait", wait.to_string());
    }
    request
}
