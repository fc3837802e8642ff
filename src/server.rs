//! Binding listeners with actionable errors, and serving a router until shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::error::Exit;
use crate::shutdown::Shutdown;
use crate::tls::{TlsConfig, TlsListener};

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

/// Serves `router` on `listener` until `shutdown` fires, then stops accepting and
/// lets in-flight requests finish (up to [`DRAIN_TIMEOUT`]).
pub async fn serve(listener: TcpListener, router: Router, shutdown: Shutdown) -> anyhow::Result<()> {
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    let graceful = axum::serve(listener, app).with_graceful_shutdown({
        let shutdown = shutdown.clone();
        async move { shutdown.wait().await }
    });
    drain(tokio::spawn(async move { graceful.await }), shutdown).await
}

/// Like [`serve`], but over TLS: connections are accepted and handshaken with `tls`
/// (a client speaking plain HTTP is dropped after the failed handshake).
pub async fn serve_tls(
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
    tls: TlsConfig,
) -> anyhow::Result<()> {
    // `tap_io` only adapts the listener so `ConnectInfo<SocketAddr>` works with it.
    let listener = TlsListener::new(listener, tls, shutdown.clone())?.tap_io(|_| {});
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    let graceful = axum::serve(listener, app).with_graceful_shutdown({
        let shutdown = shutdown.clone();
        async move { shutdown.wait().await }
    });
    drain(tokio::spawn(async move { graceful.await }), shutdown).await
}

/// [`serve_tls`] when `tls` is set, else [`serve`].
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
    tls: Option<TlsConfig>,
) -> anyhow::Result<()> {
    match tls {
        Some(tls) => serve_tls(listener, router, shutdown, tls).await,
        None => serve(listener, router, shutdown).await,
    }
}

/// Waits for `shutdown`, then for the server to finish its in-flight requests (up to [`DRAIN_TIMEOUT`]).
async fn drain(server: JoinHandle<std::io::Result<()>>, shutdown: Shutdown) -> anyhow::Result<()> {
    shutdown.wait().await;
    match tokio::time::timeout(DRAIN_TIMEOUT, server).await {
        Ok(joined) => joined??,
        Err(_) => tracing::warn!("in-flight requests did not finish within {DRAIN_TIMEOUT:?}; closing them"),
    }
    Ok(())
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
    let too_large = |size: String| {
        ApiError::too_large(format!("{what} is {size} bytes; the maximum is {limit} (YDHT_MAX_VALUE_BYTES)"))
    };
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
