//! What the gateway does for the notifier: `/api/webhooks` (admins), stream tickets, and the
//! e-mail preference in `PATCH /api/auth/me`.

use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::helpers::TestApp;

#[tokio::test]
async fn admins_register_webhooks_whose_secret_is_shown_once() {
    let app = TestApp::spawn().await;
    let admin = app.user("admin").await;
    let manager = app.user("manager").await;

    let body = json!({"url": "https://hooks.example.com/in", "event_types": ["lead.hot"], "description": "CRM"});
    let (status, created) = app
        .call(
            "POST",
            "/api/webhooks",
            Some(&admin.token),
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().expect("secret");
    assert!(
        secret.starts_with("whsec_") && secret.len() > 30,
        "{secret}"
    );
    assert_eq!(created["event_types"], json!(["lead.hot"]));
    assert_eq!(created["active"], true);

    let (status, list) = app
        .call("GET", "/api/webhooks", Some(&admin.token), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().expect("list").len(), 1);
    assert!(list[0].get("secret").is_none(), "{list}");
    assert!(!list.to_string().contains(secret));

    for (who, status) in [(&manager.token, 403)] {
        assert_eq!(
            app.call("GET", "/api/webhooks", Some(who), None).await.0,
            status
        );
        assert_eq!(
            app.call("POST", "/api/webhooks", Some(who), Some(body.clone()))
                .await
                .0,
            status
        );
    }
    assert_eq!(app.call("GET", "/api/webhooks", None, None).await.0, 401);

    let (status, problem) = app
        .call(
            "POST",
            "/api/webhooks",
            Some(&admin.token),
            Some(json!({"url": "ftp://x", "event_types": ["lead.cold"]})),
        )
        .await;
    assert_eq!(status, 422);
    let fields: Vec<_> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].clone())
        .collect();
    assert_eq!(fields, vec![json!("url"), json!("event_types")]);

    let id = created["id"].as_str().expect("id");
    let (status, updated) = app
        .call(
            "PATCH",
            &format!("/api/webhooks/{id}"),
            Some(&admin.token),
            Some(json!({"active": false})),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["active"], false);
    assert!(updated["disabled_at"].is_string());
    let (status, log) = app
        .call(
            "GET",
            &format!("/api/webhooks/{id}/deliveries"),
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!((status, log), (200, json!([])));
    assert_eq!(
        app.call(
            "DELETE",
            &format!("/api/webhooks/{id}"),
            Some(&admin.token),
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        app.call(
            "GET",
            &format!("/api/webhooks/{id}/deliveries"),
            Some(&admin.token),
            None
        )
        .await
        .0,
        404
    );
    let audited = app
        .count("select count(*) from audit_log where action like 'webhook.%'")
        .await;
    assert_eq!(audited, 3);
    app.stop().await;
}

#[tokio::test]
async fn a_stream_ticket_is_short_lived_and_stored_only_hashed() {
    let app = TestApp::spawn().await;
    let rep = app.user("sales_rep").await;
    let (status, body) = app
        .call("POST", "/api/notifications/ticket", Some(&rep.token), None)
        .await;
    assert_eq!(status, 201, "{body}");
    let ticket = body["ticket"].as_str().expect("ticket");
    assert_eq!(body["expires_in"], 30);
    let hash = Sha256::digest(ticket.as_bytes()).to_vec();
    let (user, lifetime): (uuid::Uuid, f64) = sqlx::query_as(
        "select user_id, extract(epoch from expires_at - created_at)::float8 from stream_tickets where ticket_hash = $1",
    )
    .bind(&hash)
    .fetch_one(&app.pool)
    .await
    .expect("stored by its hash");
    assert_eq!(user, rep.id);
    assert!((29.0..=31.0).contains(&lifetime), "{lifetime}");
    assert_eq!(
        app.call("POST", "/api/notifications/ticket", None, None)
            .await
            .0,
        401
    );
    app.stop().await;
}

#[tokio::test]
async fn users_turn_notification_e_mail_off_for_themselves() {
    let app = TestApp::spawn().await;
    let rep = app.user("sales_rep").await;
    let (status, me) = app
        .call(
            "PATCH",
            "/api/auth/me",
            Some(&rep.token),
            Some(json!({"preferences": {"email_notifications": false}})),
        )
        .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["preferences"], json!({"email_notifications": false}));
    let (status, me) = app
        .call(
            "PATCH",
            "/api/auth/me",
            Some(&rep.token),
            Some(json!({"name": "Renamed"})),
        )
        .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        (
            me["name"].clone(),
            me["preferences"]["email_notifications"].clone()
        ),
        (json!("Renamed"), json!(false)),
        "other preferences stay"
    );
    let (status, problem) = app
        .call(
            "PATCH",
            "/api/auth/me",
            Some(&rep.token),
            Some(json!({"preferences": {"theme": "dark"}})),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    let (status, _) = app
        .call(
            "PATCH",
            "/api/auth/me",
            Some(&rep.token),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(status, 422, "the role is not the user's to change");
    assert_eq!(
        app.call("PATCH", "/api/auth/me", None, Some(json!({})))
            .await
            .0,
        401
    );
    app.stop().await;
}
