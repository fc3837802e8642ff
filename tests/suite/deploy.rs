//! The deployment files against the binary and their own tools.
//!
//! - Every flag and environment variable that `Dockerfile`, `compose.yaml`, `deploy/k8s/` and
//!   `deploy/systemd/` hand to `ydht serve <service>` is one that service accepts, read from the
//!   built binary's `serve <service> --help` (a misspelt variable would be ignored silently, an
//!   unknown flag would stop the service).
//! - The files agree with each other on what they share (uid, secrets, health endpoint) and carry
//!   what a deployment needs (probes, limits, read-only root, volumes).
//! - Each passes its own tool where it is installed: `systemd-analyze verify`, `docker compose
//!   config` (or Debian's `docker-compose`), and `kubectl kustomize` + `kubernetes-validate
//!   --strict` (schemas bundled, no cluster needed; `kubectl apply --dry-run=client` is not used
//!   because it needs an API server to map kinds). A missing tool skips that test with a
//!   `SKIPPED` line, unless `YDHT_REQUIRE_DEPLOY_CHECKS=1` (set by `.ci/run`), when it fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_norway::Value;

/// Variables the files set for something other than ydht's flags: the log filter and the
/// switch that keeps colour codes out of collected logs (both read by tracing-subscriber).
const NOT_FLAGS: &[&str] = &["RUST_LOG", "NO_COLOR"];

/// The services `ydht serve` runs.
const SERVICES: &[&str] = &["users", "node", "replicator", "gateway", "all"];

/// The uid/gid the image runs as; compose and Kubernetes must name the same one.
const UID: i64 = 10001;

/// One place that starts `ydht serve <service>`, with the flags and variables it passes.
#[derive(Debug)]
struct Invocation {
    /// The file (and service, resource or unit in it), for the failure message.
    origin: String,
    /// The `serve` subcommand: `users`, `node`, `replicator`, `gateway` or `all`.
    service: String,
    /// The `--flag` words of its command line.
    flags: Vec<String>,
    /// The names of the environment variables it is given.
    env: Vec<String>,
}

/// What `ydht serve <service> --help` lists under "Options:", plus the global `--ca-file`.
#[derive(Debug, Default)]
struct Accepted {
    /// Long flags, `--help` included.
    flags: BTreeSet<String>,
    /// Environment variables named by `[env: …]`.
    env: BTreeSet<String>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: impl AsRef<Path>) -> String {
    let path = repo().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

/// The service's own options from its `--help` (the client options every command shows are not
/// the service's, except the global `--ca-file`, which servers use for their calls to each other).
fn accepted(service: &str) -> Accepted {
    let output = Command::new(env!("CARGO_BIN_EXE_ydht"))
        .args(["serve", service, "--help"])
        .env_clear()
        .output()
        .expect("run ydht serve --help");
    assert!(output.status.success(), "ydht serve {service} --help failed: {output:?}");
    let help = String::from_utf8(output.stdout).unwrap();
    let mut accepted = Accepted::default();
    accepted.flags.insert("--ca-file".into());
    accepted.env.insert("YDHT_CA_FILE".into());
    let own = help.split("\nClient options:").next().unwrap();
    for line in own.lines().map(str::trim_start) {
        if line.starts_with('-')
            && let Some(flag) = line.split([',', ' ']).find(|word| word.starts_with("--"))
        {
            accepted.flags.insert(flag.to_string());
        }
        if let Some(rest) = line.strip_prefix("[env: ") {
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            accepted.env.insert(name);
        }
    }
    assert!(accepted.flags.contains("--host") && accepted.env.contains("YDHT_HOST"), "cannot read {service}'s --help");
    accepted
}

/// The `--flag` words of an argument list (`--flag=value` counts as `--flag`).
fn flags_of<'a>(args: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    args.into_iter().filter(|arg| arg.starts_with("--")).map(|arg| arg.split('=').next().unwrap().to_string()).collect()
}

// ---- Dockerfile -------------------------------------------------------------------------------

/// The Dockerfile's instructions with their line continuations joined, as (INSTRUCTION, rest).
fn dockerfile_instructions() -> Vec<(String, String)> {
    let text = read("Dockerfile");
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                let (instruction, rest) = current.split_once(char::is_whitespace).unwrap_or((&current, ""));
                instructions.push((instruction.to_uppercase(), rest.trim().to_string()));
                current.clear();
            }
        }
    }
    instructions
}

fn dockerfile_invocations(problems: &mut Vec<String>) -> Vec<Invocation> {
    let instructions = dockerfile_instructions();
    let runtime_start = instructions.iter().rposition(|(instruction, _)| instruction == "FROM").expect("FROM");
    let runtime = &instructions[runtime_start..];
    let value = |name: &str| runtime.iter().rev().find(|(instruction, _)| instruction == name).map(|(_, rest)| rest);

    if value("ENTRYPOINT").map(String::as_str) != Some(r#"["ydht"]"#) {
        problems.push(format!("Dockerfile: ENTRYPOINT should be [\"ydht\"], is {:?}", value("ENTRYPOINT")));
    }
    if value("USER").map(String::as_str) != Some(&format!("{UID}:{UID}")) {
        problems.push(format!("Dockerfile: the runtime stage should run as USER {UID}:{UID}, is {:?}", value("USER")));
    }
    if value("HEALTHCHECK").is_none_or(|check| !check.contains("/health")) {
        problems.push("Dockerfile: no HEALTHCHECK on /health".into());
    }
    let env: Vec<String> = runtime
        .iter()
        .filter(|(instruction, _)| instruction == "ENV")
        .flat_map(|(_, rest)| {
            rest.split_whitespace().filter_map(|pair| pair.split_once('=')).map(|(k, _)| k.to_string())
        })
        .collect();
    let command: Vec<String> = serde_json::from_str(value("CMD").expect("CMD")).expect("CMD in exec (JSON) form");
    let mut invocations = vec![Invocation {
        origin: "Dockerfile CMD".into(),
        service: command.get(1).cloned().unwrap_or_default(),
        flags: flags_of(command.iter().map(String::as_str)),
        env: env.clone(),
    }];
    // The image's ENV reaches every container, whichever service it runs.
    for service in SERVICES {
        invocations.push(Invocation {
            origin: "Dockerfile ENV".into(),
            service: service.to_string(),
            flags: Vec::new(),
            env: env.clone(),
        });
    }
    invocations
}

// ---- compose.yaml -----------------------------------------------------------------------------

fn compose() -> Value {
    let mut compose: Value = serde_norway::from_str(&read("compose.yaml")).expect("compose.yaml is YAML");
    compose.apply_merge().expect("compose.yaml merge keys");
    compose
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|items| items.iter().filter_map(|item| item.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

fn compose_invocations(problems: &mut Vec<String>) -> Vec<Invocation> {
    let compose = compose();
    let services = compose["services"].as_mapping().expect("compose.yaml has services");
    let volumes = compose["volumes"].as_mapping().cloned().unwrap_or_default();
    let mut invocations = Vec::new();
    for (name, service) in services {
        let name = name.as_str().unwrap();
        if service["healthcheck"]["test"].is_null() {
            problems.push(format!("compose.yaml: service {name} has no healthcheck"));
        }
        if let Some(depends) = service["depends_on"].as_mapping() {
            for dependency in depends.keys().filter_map(Value::as_str) {
                if !services.contains_key(dependency) {
                    problems.push(format!("compose.yaml: {name} depends on unknown service {dependency}"));
                }
            }
        }
        for mount in strings(&service["volumes"]) {
            let source = mount.split(':').next().unwrap();
            if !source.starts_with(['.', '/']) && !volumes.contains_key(source) {
                problems.push(format!("compose.yaml: {name} mounts undeclared volume {source}"));
            }
        }
        let command = strings(&service["command"]);
        if command.first().map(String::as_str) != Some("serve") {
            continue;
        }
        if service["user"].as_str() != Some(&format!("{UID}:{UID}")) || service["read_only"].as_bool() != Some(true) {
            problems.push(format!("compose.yaml: {name} should run as user {UID}:{UID} with read_only: true"));
        }
        let env = match &service["environment"] {
            Value::Mapping(map) => map.keys().filter_map(Value::as_str).map(String::from).collect(),
            list => strings(list).iter().map(|pair| pair.split('=').next().unwrap().to_string()).collect(),
        };
        invocations.push(Invocation {
            origin: format!("compose.yaml service {name}"),
            service: command[1].clone(),
            flags: flags_of(command.iter().map(String::as_str)),
            env,
        });
    }
    invocations
}

// ---- deploy/k8s -------------------------------------------------------------------------------

fn k8s_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("deploy/k8s"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every YAML document of every manifest, with the file it came from.
fn k8s_documents() -> Vec<(String, Value)> {
    let mut documents = Vec::new();
    for path in k8s_files() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_norway::Deserializer::from_str(&text) {
            let value = <Value as serde::Deserialize>::deserialize(document).unwrap_or_else(|e| panic!("{name}: {e}"));
            if !value.is_null() {
                documents.push((name.clone(), value));
            }
        }
    }
    documents
}

fn k8s_invocations(problems: &mut Vec<String>) -> Vec<Invocation> {
    let documents = k8s_documents();
    let kind_of = |doc: &Value| doc["kind"].as_str().unwrap_or_default().to_string();
    let secret_keys: BTreeSet<String> = documents
        .iter()
        .filter(|(_, doc)| kind_of(doc) == "Secret")
        .flat_map(|(_, doc)| doc["stringData"].as_mapping().into_iter().flatten())
        .filter_map(|(key, _)| key.as_str().map(String::from))
        .collect();
    let kustomization = documents.iter().find(|(_, doc)| kind_of(doc) == "Kustomization").expect("kustomization.yaml");
    let listed: BTreeSet<String> = strings(&kustomization.1["resources"]).into_iter().collect();
    for path in k8s_files() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !["kustomization.yaml", "secret.example.yaml"].contains(&name.as_str()) && !listed.contains(&name) {
            problems.push(format!("deploy/k8s/{name} is not among kustomization.yaml's resources"));
        }
    }
    let disruption_budgets: Vec<String> = documents
        .iter()
        .filter(|(_, doc)| kind_of(doc) == "PodDisruptionBudget")
        .filter_map(|(_, doc)| {
            doc["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"].as_str().map(String::from)
        })
        .collect();
    for component in ["node", "gateway"] {
        if !disruption_budgets.iter().any(|c| c == component) {
            problems.push(format!("deploy/k8s: no PodDisruptionBudget for the {component} pods"));
        }
    }

    let mut invocations = Vec::new();
    for (file, doc) in &documents {
        let kind = kind_of(doc);
        if kind != "Deployment" && kind != "StatefulSet" {
            continue;
        }
        let origin = format!("deploy/k8s/{file} {kind} {}", doc["metadata"]["name"].as_str().unwrap_or("?"));
        if kind == "StatefulSet" && doc["spec"]["volumeClaimTemplates"].as_sequence().is_none_or(Vec::is_empty) {
            problems.push(format!("{origin}: no volumeClaimTemplates"));
        }
        let pod = &doc["spec"]["template"]["spec"];
        if pod["securityContext"]["runAsNonRoot"].as_bool() != Some(true)
            || pod["securityContext"]["runAsUser"].as_i64() != Some(UID)
        {
            problems.push(format!("{origin}: the pod should set runAsNonRoot: true and runAsUser: {UID}"));
        }
        if pod["enableServiceLinks"].as_bool() != Some(false) {
            problems.push(format!("{origin}: enableServiceLinks: false keeps YDHT_*_PORT link variables out"));
        }
        for container in pod["containers"].as_sequence().expect("containers") {
            let security = &container["securityContext"];
            if security["readOnlyRootFilesystem"].as_bool() != Some(true)
                || security["allowPrivilegeEscalation"].as_bool() != Some(false)
            {
                problems.push(format!("{origin}: readOnlyRootFilesystem: true and allowPrivilegeEscalation: false"));
            }
            for probe in ["readinessProbe", "livenessProbe"] {
                if container[probe]["httpGet"]["path"].as_str() != Some("/health") {
                    problems.push(format!("{origin}: {probe} should GET /health"));
                }
            }
            for bound in ["requests", "limits"] {
                if container["resources"][bound]["memory"].is_null() || container["resources"][bound]["cpu"].is_null() {
                    problems.push(format!("{origin}: resources.{bound} needs cpu and memory"));
                }
            }
            let env = container["env"].as_sequence().cloned().unwrap_or_default();
            for entry in &env {
                let secret = &entry["valueFrom"]["secretKeyRef"];
                if let Some(key) = secret["key"].as_str()
                    && (secret["name"].as_str() != Some("ydht-secrets") || !secret_keys.contains(key))
                {
                    problems.push(format!("{origin}: secret key {key} is not in secret.example.yaml's ydht-secrets"));
                }
            }
            // A variable only read by other variables' $(NAME) (POD_NAME) is not ydht's.
            let values: String = env.iter().filter_map(|entry| entry["value"].as_str()).collect();
            let names = env
                .iter()
                .filter_map(|entry| entry["name"].as_str())
                .filter(|name| !values.contains(&format!("$({name})")))
                .map(String::from)
                .collect();
            let args: Vec<String> =
                strings(&container["command"]).into_iter().chain(strings(&container["args"])).collect();
            if args.first().map(String::as_str) != Some("serve") {
                problems.push(format!("{origin}: the container should run `serve <service>` (args)"));
                continue;
            }
            invocations.push(Invocation {
                origin: origin.clone(),
                service: args[1].clone(),
                flags: flags_of(args.iter().map(String::as_str)),
                env: names,
            });
        }
    }
    invocations
}

// ---- deploy/systemd ---------------------------------------------------------------------------

/// The unit files, as (file name, its `Key=value` lines in order).
fn systemd_units() -> Vec<(String, Vec<(String, String)>)> {
    let mut units = Vec::new();
    for entry in std::fs::read_dir(repo().join("deploy/systemd")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "service") {
            let settings = std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .filter(|line| !line.starts_with(['#', ';', '[']))
                .filter_map(|line| line.split_once('='))
                .map(|(key, value)| (key.trim().to_string(), value.trim().to_string()))
                .collect();
            units.push((path.file_name().unwrap().to_string_lossy().to_string(), settings));
        }
    }
    units.sort();
    units
}

/// The variables an example env file sets, including the commented-out `#NAME=value` examples.
fn env_file_names(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| line.trim_start_matches('#').trim())
        .filter_map(|line| line.split_once('='))
        .map(|(name, _)| name)
        .filter(|name| {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(String::from)
        .collect()
}

fn systemd_invocations(problems: &mut Vec<String>) -> Vec<Invocation> {
    let examples = repo().join("deploy/systemd/etc");
    let mut used_examples = BTreeSet::new();
    let mut invocations = Vec::new();
    for (unit, settings) in systemd_units() {
        let get = |key: &'static str| settings.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str());
        let instance = if unit.contains("@.") { "node-1" } else { "" };
        for required in ["ExecStart", "Restart", "TimeoutStopSec", "User", "StateDirectory", "NoNewPrivileges"] {
            if get(required).next().is_none() {
                problems.push(format!("deploy/systemd/{unit}: no {required}="));
            }
        }
        if get("ProtectSystem").next() != Some("strict") {
            problems.push(format!("deploy/systemd/{unit}: ProtectSystem=strict"));
        }
        let mut env: Vec<String> = get("Environment")
            .flat_map(|value| {
                value.split_whitespace().filter_map(|pair| pair.split_once('=')).map(|(k, _)| k.to_string())
            })
            .collect();
        for file in get("EnvironmentFile") {
            let file = file.trim_start_matches('-').replace("%i", instance);
            let Some(name) = file.strip_prefix("/etc/ydht/") else {
                problems.push(format!("deploy/systemd/{unit}: EnvironmentFile {file} should be under /etc/ydht/"));
                continue;
            };
            match std::fs::read_to_string(examples.join(name)) {
                Ok(text) => env.extend(env_file_names(&text)),
                Err(_) => {
                    problems.push(format!("deploy/systemd/{unit}: no example deploy/systemd/etc/{name} for {file}"))
                }
            }
            used_examples.insert(name.to_string());
        }
        let exec = get("ExecStart").next().unwrap_or_default();
        let words: Vec<&str> = exec.split_whitespace().collect();
        if words.first() != Some(&"/usr/local/bin/ydht") || words.get(1) != Some(&"serve") {
            problems.push(format!("deploy/systemd/{unit}: ExecStart should be /usr/local/bin/ydht serve <service>"));
            continue;
        }
        invocations.push(Invocation {
            origin: format!("deploy/systemd/{unit}"),
            service: words.get(2).unwrap_or(&"").to_string(),
            flags: flags_of(words.iter().copied()),
            env,
        });
    }
    for entry in std::fs::read_dir(&examples).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        if !used_examples.contains(&name) {
            problems.push(format!("deploy/systemd/etc/{name} is read by no unit"));
        }
    }
    invocations
}

// ---- the checks -------------------------------------------------------------------------------

/// Whether `service` accepts `name` (a flag or a variable).
fn accepted_by(name: &str, accepted: &Accepted) -> bool {
    if name.starts_with("--") { accepted.flags.contains(name) } else { accepted.env.contains(name) }
}

#[test]
fn every_flag_and_variable_the_deployment_files_pass_is_accepted_by_the_service() {
    let accepted: BTreeMap<&str, Accepted> = SERVICES.iter().map(|service| (*service, accepted(service))).collect();
    let mut problems = Vec::new();
    let mut invocations = dockerfile_invocations(&mut problems);
    invocations.extend(compose_invocations(&mut problems));
    invocations.extend(k8s_invocations(&mut problems));
    invocations.extend(systemd_invocations(&mut problems));

    let mut seen_services = BTreeSet::new();
    for invocation in &invocations {
        let Some(accepts) = accepted.get(invocation.service.as_str()) else {
            problems.push(format!("{}: `ydht serve {}` is not a service", invocation.origin, invocation.service));
            continue;
        };
        seen_services.insert(invocation.service.as_str());
        for flag in &invocation.flags {
            if !accepted_by(flag, accepts) {
                problems.push(format!("{}: `ydht serve {}` has no flag {flag}", invocation.origin, invocation.service));
            }
        }
        for name in &invocation.env {
            if !NOT_FLAGS.contains(&name.as_str()) && !accepted_by(name, accepts) {
                problems.push(format!("{}: `ydht serve {}` reads no {name}", invocation.origin, invocation.service));
            }
        }
    }
    for service in ["users", "node", "replicator", "gateway"] {
        let origins: BTreeSet<&str> = invocations
            .iter()
            .filter(|invocation| invocation.service == service)
            .filter_map(|invocation| {
                ["compose.yaml", "deploy/k8s/", "deploy/systemd/"]
                    .into_iter()
                    .find(|kind| invocation.origin.starts_with(kind))
            })
            .collect();
        if origins.len() < 3 {
            problems.push(format!("{service} should be run by compose.yaml, k8s and systemd; found {origins:?}"));
        }
    }
    problems.sort();
    problems.dedup();
    assert!(problems.is_empty(), "deployment files disagree with the binary:\n  {}", problems.join("\n  "));
    println!("checked {} invocations of ydht serve ({:?})", invocations.len(), seen_services);
}

// ---- external tools ---------------------------------------------------------------------------

/// Runs `program` if it is installed: `None` (after saying so) when it is not and the deployment
/// checks are not required, a failed test when they are.
fn run_tool(program: &str, args: &[&str], envs: &[(&str, &str)], install_hint: &str) -> Option<Output> {
    match Command::new(program).args(args).envs(envs.iter().copied()).current_dir(repo()).output() {
        Ok(output) => Some(output),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var("YDHT_REQUIRE_DEPLOY_CHECKS").is_err(),
                "YDHT_REQUIRE_DEPLOY_CHECKS is set but {program} is not installed; {install_hint}"
            );
            println!("SKIPPED: {program} is not installed ({install_hint})");
            None
        }
        Err(error) => panic!("cannot run {program}: {error}"),
    }
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    // verify wants the ExecStart binary to exist and a template's instance: check copies that
    // point at the built binary, with node-1 as the node instance.
    let scratch = tempfile::tempdir().unwrap();
    let mut names = Vec::new();
    for (unit, _) in systemd_units() {
        let text = read(format!("deploy/systemd/{unit}")).replace("/usr/local/bin/ydht", env!("CARGO_BIN_EXE_ydht"));
        let name = unit.replace("@.", "@node-1.");
        std::fs::write(scratch.path().join(&name), text).unwrap();
        names.push(scratch.path().join(name).to_string_lossy().to_string());
    }
    let mut args = vec!["verify", "--man=no"];
    args.extend(names.iter().map(String::as_str));
    let Some(output) = run_tool("systemd-analyze", &args, &[], "apt-get install systemd") else { return };
    // verify exits 0 on unknown keys and unparsable values, but prints them: any output is a failure.
    assert!(output.status.success() && text(&output).trim().is_empty(), "systemd-analyze verify:\n{}", text(&output));
}

#[test]
fn compose_file_passes_docker_compose_config() {
    let secrets = [("YDHT_CLUSTER_SECRET", "c"), ("JWT_SECRET", "j"), ("POSTGRES_PASSWORD", "p")];
    let plugin =
        Command::new("docker").args(["compose", "version"]).output().is_ok_and(|output| output.status.success());
    let (program, prefix): (&str, &[&str]) = if plugin { ("docker", &["compose"]) } else { ("docker-compose", &[]) };
    let config = |envs: &[(&str, &str)]| {
        let args: Vec<&str> =
            prefix.iter().copied().chain(["--profile", "join", "-f", "compose.yaml", "config", "-q"]).collect();
        run_tool(program, &args, envs, "apt-get install docker-compose (or the docker compose plugin)")
    };
    let Some(output) = config(&secrets) else { return };
    assert!(output.status.success(), "{program} config:\n{}", text(&output));
    // Without the secrets it refuses to start, naming the missing one (the `${…:?…}` guards);
    // run from a scratch copy so a developer's .env beside compose.yaml cannot fill them in.
    let scratch = tempfile::tempdir().unwrap();
    std::fs::write(scratch.path().join("compose.yaml"), read("compose.yaml")).unwrap();
    let args: Vec<&str> = prefix.iter().copied().chain(["-f", "compose.yaml", "config", "-q"]).collect();
    let output = Command::new(program)
        .args(&args)
        .current_dir(scratch.path())
        .env_remove("YDHT_CLUSTER_SECRET")
        .env_remove("JWT_SECRET")
        .env_remove("POSTGRES_PASSWORD")
        .output()
        .unwrap();
    assert!(
        !output.status.success() && text(&output).contains("in .env"),
        "missing secrets accepted:\n{}",
        text(&output)
    );
}

#[test]
fn k8s_manifests_pass_the_schema_check() {
    let scratch = tempfile::tempdir().unwrap();
    // The kustomization as `kubectl apply -k` would send it, plus the Secret it leaves out.
    let mut files = vec!["deploy/k8s/secret.example.yaml".to_string()];
    match run_tool("kubectl", &["kustomize", "deploy/k8s"], &[], "kubectl from the kubernetes-client package") {
        Some(output) => {
            assert!(output.status.success(), "kubectl kustomize deploy/k8s:\n{}", text(&output));
            let built = scratch.path().join("kustomized.yaml");
            std::fs::write(&built, &output.stdout).unwrap();
            files.push(built.to_string_lossy().to_string());
        }
        None => files.extend(
            k8s_files()
                .iter()
                .filter(|path| !path.ends_with("kustomization.yaml"))
                .map(|path| path.to_string_lossy().to_string()),
        ),
    }
    let mut args = vec!["--strict", "--quiet"];
    args.extend(files.iter().map(String::as_str));
    let Some(output) = run_tool("kubernetes-validate", &args, &[], "pip install kubernetes-validate") else { return };
    assert!(output.status.success(), "kubernetes-validate --strict:\n{}", text(&output));
}

// ---- the initial members ----------------------------------------------------------------------

/// `id=url` pairs of a `YDHT_NODES` value.
fn members(value: &str) -> Vec<(String, String)> {
    value.split(',').filter_map(|pair| pair.split_once('=')).map(|(id, url)| (id.into(), url.into())).collect()
}

#[test]
fn initial_members_name_the_nodes_that_exist() {
    // compose.yaml: every member the gateway seeds is a service with that NODE_ID, on that port.
    let compose = compose();
    let services = &compose["services"];
    let seeded = members(services["gateway"]["environment"]["YDHT_NODES"].as_str().expect("gateway YDHT_NODES"));
    assert_eq!(seeded.len(), 3, "compose.yaml seeds three nodes");
    for (id, url) in &seeded {
        let node = &services[id.as_str()];
        let port = node["environment"]["DHTNODE_PORT"].as_str().unwrap_or_default();
        assert_eq!(node["environment"]["NODE_ID"].as_str(), Some(id.as_str()), "compose.yaml: no service {id}");
        assert_eq!(url, &format!("http://{id}:{port}"), "compose.yaml: member {id}");
    }

    // deploy/k8s: the gateway seeds the StatefulSet's first pods by their headless-Service names,
    // and each pod advertises the same form of URL.
    let documents = k8s_documents();
    let find = |kind: &str, name: &str| {
        documents
            .iter()
            .map(|(_, doc)| doc)
            .find(|doc| doc["kind"].as_str() == Some(kind) && doc["metadata"]["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("deploy/k8s: no {kind} {name}"))
    };
    let env_of = |doc: &Value, name: &str| {
        doc["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|entry| entry["name"].as_str() == Some(name))
            .and_then(|entry| entry["value"].as_str().map(String::from))
            .unwrap_or_else(|| panic!("deploy/k8s: {} sets no {name}", doc["metadata"]["name"].as_str().unwrap()))
    };
    let nodes = find("StatefulSet", "ydht-node");
    let service = nodes["spec"]["serviceName"].as_str().unwrap();
    assert_eq!(find("Service", service)["spec"]["clusterIP"].as_str(), Some("None"), "{service} is headless");
    let port = nodes["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"].as_i64().unwrap();
    assert_eq!(env_of(nodes, "DHTNODE_PORT"), port.to_string());
    assert_eq!(env_of(nodes, "NODE_ID"), "$(POD_NAME)");
    assert_eq!(env_of(nodes, "YDHT_ADVERTISE_URL"), format!("http://$(POD_NAME).{service}:{port}"));
    let gateway = find("Deployment", "ydht-gateway");
    let expected: Vec<(String, String)> = (0..nodes["spec"]["replicas"].as_i64().unwrap())
        .map(|i| (format!("ydht-node-{i}"), format!("http://ydht-node-{i}.{service}:{port}")))
        .collect();
    assert_eq!(members(&env_of(gateway, "YDHT_NODES")), expected, "deploy/k8s: the gateway's YDHT_NODES");
    assert!(env_of(nodes, "YDHT_JOIN").starts_with("http://ydht-gateway:"), "nodes join through the gateway Service");
}
