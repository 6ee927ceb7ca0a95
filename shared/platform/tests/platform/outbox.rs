use std::{collections::HashSet, net::SocketAddr, sync::Arc, time::Duration};

use leadflow_events::{Envelope, Namespace, Stream};
use leadflow_platform::{
    bus::Bus,
    config::DatabaseUrl,
    db,
    metrics::Metrics,
    outbox::{self, OutboxRelay, RelayConfig, enqueue},
};
use leadflow_testkit::{TcpProxy, TestDb, drop_namespace, eventually, nats_url, unique_namespace};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config;

async fn migrated_pool(test_db: &TestDb) -> sqlx::PgPool {
    let url: DatabaseUrl = test_db.url.parse().expect("url");
    db::migrate(&url).await.expect("migrate");
    sqlx::PgPool::connect(url.expose()).await.expect("connect")
}

async fn bus(nats: &str, namespace: &str) -> Arc<Bus> {
    let cfg = config("postgres://postgres@127.0.0.1/unused", nats, namespace, &[]);
    Arc::new(Bus::connect(&cfg.nats, "test").await.expect("client"))
}

/// A bus on the namespace's streams, once it is connected (the relay skips its round until then).
async fn connected_bus(namespace: &str) -> Arc<Bus> {
    let bus = bus(&nats_url(), namespace).await;
    bus.ensure_topology(&[]).await.expect("streams");
    eventually(Duration::from_secs(5), "NATS connected", || async {
        (bus.state() == leadflow_platform::bus::NatsState::Connected).then_some(())
    })
    .await;
    bus
}

async fn enqueue_many(pool: &sqlx::PgPool, n: usize) -> HashSet<Uuid> {
    let mut tx = pool.begin().await.expect("begin");
    let mut ids = HashSet::new();
    for i in 0..n {
        let event = Envelope::new("leads.created", "test")
            .expect("valid")
            .with_lead(Uuid::now_v7())
            .with_data(serde_json::json!({ "n": i }));
        enqueue(&mut tx, &event).await.expect("enqueue");
        ids.insert(event.id);
    }
    tx.commit().await.expect("commit");
    ids
}

/// Every message in the namespace's DOMAIN stream, as (Nats-Msg-Id, envelope id).
async fn stored_messages(namespace: &str) -> Vec<(String, Uuid)> {
    let client = async_nats::connect(nats_url()).await.expect("nats");
    let jetstream = async_nats::jetstream::new(client);
    let ns = Namespace::parse(namespace).expect("namespace");
    let mut stream = jetstream
        .get_stream(ns.stream_name(Stream::Domain))
        .await
        .expect("stream");
    let info = stream.info().await.expect("info");
    let (first, last, count) = (
        info.state.first_sequence,
        info.state.last_sequence,
        info.state.messages,
    );
    let mut messages = Vec::new();
    if count == 0 {
        return messages;
    }
    for seq in first..=last {
        let raw = stream.get_raw_message(seq).await.expect("message");
        let msg_id = raw
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.to_string())
            .unwrap_or_default();
        let envelope = Envelope::from_json(&raw.payload).expect("envelope");
        messages.push((msg_id, envelope.id));
    }
    messages
}

/// A relay with its own metrics, polling every 50 ms when idle.
fn relay(pool: &sqlx::PgPool, bus: Arc<Bus>, batch_size: i64) -> OutboxRelay {
    OutboxRelay::new(
        pool.clone(),
        bus,
        Arc::new(Metrics::new("test").expect("metrics")),
        RelayConfig {
            batch_size,
            idle_interval: Duration::from_millis(50),
        },
    )
}

async fn outbox_rows(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from outbox")
        .fetch_one(pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn the_relay_delivers_every_row_exactly_once_even_when_nats_was_unreachable_at_first() {
    crate::init_logging();
    let test_db = TestDb::empty().await;
    let pool = migrated_pool(&test_db).await;
    let namespace = unique_namespace();
    bus(&nats_url(), &namespace)
        .await
        .ensure_topology(&[])
        .await
        .expect("streams");

    let nats_addr: SocketAddr = "127.0.0.1:4222".parse().expect("addr");
    let proxy = TcpProxy::start(nats_addr, false).await;
    let relay_bus = bus(&format!("nats://{}", proxy.addr()), &namespace).await;
    let ids = enqueue_many(&pool, 40).await;

    let token = CancellationToken::new();
    let relay = relay(&pool, relay_bus, 16);
    let running = tokio::spawn(relay.run(token.clone()));

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        outbox_rows(&pool).await,
        40,
        "nothing may leave the outbox without an ack"
    );
    assert!(stored_messages(&namespace).await.is_empty());

    proxy.set_up(true).await;
    eventually(Duration::from_secs(30), "the outbox to drain", || async {
        (outbox_rows(&pool).await == 0).then_some(())
    })
    .await;

    let stored = stored_messages(&namespace).await;
    assert_eq!(stored.len(), 40, "each row once in JetStream");
    let stored_ids: HashSet<Uuid> = stored.iter().map(|(_, id)| *id).collect();
    assert_eq!(stored_ids, ids);
    for (msg_id, id) in &stored {
        assert_eq!(msg_id, &id.to_string(), "Nats-Msg-Id is the envelope id");
    }

    token.cancel();
    running.await.expect("relay stops on shutdown");
    drop_namespace(&namespace).await;
}

#[tokio::test]
async fn two_relays_share_one_outbox_without_publishing_a_row_twice() {
    let test_db = TestDb::empty().await;
    let pool = migrated_pool(&test_db).await;
    let namespace = unique_namespace();
    let shared_bus = bus(&nats_url(), &namespace).await;
    shared_bus.ensure_topology(&[]).await.expect("streams");
    let ids = enqueue_many(&pool, 300).await;

    let token = CancellationToken::new();
    let metrics = Arc::new(Metrics::new("test").expect("metrics"));
    let mut relays = Vec::new();
    for _ in 0..2 {
        let relay = OutboxRelay::new(
            pool.clone(),
            bus(&nats_url(), &namespace).await,
            metrics.clone(),
            RelayConfig {
                batch_size: 25,
                idle_interval: Duration::from_millis(20),
            },
        );
        relays.push(tokio::spawn(relay.run(token.clone())));
    }
    eventually(Duration::from_secs(30), "the outbox to drain", || async {
        (outbox_rows(&pool).await == 0).then_some(())
    })
    .await;
    token.cancel();
    for relay in relays {
        relay.await.expect("relay stops");
    }

    let stored = stored_messages(&namespace).await;
    let unique: HashSet<Uuid> = stored.iter().map(|(_, id)| *id).collect();
    assert_eq!(stored.len(), 300);
    assert_eq!(unique, ids);
    let published = metrics
        .events_published
        .with_label_values(&["DOMAIN"])
        .get();
    assert_eq!(published, 300);
    drop_namespace(&namespace).await;
}

#[tokio::test]
async fn a_row_jetstream_refuses_waits_with_its_own_back_off_and_does_not_hold_up_the_rest() {
    let test_db = TestDb::empty().await;
    let pool = migrated_pool(&test_db).await;
    let namespace = unique_namespace();
    let relay_bus = connected_bus(&namespace).await;

    // No stream captures this subject, so JetStream has no one to answer the publish.
    let orphan = Envelope::new("orphans.created", "test").expect("valid");
    let mut conn = pool.acquire().await.expect("conn");
    enqueue(&mut conn, &orphan).await.expect("enqueue");
    drop(conn);
    let ids = enqueue_many(&pool, 5).await;

    let relay = relay(&pool, relay_bus, 50);
    let delivered = relay
        .relay_once()
        .await
        .expect("partial success is progress");
    assert_eq!(delivered, 5);
    let stored: HashSet<Uuid> = stored_messages(&namespace)
        .await
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    assert_eq!(stored, ids);

    let (attempts, waiting): (i32, bool) =
        sqlx::query_as("select attempts, next_attempt_at > now() from outbox where id = $1")
            .bind(orphan.id)
            .fetch_one(&pool)
            .await
            .expect("the refused row is kept");
    assert_eq!(attempts, 1);
    assert!(waiting, "it waits before its next attempt");
    assert_eq!(relay.relay_once().await.expect("nothing due"), 0);
    drop_namespace(&namespace).await;
}

/// A scorer batch's events share rows (`enqueue_many`): each is still its own message, with its
/// own id, and of a row JetStream refuses, what it refused is kept and counted as pending.
#[tokio::test]
async fn events_enqueued_together_are_published_one_by_one_and_refused_ones_are_kept() {
    let test_db = TestDb::empty().await;
    let pool = migrated_pool(&test_db).await;
    let namespace = unique_namespace();
    let relay_bus = connected_bus(&namespace).await;

    let envelope = |subject: &str| {
        Envelope::new(subject, "test")
            .expect("valid")
            .with_lead(Uuid::now_v7())
    };
    let scores: Vec<Envelope> = (0..150).map(|_| envelope("scores.updated")).collect();
    // No stream captures this subject, so JetStream refuses these.
    let orphans: Vec<Envelope> = (0..3).map(|_| envelope("orphans.created")).collect();
    let mut tx = pool.begin().await.expect("begin");
    let together: Vec<Envelope> = scores.iter().chain(&orphans).cloned().collect();
    outbox::enqueue_many(&mut tx, &together)
        .await
        .expect("enqueue");
    tx.commit().await.expect("commit");
    assert_eq!(outbox_rows(&pool).await, 3, "150 in two rows, 3 in one");

    let relay = relay(&pool, relay_bus, 200);
    assert_eq!(relay.pending().await.expect("pending"), 153);
    let mut delivered = 0;
    while delivered < 150 {
        let n = relay.relay_once().await.expect("progress");
        assert!(n > 0, "stuck at {delivered}");
        delivered += n;
    }
    assert_eq!(delivered, 150);
    let stored = stored_messages(&namespace).await;
    assert_eq!(stored.len(), 150);
    for (msg_id, id) in &stored {
        assert_eq!(msg_id, &id.to_string(), "Nats-Msg-Id is the envelope id");
    }
    let stored_ids: HashSet<Uuid> = stored.iter().map(|(_, id)| *id).collect();
    assert_eq!(stored_ids, scores.iter().map(|e| e.id).collect());

    let (attempts, kept): (i32, serde_json::Value) =
        sqlx::query_as("select attempts, payload from outbox")
            .fetch_one(&pool)
            .await
            .expect("the refused row is kept");
    assert_eq!(attempts, 1);
    let kept: HashSet<String> = kept
        .as_array()
        .expect("still an array")
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(kept, orphans.iter().map(|e| e.id.to_string()).collect());
    assert_eq!(relay.pending().await.expect("pending"), 3);
    drop_namespace(&namespace).await;
}

#[tokio::test]
async fn the_relay_vacuums_the_outbox_after_five_thousand_deletions() {
    let test_db = TestDb::empty().await;
    let pool = migrated_pool(&test_db).await;
    let namespace = unique_namespace();
    let relay_bus = bus(&nats_url(), &namespace).await;
    relay_bus.ensure_topology(&[]).await.expect("streams");
    // Autovacuum would do it too, a minute later at best; off here, so only the relay can.
    sqlx::query("alter table outbox set (autovacuum_enabled = false)")
        .execute(&pool)
        .await
        .expect("autovacuum off");
    let vacuums = || async {
        sqlx::query_scalar::<_, i64>(
            "select vacuum_count from pg_stat_user_tables where relname = 'outbox'",
        )
        .fetch_one(&pool)
        .await
        .expect("stats")
    };
    assert_eq!(vacuums().await, 0);

    let token = CancellationToken::new();
    let relay = relay(&pool, relay_bus, 500);
    let running = tokio::spawn(relay.run(token.clone()));
    enqueue_many(&pool, 4_000).await;
    eventually(Duration::from_secs(60), "4,000 rows relayed", || async {
        (outbox_rows(&pool).await == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(vacuums().await, 0, "not before 5,000 deletions");

    enqueue_many(&pool, 1_000).await;
    eventually(Duration::from_secs(60), "the relay's vacuum", || async {
        (vacuums().await >= 1).then_some(())
    })
    .await;

    token.cancel();
    running.await.expect("relay stops on shutdown");
    drop_namespace(&namespace).await;
}
