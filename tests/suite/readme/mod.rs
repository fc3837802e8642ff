//! Every shell block of README.md runs as written against a real `ydht serve all`
//! (ports 0): the ports the README names (8080–8085) become the test cluster's,
//! the client finds it through `YDHT_GATEWAY_URL` / `YDHT_USERS_URL`, and the blocks
//! run in order in one bash session (variables carry over, as in a reader's
//! terminal) inside a terminal (`script`), so `ydht signup` can prompt for its
//! password. A block is skipped only when its fence says ```` ```sh no-run ````.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::cli_support::Client;
use crate::common;

/// What the reader types at `ydht signup`'s two password prompts.
const TYPED: &[u8] = b"securepass123\nsecurepass123\n";

/// A shell block of the README and the line its fence is on.
#[derive(Debug)]
struct Block {
    line: usize,
    code: String,
}

/// The `sh` / `bash` blocks to run, and how many are marked `no-run`.
fn shell_blocks(readme: &str) -> (Vec<Block>, usize) {
    let (mut blocks, mut skipped) = (Vec::new(), 0);
    let mut lines = readme.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let Some(info) = line.strip_prefix("```") else { continue };
        let words: Vec<&str> = info.split_whitespace().collect();
        let mut code = String::new();
        for (_, line) in lines.by_ref() {
            if line.starts_with("```") {
                break;
            }
            code.push_str(line);
            code.push('\n');
        }
        if !matches!(words.first(), Some(&("sh" | "bash" | "shell"))) {
            continue;
        }
        if words.contains(&"no-run") {
            skipped += 1;
        } else {
            blocks.push(Block { line: index + 1, code });
        }
    }
    (blocks, skipped)
}

/// `code` with the README's default service URLs replaced by the test cluster's.
fn aimed_at(code: &str, cluster: &common::Cluster) -> String {
    let services = [
        (8080, &cluster.gateway),
        (8081, &cluster.users),
        (8082, &cluster.nodes[0]),
        (8083, &cluster.nodes[1]),
        (8084, &cluster.nodes[2]),
        (8085, &cluster.replicator),
    ];
    let mut code = code.to_string();
    for (port, url) in services {
        for host in ["localhost", "127.0.0.1"] {
            code = code.replace(&format!("http://{host}:{port}"), url);
        }
    }
    code
}

#[test]
fn the_readme_blocks_extracted_are_the_runnable_ones() {
    let readme = "text\n```sh no-run\nydht serve all\n```\n```sh\nydht kv get a\n```\n```json\n{}\n```\n";
    let (blocks, skipped) = shell_blocks(readme);
    assert_eq!(skipped, 1);
    assert_eq!(blocks.len(), 1);
    assert_eq!((blocks[0].line, blocks[0].code.as_str()), (5, "ydht kv get a\n"));
}

#[test]
fn every_shell_block_of_the_readme_runs_as_written() {
    for tool in ["bash", "curl", "jq", "script"] {
        let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().unwrap().status.success();
        assert!(found, "the README's blocks need {tool}; install it (apt-get install {tool}; .ci/run does)");
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let (blocks, skipped) = shell_blocks(&readme);
    assert!(blocks.len() >= 2, "the Quick start's blocks are runnable: {blocks:?}");
    let cluster = common::start_cluster();
    let client = Client::new(&cluster.gateway, &cluster.users, Some(cluster.data_dir.path()));

    // A terminal of a usual size, so tables are laid out as a reader sees them.
    let mut session = String::from("set -euo pipefail\nstty cols 160 rows 50\n");
    for block in &blocks {
        let code = aimed_at(&block.code, &cluster);
        for default in ["localhost:80", "127.0.0.1:80"] {
            assert!(
                !code.contains(default),
                "README.md line {}: a service URL the test cannot map:\n{code}",
                block.line
            );
        }
        session.push_str(&format!("echo '### README.md line {}'\n{code}\n", block.line));
    }
    let work = tempfile::tempdir().unwrap();
    let script = work.path().join("readme.sh");
    std::fs::write(&script, session).unwrap();

    // `ydht` on PATH, every client setting from the test's client (its own config dir).
    let binary_dir = std::path::Path::new(env!("CARGO_BIN_EXE_ydht")).parent().unwrap().to_path_buf();
    let path = std::env::join_paths(
        std::iter::once(binary_dir).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .unwrap();
    let mut command = Command::new("timeout");
    command.args(["300", "script", "-qec", &format!("bash {}", script.display()), "/dev/null"]);
    for (name, value) in client.command(&[]).get_envs() {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    command.env("PATH", path).current_dir(work.path()).stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = command.stderr(Stdio::piped()).spawn().expect("cannot run script(1)");
    child.stdin.take().unwrap().write_all(TYPED).unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));

    assert!(output.status.success(), "a README command failed ({}); the session:\n{said}", output.status);
    assert!(!said.contains("\"error\""), "a README command got an error answer; the session:\n{said}");
    assert!(said.contains("Your API Key: ydht_"), "{said}");
    assert!(said.contains(r#"{"name":"John"}"#), "`ydht kv get user:123` printed no value:\n{said}");
    eprintln!("ran {} README blocks, skipped {skipped} marked no-run", blocks.len());
}
