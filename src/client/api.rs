//! The typed HTTP client for the users service, the gateway and the operator
//! endpoints. Every failure becomes an [`Exit`] with the right exit code and a
//! one-line message naming the service and its URL:
//! `cannot reach gateway at http://127.0.0.1:8080: connection refused`.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Exit, exit};
use crate::proto::{
    API_KEY_HEADER, CLUSTER_SECRET_HEADER, CONSISTENCY_HEADER, EXPIRES_AT_HEADER, KvListResponse, KvWriteResponse,
    Scope, VERSION_HEADER, ValidateKeyRequest, ValidateKeyResponse,
};

/// How long to wait for a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How many times a request answered 429 is retried (after its `Retry-After`).
const RATE_LIMIT_RETRIES: u32 = 3;
/// A `Retry-After` longer than this is reported instead of waited for.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(10);

/// A service the client talks to: its name for messages and its base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `gateway`, `users service`, `node-1`, …
    pub name: String,
    /// The base URL as the user wrote it, without a trailing slash (for messages).
    pub display: String,
    base: Url,
}

impl Endpoint {
    /// Parses a base URL; a usage error (exit 2) naming `flag` when it is not an http(s) URL.
    pub fn parse(name: impl Into<String>, url: &str, flag: &str) -> anyhow::Result<Self> {
        let name = name.into();
        let display = url.trim().trim_end_matches('/').to_string();
        let base = Url::parse(&display)
            .ok()
            .filter(|parsed| matches!(parsed.scheme(), "http" | "https") && parsed.has_host())
            .ok_or_else(|| {
                Exit::usage(format!(
                    "invalid {name} URL {url:?}; expected e.g. http://127.0.0.1:8080 (set it with {flag})"
                ))
            })?;
        Ok(Self { name, display, base })
    }

    /// The URL of `segments` below the base, each one percent-encoded segment
    /// ([`crate::urlpath`]: a key containing `/` stays one segment; the keys
    /// `.` and `..` are a usage error, exit 2).
    pub fn url(&self, segments: &[&str]) -> anyhow::Result<Url> {
        crate::urlpath::join(&self.base, segments).map_err(|error| Exit::usage(error.to_string()).into())
    }
}

/// The shared HTTP client (connection pool, timeouts).
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
}

impl Api {
    /// A client with connect and request timeouts.
    pub fn new() -> anyhow::Result<Self> {
        let http = crate::tls::client_builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("ydht/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self { http })
    }

    /// A request to `segments` below `endpoint`.
    pub fn request(&self, method: Method, endpoint: &Endpoint, segments: &[&str]) -> anyhow::Result<RequestBuilder> {
        Ok(self.http.request(method, endpoint.url(segments)?))
    }

    /// Sends `request`, waiting out short rate limits (429 with `Retry-After`).
    /// Transport failures become exit 4; any HTTP status is returned as is.
    pub async fn send(&self, endpoint: &Endpoint, request: RequestBuilder) -> anyhow::Result<Response> {
        let mut attempt = 0;
        loop {
            // Bodies are always buffered, so a request can be cloned for a retry;
            // should one ever stream, it is sent once.
            let Some(this_try) = request.try_clone() else {
                return request.send().await.map_err(|error| transport_error(endpoint, &error).into());
            };
            let response =
                this_try.send().await.map_err(|error| anyhow::Error::new(transport_error(endpoint, &error)))?;
            let wait = retry_after(response.headers()).filter(|wait| *wait <= MAX_RETRY_WAIT);
            match wait {
                Some(wait) if response.status() == StatusCode::TOO_MANY_REQUESTS && attempt < RATE_LIMIT_RETRIES => {
                    attempt += 1;
                    eprintln!("{}", rate_limit_note(endpoint, wait));
                    tokio::time::sleep(wait).await;
                }
                _ => return Ok(response),
            }
        }
    }

    /// Sends `request` and fails with the mapped [`Exit`] unless the answer is a success.
    pub async fn send_ok(&self, endpoint: &Endpoint, request: RequestBuilder) -> anyhow::Result<Response> {
        let response = self.send(endpoint, request).await?;
        check(endpoint, response).await
    }

    /// Sends `request` and decodes a successful JSON answer.
    pub async fn send_json<T: DeserializeOwned>(
        &self,
        endpoint: &Endpoint,
        request: RequestBuilder,
    ) -> anyhow::Result<T> {
        let response = self.send_ok(endpoint, request).await?;
        decode(endpoint, response).await
    }

    /// `GET {path}` answering JSON, with the cluster secret if given (`/health`, `/metrics`, `/cluster`).
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        endpoint: &Endpoint,
        path: &[&str],
        cluster_secret: Option<&str>,
    ) -> anyhow::Result<T> {
        let mut request = self.request(Method::GET, endpoint, path)?;
        if let Some(secret) = cluster_secret {
            request = request.header(CLUSTER_SECRET_HEADER, secret);
        }
        self.send_json(endpoint, request).await
    }

    /// `POST /signup`.
    pub async fn signup(&self, users: &Endpoint, request: &SignupRequest) -> anyhow::Result<User> {
        self.send_json(users, self.request(Method::POST, users, &["signup"])?.json(request)).await
    }

    /// `POST /login`.
    pub async fn login(&self, users: &Endpoint, request: &LoginRequest) -> anyhow::Result<TokenResponse> {
        self.send_json(users, self.request(Method::POST, users, &["login"])?.json(request)).await
    }

    /// `POST /refresh`: trades a refresh token for a new pair; 401 means the session is over.
    pub async fn refresh(&self, users: &Endpoint, refresh_token: &str) -> anyhow::Result<TokenResponse> {
        let request = self
            .request(Method::POST, users, &["refresh"])?
            .json(&RefreshRequest { refresh_token: refresh_token.into() });
        let response = self.send(users, request).await?;
        if matches!(response.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST) {
            return Err(Exit::new(exit::AUTH, "your session has expired; run `ydht login` again").into());
        }
        decode(users, check(users, response).await?).await
    }

    /// A request to the users service carrying a Bearer token.
    pub fn bearer(
        &self,
        method: Method,
        users: &Endpoint,
        segments: &[&str],
        token: &str,
    ) -> anyhow::Result<RequestBuilder> {
        Ok(self.request(method, users, segments)?.header(AUTHORIZATION, format!("Bearer {token}")))
    }

    /// `POST /validate-key` (cluster secret): the user id and scopes of an API key.
    pub async fn validate_key(
        &self,
        users: &Endpoint,
        cluster_secret: &str,
        key: &str,
    ) -> anyhow::Result<ValidateKeyResponse> {
        let request = self
            .request(Method::POST, users, &["validate-key"])?
            .header(CLUSTER_SECRET_HEADER, cluster_secret)
            .json(&ValidateKeyRequest { key: key.to_string() });
        self.send_json(users, request).await
    }

    /// `PUT /v1/kv/{key}` on the gateway.
    pub async fn kv_put(&self, gateway: &Endpoint, api_key: &str, put: KvPut<'_>) -> anyhow::Result<KvWriteResponse> {
        let mut request =
            self.request(Method::PUT, gateway, &["v1", "kv", put.key])?.header(API_KEY_HEADER, api_key).body(put.value);
        if let Some(content_type) = put.content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        if let Some(ttl) = put.ttl {
            request = request.query(&[("ttl", ttl)]);
        }
        if let Some(consistency) = put.consistency {
            request = request.header(CONSISTENCY_HEADER, consistency);
        }
        request = match put.precondition {
            Some(Precondition::IfVersion(version)) => request.header("if-match", crate::precondition::etag(version)),
            Some(Precondition::IfAbsent) => request.header("if-none-match", "*"),
            None => request,
        };
        self.send_json(gateway, request).await
    }

    /// `POST /v1/batch`: `ops` (each an object as the API takes it), one result per op.
    pub async fn kv_batch(
        &self,
        gateway: &Endpoint,
        api_key: &str,
        consistency: Option<&str>,
        ops: &[serde_json::Value],
    ) -> anyhow::Result<crate::proto::BatchResponse> {
        let mut request = self
            .request(Method::POST, gateway, &["v1", "batch"])?
            .header(API_KEY_HEADER, api_key)
            .json(&serde_json::json!({ "ops": ops }));
        if let Some(consistency) = consistency {
            request = request.header(CONSISTENCY_HEADER, consistency);
        }
        self.send_json(gateway, request).await
    }

    /// `GET /v1/kv/{key}`: the value, or `None` when the gateway answers 404.
    pub async fn kv_get(
        &self,
        gateway: &Endpoint,
        api_key: &str,
        key: &str,
        consistency: Option<&str>,
    ) -> anyhow::Result<Option<Value>> {
        let mut request = self.request(Method::GET, gateway, &["v1", "kv", key])?.header(API_KEY_HEADER, api_key);
        if let Some(consistency) = consistency {
            request = request.header(CONSISTENCY_HEADER, consistency);
        }
        let response = self.send(gateway, request).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = check(gateway, response).await?;
        let content_type = header_str(response.headers(), CONTENT_TYPE.as_str()).map(str::to_string);
        let version = header_str(response.headers(), VERSION_HEADER).and_then(|text| text.parse().ok());
        let expires_at = header_str(response.headers(), EXPIRES_AT_HEADER).and_then(|text| text.parse().ok());
        let bytes = response.bytes().await.map_err(|error| read_error(gateway, &error))?;
        Ok(Some(Value { bytes, content_type, version, expires_at }))
    }

    /// `DELETE /v1/kv/{key}`: `None` when the gateway answers 404.
    pub async fn kv_delete(
        &self,
        gateway: &Endpoint,
        api_key: &str,
        key: &str,
        consistency: Option<&str>,
        if_version: Option<u64>,
    ) -> anyhow::Result<Option<KvWriteResponse>> {
        let mut request = self.request(Method::DELETE, gateway, &["v1", "kv", key])?.header(API_KEY_HEADER, api_key);
        if let Some(consistency) = consistency {
            request = request.header(CONSISTENCY_HEADER, consistency);
        }
        if let Some(version) = if_version {
            request = request.header("if-match", crate::precondition::etag(version));
        }
        let response = self.send(gateway, request).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        decode(gateway, check(gateway, response).await?).await.map(Some)
    }

    /// `GET /v1/kv?prefix=&limit=&cursor=`: one page of the tenant's keys.
    pub async fn kv_list(
        &self,
        gateway: &Endpoint,
        api_key: &str,
        prefix: Option<&str>,
        limit: Option<usize>,
        cursor: Option<&str>,
    ) -> anyhow::Result<KvListResponse> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(prefix) = prefix {
            query.push(("prefix", prefix.to_string()));
        }
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        if let Some(cursor) = cursor {
            query.push(("cursor", cursor.to_string()));
        }
        let request = self.request(Method::GET, gateway, &["v1", "kv"])?.header(API_KEY_HEADER, api_key).query(&query);
        self.send_json(gateway, request).await
    }
}

/// The stderr note while waiting out a 429, so a stall is never silent.
fn rate_limit_note(endpoint: &Endpoint, wait: Duration) -> String {
    format!(
        "note: rate limited by the {} at {}; retrying in {} s",
        endpoint.name,
        endpoint.display,
        wait.as_secs().max(1)
    )
}

/// The exit code a service's HTTP status maps to.
pub fn exit_code_for_status(status: StatusCode) -> u8 {
    match status.as_u16() {
        401 | 403 => exit::AUTH,
        404 | 410 => exit::NOT_FOUND,
        412 => exit::PRECONDITION,
        429 => exit::UNAVAILABLE,
        400..=499 => exit::USAGE,
        _ => exit::UNAVAILABLE,
    }
}

/// The [`Exit`] for a non-success answer with the service's `{"error": …}` message.
pub fn status_error(endpoint: &Endpoint, status: StatusCode, message: &str, retry_after: Option<Duration>) -> Exit {
    let code = exit_code_for_status(status);
    let message = message.trim();
    let text = if status == StatusCode::TOO_MANY_REQUESTS {
        let wait = retry_after.map_or_else(String::new, |wait| format!("; retry in {} s", wait.as_secs()));
        format!("rate limited by the {} at {}{wait}", endpoint.name, endpoint.display)
    } else if status.is_server_error() {
        format!("the {} at {} failed ({status}): {message}", endpoint.name, endpoint.display)
    } else if message.is_empty() {
        format!("the {} refused the request ({status})", endpoint.name)
    } else {
        format!("{message} ({} answered {status})", endpoint.name)
    };
    Exit::new(code, text)
}

/// The [`Exit`] (code 4) for a request that got no HTTP answer.
pub fn transport_error(endpoint: &Endpoint, error: &reqwest::Error) -> Exit {
    let reason = if error.is_timeout() { "no answer in time (timed out)".to_string() } else { root_cause(error) };
    Exit::new(exit::UNAVAILABLE, format!("cannot reach {} at {}: {reason}", endpoint.name, endpoint.display))
}

fn read_error(endpoint: &Endpoint, error: &reqwest::Error) -> anyhow::Error {
    Exit::new(
        exit::UNAVAILABLE,
        format!("the {} at {} broke off its answer: {}", endpoint.name, endpoint.display, root_cause(error)),
    )
    .into()
}

/// The innermost cause, in lower case without the `(os error N)` suffix: `connection refused`.
pub fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &(dyn std::error::Error + 'static) = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    if let Some(io) = cause.downcast_ref::<std::io::Error>() {
        match io.kind() {
            std::io::ErrorKind::ConnectionRefused => return "connection refused".to_string(),
            std::io::ErrorKind::TimedOut => return "connection timed out".to_string(),
            _ => {}
        }
    }
    let text = cause.to_string();
    let text = match text.find(" (os error") {
        Some(index) => text[..index].to_string(),
        None => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "unknown error".to_string(),
    }
}

/// Passes a success through; turns any other status into its [`Exit`].
pub async fn check(endpoint: &Endpoint, response: Response) -> anyhow::Result<Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = retry_after(response.headers());
    let body = response.bytes().await.unwrap_or_default();
    let message = error_message(&body);
    Err(status_error(endpoint, status, &message, retry_after).into())
}

/// The `error` field of a JSON error body, else the body text (shortened), else nothing.
fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: String,
    }
    if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) {
        return parsed.error;
    }
    let text = String::from_utf8_lossy(body);
    let line = text.lines().next().unwrap_or("").trim();
    line.chars().take(200).collect()
}

/// Decodes a JSON answer; an undecodable one is a server fault (exit 4).
pub async fn decode<T: DeserializeOwned>(endpoint: &Endpoint, response: Response) -> anyhow::Result<T> {
    let body = response.bytes().await.map_err(|error| read_error(endpoint, &error))?;
    serde_json::from_slice(&body).map_err(|error| {
        Exit::new(
            exit::UNAVAILABLE,
            format!(
                "the {} at {} sent an answer this client does not understand: {error}",
                endpoint.name, endpoint.display
            ),
        )
        .into()
    })
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    header_str(headers, RETRY_AFTER.as_str()).and_then(|text| text.trim().parse::<u64>().ok()).map(Duration::from_secs)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// `POST /signup` body.
#[derive(Debug, Clone, Serialize)]
pub struct SignupRequest {
    /// Account email.
    pub email: String,
    /// Account name, 3–32 of `[A-Za-z0-9_-]`.
    pub username: String,
    /// At least 8 characters.
    pub password: String,
}

/// `POST /login` body.
#[derive(Debug, Clone, Serialize)]
pub struct LoginRequest {
    /// Account email.
    pub email: String,
    /// The password.
    pub password: String,
}

#[derive(Debug, Clone, Serialize)]
struct RefreshRequest {
    refresh_token: String,
}

/// A user as the users service shows it (`/signup`, `/login`, `/me`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// The user id (the tenant).
    pub id: i64,
    /// Account email.
    pub email: String,
    /// Account name.
    pub username: String,
    /// Whether the account may log in.
    #[serde(default = "yes")]
    pub is_active: bool,
    /// When the account was created.
    #[serde(default)]
    pub created_at: Option<serde_json::Value>,
}

fn yes() -> bool {
    true
}

/// `POST /login` and `POST /refresh` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The short-lived JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// The single-use token that buys the next pair.
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The user (always on login; refresh may omit it).
    #[serde(default)]
    pub user: Option<User>,
}

/// `POST /apikeys` body.
#[derive(Debug, Clone, Serialize)]
pub struct CreateApiKeyRequest {
    /// A name to recognise the key by.
    pub name: String,
    /// What the key may do.
    pub scopes: Vec<Scope>,
    /// Days until the key expires; `None` for a key that never expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in_days: Option<u32>,
}

/// An API key as listed (never the full key).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiKeyInfo {
    /// The key's id (for `apikey revoke`).
    pub id: i64,
    /// Its name.
    pub name: String,
    /// The first characters of the key, for recognising it.
    pub key_prefix: String,
    /// Its scopes.
    #[serde(default)]
    pub scopes: Vec<Scope>,
    /// Whether it still works (not revoked).
    #[serde(default = "yes")]
    pub is_active: bool,
    /// When the gateway last accepted it.
    #[serde(default)]
    pub last_used_at: Option<serde_json::Value>,
    /// When it stops working.
    #[serde(default)]
    pub expires_at: Option<serde_json::Value>,
    /// When it was created.
    #[serde(default)]
    pub created_at: Option<serde_json::Value>,
}

/// `POST /apikeys` answer: the only time the full key is shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedApiKey {
    /// The key's description.
    #[serde(flatten)]
    pub info: ApiKeyInfo,
    /// The full key (`ydht_…`).
    pub key: String,
}

/// `GET /apikeys` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiKeyList {
    /// The user's keys.
    pub api_keys: Vec<ApiKeyInfo>,
    /// How many there are.
    #[serde(default)]
    pub count: usize,
}

/// What `kv put` sends.
#[derive(Debug, Clone)]
pub struct KvPut<'a> {
    /// The key.
    pub key: &'a str,
    /// The raw value.
    pub value: Bytes,
    /// Stored with the value and returned by `GET` (the gateway's default when absent).
    pub content_type: Option<&'a str>,
    /// A duration such as `1h`.
    pub ttl: Option<&'a str>,
    /// `eventual` or `strong`.
    pub consistency: Option<&'a str>,
    /// Write only if the key is at this version, or absent.
    pub precondition: Option<Precondition>,
}

/// A `kv put`'s condition (the gateway answers 412, exit 5, when it does not hold).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// `If-Match: "<version>"`: the key is live at this version.
    IfVersion(u64),
    /// `If-None-Match: *`: the key does not exist.
    IfAbsent,
}

/// A value read from the gateway.
#[derive(Debug, Clone)]
pub struct Value {
    /// The raw bytes.
    pub bytes: Bytes,
    /// The content type it was stored with.
    pub content_type: Option<String>,
    /// Its version, when the gateway tells.
    pub version: Option<u64>,
    /// Its absolute expiry (Unix ms), when the gateway tells.
    pub expires_at: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_exit_codes() {
        assert_eq!(exit_code_for_status(StatusCode::UNAUTHORIZED), exit::AUTH);
        assert_eq!(exit_code_for_status(StatusCode::FORBIDDEN), exit::AUTH);
        assert_eq!(exit_code_for_status(StatusCode::NOT_FOUND), exit::NOT_FOUND);
        assert_eq!(exit_code_for_status(StatusCode::BAD_REQUEST), exit::USAGE);
        assert_eq!(exit_code_for_status(StatusCode::CONFLICT), exit::USAGE);
        assert_eq!(exit_code_for_status(StatusCode::PAYLOAD_TOO_LARGE), exit::USAGE);
        assert_eq!(exit_code_for_status(StatusCode::TOO_MANY_REQUESTS), exit::UNAVAILABLE);
        assert_eq!(exit_code_for_status(StatusCode::PRECONDITION_FAILED), exit::PRECONDITION);
        assert_eq!(exit_code_for_status(StatusCode::INTERNAL_SERVER_ERROR), exit::UNAVAILABLE);
        assert_eq!(exit_code_for_status(StatusCode::SERVICE_UNAVAILABLE), exit::UNAVAILABLE);
    }

    #[test]
    fn status_errors_are_one_line_and_name_the_service() {
        let gateway = Endpoint::parse("gateway", "http://127.0.0.1:8080/", "--gateway").unwrap();
        let error = status_error(&gateway, StatusCode::BAD_REQUEST, "invalid ttl \"x\"", None);
        assert_eq!(error.code, exit::USAGE);
        assert_eq!(error.message, "invalid ttl \"x\" (gateway answered 400 Bad Request)");
        let error = status_error(&gateway, StatusCode::SERVICE_UNAVAILABLE, "no node up", None);
        assert_eq!(error.message, "the gateway at http://127.0.0.1:8080 failed (503 Service Unavailable): no node up");
        let error = status_error(&gateway, StatusCode::TOO_MANY_REQUESTS, "", Some(Duration::from_secs(30)));
        assert_eq!(error.message, "rate limited by the gateway at http://127.0.0.1:8080; retry in 30 s");
        assert!(!error.message.contains('\n'));
    }

    #[test]
    fn error_bodies_yield_their_message() {
        assert_eq!(error_message(br#"{"error":"Key not found"}"#), "Key not found");
        assert_eq!(error_message(b"plain text\nsecond line"), "plain text");
        assert_eq!(error_message(b""), "");
    }

    #[test]
    fn endpoints_encode_keys_as_one_segment() {
        let gateway = Endpoint::parse("gateway", "http://127.0.0.1:8080", "--gateway").unwrap();
        assert_eq!(
            gateway.url(&["v1", "kv", "a/b c?d"]).unwrap().as_str(),
            "http://127.0.0.1:8080/v1/kv/a%2Fb%20c%3Fd"
        );
        let prefixed = Endpoint::parse("gateway", "https://example.com/ydht/", "--gateway").unwrap();
        assert_eq!(prefixed.url(&["health"]).unwrap().as_str(), "https://example.com/ydht/health");
        assert_eq!(prefixed.display, "https://example.com/ydht");
    }

    #[test]
    fn dot_keys_are_usage_errors_not_the_listing() {
        let gateway = Endpoint::parse("gateway", "http://127.0.0.1:8080", "--gateway").unwrap();
        for key in [".", ".."] {
            let error = gateway.url(&["v1", "kv", key]).unwrap_err();
            assert_eq!(crate::error::exit_code_of(&error), exit::USAGE, "{key:?}");
            assert!(error.to_string().contains("not allowed"), "{error}");
        }
    }

    #[test]
    fn bad_urls_are_usage_errors() {
        for bad in ["", "localhost:8080", "ftp://x", "http://"] {
            let error = Endpoint::parse("gateway", bad, "--gateway").unwrap_err();
            assert_eq!(crate::error::exit_code_of(&error), exit::USAGE, "{bad:?}");
            assert!(error.to_string().contains("--gateway"));
        }
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_with_exit_4() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let gateway = Endpoint::parse("gateway", &format!("http://127.0.0.1:{port}"), "--gateway").unwrap();
        let api = Api::new().unwrap();
        let error = api.get_json::<serde_json::Value>(&gateway, &["health"], None).await.unwrap_err();
        assert_eq!(crate::error::exit_code_of(&error), exit::UNAVAILABLE);
        assert_eq!(error.to_string(), format!("cannot reach gateway at http://127.0.0.1:{port}: connection refused"));
    }

    #[test]
    fn created_keys_decode_with_their_info() {
        let body = r#"{"id":1,"name":"k","key_prefix":"ydht_abc","key":"ydht_abcdef","scopes":["read"],
            "is_active":true,"expires_at":null,"created_at":"2024-11-15T10:00:00Z"}"#;
        let created: CreatedApiKey = serde_json::from_str(body).unwrap();
        assert_eq!(created.key, "ydht_abcdef");
        assert_eq!(created.info.scopes, [Scope::Read]);
    }
}
