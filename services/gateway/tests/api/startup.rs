use std::{net::SocketAddr, time::Duration};

use clap::Parser as _;
use leadflow_gateway::GatewayConfig;
use leadflow_platform::{config::DatabaseUrl, db};
use leadflow_testkit::{
    TcpProxy, TestDb, closed_port, drop_namespace, eventually, unique_namespace,
};
use tokio_util::sync::CancellationToken;

use crate::helpers::{GatewayProcess, JWT_SECRET, gateway_command, get, health_once};

const PASSWORD: &str = "hunter2-very-secret";

#[tokio::test]
async fn with_an_unresolvable_database_host_it_starts_reports_dns_failure_and_never_shows_the_password()
 {
    let namespace = unique_namespace();
    let url = format!("postgres://leadflow:{PASSWORD}@db.nonexistent.invalid:5432/leadflow");
    let gateway = GatewayProcess::spawn(&[
        ("DATABASE_URL", &url),
        ("JWT_SECRET", JWT_SECRET),
        ("LEADFLOW_NAMESPACE", &namespace),
        ("RUST_LOG", "debug"),
    ]);
    let health = health_once(&gateway.base, |h| !h["database"]["error_type"].is_null()).await;
    assert_eq!(health["database"]["status"], "disconnected");
    assert_eq!(health["database"]["error_type"], "dns_resolution_failure");
    assert!(
        health["database"]["fix"]
            .as_str()
            .expect("fix")
            .contains("DNS")
    );
    assert_eq!(health["status"], "down");
    assert_eq!(health["urgency"], "critical");

    let (ready, reasons) = get(&format!("{}/readyz", gateway.base)).await;
    assert_eq!(ready, 503);
    assert!(reasons.contains("database unreachable"), "{reasons}");
    for path in ["/health", "/health.json", "/metrics", "/readyz"] {
        let (_, body) = get(&format!("{}{path}", gateway.base)).await;
        assert!(!body.contains(PASSWORD), "{path} shows the password");
    }
    let logs = gateway.stop().await;
    assert!(
        logs.contains("dns_resolution_failure"),
        "the cause is logged:\n{logs}"
    );
    assert!(!logs.contains(PASSWORD), "logs show the password:\n{logs}");
    drop_namespace(&namespace).await;
}

#[tokio::test]
async fn with_nothing_listening_on_the_database_port_it_reports_connection_refused() {
    let namespace = unique_namespace();
    let port = closed_port().await;
    let url = format!("postgres://leadflow:{PASSWORD}@127.0.0.1:{port}/leadflow");
    let gateway = GatewayProcess::spawn(&[
        ("DATABASE_URL", &url),
        ("JWT_SECRET", JWT_SECRET),
        ("LEADFLOW_NAMESPACE", &namespace),
    ]);
    let health = health_once(&gateway.base, |h| !h["database"]["error_type"].is_null()).await;
    assert_eq!(health["database"]["error_type"], "connection_refused");
    let (ready, _) = get(&format!("{}/readyz", gateway.base)).await;
    assert_eq!(ready, 503);
    let logs = gateway.stop().await;
    assert!(!logs.contains(PASSWORD));
    drop_namespace(&namespace).await;
}

#[tokio::test]
async fn a_missing_jwt_secret_stops_start_up_with_a_message_naming_it() {
    let output = gateway_command(&[("GATEWAY_ADDR", "127.0.0.1:0")])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("JWT_SECRET is not set"), "{stderr}");

    let output = gateway_command(&[("GATEWAY_ADDR", "127.0.0.1:0"), ("JWT_SECRET", "short")])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("at least 32 bytes"));
}

#[tokio::test]
async fn a_malformed_setting_stops_start_up_naming_the_variable_and_what_it_expects() {
    for (variable, value, expected) in [
        ("DB_POOL_MAX", "lots", "DB_POOL_MAX"),
        ("BREAKER_COOLDOWN", "soon", "BREAKER_COOLDOWN"),
        ("GATEWAY_ADDR", "localhost", "GATEWAY_ADDR"),
        ("LEADFLOW_NAMESPACE", "a.b", "LEADFLOW_NAMESPACE"),
        ("DATABASE_URL", "mysql://root:hunter2@db/x", "DATABASE_URL"),
    ] {
        let output = gateway_command(&[("JWT_SECRET", JWT_SECRET), (variable, value)])
            .output()
            .expect("runs");
        assert!(!output.status.success(), "{variable}={value} accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{variable}: {stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
}

fn config(database_url: &str, nats_url: &str, namespace: &str, extra: &[&str]) -> GatewayConfig {
    let mut args = vec![
        "gateway",
        "--gateway-addr",
        "127.0.0.1:0",
        "--jwt-secret",
        JWT_SECRET,
        "--database-url",
        database_url,
        "--nats-url",
        nats_url,
        "--leadflow-namespace",
        namespace,
        "--health-probe-interval",
        "200ms",
        "--db-acquire-timeout",
        "500ms",
        "--breaker-cooldown",
        "200ms",
    ];
    args.extend_from_slice(extra);
    GatewayConfig::try_parse_from(args).expect("config")
}

#[tokio::test]
async fn admin_credentials_in_the_environment_create_the_admin_at_start_up() {
    let test_db = TestDb::empty().await;
    db::migrate(&test_db.url.parse::<DatabaseUrl>().expect("url"))
        .await
        .expect("migrate");
    let namespace = unique_namespace();
    let cfg = config(
        &test_db.url,
        "nats://127.0.0.1:4222",
        &namespace,
        &[
            "--leadflow-admin-email",
            "Root@Example.com",
            "--leadflow-admin-password",
            "a-long-enough-password",
        ],
    );
    let token = CancellationToken::new();
    let server = leadflow_gateway::build(cfg, token.clone())
        .await
        .expect("builds");
    let running = tokio::spawn(server.run_until_stopped());

    let pool = sqlx::PgPool::connect(&test_db.url).await.expect("connect");
    let role: String = eventually(Duration::from_secs(10), "the admin row", || async {
        sqlx::query_scalar("select role from users where email = 'root@example.com'")
            .fetch_optional(&pool)
            .await
            .expect("query")
    })
    .await;
    assert_eq!(role, "admin");
    pool.close().await;
    token.cancel();
    running.await.expect("task").expect("clean stop");
    drop_namespace(&namespace).await;
}

#[tokio::test]
async fn it_recovers_by_itself_when_the_database_and_nats_come_back() {
    let test_db = TestDb::empty().await;
    db::migrate(&test_db.url.parse::<DatabaseUrl>().expect("url"))
        .await
        .expect("migrate");
    let pg_proxy = TcpProxy::start(SocketAddr::from(([127, 0, 0, 1], 5432)), false).await;
    let nats_proxy = TcpProxy::start(SocketAddr::from(([127, 0, 0, 1], 4222)), false).await;
    let namespace = unique_namespace();
    let cfg = config(
        &format!("postgres://postgres@{}/{}", pg_proxy.addr(), test_db.name),
        &format!("nats://{}", nats_proxy.addr()),
        &namespace,
        &[],
    );
    let token = CancellationToken::new();
    let server = leadflow_gateway::build(cfg, token.clone())
        .await
        .expect("starts with both down");
    let base = format!("http://{}", server.local_addr());
    let running = tokio::spawn(server.run_until_stopped());

    let down = health_once(&base, |h| !h["database"]["error_type"].is_null()).await;
    assert_eq!(down["database"]["status"], "disconnected");
    assert_ne!(down["nats"]["status"], "connected");
    let (ready, reasons) = get(&format!("{base}/readyz")).await;
    assert_eq!(ready, 503);
    assert!(reasons.contains("NATS unreachable"), "{reasons}");

    pg_proxy.set_up(true).await;
    nats_proxy.set_up(true).await;
    let up = health_once(&base, |h| {
        h["database"]["status"] == "connected"
            && h["nats"]["status"] == "connected"
            && h["nats"]["streams_ready"] == true
            && h["circuit_breaker"]["state"] == "closed"
    })
    .await;
    assert_eq!(up["status"], "ok");
    let (ready, _) = get(&format!("{base}/readyz")).await;
    assert_eq!(ready, 200);

    token.cancel();
    running.await.expect("task").expect("clean stop");
    drop_namespace(&namespace).await;
}

#[tokio::test]
async fn with_an_otlp_endpoint_spans_are_exported_over_grpc() {
    // A stand-in collector: it only has to see the exporter's HTTP/2 (gRPC) connection arrive.
    let collector = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", collector.local_addr().expect("addr"));
    let namespace = unique_namespace();
    let test_db = TestDb::empty().await;
    let gateway = GatewayProcess::spawn(&[
        ("DATABASE_URL", &test_db.url),
        ("JWT_SECRET", JWT_SECRET),
        ("LEADFLOW_NAMESPACE", &namespace),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]);
    let _ = health_once(&gateway.base, |h| h["service"] == "gateway").await;
    for _ in 0..3 {
        let _ = get(&format!("{}/", gateway.base)).await;
    }
    let (mut socket, _) = tokio::time::timeout(Duration::from_secs(15), collector.accept())
        .await
        .expect("the exporter connects to the collector")
        .expect("accept");
    let mut preface = [0u8; 24];
    tokio::io::AsyncReadExt::read_exact(&mut socket, &mut preface)
        .await
        .expect("preface");
    assert_eq!(&preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    drop(socket);
    let logs = gateway.stop().await;
    assert!(!logs.contains("panicked"), "{logs}");
    drop_namespace(&namespace).await;
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let namespace = unique_namespace();
    let port = closed_port().await;
    let gateway = GatewayProcess::spawn(&[
        (
            "DATABASE_URL",
            &format!("postgres://leadflow:{PASSWORD}@127.0.0.1:{port}/leadflow"),
        ),
        ("JWT_SECRET", JWT_SECRET),
        ("LEADFLOW_NAMESPACE", &namespace),
        ("LOG_FORMAT", "json"),
    ]);
    let _ = health_once(&gateway.base, |h| !h["database"]["error_type"].is_null()).await;
    let logs = gateway.stop().await;
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 2, "{logs}");
    for line in lines {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            entry["level"].is_string() && entry["timestamp"].is_string(),
            "{line}"
        );
    }
    assert!(!logs.contains(PASSWORD));
    drop_namespace(&namespace).await;
}
