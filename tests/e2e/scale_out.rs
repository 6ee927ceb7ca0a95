//! Scale-out on one machine: two gateways, two scorers and two notifiers, each its own process,
//! against one PostgreSQL and one (test-owned) NATS. Load spreads across the scorers; one instance of each is
//! killed (`SIGKILL`) half-way; every accepted event is stored and counted exactly once and every
//! assignment notifies its assignee exactly once.

use std::time::Duration;

use leadflow_testkit::{eventually, unique_namespace};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, seeded_db},
    processes::{NatsServer, Service},
};

/// `leadflow_events_consumed_total` of the scorer's engagement consumer.
async fn consumed(http: &reqwest::Client, scorer: &Service) -> f64 {
    let text = http
        .get(format!("{}/metrics", scorer.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .filter(|l| {
            l.starts_with("leadflow_events_consumed_total{") && l.contains("scorer_engagement")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn post(http: &reqwest::Client, gateway: &Service, key: &str, leads: &[Uuid]) -> u64 {
    let events: Vec<Value> = leads
        .iter()
        .map(|lead| json!({"id": Uuid::new_v4(), "type": "page_view", "lead_id": lead}))
        .collect();
    let response = http
        .post(format!("{}/t/events", gateway.base))
        .header("x-write-key", key)
        .json(&json!({"events": events}))
        .send()
        .await
        .expect("tracking post");
    assert_eq!(response.status().as_u16(), 202);
    let body: Value = response.json().await.expect("json");
    body["accepted"].as_u64().expect("accepted")
}

async fn call(
    http: &reqwest::Client,
    gateway: &Service,
    token: &str,
    path: &str,
    body: Value,
) -> Value {
    let response = http
        .post(format!("{}{path}", gateway.base))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("json");
    assert!((200..300).contains(&status), "{path}: {status} {body}");
    body
}

#[tokio::test]
async fn two_of_each_share_the_work_and_losing_one_of_each_loses_and_repeats_nothing() {
    let (test_db, pool, leads) = seeded_db(40).await;
    let namespace = unique_namespace();
    let nats = NatsServer::start().await;

    let mut gateways: Vec<Service> = (0..2)
        .map(|_| Service::start("gateway", &test_db.url, &nats.url(), &namespace, &[]))
        .collect();
    let mut scorers: Vec<Service> = (0..2)
        .map(|_| Service::start("scorer", &test_db.url, &nats.url(), &namespace, &[]))
        .collect();
    let mut notifiers: Vec<Service> = (0..2)
        .map(|_| Service::start("notifier", &test_db.url, &nats.url(), &namespace, &[]))
        .collect();
    let http = reqwest::Client::new();
    for instance in gateways.iter().chain(&scorers).chain(&notifiers) {
        instance.ready(&http).await;
    }

    let session: Value = http
        .post(format!("{}/api/auth/login", gateways[0].base))
        .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("session");
    let token = session["access_token"].as_str().expect("token").to_owned();
    let key = call(
        &http,
        &gateways[0],
        &token,
        "/api/tracking-keys",
        json!({"name": "site"}),
    )
    .await["key"]
        .as_str()
        .expect("key")
        .to_owned();
    let rep = call(
        &http,
        &gateways[0],
        &token,
        "/api/users",
        json!({"email": "rep@example.com", "name": "Rep", "password": "a-rep-password-123", "role": "sales_rep"}),
    )
    .await["id"]
        .as_str()
        .expect("user id")
        .to_owned();
    // The second gateway learns the new write key from the table within its reload interval.
    let mut accepted = eventually(
        Duration::from_secs(15),
        "the second gateway to know the key",
        || async {
            let response = http
                .post(format!("{}/t/events", gateways[1].base))
                .header("x-write-key", &key)
                .json(&json!({"events": [{"type": "page_view", "lead_id": leads[0]}]}))
                .send()
                .await
                .ok()?;
            (response.status().as_u16() == 202).then_some(1u64)
        },
    )
    .await;

    // First half: both gateways take batches, both scorers take messages.
    for round in 0..30 {
        accepted += post(&http, &gateways[round % 2], &key, &leads).await;
    }
    for lead in &leads[..5] {
        call(
            &http,
            &gateways[1],
            &token,
            "/api/assignments",
            json!({"lead_id": lead, "assignee_id": rep}),
        )
        .await;
    }
    // Both scorers pull from one durable, and whichever asks first takes what has arrived: a
    // scorer with a free lane can take a light load alone, so the load goes on until both have
    // taken some of it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (a, b) = (
            consumed(&http, &scorers[0]).await,
            consumed(&http, &scorers[1]).await,
        );
        if a > 0.0 && b > 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "both scorers to have done work: {a} and {b} events"
        );
        accepted += post(&http, &gateways[0], &key, &leads).await;
    }

    // Kill one of each in the middle of the load, then carry on through the survivors.
    for mut lost in [gateways.remove(0), scorers.remove(0), notifiers.remove(0)] {
        lost.kill();
    }
    for _ in 0..30 {
        accepted += post(&http, &gateways[0], &key, &leads).await;
    }
    for lead in &leads[5..10] {
        call(
            &http,
            &gateways[0],
            &token,
            "/api/assignments",
            json!({"lead_id": lead, "assignee_id": rep}),
        )
        .await;
    }

    // Stored once each and counted once each: every event is a page view of a known lead.
    let stored = eventually(
        Duration::from_secs(60),
        "every accepted event to be stored",
        || async {
            let stored: i64 = sqlx::query_scalar("select count(*) from lead_engagement_events")
                .fetch_one(&pool)
                .await
                .ok()?;
            (stored as u64 == accepted).then_some(stored)
        },
    )
    .await;
    let counted = eventually(
        Duration::from_secs(30),
        "every stored event to be counted",
        || async {
            let counted: i64 = sqlx::query_scalar(
                "select coalesce(sum(count), 0)::int8 from lead_signal_rows where signal = 'page_view'",
            )
            .fetch_one(&pool)
            .await
            .ok()?;
            (counted >= stored).then_some(counted)
        },
    )
    .await;
    assert_eq!(counted, stored, "an event was counted twice");
    assert_eq!(stored as u64, accepted);

    // An assignment the lost notifier had taken but not acked comes back after its ack wait (30 s),
    // to the survivor's next pull (a quiet loop polls once a second): the kill can fall just
    // after the first five assignments were posted.
    let notified = eventually(Duration::from_secs(60), "a notification per assignment", || async {
        let notified: i64 = sqlx::query_scalar(
            "select count(*) from notifications where user_id = $1::uuid and kind = 'assignment.created'",
        )
        .bind(&rep)
        .fetch_one(&pool)
        .await
        .ok()?;
        (notified >= 10).then_some(notified)
    })
    .await;
    assert_eq!(notified, 10, "an assignment notified its assignee twice");

    drop((gateways, scorers, notifiers));
    pool.close().await;
}
