//! `ydht kv import FILE` and `ydht kv export`: a tenant's keys as JSON lines, one object per key —
//! `{"key", "value" | "value_base64", "content_type", "ttl"}` — moved through `POST /v1/batch`.
//!
//! Export lists the keys (a page at a time) and reads them in batches; a value that is UTF-8 text
//! is written as `value`, any other as `value_base64`, and a key that expires carries the time it
//! has left as `ttl` (whole seconds, rounded up). Import reads the whole file first (a malformed
//! line is an error naming it, and nothing is sent), then writes batches of up to
//! [`MAX_BATCH_OPS`] keys. So an export imported into an empty account reproduces it. Both show a
//! progress bar when stderr is a terminal.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::api::exit_code_for_status;
use super::kv::Consistency;
use super::output::print_json;
use super::{Context, KeyClient};
use crate::error::Exit;
use crate::proto::OpResult;

/// Keys per batch request (the gateway takes up to 1,000).
pub const MAX_BATCH_OPS: usize = 500;
/// Bytes of values per batch request, well below the gateway's 4 MiB body limit.
const MAX_BATCH_BYTES: usize = 2 << 20;
/// Keys listed per page on export.
const LIST_PAGE: usize = 1000;

/// Arguments of `kv import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The JSON-lines file (`-` for stdin), as `kv export` writes it
    pub file: PathBuf,

    /// Consistency level of the writes [default: eventual]
    #[arg(long, value_enum)]
    pub consistency: Option<Consistency>,
    /// The gateway, the API key and the config dir.
    #[command(flatten)]
    pub client: KeyClient,
}

/// Arguments of `kv export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Only keys starting with this prefix
    #[arg(long)]
    pub prefix: Option<String>,

    /// Consistency level of the reads [default: eventual]
    #[arg(long, value_enum)]
    pub consistency: Option<Consistency>,
    /// The gateway, the API key and the config dir.
    #[command(flatten)]
    pub client: KeyClient,
}

/// One key as a line of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    /// The key.
    pub key: String,
    /// The value, when it is UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The value in standard base64, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
    /// The content type stored with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The time it has left (`3600s`, `1h`), when it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

impl Line {
    /// Checks what the gateway would refuse for the whole line anyway.
    fn check(&self) -> Result<(), String> {
        match (&self.value, &self.value_base64) {
            (Some(_), Some(_)) => return Err("has both value and value_base64".into()),
            (None, None) => return Err("has neither value nor value_base64".into()),
            (None, Some(encoded)) => {
                BASE64.decode(encoded).map_err(|error| format!("value_base64 is not base64: {error}"))?;
            }
            (Some(_), None) => {}
        }
        if let Some(ttl) = &self.ttl {
            crate::duration::parse(ttl).map_err(|error| format!("invalid ttl {ttl:?}: {error}"))?;
        }
        Ok(())
    }

    /// The batch operation that writes it.
    fn put(&self) -> Value {
        let mut op = json!({ "op": "put", "key": self.key });
        for (name, field) in [
            ("value", &self.value),
            ("value_base64", &self.value_base64),
            ("content_type", &self.content_type),
            ("ttl", &self.ttl),
        ] {
            if let Some(field) = field {
                op[name] = json!(field);
            }
        }
        op
    }

    /// The line of a key a batch get read, as of `now` (Unix ms); `None` when it is gone.
    fn of_read(result: OpResult, now: u64) -> Option<Self> {
        if result.status != 200 {
            return None;
        }
        let ttl = match result.expires_at {
            Some(at) if at <= now => return None,
            Some(at) => Some(crate::duration::format(Duration::from_secs((at - now).div_ceil(1000)))),
            None => None,
        };
        Some(Self {
            key: result.key?,
            value: result.value,
            value_base64: result.value_base64,
            content_type: result.content_type,
            ttl,
        })
    }
}

/// Parses the file's lines; a malformed one is a usage error naming it (blank lines are skipped).
fn parse_lines(reader: impl BufRead, name: &str) -> anyhow::Result<Vec<Line>> {
    let mut lines = Vec::new();
    for (index, text) in reader.lines().enumerate() {
        let text = text.with_context(|| format!("cannot read {name}"))?;
        if text.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(&text)
            .map_err(|error| Exit::usage(format!("{name} line {}: not a key line: {error}", index + 1)))?;
        line.check().map_err(|problem| Exit::usage(format!("{name} line {}: {problem}", index + 1)))?;
        lines.push(line);
    }
    Ok(lines)
}

/// A progress bar on stderr when it is a terminal (hidden otherwise).
fn progress(total: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!("{what} [{{bar:30}}] {{pos}}/{{len}} keys  {{per_sec}}"))
            .expect("constant template")
            .progress_chars("=> "),
    );
    bar
}

/// Splits operations into batches of at most [`MAX_BATCH_OPS`] and about [`MAX_BATCH_BYTES`].
fn batches(lines: &[Line]) -> Vec<&[Line]> {
    let mut batches = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (index, line) in lines.iter().enumerate() {
        let size = line.key.len() + line.value.as_ref().or(line.value_base64.as_ref()).map_or(0, String::len);
        if index > start && (index - start >= MAX_BATCH_OPS || bytes + size > MAX_BATCH_BYTES) {
            batches.push(&lines[start..index]);
            start = index;
            bytes = 0;
        }
        bytes += size;
    }
    if start < lines.len() {
        batches.push(&lines[start..]);
    }
    batches
}

/// `kv import FILE`.
pub async fn import(args: ImportArgs, context: &Context) -> anyhow::Result<()> {
    let name = args.file.display().to_string();
    let lines = if name == "-" {
        parse_lines(std::io::stdin().lock(), "stdin")?
    } else {
        let file =
            std::fs::File::open(&args.file).map_err(|error| Exit::usage(format!("cannot open {name}: {error}")))?;
        parse_lines(std::io::BufReader::new(file), &name)?
    };
    let api_key = context.api_key()?;
    let consistency = args.consistency.map(Consistency::as_header);
    let bar = progress(lines.len() as u64, "importing");
    let mut failed: Vec<OpResult> = Vec::new();
    for batch in batches(&lines) {
        let ops: Vec<Value> = batch.iter().map(Line::put).collect();
        let answer = context.api.kv_batch(&context.gateway, &api_key, consistency, &ops).await?;
        failed.extend(answer.results.into_iter().filter(|result| result.status != 200));
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    let imported = lines.len() - failed.len();
    if context.json() {
        print_json(&json!({ "imported": imported, "failed": failed }))?;
    } else {
        println!("imported {imported} key{}", if imported == 1 { "" } else { "s" });
    }
    let Some(first) = failed.first() else { return Ok(()) };
    for result in &failed {
        eprintln!(
            "error: {}: {} {}",
            result.key.as_deref().unwrap_or("?"),
            result.status,
            result.error.as_deref().unwrap_or("")
        );
    }
    Err(Exit::new(
        exit_code_of_op(first),
        format!("{} of {} keys were not imported (listed above)", failed.len(), lines.len()),
    )
    .into())
}

/// The exit code a batch operation's status maps to, as for a single request.
fn exit_code_of_op(result: &OpResult) -> u8 {
    exit_code_for_status(reqwest::StatusCode::from_u16(result.status).unwrap_or(reqwest::StatusCode::BAD_GATEWAY))
}

/// `kv export`.
pub async fn export(args: ExportArgs, context: &Context) -> anyhow::Result<()> {
    let api_key = context.api_key()?;
    let consistency = args.consistency.map(Consistency::as_header);
    let bar = progress(0, "exporting");
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut cursor: Option<String> = None;
    let mut exported = 0u64;
    loop {
        let page = context
            .api
            .kv_list(&context.gateway, &api_key, args.prefix.as_deref(), Some(LIST_PAGE), cursor.as_deref())
            .await?;
        bar.inc_length(page.keys.len() as u64);
        for keys in page.keys.chunks(MAX_BATCH_OPS) {
            let ops: Vec<Value> = keys.iter().map(|entry| json!({ "op": "get", "key": entry.key })).collect();
            let answer = context.api.kv_batch(&context.gateway, &api_key, consistency, &ops).await?;
            let now = crate::hlc::wall_millis();
            for result in answer.results {
                match result.status {
                    // Deleted or expired since the listing: not part of the export.
                    200 | 404 => {}
                    status => {
                        let key = result.key.as_deref().unwrap_or("?");
                        let error = result.error.as_deref().unwrap_or("");
                        return Err(Exit::new(
                            exit_code_of_op(&result),
                            format!("cannot read {key}: {status} {error}; the export stopped"),
                        )
                        .into());
                    }
                }
                if let Some(line) = Line::of_read(result, now) {
                    serde_json::to_writer(&mut out, &line)?;
                    out.write_all(b"\n")?;
                    exported += 1;
                }
            }
            bar.inc(keys.len() as u64);
        }
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    out.flush()?;
    bar.finish_and_clear();
    eprintln!("exported {exported} key{}", if exported == 1 { "" } else { "s" });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::exit;

    #[test]
    fn lines_are_checked_before_anything_is_sent() {
        let good = "{\"key\":\"a\",\"value\":\"x\",\"ttl\":\"1h\"}\n\n{\"key\":\"b\",\"value_base64\":\"AP8=\"}\n";
        let lines = parse_lines(good.as_bytes(), "f").unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].put(), json!({"op": "put", "key": "b", "value_base64": "AP8="}));
        for (bad, words) in [
            ("{\"key\":\"a\"}", "has neither"),
            ("{\"key\":\"a\",\"value\":\"x\",\"value_base64\":\"eA==\"}", "both"),
            ("{\"key\":\"a\",\"value_base64\":\"%\"}", "not base64"),
            ("{\"key\":\"a\",\"value\":\"x\",\"ttl\":\"soon\"}", "invalid ttl"),
            ("{\"key\":\"a\",\"value\":\"x\",\"size\":1}", "unknown field"),
            ("not json", "not a key line"),
        ] {
            let error = parse_lines(format!("{good}{bad}\n").as_bytes(), "f").unwrap_err();
            assert_eq!(crate::error::exit_code_of(&error), exit::USAGE, "{bad}");
            assert!(error.to_string().contains(words), "{bad}: {error}");
            assert!(error.to_string().contains("line 4"), "{bad}: {error}");
        }
    }

    #[test]
    fn batches_are_bounded_by_count_and_bytes() {
        let line = |size: usize| Line {
            key: "k".into(),
            value: Some("v".repeat(size)),
            value_base64: None,
            content_type: None,
            ttl: None,
        };
        let small: Vec<Line> = (0..1200).map(|_| line(1)).collect();
        let sizes: Vec<usize> = batches(&small).iter().map(|batch| batch.len()).collect();
        assert_eq!(sizes, [500, 500, 200]);
        let big: Vec<Line> = (0..5).map(|_| line(1 << 20)).collect();
        assert_eq!(batches(&big).iter().map(|batch| batch.len()).collect::<Vec<_>>(), [1, 1, 1, 1, 1]);
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn an_exported_line_carries_the_time_left_rounded_up() {
        let read = |expires_at| OpResult {
            status: 200,
            key: Some("k".into()),
            value: Some("v".into()),
            content_type: Some("text/plain".into()),
            expires_at,
            ..OpResult::default()
        };
        assert_eq!(Line::of_read(read(Some(10_500)), 1_000).unwrap().ttl.as_deref(), Some("10s"));
        assert_eq!(Line::of_read(read(None), 1_000).unwrap().ttl, None);
        assert_eq!(Line::of_read(read(Some(900)), 1_000), None, "expired meanwhile");
        assert_eq!(Line::of_read(OpResult { status: 404, ..read(None) }, 1_000), None);
    }
}
