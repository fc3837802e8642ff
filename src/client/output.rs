//! How the client prints: comfy-table tables for people, JSON for scripts,
//! and the small formatters (sizes, times, versions) both share.

use std::io::{ErrorKind, Write};

use anyhow::Context;
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use serde::Serialize;

/// The `--output` format.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// Human-readable tables and sentences.
    #[default]
    Table,
    /// One machine-readable JSON document on stdout.
    Json,
}

/// A table with our style and the given column headers.
pub fn table<I, S>(header: I) -> Table
where
    I: IntoIterator<Item = S>,
    S: Into<comfy_table::Cell>,
{
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic).set_header(header);
    table
}

/// Writes `text` and a newline to stdout. A closed pipe (`ydht kv list | head`) is not an error.
pub fn print_line(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    ignore_broken_pipe(stdout.write_all(text.as_bytes()).and_then(|()| stdout.write_all(b"\n")))
}

/// Writes raw bytes to stdout, unchanged (binary-safe).
pub fn print_bytes(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    ignore_broken_pipe(stdout.write_all(bytes).and_then(|()| stdout.flush()))
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("cannot encode the output as JSON")?;
    print_line(&text)
}

fn ignore_broken_pipe(result: std::io::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(error) if error.kind() != ErrorKind::BrokenPipe => Err(error).context("cannot write to stdout"),
        _ => Ok(()),
    }
}

/// Bytes for people: `1.5 KiB` (the shared [`crate::units::bytes`]).
pub use crate::units::bytes as human_bytes;

/// Unix milliseconds as an RFC 3339 UTC time with second precision.
pub fn format_unix_millis(millis: u64) -> String {
    i64::try_from(millis)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(|| millis.to_string(), |time| time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// A timestamp the servers sent as Unix milliseconds or as an RFC 3339 string; `-` when absent.
pub fn format_timestamp(value: Option<&serde_json::Value>) -> String {
    match value {
        None | Some(serde_json::Value::Null) => "-".to_string(),
        Some(serde_json::Value::Number(number)) => {
            number.as_u64().map_or_else(|| number.to_string(), format_unix_millis)
        }
        Some(serde_json::Value::String(text)) => match chrono::DateTime::parse_from_rfc3339(text) {
            Ok(time) => time.with_timezone(&chrono::Utc).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            Err(_) => text.clone(),
        },
        Some(other) => other.to_string(),
    }
}

/// A record version for people: the UTC time it was written, to the millisecond, and
/// the clock's counter when several writes shared that millisecond:
/// `2026-11-26T19:00:00.123Z`, `2026-11-26T19:00:00.123Z #3`. JSON keeps the number.
pub fn format_version(version: u64) -> String {
    let millis = crate::hlc::millis_of(version);
    let time = i64::try_from(millis)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(|| version.to_string(), |time| time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    let counter = version - crate::hlc::from_millis(millis);
    if counter == 0 { time } else { format!("{time} #{counter}") }
}

/// `yes` for true, else the given word (`no`, `revoked`): one wording for flags in every table.
pub fn yes_no(flag: bool, otherwise: &'static str) -> &'static str {
    if flag { "yes" } else { otherwise }
}

/// Milliseconds for people: `850 ms`, `2.5 s` (the shared [`crate::units::millis`], as `ydht top` shows them).
pub use crate::units::millis as human_millis;

/// A count with thousands separators, `2,088` (the shared [`crate::units::group_thousands`], as `ydht top`).
pub use crate::units::group_thousands as human_count;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timestamps_accept_millis_and_rfc3339() {
        assert_eq!(format_unix_millis(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_timestamp(Some(&json!(1_700_000_000_000u64))), "2023-11-14T22:13:20Z");
        assert_eq!(format_timestamp(Some(&json!("2024-11-15T10:00:00.123+01:00"))), "2024-11-15T09:00:00Z");
        assert_eq!(format_timestamp(Some(&json!(null))), "-");
        assert_eq!(format_timestamp(None), "-");
        assert_eq!(format_timestamp(Some(&json!("soon"))), "soon");
    }

    #[test]
    fn versions_show_their_time() {
        let version = crate::hlc::from_millis(1_700_000_000_123) + 3;
        assert_eq!(format_version(version), "2023-11-14T22:13:20.123Z #3");
        assert_eq!(format_version(crate::hlc::from_millis(1_700_000_000_000)), "2023-11-14T22:13:20.000Z");
        assert!(!format_version(version).contains(&version.to_string()), "no raw 18-digit number");
        assert_eq!((yes_no(true, "no"), yes_no(false, "revoked")), ("yes", "revoked"));
    }

    #[test]
    fn tables_render_headers_and_rows() {
        let mut rendered = table(["KEY", "SIZE"]);
        rendered.add_row(["user:1", "12 B"]);
        let text = rendered.to_string();
        assert!(text.contains("KEY") && text.contains("SIZE"));
        assert!(text.contains("user:1") && text.contains("12 B"));
    }

    #[test]
    fn millis_are_human() {
        assert_eq!(human_millis(12.345), "12.3 ms");
        assert_eq!(human_millis(2500.0), "2.5 s");
        assert_eq!(human_count(2088), "2,088");
    }
}
