//! The client half of `ydht`: accounts, API keys, key-value operations and
//! cluster status, over the users service's and the gateway's HTTP APIs.
//!
//! - [`api`]: the typed HTTP client; every failure becomes an exit code and a one-line message.
//! - [`credentials`]: `config.json` (URL defaults) and `credentials.json` (tokens, default key; mode 0600).
//! - [`output`]: tables (comfy-table) and JSON output.
//! - [`account`]: `signup`, `login`, `logout`, `whoami`.
//! - [`apikey`]: `apikey create|list|revoke`.
//! - [`kv`]: `kv put|get|delete|list`; [`locate`]: `kv locate`.
//! - [`cluster`]: the operator view (`GET /cluster`) and the cluster secret; [`status`]: `ydht status`.
//! - [`membership`]: `cluster join|leave|status` (online membership changes).
//!
//! Settings are layered: built-in default → `config.json` → environment → flag.

pub mod account;
pub mod api;
pub mod apikey;
pub mod backup;
pub mod cluster;
pub mod credentials;
pub mod kv;
pub mod locate;
pub mod membership;
pub mod output;
pub mod status;
pub mod transfer;
pub mod watch;

use std::fmt;
use std::path::PathBuf;

use clap::Args;
use reqwest::{RequestBuilder, Response, StatusCode};

use crate::error::{Exit, exit};
use api::{Api, Endpoint, check};
use credentials::{ConfigFile, CredentialsStore, Session, default_config_dir, unix_now};
use output::OutputFormat;

/// Default gateway URL.
pub const DEFAULT_GATEWAY_URL: &str = "http://127.0.0.1:8080";
/// Default users service URL.
pub const DEFAULT_USERS_URL: &str = "http://127.0.0.1:8081";

/// The `--help` heading of the service URLs and credentials.
pub const CLIENT_OPTIONS: &str = "Client options";

/// The client settings a command was given (its flags and their environment
/// variables); `None` falls back to config.json, then to the built-in default.
#[derive(Clone, Default)]
pub struct ClientArgs {
    /// `--gateway` / `YDHT_GATEWAY_URL`.
    pub gateway: Option<String>,
    /// `--users` / `YDHT_USERS_URL`.
    pub users: Option<String>,
    /// `--output` / `YDHT_OUTPUT` (global).
    pub output: OutputFormat,
    /// `--api-key` / `YDHT_API_KEY`.
    pub api_key: Option<String>,
    /// `--config-dir` / `YDHT_CONFIG_DIR`.
    pub config_dir: Option<PathBuf>,
}

impl fmt::Debug for ClientArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientArgs")
            .field("gateway", &self.gateway)
            .field("users", &self.users)
            .field("output", &self.output)
            .field("api_key", &self.api_key.as_ref().map(|_| "<hidden>"))
            .field("config_dir", &self.config_dir)
            .finish()
    }
}

/// `--gateway`.
#[derive(Args, Clone, Default, Debug)]
pub struct GatewayFlag {
    /// Gateway base URL [default: config.json's gateway_url, else http://127.0.0.1:8080]
    #[arg(long, env = "YDHT_GATEWAY_URL", value_name = "URL", help_heading = CLIENT_OPTIONS)]
    pub gateway: Option<String>,
}

/// `--users`.
#[derive(Args, Clone, Default, Debug)]
pub struct UsersFlag {
    /// Users service base URL [default: config.json's users_url, else http://127.0.0.1:8081]
    #[arg(long, env = "YDHT_USERS_URL", value_name = "URL", help_heading = CLIENT_OPTIONS)]
    pub users: Option<String>,
}

/// `--api-key`.
#[derive(Args, Clone, Default)]
pub struct ApiKeyFlag {
    /// API key [default: the one stored by `apikey create --use`]
    #[arg(long, env = "YDHT_API_KEY", hide_env_values = true, value_name = "KEY", help_heading = CLIENT_OPTIONS)]
    pub api_key: Option<String>,
}

impl fmt::Debug for ApiKeyFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyFlag").field("api_key", &self.api_key.as_ref().map(|_| "<hidden>")).finish()
    }
}

/// `--config-dir`.
#[derive(Args, Clone, Default, Debug)]
pub struct ConfigDirFlag {
    /// Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]
    #[arg(long, env = "YDHT_CONFIG_DIR", value_name = "DIR", help_heading = CLIENT_OPTIONS)]
    pub config_dir: Option<PathBuf>,
}

/// The client flags of one command, as its `--help` lists them.
pub trait ClientFlags {
    /// The settings given on the command line or in the environment.
    fn given(&self) -> ClientArgs;
}

/// `--users`, `--config-dir`: the account and API key commands (the users service).
#[derive(Args, Clone, Default, Debug)]
pub struct UsersClient {
    #[command(flatten)]
    users: UsersFlag,
    #[command(flatten)]
    config: ConfigDirFlag,
}

/// `--gateway`, `--config-dir`: the operator commands that talk to the gateway with the cluster secret.
#[derive(Args, Clone, Default, Debug)]
pub struct GatewayClient {
    #[command(flatten)]
    gateway: GatewayFlag,
    #[command(flatten)]
    config: ConfigDirFlag,
}

/// `--gateway`, `--api-key`, `--config-dir`: the key-value commands.
#[derive(Args, Clone, Default, Debug)]
pub struct KeyClient {
    #[command(flatten)]
    gateway: GatewayFlag,
    #[command(flatten)]
    api_key: ApiKeyFlag,
    #[command(flatten)]
    config: ConfigDirFlag,
}

/// `--gateway`, `--users`, `--config-dir`: `ydht status`.
#[derive(Args, Clone, Default, Debug)]
pub struct ServicesClient {
    #[command(flatten)]
    gateway: GatewayFlag,
    #[command(flatten)]
    users: UsersFlag,
    #[command(flatten)]
    config: ConfigDirFlag,
}

/// `--gateway`, `--users`, `--api-key`, `--config-dir`: `kv locate` (finds the key's tenant too).
#[derive(Args, Clone, Default, Debug)]
pub struct FullClient {
    #[command(flatten)]
    gateway: GatewayFlag,
    #[command(flatten)]
    users: UsersFlag,
    #[command(flatten)]
    api_key: ApiKeyFlag,
    #[command(flatten)]
    config: ConfigDirFlag,
}

macro_rules! client_flags {
    ($name:ident: $($field:ident),*) => {
        impl ClientFlags for $name {
            fn given(&self) -> ClientArgs {
                ClientArgs {
                    $($field: self.$field.$field.clone(),)*
                    config_dir: self.config.config_dir.clone(),
                    ..ClientArgs::default()
                }
            }
        }
    };
}

client_flags!(UsersClient: users);
client_flags!(GatewayClient: gateway);
client_flags!(KeyClient: gateway, api_key);
client_flags!(ServicesClient: gateway, users);
client_flags!(FullClient: gateway, users, api_key);

/// Client flags named before the subcommand (`ydht --gateway URL cluster status`), as
/// before they moved to the subcommands that use them: still accepted before any
/// command (so an alias like `ydht --gateway URL --users URL` keeps working), hidden
/// from `--help`, without environment variables (the subcommand reads those). Given,
/// one wins over the subcommand's flag and environment; a command that does not use
/// it ignores it, as it ignores the environment variable.
#[derive(Args, Clone, Default)]
pub struct LeadingClientArgs {
    #[arg(long, value_name = "URL", hide = true)]
    gateway: Option<String>,
    #[arg(long, value_name = "URL", hide = true)]
    users: Option<String>,
    #[arg(long, value_name = "KEY", hide = true)]
    api_key: Option<String>,
    #[arg(long, value_name = "DIR", hide = true)]
    config_dir: Option<PathBuf>,
}

impl fmt::Debug for LeadingClientArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeadingClientArgs")
            .field("gateway", &self.gateway)
            .field("users", &self.users)
            .field("api_key", &self.api_key.as_ref().map(|_| "<hidden>"))
            .field("config_dir", &self.config_dir)
            .finish()
    }
}

impl LeadingClientArgs {
    /// The command's settings: the leading flags where given, else its own flags and environment.
    pub fn apply(&self, flags: &dyn ClientFlags, output: OutputFormat) -> ClientArgs {
        let own = flags.given();
        ClientArgs {
            gateway: self.gateway.clone().or(own.gateway),
            users: self.users.clone().or(own.users),
            api_key: self.api_key.clone().or(own.api_key),
            config_dir: self.config_dir.clone().or(own.config_dir),
            output,
        }
    }
}

impl ClientArgs {
    /// Resolves the layered settings into a ready [`Context`].
    pub fn context(&self) -> anyhow::Result<Context> {
        let config_dir = match &self.config_dir {
            Some(dir) => dir.clone(),
            None => default_config_dir()?,
        };
        let file = ConfigFile::load(&config_dir)?;
        let pick = |flag: &Option<String>, from_file: Option<String>, default: &str| {
            flag.clone().filter(|url| !url.trim().is_empty()).or(from_file).unwrap_or_else(|| default.to_string())
        };
        let gateway = pick(&self.gateway, file.gateway_url, DEFAULT_GATEWAY_URL);
        let users = pick(&self.users, file.users_url, DEFAULT_USERS_URL);
        Ok(Context {
            api: Api::new()?,
            gateway: Endpoint::parse("gateway", &gateway, "--gateway or YDHT_GATEWAY_URL")?,
            users: Endpoint::parse("users service", &users, "--users or YDHT_USERS_URL")?,
            output: self.output,
            api_key: self.api_key.clone().filter(|key| !key.trim().is_empty()),
            store: CredentialsStore::new(&config_dir),
        })
    }
}

/// Everything a client command needs: HTTP client, endpoints, output format, stored credentials.
#[derive(Debug)]
pub struct Context {
    /// The HTTP client.
    pub api: Api,
    /// The gateway.
    pub gateway: Endpoint,
    /// The users service.
    pub users: Endpoint,
    /// `--output`.
    pub output: OutputFormat,
    /// `--api-key` / `YDHT_API_KEY`, overriding the stored default.
    api_key: Option<String>,
    /// `credentials.json`.
    pub store: CredentialsStore,
}

impl Context {
    /// Whether to print JSON.
    pub fn json(&self) -> bool {
        self.output == OutputFormat::Json
    }

    /// The API key for `kv`: the flag / environment, else the stored default; exit 3 if none.
    pub fn api_key(&self) -> anyhow::Result<String> {
        if let Some(key) = &self.api_key {
            return Ok(key.clone());
        }
        match self.store.load()?.api_key {
            Some(stored) => Ok(stored.key),
            None => Err(Exit::new(
                exit::AUTH,
                "no API key; create one with `ydht apikey create --name NAME --use`, or pass --api-key / set YDHT_API_KEY",
            )
            .into()),
        }
    }

    /// The stored session, refreshed first if its access token is (about to be) expired.
    pub async fn session(&self) -> anyhow::Result<Session> {
        let session = self.store.load()?.session.ok_or_else(|| {
            Exit::new(exit::AUTH, "not logged in; run `ydht login --email EMAIL` (or `ydht signup` first)")
        })?;
        if session.users_url != self.users.display {
            return Err(Exit::new(
                exit::AUTH,
                format!(
                    "you are logged in at {}, not at {}; run `ydht login` for this users service",
                    session.users_url, self.users.display
                ),
            )
            .into());
        }
        if session.needs_refresh(unix_now()) { self.refresh(session).await } else { Ok(session) }
    }

    /// Trades the refresh token for a new pair and stores it; on failure the
    /// dead session is forgotten and the error says to log in again. Holds the
    /// refresh lock, and uses the pair another process stored meanwhile if any.
    pub async fn refresh(&self, session: Session) -> anyhow::Result<Session> {
        let _lock = self.store.lock()?;
        if let Some(current) = self.store.load()?.session {
            if current.refresh_token != session.refresh_token && !current.needs_refresh(unix_now()) {
                return Ok(current);
            }
        }
        match self.api.refresh(&self.users, &session.refresh_token).await {
            Ok(tokens) => {
                let renewed = Session {
                    access_token: tokens.access_token,
                    refresh_token: tokens.refresh_token,
                    access_expires_at: unix_now() + tokens.expires_in,
                    ..session
                };
                self.store.update(|credentials| credentials.session = Some(renewed.clone()))?;
                Ok(renewed)
            }
            Err(error) => {
                if crate::error::exit_code_of(&error) == exit::AUTH {
                    self.store.update(|credentials| credentials.session = None)?;
                }
                Err(error)
            }
        }
    }

    /// Sends a request built with the session's access token to the users service;
    /// on 401 refreshes the token once and retries. Non-success answers become errors.
    pub async fn authorized(&self, build: impl Fn(&str) -> anyhow::Result<RequestBuilder>) -> anyhow::Result<Response> {
        let session = self.session().await?;
        let response = self.api.send(&self.users, build(&session.access_token)?).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return check(&self.users, response).await;
        }
        let session = self.refresh(session).await?;
        let response = self.api.send(&self.users, build(&session.access_token)?).await?;
        check(&self.users, response).await
    }
}

/// Flags of the operator commands that read the cluster's internal endpoints (`status`, `kv locate`).
#[derive(Args, Clone, Default)]
pub struct OperatorArgs {
    /// The cluster secret [default: read from cluster.secret in the data dir, as the servers do]
    #[arg(long, env = "YDHT_CLUSTER_SECRET", hide_env_values = true, value_name = "SECRET", help_heading = CLIENT_OPTIONS)]
    pub cluster_secret: Option<String>,

    /// Data dir of a cluster on this machine, for its cluster.secret [default: the platform data dir]
    #[arg(long, env = "YDHT_DATA_DIR", value_name = "DIR", help_heading = CLIENT_OPTIONS)]
    pub data_dir: Option<PathBuf>,
}

impl fmt::Debug for OperatorArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperatorArgs")
            .field("cluster_secret", &self.cluster_secret.as_ref().map(|_| "<hidden>"))
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("ydht").chain(args.iter().copied())).unwrap()
    }

    /// The settings `ydht kv …` resolves to.
    fn kv_settings(cli: &Cli) -> ClientArgs {
        let Command::Kv(command) = &cli.command else { panic!("not a kv command: {cli:?}") };
        cli.leading.apply(command, cli.output)
    }

    #[test]
    fn client_flags_work_before_and_after_the_subcommand() {
        let before = parse(&["--gateway", "http://g:1", "--output", "json", "kv", "get", "k"]);
        let after = parse(&["kv", "get", "k", "--gateway", "http://g:1", "--output", "json"]);
        for cli in [before, after] {
            let settings = kv_settings(&cli);
            assert_eq!(settings.gateway.as_deref(), Some("http://g:1"));
            assert_eq!(settings.output, OutputFormat::Json);
        }
        let both = parse(&["--gateway", "http://lead:1", "kv", "get", "k", "--gateway", "http://own:2"]);
        assert_eq!(kv_settings(&both).gateway.as_deref(), Some("http://lead:1"), "the leading flag wins");
        // A leading flag the command does not use is ignored, like its environment variable.
        let cli = parse(&["--api-key", "ydht_x", "--users", "http://u:1", "cluster", "status"]);
        let Command::Cluster(command) = &cli.command else { panic!("not cluster") };
        let settings = cli.leading.apply(command, cli.output);
        assert_eq!((settings.api_key, settings.users), (Some("ydht_x".into()), Some("http://u:1".into())));
    }

    #[test]
    fn subcommands_take_only_their_client_flags() {
        assert!(Cli::try_parse_from(["ydht", "top", "--api-key", "k"]).is_err());
        assert!(Cli::try_parse_from(["ydht", "kv", "get", "k", "--users", "http://u:1"]).is_err());
        assert!(Cli::try_parse_from(["ydht", "completions", "bash", "--gateway", "http://g:1"]).is_err());
        assert!(Cli::try_parse_from(["ydht", "whoami", "--gateway", "http://g:1"]).is_err());
        let cli = parse(&["kv", "locate", "k", "--users", "http://u:1", "--api-key", "k"]);
        let settings = kv_settings(&cli);
        assert_eq!((settings.users.as_deref(), settings.api_key.as_deref()), (Some("http://u:1"), Some("k")));
    }

    #[test]
    fn settings_layer_flag_over_file_over_default() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(credentials::CONFIG_FILE), br#"{"gateway_url": "http://from-file:1"}"#).unwrap();
        let args = ClientArgs { config_dir: Some(dir.path().to_path_buf()), ..ClientArgs::default() };
        let context = args.context().unwrap();
        assert_eq!(context.gateway.display, "http://from-file:1");
        assert_eq!(context.users.display, DEFAULT_USERS_URL);
        let args = ClientArgs { gateway: Some("http://flag:2/".into()), ..args };
        assert_eq!(args.context().unwrap().gateway.display, "http://flag:2");
    }

    #[test]
    fn missing_api_key_is_an_auth_error_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let args = ClientArgs { config_dir: Some(dir.path().to_path_buf()), ..ClientArgs::default() };
        let error = args.context().unwrap().api_key().unwrap_err();
        assert_eq!(crate::error::exit_code_of(&error), exit::AUTH);
        assert!(error.to_string().contains("apikey create"));
        let args = ClientArgs { api_key: Some("ydht_flag".into()), ..args };
        assert_eq!(args.context().unwrap().api_key().unwrap(), "ydht_flag");
    }

    #[tokio::test]
    async fn not_logged_in_is_an_auth_error() {
        let dir = tempfile::tempdir().unwrap();
        let args = ClientArgs { config_dir: Some(dir.path().to_path_buf()), ..ClientArgs::default() };
        let error = args.context().unwrap().session().await.unwrap_err();
        assert_eq!(crate::error::exit_code_of(&error), exit::AUTH);
        assert!(error.to_string().contains("ydht login"));
    }

    #[test]
    fn debug_hides_secrets() {
        let args = ClientArgs { api_key: Some("ydht_secret".into()), ..ClientArgs::default() };
        assert!(!format!("{args:?}").contains("ydht_secret"));
        let operator = OperatorArgs { cluster_secret: Some("hunter2".into()), data_dir: None };
        assert!(!format!("{operator:?}").contains("hunter2"));
    }
}
