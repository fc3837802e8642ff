//! The long-running services, one module each, and `ydht serve` dispatch.
//!
//! - [`node`]: a storage node (WAL, snapshots, versioned records, TTL).

pub mod node;

use clap::Subcommand;

/// `ydht serve …`: which service to run.
#[derive(Subcommand, Debug)]
pub enum ServeCommand {
    /// Run one storage node (WAL + snapshots in <data-dir>/<node-id>/)
    Node(node::NodeArgs),
}

impl ServeCommand {
    /// Runs the chosen service until SIGINT/SIGTERM.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Node(args) => args.run().await,
        }
    }
}
