//! The dashboard's key browser: the signed-in user's own keys, listed with a
//! prefix filter and paging, one value viewed, a key deleted — through the
//! gateway's internal tenant endpoints (cluster secret), so placement,
//! replication and consistency stay the gateway's business.

use askama::Template;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use reqwest::Url;
use serde::Deserialize;

use super::extract::{CsrfField, CsrfForm, CsrfToken, WebUser};
use super::state::UsersState;
use super::web::{Layout, bytes, minute, page};
use crate::config::Secret;
use crate::proto::{CLUSTER_SECRET_HEADER, EXPIRES_AT_HEADER, KvListResponse, VERSION_HEADER};

/// Default `--gateway-url` / `YDHT_GATEWAY_URL`.
pub const DEFAULT_GATEWAY_URL: &str = "http://127.0.0.1:8080";
/// Keys per page.
const PAGE_SIZE: usize = 50;
/// Largest value shown on the page; longer ones are cut.
const SHOWN_BYTES: usize = 64 * 1024;

/// How the users service reaches the gateway.
#[derive(Debug, Clone)]
pub struct GatewayLink {
    url: String,
    secret: Secret,
    http: reqwest::Client,
}

impl GatewayLink {
    /// A link to the gateway at `url`, authenticating with the cluster `secret`.
    pub fn new(url: String, secret: Secret) -> Self {
        let http = crate::tls::client_builder()
            .connect_timeout(std::time::Duration::from_secs(2))
            .timeout(std::time::Duration::from_secs(10))
            // Below the gateway's idle keep-alive timeout (crate::server::Limits), so the pool drops a connection first.
            .pool_idle_timeout(std::time::Duration::from_secs(5))
            .build()
            .expect("the HTTP client configuration is valid");
        Self { url, secret, http }
    }

    /// The gateway's base URL (`--gateway-url`), as the pages show it to users.
    pub fn url(&self) -> &str {
        self.url.trim_end_matches('/')
    }

    /// `{gateway}/internal/tenants/{user}/kv[/{key}]`, the key as one percent-encoded segment.
    /// The keys `.` and `..` are refused ([`crate::urlpath`]) rather than turned into the listing.
    fn endpoint(&self, user_id: i64, key: Option<&str>) -> Result<Url, GatewayError> {
        let base = Url::parse(&self.url)
            .map_err(|error| GatewayError::Url { url: self.url.clone(), reason: error.to_string() })?;
        let user_id = user_id.to_string();
        let mut segments = vec!["internal", "tenants", &user_id, "kv"];
        segments.extend(key);
        Ok(crate::urlpath::join(&base, &segments)?)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, GatewayError> {
        crate::requestid::propagate(request)
            .header(CLUSTER_SECRET_HEADER, self.secret.expose())
            .send()
            .await
            .map_err(|_| GatewayError::Unreachable(self.url.clone()))
    }

    async fn failure(response: reqwest::Response) -> GatewayError {
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let message = body["error"].as_str().unwrap_or("no details").to_string();
        GatewayError::Answered { status, message }
    }

    async fn list(&self, user_id: i64, prefix: &str, cursor: Option<&str>) -> Result<KvListResponse, GatewayError> {
        let mut url = self.endpoint(user_id, None)?;
        url.query_pairs_mut().append_pair("prefix", prefix).append_pair("limit", &PAGE_SIZE.to_string());
        if let Some(cursor) = cursor {
            url.query_pairs_mut().append_pair("cursor", cursor);
        }
        let response = self.send(self.http.get(url)).await?;
        if !response.status().is_success() {
            return Err(Self::failure(response).await);
        }
        response.json().await.map_err(|error| GatewayError::Unreadable { what: "listing", reason: error.to_string() })
    }

    async fn get(&self, user_id: i64, key: &str) -> Result<Option<StoredValue>, GatewayError> {
        let response = self.send(self.http.get(self.endpoint(user_id, Some(key))?)).await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            status if status.is_success() => {
                let headers = response.headers().clone();
                let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok()).map(str::to_string);
                let value = response
                    .bytes()
                    .await
                    .map_err(|error| GatewayError::Unreadable { what: "value", reason: error.to_string() })?;
                Ok(Some(StoredValue {
                    content_type: text("content-type").unwrap_or_else(|| "application/octet-stream".into()),
                    version: text(VERSION_HEADER).unwrap_or_default(),
                    expires_at: text(EXPIRES_AT_HEADER).and_then(|millis| millis.parse().ok()),
                    value: value.to_vec(),
                }))
            }
            _ => Err(Self::failure(response).await),
        }
    }

    /// Deletes `key`, only while it is at `version` when one is given (`If-Match`): a value
    /// changed since the page showed it is left alone and the answer says so.
    async fn delete(&self, user_id: i64, key: &str, version: Option<u64>) -> Result<(), GatewayError> {
        let mut request = self.http.delete(self.endpoint(user_id, Some(key))?);
        if let Some(version) = version {
            request = request.header("if-match", crate::precondition::etag(version));
        }
        let response = self.send(request).await?;
        match response.status() {
            status if status.is_success() || status == StatusCode::NOT_FOUND => Ok(()),
            StatusCode::PRECONDITION_FAILED => Err(GatewayError::Changed(key.to_string())),
            _ => Err(Self::failure(response).await),
        }
    }
}

/// Why the key browser could not talk to the gateway; the text is shown on the page.
#[derive(Debug, thiserror::Error)]
enum GatewayError {
    /// `--gateway-url` is not a URL.
    #[error("invalid gateway URL {url:?}: {reason}")]
    Url {
        /// The configured URL.
        url: String,
        /// The parser's complaint.
        reason: String,
    },
    /// The key cannot be a path segment.
    #[error(transparent)]
    Key(#[from] crate::urlpath::UrlPathError),
    /// No answer.
    #[error("the gateway at {0} is unreachable; is it running?")]
    Unreachable(String),
    /// An error answer.
    #[error("the gateway answered {status}: {message}")]
    Answered {
        /// Its status.
        status: StatusCode,
        /// Its `error` message.
        message: String,
    },
    /// A delete refused because the value changed (or was deleted) since the page was shown.
    #[error("{0:?} changed since this page was shown, so it was not deleted; look at it again before deleting")]
    Changed(String),
    /// An answer that could not be read.
    #[error("the gateway sent an unreadable {what}: {reason}")]
    Unreadable {
        /// What was being read.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
}

struct StoredValue {
    content_type: String,
    version: String,
    /// Unix milliseconds, `None` for a value without a TTL.
    expires_at: Option<u64>,
    value: Vec<u8>,
}

/// A text value as the page shows it: JSON (by content type) pretty-printed, anything else as it is.
fn shown_text(content_type: &str, text: &str) -> String {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(text) {
            if let Ok(pretty) = serde_json::to_string_pretty(&json) {
                return pretty;
            }
        }
    }
    text.to_string()
}

/// An expiry in Unix milliseconds for the page: `2026-12-05 10:30 UTC`, or `never`.
fn expiry(expires_at: Option<u64>) -> String {
    expires_at
        .and_then(|millis| DateTime::<Utc>::from_timestamp_millis(i64::try_from(millis).ok()?))
        .map_or_else(|| "never".to_string(), minute)
}

/// The key-browser routes, all behind the web session.
pub fn router() -> Router<UsersState> {
    Router::new()
        .route("/dashboard/keys", get(list_page))
        .route("/dashboard/keys/view", get(view_page))
        .route("/dashboard/keys/delete", post(delete_submit))
}

/// A query value, percent-encoded for links.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (byte as char).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// One row of the list.
struct KeyRow {
    key: String,
    /// The version listed: the delete button deletes only that one.
    version: u64,
    size: String,
    expires: String,
    view_href: String,
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage {
    layout: Layout,
    prefix: String,
    keys: Vec<KeyRow>,
    next_href: Option<String>,
    paged: bool,
    error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    #[serde(default)]
    prefix: String,
    cursor: Option<String>,
}

async fn list_page(
    State(state): State<UsersState>,
    user: WebUser,
    csrf: CsrfToken,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let query = query.map(|Query(query)| query).unwrap_or_default();
    let cursor = query.cursor.as_deref().filter(|cursor| !cursor.is_empty());
    let (keys, next_href, error, status) = match state.gateway.list(user.user.id, &query.prefix, cursor).await {
        Ok(listing) => {
            let keys = listing
                .keys
                .into_iter()
                .map(|entry| KeyRow {
                    view_href: format!(
                        "/dashboard/keys/view?key={}&prefix={}",
                        encode(&entry.key),
                        encode(&query.prefix)
                    ),
                    size: bytes(i64::try_from(entry.size).unwrap_or(i64::MAX)),
                    expires: entry.expires_at.map_or_else(|| "never".to_string(), minute),
                    version: entry.version,
                    key: entry.key,
                })
                .collect();
            let next_href = listing
                .next_cursor
                .map(|cursor| format!("/dashboard/keys?prefix={}&cursor={}", encode(&query.prefix), encode(&cursor)));
            (keys, next_href, None, StatusCode::OK)
        }
        Err(error) => (Vec::new(), None, Some(error.to_string()), StatusCode::BAD_GATEWAY),
    };
    let template = KeysPage {
        layout: Layout::new("Your keys", Some(&user), &csrf),
        prefix: query.prefix,
        keys,
        next_href,
        paged: cursor.is_some(),
        error,
    };
    page(status, &csrf, state.secure_cookies, template)
}

#[derive(Template)]
#[template(path = "key_view.html")]
struct KeyViewPage {
    layout: Layout,
    key: String,
    prefix: String,
    back_href: String,
    found: bool,
    content_type: String,
    version: String,
    size: String,
    expires: String,
    text: Option<String>,
    truncated: bool,
    error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ViewQuery {
    #[serde(default)]
    key: String,
    #[serde(default)]
    prefix: String,
}

async fn view_page(
    State(state): State<UsersState>,
    user: WebUser,
    csrf: CsrfToken,
    query: Result<Query<ViewQuery>, QueryRejection>,
) -> Response {
    let query = query.map(|Query(query)| query).unwrap_or_default();
    let mut template = KeyViewPage {
        layout: Layout::new("View key", Some(&user), &csrf),
        back_href: format!("/dashboard/keys?prefix={}", encode(&query.prefix)),
        key: query.key.clone(),
        prefix: query.prefix,
        found: false,
        content_type: String::new(),
        version: String::new(),
        size: String::new(),
        expires: String::new(),
        text: None,
        truncated: false,
        error: None,
    };
    let status = match state.gateway.get(user.user.id, &query.key).await {
        Ok(Some(stored)) => {
            let shown = &stored.value[..stored.value.len().min(SHOWN_BYTES)];
            template.found = true;
            template.truncated = stored.value.len() > SHOWN_BYTES;
            template.size = bytes(i64::try_from(stored.value.len()).unwrap_or(i64::MAX));
            // A cut value is shown as it is: its JSON would not parse.
            template.text = std::str::from_utf8(shown)
                .ok()
                .map(|text| if template.truncated { text.to_string() } else { shown_text(&stored.content_type, text) });
            template.expires = expiry(stored.expires_at);
            template.content_type = stored.content_type;
            template.version = stored.version;
            StatusCode::OK
        }
        Ok(None) => StatusCode::NOT_FOUND,
        Err(error) => {
            template.error = Some(error.to_string());
            StatusCode::BAD_GATEWAY
        }
    };
    page(status, &csrf, state.secure_cookies, template)
}

#[derive(Debug, Deserialize)]
struct DeleteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    prefix: String,
    /// The version the page showed; the delete applies only to it (empty: whatever is there).
    #[serde(default)]
    version: String,
}

impl CsrfField for DeleteForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn delete_submit(
    State(state): State<UsersState>,
    user: WebUser,
    csrf: CsrfToken,
    CsrfForm(form): CsrfForm<DeleteForm>,
) -> Response {
    let version = form.version.trim().parse::<u64>().ok().filter(|version| *version > 0);
    match state.gateway.delete(user.user.id, &form.key, version).await {
        Ok(()) => Redirect::to(&format!("/dashboard/keys?prefix={}", encode(&form.prefix))).into_response(),
        Err(error) => {
            let status =
                if matches!(error, GatewayError::Changed(_)) { StatusCode::CONFLICT } else { StatusCode::BAD_GATEWAY };
            let template = KeysPage {
                layout: Layout::new("Your keys", Some(&user), &csrf),
                prefix: form.prefix,
                keys: Vec::new(),
                next_href: None,
                paged: false,
                error: Some(format!("could not delete {:?}: {error}", form.key)),
            };
            page(status, &csrf, state.secure_cookies, template)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_encode_every_reserved_byte_and_keys_are_one_segment() {
        assert_eq!(encode("user:1/a b&c=d"), "user%3A1%2Fa%20b%26c%3Dd");
        assert_eq!(encode("é"), "%C3%A9");
        let link = GatewayLink::new("http://127.0.0.1:8080/".into(), Secret::new("s"));
        let url = link.endpoint(7, Some("a/b?c")).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8080/internal/tenants/7/kv/a%2Fb%3Fc");
        for dots in [".", ".."] {
            let error = link.endpoint(7, Some(dots)).unwrap_err();
            assert!(error.to_string().contains("not allowed"), "{dots:?}: {error}");
        }
    }
}

#[cfg(test)]
mod view_tests {
    use super::*;

    #[test]
    fn json_values_are_pretty_printed_and_expiry_is_shown() {
        assert_eq!(shown_text("application/json", r#"{"a":1}"#), "{\n  \"a\": 1\n}");
        assert_eq!(shown_text("application/ld+json; charset=utf-8", "[1]"), "[\n  1\n]");
        assert_eq!(shown_text("application/json", "{not json"), "{not json");
        assert_eq!(shown_text("text/plain", r#"{"a":1}"#), r#"{"a":1}"#);
        assert_eq!(expiry(None), "never");
        assert_eq!(expiry(Some(1_796_428_800_000)), "2026-12-05 00:00 UTC");
    }
}
