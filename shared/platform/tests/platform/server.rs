use std::time::Duration;

use axum::{Router, routing::get};
use leadflow_platform::{Platform, Server};
use leadflow_testkit::{TestDb, drop_namespace, nats_url, unique_namespace};
use tokio_util::sync::CancellationToken;

use crate::config;

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_then_stops_accepting() {
    let test_db = TestDb::empty().await;
    let namespace = unique_namespace();
    let cfg = config(&test_db.url, &nats_url(), &namespace, &[]);
    let token = CancellationToken::new();
    let platform = Platform::start("test", &cfg, Vec::new(), token.clone())
        .await
        .expect("platform");
    let routes = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(600)).await;
            "finished"
        }),
    );
    let server = Server::bind(
        platform,
        "127.0.0.1:0".parse().expect("addr"),
        routes,
        "TEST_ADDR",
    )
    .await
    .expect("bind");
    let base = format!("http://{}", server.local_addr());
    let running = tokio::spawn(server.run_until_stopped());

    let client = reqwest::Client::new();
    let in_flight = tokio::spawn({
        let client = client.clone();
        let url = format!("{base}/slow");
        async move { client.get(url).send().await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    token.cancel();

    let response = in_flight
        .await
        .expect("task")
        .expect("in-flight request completes");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "finished");
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("stops within the shutdown timeout")
        .expect("task")
        .expect("clean stop");
    assert!(
        reqwest::get(format!("{base}/livez")).await.is_err(),
        "no longer accepting"
    );
    drop_namespace(&namespace).await;
}

#[tokio::test]
async fn consumer_lag_shows_in_health_and_metrics() {
    use leadflow_events::{Envelope, Namespace, Stream};
    use leadflow_platform::bus::ConsumerSpec;

    let test_db = TestDb::empty().await;
    let namespace = unique_namespace();
    let cfg = config(&test_db.url, &nats_url(), &namespace, &[]);
    let token = CancellationToken::new();
    // A durable consumer nobody reads: whatever is published waits there as lag.
    let spec = ConsumerSpec {
        name: "idle_reader",
        stream: Stream::Engagement,
        filter: "engagement.>",
    };
    let platform = Platform::start("test", &cfg, vec![spec], token.clone())
        .await
        .expect("platform");
    let server = Server::bind(
        platform,
        "127.0.0.1:0".parse().expect("addr"),
        Router::new(),
        "TEST_ADDR",
    )
    .await
    .expect("bind");
    let base = format!("http://{}", server.local_addr());
    let running = tokio::spawn(server.run_until_stopped());
    let ns = Namespace::parse(&namespace).expect("namespace");
    let durable = ns.name("idle_reader");

    let health_url = format!("{base}/health.json");
    leadflow_testkit::eventually(Duration::from_secs(10), "streams set up", || async {
        let health: serde_json::Value = reqwest::get(&health_url).await.ok()?.json().await.ok()?;
        (health["nats"]["streams_ready"] == true).then_some(())
    })
    .await;
    let jetstream =
        async_nats::jetstream::new(async_nats::connect(nats_url()).await.expect("nats"));
    for _ in 0..3 {
        let event = Envelope::new("engagement.page_view", "test").expect("valid");
        jetstream
            .publish(ns.subject(&event.kind), event.to_json().into())
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
    leadflow_testkit::eventually(Duration::from_secs(10), "a lag of 3 in health", || async {
        let health: serde_json::Value = reqwest::get(&health_url).await.ok()?.json().await.ok()?;
        health["consumers"]
            .as_array()?
            .iter()
            .any(|c| c["name"] == durable.as_str() && c["pending"] == 3)
            .then_some(())
    })
    .await;
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("leadflow_consumer_pending_messages{")
                && l.contains(&durable)
                && l.ends_with(" 3")),
        "{metrics}"
    );
    token.cancel();
    running.await.expect("task").expect("clean stop");
    drop_namespace(&namespace).await;
}
