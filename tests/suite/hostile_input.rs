//! Hostile clients against the shared server loop (`ydht::server`): floods of
//! idle connections, slow headers and huge headers are bounded by limits and
//! timeouts, and `/health` keeps answering.

use crate::node_process;

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};
use bytes::Bytes;
use node_process::NodeProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use ydht::server::{Limits, serve_limited};
use ydht::shutdown::Shutdown;

/// A router with `/health`, served with `limits`; returns its base URL and address.
async fn start(limits: Limits) -> (String, std::net::SocketAddr, Shutdown) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = Router::new()
        .route("/health", get(|| async { "healthy" }))
        .route("/echo", post(|body: Bytes| async move { body }));
    let shutdown = Shutdown::new();
    tokio::spawn(serve_limited(listener, router, shutdown.clone(), limits, None));
    (format!("http://{address}"), address, shutdown)
}

/// Whether the server closes `stream` within `within` (EOF or reset), reading and dropping any answer.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buffer = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

async fn health(client: &reqwest::Client, base: &str) -> u16 {
    client.get(format!("{base}/health")).send().await.map(|response| response.status().as_u16()).unwrap_or(0)
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_and_health_answers_once_slots_free() {
    // A header timeout far longer than the test: only the connection limit can close anything here.
    let limits = Limits { max_connections: 8, header_read_timeout: Duration::from_secs(300), ..Limits::default() };
    let (base, address, shutdown) = start(limits).await;
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(TcpStream::connect(address).await.unwrap());
    }
    let mut extra = TcpStream::connect(address).await.unwrap();
    assert!(closed_within(&mut extra, Duration::from_secs(10)).await, "a connection beyond the limit stayed open");
    for stream in &mut idle {
        assert!(!closed_within(stream, Duration::from_millis(20)).await, "a connection within the limit was closed");
    }
    drop(idle);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while health(&client, &base).await != 200 {
        assert!(Instant::now() < deadline, "/health never answered again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.trigger();
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_header_timeout() {
    let limits = Limits { header_read_timeout: Duration::from_millis(300), ..Limits::default() };
    let (base, address, shutdown) = start(limits).await;
    let mut silent = TcpStream::connect(address).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(20)).await, "a silent connection was never closed");
    // A keep-alive connection that answered one request is closed once it idles past the timeout too.
    let mut kept = TcpStream::connect(address).await.unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    assert!(closed_within(&mut kept, Duration::from_secs(20)).await, "an idle keep-alive connection was never closed");
    let client = reqwest::Client::new();
    assert_eq!(health(&client, &base).await, 200);
    shutdown.trigger();
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let limits = Limits { header_read_timeout: Duration::from_millis(500), ..Limits::default() };
    let (base, address, shutdown) = start(limits).await;
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    // One header line every 100 ms, for up to 20 s: the server must hang up long before.
    let mut cut_off = false;
    for n in 0..200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if stream.write_all(format!("x-slow-{n}: y\r\n").as_bytes()).await.is_err() {
            cut_off = true;
            break;
        }
        let mut probe = [0u8; 256];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(1), stream.read(&mut probe)).await {
            cut_off = true;
            break;
        }
    }
    assert!(cut_off, "a request whose headers never end kept its connection for 20 s");
    let client = reqwest::Client::new();
    assert_eq!(health(&client, &base).await, 200);
    shutdown.trigger();
}

#[tokio::test]
async fn heads_just_over_the_documented_64_kib_get_431_and_smaller_ones_pass() {
    let (base, _, shutdown) = start(Limits::default()).await;
    let client = reqwest::Client::new();
    let under = client.get(format!("{base}/health")).header("x-big", "u".repeat(60 * 1024)).send().await.unwrap();
    assert_eq!(under.status(), 200);
    for kib in [65, 80, 100] {
        let response = client.get(format!("{base}/health")).header("x-big", "o".repeat(kib * 1024)).send().await;
        let response = response.unwrap_or_else(|error| panic!("a {kib} KiB head got no answer: {error}"));
        assert_eq!(response.status(), 431, "a {kib} KiB head");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("maximum is 65536"), "{body}");
    }
    assert_eq!(health(&client, &base).await, 200);
    shutdown.trigger();
}

#[tokio::test]
async fn huge_or_too_many_headers_get_431_from_a_real_node() {
    let data = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(data.path(), &[], &[]);
    let client = reqwest::Client::new();
    let huge = "h".repeat(200 * 1024);
    let response = client.get(node.at("/health")).header("x-huge", huge).send().await;
    // hyper answers 431 and closes; a client still writing may see the reset instead.
    if let Ok(response) = response {
        assert_eq!(response.status(), 431);
    }
    let mut many = client.get(node.at("/health"));
    for n in 0..200 {
        many = many.header(format!("x-many-{n}"), "v");
    }
    assert_eq!(many.send().await.unwrap().status(), 431);
    let answer: serde_json::Value = client.get(node.at("/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(answer["status"], "healthy");
}

#[tokio::test]
async fn an_endless_body_fails_after_the_body_timeout() {
    let limits = Limits { body_timeout: Duration::from_millis(500), ..Limits::default() };
    let (base, _, shutdown) = start(limits).await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    // A body that never ends: one byte every 50 ms, forever.
    let endless = futures_util::stream::unfold((), |()| async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), ()))
    });
    let response = client.post(format!("{base}/echo")).body(reqwest::Body::wrap_stream(endless)).send().await;
    // The handler's body read fails, so it answers 400; a client still sending may see the close instead.
    match response {
        Ok(response) => {
            assert_eq!(response.status(), 400);
            let text = response.text().await.unwrap();
            assert!(text.contains("did not arrive within 500ms"), "{text}");
        }
        Err(error) => assert!(!error.is_timeout(), "the server kept reading the endless body: {error}"),
    }
    // A body that arrives in time is untouched.
    let echoed = client.post(format!("{base}/echo")).body(vec![7u8; 100_000]).send().await.unwrap();
    assert_eq!(echoed.bytes().await.unwrap().len(), 100_000);
    assert_eq!(health(&client, &base).await, 200);
    shutdown.trigger();
}

#[tokio::test]
async fn every_answer_carries_the_request_id_refusals_included() {
    let limits = Limits { max_header_bytes: 2048, ..Limits::default() };
    let (base, _, shutdown) = start(limits).await;
    let client = reqwest::Client::new();
    let sent = client.get(format!("{base}/health")).header("x-request-id", "trace-me-42").send().await.unwrap();
    assert_eq!(sent.status(), 200);
    assert_eq!(sent.headers()["x-request-id"], "trace-me-42");

    let made = client.get(format!("{base}/health")).send().await.unwrap();
    let id = made.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(id.len() == 16 && id.bytes().all(|byte| byte.is_ascii_hexdigit()), "a new id: {id}");

    // Refused by the server loop itself (431), the answer still names the request.
    let refused = client
        .get(format!("{base}/health"))
        .header("x-request-id", "big-one")
        .header("x-filler", "f".repeat(4096))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 431);
    assert_eq!(refused.headers()["x-request-id"], "big-one");

    // An unknown route's 404 as well; a hostile id is replaced, not echoed.
    let hostile = "x".repeat(500);
    let missing = client.get(format!("{base}/nowhere")).header("x-request-id", &hostile).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_ne!(missing.headers()["x-request-id"], hostile.as_str());
    shutdown.trigger();
}
