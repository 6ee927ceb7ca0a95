//! Signed webhooks to a real HTTP receiver started by the test.

use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac as _};
use leadflow_testkit::eventually;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{Auth, Receiver, SmtpServer, SseClient, TestApp};

async fn register(app: &TestApp, admin_token: &str, url: &str, types: Value) -> (String, String) {
    let (status, hook) = app
        .call(
            "POST",
            "/api/webhooks",
            admin_token,
            Some(json!({"url": url, "event_types": types})),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    (
        hook["id"].as_str().expect("id").to_owned(),
        hook["secret"].as_str().expect("secret").to_owned(),
    )
}

/// Verifies a request the way a receiver following Standard Webhooks would.
fn verify(secret: &str, headers: &axum::http::HeaderMap, body: &str) -> bool {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let key = STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .expect("base64 key");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("key");
    mac.update(
        format!(
            "{}.{}.{}",
            header("webhook-id"),
            header("webhook-timestamp"),
            body
        )
        .as_bytes(),
    );
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    let timestamp: i64 = header("webhook-timestamp").parse().unwrap_or_default();
    let fresh = (time::OffsetDateTime::now_utc().unix_timestamp() - timestamp).abs() < 300;
    fresh
        && header("webhook-signature")
            .split(' ')
            .any(|s| s == expected)
}

#[tokio::test]
async fn a_receiver_sees_a_correctly_signed_request_and_a_failing_one_gets_it_on_the_third_try() {
    // The receivers listen on loopback, which webhooks may reach only when allowed to.
    let app = TestApp::spawn_with(
        1,
        &[
            "--webhook-retry-base",
            "100ms",
            "--webhook-allow-private",
            "true",
        ],
    )
    .await;
    let admin = app.user("admin").await;
    let manager = app.user("manager").await;
    let rep = app.user("sales_rep").await;
    let good = Receiver::start(vec![]).await;
    let flaky = Receiver::start(vec![500, 503]).await;
    let only_hot = Receiver::start(vec![]).await;
    let (_, good_secret) =
        register(&app, &admin.token, &good.url, json!(["assignment.created"])).await;
    let (flaky_id, flaky_secret) = register(&app, &admin.token, &flaky.url, json!([])).await;
    register(&app, &admin.token, &only_hot.url, json!(["lead.hot"])).await;

    let (lead, assignment) = app.assign_new_lead(&manager, rep.id).await;
    eventually(Duration::from_secs(5), "the webhook request", || async {
        (good.count() == 1).then_some(())
    })
    .await;
    let (headers, body) = good.get(0);
    assert!(
        verify(&good_secret, &headers, &body),
        "signature checks out: {headers:?}"
    );
    assert!(
        !verify(&flaky_secret, &headers, &body),
        "and only with its own secret"
    );
    let sent: Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(sent["type"], "assignment.created");
    assert_eq!(sent["data"]["lead_id"], json!(lead));
    assert_eq!(sent["data"]["assignment_id"], json!(assignment));
    assert_eq!(sent["data"]["assignee_id"], json!(rep.id));

    eventually(Duration::from_secs(10), "the third try", || async {
        (flaky.count() == 3).then_some(())
    })
    .await;
    let ids: Vec<_> = (0..3)
        .map(|i| flaky.get(i).0["webhook-id"].clone())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "one message id across retries, so receivers can de-duplicate"
    );
    for i in 0..3 {
        let (headers, body) = flaky.get(i);
        assert!(verify(&flaky_secret, &headers, &body));
    }
    let path = format!("/api/webhooks/{flaky_id}/deliveries");
    let log = eventually(
        Duration::from_secs(5),
        "the delivery to succeed",
        || async {
            let (_, log) = app.call("GET", &path, &admin.token, None).await;
            (log[0]["status"] == "succeeded").then_some(log)
        },
    )
    .await;
    assert_eq!(log.as_array().expect("list").len(), 1);
    assert_eq!(log[0]["attempts"], 3);
    let codes: Vec<_> = log[0]["attempt_log"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| a["status_code"].clone())
        .collect();
    assert_eq!(codes, vec![json!(500), json!(503), json!(200)]);
    assert_eq!(only_hot.count(), 0, "event filters apply");
    let (status, _) = app.call("GET", &path, &manager.token, None).await;
    assert_eq!(status, 403, "the log is for admins");
    app.stop().await;
}

#[tokio::test]
async fn an_endpoint_failing_for_long_is_disabled_and_its_owner_told() {
    let smtp = SmtpServer::start_on(leadflow_testkit::closed_port().await).await;
    let smtp_url = format!("smtp://{}", smtp.addr);
    let app = TestApp::spawn_with(
        1,
        &[
            "--webhook-allow-private",
            "true",
            "--webhook-retry-base",
            "50ms",
            "--webhook-disable-after",
            "0s",
            "--smtp-url",
            &smtp_url,
        ],
    )
    .await;
    let admin = app.user("admin").await;
    let manager = app.user("manager").await;
    let rep = app.user("sales_rep").await;
    let down = Receiver::start(vec![500; 100]).await;
    let (id, _) = register(&app, &admin.token, &down.url, json!([])).await;
    let mut owner = SseClient::open(&app.notifiers[0], Auth::Bearer(&admin.token), None)
        .await
        .expect("open");

    app.assign_new_lead(&manager, rep.id).await;
    let told = owner
        .next(Duration::from_secs(10))
        .await
        .expect("owner told");
    assert_eq!(told.data["kind"], "webhook.disabled");
    assert_eq!(told.data["payload"]["webhook_id"], json!(id));
    assert_eq!(told.data["payload"]["host"], "127.0.0.1");
    assert!(
        !told.data.to_string().contains("/hook"),
        "no URL path (it may hold the receiver's token): {}",
        told.data
    );
    let (_, hooks) = app.call("GET", "/api/webhooks", &admin.token, None).await;
    assert_eq!(hooks[0]["active"], false);
    assert!(hooks[0]["disabled_at"].is_string());
    assert!(
        hooks[0].get("secret").is_none(),
        "the secret is shown only at creation"
    );
    let mail = eventually(Duration::from_secs(5), "the owner's e-mail", || async {
        smtp.received()
            .into_iter()
            .find(|m| m.contains("A webhook was disabled"))
    })
    .await;
    assert!(mail.contains("answered 500"), "{mail}");
    let tries = down.count();
    assert_eq!(tries, 3);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(down.count(), tries, "a disabled endpoint gets nothing more");

    // Re-enabled, it gets the pending delivery.
    let (status, hook) = app
        .call(
            "PATCH",
            &format!("/api/webhooks/{id}"),
            &admin.token,
            Some(json!({"active": true})),
        )
        .await;
    assert_eq!(status, 200, "{hook}");
    assert_eq!(hook["consecutive_failures"], 0);
    eventually(
        Duration::from_secs(5),
        "a retry after re-enabling",
        || async { (down.count() > tries).then_some(()) },
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn webhooks_to_inside_addresses_are_refused_unless_allowed() {
    let app = TestApp::spawn_with(1, &["--webhook-retry-base", "100ms"]).await;
    let admin = app.user("admin").await;
    let manager = app.user("manager").await;
    let rep = app.user("sales_rep").await;
    let inside = Receiver::start(vec![]).await;
    let by_name = inside.url.replace("127.0.0.1", "localhost");
    let (literal_id, _) = register(&app, &admin.token, &inside.url, json!([])).await;
    let (named_id, _) = register(&app, &admin.token, &by_name, json!([])).await;

    app.assign_new_lead(&manager, rep.id).await;
    for id in [literal_id, named_id] {
        let path = format!("/api/webhooks/{id}/deliveries");
        let log = eventually(Duration::from_secs(10), "a refused attempt", || async {
            let (_, log) = app.call("GET", &path, &admin.token, None).await;
            let error = log[0]["attempt_log"][0]["error"].as_str()?.to_owned();
            Some(error)
        })
        .await;
        assert!(log.contains("WEBHOOK_ALLOW_PRIVATE"), "{log}");
    }
    assert_eq!(inside.count(), 0, "nothing reached the inside address");
    app.stop().await;
}
