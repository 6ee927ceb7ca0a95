//! Notification e-mail to a real SMTP server started by the test, through an outage.

use std::time::Duration;

use leadflow_testkit::{closed_port, eventually};
use serde_json::{Value, json};

use crate::helpers::{SmtpServer, TestApp};

#[tokio::test]
async fn mail_waits_out_an_smtp_outage_and_then_reaches_the_server_once() {
    let port = closed_port().await;
    let smtp_url = format!("smtp://127.0.0.1:{port}");
    let app =
        TestApp::spawn_with(1, &["--smtp-url", &smtp_url, "--email-retry-base", "100ms"]).await;
    let manager = app.user("manager").await;
    let rep = app.user("sales_rep").await;
    let quiet = app.user("sales_rep").await;
    let (status, me) = app
        .call(
            "PATCH",
            "/api/auth/me",
            &quiet.token,
            Some(json!({"preferences": {"email_notifications": false}})),
        )
        .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["preferences"]["email_notifications"], false);

    app.assign_new_lead(&manager, rep.id).await;
    app.assign_new_lead(&manager, quiet.id).await;
    let rows = format!(
        "select count(*) from email_queue where attempts >= 2 and sent_at is null and last_error is not null and recipient = (select email from users where id = '{}')",
        rep.id
    );
    app.count_reaches(
        &rows,
        1,
        Duration::from_secs(10),
        "failed attempts while SMTP is down",
    )
    .await;
    assert_eq!(
        app.count("select count(*) from email_queue").await,
        1,
        "the rep who turned e-mail off gets none"
    );
    let health: Value = reqwest::get(format!("{}/health.json", app.notifiers[0]))
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(health["smtp"]["status"], "failing", "{health}");
    assert_eq!(health["smtp"]["server"], format!("smtp://127.0.0.1:{port}"));

    let server = SmtpServer::start_on(port).await;
    let mail = eventually(
        Duration::from_secs(10),
        "the mail after the outage",
        || async { server.received().into_iter().next() },
    )
    .await;
    let email: String = sqlx::query_scalar("select email from users where id = $1")
        .bind(rep.id)
        .fetch_one(&app.pool)
        .await
        .expect("email");
    assert!(mail.contains(&format!("To: {email}")), "{mail}");
    assert!(
        mail.contains("Subject: New lead assigned to you: Ada Lovelace"),
        "{mail}"
    );
    assert!(mail.contains("multipart/alternative"), "{mail}");
    assert!(
        mail.contains("text/plain") && mail.contains("text/html"),
        "{mail}"
    );
    assert!(
        mail.contains("Note: call <today>"),
        "plain text keeps the note: {mail}"
    );
    assert!(
        mail.contains("call &lt;today&gt;"),
        "HTML escapes it: {mail}"
    );
    eventually(Duration::from_secs(5), "the mail marked sent", || async {
        (app.count("select count(*) from email_queue where sent_at is not null")
            .await
            == 1)
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(server.received().len(), 1, "sent once");
    app.stop().await;
}

#[tokio::test]
async fn a_server_that_wants_authentication_delays_mail_instead_of_discarding_it() {
    let port = closed_port().await;
    let server = SmtpServer::start_on(port).await;
    *server.mail_reply.lock().expect("lock") = Some("530 5.7.0 Authentication required\r\n");
    let smtp_url = format!("smtp://127.0.0.1:{port}");
    let app =
        TestApp::spawn_with(1, &["--smtp-url", &smtp_url, "--email-retry-base", "100ms"]).await;
    let manager = app.user("manager").await;
    let rep = app.user("sales_rep").await;
    app.assign_new_lead(&manager, rep.id).await;

    app.count_reaches(
        "select count(*) from email_queue where attempts >= 2 and failed_at is null and sent_at is null",
        1,
        Duration::from_secs(10),
        "refused attempts",
    )
    .await;

    // The operator fixes the credentials: the mail still goes out.
    *server.mail_reply.lock().expect("lock") = None;
    eventually(
        Duration::from_secs(15),
        "the mail once accepted",
        || async { (server.received().len() == 1).then_some(()) },
    )
    .await;
    // Marked sent after the server's 250, which the server sees first.
    app.count_reaches(
        "select count(*) from email_queue where sent_at is not null",
        1,
        Duration::from_secs(5),
        "the mail marked sent",
    )
    .await;
    app.stop().await;
}
