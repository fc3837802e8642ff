//! A small typed client for a storage node's internal API (`/store/{key}`,
//! `/keys`, `/health`, `/metrics`), shared by the replicator and the gateway.
//!
//! One [`NodeClient`] holds two pooled, keep-alive clients; clone it freely
//! (clones share the pools). The hot endpoints (`/store/{key}` and `/batch`)
//! go through hyper's client directly: reqwest's layers parse every request's
//! URL twice more and were a quarter of a gateway read's instructions
//! (bench/RESULTS.md). The rest use `reqwest`. Both trust the same roots
//! ([`crate::tls`]). Keys travel as one percent-encoded path segment, so keys
//! containing `/`, `%`, `?` or spaces reach the node intact.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};

use crate::config::Secret;
use crate::paxos::Reply;
use crate::proto::{
    CLUSTER_SECRET_HEADER, EXPIRES_AT_HEADER, NodeBatchResponse, NodeDigest, NodeExportRequest, NodeHealth,
    NodeKeyPage, NodeMetrics, NodeRangePage, NodeRangeRequest, PENDING_HEADER, StoreWriteResponse, TOMBSTONE_HEADER,
    VERSION_HEADER,
};
use crate::sync::Lock;
use crate::wal::Record;
use crate::wire::read::{Found, Lookup, Replica};
use crate::wire::{batch, paxos, read};

pub use crate::proto::DEFAULT_CONTENT_TYPE;

/// Why a request to a node failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The node base URL cannot be used to build a request URL.
    #[error("invalid node URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No answer: connection refused, reset, timed out.
    #[error("node {url} is unreachable: {}", causes(source.as_ref()))]
    Unreachable {
        /// The request URL.
        url: String,
        /// The transport error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The node answered with an unexpected status.
    #[error("node {url} answered {status}: {message}")]
    Status {
        /// The request URL.
        url: String,
        /// The HTTP status.
        status: StatusCode,
        /// The node's `{"error": …}` message, or the raw body.
        message: String,
    },
    /// The node answered 2xx with a body or headers we cannot understand.
    #[error("node {url} sent an invalid response: {message}")]
    InvalidResponse {
        /// The request URL.
        url: String,
        /// What is wrong with it.
        message: String,
    },
}

impl NodeError {
    /// An equivalent error, for each caller of a failed batch (a transport
    /// error's causes carried as text).
    pub fn duplicate(&self) -> NodeError {
        match self {
            NodeError::InvalidUrl { url, reason } => NodeError::InvalidUrl { url: url.clone(), reason: reason.clone() },
            NodeError::Unreachable { url, source } => NodeError::Unreachable {
                url: url.clone(),
                source: Box::new(std::io::Error::other(causes(source.as_ref()))),
            },
            NodeError::Status { url, status, message } => {
                NodeError::Status { url: url.clone(), status: *status, message: message.clone() }
            }
            NodeError::InvalidResponse { url, message } => {
                NodeError::InvalidResponse { url: url.clone(), message: message.clone() }
            }
        }
    }

    /// Whether retrying the same request can never succeed (the node refused the
    /// request itself, e.g. 400 or 413). Transport errors, 5xx, 401/403 (a
    /// secret mismatch an operator can fix), 408 and 429 are worth retrying.
    pub fn is_permanent(&self) -> bool {
        match self {
            NodeError::InvalidUrl { .. } => true,
            NodeError::Status { status, .. } => {
                status.is_client_error()
                    && !matches!(
                        *status,
                        StatusCode::UNAUTHORIZED
                            | StatusCode::FORBIDDEN
                            | StatusCode::REQUEST_TIMEOUT
                            | StatusCode::TOO_MANY_REQUESTS
                    )
            }
            NodeError::Unreachable { .. } | NodeError::InvalidResponse { .. } => false,
        }
    }
}

/// The metadata of a versioned write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteMeta {
    /// The record's version (hybrid logical clock value).
    pub version: u64,
    /// Absolute expiry in Unix milliseconds, if any.
    pub expires_at: Option<u64>,
    /// The value's content type.
    pub content_type: String,
}

/// Most node base URLs a client keeps parsed (a cluster has far fewer nodes).
const MAX_PARSED_BASES: usize = 1024;

/// An error and its causes on one line, each cause once.
pub fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// hyper's pooled client, over plain TCP or rustls.
type HotClient = HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A typed client for the node internal API; cheap to clone.
#[derive(Clone, Debug)]
pub struct NodeClient {
    http: reqwest::Client,
    /// The client of `/store/{key}` and `/batch`.
    hot: HotClient,
    /// Time allowed for one request, answer included.
    timeout: Duration,
    secret: Arc<Secret>,
    /// Node base URLs already parsed: parsing one (host, IDNA) cost more than the
    /// rest of building a request. The std mutex guards one short map lookup, never an await.
    bases: Arc<Mutex<HashMap<String, Url>>>,
}

impl NodeClient {
    /// A client with its own connection pool; every request times out after `timeout`.
    pub fn new(secret: Secret, timeout: Duration) -> Self {
        let http = crate::tls::client_builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            // Below the servers' idle keep-alive timeout (crate::server::Limits), so the pool drops a connection first.
            .pool_idle_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()
            .expect("the HTTP client configuration is valid");
        let mut connector = HttpConnector::new();
        connector.enforce_http(false);
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout.min(Duration::from_secs(3))));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(crate::tls::rustls_client_config())
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let hot = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(64)
            .build(connector);
        Self { http, hot, timeout, secret: Arc::new(secret), bases: Arc::default() }
    }

    /// `{base}/store/{key}` with the key percent-encoded as one path segment.
    pub fn store_url(base: &str, key: &str) -> Result<Url, NodeError> {
        Self::url(base, &["store", key])
    }

    fn url(base: &str, segments: &[&str]) -> Result<Url, NodeError> {
        Ok(with_segments(parse_base(base)?, segments))
    }

    /// [`NodeClient::url`], parsing each node's base URL only once.
    fn node_url(&self, base: &str, segments: &[&str]) -> Result<Url, NodeError> {
        let cached = self.bases.locked().get(base).cloned();
        let parsed = match cached {
            Some(parsed) => parsed,
            None => {
                let parsed = parse_base(base)?;
                let mut bases = self.bases.locked();
                if bases.len() < MAX_PARSED_BASES {
                    bases.insert(base.to_string(), parsed.clone());
                }
                parsed
            }
        };
        Ok(with_segments(parsed, segments))
    }

    /// `PUT /store/{key}`: a versioned write; the node answers whether it applied it.
    pub async fn put(
        &self,
        base: &str,
        key: &str,
        value: Bytes,
        meta: &WriteMeta,
    ) -> Result<StoreWriteResponse, NodeError> {
        let url = self.node_url(base, &["store", key])?;
        let content_type = HeaderValue::from_str(&meta.content_type)
            .map_err(|_| invalid_request(&url, "the content type is not a valid header value"))?;
        let mut headers = vec![
            (HeaderName::from_static(VERSION_HEADER), HeaderValue::from(meta.version)),
            (CONTENT_TYPE, content_type),
        ];
        if let Some(expires_at) = meta.expires_at {
            headers.push((HeaderName::from_static(EXPIRES_AT_HEADER), HeaderValue::from(expires_at)));
        }
        let answer = self.send(Method::PUT, &url, &headers, value).await?;
        answer.json(&url)
    }

    /// `DELETE /store/{key}`: writes a tombstone at `version`.
    pub async fn delete(&self, base: &str, key: &str, version: u64) -> Result<StoreWriteResponse, NodeError> {
        let url = self.node_url(base, &["store", key])?;
        let headers = [(HeaderName::from_static(VERSION_HEADER), HeaderValue::from(version))];
        let answer = self.send(Method::DELETE, &url, &headers, Bytes::new()).await?;
        answer.json(&url)
    }

    /// `GET /store/{key}`: the live value, a tombstone, or nothing.
    pub async fn get(&self, base: &str, key: &str) -> Result<Lookup, NodeError> {
        Ok(self.get_replica(base, key).await?.lookup)
    }

    /// [`NodeClient::get`] with the version of a conditional write the node accepted and has not
    /// seen committed, newer than what it holds (the `x-pending` header).
    pub async fn get_replica(&self, base: &str, key: &str) -> Result<Replica, NodeError> {
        let url = self.node_url(base, &["store", key])?;
        let answer = self.send(Method::GET, &url, &[], Bytes::new()).await?;
        let headers = &answer.headers;
        let pending = header_u64(&url, headers, PENDING_HEADER)?;
        if answer.status == StatusCode::NOT_FOUND {
            let tombstone = headers.get(TOMBSTONE_HEADER).is_some_and(|value| value.as_bytes() == b"true");
            let lookup = match (tombstone, header_u64(&url, headers, VERSION_HEADER)?) {
                (true, Some(version)) => Lookup::Tombstone(version),
                _ => Lookup::Missing,
            };
            return Ok(Replica { lookup, pending });
        }
        if answer.status != StatusCode::OK {
            return Err(answer.status_error(&url));
        }
        let version = header_u64(&url, headers, VERSION_HEADER)?
            .ok_or_else(|| invalid_response(&url, format!("missing {VERSION_HEADER} header")))?;
        let expires_at = header_u64(&url, headers, EXPIRES_AT_HEADER)?;
        let content_type =
            headers.get(CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or(DEFAULT_CONTENT_TYPE).into();
        Ok(Replica { lookup: Lookup::Found(Found { value: answer.body, version, expires_at, content_type }), pending })
    }

    /// One request to a hot endpoint with the cluster secret and `headers`, answer
    /// read whole, within the client's timeout.
    async fn send(
        &self,
        method: Method,
        url: &Url,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<Answer, NodeError> {
        let mut request = axum::http::Request::builder().method(method).uri(url.as_str());
        let secret = HeaderValue::from_str(self.secret.expose())
            .map_err(|_| invalid_request(url, "the cluster secret is not a valid header value"))?;
        request = request.header(CLUSTER_SECRET_HEADER, secret);
        if let Some(ids) = crate::requestid::current().and_then(|ids| HeaderValue::from_str(&ids).ok()) {
            request = request.header(crate::proto::REQUEST_ID_HEADER, ids);
        }
        for (name, value) in headers {
            request = request.header(name, value.clone());
        }
        let request = request.body(Full::new(body)).map_err(|error| invalid_request(url, &error.to_string()))?;
        let unreachable =
            |source: Box<dyn std::error::Error + Send + Sync>| NodeError::Unreachable { url: url.to_string(), source };
        let exchange = async {
            let response = self.hot.request(request).await.map_err(|error| unreachable(Box::new(error)))?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(|error| unreachable(Box::new(error)))?.to_bytes();
            Ok(Answer { status: parts.status, headers: parts.headers, body })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(unreachable(Box::new(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} ms", self.timeout.as_millis()),
            )))),
        }
    }

    /// `GET /health`: answers only if the node is up and healthy.
    pub async fn health(&self, base: &str) -> Result<NodeHealth, NodeError> {
        let url = self.node_url(base, &["health"])?;
        let response = crate::requestid::propagate(self.http.get(url.clone()))
            .send()
            .await
            .map_err(|source| unreachable(&url, source))?;
        json_or_status(&url, response).await
    }

    /// `GET /metrics`: the node's counters (key count, WAL size, disk usage, …).
    pub async fn metrics(&self, base: &str) -> Result<NodeMetrics, NodeError> {
        let url = self.node_url(base, &["metrics"])?;
        let response = crate::requestid::propagate(self.http.get(url.clone()))
            .send()
            .await
            .map_err(|source| unreachable(&url, source))?;
        json_or_status(&url, response).await
    }

    /// `GET /keys?prefix=&limit=&cursor=`: one page of live keys.
    pub async fn keys(
        &self,
        base: &str,
        prefix: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<NodeKeyPage, NodeError> {
        let mut url = self.node_url(base, &["keys"])?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("prefix", prefix).append_pair("limit", &limit.to_string());
            if let Some(cursor) = cursor {
                query.append_pair("cursor", cursor);
            }
        }
        let response = crate::requestid::propagate(self.http.get(url.clone()))
            .header(CLUSTER_SECRET_HEADER, self.secret.expose())
            .send()
            .await
            .map_err(|source| unreachable(&url, source))?;
        json_or_status(&url, response).await
    }
}

impl NodeClient {
    /// `GET /feed`: the node's changes after `after` under `prefix`, at most `limit`, waiting up
    /// to `wait` for one when there is none yet (the request's timeout stretches by that much).
    pub async fn feed(
        &self,
        base: &str,
        after: u64,
        prefix: &str,
        limit: usize,
        wait: Duration,
    ) -> Result<crate::proto::NodeFeedPage, NodeError> {
        let mut url = self.node_url(base, &["feed"])?;
        url.query_pairs_mut()
            .append_pair("after", &after.to_string())
            .append_pair("prefix", prefix)
            .append_pair("limit", &limit.to_string())
            .append_pair("wait_ms", &wait.as_millis().to_string());
        let response = crate::requestid::propagate(self.http.get(url.clone()))
            .header(CLUSTER_SECRET_HEADER, self.secret.expose())
            .timeout(self.timeout + wait)
            .send()
            .await
            .map_err(|source| unreachable(&url, source))?;
        json_or_status(&url, response).await
    }

    /// `GET /digest`: the node's per-arc hashes (anti-entropy).
    pub async fn digest(&self, base: &str) -> Result<NodeDigest, NodeError> {
        let url = self.node_url(base, &["digest"])?;
        let request =
            crate::requestid::propagate(self.http.get(url.clone())).header(CLUSTER_SECRET_HEADER, self.secret.expose());
        let response = request.send().await.map_err(|source| unreachable(&url, source))?;
        json_or_status(&url, response).await
    }

    /// `POST /range`: one page of the node's entries in some arcs (anti-entropy).
    pub async fn range(&self, base: &str, request: &NodeRangeRequest) -> Result<NodeRangePage, NodeError> {
        let url = self.node_url(base, &["range"])?;
        let request = crate::requestid::propagate(self.http.post(url.clone()))
            .header(CLUSTER_SECRET_HEADER, self.secret.expose())
            .json(request);
        let response = request.send().await.map_err(|source| unreachable(&url, source))?;
        json_or_status(&url, response).await
    }

    /// `POST /scan`: one page of the node's entries in some ring intervals (rebalancing).
    pub async fn scan(&self, base: &str, request: &crate::proto::NodeScanRequest) -> Result<NodeRangePage, NodeError> {
        let url = Self::url(base, &["scan"])?;
        let request = crate::requestid::propagate(self.http.post(url.clone()))
            .header(CLUSTER_SECRET_HEADER, self.secret.expose())
            .json(request);
        let response = request.send().await.map_err(|source| unreachable(&url, source))?;
        json_or_status(&url, response).await
    }

    /// `POST /export`: the node's current records of `keys` (those it holds).
    pub async fn export(&self, base: &str, keys: Vec<String>) -> Result<Vec<Record>, NodeError> {
        let url = self.node_url(base, &["export"])?;
        let request = crate::requestid::propagate(self.http.post(url.clone()))
            .header(CLUSTER_SECRET_HEADER, self.secret.expose())
            .json(&NodeExportRequest { keys });
        let response = request.send().await.map_err(|source| unreachable(&url, source))?;
        if response.status() != StatusCode::OK {
            return Err(status_error(&url, response).await);
        }
        let body = response.bytes().await.map_err(|source| unreachable(&url, source))?;
        batch::decode(&body).map_err(|error| invalid_response(&url, error.to_string()))
    }

    /// `POST /batch`: applies a batch body ([`batch::encode`]) with one WAL sync.
    pub async fn batch(&self, base: &str, body: Vec<u8>) -> Result<NodeBatchResponse, NodeError> {
        let url = self.node_url(base, &["batch"])?;
        let headers = [(CONTENT_TYPE, HeaderValue::from_static(batch::BATCH_CONTENT_TYPE))];
        let answer = self.send(Method::POST, &url, &headers, Bytes::from(body)).await?;
        answer.json(&url)
    }

    /// `POST /read`: `keys` in one request; one answer per key, in order, `None`
    /// for a key the node left out of a full answer (read it alone with [`NodeClient::get`]).
    pub async fn read_many(&self, base: &str, keys: &[&str]) -> Result<Vec<Option<Replica>>, NodeError> {
        let url = self.node_url(base, &["read"])?;
        let body =
            read::encode_request(keys.iter().copied()).map_err(|error| invalid_request(&url, &error.to_string()))?;
        let headers = [(CONTENT_TYPE, HeaderValue::from_static(read::READ_CONTENT_TYPE))];
        let answer = self.send(Method::POST, &url, &headers, Bytes::from(body)).await?;
        if answer.status != StatusCode::OK {
            return Err(answer.status_error(&url));
        }
        let entries =
            read::decode_answer(&answer.body, keys.len()).map_err(|error| invalid_response(&url, error.to_string()))?;
        // A reader sees an expired value as missing, as `GET /store/{key}` answers it.
        let read_of = |replica: Replica| match replica.lookup {
            Lookup::Expired(_) => Replica { lookup: Lookup::Missing, ..replica },
            _ => replica,
        };
        Ok(entries.into_iter().map(|entry| entry.into_replica().map(read_of)).collect())
    }
}

impl NodeClient {
    /// `POST /paxos`: messages of conditional writes' rounds, one reply each, in order; the
    /// node answers once its acceptors' states are durable.
    pub async fn paxos(&self, base: &str, requests: &[paxos::Request]) -> Result<Vec<Reply<Record>>, NodeError> {
        let url = self.node_url(base, &["paxos"])?;
        let body = paxos::encode_requests(requests).map_err(|error| invalid_request(&url, &error.to_string()))?;
        let headers = [(CONTENT_TYPE, HeaderValue::from_static(paxos::PAXOS_CONTENT_TYPE))];
        let answer = self.send(Method::POST, &url, &headers, Bytes::from(body)).await?;
        if answer.status != StatusCode::OK {
            return Err(answer.status_error(&url));
        }
        let asked: Vec<_> = requests.iter().map(|request| &request.message).collect();
        paxos::decode_replies(&answer.body, &asked).map_err(|error| invalid_response(&url, error.to_string()))
    }
}

/// Parses a node base URL: http or https, able to take a path.
fn parse_base(base: &str) -> Result<Url, NodeError> {
    let invalid = |reason: String| NodeError::InvalidUrl { url: base.to_string(), reason };
    let url = Url::parse(base).map_err(|error| invalid(error.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https".to_string()));
    }
    if url.cannot_be_a_base() {
        return Err(invalid("it cannot have a path".to_string()));
    }
    Ok(url)
}

/// `base` with `segments` appended, each percent-encoded as one path segment.
fn with_segments(mut base: Url, segments: &[&str]) -> Url {
    base.path_segments_mut().expect("checked by parse_base").pop_if_empty().extend(segments);
    base
}

/// A whole answer of a hot endpoint.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    /// The JSON body of a 200, or the error the answer means.
    fn json<T: serde::de::DeserializeOwned>(self, url: &Url) -> Result<T, NodeError> {
        if self.status != StatusCode::OK {
            return Err(self.status_error(url));
        }
        serde_json::from_slice(&self.body).map_err(|error| invalid_response(url, format!("unexpected JSON: {error}")))
    }

    fn status_error(&self, url: &Url) -> NodeError {
        status_error_of(url, self.status, &self.body)
    }
}

fn unreachable(url: &Url, source: reqwest::Error) -> NodeError {
    NodeError::Unreachable { url: url.to_string(), source: Box::new(source) }
}

/// A request this client cannot even build (a header the node would never accept).
fn invalid_request(url: &Url, reason: &str) -> NodeError {
    NodeError::InvalidUrl { url: url.to_string(), reason: reason.to_string() }
}

fn invalid_response(url: &Url, message: String) -> NodeError {
    NodeError::InvalidResponse { url: url.to_string(), message }
}

fn header_u64(url: &Url, headers: &HeaderMap, name: &str) -> Result<Option<u64>, NodeError> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| invalid_response(url, format!("{name} header is not an unsigned integer"))),
    }
}

async fn json_or_status<T: serde::de::DeserializeOwned>(
    url: &Url,
    response: reqwest::Response,
) -> Result<T, NodeError> {
    if response.status() != StatusCode::OK {
        return Err(status_error(url, response).await);
    }
    let body = response.bytes().await.map_err(|source| unreachable(url, source))?;
    serde_json::from_slice(&body).map_err(|error| invalid_response(url, format!("unexpected JSON: {error}")))
}

async fn status_error(url: &Url, response: reqwest::Response) -> NodeError {
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    status_error_of(url, status, &body)
}

fn status_error_of(url: &Url, status: StatusCode, body: &[u8]) -> NodeError {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: String,
    }
    let message = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) => parsed.error,
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    };
    NodeError::Status { url: url.to_string(), status, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_url_encodes_the_key_as_one_segment() {
        let url = NodeClient::store_url("http://127.0.0.1:8082", "7/user:1 a%b?c#d").unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8082/store/7%2Fuser:1%20a%25b%3Fc%23d");
        let with_slash = NodeClient::store_url("http://h:1/base/", "k").unwrap();
        assert_eq!(with_slash.as_str(), "http://h:1/base/store/k");
    }

    #[test]
    fn bad_base_urls_are_refused() {
        assert!(matches!(NodeClient::store_url("not a url", "k"), Err(NodeError::InvalidUrl { .. })));
        assert!(matches!(NodeClient::store_url("ftp://h/", "k"), Err(NodeError::InvalidUrl { .. })));
    }

    #[test]
    fn only_request_errors_are_permanent() {
        let status = |status| NodeError::Status { url: String::new(), status, message: String::new() };
        assert!(status(StatusCode::BAD_REQUEST).is_permanent());
        assert!(status(StatusCode::PAYLOAD_TOO_LARGE).is_permanent());
        assert!(!status(StatusCode::UNAUTHORIZED).is_permanent());
        assert!(!status(StatusCode::TOO_MANY_REQUESTS).is_permanent());
        assert!(!status(StatusCode::SERVICE_UNAVAILABLE).is_permanent());
    }
}
