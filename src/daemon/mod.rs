//! The long-running services, one module each, and `ydht serve` dispatch.
//!
//! - [`node`]: a storage node (WAL, snapshots, versioned records, TTL).
//! - [`gateway`]: the public KV API.

pub mod gateway;
pub mod node;

use clap::Subcommand;

/// `ydht serve …`: which service to run.
#[derive(Subcommand, Debug)]
pub enum ServeCommand {
    /// Run one storage node (WAL + snapshots in <data-dir>/<node-id>/)
    Node(node::NodeArgs),
    /// Public KV API on 8080: /v1/kv with API keys, rate limits, tunable consistency
    Gateway(gateway::GatewayArgs),
}

impl ServeCommand {
    /// Runs the chosen service until SIGINT/SIGTERM.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Node(args) => args.run().await,
            Self::Gateway(args) => gateway::run(args).await,
        }
    }
}
