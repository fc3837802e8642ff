//! The long-running services behind `ydht serve …`, one module per service.
//!
//! - [`node`]: a storage node (WAL, snapshots, versioned records, TTL).
//! - [`replicator`]: the durable replication queue (`ydht serve replicator`).
//! - [`users`]: accounts, sessions, API keys, usage and the web pages.
//! - [`gateway`]: the public KV API.
//! - [`all`]: the whole cluster in one process (`ydht serve all`).

pub mod all;
pub mod gateway;
pub mod node;
pub mod replicator;
pub mod users;

use clap::Subcommand;

/// `ydht serve …`: which service to run.
#[derive(Subcommand, Debug)]
pub enum ServeCommand {
    /// The whole cluster in one process: users, storage nodes, replicator, gateway (default ports 8080–8085)
    All(all::AllArgs),
    /// Run one storage node (WAL + snapshots in <data-dir>/<node-id>/)
    Node(node::NodeArgs),
    /// Replication service: durable job queue, parallel replica writes, retries, hinted handoff (port 8085)
    Replicator(replicator::ReplicatorArgs),
    /// Users service: JSON API, web pages, API keys; migrations applied at start (port 8081)
    Users(users::UsersArgs),
    /// Public KV API on 8080: /v1/kv with API keys, rate limits, tunable consistency
    Gateway(gateway::GatewayArgs),
}

impl ServeCommand {
    /// The shared server flags of the chosen service.
    pub fn server(&self) -> &crate::config::ServerArgs {
        match self {
            Self::All(args) => &args.server,
            Self::Node(args) => &args.server,
            Self::Replicator(args) => &args.server,
            Self::Users(args) => &args.server,
            Self::Gateway(args) => &args.server,
        }
    }

    /// Runs the chosen service until SIGINT/SIGTERM.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            Self::All(args) => all::run(args).await,
            Self::Node(args) => args.run().await,
            Self::Replicator(args) => replicator::run(args).await,
            Self::Users(args) => args.run().await,
            Self::Gateway(args) => gateway::run(args).await,
        }
    }
}
