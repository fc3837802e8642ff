//! `ydht top` in a real terminal: tmux runs the binary, the test reads the
//! screen with `capture-pane`, types keys, and checks the exit status and
//! that the terminal settings were restored.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// How long to wait for something to appear on the screen.
const SCREEN_TIMEOUT: Duration = Duration::from_secs(30);

/// A private tmux server (its own socket) running one command in an 80×24 window;
/// killed on drop, so no process outlives the test.
struct Tmux {
    socket: String,
    dir: tempfile::TempDir,
}

impl Tmux {
    /// Starts `top_args` (arguments of `ydht top`) inside tmux. The shell around it records the
    /// terminal settings before and after, and `ydht top`'s exit status.
    fn start(top_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = format!("ydht-top-test-{}-{}", std::process::id(), unique());
        let path = |name: &str| quote(dir.path().join(name).to_str().unwrap());
        // `exec` keeps the pid the shell wrote down, so the test can watch (and reap) the process.
        let mut command = vec![
            "sh".to_string(),
            "-c".to_string(),
            quote(&format!("echo $$ > {}; exec \"$0\" \"$@\"", path("pid"))),
            quote(env!("CARGO_BIN_EXE_ydht")),
            "top".to_string(),
        ];
        command.extend(top_args.iter().map(|arg| quote(arg)));
        let script = format!(
            "stty -g > {before}; {top}; echo \"EXIT=$?\" > {exit}.tmp; stty -g > {after}; mv {exit}.tmp {exit}; sleep 600",
            before = path("stty-before"),
            after = path("stty-after"),
            exit = path("exit"),
            top = command.join(" "),
        );
        let tmux = Self { socket, dir };
        tmux.run(&["-f", "/dev/null", "new-session", "-d", "-s", "top", "-x", "80", "-y", "24", &script]);
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        let output = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("tmux is required for this test (apt-get install tmux; .ci/run installs it)");
        assert!(output.status.success(), "tmux {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        output
    }

    /// The visible screen as text.
    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }

    /// Polls the screen until `ready` accepts it; panics with the last screen after [`SCREEN_TIMEOUT`].
    fn wait_for_screen(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + SCREEN_TIMEOUT;
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; the screen shows:\n{screen}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn keys(&self, keys: &str) {
        self.run(&["send-keys", "-t", "top", keys]);
    }

    fn resize(&self, width: u16, height: u16) {
        self.run(&["resize-window", "-t", "top", "-x", &width.to_string(), "-y", &height.to_string()]);
    }

    /// Waits for `ydht top` to exit; returns the `EXIT=` line's status.
    fn wait_for_exit(&self) -> i32 {
        let file = self.file("exit");
        let deadline = Instant::now() + SCREEN_TIMEOUT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                return text.trim().strip_prefix("EXIT=").and_then(|code| code.parse().ok()).expect("EXIT=<code>");
            }
            assert!(Instant::now() < deadline, "ydht top did not exit; the screen shows:\n{}", self.screen());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Whether the terminal settings after `ydht top` equal those before (raw mode was undone).
    fn assert_terminal_restored(&self) {
        let read = |name: &str| std::fs::read_to_string(self.file(name)).unwrap();
        assert_eq!(read("stty-before"), read("stty-after"), "ydht top left the terminal in another mode");
        let alternate = self.run(&["display-message", "-p", "-t", "top", "#{alternate_on}"]);
        assert_eq!(String::from_utf8_lossy(&alternate.stdout).trim(), "0", "still on the alternate screen");
    }
}

impl Tmux {
    /// The pid of `ydht top`, once it started.
    fn top_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.file("pid")).ok()?.trim().parse().ok()
    }

    fn kill_server(&self) {
        let _ = Command::new("tmux").arg("-L").arg(&self.socket).arg("kill-server").output();
    }
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn is_running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.kill_server();
        // A `ydht top` that ignored the hang-up must not outlive the test.
        if let Some(pid) = self.top_pid().filter(|pid| is_running(*pid)) {
            // SAFETY: kill(2) on the pid of the process this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn without_a_terminal_top_exits_2_with_a_hint() {
    let output = Command::new(env!("CARGO_BIN_EXE_ydht"))
        .args(["top", "--cluster-secret", "s", "--gateway", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("needs an interactive terminal") && stderr.contains("ydht status"), "{stderr}");
}

#[test]
fn without_a_cluster_secret_top_exits_2_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ydht"))
        .args(["top", "--data-dir"])
        .arg(dir.path())
        .env_remove("YDHT_CLUSTER_SECRET")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--cluster-secret") && stderr.contains("cluster.secret"), "{stderr}");
    assert!(!Path::new(&dir.path().join("cluster.secret")).exists(), "top never generates a secret");
}

#[test]
fn closing_the_terminal_ends_top() {
    let gateway = format!("http://127.0.0.1:{}", closed_port());
    let tmux = Tmux::start(&["--gateway", &gateway, "--cluster-secret", "s"]);
    tmux.wait_for_screen("the dashboard", |s| s.contains("gateway DOWN"));
    let pid = tmux.top_pid().expect("the pid file is written before ydht top starts");
    assert!(is_running(pid));
    tmux.kill_server();
    let deadline = Instant::now() + SCREEN_TIMEOUT;
    while is_running(pid) {
        assert!(Instant::now() < deadline, "ydht top kept running after its terminal closed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_unreachable_gateway_is_shown_down_resizes_work_and_ctrl_c_restores_the_terminal() {
    let gateway = format!("http://127.0.0.1:{}", closed_port());
    let tmux = Tmux::start(&["--gateway", &gateway, "--cluster-secret", "s", "--interval", "200ms"]);
    let screen = tmux.wait_for_screen("the gateway shown DOWN", |s| s.contains("gateway DOWN"));
    assert!(screen.contains("refused"), "the reason is shown:\n{screen}");
    assert!(screen.contains(&gateway), "{screen}");

    tmux.resize(50, 12);
    tmux.wait_for_screen("the too-small notice", |s| s.contains("terminal too small"));
    tmux.resize(80, 24);
    tmux.wait_for_screen("the panels again", |s| s.contains("Replication") && s.contains("Events"));

    tmux.keys("C-c");
    assert_eq!(tmux.wait_for_exit(), 0);
    tmux.assert_terminal_restored();
}

/// The Ring panel's line of `node`, split into columns (the share bar has no spaces).
fn node_columns(screen: &str, node: &str) -> Option<Vec<String>> {
    let line = screen.lines().find(|line| line.contains(&format!("┃{node} ")))?;
    Some(line.trim_matches(|c| c == '┃' || c == ' ').split_whitespace().map(str::to_string).collect())
}

#[test]
fn a_running_cluster_is_shown_live_and_q_exits_0() {
    let cluster = common::start_cluster();
    let secret = cluster.secret();
    let tmux = Tmux::start(&["--gateway", &cluster.gateway, "--cluster-secret", &secret, "--interval", "300ms"]);
    let screen = tmux.wait_for_screen("three nodes UP with WAL and lag", |s| {
        s.contains("3/3 nodes UP")
            && (1..=3).all(|n| node_columns(s, &format!("node-{n}")).is_some_and(|c| c[1] == "UP"))
            && s.contains("WAL")
            && s.contains("lag")
            && s.contains("gateway UP")
            && s.contains("replic. UP")
    });
    for n in 1..=3 {
        let columns = node_columns(&screen, &format!("node-{n}")).unwrap();
        // NODE STATE SINCE BAR SHARE KEYS WAL DATA fs FILL
        assert!(columns[4].ends_with('%'), "share of node-{n}: {columns:?}");
        assert!(columns[6].ends_with('B'), "WAL size of node-{n}: {columns:?}");
    }
    assert!(screen.contains("lag     max 0"), "the replicator's lag is shown:\n{screen}");

    // Writes through the gateway show up: every node holds every key (N = 3 of 3 nodes).
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = common::http();
        let (_, api_key) = common::tenant(&client, &cluster.users, "operator").await;
        for i in 0..5 {
            let response = client
                .put(format!("{}/v1/kv/key-{i}", cluster.gateway))
                .header("x-api-key", &api_key)
                .header("x-consistency", "strong")
                .body(format!("value {i}"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
    });
    let screen = tmux.wait_for_screen("5 keys on every node and the requests counted", |s| {
        (1..=3).all(|n| node_columns(s, &format!("node-{n}")).is_some_and(|c| c[5] == "5"))
            && s.lines().any(|line| line.contains("rps") && line.contains("total 5"))
    });
    assert!(screen.contains("latency p50 "), "{screen}");

    tmux.keys("q");
    assert_eq!(tmux.wait_for_exit(), 0);
    tmux.assert_terminal_restored();
}

#[test]
fn a_down_node_is_shown_down_with_its_error_and_logged() {
    let cluster = common::start_cluster();
    // A fourth member that is not running, registered straight in the membership store (the
    // gateway would refuse a node it cannot reach), once the gateway has seeded the first three.
    let missing = format!("http://127.0.0.1:{}", closed_port());
    let data_dir = cluster.data_dir.path().to_str().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let membership = |path: &str, body: Option<serde_json::Value>| {
        runtime.block_on(async {
            let client = common::http();
            let url = format!("{}/membership{path}", cluster.users);
            let request = match body {
                Some(body) => client.post(url).json(&body),
                None => client.get(url),
            };
            let response = request.header("x-cluster-secret", cluster.secret()).send().await.unwrap();
            assert!(response.status().is_success(), "{}", response.text().await.unwrap());
            response.json::<serde_json::Value>().await.unwrap()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while membership("", None)["version"].as_u64() == Some(0) {
        assert!(Instant::now() < deadline, "the gateway never seeded the membership");
        std::thread::sleep(Duration::from_millis(100));
    }
    membership("/join", Some(serde_json::json!({"id": "node-4", "url": missing})));
    let gateway_url = cluster.gateway.clone();
    // No --cluster-secret: `top` reads the one `serve all` generated in the data dir.
    let tmux = Tmux::start(&["--gateway", &gateway_url, "--data-dir", data_dir, "--interval", "300ms"]);
    let screen = tmux.wait_for_screen("node-4 DOWN and the others UP", |s| {
        s.contains("3/4 nodes UP")
            && node_columns(s, "node-4").is_some_and(|c| c[1] == "DOWN")
            && (1..=3).all(|n| node_columns(s, &format!("node-{n}")).is_some_and(|c| c[1] == "UP"))
    });
    assert!(screen.contains("└ Connection refused"), "the reason is shown under the node:\n{screen}");
    assert!(screen.contains("node-4 is DOWN"), "the Events panel logs it:\n{screen}");

    tmux.keys("q");
    assert_eq!(tmux.wait_for_exit(), 0);
    tmux.assert_terminal_restored();
}
