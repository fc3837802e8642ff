//! The real `ydht` client binary where no cluster is needed: unreachable
//! services, usage errors and missing credentials, each with its exit code and
//! a one-line error.

use crate::cli_support;

use cli_support::{Client, closed_port, expect_code, one_error_line};

fn offline_client() -> (Client, u16, u16) {
    let (gateway, users) = (closed_port(), closed_port());
    let client = Client::new(&format!("http://127.0.0.1:{gateway}"), &format!("http://127.0.0.1:{users}"), None);
    (client, gateway, users)
}

#[test]
fn unreachable_gateway_exits_4_with_one_line() {
    let (client, gateway, _) = offline_client();
    let args = ["kv", "get", "k", "--api-key", "ydht_whatever"];
    let output = client.run(&args);
    expect_code(&output, 4, &args);
    assert_eq!(
        one_error_line(&output),
        format!("error: cannot reach gateway at http://127.0.0.1:{gateway}: connection refused")
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn unreachable_users_service_exits_4() {
    let (client, _, users) = offline_client();
    let args = ["login", "--email", "a@example.com", "--password-stdin"];
    let output = client.run_with_stdin(&args, b"securepass123\n");
    expect_code(&output, 4, &args);
    assert_eq!(
        one_error_line(&output),
        format!("error: cannot reach users service at http://127.0.0.1:{users}: connection refused")
    );
    assert!(!client.credentials_path().exists(), "a failed login stores nothing");
}

#[test]
fn status_with_everything_down_exits_4_and_still_reports() {
    let (client, gateway, _) = offline_client();
    let output = client.run(&["status"]);
    expect_code(&output, 4, &["status"]);
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains(&format!("http://127.0.0.1:{gateway}")) && table.contains("DOWN"), "{table}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("services down: gateway, users"));

    let output = client.run(&["status", "--output", "json"]);
    expect_code(&output, 4, &["status", "--output", "json"]);
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).expect("status prints JSON");
    assert_eq!(document["healthy"], false);
    let services = document["services"].as_array().expect("services");
    assert_eq!(services.len(), 2);
    assert!(services.iter().all(|service| service["healthy"] == false && service["error"].is_string()));
}

#[test]
fn missing_credentials_exit_3() {
    let (client, _, _) = offline_client();
    for args in [&["whoami"][..], &["apikey", "list"], &["kv", "get", "k"], &["kv", "put", "k", "v"]] {
        let output = client.run(args);
        expect_code(&output, 3, args);
        let line = one_error_line(&output);
        assert!(line.contains("ydht login") || line.contains("apikey create"), "{line}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let (client, _, _) = offline_client();
    // Refused by the argument parser.
    for args in [
        &["kv", "put"][..],
        &["kv", "get", "k", "--consistency", "weak"],
        &["kv", "put", "k", "v", "--file", "x"],
        &["apikey", "create", "--name", "n", "--scopes", "root"],
        &["apikey", "create", "--name", "n", "--expires-in-days", "0"],
        &["--output", "yaml", "status"],
        &["no-such-command"],
    ] {
        expect_code(&client.run(args), 2, args);
    }
    // Refused by the client before any request.
    let args = ["kv", "put", "k", "v", "--ttl", "soon", "--api-key", "ydht_x"];
    let output = client.run(&args);
    expect_code(&output, 2, &args);
    assert!(one_error_line(&output).contains("invalid --ttl"));
    let args = ["--gateway", "localhost:8080", "kv", "get", "k"];
    let output = client.run(&args);
    expect_code(&output, 2, &args);
    assert!(one_error_line(&output).contains("--gateway"));
    let args = ["kv", "put", "k", "--api-key", "ydht_x"];
    let output = client.run(&args);
    // An empty stdin is a valid (empty) value, so this reaches for the (closed) gateway.
    expect_code(&output, 4, &args);
    let args = ["kv", "locate", "k", "--api-key", "ydht_x"];
    let output = client.run(&args);
    expect_code(&output, 2, &args);
    assert!(one_error_line(&output).contains("cluster secret"));
    let args = ["login", "--email", "a@example.com"];
    let output = client.run(&args);
    expect_code(&output, 2, &args);
    assert!(one_error_line(&output).contains("--password-stdin"), "never waits for a terminal");
}

#[test]
fn damaged_credentials_file_exits_2() {
    let (client, _, _) = offline_client();
    std::fs::write(client.credentials_path(), b"{ not json").unwrap();
    let output = client.run(&["kv", "get", "k"]);
    expect_code(&output, 2, &["kv", "get", "k"]);
    assert!(one_error_line(&output).contains("credentials file"));
}

#[test]
fn help_documents_exit_codes_and_global_flags() {
    let (client, _, _) = offline_client();
    let help = String::from_utf8(client.ok(&["--help"])).unwrap();
    for expected in ["Exit codes:", "--output", "--ca-file", "Client options", "kv", "status"] {
        assert!(help.contains(expected), "{expected} missing from --help");
    }
    let man = String::from_utf8(client.ok(&["man"])).unwrap();
    assert!(man.contains(".TH ydht 1"));
}

/// The lines of `--help` that name an option (`  -o, --output <OUTPUT>`, `      --gateway <URL>`).
fn options_in_help(client: &Client, command: &[&str]) -> Vec<String> {
    let mut args = command.to_vec();
    args.push("--help");
    let help = String::from_utf8(client.ok(&args)).unwrap();
    help.lines()
        .map(str::trim_start)
        .filter(|line| line.starts_with("--") || line.starts_with('-') && line.contains(", --"))
        .filter_map(|line| line.split(", ").last()?.split([' ', '=']).next().map(str::to_string))
        .collect()
}

#[test]
fn each_command_lists_only_the_client_options_it_uses() {
    let (client, _, _) = offline_client();
    const CLIENT: [&str; 6] = ["--gateway", "--users", "--api-key", "--config-dir", "--cluster-secret", "--data-dir"];
    let expect = |command: &[&str], wanted: &[&str]| {
        let options = options_in_help(&client, command);
        let listed: Vec<&str> = CLIENT.into_iter().filter(|flag| options.iter().any(|option| option == flag)).collect();
        assert_eq!(listed, wanted, "client options of `ydht {}` (all options: {options:?})", command.join(" "));
        for global in ["--output", "--ca-file"] {
            assert!(options.iter().any(|option| option == global), "{global} missing from `{command:?} --help`");
        }
    };
    expect(&["top"], &["--gateway", "--config-dir", "--cluster-secret", "--data-dir"]);
    expect(&["kv", "get"], &["--gateway", "--api-key", "--config-dir"]);
    expect(&["kv", "put"], &["--gateway", "--api-key", "--config-dir"]);
    expect(&["kv", "locate"], &["--gateway", "--users", "--api-key", "--config-dir", "--cluster-secret", "--data-dir"]);
    expect(&["completions"], &[]);
    expect(&["serve", "all"], &["--cluster-secret", "--data-dir"]);
    expect(&["signup"], &["--users", "--config-dir"]);
    expect(&["whoami"], &["--users", "--config-dir"]);
    expect(&["apikey", "list"], &["--users", "--config-dir"]);
    expect(&["status"], &["--gateway", "--users", "--config-dir", "--cluster-secret", "--data-dir"]);
    expect(&["cluster", "join"], &["--gateway", "--config-dir", "--cluster-secret", "--data-dir"]);
    expect(&["bench"], &["--gateway", "--api-key", "--config-dir", "--cluster-secret"]);

    // A client option named before the subcommand still works where it applies, and is
    // ignored where it does not (like its environment variable), so aliases keep working.
    let args = ["--gateway", "localhost:8080", "kv", "get", "k"];
    assert!(one_error_line(&client.run(&args)).contains("--gateway"));
    client.ok(&["--api-key", "ydht_x", "--gateway", "http://127.0.0.1:1", "completions", "bash"]);
}

#[test]
fn with_output_json_errors_are_json_on_stderr_too() {
    let (client, gateway, _) = offline_client();
    let args = ["kv", "get", "k", "--api-key", "ydht_whatever", "--output", "json"];
    let output = client.run(&args);
    expect_code(&output, 4, &args);
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let error: serde_json::Value = serde_json::from_str(&stderr).expect("the error is one JSON document");
    assert_eq!(error["error"], format!("cannot reach gateway at http://127.0.0.1:{gateway}: connection refused"));
    assert_eq!(error["exit_code"], 4);
}

/// A one-connection-at-a-time HTTP server that answers the first request 429
/// (`Retry-After: 1`) and every later one 200 with `value`.
fn rate_limiting_gateway() -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for (index, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|read| read > 0) && line != "\r\n" {
                line.clear();
            }
            let answer = if index == 0 {
                "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            } else {
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nvalue"
            };
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    url
}

#[test]
fn waiting_out_a_rate_limit_says_so_on_stderr() {
    let gateway = rate_limiting_gateway();
    let client = Client::new(&gateway, &format!("http://127.0.0.1:{}", closed_port()), None);
    let args = ["kv", "get", "k", "--api-key", "ydht_whatever"];
    let output = client.run(&args);
    expect_code(&output, 0, &args);
    assert_eq!(output.stdout, b"value");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("note: rate limited by the gateway at {gateway}; retrying in 1 s")), "{stderr}");
}

/// `ydht --version` names the commit the binary was built from.
#[test]
fn version_names_the_commit() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ydht")).arg("--version").output().unwrap();
    assert!(output.status.success());
    let version = String::from_utf8(output.stdout).unwrap();
    assert!(version.starts_with(&format!("ydht {} (commit ", env!("CARGO_PKG_VERSION"))), "{version}");
    let head = std::process::Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output();
    match head {
        Ok(head) if head.status.success() => {
            let head = String::from_utf8(head.stdout).unwrap();
            assert!(version.contains(head.trim()), "{version} does not name HEAD {head}");
        }
        _ => println!("SKIPPED the commit comparison: git is not available here"),
    }
}

/// Bad input to `kv watch` and `restore` is refused before any service is asked: exit 2, one line.
#[test]
fn a_bad_watch_cursor_or_restore_file_is_a_usage_error() {
    let (client, _, _) = offline_client();
    let args = ["kv", "watch", "--since", "not-a-cursor", "--api-key", "ydht_whatever"];
    let output = client.run(&args);
    expect_code(&output, 2, &args);
    assert!(one_error_line(&output).contains("--since is not a watch cursor"), "{}", one_error_line(&output));

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.ydht");
    let args = ["restore", missing.to_str().unwrap(), "--cluster-secret", "s"];
    let output = client.run(&args);
    expect_code(&output, 2, &args);
    assert!(one_error_line(&output).contains("is not a file"), "{}", one_error_line(&output));

    let not_backup = dir.path().join("notes.txt");
    std::fs::write(&not_backup, "hello, not a backup").unwrap();
    let args = ["restore", not_backup.to_str().unwrap(), "--cluster-secret", "s"];
    let output = client.run(&args);
    expect_code(&output, 2, &args);
    let line = one_error_line(&output);
    assert!(line.contains("not a ydht backup file") && line.contains("nothing was restored"), "{line}");
}
