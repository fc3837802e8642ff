//! The long-running services behind `ydht serve …`, one module per service.
//!
//! - [`replicator`]: the durable replication queue (`ydht serve replicator`).

pub mod replicator;

use clap::Subcommand;

/// `ydht serve <service>`.
#[derive(Subcommand, Debug)]
pub enum ServeCommand {
    /// Replication service: durable job queue, parallel replica writes, retries, hinted handoff (port 8085)
    Replicator(replicator::ReplicatorArgs),
}

impl ServeCommand {
    /// Runs the chosen service until SIGINT/SIGTERM.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            ServeCommand::Replicator(args) => replicator::run(args).await,
        }
    }
}
