//! Long-lived responses (server-sent events) without hyper's per-connection buffers.
//!
//! hyper gives every HTTP/1 connection an 8 KiB read buffer and an 8 KiB write buffer for its
//! whole life, and neither size can be set. For a request/response connection that is nothing; for
//! ten thousand SSE streams that sit idle between pushes it was 160 of the notifier's 245 MiB.
//!
//! [`LongLivedListener`] reads the start of each request itself. A `GET` for one of the configured
//! paths is answered here: the head is parsed (httparse), the request goes through the same
//! [`Router`] as every other request (so authentication, CORS, tracing and metrics are the same),
//! and the response is written straight to the socket, chunked, one response per connection. Any
//! other request is handed to hyper together with the bytes already read, so which way a
//! connection goes changes how much memory it holds, never what it is answered.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, HttpBody as _},
    extract::ConnectInfo,
    http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version, header},
    response::IntoResponse as _,
    serve::Listener,
};
use bytes::{Buf as _, Bytes, BytesMut};
use http_body_util::BodyExt as _;
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt as _;

use crate::problem::Problem;

/// Longest request head read before answering 431: the same bound hyper applies by default.
const MAX_HEAD: usize = 16 * 1024;
/// Most header lines a request may have.
const MAX_HEADERS: usize = 64;
/// A client has this long to send its request head; one that dawdles is disconnected.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// A write that takes longer than this means the client is not reading: it is disconnected rather
/// than allowed to hold the response (and what it is waiting to send) in memory.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections, serves `GET` requests for `paths` itself and yields every other
/// connection to `axum::serve`.
pub struct LongLivedListener {
    local: SocketAddr,
    others: mpsc::Receiver<(Prefixed, SocketAddr)>,
}

impl LongLivedListener {
    /// Starts accepting on `listener` until `shutdown`. Connections served here are tracked by
    /// `tracker`, so shutdown can wait for their last writes.
    pub fn start(
        listener: TcpListener,
        paths: &'static [&'static str],
        router: Router,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        // Hyper takes connections as fast as it can; a short queue is enough.
        let (tx, others) = mpsc::channel(64);
        tokio::spawn(accept(listener, paths, router, shutdown, tracker, tx));
        Ok(Self { local, others })
    }
}

impl Listener for LongLivedListener {
    type Io = Prefixed;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Prefixed, SocketAddr) {
        match self.others.recv().await {
            Some(connection) => connection,
            // The accept loop stopped (shutdown): `axum::serve` is being shut down too and stops
            // calling accept; until then there is nothing more to hand it.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

async fn accept(
    listener: TcpListener,
    paths: &'static [&'static str],
    router: Router,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    others: mpsc::Sender<(Prefixed, SocketAddr)>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning on it.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let others = others.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            // A connection that has not sent its request head by shutdown is closed, as hyper
            // closes idle ones: it must not hold shutdown for the head timeout.
            let sorted = tokio::select! {
                () = shutdown.cancelled() => return,
                sorted = tokio::time::timeout(HEAD_TIMEOUT, sort(stream, paths)) => sorted,
            };
            match sorted {
                Ok(Sorted::Here(stream, head)) => serve_one(stream, peer, head, router).await,
                Ok(Sorted::Elsewhere(connection)) => {
                    let _ = others.send((connection, peer)).await;
                }
                Ok(Sorted::Gone) | Err(_) => {}
            }
        });
    }
}

enum Sorted {
    /// One of the paths: the stream and the complete request head.
    Here(TcpStream, BytesMut),
    /// Anything else, with what has been read of it.
    Elsewhere(Prefixed),
    /// Closed, or broken, before it said anything useful.
    Gone,
}

/// Reads until the request is known to be for one of `paths` (then to the end of its head), or
/// known not to be.
async fn sort(mut stream: TcpStream, paths: &[&str]) -> Sorted {
    let mut read = BytesMut::with_capacity(1024);
    loop {
        match stream.read_buf(&mut read).await {
            Ok(0) | Err(_) if read.is_empty() => return Sorted::Gone,
            // Half a request and then EOF: hyper answers that as it always does.
            Ok(0) | Err(_) => return Sorted::Elsewhere(Prefixed::new(stream, read.freeze())),
            Ok(_) => {}
        }
        match request_for(&read, paths) {
            Target::Other => return Sorted::Elsewhere(Prefixed::new(stream, read.freeze())),
            Target::Ours if head_complete(&read) || read.len() >= MAX_HEAD => {
                return Sorted::Here(stream, read);
            }
            Target::Ours | Target::Undecided => {}
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Target {
    Ours,
    Other,
    Undecided,
}

/// Whether `read`, the start of a request, is `GET <one of paths>` (with or without a query).
fn request_for(read: &[u8], paths: &[&str]) -> Target {
    let Some(target) = prefix_of(read, b"GET ") else {
        return Target::Other;
    };
    let mut undecided = false;
    for path in paths {
        match prefix_of(target, path.as_bytes()) {
            None => {}
            Some([b' ' | b'?', ..]) => return Target::Ours,
            Some([]) => undecided = true,
            Some(_) => {}
        }
    }
    if undecided {
        Target::Undecided
    } else {
        Target::Other
    }
}

/// What follows `prefix` in `read`: `None` if `read` does not start with it, or with its start
/// (`Some` of nothing while `read` is still shorter than `prefix`).
fn prefix_of<'a>(read: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let n = read.len().min(prefix.len());
    (read[..n] == prefix[..n]).then(|| &read[n..])
}

/// Whether `read` holds a whole request head, by httparse's rules (bare LF line ends included, as
/// hyper accepts them), or one that can already be refused.
fn head_complete(read: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    !matches!(
        httparse::Request::new(&mut headers).parse(read),
        Ok(httparse::Status::Partial)
    )
}

/// Parses one request head into a request with an empty body, or the problem to refuse it with.
fn parse_head(read: &[u8]) -> Result<Request<Body>, Problem> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let too_large = |detail| {
        Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "too-large",
            detail,
        )
    };
    let malformed = |detail| Problem::new(StatusCode::BAD_REQUEST, "malformed-request", detail);
    let status = parsed.parse(read).map_err(|e| match e {
        httparse::Error::TooManyHeaders => too_large("The request has too many header fields."),
        _ => malformed("The request head is malformed."),
    })?;
    if status.is_partial() {
        return Err(too_large("The request head is too large."));
    }
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(parsed.path.unwrap_or("/"))
        .version(version)
        .body(Body::empty())
        .map_err(|_| malformed("The request target is malformed."))?;
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes());
        let value = HeaderValue::from_bytes(h.value);
        let (Ok(name), Ok(value)) = (name, value) else {
            return Err(malformed("A header field is malformed."));
        };
        request.headers_mut().append(name, value);
    }
    Ok(request)
}

/// Answers the one request on `stream` and closes it.
async fn serve_one(mut stream: TcpStream, peer: SocketAddr, head: BytesMut, router: Router) {
    let parsed = parse_head(&head);
    // Not kept for the life of the stream.
    drop(head);
    let response = match parsed {
        Ok(mut request) => {
            request.extensions_mut().insert(ConnectInfo(peer));
            let version = request.version();
            match router.oneshot(request).await {
                Ok(response) => (response, version),
                Err(infallible) => match infallible {},
            }
        }
        Err(problem) => (problem.into_response(), Version::HTTP_11),
    };
    let _ = write_response(&mut stream, response.0, response.1).await;
    let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.shutdown()).await;
}

/// Writes `response`: its head, then its body as it comes (chunked for HTTP/1.1, until the close
/// for HTTP/1.0), until the body ends, the client leaves, or a write times out.
async fn write_response(
    stream: &mut TcpStream,
    response: Response<Body>,
    version: Version,
) -> io::Result<()> {
    let (parts, body) = response.into_parts();
    let length = body.size_hint().exact();
    let chunked = length.is_none() && version == Version::HTTP_11;
    // Written and dropped before the body: a stream does not keep it.
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(
        format!(
            "{} {} {}\r\n",
            if version == Version::HTTP_10 {
                "HTTP/1.0"
            } else {
                "HTTP/1.1"
            },
            parts.status.as_str(),
            parts.status.canonical_reason().unwrap_or("")
        )
        .as_bytes(),
    );
    for (name, value) in &parts.headers {
        // Framing is this writer's business: one response, then the connection closes.
        if matches!(
            *name,
            header::CONNECTION | header::TRANSFER_ENCODING | header::CONTENT_LENGTH
        ) {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if let Some(length) = length {
        head.extend_from_slice(format!("content-length: {length}\r\n").as_bytes());
    } else if chunked {
        head.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    write(stream, &head).await?;
    drop(head);

    let (mut reader, mut writer) = stream.split();
    let mut body = std::pin::pin!(body);
    // Anything the client sends now is ignored; reading it is how its leaving is noticed while
    // the stream is idle.
    let mut scratch = [0u8; 64];
    loop {
        let frame = tokio::select! {
            // The body first: a client that half-closed after its request still gets a whole
            // response of known length.
            biased;
            frame = body.frame() => frame,
            read = reader.read(&mut scratch) => match read {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => continue,
            },
        };
        let Some(frame) = frame else { break };
        let Ok(data) = frame
            .map_err(|e| io::Error::other(e.to_string()))?
            .into_data()
        else {
            continue; // trailers: none are sent over HTTP/1 here
        };
        if data.is_empty() {
            continue;
        }
        if chunked {
            let mut chunk = Vec::with_capacity(data.len() + 12);
            chunk.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            chunk.extend_from_slice(&data);
            chunk.extend_from_slice(b"\r\n");
            write(&mut writer, &chunk).await?;
        } else {
            write(&mut writer, &data).await?;
        }
    }
    if chunked {
        write(&mut writer, b"0\r\n\r\n").await?;
    }
    Ok(())
}

async fn write<W: AsyncWrite + Unpin>(writer: &mut W, bytes: &[u8]) -> io::Result<()> {
    tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(bytes))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading"))?
}

/// A connection with the bytes already read from it put back in front, for hyper to read again.
pub struct Prefixed {
    read: Bytes,
    stream: TcpStream,
}

impl Prefixed {
    fn new(stream: TcpStream, read: Bytes) -> Self {
        Self { read, stream }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            if self.read.is_empty() {
                // Let go of the first read's buffer now rather than with the connection.
                self.read = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATHS: &[&str] = &["/api/notifications/stream"];

    #[test]
    fn sorts_requests_by_their_first_line() {
        let ours = b"GET /api/notifications/stream HTTP/1.1\r\n";
        assert_eq!(request_for(ours, PATHS), Target::Ours);
        assert_eq!(
            request_for(b"GET /api/notifications/stream?ticket=x HTTP/1.1", PATHS),
            Target::Ours
        );
        for n in 0..30 {
            assert_eq!(request_for(&ours[..n], PATHS), Target::Undecided, "{n}");
        }
        for other in [
            b"GET /api/notifications/streams HTTP/1.1".as_slice(),
            b"GET /api/notifications/ws HTTP/1.1",
            b"HEAD /api/notifications/stream HTTP/1.1",
            b"POST /api/notifications/stream HTTP/1.1",
            b"GET /livez HTTP/1.1",
            b"PRI * HTTP/2.0",
        ] {
            assert_eq!(request_for(other, PATHS), Target::Other);
        }
    }

    #[test]
    fn knows_when_a_head_is_complete() {
        assert!(head_complete(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(
            head_complete(b"GET /stream HTTP/1.1\nHost: x\n\n"),
            "bare LF"
        );
        assert!(!head_complete(b"GET /stream HTTP/1.1\r\nHost: x\r\n"));
        assert!(!head_complete(b"GET /stream HTTP/1.1\nHost: x\n"));
        assert!(
            head_complete(b"GET /stream HTTP/1.1\r\nBad Header: x\r\n"),
            "refusable now"
        );
    }

    #[test]
    fn parses_a_head_and_refuses_a_bad_one() {
        let request = parse_head(
            b"GET /api/notifications/stream?ticket=t HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 7\r\n\r\n",
        )
        .expect("a good head");
        assert_eq!(request.uri().query(), Some("ticket=t"));
        assert_eq!(request.headers()["last-event-id"], "7");
        assert_eq!(request.version(), Version::HTTP_11);

        let too_many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X-A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(
            parse_head(too_many.as_bytes())
                .map(|_| ())
                .expect_err("refused")
                .status,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE.as_u16()
        );
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n")
                .map(|_| ())
                .expect_err("refused")
                .status,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE.as_u16()
        );
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n")
                .map(|_| ())
                .expect_err("refused")
                .status,
            StatusCode::BAD_REQUEST.as_u16()
        );
    }
}
