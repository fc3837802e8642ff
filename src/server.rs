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
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "ydht {service} listening on http://{address}");
    let _ = stdout.flush();
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
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            body_timeout: Duration::from_secs(60),
        }
    }
}

/// Serves `router` on `listener` with the default [`Limits`] until `shutdown`
/// fires, then stops accepting and lets in-flight requests finish (up to [`DRAIN_TIMEOUT`]).
pub async fn serve(listener: TcpListener, router: Router, shutdown: Shutdown) -> anyhow::Result<()> {
    serve_limited(listener, router, shutdown, Limits::default()).await
}

/// [`serve`] with explicit limits. Each connection is served by hyper's
/// HTTP/1.1 server with the header limits and timeout; every request gets the
/// peer address as `ConnectInfo<SocketAddr>`.
pub async fn serve_limited(
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
    limits: Limits,
) -> anyhow::Result<()> {
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
        connections.spawn(serve_connection(stream, peer, router.clone(), shutdown.clone(), limits, slot));
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!("in-flight requests did not finish within {DRAIN_TIMEOUT:?}; closing them");
        connections.abort_all();
    }
    Ok(())
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
    _slot: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
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
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers);
    let connection = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
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

#[cfg(test)]
mod tests {
    use super::*;

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
