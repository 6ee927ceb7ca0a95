use std::{io::Write as _, process::Stdio, time::Duration};

use leadflow_events::Namespace;
use leadflow_testkit::eventually;
use serde_json::Value;

use crate::helpers::{Stack, get_json};

fn assert_design_shape(health: &Value, service: &str) {
    assert_eq!(health["service"], service, "{health}");
    assert!(health["version"].is_string());
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["urgency"], "low", "{health}");
    assert!(health["uptime_s"].is_u64());

    let db = &health["database"];
    assert_eq!(db["status"], "connected");
    assert!(db["error_type"].is_null() && db["error_message"].is_null());
    assert!(db["latency_ms"].as_f64().expect("latency_ms") >= 0.0);
    let pool = &db["pool"];
    for field in ["size", "idle", "in_use", "max"] {
        assert!(pool[field].is_u64(), "pool.{field} in {health}");
    }
    let utilization = pool["utilization"].as_f64().expect("utilization");
    assert!((0.0..=1.0).contains(&utilization));

    let breaker = &health["circuit_breaker"];
    assert_eq!(breaker["state"], "closed");
    assert_eq!(breaker["failures"], 0);
    assert!(breaker["opened_at"].is_null());

    assert_eq!(health["nats"]["status"], "connected");
    assert!(health["consumers"].is_array());
}

#[tokio::test]
async fn every_service_reports_the_designed_health_with_database_connected_and_breaker_closed() {
    let stack = Stack::start().await;
    let ns = Namespace::parse(&stack.namespace).expect("namespace");
    for (base, service) in stack
        .bases()
        .into_iter()
        .zip(["gateway", "scorer", "notifier"])
    {
        let (status, health) = get_json(&format!("{base}/health.json")).await;
        assert_eq!(status, 200);
        assert_design_shape(&health, service);

        let (ready, _) = get_json(&format!("{base}/readyz")).await;
        assert_eq!(ready, 200, "{service} ready");
        let (live, _) = get_json(&format!("{base}/livez")).await;
        assert_eq!(live, 200, "{service} live");

        let page = reqwest::get(format!("{base}/health")).await.expect("page");
        assert!(
            page.headers()["content-type"]
                .to_str()
                .expect("type")
                .starts_with("text/html")
        );
        let html = page.text().await.expect("html");
        assert!(
            html.contains(r#"http-equiv="refresh" content="5""#),
            "refreshes every 5 s"
        );
        assert!(html.contains("urgency: low"));
        assert!(html.contains("Circuit breaker: closed"));
        assert!(html.contains("pool utilization"));
        for external in ["src=\"http", "href=\"http", "@import", "<link"] {
            assert!(
                !html.contains(external),
                "{service} health page loads {external}"
            );
        }
    }

    let consumer_names = |health: &Value| -> Vec<String> {
        health["consumers"]
            .as_array()
            .expect("consumers")
            .iter()
            .map(|c| c["name"].as_str().expect("name").to_owned())
            .collect()
    };
    let (_, scorer) = get_json(&format!("{}/health.json", stack.scorer)).await;
    assert_eq!(
        consumer_names(&scorer),
        [
            ns.name("scorer_engagement"),
            ns.name("scorer_leads"),
            ns.name("scorer_notes")
        ]
    );
    let (_, notifier) = get_json(&format!("{}/health.json", stack.notifier)).await;
    assert_eq!(
        consumer_names(&notifier),
        [ns.name("notifier_assignments"), ns.name("notifier_scores")]
    );
    stack.stop().await;
}

#[tokio::test]
async fn promtool_accepts_every_services_metrics() {
    let stack = Stack::start().await;
    for base in stack.bases() {
        // Some traffic first, so labelled series and histograms are populated.
        for path in ["/health.json", "/readyz", "/does-not-exist"] {
            let _ = reqwest::get(format!("{base}{path}"))
                .await
                .expect("request");
        }
        let response = reqwest::get(format!("{base}/metrics"))
            .await
            .expect("metrics");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .expect("type")
                .starts_with("text/plain")
        );
        let text = response.text().await.expect("text");
        assert!(
            text.contains(r#"route="unmatched""#),
            "unknown paths share one series"
        );

        let mut promtool = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool is installed (Debian package `prometheus`; .ci/run installs it)");
        promtool
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write metrics");
        let output = promtool.wait_with_output().expect("promtool runs");
        assert!(
            output.status.success(),
            "promtool rejected {base}/metrics:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    stack.stop().await;
}

#[tokio::test]
async fn streams_lost_by_the_server_are_set_up_again() {
    let stack = Stack::start().await;
    let ns = Namespace::parse(&stack.namespace).expect("namespace");
    let client = async_nats::connect(stack.nats.url()).await.expect("nats");
    let jetstream = async_nats::jetstream::new(client);
    for stream in leadflow_events::Stream::ALL {
        jetstream
            .delete_stream(ns.stream_name(stream))
            .await
            .expect("stream deleted");
    }

    let durable = ns.name("scorer_engagement");
    eventually(
        Duration::from_secs(15),
        "the scorer to re-create its stream and consumer",
        || async {
            let stream = jetstream
                .get_stream(ns.stream_name(leadflow_events::Stream::Engagement))
                .await
                .ok()?;
            stream.consumer_info(&durable).await.ok().map(|_| ())
        },
    )
    .await;
    stack.stop().await;
}
