//! The long-running services, one module each, and `ydht serve <service>`.
//!
//! - [`users`]: accounts, sessions, API keys, usage and the web pages.

pub mod users;

use clap::Subcommand;

/// `ydht serve <service>`.
#[derive(Subcommand, Debug)]
pub enum ServeCommand {
    /// Users service: JSON API, web pages, API keys; migrations applied at start (port 8081)
    Users(users::UsersArgs),
}

impl ServeCommand {
    /// Runs the chosen service until SIGINT/SIGTERM.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            ServeCommand::Users(args) => args.run().await,
        }
    }
}
