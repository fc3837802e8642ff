//! `ydht apikey create|list|revoke`: the logged-in user's API keys.
//! `create --use` stores the new key as the default for `ydht kv`.

use clap::builder::TypedValueParser;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::json;

use super::api::{ApiKeyList, CreateApiKeyRequest, CreatedApiKey, decode};
use super::credentials::StoredApiKey;
use super::output::{format_timestamp, print_json, print_line, table};
use super::{ClientArgs, ClientFlags, Context, UsersClient};
use crate::error::{Exit, exit};
use crate::proto::Scope;

/// `ydht apikey …`
#[derive(Subcommand, Debug)]
pub enum ApikeyCommand {
    /// Create an API key (its full value is shown once)
    Create(CreateArgs),
    /// List your API keys (never their full value)
    List(ListArgs),
    /// Revoke an API key by id; it stops working at the gateway within seconds
    Revoke(RevokeArgs),
}

/// Arguments of `apikey create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// A name to recognise the key by
    #[arg(long)]
    pub name: String,

    /// Comma-separated scopes
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "read,write",
        value_parser = clap::builder::PossibleValuesParser::new(Scope::ALL.map(Scope::as_str))
            .try_map(|name| name.parse::<Scope>())
    )]
    pub scopes: Vec<Scope>,

    /// Days until the key expires, 1–3650 [default: never]
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub expires_in_days: Option<u32>,

    /// Store the key as the default for `ydht kv` (in credentials.json, mode 0600)
    #[arg(long = "use")]
    pub use_it: bool,
    /// The users service and the config dir.
    #[command(flatten)]
    pub client: UsersClient,
}

/// Arguments of `apikey list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// The users service and the config dir.
    #[command(flatten)]
    pub client: UsersClient,
}

/// Arguments of `apikey revoke`.
#[derive(Args, Debug)]
pub struct RevokeArgs {
    /// The key's id, as `apikey list` shows it
    pub id: i64,
    /// The users service and the config dir.
    #[command(flatten)]
    pub client: UsersClient,
}

impl ClientFlags for ApikeyCommand {
    fn given(&self) -> ClientArgs {
        self.client().given()
    }
}

impl ApikeyCommand {
    fn client(&self) -> &UsersClient {
        match self {
            Self::Create(args) => &args.client,
            Self::List(args) => &args.client,
            Self::Revoke(args) => &args.client,
        }
    }

    /// Runs the subcommand.
    pub async fn run(self, context: &Context) -> anyhow::Result<()> {
        match self {
            Self::Create(args) => create(args, context).await,
            Self::List(_) => list(context).await,
            Self::Revoke(args) => revoke(args, context).await,
        }
    }
}

async fn create(args: CreateArgs, context: &Context) -> anyhow::Result<()> {
    let mut scopes = args.scopes;
    scopes.sort_unstable();
    scopes.dedup();
    let body = CreateApiKeyRequest { name: args.name, scopes, expires_in_days: args.expires_in_days };
    let response = context
        .authorized(|token| {
            context.api.bearer(Method::POST, &context.users, &["apikeys"], token).map(|request| request.json(&body))
        })
        .await?;
    let created: CreatedApiKey = decode(&context.users, response).await?;
    if args.use_it {
        let stored =
            StoredApiKey { id: created.info.id, prefix: created.info.key_prefix.clone(), key: created.key.clone() };
        context.store.update(|credentials| credentials.api_key = Some(stored))?;
    }
    if context.json() {
        let mut value = serde_json::to_value(&created)?;
        value["default"] = json!(args.use_it);
        return print_json(&value);
    }
    let info = &created.info;
    print_line(&format!(
        "Created API key {} {:?} (scopes: {}; expires: {}).",
        info.id,
        info.name,
        Scope::join(&info.scopes, ", "),
        format_timestamp(info.expires_at.as_ref())
    ))?;
    print_line("")?;
    print_line(&format!("    {}", created.key))?;
    print_line("")?;
    print_line("This is the only time the full key is shown; keep it somewhere safe.")?;
    if args.use_it {
        print_line(&format!(
            "It is now the default key for `ydht kv` (stored in {}).",
            context.store.path().display()
        ))?;
    }
    Ok(())
}

async fn list(context: &Context) -> anyhow::Result<()> {
    let response =
        context.authorized(|token| context.api.bearer(Method::GET, &context.users, &["apikeys"], token)).await?;
    let keys: ApiKeyList = decode(&context.users, response).await?;
    if context.json() {
        return print_json(&keys);
    }
    let default_id = context.store.load()?.api_key.map(|key| key.id);
    if keys.api_keys.is_empty() {
        return print_line("No API keys yet; create one with `ydht apikey create --name NAME --use`.");
    }
    let mut rows = table(["ID", "NAME", "PREFIX", "SCOPES", "ACTIVE", "LAST USED", "EXPIRES", "DEFAULT"]);
    for key in &keys.api_keys {
        rows.add_row([
            key.id.to_string(),
            key.name.clone(),
            format!("{}…", key.key_prefix),
            Scope::join(&key.scopes, ","),
            super::output::yes_no(key.is_active, "revoked").to_string(),
            format_timestamp(key.last_used_at.as_ref()),
            format_timestamp(key.expires_at.as_ref()),
            if default_id == Some(key.id) { "*" } else { "" }.to_string(),
        ]);
    }
    print_line(&rows.to_string())
}

async fn revoke(args: RevokeArgs, context: &Context) -> anyhow::Result<()> {
    let id = args.id.to_string();
    let result =
        context.authorized(|token| context.api.bearer(Method::DELETE, &context.users, &["apikeys", &id], token)).await;
    if result.as_ref().is_err_and(|error| crate::error::exit_code_of(error) == exit::NOT_FOUND) {
        return Err(
            Exit::new(exit::NOT_FOUND, format!("you have no API key with id {id}; see `ydht apikey list`")).into()
        );
    }
    result?;
    let mut forgot_default = false;
    context.store.update(|credentials| {
        if credentials.api_key.as_ref().is_some_and(|key| key.id == args.id) {
            credentials.api_key = None;
            forgot_default = true;
        }
    })?;
    if context.json() {
        return print_json(&json!({ "revoked": args.id, "forgot_default": forgot_default }));
    }
    print_line(&format!("Revoked API key {id}."))?;
    if forgot_default {
        print_line("It was the default key for `ydht kv`; it is forgotten.")?;
    }
    Ok(())
}
