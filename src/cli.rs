//! The clap command tree. Each subcommand's arguments and `run` live in the
//! module that implements it; this file only names them and dispatches.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::client::account::{LoginArgs, LogoutArgs, SignupArgs, WhoamiArgs};
use crate::client::apikey::ApikeyCommand;
use crate::client::kv::KvCommand;
use crate::client::membership::ClusterCommand;
use crate::client::output::OutputFormat;
use crate::client::status::StatusArgs;
use crate::client::{ClientFlags, Context, LeadingClientArgs};
use crate::completions::CompletionsArgs;
use crate::error::exit_code_of;
use crate::man::ManArgs;

/// ydht — a multi-tenant, replicated key-value store with a terminal-first operator console.
#[derive(Parser, Debug)]
#[command(name = "ydht", version = VERSION, about, long_about = None, after_help = EXIT_CODES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,

    /// Output format
    #[arg(long, env = "YDHT_OUTPUT", global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// Client flags given before the subcommand (hidden; each subcommand lists the ones it uses).
    #[command(flatten)]
    pub leading: LeadingClientArgs,

    /// PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)
    #[arg(long, env = "YDHT_CA_FILE", value_name = "PEM", global = true)]
    pub ca_file: Option<std::path::PathBuf>,
}

/// Where the client options are, and the exit codes: the end of `--help`.
pub const EXIT_CODES: &str = "\
Client options (--gateway, --users, --api-key, --config-dir, --cluster-secret) belong to the
commands that use them: see `ydht COMMAND --help`.

Exit codes:
  0  success
  1  not found (e.g. `kv get` of a missing key)
  2  usage or configuration error (bad flag, port in use, unwritable data dir)
  3  authentication or authorization failed
  4  a service is unreachable or answered with a server error
  5  a conditional write's precondition failed (--if-version, --if-absent)";

/// `ydht --version`: the crate version and the commit it was built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("YDHT_COMMIT"), ")");

/// The top-level commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a server (one service of the cluster)
    #[command(subcommand)]
    Serve(crate::daemon::ServeCommand),
    /// Print shell completions (or write every shell's file with --dir)
    Completions(CompletionsArgs),
    /// Live dashboard of the cluster: ring, replication, gateway traffic, history, events
    Top(crate::tui::TopArgs),
    /// Create an account and log in
    Signup(SignupArgs),
    /// Log in; tokens are kept in the config dir (mode 0600) and refreshed automatically
    Login(LoginArgs),
    /// Revoke the login session and forget its tokens
    Logout(LogoutArgs),
    /// Show who is logged in
    Whoami(WhoamiArgs),
    /// Manage your API keys
    #[command(subcommand)]
    Apikey(ApikeyCommand),
    /// Store, read, delete, count, list and locate your keys (uses an API key)
    #[command(subcommand)]
    Kv(KvCommand),
    /// Change the cluster online: join or remove storage nodes, watch the data move
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Health and metrics of every service, as one table; exit 4 if any is down
    Status(StatusArgs),
    /// Copy every live record of the cluster (or of one tenant) into a compressed, checksummed file
    Backup(crate::client::backup::BackupArgs),
    /// Write a backup file's records back into the running cluster (newer data already there stays)
    Restore(crate::client::backup::RestoreArgs),
    /// Print the manual page (or write one per command with --dir)
    #[command(hide = true)]
    Man(ManArgs),
    /// Load generator: throughput and latency percentiles of puts/gets (gateway, or one node with --target-node)
    Bench(crate::bench::BenchArgs),
}

impl Cli {
    /// Whether this command runs a long-lived server (logs at `info` by default).
    fn is_server(&self) -> bool {
        matches!(self.command, Command::Serve(_))
    }

    /// Runs the chosen command to completion.
    pub async fn run(self) -> anyhow::Result<()> {
        if let Some(path) = &self.ca_file {
            crate::tls::trust_ca_file(path)?;
        }
        let (leading, output) = (&self.leading, self.output);
        // The client context of a command with these client flags.
        let context = |flags: &dyn ClientFlags| -> anyhow::Result<Context> { leading.apply(flags, output).context() };
        match self.command {
            Command::Serve(serve) => serve.run().await,
            Command::Completions(args) => args.run(Cli::command()),
            Command::Man(args) => args.run(Cli::command()),
            Command::Top(args) => {
                let gateway = context(&args.client)?.gateway.display;
                args.run(&gateway).await
            }
            Command::Signup(args) => {
                let context = context(&args.client)?;
                args.run(&context).await
            }
            Command::Login(args) => {
                let context = context(&args.client)?;
                args.run(&context).await
            }
            Command::Logout(args) => {
                let context = context(&args.client)?;
                args.run(&context).await
            }
            Command::Whoami(args) => {
                let context = context(&args.client)?;
                args.run(&context).await
            }
            Command::Apikey(sub) => {
                let context = context(&sub)?;
                sub.run(&context).await
            }
            Command::Kv(sub) => {
                let context = context(&sub)?;
                sub.run(&context).await
            }
            Command::Cluster(sub) => {
                let context = context(&sub)?;
                sub.run(&context).await
            }
            Command::Backup(args) => {
                let context = context(&args.client)?;
                crate::client::backup::backup(args, &context).await
            }
            Command::Restore(args) => {
                let context = context(&args.client)?;
                crate::client::backup::restore(args, &context).await
            }
            Command::Status(args) => {
                let context = context(&args.client)?;
                args.run(&context).await
            }
            Command::Bench(args) => {
                let context = context(&args.client)?;
                args.run(&context).await
            }
        }
    }
}

/// The whole program: parse arguments, set up logging, run, map errors to exit codes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match &cli.command {
        Command::Serve(serve) => serve.server().log_format,
        _ => crate::config::LogFormat::Text,
    };
    init_tracing(if cli.is_server() { "info" } else { "warn" }, format);
    let json_errors = cli.output == OutputFormat::Json && !cli.is_server();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cli.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let code = exit_code_of(&error);
            eprintln!("{}", error_report(&error, code, json_errors));
            ExitCode::from(code)
        }
    }
}

/// The error as the user sees it on stderr: `error: …`, or with `--output json`
/// one JSON line `{"error": "…", "exit_code": N}` so scripts can parse both streams.
fn error_report(error: &anyhow::Error, code: u8, json: bool) -> String {
    if json {
        serde_json::json!({ "error": one_line(error), "exit_code": code }).to_string()
    } else {
        format!("error: {}", one_line(error))
    }
}

/// The error and its causes on one line: `outer: inner: root`.
fn one_line(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if !text.is_empty() {
            if text.contains(&cause) {
                continue;
            }
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

fn init_tracing(default_level: &str, format: crate::config::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    let _ = match format {
        crate::config::LogFormat::Json => builder.json().with_current_span(true).with_span_list(true).try_init(),
        crate::config::LogFormat::Text => {
            // Colour only on a terminal: journald, docker logs and log files get plain text.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(ansi).try_init()
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn errors_are_json_with_output_json() {
        let error = anyhow::anyhow!("key not found: k");
        assert_eq!(error_report(&error, 1, false), "error: key not found: k");
        let report: serde_json::Value = serde_json::from_str(&error_report(&error, 1, true)).unwrap();
        assert_eq!(report, serde_json::json!({"error": "key not found: k", "exit_code": 1}));
    }

    #[test]
    fn one_line_joins_causes_without_repeats() {
        let error = anyhow::anyhow!("connection refused").context("cannot reach gateway at http://x");
        assert_eq!(one_line(&error), "cannot reach gateway at http://x: connection refused");
    }
}
