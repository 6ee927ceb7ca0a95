//! The tracking path when NATS or PostgreSQL is away.

use std::net::SocketAddr;

use leadflow_testkit::TcpProxy;
use serde_json::json;

use crate::helpers::TestApp;

/// A gateway whose NATS is unreachable (behind a proxy that is down; keep it alive), with a write
/// key and a lead named `first_name`: (proxy, app, key, lead id).
async fn without_nats(first_name: &str) -> (TcpProxy, TestApp, String, String) {
    let nats = TcpProxy::start(SocketAddr::from(([127, 0, 0, 1], 4222)), false).await;
    let nats_url = format!("nats://{}", nats.addr());
    let app =
        TestApp::spawn_degraded(&["--nats-url", &nats_url, "--nats-ack-timeout", "500ms"]).await;
    let admin = app.user("admin").await;
    let (status, key) = app
        .call(
            "POST",
            "/api/tracking-keys",
            Some(&admin.token),
            Some(json!({"name": "site"})),
        )
        .await;
    assert_eq!(status, 201);
    let key = key["key"].as_str().expect("key").to_owned();
    let lead = app
        .create_lead(&admin.token, json!({ "first_name": first_name }))
        .await;
    let lead_id = lead["id"].as_str().expect("id").to_owned();
    (nats, app, key, lead_id)
}

#[tokio::test]
async fn without_nats_events_wait_in_the_outbox_and_without_both_the_answer_is_503() {
    let (_nats, app, key, lead_id) = without_nats("Offline").await;
    let outbox_before = app.count("select count(*) from outbox").await;

    let response = app
        .client
        .post(app.url("/t/events"))
        .header("x-write-key", &key)
        .json(&json!({"events": [
            {"type": "pricing_view", "lead_id": lead_id},
            {"type": "page_view", "lead_id": lead_id},
            {"type": "page_view", "lead_id": lead_id, "properties": {"url": "/second"}},
        ]}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 202, "accepted even with NATS down");
    // Kept in the outbox, a row per subject holding all of its events.
    let rows: Vec<(String, i32)> = sqlx::query_as(
        "select subject, events from outbox where subject like 'engagement.%' order by subject",
    )
    .fetch_all(&app.pool)
    .await
    .expect("outbox");
    assert_eq!(
        rows,
        [
            ("engagement.page_view".to_owned(), 2),
            ("engagement.pricing_view".to_owned(), 1)
        ],
        "kept in the outbox"
    );
    assert_eq!(
        app.count("select count(*) from outbox").await,
        outbox_before + 2
    );

    // PostgreSQL away too: the sender is told to retry; the pixel still answers its GIF.
    let server = sqlx::PgPool::connect(&leadflow_testkit::server_url())
        .await
        .expect("server");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "alter database \"{}\" with allow_connections false",
        app.db_name()
    )))
    .execute(&server)
    .await
    .expect("refuse new connections");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "select pg_terminate_backend(pid) from pg_stat_activity where datname = '{}'",
        app.db_name()
    )))
    .execute(&server)
    .await
    .expect("cut the open ones");
    let response = app
        .client
        .post(app.url("/t/events"))
        .header("x-write-key", &key)
        .json(&json!({"events": [{"type": "page_view", "lead_id": lead_id}]}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 503);
    let pixel = app
        .client
        .get(app.url(&format!("/t/pixel.gif?k={key}&lead={lead_id}&e=email_open")))
        .send()
        .await
        .expect("pixel");
    assert_eq!(pixel.status(), 200);
    assert_eq!(pixel.bytes().await.expect("gif").len(), 43);
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("leadflow_tracking_events_total{")
                && l.contains("outcome=\"lost\"")
                && !l.ends_with(" 0")),
        "the loss is counted: {metrics}"
    );
    server.close().await;
    app.stop_degraded().await;
}

#[tokio::test]
async fn an_event_with_a_nul_character_is_refused_alone_and_its_batch_still_kept() {
    // NATS down: the batch goes to the outbox in one transaction, which a NUL would have failed
    // for every event in it (and a 202 over JetStream would have been dead-lettered later).
    let (_nats, app, key, lead_id) = without_nats("Nul").await;

    let response = app
        .client
        .post(app.url("/t/events"))
        .header("x-write-key", &key)
        .json(&json!({"events": [
            {"type": "page_view", "lead_id": lead_id, "properties": {"title": "a\u{0}b"}},
            {"type": "page_view", "anonymous_id": "v\u{0}1"},
            {"type": "pricing_view", "lead_id": lead_id},
        ]}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 202);
    let answer: serde_json::Value = response.json().await.expect("json");
    assert_eq!(answer["accepted"], 1, "{answer}");
    assert_eq!(answer["rejected"], 2, "{answer}");
    for (error, field) in answer["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .zip(["properties.title", "anonymous_id"])
    {
        let detail = error["detail"].as_str().expect("detail");
        assert!(detail.contains(field) && detail.contains("NUL"), "{detail}");
    }
    assert_eq!(
        app.count("select count(*) from outbox where subject = 'engagement.pricing_view'")
            .await,
        1,
        "the good event is kept"
    );

    // A pixel's page URL with a NUL is dropped; the open itself still counts.
    let response = app
        .client
        .get(app.url(&format!(
            "/t/pixel.gif?k={key}&lead={lead_id}&e=email_open&u=https://x.example/%00"
        )))
        .send()
        .await
        .expect("pixel");
    assert_eq!(response.status(), 200);
    assert_eq!(
        app.count("select count(*) from outbox where subject = 'engagement.email_open'")
            .await,
        1
    );
    app.stop_degraded().await;
}
