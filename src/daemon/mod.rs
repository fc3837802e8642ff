//! The long-running services behind `ydht serve …`, one module each.
//!
//! - [`gateway`]: the public KV API.

pub mod gateway;

use clap::Subcommand;

/// `ydht serve <service>`.
#[derive(Subcommand, Debug)]
pub enum ServeCommand {
    /// Public KV API on 8080: /v1/kv with API keys, rate limits, tunable consistency
    Gateway(gateway::GatewayArgs),
}

impl ServeCommand {
    /// Runs the chosen service until shutdown.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Gateway(args) => gateway::run(args).await,
        }
    }
}
