//! Binding listeners with actionable errors, and serving a router until shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::error::Exit;
use crate::shutdown::Shutdown;
use crate::tls::TlsConfig;
use tokio_rustls::TlsAcceptor;

/// Binds `host:port`; a port in use or a bad host becomes a one-line usage error
/// naming the flag and environment variable that choose another.
pub async fn bind(host: &str, port: u16, port_flag: &str) -> anyhow::Result<TcpListener> {
    let address = format!("{host}:{port}");
    TcpListener::bind(&address).await.map_err(|error| {
        let message = match error.kind() {
            std::io::ErrorKind::AddrInUse => format!(
                "port {port} on {host} is already in use (is another ydht running?); stop it or choose another port with {port_flag}"
            ),
            std::io::ErrorKind::PermissionDenied => {
                format!("not allowed to bind {address}: {error}; choose a port above 1023 with {port_flag}")
            }
            _ => format!("cannot listen on {address}: {error}; check --host / YDHT_HOST and {port_flag}"),
        };
        Exit::usage(message).into()
    })
}

/// Tells operators and tests where a service listens: prints
/// `ydht <service> listening on http://ADDR` on stdout (one line, flushed).
/// Tests that bind port 0 read this line to learn the port.
pub fn announce(service: &str, address: SocketAddr) {
    announce_with(service, address, None);
}

/// [`announce`] with the scheme the service speaks: `https://` when `tls` is set.
pub fn announce_with(service: &str, address: SocketAddr, tls: Option<&TlsConfig>) {
    use std::io::Write;
    let scheme = crate::tls::scheme(tls);
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "ydht {service} listening on {scheme}://{address}");
    let _ = stdout.flush();
}

/// Security headers for API responses (JSON, or tenants' raw values): nothing may be sniffed,
/// framed, run or loaded from them, and no referrer leaks. Pages have their own (wider) CSP.
pub async fn api_security_headers(mut response: axum::response::Response) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, "default-src 'none'; frame-ancestors 'none'; sandbox"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// `GET /openapi.json`: a service's OpenAPI 3 document (kept in the source tree next to its routes).
pub fn openapi_response(document: &'static str) -> axum::response::Response {
    use axum::response::IntoResponse;
    ([(axum::http::header::CONTENT_TYPE, "application/json")], document).into_response()
}

/// How long in-flight requests may take to finish after shutdown is requested.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Bounds every service puts on its connections, so hostile clients (slow
/// headers, huge headers, floods of idle connections) cannot exhaust it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections served at once; connections beyond are closed at once
    /// (and logged), so the accept loop never blocks.
    pub max_connections: usize,
    /// Time a client has to send a request's complete headers, including while
    /// an idle keep-alive connection waits for its next request.
    pub header_read_timeout: Duration,
    /// Largest request head (request line + headers) in bytes; larger gets 431.
    pub max_header_bytes: usize,
    /// Most header fields in one request; more gets 431.
    pub max_headers: usize,
    /// Time a request body has to arrive completely, from the end of its
    /// headers; a slower (or endless) body fails to read, and the handler answers 4xx.
    pub body_timeout: Duration,
    /// The service's name in its request spans.
    pub service: &'static str,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            body_timeout: Duration::from_secs(60),
            service: "ydht",
        }
    }
}

/// Serves `router` on `listener` with the default [`Limits`] until `shutdown`
/// fires, then stops accepting and lets in-flight requests finish (up to [`DRAIN_TIMEOUT`]).
pub async fn serve(listener: TcpListener, router: Router, shutdown: Shutdown) -> anyhow::Result<()> {
    serve_limited(listener, router, shutdown, Limits::default(), None).await
}

/// [`serve`], over TLS when `tls` is set (a client speaking plain HTTP is dropped
/// after its failed handshake).
/// `service` names the service in its request spans (`gateway`, `node`, …).
pub async fn serve_with(
    service: &'static str,
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
    tls: Option<TlsConfig>,
) -> anyhow::Result<()> {
    serve_limited(listener, router, shutdown, Limits { service, ..Limits::default() }, tls).await
}

/// [`serve`] with explicit limits, over TLS when `tls` is set. Each connection is served by hyper's
/// HTTP/1.1 server with the header limits and timeout; every request gets the
/// peer address as `ConnectInfo<SocketAddr>`.
pub async fn serve_limited(
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
    limits: Limits,
    tls: Option<TlsConfig>,
) -> anyhow::Result<()> {
    let acceptor = tls.map(|tls| tls.acceptor());
    // hyper bounds the head only by its read buffer, which a single read can overshoot; the
    // documented limit is checked exactly on the parsed head.
    let (max_header_bytes, service) = (limits.max_header_bytes, limits.service);
    let router =
        router.layer(axum::middleware::from_fn(move |request: Request<Body>, next: axum::middleware::Next| {
            serve_request(service, max_header_bytes, request, next)
        }));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    let mut refused: u64 = 0;
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: wait a little instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    max = limits.max_connections,
                    refused,
                    "connection limit reached; closing new connections"
                );
            }
            drop(stream);
            continue;
        };
        connections.spawn(serve_connection(
            stream,
            peer,
            router.clone(),
            shutdown.clone(),
            limits,
            acceptor.clone(),
            slot,
        ));
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!("in-flight requests did not finish within {DRAIN_TIMEOUT:?}; closing them");
        connections.abort_all();
    }
    Ok(())
}

/// Size of a request's head as sent: request line, header lines and the blank line.
fn head_bytes<B>(request: &Request<B>) -> usize {
    let request_line = request.method().as_str().len() + 1 + request.uri().to_string().len() + 1 + 8 + 2;
    let fields: usize = request.headers().iter().map(|(name, value)| name.as_str().len() + 2 + value.len() + 2).sum();
    request_line + fields + 2
}

/// Longest `X-Request-Id` taken from a client; a longer or odd one is replaced.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// The id of one request: the client's `X-Request-Id` when it is 1–128 visible
/// ASCII characters (or, from a ydht service batching several requests, up to
/// [`crate::requestid::MAX_IDS`] such ids comma-separated), else a new one (16 hex
/// digits: a random per-process prefix and a counter, so making one costs no
/// allocation and no random draw).
pub fn request_id_of(header: Option<&axum::http::HeaderValue>) -> axum::http::HeaderValue {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: std::sync::OnceLock<AtomicU64> = std::sync::OnceLock::new();
    let sane = |bytes: &[u8]| {
        !bytes.is_empty() && bytes.len() <= MAX_REQUEST_ID_BYTES && bytes.iter().all(u8::is_ascii_graphic)
    };
    if let Some(value) = header.filter(|value| {
        let bytes = value.as_bytes();
        sane(bytes)
            || (bytes.len() <= crate::requestid::MAX_IDS * (MAX_REQUEST_ID_BYTES + 1)
                && bytes.split(|&byte| byte == b',').count() <= crate::requestid::MAX_IDS
                && bytes.split(|&byte| byte == b',').all(sane))
    }) {
        return value.clone();
    }
    let next = NEXT.get_or_init(|| AtomicU64::new(u64::from(rand::random::<u32>()) << 32));
    let id = next.fetch_add(1, Ordering::Relaxed);
    let mut hex = [0u8; 16];
    for (index, digit) in hex.iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[((id >> (60 - 4 * index)) & 0xf) as usize];
    }
    axum::http::HeaderValue::from_bytes(&hex).expect("hex digits are a valid header value")
}

/// The route of `path` for logs, without keys: `/v1/kv/{key}` rather than the key itself.
fn route_of(path: &str) -> &str {
    const KEYED: [(&str, &str); 3] = [
        ("/v1/kv/", "/v1/kv/{key}"),
        ("/store/", "/store/{key}"),
        ("/internal/tenants/", "/internal/tenants/{tenant}/…"),
    ];
    KEYED.iter().find(|(prefix, _)| path.starts_with(prefix)).map_or(path, |(_, route)| route)
}

/// Every request of every service, in one middleware (each layer costs a boxed
/// future per request, measured at several percent of a gateway GET):
/// - a head larger than `max_header_bytes` gets 431;
/// - the request runs in a tracing span carrying its id (the client's
///   `X-Request-Id`, or a new one), so one request's log lines can be found with
///   `grep`; every answer, errors and refusals included, carries the id back as
///   `X-Request-Id`.
async fn serve_request(
    service: &'static str,
    max_header_bytes: usize,
    request: Request<Body>,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use tracing::Instrument;
    let id = request_id_of(request.headers().get(crate::proto::REQUEST_ID_HEADER));
    let size = head_bytes(&request);
    let mut response = if size > max_header_bytes {
        crate::error::ApiError::new(
            axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "the request head is {size} bytes; the maximum is {max_header_bytes} (send large data in the body)"
            ),
        )
        .into_response()
    } else {
        let ids: std::sync::Arc<str> = std::sync::Arc::from(String::from_utf8_lossy(id.as_bytes()).as_ref());
        let method = request.method().clone();
        let span = tracing::info_span!(
            "request",
            service,
            id = %ids,
            method = %method,
            route = route_of(request.uri().path()),
        );
        let started = std::time::Instant::now();
        // Internal requests made while serving it carry its id ([`crate::requestid`]).
        let response = crate::requestid::scope(ids, next.run(request)).instrument(span.clone()).await;
        span.in_scope(|| {
            tracing::debug!(
                status = response.status().as_u16(),
                ms = started.elapsed().as_secs_f64() * 1000.0,
                "request served"
            );
        });
        response
    };
    response.headers_mut().insert(crate::proto::REQUEST_ID_HEADER, id);
    response
}

/// The error a body yields when it did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} (send it faster, or in smaller requests)", crate::duration::format(*.0))]
pub struct BodyTimeout(pub Duration);

/// `body`, failing with [`BodyTimeout`] if it has not ended `timeout` from now.
/// A body that ends in time is passed through unchanged (no copy).
fn timed_body(body: Body, timeout: Duration) -> Body {
    use futures_util::StreamExt;
    let deadline = tokio::time::Instant::now() + timeout;
    let chunks = futures_util::stream::unfold(Some(body.into_data_stream()), move |stream| async move {
        let mut stream = stream?;
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(chunk)) => Some((chunk, Some(stream))),
            Ok(None) => None,
            Err(_) => Some((Err(axum::Error::new(BodyTimeout(timeout))), None)),
        }
    });
    Body::from_stream(chunks)
}

/// Serves one connection until it closes; on shutdown, finishes its current request and closes.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    shutdown: Shutdown,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    _slot: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = tls else {
        return serve_io(TokioIo::new(stream), peer, router, shutdown, limits).await;
    };
    // The handshake runs in this connection's task, bounded in time, so a slow or
    // plain-HTTP client holds only its own connection slot.
    match tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => serve_io(TokioIo::new(stream), peer, router, shutdown, limits).await,
        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

/// Serves HTTP/1.1 on one (plain or TLS) connection with the header limits and timeouts.
async fn serve_io<I>(io: I, peer: SocketAddr, router: Router, shutdown: Shutdown, limits: Limits)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = router.map_request(move |request: Request<Incoming>| {
        let mut request = request.map(|body| timed_body(Body::new(body), limits.body_timeout));
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    });
    let service = TowerToHyperService::new(service);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // Room past the limit, so a head just over it is read whole and refused with a JSON 431
        // by `refuse_large_head` instead of hyper cutting the connection mid-read.
        .max_buf_size(limits.max_header_bytes.saturating_mul(2).max(8192))
        .max_headers(limits.max_headers);
    let connection = builder.serve_connection(io, service).with_upgrades();
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            return;
        }
        () = shutdown.wait() => connection.as_mut().graceful_shutdown(),
    }
    let _ = connection.await;
}

/// Most bytes of a refused body read and dropped, so a client still sending sees the 413, not a reset.
const DRAIN_BYTES: usize = 2 << 20;
/// Longest time spent dropping a refused body.
const DRAIN_TIME: Duration = Duration::from_secs(2);
/// Longest time a client may take to send a body.
pub const BODY_TIME: Duration = Duration::from_secs(30);

/// Reads a request body of at most `limit` bytes. A body that declares more in its
/// `content-length` is refused (413) before any of it is read; one that streams more is
/// cut off as soon as it passes the limit; one that takes longer than [`BODY_TIME`] gets a 408.
/// `what` names the body in the error ("the value", "the batch").
pub async fn read_limited_body(
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    limit: usize,
    what: &str,
) -> Result<bytes::Bytes, crate::error::ApiError> {
    use crate::error::ApiError;
    use futures_util::StreamExt;
    // Only the value's limit is a setting; the other bodies' are fixed.
    let setting = if what == "the value" { " (YDHT_MAX_VALUE_BYTES)" } else { "" };
    let too_large =
        |size: String| ApiError::too_large(format!("{what} is {size} bytes; the maximum is {limit}{setting}"));
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok());
    let mut stream = body.into_data_stream();
    if let Some(declared) = declared.filter(|&declared| declared > limit as u64) {
        discard(&mut stream).await;
        return Err(too_large(declared.to_string()));
    }
    let mut buffer = bytes::BytesMut::with_capacity(declared.unwrap_or(0) as usize);
    let read = async {
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|error| ApiError::bad_request(format!("could not read the request body: {error}")))?;
            if buffer.len() + chunk.len() > limit {
                discard(&mut stream).await;
                return Err(too_large(format!("more than {limit}")));
            }
            buffer.extend_from_slice(&chunk);
        }
        Ok(())
    };
    match tokio::time::timeout(BODY_TIME, read).await {
        Ok(outcome) => outcome.map(|()| buffer.freeze()),
        Err(_) => Err(ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            format!("{what} did not arrive within {} s; send it faster or smaller", BODY_TIME.as_secs()),
        )),
    }
}

/// Drops up to [`DRAIN_BYTES`] more of a refused body, for at most [`DRAIN_TIME`]; nothing is kept.
async fn discard(stream: &mut axum::body::BodyDataStream) {
    use futures_util::StreamExt;
    let drain = async {
        let mut dropped = 0;
        while dropped < DRAIN_BYTES {
            match stream.next().await {
                Some(Ok(chunk)) => dropped += chunk.len(),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_taken_when_sane_and_made_otherwise() {
        let header = |text: &str| axum::http::HeaderValue::from_str(text).unwrap();
        assert_eq!(request_id_of(Some(&header("abc-123"))), "abc-123");
        for hostile in ["", "two words", &"x".repeat(MAX_REQUEST_ID_BYTES + 1), "tab\there"] {
            let made = request_id_of(Some(&header(hostile)));
            assert_ne!(made, hostile);
            assert_eq!(made.len(), 16, "{hostile:?} was replaced by a new id");
        }
        let first = request_id_of(None);
        assert!(first.len() == 16 && first.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_ne!(first, request_id_of(None), "new ids differ");
        assert_eq!(route_of("/v1/kv/secret-name"), "/v1/kv/{key}");
        assert_eq!(route_of("/health"), "/health");
    }

    #[tokio::test]
    async fn port_in_use_is_an_actionable_usage_error() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = taken.local_addr().unwrap().port();
        let error = bind("127.0.0.1", port, "--port / GATEWAY_PORT").await.unwrap_err();
        assert_eq!(crate::error::exit_code_of(&error), crate::error::exit::USAGE);
        let message = error.to_string();
        assert!(message.contains("already in use") && message.contains("GATEWAY_PORT"), "{message}");
    }
}
