//! Runs the real `ydht serve node` binary for integration tests: port 0, the
//! address read from its `listening on` line, killed on drop.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// The cluster secret every test node uses.
pub const SECRET: &str = "test-cluster-secret";

/// A running node process.
pub struct NodeProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

fn command(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ydht"));
    command
        .args(["serve", "node"])
        .args(if args.contains(&"--port") { &[][..] } else { &["--port", "0"][..] })
        .args(["--node-id", "node-t", "--data-dir"])
        .arg(data_dir)
        .args(["--cluster-secret", SECRET])
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("YDHT_MAX_VALUE_BYTES")
        .env_remove("YDHT_WAL_MAX_BYTES")
        .env_remove("YDHT_SYNC_MODE")
        .env_remove("YDHT_SALVAGE_WAL");
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

/// Copies `stream` into a string as it comes; the thread ends when the stream closes.
fn collect(stream: impl Read + Send + 'static) -> (Arc<Mutex<String>>, std::thread::JoinHandle<()>) {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut sink = sink.lock().unwrap();
            sink.push_str(&line);
            sink.push('\n');
        }
    });
    (text, reader)
}

impl NodeProcess {
    /// Starts a node on `data_dir` and waits for its `listening on` line.
    pub fn start(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = command(data_dir, args, env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start ydht");
        let (stderr, stderr_reader) = collect(child.stderr.take().unwrap());
        let stdout = child.stdout.take().unwrap();
        let (found, address) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("ydht node listening on ") {
                    let _ = found.send(url.to_string());
                }
            }
        });
        let mut node = Self { child, url: String::new(), stderr, stderr_reader: Some(stderr_reader) };
        match address.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => node.url = url,
            Err(_) => panic!("the node did not announce its address; stderr:\n{}", node.stderr()),
        }
        node
    }

    /// Runs a node that is expected to refuse to start; returns its exit status and stderr.
    pub fn start_failing(data_dir: &Path, args: &[&str]) -> (ExitStatus, String) {
        let output = command(data_dir, args, &[]).stdin(Stdio::null()).output().expect("cannot start ydht");
        assert!(
            !String::from_utf8_lossy(&output.stdout).contains("listening on"),
            "the node started although it should not have"
        );
        (output.status, String::from_utf8_lossy(&output.stderr).into_owned())
    }

    /// Everything the node logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit, and for [`NodeProcess::stderr`] to hold all it logged.
    pub fn terminate(&mut self) -> ExitStatus {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("wait for the node");
        // The pipe closed with the process (no child of its own holds it): the reader ends.
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        status
    }

    /// A URL on this node.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The node's data directory inside `data_dir`.
pub fn node_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("node-t")
}

/// Current Unix time in milliseconds.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The `/metrics` JSON of a node.
pub async fn metrics(client: &reqwest::Client, node: &NodeProcess) -> serde_json::Value {
    client.get(node.at("/metrics")).send().await.unwrap().json().await.unwrap()
}

/// The URL of `/store/{key}` on the node at `base`, with the key percent-encoded as one path segment.
pub fn store_url(base: &str, key: &str) -> reqwest::Url {
    let mut url = reqwest::Url::parse(&format!("{base}/store/")).unwrap();
    url.path_segments_mut().unwrap().pop_if_empty().push(key);
    url
}
