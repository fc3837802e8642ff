//! `ydht serve all`: the whole cluster in one process — users service, N
//! storage nodes, replicator and gateway — on the default ports, sharing one
//! data dir and its generated secrets.
//!
//! Every listener is bound before any service starts, so the gateway learns
//! the nodes' real addresses even when ports are 0 (ephemeral). Each service
//! reads its own flags' environment variables exactly as when started alone.
//! The banner (URLs, "Next:", "Press Ctrl-C to stop") is printed once every
//! service answers its `/health`: the nodes have recovered their data, the users
//! service has migrated its database, the replicator has recovered its queue.
//! Shutdown is staged: gateway first (it flushes usage to the users service),
//! then the replicator, the nodes, and the users service last.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, FromArgMatches};
use tokio::task::JoinHandle;

use super::{gateway, node, replicator, users};
use crate::config::ServerArgs;
use crate::error::Exit;
use crate::ring::NodeInfo;
use crate::shutdown::Shutdown;
use crate::tls::TlsConfig;

/// Flags of `ydht serve all`. Everything else (DATABASE_URL, JWT_SECRET,
/// RATE_LIMIT_*, YDHT_REPLICAS, …) is read from the same environment variables
/// as the individual services.
#[derive(Args, Debug, Clone)]
pub struct AllArgs {
    /// Shared server flags.
    #[command(flatten)]
    pub server: ServerArgs,

    /// Number of storage nodes (node-1, node-2, …)
    #[arg(long = "nodes", value_name = "N", env = "YDHT_NODE_COUNT", default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub node_count: u16,

    /// Gateway port (0 picks a free one)
    #[arg(long, env = "GATEWAY_PORT", default_value_t = 8080)]
    pub gateway_port: u16,

    /// Users service port (0 picks a free one)
    #[arg(long, env = "USERMANAGER_PORT", default_value_t = 8081)]
    pub users_port: u16,

    /// Port of node-1; the others take the next free numbers (0: every node picks a free one)
    #[arg(long, env = "DHTNODE_PORT", default_value_t = 8082)]
    pub node_port: u16,

    /// Replicator port (0 picks a free one)
    #[arg(long, env = "REPLICATOR_PORT", default_value_t = 8085)]
    pub replicator_port: u16,
}

/// A service's flags as if it were started alone with no arguments: defaults plus environment.
fn from_env<T: Args + FromArgMatches>(service: &str) -> anyhow::Result<T> {
    let command = T::augment_args(clap::Command::new("ydht-serve-all").no_binary_name(true));
    let matches = command.try_get_matches_from(Vec::<String>::new()).map_err(|error| {
        let text = error.to_string();
        let first = text.lines().next().unwrap_or_default().trim_start_matches("error: ");
        Exit::usage(format!("{service}: {first}; fix the environment variable of that flag (see README)"))
    })?;
    T::from_arg_matches(&matches).map_err(|error| Exit::usage(format!("{service}: {error}")).into())
}

/// Node ports: `first`, then the following numbers, skipping the other services' ports.
fn node_ports(first: u16, count: u16, taken: &[u16]) -> Vec<u16> {
    if first == 0 {
        return vec![0; usize::from(count)];
    }
    let mut ports = Vec::new();
    let mut candidate = first;
    while ports.len() < usize::from(count) {
        if !taken.contains(&candidate) {
            ports.push(candidate);
        }
        candidate = candidate.wrapping_add(1);
    }
    ports
}

fn url_of(addr: SocketAddr, tls: Option<&TlsConfig>) -> String {
    format!("{}://{addr}", crate::tls::scheme(tls))
}

/// What woke the supervising loop of [`run`].
enum Step {
    /// The service at this index of the running list ended (by itself: a failure).
    Stopped(usize, Result<anyhow::Result<()>, tokio::task::JoinError>),
    /// Every service answered `/health`, or one never will.
    Serving(anyhow::Result<()>),
    /// Ctrl-C or SIGTERM.
    Signalled,
}

/// One running service of the cluster.
struct Running {
    name: String,
    shutdown: Shutdown,
    task: JoinHandle<anyhow::Result<()>>,
}

fn start<F>(name: &str, shutdown: Shutdown, serve: F) -> Running
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    Running { name: name.to_string(), shutdown, task: tokio::spawn(serve) }
}

fn print_banner(data_dir: &Path, gateway: &str, users: &str, replicator: &str, nodes: &[NodeInfo]) {
    let mut text = format!("\nydht cluster is up (data in {})\n", data_dir.display());
    text.push_str(&format!("  gateway     {gateway}\n  users       {users}\n  replicator  {replicator}\n"));
    for node in nodes {
        text.push_str(&format!("  {:<11} {}\n", node.id, node.url));
    }
    text.push_str(&format!(
        "\nNext, in another terminal: sign up (prompts for a password, then logs in) and make an API key:\n{env}  ydht signup --email you@example.com --username yourname\n  ydht apikey create --name laptop --use\nPress Ctrl-C to stop.\n",
        env = if gateway == "http://127.0.0.1:8080" && users == "http://127.0.0.1:8081" {
            String::new()
        } else {
            format!("  export YDHT_GATEWAY_URL={gateway} YDHT_USERS_URL={users}\n")
        }
    ));
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// How long one readiness probe may wait for its answer (a service still recovering
/// answers once it serves: the request waits in the listener's backlog).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between readiness probes of a service that did not answer 200.
const PROBE_RETRY: Duration = Duration::from_millis(50);

/// Resolves once every service answers `GET {url}/health` with 200, i.e. it has
/// finished starting (recovery, migrations) and serves requests. The probe only
/// reads the status of this process's own listeners, so it does not check their
/// TLS certificate (which may be for another name than the address).
async fn until_serving(urls: Vec<String>) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .timeout(PROBE_TIMEOUT)
        .build()
        .context("cannot build the readiness probe's HTTP client")?;
    let probes = urls.into_iter().map(|url| {
        let http = http.clone();
        async move {
            let health = format!("{url}/health");
            loop {
                match http.get(&health).send().await {
                    Ok(response) if response.status() == reqwest::StatusCode::OK => return,
                    Ok(response) => tracing::debug!(url = %health, status = %response.status(), "not ready yet"),
                    Err(error) => tracing::debug!(url = %health, %error, "not ready yet"),
                }
                tokio::time::sleep(PROBE_RETRY).await;
            }
        }
    });
    futures_util::future::join_all(probes).await;
    Ok(())
}

/// `ydht serve all`: binds every port, starts every service, prints the banner once they
/// all serve, waits for Ctrl-C or a failure, stops them in order.
pub async fn run(args: AllArgs) -> anyhow::Result<()> {
    let host = args.server.host.clone();
    let data_dir = args.server.data_dir()?;
    // One secret for all, generated into the data dir unless given.
    let cluster_secret = args.server.cluster_secret(&data_dir)?;
    let mut server = args.server.clone();
    server.data_dir = Some(data_dir.clone());
    server.cluster_secret = Some(cluster_secret.expose().to_string());

    // Resolve every service's settings first: bad configuration fails before anything starts.
    let mut users_args: users::UsersArgs = from_env("users")?;
    users_args.server = server.clone();
    let mut users_config = users_args.into_config()?;
    let mut replicator_args: replicator::ReplicatorArgs = from_env("replicator")?;
    replicator_args.server = server.clone();
    let mut replicator_config = replicator_args.into_config()?;
    let mut node_args_list = Vec::new();
    for index in 1..=args.node_count {
        let mut node_args: node::NodeArgs = from_env("node")?;
        node_args.server = server.clone();
        node_args.node_id = format!("node-{index}");
        // The peers are this cluster's nodes (set below once their ports are known), never YDHT_NODES.
        node_args.peers = None;
        // Checked now; resolved again below with the real peer list.
        node_args.clone().into_config()?;
        node_args_list.push(node_args);
    }
    let mut gateway_args: gateway::GatewayArgs = from_env("gateway")?;
    gateway_args.server = server.clone();

    // Bind everything, so ports in use are reported before any service runs.
    let users_listener = crate::server::bind(&host, args.users_port, "--users-port / USERMANAGER_PORT").await?;
    let replicator_listener =
        crate::server::bind(&host, args.replicator_port, "--replicator-port / REPLICATOR_PORT").await?;
    let taken = [args.gateway_port, args.users_port, args.replicator_port];
    let mut node_listeners = Vec::new();
    for port in node_ports(args.node_port, args.node_count, &taken) {
        node_listeners.push(crate::server::bind(&host, port, "--node-port / DHTNODE_PORT").await?);
    }
    let gateway_listener = crate::server::bind(&host, args.gateway_port, "--gateway-port / GATEWAY_PORT").await?;

    let tls_config = users_config.tls.clone();
    let tls = tls_config.as_ref();
    let users_url = url_of(users_listener.local_addr()?, tls);
    let replicator_url = url_of(replicator_listener.local_addr()?, tls);
    let gateway_url = url_of(gateway_listener.local_addr()?, tls);
    let mut nodes = Vec::new();
    for (node_args, listener) in node_args_list.iter().zip(&node_listeners) {
        nodes.push(NodeInfo { id: node_args.node_id.clone(), url: url_of(listener.local_addr()?, tls) });
    }
    let member_list = nodes.iter().map(|node| format!("{}={}", node.id, node.url)).collect::<Vec<_>>().join(",");
    let mut node_configs = Vec::new();
    for (mut node_args, node) in node_args_list.into_iter().zip(&nodes) {
        node_args.peers = Some(member_list.clone());
        // Every node follows the membership through this cluster's gateway (online joins and removals),
        // under the URL the gateway was given for it.
        node_args.join = Some(gateway_url.clone());
        node_args.advertise_url = Some(node.url.clone());
        node_configs.push(node_args.into_config()?);
    }
    gateway_args.nodes = member_list;
    gateway_args.users_url = users_url.clone();
    gateway_args.replicator_url = replicator_url.clone();
    let gateway_config = gateway_args.into_config()?;
    users_config.gateway_url = gateway_url.clone();
    // The replicator follows the membership, so copies for a node that left go to the keys' owners.
    replicator_config.users_url = Some(users_url.clone());

    crate::server::announce_with("users", users_listener.local_addr()?, tls);
    for (node, listener) in nodes.iter().zip(&node_listeners) {
        crate::server::announce_with(&node.id, listener.local_addr()?, tls);
    }
    crate::server::announce_with("replicator", replicator_listener.local_addr()?, tls);
    crate::server::announce_with("gateway", gateway_listener.local_addr()?, tls);

    // Ctrl-C / SIGTERM stop the cluster, also while it is still starting.
    let signal = Shutdown::new();
    signal.trigger_on_signals();

    // Start in dependency order; stop in reverse (the list is stopped from the back).
    let mut running = Vec::new();
    let shutdown = Shutdown::new();
    running.push(start("users", shutdown.clone(), users::serve(users_config, users_listener, shutdown)));
    for (config, listener) in node_configs.into_iter().zip(node_listeners) {
        let shutdown = Shutdown::new();
        let name = config.node_id.clone();
        running.push(start(&name, shutdown.clone(), node::serve_in_cluster(config, listener, shutdown)));
    }
    let shutdown = Shutdown::new();
    running.push(start(
        "replicator",
        shutdown.clone(),
        replicator::serve(replicator_config, replicator_listener, shutdown),
    ));
    let shutdown = Shutdown::new();
    running.push(start("gateway", shutdown.clone(), gateway::serve(gateway_config, gateway_listener, shutdown)));

    // Print the banner once every service serves; until Ctrl-C / SIGTERM, or until any
    // service stops on its own (a failure, also one while starting).
    let mut urls = vec![users_url.clone(), replicator_url.clone(), gateway_url.clone()];
    urls.extend(nodes.iter().map(|node| node.url.clone()));
    let serving = until_serving(urls);
    tokio::pin!(serving);
    let mut announced = false;
    let mut failure: Option<anyhow::Error> = None;
    while !signal.is_triggered() {
        let step = {
            // Whichever service task ends first (never empty: users and the gateway always run).
            let first_stopped = futures_util::future::select_all(running.iter_mut().map(|service| &mut service.task));
            tokio::select! {
                (outcome, index, _) = first_stopped => Step::Stopped(index, outcome),
                ready = &mut serving, if !announced => Step::Serving(ready),
                () = signal.wait() => Step::Signalled,
            }
        };
        match step {
            Step::Stopped(index, outcome) => {
                let service = running.remove(index);
                let outcome = outcome.context("service task panicked").and_then(|result| result);
                let error = outcome.err().unwrap_or_else(|| anyhow::anyhow!("stopped unexpectedly"));
                tracing::error!(service = %service.name, %error, "service stopped; shutting the cluster down");
                failure = Some(error.context(format!("{} stopped", service.name)));
                break;
            }
            Step::Serving(Err(error)) => {
                failure = Some(error);
                break;
            }
            Step::Serving(Ok(())) => {
                announced = true;
                print_banner(&data_dir, &gateway_url, &users_url, &replicator_url, &nodes);
            }
            Step::Signalled => break,
        }
    }

    tracing::info!("stopping: gateway, replicator, nodes, users");
    while let Some(service) = running.pop() {
        service.shutdown.trigger();
        match service.task.await {
            Ok(Ok(())) => tracing::info!(service = %service.name, "stopped"),
            Ok(Err(error)) => {
                tracing::error!(service = %service.name, %error, "stopped with an error");
                failure.get_or_insert(error.context(format!("{} failed while stopping", service.name)));
            }
            Err(error) => {
                failure.get_or_insert(anyhow::anyhow!("{} panicked: {error}", service.name));
            }
        }
    }
    match failure {
        None => Ok(()),
        Some(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ports_follow_the_first_and_skip_other_services() {
        assert_eq!(node_ports(8082, 3, &[8080, 8081, 8085]), [8082, 8083, 8084]);
        assert_eq!(node_ports(8082, 5, &[8080, 8081, 8085]), [8082, 8083, 8084, 8086, 8087]);
        assert_eq!(node_ports(0, 3, &[0, 0, 0]), [0, 0, 0]);
    }
}
