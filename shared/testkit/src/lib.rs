//! Test helpers for real dependencies: a throw-away PostgreSQL database per test, a unique NATS
//! namespace per test, and a TCP proxy a test can cut to simulate an outage. Nothing is mocked.

use std::{net::SocketAddr, sync::Mutex};

use sqlx::{Connection, PgConnection};
use tokio::{
    net::{TcpListener, TcpSocket},
    task::JoinSet,
};
use uuid::Uuid;

/// The server tests use; `TEST_DATABASE_URL` overrides it (any database name: tests make their own).
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn nats_url() -> String {
    std::env::var("TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// Shows the services' logs when `LEADFLOW_TEST_LOG` holds a filter (`LEADFLOW_TEST_LOG=debug
/// cargo test … -- --nocapture`): tests start services in-process, and without a subscriber what
/// they log goes nowhere. Call it from a test harness's start; only the first call counts.
pub fn show_logs() {
    if let Ok(filter) = std::env::var("LEADFLOW_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// A fresh namespace, so a test's streams, consumers and subjects are its own.
pub fn unique_namespace() -> String {
    format!("t{}", Uuid::new_v4().simple())[..20].to_owned()
}

/// A database created for one test and dropped (with its connections) when the value is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// An empty database; migrations are the test's (or the service's) business.
    pub async fn empty() -> Self {
        let name = format!("leadflow_test_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&server_url())
            .await
            .expect("PostgreSQL must be reachable at TEST_DATABASE_URL or 127.0.0.1:5432");
        sqlx::query(sqlx::AssertSqlSafe(format!("create database \"{name}\"")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let _ = admin.close().await;
        let url = with_database(&server_url(), &name);
        Self { name, url }
    }

    /// A URL for a database that does not exist yet (to test that it gets created); dropped too.
    pub fn not_yet_created() -> Self {
        let name = format!("leadflow_test_{}", Uuid::new_v4().simple());
        let url = with_database(&server_url(), &name);
        Self { name, url }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on; use a thread of our own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(&server_url()).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "drop database if exists \"{name}\" with (force)"
                    )))
                    .execute(&mut admin)
                    .await;
                    let _ = admin.close().await;
                }
            });
        });
        let _ = dropped.join();
    }
}

fn with_database(server: &str, name: &str) -> String {
    let mut url = url::Url::parse(server).expect("TEST_DATABASE_URL is a URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// A TCP proxy in front of a real server, which a test can take down and bring back like a
/// server restart: while down its port refuses connections and the open ones are cut.
pub struct TcpProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    port: Mutex<Option<Port>>,
}

enum Port {
    /// Bound but not listening: connections are refused, and the port stays ours. Released, it
    /// could become the local port of some other test's outgoing connection before we came back.
    Held(TcpSocket),
    Forwarding(tokio::task::JoinHandle<()>),
}

impl TcpProxy {
    pub async fn start(upstream: SocketAddr, up: bool) -> Self {
        let socket = hold(SocketAddr::from(([127, 0, 0, 1], 0))).await;
        let addr = socket.local_addr().expect("proxy address");
        let proxy = Self {
            addr,
            upstream,
            port: Mutex::new(Some(Port::Held(socket))),
        };
        proxy.set_up(up).await;
        proxy
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn set_up(&self, up: bool) {
        let current = self.port.lock().expect("proxy state").take();
        let next = match (up, current) {
            (true, Some(Port::Held(socket))) => {
                let listener = socket.listen(1024).expect("listen");
                Port::Forwarding(tokio::spawn(forward(listener, self.upstream)))
            }
            (false, Some(Port::Forwarding(task))) => {
                // Aborting drops the listener (refusing new connections) and every open link,
                // once the task is gone.
                task.abort();
                let _ = task.await;
                Port::Held(hold(self.addr).await)
            }
            (_, Some(unchanged)) => unchanged,
            (_, None) => panic!("proxy state lost"),
        };
        *self.port.lock().expect("proxy state") = Some(next);
    }
}

/// A socket bound to `addr` and not listening. Connections the proxy accepted on the port may
/// take a moment to close; until they have, the port cannot be bound again.
async fn hold(addr: SocketAddr) -> TcpSocket {
    let mut attempts = 0;
    loop {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("reuseaddr");
        match socket.bind(addr) {
            Ok(()) => return socket,
            Err(_) if attempts < 50 => {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("bind the proxy port {addr}: {e}"),
        }
    }
}

async fn forward(listener: TcpListener, upstream: SocketAddr) {
    let mut connections = JoinSet::new();
    while let Ok((mut inbound, _)) = listener.accept().await {
        connections.spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Ok(mut port) = self.port.lock()
            && let Some(Port::Forwarding(task)) = port.take()
        {
            task.abort();
        }
    }
}

/// A local port with nothing listening on it (bound, then released).
pub async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    drop(listener);
    port
}

/// Deletes the streams (and with them the consumers) a test created under `namespace`.
pub async fn drop_namespace(namespace: &str) {
    let Ok(client) = async_nats::connect(nats_url()).await else {
        return;
    };
    let jetstream = async_nats::jetstream::new(client);
    let Ok(ns) = leadflow_events::Namespace::parse(namespace) else {
        return;
    };
    for stream in leadflow_events::Stream::ALL {
        let _ = jetstream.delete_stream(ns.stream_name(stream)).await;
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(timeout: std::time::Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
