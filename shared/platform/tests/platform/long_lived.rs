//! Streams served by `long_lived` on the same port as everything else: framing, errors, clients
//! leaving, and shutdown. Spoken to over raw TCP, so the bytes on the wire are what is checked.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::ConnectInfo,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, sse::Event, sse::Sse},
    routing::get,
};
use futures::StreamExt as _;
use leadflow_platform::{Platform, Server};
use leadflow_testkit::{TestDb, drop_namespace, nats_url, unique_namespace};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};
use tokio_util::sync::CancellationToken;

use crate::config;

const STREAM: &str = "/stream";

/// Counts open streams: dropped with the response body.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Running {
    addr: std::net::SocketAddr,
    open: Arc<AtomicUsize>,
    token: CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Its streams on the shared NATS server, removed by [`Running::shut_down`].
    namespace: String,
    _db: TestDb,
}

impl Running {
    /// Stops the server and removes its streams (the server task itself is awaited by tests that
    /// check how it stops).
    async fn shut_down(&self) {
        self.token.cancel();
        drop_namespace(&self.namespace).await;
    }
}

async fn start() -> Running {
    let db = TestDb::empty().await;
    let namespace = unique_namespace();
    let cfg = config(&db.url, &nats_url(), &namespace, &[]);
    let token = CancellationToken::new();
    let platform = Platform::start("test", &cfg, Vec::new(), token.clone())
        .await
        .expect("platform");
    let open = Arc::new(AtomicUsize::new(0));
    let counter = open.clone();
    let stop = token.clone();
    let routes = Router::new()
        .route(
            STREAM,
            get(
                move |headers: HeaderMap, ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>| {
                    let counter = counter.clone();
                    let stop = stop.clone();
                    async move {
                        if headers
                            .get("authorization")
                            .is_none_or(|v| v != "Bearer ok")
                        {
                            return (StatusCode::UNAUTHORIZED, "no token").into_response();
                        }
                        counter.fetch_add(1, Ordering::SeqCst);
                        let guard = Open(counter);
                        if headers.contains_key("x-flood") {
                            // Endless, for a client that never reads.
                            let chunk = "data: ".to_owned() + &"x".repeat(64 * 1024) + "\n\n";
                            let flood = futures::stream::repeat(chunk).map(move |data| {
                                let _held = &guard;
                                Ok::<_, std::convert::Infallible>(data)
                            });
                            return axum::body::Body::from_stream(flood).into_response();
                        }
                        let first = futures::stream::iter([
                            Event::default().data(format!("peer {}", peer.ip())),
                            Event::default().id("2").data("two"),
                        ]);
                        // Then idle until shutdown, holding the guard.
                        let rest = futures::stream::once(async move {
                            stop.cancelled().await;
                            drop(guard);
                            Event::default().data("bye")
                        });
                        Sse::new(first.chain(rest).map(Ok::<_, std::convert::Infallible>))
                            .into_response()
                    }
                },
            ),
        )
        .route("/plain", get(|| async { "plain" }));
    let server = Server::bind(platform, "127.0.0.1:0".parse().expect("addr"), routes, "T")
        .await
        .expect("bind")
        .long_lived(&[STREAM]);
    let addr = server.local_addr();
    Running {
        addr,
        open,
        token,
        server: tokio::spawn(server.run_until_stopped()),
        namespace,
        _db: db,
    }
}

/// Connects, sends `request` and reads until `until` is in what came back.
async fn ask(addr: std::net::SocketAddr, request: &str, until: &str) -> (TcpStream, String) {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let got = exchange(&mut conn, request, until).await;
    (conn, got)
}

/// Sends `request` and reads until `until` is in what came back (or the connection ends).
async fn exchange(conn: &mut TcpStream, request: &str, until: &str) -> String {
    conn.write_all(request.as_bytes()).await.expect("write");
    read_until(conn, until).await
}

async fn read_until(conn: &mut TcpStream, until: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while !String::from_utf8_lossy(&got).contains(until) {
            match conn.read(&mut buf).await.expect("read") {
                0 => break,
                n => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("an answer within 5 s");
    String::from_utf8_lossy(&got).into_owned()
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    for _ in 0..100 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within 5 s");
}

#[tokio::test]
async fn a_stream_is_chunked_and_ends_when_its_client_leaves() {
    let running = start().await;
    let (conn, got) = ask(
        running.addr,
        "GET /stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ok\r\n\r\n",
        "data: two\n\n\r\n",
    )
    .await;
    let (head, body) = got.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let head = head.to_lowercase();
    assert!(
        head.contains("\r\ncontent-type: text/event-stream"),
        "{head}"
    );
    assert!(head.contains("\r\ntransfer-encoding: chunked"), "{head}");
    assert!(head.contains("\r\nconnection: close"), "{head}");
    assert!(
        head.contains("\r\nx-request-id: "),
        "the router's layers ran: {head}"
    );
    assert!(!head.contains("content-length"), "{head}");
    // Each event is one chunk: hex length, CRLF, the bytes, CRLF.
    let first = "data: peer 127.0.0.1\n\n";
    let second = "id: 2\ndata: two\n\n";
    assert_eq!(
        body,
        format!(
            "{:x}\r\n{first}\r\n{:x}\r\n{second}\r\n",
            first.len(),
            second.len()
        )
    );
    assert_eq!(running.open.load(Ordering::SeqCst), 1);

    drop(conn);
    eventually("the stream ending after its client left", || {
        running.open.load(Ordering::SeqCst) == 0
    })
    .await;
    running.shut_down().await;
}

#[tokio::test]
async fn everything_else_on_the_port_is_served_as_before() {
    let running = start().await;
    // Keep-alive: two requests on one connection, the first sent in pieces that begin like the
    // stream's path, so the listener has to wait before it can tell.
    let mut conn = TcpStream::connect(running.addr).await.expect("connect");
    conn.write_all(b"GET /str").await.expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    conn.write_all(b"eamed HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let got = read_until(&mut conn, "\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 404"), "{got}");
    let got = exchange(&mut conn, "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n", "plain").await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(!got.to_lowercase().contains("connection: close"), "{got}");

    // A stream's path with another method is hyper's, as before: 405.
    let response = reqwest::Client::new()
        .post(format!("http://{}{STREAM}", running.addr))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 405);
    running.shut_down().await;
}

#[tokio::test]
async fn refusals_and_bad_heads_get_complete_answers() {
    let running = start().await;
    // The router's own refusal: a complete response with its length, then the close.
    let (mut conn, got) = ask(
        running.addr,
        "GET /stream?x=1 HTTP/1.1\r\nHost: x\r\n\r\n",
        "no token",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{got}");
    assert!(got.contains("content-length: 8\r\n"), "{got}");
    assert_eq!(read_until(&mut conn, "never").await, "", "closed after it");

    // A head past 16 KiB.
    let mut conn = TcpStream::connect(running.addr).await.expect("connect");
    let huge = format!(
        "GET /stream HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(17 * 1024)
    );
    let got = exchange(&mut conn, &huge, "}").await;
    assert!(got.starts_with("HTTP/1.1 431"), "{got}");
    assert!(got.contains("application/problem+json"), "{got}");
    assert!(got.contains("too large"), "{got}");

    // A malformed header line.
    let (_, got) = ask(
        running.addr,
        "GET /stream HTTP/1.1\r\nBad Header: x\r\n\r\n",
        "}",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    assert!(got.contains("malformed"), "{got}");
    running.shut_down().await;
}

#[tokio::test]
async fn http_1_0_streams_end_with_the_connection_and_shutdown_ends_them() {
    let running = start().await;
    let (mut conn, got) = ask(
        running.addr,
        "GET /stream HTTP/1.0\r\nAuthorization: Bearer ok\r\n\r\n",
        "data: two\n\n",
    )
    .await;
    assert!(got.starts_with("HTTP/1.0 200 OK\r\n"), "{got}");
    assert!(!got.to_lowercase().contains("chunked"), "{got}");
    assert!(
        got.ends_with("\r\n\r\ndata: peer 127.0.0.1\n\nid: 2\ndata: two\n\n"),
        "{got}"
    );

    // Shutdown: the stream sends its last event, the connection closes, the server stops.
    running.shut_down().await;
    let rest = read_until(&mut conn, "never").await;
    assert_eq!(rest, "data: bye\n\n");
    tokio::time::timeout(Duration::from_secs(10), running.server)
        .await
        .expect("stops within the shutdown timeout")
        .expect("task")
        .expect("clean stop");
    assert_eq!(running.open.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped() {
    let running = start().await;
    let mut conn = TcpStream::connect(running.addr).await.expect("connect");
    conn.write_all(b"GET /stream HTTP/1.1\r\nAuthorization: Bearer ok\r\nX-Flood: 1\r\n\r\n")
        .await
        .expect("write");
    // It reads nothing: once the socket buffers are full, the write deadline (10 s) ends it.
    eventually("the flood starting", || {
        running.open.load(Ordering::SeqCst) == 1
    })
    .await;
    let dropped = async {
        while running.open.load(Ordering::SeqCst) != 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(
        leadflow_platform::long_lived::WRITE_TIMEOUT + Duration::from_secs(10),
        dropped,
    )
    .await
    .expect("a stalled client is disconnected after the write deadline");
    drop(conn);
    running.shut_down().await;
}

#[tokio::test]
async fn a_connection_still_sending_its_head_does_not_hold_up_shutdown() {
    let running = start().await;
    let mut idle = TcpStream::connect(running.addr).await.expect("connect");
    idle.write_all(b"GET /stream HTTP/1.1\r\nAuthori")
        .await
        .expect("write");
    // A bare-LF head is a whole head too (hyper takes it): answered, not left waiting.
    let (_, got) = ask(
        running.addr,
        "GET /stream HTTP/1.1\nHost: x\n\n",
        "no token",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 401"), "{got}");

    tokio::time::sleep(Duration::from_millis(200)).await;
    let began = std::time::Instant::now();
    running.shut_down().await;
    running.server.await.expect("task").expect("clean stop");
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "stopped in {:?}, not after the head timeout or the shutdown timeout",
        began.elapsed()
    );
    assert_eq!(read_until(&mut idle, "never").await, "", "closed");
}
