//! Every data change leaves exactly one audit row and one domain event (through the outbox, to
//! JetStream), and a change that is refused or rolled back leaves neither.

use std::time::Duration;

use leadflow_events::{Envelope, Namespace, Stream};
use serde_json::json;

use crate::helpers::TestApp;

/// The domain events JetStream holds for this app's namespace, as (subject type, lead id).
async fn domain_events(app: &TestApp) -> Vec<Envelope> {
    let client = async_nats::connect(leadflow_testkit::nats_url())
        .await
        .expect("nats");
    let jetstream = async_nats::jetstream::new(client);
    let ns = Namespace::parse(&app.namespace).expect("namespace");
    let Ok(mut stream) = jetstream.get_stream(ns.stream_name(Stream::Domain)).await else {
        return Vec::new();
    };
    let info = stream.info().await.expect("info").state.clone();
    let mut events = Vec::new();
    if info.messages == 0 {
        return events;
    }
    for seq in info.first_sequence..=info.last_sequence {
        if let Ok(raw) = stream.get_raw_message(seq).await {
            events.push(Envelope::from_json(&raw.payload).expect("envelope"));
        }
    }
    events
}

/// Waits for the relay to empty the outbox, then returns what reached JetStream.
async fn delivered(app: &TestApp) -> Vec<Envelope> {
    leadflow_testkit::eventually(Duration::from_secs(15), "the outbox to drain", || async {
        (app.count("select count(*) from outbox").await == 0).then_some(())
    })
    .await;
    domain_events(app).await
}

#[tokio::test]
async fn each_change_has_one_audit_row_and_one_event_and_refused_changes_have_none() {
    let app = TestApp::spawn().await;
    let manager = app.user("manager").await;
    let rep = app.user("sales_rep").await;
    let audit_before = app
        .count("select count(*) from audit_log where action not like 'auth.%'")
        .await;

    let lead = app
        .create_lead(
            &manager.token,
            json!({"first_name": "Audit", "company": "Trail"}),
        )
        .await;
    let id = lead["id"].as_str().expect("id");
    let (status, _) = app
        .call(
            "PATCH",
            &format!("/api/leads/{id}"),
            Some(&manager.token),
            Some(json!({"status": "contacted"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, assignment) = app
        .call(
            "POST",
            "/api/assignments",
            Some(&manager.token),
            Some(json!({"lead_id": id, "assignee_id": rep.id})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = app
        .call(
            "POST",
            "/api/notes",
            Some(&rep.token),
            Some(json!({"lead_id": id, "body": "Call back Friday"})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = app
        .call(
            "POST",
            &format!(
                "/api/assignments/{}/complete",
                assignment["id"].as_str().expect("id")
            ),
            Some(&rep.token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .call(
            "DELETE",
            &format!("/api/leads/{id}"),
            Some(&manager.token),
            None,
        )
        .await;
    assert_eq!(status, 204);

    // Refused: stale version, duplicate active assignment, invalid field. None may leave a trace.
    let other = app
        .create_lead(&manager.token, json!({"first_name": "Other"}))
        .await;
    let other_id = other["id"].as_str().expect("id");
    let (status, _) = app
        .call(
            "PATCH",
            &format!("/api/leads/{other_id}"),
            Some(&manager.token),
            Some(json!({"status": "won", "version": 7})),
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = app
        .call(
            "POST",
            "/api/assignments",
            Some(&manager.token),
            Some(json!({"lead_id": other_id, "assignee_id": rep.id})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = app
        .call(
            "POST",
            "/api/assignments",
            Some(&manager.token),
            Some(json!({"lead_id": other_id, "assignee_id": rep.id})),
        )
        .await;
    assert_eq!(status, 409, "one active assignment per lead");
    let (status, _) = app
        .call(
            "PATCH",
            &format!("/api/leads/{other_id}"),
            Some(&manager.token),
            Some(json!({"email": "nope"})),
        )
        .await;
    assert_eq!(status, 422);
    // Refused after the lead, its audit row and its event were written: all of it rolls back.
    let (status, problem) = app
        .call(
            "POST",
            "/api/leads",
            Some(&manager.token),
            Some(json!({"first_name": "Orphan", "owner_id": uuid::Uuid::new_v4()})),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(
        app.count("select count(*) from leads where first_name = 'Orphan'")
            .await,
        0
    );

    let actions: Vec<String> = sqlx::query_scalar(
        "select action from audit_log where action not like 'auth.%' order by created_at, id",
    )
    .fetch_all(&app.pool)
    .await
    .expect("audit");
    assert_eq!(audit_before, 0);
    assert_eq!(
        actions,
        [
            "lead.create",
            "lead.update",
            "assignment.create",
            "note.create",
            "assignment.complete",
            "lead.delete",
            "lead.create",
            "assignment.create"
        ]
    );
    let events = delivered(&app).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "leads.created",
            "leads.updated",
            "assignments.created",
            "notes.created",
            "assignments.completed",
            "leads.deleted",
            "leads.created",
            "assignments.created"
        ]
    );
    assert!(
        events
            .iter()
            .all(|e| e.source == "gateway" && e.lead_id.is_some())
    );
    assert_eq!(events[2].data["assignee_id"], json!(rep.id));

    // Every audited change carries who, from where and the request id.
    let complete: i64 = app
        .count("select count(*) from audit_log where actor_id is not null and ip is not null and request_id is not null and action not like 'auth.%'")
        .await;
    assert_eq!(complete as usize, actions.len());
    app.stop().await;
}

#[tokio::test]
async fn transfers_move_ownership_and_notify_both_sides_through_events() {
    let app = TestApp::spawn().await;
    let manager = app.user("manager").await;
    let rep1 = app.user("sales_rep").await;
    let rep2 = app.user("sales_rep").await;
    let lead = app
        .create_lead(&manager.token, json!({"first_name": "Moving"}))
        .await;
    let id = lead["id"].as_str().expect("id");
    let (_, first) = app
        .call(
            "POST",
            "/api/assignments",
            Some(&manager.token),
            Some(json!({"lead_id": id, "assignee_id": rep1.id, "note": "yours"})),
        )
        .await;
    let (status, second) = app
        .call(
            "POST",
            &format!(
                "/api/assignments/{}/transfer",
                first["id"].as_str().expect("id")
            ),
            Some(&rep1.token),
            Some(json!({"assignee_id": rep2.id})),
        )
        .await;
    assert_eq!(status, 201, "{second}");
    let (status, _) = app
        .call("GET", &format!("/api/leads/{id}"), Some(&rep1.token), None)
        .await;
    assert_eq!(status, 404, "the previous assignee no longer sees it");
    let (status, mine) = app
        .call("GET", &format!("/api/leads/{id}"), Some(&rep2.token), None)
        .await;
    assert_eq!((status, mine["owner_id"].clone()), (200, json!(rep2.id)));
    let (_, old) = app
        .call(
            "GET",
            &format!("/api/assignments?lead_id={id}&status=transferred"),
            Some(&manager.token),
            None,
        )
        .await;
    assert_eq!(old["items"][0]["transferred_to"], second["id"]);

    let events = delivered(&app).await;
    let transfer = events
        .iter()
        .find(|e| e.kind == "assignments.transferred")
        .expect("transfer event");
    assert_eq!(transfer.data["previous_assignee_id"], json!(rep1.id));
    assert_eq!(transfer.data["assignee_id"], json!(rep2.id));
    app.stop().await;
}
