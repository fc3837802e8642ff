//! `ydht kv put|get|delete|incr|list|locate`: the tenant's keys through the gateway,
//! authenticated with an API key. Values are raw bytes end to end.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use anyhow::Context as _;
use base64::Engine;
use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use super::api::{KvPut, Precondition};
use super::locate::LocateArgs;
use super::output::{human_bytes, print_bytes, print_json, print_line, table};
use super::{ClientArgs, ClientFlags, Context, KeyClient};
use crate::error::{Exit, exit};
use crate::proto::{KvListEntry, KvWriteResponse};
use crate::units::count_of;

/// Largest value read from stdin or a file (the gateway enforces its own, smaller, limit).
const MAX_INPUT_BYTES: u64 = 256 * 1024 * 1024;
/// Keys asked for per page of `kv list`.
const LIST_PAGE: usize = 1000;

/// `ydht kv …`
#[derive(Subcommand, Debug)]
pub enum KvCommand {
    /// Store a value: from VALUE, --file, or stdin (binary-safe)
    Put(PutArgs),
    /// Print a value's raw bytes (or write them to -o FILE); exit 1 if the key does not exist
    Get(GetArgs),
    /// Delete a key; exit 1 if it does not exist
    Delete(DeleteArgs),
    /// Add to an integer counter (decimal text) with compare-and-set; a missing key counts from 0
    Incr(IncrArgs),
    /// List your keys
    List(ListArgs),
    /// Show a key's primary and replicas and the version each holds (needs the cluster secret)
    Locate(LocateArgs),
    /// Load keys from a JSON-lines file (key, value or value_base64, content_type, ttl), in batches
    Import(super::transfer::ImportArgs),
    /// Write every key (or those under --prefix) as JSON lines, with its TTL left, to stdout
    Export(super::transfer::ExportArgs),
    /// Print changes (put, delete, expire) as they happen until Ctrl-C; reconnects and resumes by itself
    Watch(super::watch::WatchArgs),
}

/// `--consistency`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// The primary has it durably; replicas follow in the background
    Eventual,
    /// A majority of the replicas has it durably (reads: newest of a majority)
    Strong,
}

impl Consistency {
    /// The `X-Consistency` header value.
    pub fn as_header(self) -> &'static str {
        match self {
            Self::Eventual => "eventual",
            Self::Strong => "strong",
        }
    }
}

/// Arguments of `kv put`.
#[derive(Args, Debug)]
pub struct PutArgs {
    /// The key (1–1024 bytes of UTF-8)
    pub key: String,

    /// The value; omit it to use --file or stdin
    #[arg(conflicts_with = "file")]
    pub value: Option<String>,

    /// Read the value from this file
    #[arg(long, short = 'f', value_name = "PATH")]
    pub file: Option<PathBuf>,

    /// Expire the key after this long: 30s, 30m, 1h, 24h, 1h30m
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,

    /// Consistency level of the write [default: eventual]
    #[arg(long, value_enum)]
    pub consistency: Option<Consistency>,

    /// Content type stored with the value [default: application/octet-stream]
    #[arg(long, value_name = "TYPE")]
    pub content_type: Option<String>,

    /// Write only if the key is at this version (as `kv get --show-version` prints it); else exit 5
    #[arg(long, value_name = "V", conflicts_with = "if_absent")]
    pub if_version: Option<u64>,

    /// Write only if the key does not exist (absent, deleted or expired); else exit 5
    #[arg(long)]
    pub if_absent: bool,
    /// The gateway, the API key and the config dir.
    #[command(flatten)]
    pub client: KeyClient,
}

/// Arguments of `kv get`.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// The key
    pub key: String,

    /// Write the value to this file instead of stdout
    #[arg(short = 'o', long = "output-file", value_name = "FILE")]
    pub output_file: Option<PathBuf>,

    /// Consistency level of the read [default: eventual]
    #[arg(long, value_enum)]
    pub consistency: Option<Consistency>,

    /// Also print the value's version (`version: V` after the value), for --if-version
    #[arg(long)]
    pub show_version: bool,
    /// The gateway, the API key and the config dir.
    #[command(flatten)]
    pub client: KeyClient,
}

/// Arguments of `kv delete`.
#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// The key
    pub key: String,

    /// Consistency level of the delete [default: eventual]
    #[arg(long, value_enum)]
    pub consistency: Option<Consistency>,

    /// Delete only if the key is at this version; else exit 5
    #[arg(long, value_name = "V")]
    pub if_version: Option<u64>,
    /// The gateway, the API key and the config dir.
    #[command(flatten)]
    pub client: KeyClient,
}

/// Arguments of `kv incr`.
#[derive(Args, Debug)]
pub struct IncrArgs {
    /// The key holding the counter
    pub key: String,

    /// How much to add (negative to subtract)
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    pub by: i64,
    /// The gateway, the API key and the config dir.
    #[command(flatten)]
    pub client: KeyClient,
}

/// Arguments of `kv list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only keys starting with this prefix
    #[arg(long)]
    pub prefix: Option<String>,

    /// Show at most this many keys [default: all]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// The gateway, the API key and the config dir.
    #[command(flatten)]
    pub client: KeyClient,
}

impl ClientFlags for KvCommand {
    fn given(&self) -> ClientArgs {
        self.client().given()
    }
}

impl KvCommand {
    fn client(&self) -> &dyn ClientFlags {
        match self {
            Self::Put(args) => &args.client,
            Self::Get(args) => &args.client,
            Self::Delete(args) => &args.client,
            Self::Incr(args) => &args.client,
            Self::List(args) => &args.client,
            Self::Locate(args) => &args.client,
            Self::Import(args) => &args.client,
            Self::Export(args) => &args.client,
            Self::Watch(args) => &args.client,
        }
    }

    /// Runs the subcommand.
    pub async fn run(self, context: &Context) -> anyhow::Result<()> {
        match self {
            Self::Put(args) => put(args, context).await,
            Self::Get(args) => get(args, context).await,
            Self::Delete(args) => delete(args, context).await,
            Self::Incr(args) => incr(args, context).await,
            Self::List(args) => list(args, context).await,
            Self::Locate(args) => args.run(context).await,
            Self::Import(args) => super::transfer::import(args, context).await,
            Self::Export(args) => super::transfer::export(args, context).await,
            Self::Watch(args) => super::watch::watch(args, context).await,
        }
    }
}

async fn put(args: PutArgs, context: &Context) -> anyhow::Result<()> {
    if let Some(ttl) = &args.ttl {
        crate::duration::parse(ttl).map_err(|error| Exit::usage(format!("invalid --ttl: {error}")))?;
    }
    let value = read_value(args.value, args.file.as_deref())?;
    let api_key = context.api_key()?;
    let put = KvPut {
        key: &args.key,
        value,
        content_type: args.content_type.as_deref(),
        ttl: args.ttl.as_deref(),
        consistency: args.consistency.map(Consistency::as_header),
        precondition: match (args.if_version, args.if_absent) {
            (Some(version), _) => Some(Precondition::IfVersion(version)),
            (None, true) => Some(Precondition::IfAbsent),
            (None, false) => None,
        },
    };
    let conditional = put.precondition.is_some();
    let size = put.value.len() as u64;
    let written = context.api.kv_put(&context.gateway, &api_key, put).await?;
    if context.json() {
        return print_json(&written);
    }
    if conditional {
        // Conditional writes are linearizable (a majority of the owners has them) whatever --consistency says.
        return print_line(&format!(
            "Stored {} ({}) at version {} (conditional: linearizable, majority durable).",
            written.key,
            human_bytes(size),
            written.version
        ));
    }
    print_line(&stored_line(&written, size, args.consistency.unwrap_or(Consistency::Eventual)))
}

/// How many compare-and-set rounds `kv incr` tries before giving up.
const INCR_ATTEMPTS: u32 = 64;

/// `kv incr`: read the counter (strong), write the sum with `If-Match` on the version read (or
/// `If-None-Match: *` when absent), and start again when another writer got in between.
async fn incr(args: IncrArgs, context: &Context) -> anyhow::Result<()> {
    let api_key = context.api_key()?;
    for attempt in 0..INCR_ATTEMPTS {
        let current =
            context.api.kv_get(&context.gateway, &api_key, &args.key, Some(Consistency::Strong.as_header())).await?;
        let (count, precondition) = match &current {
            None => (0, Precondition::IfAbsent),
            Some(value) => {
                let text = std::str::from_utf8(&value.bytes).unwrap_or("").trim();
                let count = text.parse::<i64>().map_err(|_| {
                    Exit::usage(format!(
                        "the value of {} is not an integer counter (decimal text); left unchanged",
                        args.key
                    ))
                })?;
                let version = value.version.ok_or_else(|| {
                    Exit::new(exit::UNAVAILABLE, "the gateway did not send the value's version; upgrade it")
                })?;
                (count, Precondition::IfVersion(version))
            }
        };
        let next = count.checked_add(args.by).ok_or_else(|| {
            Exit::usage(format!("{count} + {} overflows a 64-bit counter; {} is left unchanged", args.by, args.key))
        })?;
        let put = KvPut {
            key: &args.key,
            value: Bytes::from(next.to_string()),
            content_type: Some("text/plain"),
            ttl: None,
            consistency: None,
            precondition: Some(precondition),
        };
        match context.api.kv_put(&context.gateway, &api_key, put).await {
            Ok(written) => {
                if context.json() {
                    return print_json(&json!({ "key": args.key, "value": next, "version": written.version }));
                }
                return print_line(&next.to_string());
            }
            Err(error) if crate::error::exit_code_of(&error) == exit::PRECONDITION => {
                // Another writer changed it since the read: read again, after a short random pause.
                let pause = rand::random_range(0..=(1u64 << attempt.min(6)));
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
            Err(error) => return Err(error),
        }
    }
    Err(Exit::new(
        exit::PRECONDITION,
        format!("{} kept changing: gave up after {INCR_ATTEMPTS} compare-and-set attempts", args.key),
    )
    .into())
}

/// `Stored KEY (SIZE) on node-1 + 2 replicas (strong: majority durable).`, or, when copies
/// could not be queued durably, what the answer's warning says instead of claiming replicas.
fn stored_line(written: &KvWriteResponse, size: u64, consistency: Consistency) -> String {
    let node = written.primary_node_id.as_deref().unwrap_or(&written.primary_node);
    if let Some(warning) = &written.warning {
        return format!("Stored {} ({}) on {node}; {warning}", written.key, human_bytes(size));
    }
    let guarantee = match consistency {
        Consistency::Strong => "strong: majority durable",
        Consistency::Eventual => "eventual: primary durable, replicas in background",
    };
    format!(
        "Stored {} ({}) on {node} + {} ({guarantee}).",
        written.key,
        human_bytes(size),
        count_of(written.replicas as u64, "replica", "replicas")
    )
}

/// The value from the argument, the file, or stdin (all of it, bytes unchanged).
fn read_value(argument: Option<String>, file: Option<&std::path::Path>) -> anyhow::Result<Bytes> {
    if let Some(value) = argument {
        return Ok(Bytes::from(value));
    }
    let (mut reader, source): (Box<dyn Read>, String) = match file {
        Some(path) => {
            let opened = std::fs::File::open(path)
                .map_err(|error| Exit::usage(format!("cannot open --file {}: {error}", path.display())))?;
            (Box::new(opened), path.display().to_string())
        }
        None => {
            if std::io::stdin().is_terminal() {
                return Err(Exit::usage("no value given; pass VALUE, --file PATH, or pipe the value on stdin").into());
            }
            (Box::new(std::io::stdin()), "stdin".to_string())
        }
    };
    read_bounded(&mut reader, &source)
}

fn read_bounded(reader: &mut dyn Read, source: &str) -> anyhow::Result<Bytes> {
    let mut buffer = Vec::new();
    reader
        .take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut buffer)
        .map_err(|error| Exit::usage(format!("cannot read the value from {source}: {error}")))?;
    if buffer.len() as u64 > MAX_INPUT_BYTES {
        return Err(
            Exit::usage(format!("the value from {source} is larger than {}", human_bytes(MAX_INPUT_BYTES))).into()
        );
    }
    Ok(Bytes::from(buffer))
}

async fn get(args: GetArgs, context: &Context) -> anyhow::Result<()> {
    let api_key = context.api_key()?;
    let consistency = args.consistency.map(Consistency::as_header);
    let value = context
        .api
        .kv_get(&context.gateway, &api_key, &args.key, consistency)
        .await?
        .ok_or_else(|| Exit::new(exit::NOT_FOUND, format!("key not found: {}", args.key)))?;
    if let Some(path) = &args.output_file {
        std::fs::write(path, &value.bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if context.json() {
        let mut document = json!({
            "key": args.key,
            "etag": value.version.map(crate::precondition::etag),
            "size": value.bytes.len(),
            "content_type": value.content_type,
            "version": value.version,
            "expires_at": value.expires_at,
        });
        match (&args.output_file, std::str::from_utf8(&value.bytes)) {
            (Some(path), _) => document["file"] = json!(path.display().to_string()),
            (None, Ok(text)) => document["value"] = json!(text),
            (None, Err(_)) => {
                document["value_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(&value.bytes));
            }
        }
        return print_json(&document);
    }
    let version = value.version.map_or_else(|| "unknown".to_string(), |version| version.to_string());
    if let Some(path) = &args.output_file {
        let shown = if args.show_version { format!(" (version {version})") } else { String::new() };
        return print_line(&format!("Wrote {} to {}{shown}.", human_bytes(value.bytes.len() as u64), path.display()));
    }
    print_bytes(&value.bytes)?;
    // On a terminal, end the line so the prompt does not stick to the value; pipes get the bytes
    // unchanged (unless the version follows on a line of its own).
    if (args.show_version || std::io::stdout().is_terminal()) && !value.bytes.ends_with(b"\n") {
        print_bytes(b"\n")?;
    }
    if args.show_version {
        print_line(&format!("version: {version}"))?;
    }
    Ok(())
}

async fn delete(args: DeleteArgs, context: &Context) -> anyhow::Result<()> {
    let api_key = context.api_key()?;
    let consistency = args.consistency.map(Consistency::as_header);
    let deleted = context
        .api
        .kv_delete(&context.gateway, &api_key, &args.key, consistency, args.if_version)
        .await?
        .ok_or_else(|| Exit::new(exit::NOT_FOUND, format!("key not found: {}", args.key)))?;
    if context.json() {
        return print_json(&deleted);
    }
    print_line(&format!("Deleted {}.", deleted.key))
}

async fn list(args: ListArgs, context: &Context) -> anyhow::Result<()> {
    let api_key = context.api_key()?;
    let limit = args.limit.map_or(usize::MAX, |limit| usize::try_from(limit).unwrap_or(usize::MAX));
    let mut keys: Vec<KvListEntry> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let want = (limit - keys.len()).min(LIST_PAGE);
        let page = context
            .api
            .kv_list(&context.gateway, &api_key, args.prefix.as_deref(), Some(want), cursor.as_deref())
            .await?;
        let got = page.keys.len();
        keys.extend(page.keys.into_iter().take(want));
        cursor = page.next_cursor;
        if cursor.is_none() || got == 0 || keys.len() >= limit {
            break;
        }
    }
    if context.json() {
        return print_json(&json!({ "keys": keys, "next_cursor": cursor }));
    }
    if keys.is_empty() {
        return print_line(
            match &args.prefix {
                Some(prefix) => format!("No keys start with {prefix:?}."),
                None => "No keys yet; store one with `ydht kv put KEY VALUE`.".to_string(),
            }
            .as_str(),
        );
    }
    let mut rows = table(["KEY", "SIZE", "EXPIRES"]);
    for entry in &keys {
        rows.add_row([
            entry.key.clone(),
            human_bytes(entry.size),
            entry
                .expires_at
                .map_or_else(|| "-".to_string(), |at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        ]);
    }
    print_line(&rows.to_string())?;
    let count = keys.len();
    let more = if cursor.is_some() { "; more exist, raise --limit to see them" } else { "" };
    print_line(&format!("{count} key{}{more}", if count == 1 { "" } else { "s" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_from_the_argument_or_a_file_unchanged() {
        assert_eq!(read_value(Some("hello".into()), None).unwrap(), Bytes::from_static(b"hello"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.bin");
        let binary: Vec<u8> = (0..=255).collect();
        std::fs::write(&path, &binary).unwrap();
        assert_eq!(read_value(None, Some(&path)).unwrap(), Bytes::from(binary));
        let error = read_value(None, Some(&dir.path().join("missing"))).unwrap_err();
        assert_eq!(crate::error::exit_code_of(&error), exit::USAGE);
    }

    #[test]
    fn reading_is_bounded() {
        let mut endless = std::io::repeat(7);
        let error = read_bounded(&mut endless, "stdin").unwrap_err();
        assert_eq!(crate::error::exit_code_of(&error), exit::USAGE);
        assert!(error.to_string().contains("larger than"));
    }

    #[test]
    fn stored_line_names_the_node_id_and_the_guarantee() {
        let written: KvWriteResponse = serde_json::from_value(json!({"success": true, "key": "k",
            "primary_node": "http://127.0.0.1:8082", "primary_node_id": "node-1", "replicas": 2}))
        .unwrap();
        assert_eq!(
            stored_line(&written, 5, Consistency::Strong),
            "Stored k (5 B) on node-1 + 2 replicas (strong: majority durable)."
        );
        assert_eq!(
            stored_line(&written, 5, Consistency::Eventual),
            "Stored k (5 B) on node-1 + 2 replicas (eventual: primary durable, replicas in background)."
        );
        let old_gateway: KvWriteResponse = serde_json::from_value(json!({"success": true, "key": "k",
            "primary_node": "http://127.0.0.1:8082", "replicas": 1}))
        .unwrap();
        assert!(stored_line(&old_gateway, 5, Consistency::Eventual).contains("on http://127.0.0.1:8082 + 1 replica ("));
    }

    #[test]
    fn put_parses_its_flags() {
        use crate::cli::{Cli, Command};
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "ydht",
            "kv",
            "put",
            "k",
            "--ttl",
            "1h",
            "--consistency",
            "strong",
            "--content-type",
            "application/json",
        ])
        .unwrap();
        let Command::Kv(KvCommand::Put(args)) = cli.command else { panic!("parsed as {:?}", cli.command) };
        assert_eq!(args.ttl.as_deref(), Some("1h"));
        assert_eq!(args.consistency, Some(Consistency::Strong));
        assert!(args.value.is_none() && args.file.is_none());
        let error = Cli::try_parse_from(["ydht", "kv", "put", "k", "v", "--file", "x"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ArgumentConflict);
        let error = Cli::try_parse_from(["ydht", "kv", "put", "k", "--consistency", "weak"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::InvalidValue);
    }
}
