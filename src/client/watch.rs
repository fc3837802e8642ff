//! `ydht kv watch [KEY | --prefix P] [--since CURSOR] [--values]`: the tenant's changes as they
//! happen, one line per event, from the gateway's `GET /v1/watch` (server-sent events), until
//! Ctrl-C. A dropped connection (a gateway restart, a network cut, a `dropped` event) is
//! reconnected with the last event's id, so no change is missed or printed twice.

use std::time::Duration;

use clap::Args;
use reqwest::Method;
use reqwest::StatusCode;
use serde_json::json;

use super::api::{check, transport_error};
use super::{Context, KeyClient};
use crate::error::Exit;
use crate::proto::{API_KEY_HEADER, WatchEvent};

/// Longest line of an event stream kept (a 1 MiB value in base64 and its JSON fit).
const MAX_LINE_BYTES: usize = 4 << 20;
/// Without a byte for this long (heartbeats come every 15 s) the connection is taken for dead.
const SILENCE: Duration = Duration::from_secs(45);
/// The longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Arguments of `kv watch`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Watch only this key
    #[arg(conflicts_with = "prefix")]
    pub key: Option<String>,

    /// Watch the keys starting with this prefix (default: every key)
    #[arg(long)]
    pub prefix: Option<String>,

    /// Start after this cursor (an event's id, printed with --output json) instead of now
    #[arg(long, value_name = "CURSOR")]
    pub since: Option<String>,

    /// Include each put's value in the output
    #[arg(long)]
    pub values: bool,

    /// The gateway, the API key and the config dir.
    #[command(flatten)]
    pub client: KeyClient,
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// `id:`, when the event had one.
    pub id: Option<String>,
    /// `event:` (`message` when absent).
    pub event: String,
    /// `data:` lines joined by newlines.
    pub data: String,
}

/// Splits a byte stream into server-sent events (the WHATWG event-stream format: `field: value`
/// lines, an empty line ends an event, `:` lines are comments).
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    event: SseEvent,
    has_data: bool,
}

/// A stream line longer than [`MAX_LINE_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an event-stream line is longer than {MAX_LINE_BYTES} bytes")]
pub struct LineTooLong;

impl SseParser {
    /// Takes the next bytes; returns the events they completed.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<Vec<SseEvent>, LineTooLong> {
        let mut events = Vec::new();
        while let Some(end) = bytes.iter().position(|&byte| byte == b'\n') {
            let (part, rest) = (&bytes[..end], &bytes[end + 1..]);
            bytes = rest;
            let event = if self.line.is_empty() {
                self.line_done(strip_cr(part))
            } else {
                if self.line.len() + part.len() > MAX_LINE_BYTES {
                    return Err(LineTooLong);
                }
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(part);
                let event = self.line_done(strip_cr(&line));
                line.clear();
                self.line = line;
                event
            };
            events.extend(event);
        }
        if self.line.len() + bytes.len() > MAX_LINE_BYTES {
            return Err(LineTooLong);
        }
        self.line.extend_from_slice(bytes);
        Ok(events)
    }

    fn line_done(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let dispatch = std::mem::take(&mut self.has_data);
            return dispatch.then(|| SseEvent {
                event: if event.event.is_empty() { "message".into() } else { event.event },
                ..event
            });
        }
        if line.starts_with(b":") {
            return None;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = text.split_once(':').unwrap_or((&text, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.event.event = value.to_string(),
            "id" => self.event.id = Some(value.to_string()),
            "data" => {
                if self.has_data {
                    self.event.data.push('\n');
                }
                self.event.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        None
    }
}

/// A line without its `\r` ending, if it had one.
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// How one connection of the watch ended.
enum Ended {
    /// The connection broke, or the gateway dropped the watch: reconnect.
    Reconnect(String),
    /// Ctrl-C.
    Interrupted,
}

/// `kv watch`.
pub async fn watch(args: WatchArgs, context: &Context) -> anyhow::Result<()> {
    let api_key = context.api_key()?;
    if let Some(since) = &args.since
        && crate::watch::Cursor::decode(since).is_err()
    {
        return Err(
            Exit::usage("--since is not a watch cursor (the id of an event, as --output json prints it)").into()
        );
    }
    let mut cursor = args.since.clone();
    let mut backoff = Duration::from_millis(200);
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let ended = tokio::select! {
            ended = connect_and_print(&args, context, &api_key, &mut cursor) => ended?,
            _ = &mut interrupted => Ended::Interrupted,
        };
        match ended {
            Ended::Interrupted => return Ok(()),
            Ended::Reconnect(reason) => {
                eprintln!("note: the watch was interrupted ({reason}); reconnecting in {} ms", backoff.as_millis());
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = &mut interrupted => return Ok(()),
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// One connection: prints its events until it ends. A refusal (bad key, bad cursor, too many
/// watches) is an error; anything that may pass is a reconnect.
async fn connect_and_print(
    args: &WatchArgs,
    context: &Context,
    api_key: &str,
    cursor: &mut Option<String>,
) -> anyhow::Result<Ended> {
    let gateway = &context.gateway;
    let mut query: Vec<(&str, &str)> = Vec::new();
    if let Some(key) = &args.key {
        query.push(("key", key));
    }
    if let Some(prefix) = &args.prefix {
        query.push(("prefix", prefix));
    }
    if args.values {
        query.push(("values", "true"));
    }
    let mut request = context
        .api
        .request(Method::GET, gateway, &["v1", "watch"])?
        .header(API_KEY_HEADER, api_key)
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .query(&query)
        // The stream has no end; silence is detected below.
        .timeout(Duration::from_secs(30 * 24 * 3600));
    if let Some(cursor) = cursor.as_deref() {
        request = request.header("last-event-id", cursor);
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => return Ok(Ended::Reconnect(transport_error(gateway, &error).to_string())),
    };
    if response.status().is_server_error() || response.status() == StatusCode::TOO_MANY_REQUESTS {
        return Ok(Ended::Reconnect(format!("the gateway answered {}", response.status())));
    }
    let mut response = check(gateway, response).await?;
    let mut parser = SseParser::default();
    loop {
        let chunk = match tokio::time::timeout(SILENCE, response.chunk()).await {
            Err(_) => return Ok(Ended::Reconnect(format!("nothing heard for {} s", SILENCE.as_secs()))),
            Ok(Err(error)) => return Ok(Ended::Reconnect(transport_error(gateway, &error).to_string())),
            Ok(Ok(None)) => return Ok(Ended::Reconnect("the gateway closed the stream".into())),
            Ok(Ok(Some(chunk))) => chunk,
        };
        for event in
            parser.push(&chunk).map_err(|error| Exit::new(crate::error::exit::UNAVAILABLE, error.to_string()))?
        {
            if let Some(id) = &event.id {
                *cursor = Some(id.clone());
            }
            match event.event.as_str() {
                "dropped" => return Ok(Ended::Reconnect("the gateway dropped it: output was too slow".into())),
                "reset" => {
                    eprintln!(
                        "warning: changes since the cursor are past the cluster's change-log retention and were \
                         lost; list the keys again (`ydht kv list`). Watching on from now."
                    );
                    if context.json() && !emit(&json!({ "event": "reset", "id": event.id }).to_string())? {
                        return Ok(Ended::Interrupted);
                    }
                }
                _ => {
                    if let Some(line) = line_of(context, &event)?
                        && !emit(&line)?
                    {
                        return Ok(Ended::Interrupted);
                    }
                }
            }
        }
    }
}

/// Writes one line to stdout; `false` when nobody reads it any more (`kv watch | head`).
fn emit(line: &str) -> anyhow::Result<bool> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(line.as_bytes()).and_then(|()| stdout.write_all(b"\n")).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(error) => Err(anyhow::Error::new(error).context("cannot write to stdout")),
    }
}

/// The line printed for a change: JSON with the event name and id, or a sentence.
fn line_of(context: &Context, event: &SseEvent) -> anyhow::Result<Option<String>> {
    let Ok(change) = serde_json::from_str::<WatchEvent>(&event.data) else {
        return Ok(None);
    };
    if context.json() {
        let mut line = serde_json::to_value(&change)?;
        line["event"] = json!(event.event);
        line["id"] = json!(event.id);
        return Ok(Some(line.to_string()));
    }
    let mut text = format!("{:<6} {}  version {}", event.event, change.key, change.version);
    if event.event == "put" {
        text.push_str(&format!("  {}", super::output::human_bytes(change.size)));
        if let Some(expires_at) = change.expires_at {
            text.push_str(&format!("  expires {}", expires_at.format("%Y-%m-%dT%H:%M:%SZ")));
        }
        if let Some(value) = &change.value {
            text.push_str(&format!("  {}", serde_json::to_string(value)?));
        } else if let Some(value) = &change.value_base64 {
            text.push_str(&format!("  base64:{value}"));
        } else if change.superseded {
            text.push_str("  (value already superseded)");
        }
    }
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_splits_events_across_chunks_and_skips_comments() {
        let stream = b": heartbeat\n\nevent: put\nid: w1.a\ndata: {\"a\":1}\n\r\ndata: one\ndata: two\n\nevent: x\n\n";
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        for chunk in stream.chunks(3) {
            events.extend(parser.push(chunk).unwrap());
        }
        assert_eq!(
            events,
            vec![
                SseEvent { id: Some("w1.a".into()), event: "put".into(), data: "{\"a\":1}".into() },
                SseEvent { id: None, event: "message".into(), data: "one\ntwo".into() },
            ],
            "an event without data is not dispatched"
        );
        let mut parser = SseParser::default();
        assert_eq!(parser.push(&vec![b'x'; MAX_LINE_BYTES + 1]), Err(LineTooLong));
    }
}
