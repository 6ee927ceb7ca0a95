//! The notifier against this machine's real PostgreSQL and NATS, with the real gateway producing
//! the events.

mod email;
mod helpers;
mod webhooks;
mod xss;

use std::time::{Duration, Instant};

use helpers::{Auth, SseClient, TestApp, open_ws, ws_next};
use leadflow_events::Envelope;
use serde_json::json;
use uuid::Uuid;

/// The latency the issue asks for; tests about something else wait longer, so a busy machine
/// does not fail them.
const SECOND: Duration = Duration::from_secs(1);
const PUSH: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(700);

#[tokio::test]
async fn an_assignment_reaches_the_assignees_sse_and_websocket_within_a_second_and_nobody_else() {
    let app = TestApp::spawn().await;
    let manager = app.user("manager").await;
    let rep = app.user("sales_rep").await;
    let other = app.user("sales_rep").await;
    let base = &app.notifiers[0];
    let mut sse = SseClient::open(base, Auth::Bearer(&rep.token), None)
        .await
        .expect("stream opens");
    let mut ws = open_ws(base, Auth::Bearer(&rep.token), "")
        .await
        .expect("websocket opens");
    let mut bystander = SseClient::open(base, Auth::Bearer(&other.token), None)
        .await
        .expect("stream opens");

    let started = Instant::now();
    let (lead_id, assignment_id) = app.assign_new_lead(&manager, rep.id).await;
    let event = sse
        .next(SECOND)
        .await
        .expect("pushed over SSE within a second");
    let over_ws = ws_next(&mut ws, SECOND)
        .await
        .expect("pushed over WebSocket");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    assert_eq!(event.event.as_deref(), Some("notification"));
    assert_eq!(event.data["kind"], "assignment.created");
    assert_eq!(event.data["payload"]["lead_id"], json!(lead_id));
    assert_eq!(event.data["payload"]["assignment_id"], json!(assignment_id));
    assert_eq!(event.data["payload"]["assigned_by"], json!(manager.id));
    assert_eq!(
        event.id.as_deref(),
        Some(event.data["seq"].to_string().as_str())
    );
    assert_eq!(
        over_ws, event.data,
        "the WebSocket carries the same message"
    );

    assert!(
        bystander.next(QUIET).await.is_none(),
        "another rep hears nothing"
    );
    let stored = app
        .count(&format!(
            "select count(*) from notifications where user_id = '{}' and kind = 'assignment.created'",
            rep.id
        ))
        .await;
    assert_eq!(stored, 1);
    assert_eq!(app.count("select count(*) from notifications").await, 1);

    // Idle streams get heartbeats (every second in these tests). The WebSocket is read meanwhile,
    // so it answers the pings: a silent peer would be let go.
    let (over_sse, over_ws) = tokio::join!(
        sse.next(Duration::from_millis(2500)),
        ws_next(&mut ws, Duration::from_millis(2500))
    );
    assert!(over_sse.is_none() && over_ws.is_none());
    assert!(
        sse.heartbeats >= 1,
        "heartbeat comments keep idle streams open"
    );

    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let value = |name: &str, labels: &[&str]| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!("{name}{{")) && labels.iter().all(|label| l.contains(label))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    let connections = "leadflow_notification_connections";
    let delivered = "leadflow_notifications_delivered_total";
    assert_eq!(
        value(connections, &["transport=\"sse\""]),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(value(connections, &["transport=\"ws\""]), Some(1.0));
    assert_eq!(
        value(delivered, &["channel=\"sse\"", "outcome=\"pushed\""]),
        Some(1.0)
    );
    assert_eq!(
        value(delivered, &["channel=\"ws\"", "outcome=\"pushed\""]),
        Some(1.0)
    );
    assert_eq!(
        value("leadflow_notification_push_latency_seconds_count", &[]),
        Some(2.0)
    );
    let health: serde_json::Value = reqwest::get(format!("{base}/health.json"))
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    let consumers: Vec<_> = health["consumers"]
        .as_array()
        .expect("consumers")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        consumers
            .iter()
            .any(|c| c.ends_with("notifier_assignments")),
        "{health}"
    );
    assert!(
        consumers.iter().any(|c| c.ends_with("notifier_scores")),
        "{health}"
    );
    assert_eq!(health["smtp"]["configured"], false, "{health}");
    assert_eq!(health["webhooks"]["pending"], 0, "{health}");
    app.stop().await;
}

#[tokio::test]
async fn a_transfer_tells_both_reps_and_a_completion_tells_the_assigner() {
    let app = TestApp::spawn().await;
    let manager = app.user("manager").await;
    let (from, to) = (app.user("sales_rep").await, app.user("sales_rep").await);
    let base = &app.notifiers[0];
    let (_, assignment) = app.assign_new_lead(&manager, from.id).await;
    let mut old = SseClient::open(base, Auth::Bearer(&from.token), Some(0))
        .await
        .expect("open");
    assert_eq!(
        old.next(PUSH).await.expect("missed one").data["kind"],
        "assignment.created"
    );
    let mut new = SseClient::open(base, Auth::Bearer(&to.token), None)
        .await
        .expect("open");
    let mut boss = SseClient::open(base, Auth::Bearer(&manager.token), None)
        .await
        .expect("open");

    let (status, next) = app
        .call(
            "POST",
            &format!("/api/assignments/{assignment}/transfer"),
            &manager.token,
            Some(json!({"assignee_id": to.id})),
        )
        .await;
    assert_eq!(status, 201, "{next}");
    assert_eq!(
        new.next(PUSH).await.expect("new assignee told").data["kind"],
        "assignment.transferred_in"
    );
    assert_eq!(
        old.next(PUSH).await.expect("old assignee told").data["kind"],
        "assignment.transferred_out"
    );
    assert!(
        boss.next(QUIET).await.is_none(),
        "the manager did it and is not told"
    );

    let (status, body) = app
        .call(
            "POST",
            &format!(
                "/api/assignments/{}/complete",
                next["id"].as_str().expect("id")
            ),
            &to.token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let done = boss.next(PUSH).await.expect("assigner told");
    assert_eq!(done.data["kind"], "assignment.completed");
    assert_eq!(done.data["payload"]["completed_by"], json!(to.id));
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_reconnects_with_last_event_id_gets_exactly_what_it_missed() {
    let app = TestApp::spawn().await;
    let manager = app.user("manager").await;
    let rep = app.user("sales_rep").await;
    let base = &app.notifiers[0];
    let mut sse = SseClient::open(base, Auth::Bearer(&rep.token), None)
        .await
        .expect("open");
    app.assign_new_lead(&manager, rep.id).await;
    let first = sse.next(PUSH).await.expect("first");
    let seen: i64 = first.id.as_deref().expect("id").parse().expect("seq");
    drop(sse);

    let mut missed = Vec::new();
    for _ in 0..3 {
        missed.push(app.assign_new_lead(&manager, rep.id).await.0);
    }
    let query = format!(
        "select count(*) from notifications where user_id = '{}'",
        rep.id
    );
    app.count_reaches(&query, 4, Duration::from_secs(5), "notifications written")
        .await;

    let mut resumed = SseClient::open(base, Auth::Bearer(&rep.token), Some(seen))
        .await
        .expect("open");
    let mut got = Vec::new();
    while let Some(event) = resumed.next(QUIET).await {
        got.push(event);
    }
    let leads: Vec<_> = got
        .iter()
        .map(|e| e.data["payload"]["lead_id"].clone())
        .collect();
    assert_eq!(
        leads,
        missed.iter().map(|l| json!(l)).collect::<Vec<_>>(),
        "exactly the missed ones, in order"
    );
    assert!(
        got.iter()
            .all(|e| e.data["seq"].as_i64().expect("seq") > seen)
    );

    // The resumed stream is live too, and the WebSocket resumes the same way.
    let (lead, _) = app.assign_new_lead(&manager, rep.id).await;
    assert_eq!(
        resumed.next(PUSH).await.expect("live").data["payload"]["lead_id"],
        json!(lead)
    );
    let last_missed = got[1].data["seq"].as_i64().expect("seq");
    let mut ws = open_ws(
        base,
        Auth::Bearer(&rep.token),
        &format!("last_event_id={last_missed}"),
    )
    .await
    .expect("open");
    let a = ws_next(&mut ws, SECOND).await.expect("third missed");
    let b = ws_next(&mut ws, SECOND).await.expect("the live one");
    assert_eq!(a["payload"]["lead_id"], json!(missed[2]));
    assert_eq!(b["payload"]["lead_id"], json!(lead));
    assert!(ws_next(&mut ws, QUIET).await.is_none());
    app.stop().await;
}

#[tokio::test]
async fn the_same_event_delivered_twice_makes_one_notification_and_one_push() {
    let app = TestApp::spawn().await;
    let rep = app.user("sales_rep").await;
    let mut sse = SseClient::open(&app.notifiers[0], Auth::Bearer(&rep.token), None)
        .await
        .expect("open");
    let event = Envelope::new("assignments.created", "gateway")
        .expect("event")
        .with_lead(Uuid::new_v4())
        .with_data(json!({"assignment_id": Uuid::new_v4(), "assignee_id": rep.id, "assigned_by": Uuid::new_v4()}));
    // Different message ids: JetStream stores both, as after a redelivery past its window.
    app.publish(&event, "first").await;
    app.publish(&event, "second").await;

    assert_eq!(
        sse.next(PUSH).await.expect("pushed").data["payload"]["event_id"],
        json!(event.id)
    );
    assert!(sse.next(QUIET).await.is_none(), "pushed once");
    leadflow_testkit::eventually(
        Duration::from_secs(5),
        "both deliveries consumed",
        || async {
            let info = app
                .jetstream
                .get_stream(app.ns.stream_name(leadflow_events::Stream::Domain))
                .await
                .ok()?
                .consumer_info(app.ns.name("notifier_assignments"))
                .await
                .ok()?;
            (info.num_pending == 0
                && info.num_ack_pending == 0
                && info.delivered.stream_sequence >= 2)
                .then_some(())
        },
    )
    .await;
    assert_eq!(app.count("select count(*) from notifications").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_lead_crossing_into_hot_notifies_its_owner_and_staying_hot_does_not() {
    let app = TestApp::spawn().await;
    let owner = app.user("sales_rep").await;
    let mut sse = SseClient::open(&app.notifiers[0], Auth::Bearer(&owner.token), None)
        .await
        .expect("open");
    let lead = Uuid::new_v4();
    let scored = |old: &str, new: &str, score: i32| {
        Envelope::new("scores.updated", "scorer")
            .expect("event")
            .with_lead(lead)
            .with_data(json!({"score_id": Uuid::new_v4(), "owner_id": owner.id, "old_score": score - 5,
                              "new_score": score, "old_tier": old, "new_tier": new, "trigger_event_id": Uuid::new_v4()}))
    };
    let rise = scored("warm", "hot", 72);
    app.publish(&rise, &rise.id.to_string()).await;
    let hot = sse.next(PUSH).await.expect("owner told");
    assert_eq!(hot.data["kind"], "lead.hot");
    assert_eq!(hot.data["payload"]["lead_id"], json!(lead));
    assert_eq!(hot.data["payload"]["new_score"], 72);

    for (old, new, score) in [("hot", "hot", 80), ("hot", "hot", 90)] {
        let again = scored(old, new, score);
        app.publish(&again, &again.id.to_string()).await;
    }
    assert!(sse.next(QUIET).await.is_none(), "staying Hot is not news");
    assert_eq!(app.count("select count(*) from notifications").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn managers_hear_of_hot_leads_when_configured() {
    let app = TestApp::spawn_with(1, &["--notify-managers-on-hot"]).await;
    let owner = app.user("sales_rep").await;
    let manager = app.user("manager").await;
    let mut boss = SseClient::open(&app.notifiers[0], Auth::Bearer(&manager.token), None)
        .await
        .expect("open");
    let rise = Envelope::new("scores.updated", "scorer")
        .expect("event")
        .with_lead(Uuid::new_v4())
        .with_data(
            json!({"owner_id": owner.id, "old_tier": "warm", "new_tier": "hot", "new_score": 75}),
        );
    app.publish(&rise, &rise.id.to_string()).await;
    assert_eq!(
        boss.next(PUSH).await.expect("manager told").data["kind"],
        "lead.hot"
    );
    assert_eq!(app.count("select count(*) from notifications").await, 2);
    app.stop().await;
}

#[tokio::test]
async fn with_two_notifier_processes_a_user_on_either_receives_each_notification_once() {
    let app = TestApp::spawn_with(2, &[]).await;
    let manager = app.user("manager").await;
    let rep = app.user("sales_rep").await;
    let mut on_first = SseClient::open(&app.notifiers[0], Auth::Bearer(&rep.token), None)
        .await
        .expect("open");
    let mut on_second = open_ws(&app.notifiers[1], Auth::Bearer(&rep.token), "")
        .await
        .expect("open");

    let mut leads = Vec::new();
    for _ in 0..4 {
        leads.push(json!(app.assign_new_lead(&manager, rep.id).await.0));
    }
    let mut via_first = Vec::new();
    while let Some(e) = on_first.next(QUIET).await {
        via_first.push(e.data["payload"]["lead_id"].clone());
    }
    let mut via_second = Vec::new();
    while let Some(e) = ws_next(&mut on_second, QUIET).await {
        via_second.push(e["payload"]["lead_id"].clone());
    }
    via_first.sort_by_key(|v| v.to_string());
    via_second.sort_by_key(|v| v.to_string());
    leads.sort_by_key(|v| v.to_string());
    assert_eq!(via_first, leads, "each once on the first process");
    assert_eq!(via_second, leads, "each once on the second process");
    assert_eq!(app.count("select count(*) from notifications").await, 4);

    // Shutting a process down ends its streams, so clients reconnect elsewhere.
    let mut ws_on_first = open_ws(&app.notifiers[0], Auth::Bearer(&rep.token), "")
        .await
        .expect("open");
    app.stop_notifier(0);
    assert!(
        on_first.ended(Duration::from_secs(5)).await,
        "the stream ends on shutdown"
    );
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(message) = futures::StreamExt::next(&mut ws_on_first).await {
            if let Ok(tokio_tungstenite::tungstenite::Message::Close(frame)) = message {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    })
    .await
    .expect("closed in time");
    assert_eq!(closed, Some(1001), "a WebSocket gets Close \"going away\"");
    app.stop().await;
}

#[tokio::test]
async fn anonymous_expired_and_forged_tokens_revoked_sessions_and_used_tickets_are_refused() {
    let app = TestApp::spawn().await;
    let rep = app.user("sales_rep").await;
    let base = &app.notifiers[0];

    let (status, problem) = SseClient::open(base, Auth::None, None)
        .await
        .err()
        .expect("refused");
    assert_eq!(status, 401);
    assert_eq!(problem["status"], 401);
    assert_eq!(open_ws(base, Auth::None, "").await.err(), Some(401));

    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"iss": "leadflow", "aud": "leadflow-api", "sub": rep.id, "role": "sales_rep",
                "iat": now - 3600, "nbf": now - 3600, "exp": now - 600, "jti": Uuid::new_v4()}),
        &jsonwebtoken::EncodingKey::from_secret(helpers::JWT_SECRET.as_bytes()),
    )
    .expect("encode");
    assert_eq!(
        SseClient::open(base, Auth::Bearer(&expired), None)
            .await
            .err()
            .map(|e| e.0),
        Some(401)
    );
    let forged = format!("{}x", rep.token);
    assert_eq!(
        SseClient::open(base, Auth::Bearer(&forged), None)
            .await
            .err()
            .map(|e| e.0),
        Some(401)
    );
    // An access token in the URL is not a ticket.
    assert_eq!(
        SseClient::open(base, Auth::Ticket(&rep.token), None)
            .await
            .err()
            .map(|e| e.0),
        Some(401)
    );

    let ticket = app.ticket(&rep).await;
    let stored: i64 = app
        .count(&format!(
            "select count(*) from stream_tickets where user_id = '{}' and used_at is null",
            rep.id
        ))
        .await;
    assert_eq!(stored, 1);
    SseClient::open(base, Auth::Ticket(&ticket), None)
        .await
        .expect("a fresh ticket opens a stream");
    assert_eq!(
        SseClient::open(base, Auth::Ticket(&ticket), None)
            .await
            .err()
            .map(|e| e.0),
        Some(401),
        "single use"
    );
    let ws_ticket = app.ticket(&rep).await;
    open_ws(base, Auth::Ticket(&ws_ticket), "")
        .await
        .expect("tickets open WebSockets too");
    assert_eq!(
        open_ws(base, Auth::Ticket(&ws_ticket), "").await.err(),
        Some(401)
    );
    let (status, _) = app
        .client
        .post(format!("{}/api/notifications/ticket", app.gateway))
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .expect("request");
    assert_eq!(status, 401, "tickets need a signed-in user");

    // Deactivated: the token and an unused ticket stop working at once.
    let unused = app.ticket(&rep).await;
    sqlx::query("update users set active = false, sessions_valid_after = now() + interval '1 second' where id = $1")
        .bind(rep.id)
        .execute(&app.pool)
        .await
        .expect("deactivate");
    assert_eq!(
        SseClient::open(base, Auth::Bearer(&rep.token), None)
            .await
            .err()
            .map(|e| e.0),
        Some(401)
    );
    assert_eq!(
        SseClient::open(base, Auth::Ticket(&unused), None)
            .await
            .err()
            .map(|e| e.0),
        Some(401)
    );
    app.stop().await;
}

#[tokio::test]
async fn a_users_notifications_commit_in_seq_order_so_resuming_cannot_skip_one() {
    let app = TestApp::spawn().await;
    let user = app.user("sales_rep").await;
    let planned = |n: u32| leadflow_notifier::recipients::Planned {
        user_id: user.id,
        kind: "assignment.created",
        payload: json!({"n": n}),
    };
    // The first transaction takes its seq and stays open.
    let mut first = app.pool.begin().await.expect("tx");
    leadflow_notifier::store::lock_recipients(&mut first, &mut vec![user.id])
        .await
        .expect("lock");
    let first_rows = leadflow_notifier::store::insert(&mut first, Uuid::now_v7(), &[planned(1)])
        .await
        .expect("insert");

    // A second one for the same user must wait for it rather than commit a later seq first.
    let pool = app.pool.clone();
    let second_user = user.id;
    let second = tokio::spawn(async move {
        let mut tx = pool.begin().await.expect("tx");
        leadflow_notifier::store::lock_recipients(&mut tx, &mut vec![second_user])
            .await
            .expect("lock");
        let rows = leadflow_notifier::store::insert(
            &mut tx,
            Uuid::now_v7(),
            &[leadflow_notifier::recipients::Planned {
                user_id: second_user,
                kind: "assignment.created",
                payload: json!({"n": 2}),
            }],
        )
        .await
        .expect("insert");
        tx.commit().await.expect("commit");
        rows[0].seq
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "the second transaction waits for the first"
    );
    assert_eq!(
        app.count(&format!(
            "select count(*) from notifications where user_id = '{}'",
            user.id
        ))
        .await,
        0
    );
    first.commit().await.expect("commit");
    let second_seq = second.await.expect("second");
    assert!(second_seq > first_rows[0].seq);
    app.stop().await;
}

#[tokio::test]
async fn an_event_the_database_refuses_is_dead_lettered_without_holding_back_its_batch() {
    let app = TestApp::spawn_with(1, &["--nats-max-deliver", "2"]).await;
    let rep = app.user("sales_rep").await;
    let mut sse = SseClient::open(&app.notifiers[0], Auth::Bearer(&rep.token), None)
        .await
        .expect("open");
    let assignment = |note: &str| {
        Envelope::new("assignments.created", "gateway")
            .expect("event")
            .with_lead(Uuid::new_v4())
            .with_data(json!({"assignee_id": rep.id, "assigned_by": Uuid::new_v4(), "note": note}))
    };
    // PostgreSQL's jsonb cannot hold a NUL character: this one fails in the database every time.
    let poison = assignment("bad \u{0000} note");
    let good = assignment("fine");
    app.publish(&poison, "poison").await;
    app.publish(&good, "good").await;

    let pushed = sse
        .next(Duration::from_secs(5))
        .await
        .expect("the good one");
    assert_eq!(pushed.data["payload"]["event_id"], json!(good.id));
    let dead = app.ns.stream_name(leadflow_events::Stream::DeadLetter);
    leadflow_testkit::eventually(
        Duration::from_secs(10),
        "the poison dead-lettered",
        || async {
            let mut stream = app.jetstream.get_stream(&dead).await.ok()?;
            (stream.info().await.ok()?.state.messages == 1).then_some(())
        },
    )
    .await;
    assert_eq!(app.count("select count(*) from notifications").await, 1);
    assert!(sse.next(QUIET).await.is_none());
    app.stop().await;
}

#[tokio::test]
async fn one_user_cannot_open_streams_without_bound() {
    let app = TestApp::spawn_with(1, &["--notify-max-connections-per-user", "2"]).await;
    let rep = app.user("sales_rep").await;
    let other = app.user("sales_rep").await;
    let base = &app.notifiers[0];
    let _a = SseClient::open(base, Auth::Bearer(&rep.token), None)
        .await
        .expect("first");
    let _b = open_ws(base, Auth::Bearer(&rep.token), "")
        .await
        .expect("second");
    let (status, problem) = SseClient::open(base, Auth::Bearer(&rep.token), None)
        .await
        .err()
        .expect("third refused");
    assert_eq!((status, problem["status"].clone()), (429, json!(429)));
    assert_eq!(
        open_ws(base, Auth::Bearer(&rep.token), "").await.err(),
        Some(429)
    );
    SseClient::open(base, Auth::Bearer(&other.token), None)
        .await
        .expect("other users are not affected");
    app.stop().await;
}

#[tokio::test]
async fn open_streams_close_when_the_users_access_ends() {
    let app = TestApp::spawn_with(1, &["--notify-recheck", "500ms"]).await;
    let rep = app.user("sales_rep").await;
    let base = &app.notifiers[0];
    let mut sse = SseClient::open(base, Auth::Bearer(&rep.token), None)
        .await
        .expect("open");
    let ticket = app.ticket(&rep).await;
    let mut ws = open_ws(base, Auth::Ticket(&ticket), "")
        .await
        .expect("open");
    assert!(
        !sse.ended(Duration::from_millis(1500)).await,
        "re-checks keep a valid stream open"
    );

    sqlx::query("update users set active = false where id = $1")
        .bind(rep.id)
        .execute(&app.pool)
        .await
        .expect("deactivate");
    // Within the standing cache's few seconds plus one re-check.
    assert!(
        sse.ended(Duration::from_secs(10)).await,
        "the SSE stream ends"
    );
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(message)) = futures::StreamExt::next(&mut ws).await {
            if let tokio_tungstenite::tungstenite::Message::Close(_) = message {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the ticket-opened WebSocket is closed too");
    app.stop().await;
}

#[tokio::test]
async fn signing_out_ends_streams_opened_with_a_ticket_of_that_sign_in_and_its_unused_tickets() {
    let app = TestApp::spawn_with(1, &["--notify-recheck", "500ms"]).await;
    let (rep, sign_in) = app.user_signed_in("sales_rep").await;
    let base = &app.notifiers[0];
    let ticket = app.ticket(&rep).await;
    let unused = app.ticket(&rep).await;
    let mut sse = SseClient::open(base, Auth::Ticket(&ticket), None)
        .await
        .expect("open");
    assert!(
        !sse.ended(Duration::from_millis(1500)).await,
        "re-checks keep a valid stream open"
    );

    // What logout does to the sign-in's refresh tokens.
    sqlx::query("update refresh_tokens set revoked_at = now() where family_id = $1")
        .bind(sign_in)
        .execute(&app.pool)
        .await
        .expect("sign out");
    assert!(
        sse.ended(Duration::from_secs(10)).await,
        "the ticket-opened stream ends with its sign-in"
    );
    assert_eq!(
        SseClient::open(base, Auth::Ticket(&unused), None)
            .await
            .err()
            .map(|e| e.0),
        Some(401),
        "a ticket of an ended sign-in opens nothing"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_web_apps_origin_may_open_streams_and_others_get_no_cors_headers() {
    let app = TestApp::spawn_with(1, &["--allowed-origins", "https://app.example.com"]).await;
    let url = format!("{}/api/notifications/stream", app.notifiers[0]);
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header(
                "access-control-request-headers",
                "authorization, last-event-id",
            )
            .send()
    };
    let allowed = preflight("https://app.example.com")
        .await
        .expect("preflight");
    assert_eq!(
        allowed
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().ok()),
        Some(Some("https://app.example.com"))
    );
    assert!(
        allowed
            .headers()
            .get("access-control-allow-credentials")
            .is_none()
    );
    let other = preflight("https://evil.example.com")
        .await
        .expect("preflight");
    assert!(other.headers().get("access-control-allow-origin").is_none());
    app.stop().await;
}

#[tokio::test]
async fn a_websocket_peer_that_stops_answering_pings_is_let_go() {
    let app = TestApp::spawn().await; // heartbeat 1 s
    let rep = app.user("sales_rep").await;
    let base = app.notifiers[0].clone();
    let ws_connections = || async {
        let metrics = reqwest::get(format!("{base}/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        metrics
            .lines()
            .find(|l| {
                l.starts_with("leadflow_notification_connections{")
                    && l.contains("transport=\"ws\"")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let mut answering = open_ws(&base, Auth::Bearer(&rep.token), "")
        .await
        .expect("open");
    // Never read: tungstenite answers pings only while the stream is read.
    let silent = open_ws(&base, Auth::Bearer(&rep.token), "")
        .await
        .expect("open");
    assert_eq!(ws_connections().await, 2.0);

    // The answering client reads (and so pongs) for four heartbeats; the silent one is dropped.
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        let _ = ws_next(&mut answering, Duration::from_millis(200)).await;
    }
    assert_eq!(ws_connections().await, 1.0, "only the silent peer is gone");
    drop(silent);
    app.stop().await;
}
