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
