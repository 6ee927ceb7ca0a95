use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use leadflow_platform::{
    config::DatabaseUrl,
    db::{self, BreakerState, Database, DbError, ErrorType},
    metrics::Metrics,
};
use leadflow_testkit::{TcpProxy, TestDb, closed_port, nats_url};

use crate::config;

fn database(url: &str, extra: &[&str]) -> Database {
    let cfg = config(url, &nats_url(), "", extra);
    let metrics = Arc::new(Metrics::new("test").expect("metrics"));
    Database::new(&cfg.database, &cfg.breaker, "test", metrics).expect("pool")
}

fn postgres_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5432))
}

#[tokio::test]
async fn an_unresolvable_host_is_a_dns_resolution_failure_and_the_password_stays_secret() {
    let db = database(
        "postgres://leadflow:hunter2-secret@db.nonexistent.invalid:5432/leadflow",
        &[],
    );
    let status = db.probe().await;
    assert!(!status.connected);
    assert_eq!(
        status.error_type,
        Some(ErrorType::DnsResolutionFailure),
        "{status:?}"
    );
    assert!(status.fix.is_some());
    let shown = serde_json::to_string(&status).expect("json");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[tokio::test]
async fn a_closed_port_is_connection_refused() {
    let port = closed_port().await;
    let db = database(
        &format!("postgres://postgres:pw@127.0.0.1:{port}/leadflow"),
        &[],
    );
    let status = db.probe().await;
    assert_eq!(
        status.error_type,
        Some(ErrorType::ConnectionRefused),
        "{status:?}"
    );
    assert!(status.fix.expect("fix").contains("Start PostgreSQL"));
}

#[tokio::test]
async fn a_missing_database_and_an_unknown_user_are_told_apart() {
    let missing = database(
        &format!(
            "postgres://postgres@127.0.0.1:5432/leadflow_missing_{}",
            uuid::Uuid::new_v4().simple()
        ),
        &[],
    );
    assert_eq!(
        missing.probe().await.error_type,
        Some(ErrorType::DatabaseMissing)
    );

    let stranger = database(
        &format!(
            "postgres://nobody_{}@127.0.0.1:5432/postgres",
            uuid::Uuid::new_v4().simple()
        ),
        &[],
    );
    assert_eq!(
        stranger.probe().await.error_type,
        Some(ErrorType::AuthFailed)
    );
}

/// Whether the pool's connections to `url` use TLS, as the server sees them.
async fn uses_tls(url: &str) -> bool {
    let db = database(url, &[]);
    let tls: bool = sqlx::query_scalar("select ssl from pg_stat_ssl where pid = pg_backend_pid()")
        .fetch_one(db.pool())
        .await
        .expect("pg_stat_ssl");
    db.close(Duration::from_secs(5)).await;
    tls
}

#[tokio::test]
async fn a_database_on_this_host_is_reached_without_tls_unless_the_url_asks_for_it() {
    let test_db = TestDb::empty().await;
    assert!(test_db.url.contains("127.0.0.1"), "{}", test_db.url);
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&test_db.url)
        .await
        .expect("connect");
    let offered: String = sqlx::query_scalar("show ssl")
        .fetch_one(&mut conn)
        .await
        .expect("show ssl");
    drop(conn);
    assert_eq!(
        offered, "on",
        "PostgreSQL here offers TLS, as Debian's does"
    );
    assert!(!uses_tls(&test_db.url).await, "loopback: no TLS");
    let separator = if test_db.url.contains('?') { '&' } else { '?' };
    assert!(
        uses_tls(&format!("{}{separator}sslmode=require", test_db.url)).await,
        "asked for: TLS"
    );
}

#[tokio::test]
async fn a_reachable_database_is_connected_with_latency_and_pool_figures() {
    let test_db = TestDb::empty().await;
    let db = database(&test_db.url, &["--db-pool-max", "4"]);
    let status = db.probe().await;
    assert!(status.connected, "{status:?}");
    assert!(status.error_type.is_none());
    assert!(status.latency_ms.expect("latency") >= 0.0);
    let pool = db.pool_stats();
    assert_eq!(pool.max, 4);
    assert!(pool.size >= 1 && pool.in_use <= pool.size);
    db.close(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn the_breaker_opens_after_the_configured_failures_fails_fast_and_closes_when_the_database_returns()
 {
    let test_db = TestDb::empty().await;
    let proxy = TcpProxy::start(postgres_addr(), false).await;
    let url = format!("postgres://postgres@{}/{}", proxy.addr(), test_db.name);
    let db = database(
        &url,
        &[
            "--breaker-failure-threshold",
            "2",
            "--breaker-cooldown",
            "300ms",
            "--db-acquire-timeout",
            "500ms",
        ],
    );
    let select_one =
        || db.guarded(|pool| async move { sqlx::query("select 1").execute(&pool).await });

    for attempt in 1..=2 {
        let err = select_one().await.expect_err("database is cut off");
        assert!(
            matches!(err, DbError::Query(_)) && err.is_unavailable(),
            "attempt {attempt}: {err:?}"
        );
    }
    assert_eq!(db.breaker().state(), BreakerState::Open);
    assert_eq!(db.breaker().snapshot().failures, 2);

    let started = Instant::now();
    let err = select_one().await.expect_err("open breaker rejects");
    assert!(matches!(err, DbError::Unavailable(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "rejection took {:?}",
        started.elapsed()
    );

    proxy.set_up(true).await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    select_one()
        .await
        .expect("trial call after the cooldown succeeds");
    assert_eq!(db.breaker().state(), BreakerState::Closed);
    assert_eq!(db.breaker().snapshot().failures, 0);
    db.close(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn the_health_probe_alone_recovers_the_breaker_and_the_status_without_traffic() {
    let test_db = TestDb::empty().await;
    let proxy = TcpProxy::start(postgres_addr(), false).await;
    let url = format!("postgres://postgres@{}/{}", proxy.addr(), test_db.name);
    let db = database(
        &url,
        &[
            "--breaker-failure-threshold",
            "1",
            "--breaker-cooldown",
            "200ms",
            "--db-acquire-timeout",
            "500ms",
        ],
    );
    assert!(!db.probe().await.connected);
    assert_eq!(db.breaker().state(), BreakerState::Open);

    proxy.set_up(true).await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    let status = db.probe().await;
    assert!(status.connected, "{status:?}");
    assert_eq!(db.breaker().state(), BreakerState::Closed);
    db.close(Duration::from_secs(5)).await;
}

const TABLES: &[&str] = &[
    "users",
    "refresh_tokens",
    "stream_tickets",
    "inventory_items",
    "leads",
    "lead_activities",
    "lead_notes",
    "assignments",
    "notifications",
    "lead_engagement_events",
    "anonymous_identities",
    "lead_scores",
    "lead_insights",
    "rescore_runs",
    "processed_events",
    "tracking_keys",
    "audit_log",
    "outbox",
    "webhooks",
    "webhook_deliveries",
    "webhook_attempts",
    "email_queue",
];

#[tokio::test]
async fn migrations_create_the_database_apply_to_it_and_are_idempotent() {
    let test_db = TestDb::not_yet_created();
    let url: DatabaseUrl = test_db.url.parse().expect("url");
    db::migrate(&url)
        .await
        .expect("first run creates and migrates");
    db::migrate(&url).await.expect("second run is a no-op");

    let pool = sqlx::PgPool::connect(url.expose()).await.expect("connect");
    let applied: i64 = sqlx::query_scalar("select count(*) from _sqlx_migrations where success")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(applied as usize, db::MIGRATOR.iter().count());
    let tables: Vec<String> = sqlx::query_scalar(
        "select table_name::text from information_schema.tables where table_schema = 'public'",
    )
    .fetch_all(&pool)
    .await
    .expect("tables");
    for table in TABLES {
        assert!(
            tables.iter().any(|t| t == table),
            "missing table {table}: {tables:?}"
        );
    }
    pool.close().await;
}

/// Migrations that build an index concurrently wait for every older snapshot in the database,
/// including one held by a second migrator waiting its turn. Taken with a waiting
/// `pg_advisory_lock` call (sqlx's own locking), the two deadlocked and PostgreSQL cancelled one
/// side; when that was the index build, its invalid index stayed behind and every later run
/// failed on it. Several processes migrating the same database at once (a migrate job and a
/// `leadflow up`) must all succeed.
#[tokio::test]
async fn migrators_started_together_all_succeed_and_leave_every_index_valid() {
    let test_db = TestDb::not_yet_created();
    let url: DatabaseUrl = test_db.url.parse().expect("url");
    db::ensure_database(&url).await.expect("database");
    let (first, second, third) =
        tokio::join!(db::migrate(&url), db::migrate(&url), db::migrate(&url));
    for (n, result) in [first, second, third].into_iter().enumerate() {
        if let Err(e) = result {
            panic!("migrator {n} failed: {e:#}");
        }
    }
    let pool = sqlx::PgPool::connect(url.expose()).await.expect("connect");
    let invalid: Vec<String> =
        sqlx::query_scalar("select indexrelid::regclass::text from pg_index where not indisvalid")
            .fetch_all(&pool)
            .await
            .expect("indexes");
    assert!(invalid.is_empty(), "invalid indexes: {invalid:?}");
    let applied: i64 = sqlx::query_scalar("select count(*) from _sqlx_migrations where success")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(applied as usize, db::MIGRATOR.iter().count());
    pool.close().await;
}

#[tokio::test]
async fn the_schema_enforces_what_the_design_promises() {
    let test_db = TestDb::empty().await;
    let url: DatabaseUrl = test_db.url.parse().expect("url");
    db::migrate(&url).await.expect("migrate");
    let pool = sqlx::PgPool::connect(url.expose()).await.expect("connect");

    let user: uuid::Uuid = sqlx::query_scalar(
        "insert into users (email, name, password_hash) values ('rep@example.com', 'Rep', 'x') returning id",
    )
    .fetch_one(&pool)
    .await
    .expect("user");
    let duplicate = sqlx::query(
        "insert into users (email, name, password_hash) values ('rep@example.com', 'Twin', 'x')",
    )
    .execute(&pool)
    .await
    .expect_err("e-mail is unique");
    assert_eq!(
        duplicate.as_database_error().and_then(|e| e.constraint()),
        Some("users_email_key")
    );

    let lead: uuid::Uuid = sqlx::query_scalar(
        "insert into leads (first_name, last_name, email, company) values ('Ada', 'Lovelace', 'ada@example.com', 'Analytical') returning id",
    )
    .fetch_one(&pool)
    .await
    .expect("lead");
    let bad_score = sqlx::query("update leads set score = 101 where id = $1")
        .bind(lead)
        .execute(&pool)
        .await;
    assert!(bad_score.is_err(), "score is bounded to 0-100");

    sqlx::query("insert into assignments (lead_id, assignee_id) values ($1, $2)")
        .bind(lead)
        .bind(user)
        .execute(&pool)
        .await
        .expect("first active assignment");
    let second = sqlx::query("insert into assignments (lead_id, assignee_id) values ($1, $2)")
        .bind(lead)
        .bind(user)
        .execute(&pool)
        .await;
    assert!(second.is_err(), "one active assignment per lead");

    let before: time::OffsetDateTime =
        sqlx::query_scalar("select updated_at from leads where id = $1")
            .bind(lead)
            .fetch_one(&pool)
            .await
            .expect("updated_at");
    let after: time::OffsetDateTime = sqlx::query_scalar(
        "update leads set status = 'contacted' where id = $1 returning updated_at",
    )
    .bind(lead)
    .fetch_one(&pool)
    .await
    .expect("update");
    assert!(after > before, "updated_at trigger");

    let found: i64 =
        sqlx::query_scalar("select count(*) from leads where 'lovelace' <% search_text")
            .fetch_one(&pool)
            .await
            .expect("trigram search");
    assert_eq!(found, 1);
    pool.close().await;
}

#[tokio::test]
async fn migrate_waits_for_a_database_that_is_still_starting() {
    let test_db = TestDb::not_yet_created();
    let proxy = TcpProxy::start(postgres_addr(), false).await;
    let url: DatabaseUrl = format!("postgres://postgres@{}/{}", proxy.addr(), test_db.name)
        .parse()
        .expect("url");
    let migrating = tokio::spawn(async move { db::migrate(&url).await });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !migrating.is_finished(),
        "still waiting while the server is unreachable"
    );
    proxy.set_up(true).await;
    tokio::time::timeout(Duration::from_secs(15), migrating)
        .await
        .expect("finishes once the server answers")
        .expect("task")
        .expect("migrated");
}

#[tokio::test]
async fn pooled_connections_have_nagle_off_and_keepalive_probes_on_both_sides() {
    // Through a proxy of our own, so the scan sees only this test's sockets to that port.
    let test_db = TestDb::empty().await;
    let proxy = TcpProxy::start(postgres_addr(), true).await;
    let url = test_db
        .url
        .replace("127.0.0.1:5432", &proxy.addr().to_string());
    assert!(url.contains(&proxy.addr().to_string()), "{url}");
    let db = database(&url, &[]);
    let mut conn = db.acquire().await.expect("connection");
    let server_side: (String, String, String) = sqlx::query_as(
        "select current_setting('tcp_keepalives_idle'), current_setting('tcp_keepalives_interval'),
                current_setting('tcp_user_timeout')",
    )
    .fetch_one(&mut *conn)
    .await
    .expect("settings");
    assert_eq!(
        server_side,
        ("10".into(), "5".into(), "30000".into()),
        "the server probes the client too"
    );

    // The pool's socket already has TCP_NODELAY, keepalive probes and a user timeout; a plain
    // socket to the same port has none of them.
    let plain = std::net::TcpStream::connect(proxy.addr()).expect("plain socket");
    assert_eq!(db::sockets::apply(proxy.addr().port()).expect("scan"), 1);
    drop((conn, plain));
    db.close(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_busy_pool_and_a_server_out_of_connection_slots_are_not_an_outage() {
    // A role allowed two connections: the pool can fill up, and the server refuses a third with
    // "too many connections" (53300), as a server at max_connections would.
    let test_db = TestDb::empty().await;
    let role = format!("busy_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(&test_db.url).await.expect("admin");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "create role {role} login connection limit 2"
    )))
    .execute(&admin)
    .await
    .expect("role");
    let mut url = url::Url::parse(&test_db.url).expect("url");
    url.set_username(&role).expect("user");

    for pool_max in ["2", "3"] {
        let db = database(url.as_str(), &["--db-pool-max", pool_max]);
        let held = [
            db.pool().acquire().await.expect("first"),
            db.pool().acquire().await.expect("second"),
        ];
        for _ in 0..6 {
            let status = db.probe().await;
            assert!(status.connected, "pool max {pool_max}: {status:?}");
        }
        assert_eq!(db.breaker().state(), BreakerState::Closed);
        assert_eq!(db.breaker().snapshot().failures, 0);
        drop(held);
        db.pool().close().await;
    }
    admin.close().await;
    let server = sqlx::PgPool::connect(&leadflow_testkit::server_url())
        .await
        .expect("server");
    drop(test_db);
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("drop role if exists {role}")))
        .execute(&server)
        .await;
    server.close().await;
}
