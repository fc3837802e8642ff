//! Running the real `ydht` client binary against a test cluster, with its own
//! config dir (so tests never touch the user's credentials) and no stray
//! `YDHT_*` settings from the environment.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Environment variables the client reads; cleared so the caller's shell cannot leak in.
const CLIENT_ENV: [&str; 8] = [
    "YDHT_GATEWAY_URL",
    "YDHT_USERS_URL",
    "YDHT_OUTPUT",
    "YDHT_API_KEY",
    "YDHT_CONFIG_DIR",
    "YDHT_CLUSTER_SECRET",
    "YDHT_DATA_DIR",
    "RUST_LOG",
];

/// A client with its own config dir, aimed at one gateway and users service.
pub struct Client {
    /// The config dir (credentials.json lives here).
    pub config_dir: tempfile::TempDir,
    /// `--gateway`.
    pub gateway: String,
    /// `--users`.
    pub users: String,
    /// `YDHT_DATA_DIR` for the cluster secret, if any.
    pub data_dir: Option<PathBuf>,
}

impl Client {
    /// A client for these URLs; `data_dir` is where `kv locate` / `status` find the cluster secret.
    pub fn new(gateway: &str, users: &str, data_dir: Option<&Path>) -> Client {
        Client {
            config_dir: tempfile::tempdir().expect("temp config dir"),
            gateway: gateway.to_string(),
            users: users.to_string(),
            data_dir: data_dir.map(Path::to_path_buf),
        }
    }

    /// `credentials.json` of this client.
    pub fn credentials_path(&self) -> PathBuf {
        self.config_dir.path().join("credentials.json")
    }

    /// The parsed `credentials.json`.
    pub fn credentials(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.credentials_path()).expect("credentials.json exists"))
            .expect("credentials.json is JSON")
    }

    /// The command `ydht ARGS` with this client's settings.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ydht"));
        for name in CLIENT_ENV {
            command.env_remove(name);
        }
        command
            .env("YDHT_CONFIG_DIR", self.config_dir.path())
            .env("YDHT_GATEWAY_URL", &self.gateway)
            .env("YDHT_USERS_URL", &self.users)
            .args(args);
        match &self.data_dir {
            Some(dir) => command.env("YDHT_DATA_DIR", dir),
            // A data dir without a secret, so the user's real one is never read.
            None => command.env("YDHT_DATA_DIR", self.config_dir.path().join("no-data")),
        };
        command
    }

    /// Runs `ydht ARGS` with `stdin` piped in.
    pub fn run_with_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        run(self.command(args), stdin)
    }

    /// Runs `ydht ARGS` with an empty stdin.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, b"")
    }

    /// Runs `ydht ARGS` and asserts exit 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> Vec<u8> {
        expect_code(&self.run(args), 0, args).stdout.clone()
    }

    /// Runs `ydht ARGS --output json` and asserts exit 0; returns the parsed document.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut with_json = args.to_vec();
        with_json.extend(["--output", "json"]);
        let stdout = self.ok(&with_json);
        serde_json::from_slice(&stdout)
            .unwrap_or_else(|error| panic!("{args:?} printed no JSON ({error}): {}", String::from_utf8_lossy(&stdout)))
    }
}

/// Runs a prepared command to completion with `stdin`.
pub fn run(mut command: Command, stdin: &[u8]) -> Output {
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn ydht");
    let mut pipe = child.stdin.take().expect("stdin is piped");
    let input = stdin.to_vec();
    // Write from a thread so a large stdin cannot deadlock against a full stdout pipe.
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let output = child.wait_with_output().expect("wait for ydht");
    writer.join().expect("stdin writer");
    output
}

/// Asserts the exit code, showing stdout and stderr when it differs.
pub fn expect_code<'a>(output: &'a Output, code: i32, args: &[&str]) -> &'a Output {
    assert_eq!(
        output.status.code(),
        Some(code),
        "ydht {args:?}: expected exit {code}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The stderr of a failed command, asserted to be exactly one `error: …` line.
pub fn one_error_line(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "expected `error: …`, got: {stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
    lines[0].to_string()
}

/// A TCP port on 127.0.0.1 that nothing listens on.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    port
}

/// Polls `check` every 100 ms for up to `seconds`.
pub fn eventually(seconds: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if check() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
