//! XSS sweep: hostile markup in lead names, notes, assignment notes, UTM fields, user names and
//! event properties never comes back as live markup from anything the services serve as HTML:
//! the notification e-mails' HTML bodies, and every HTML page of the gateway and the notifier
//! (health dashboards, Swagger UI, ReDoc). The JSON that carries the same text stays JSON that a
//! browser will not sniff into HTML.

use std::time::Duration;

use leadflow_events::Envelope;
use leadflow_testkit::{closed_port, eventually};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::TestApp;

const SCRIPT: &str = "<script>alert(1)</script>";
const BREAKOUT: &str = "\"><img src=x onerror=alert(1)>";
const SINGLE_QUOTED: &str = "'><svg onload=alert(1)>";
const JS_URL: &str = "javascript:alert(document.cookie)";
const TABLE_BREAKOUT: &str = "</td></tr></table><iframe src=javascript:alert(1)>";

/// The tags our HTML templates write; anything else in a page came from input.
const TEMPLATE_TAGS: [&str; 12] = [
    "!doctype", "html", "head", "body", "p", "strong", "table", "tr", "th", "td", "meta", "title",
];

/// Every real tag in `html` (text from an unescaped `<` to the next `>`).
fn tags(html: &str) -> Vec<&str> {
    html.match_indices('<')
        .map(|(at, _)| {
            let rest = &html[at + 1..];
            &rest[..rest.find('>').unwrap_or(rest.len())]
        })
        .collect()
}

/// Fails when input escaped into markup: a tag our template does not write, an event-handler
/// attribute, a `javascript:` URL in an attribute, or a payload that is there unescaped.
fn assert_inert(what: &str, html: &str) {
    for tag in tags(html) {
        let name = tag
            .trim_start_matches('/')
            .split(|c: char| c.is_whitespace())
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(
            TEMPLATE_TAGS.contains(&name.as_str()),
            "{what}: a <{tag}> tag the template does not write:\n{html}"
        );
        let lower = tag.to_ascii_lowercase();
        assert!(
            !lower.contains("javascript:") && !lower.contains(" on"),
            "{what}: a live attribute in <{tag}>:\n{html}"
        );
    }
    for payload in [SCRIPT, BREAKOUT, SINGLE_QUOTED, TABLE_BREAKOUT] {
        assert!(!html.contains(payload), "{what}: {payload} unescaped");
    }
}

/// Whether a CSP lets inline script run (`script-src`, else `default-src`, with 'unsafe-inline').
fn allows_inline_script(policy: &str) -> bool {
    let directive = |name: &str| {
        policy
            .split(';')
            .map(str::trim)
            .find(|d| d.split_whitespace().next() == Some(name))
    };
    directive("script-src")
        .or_else(|| directive("default-src"))
        .is_some_and(|d| d.contains("'unsafe-inline'"))
}

#[tokio::test]
async fn hostile_markup_in_names_notes_utm_and_events_comes_back_escaped_from_every_html_surface() {
    // E-mail on, to a server that is never up: the HTML bodies wait in the queue, where we read them.
    let port = closed_port().await;
    let smtp = format!("smtp://127.0.0.1:{port}");
    let app = TestApp::spawn_with(1, &["--smtp-url", &smtp, "--email-retry-base", "1h"]).await;
    let admin = app.user("admin").await;
    let manager = app.user("manager").await;
    let rep = app.user("sales_rep").await;
    sqlx::query("update users set name = $1 where id = $2")
        .bind(format!("Rep {BREAKOUT}"))
        .bind(rep.id)
        .execute(&app.pool)
        .await
        .expect("a hostile user name");

    let (status, lead) = app
        .call(
            "POST",
            "/api/leads",
            &manager.token,
            Some(json!({
                "first_name": SCRIPT,
                "last_name": BREAKOUT,
                "company": SINGLE_QUOTED,
                "interest": TABLE_BREAKOUT,
                "utm": {"source": SCRIPT, "campaign": BREAKOUT, "content": JS_URL},
                "custom": {"website": JS_URL},
            })),
        )
        .await;
    assert_eq!(status, 201, "{lead}");
    let lead_id: Uuid = lead["id"].as_str().expect("id").parse().expect("uuid");
    let (status, note) = app
        .call(
            "POST",
            "/api/notes",
            &manager.token,
            Some(json!({"lead_id": lead_id, "body": format!("{SCRIPT} {BREAKOUT} {JS_URL}")})),
        )
        .await;
    assert_eq!(status, 201, "{note}");
    let (status, key) = app
        .call(
            "POST",
            "/api/tracking-keys",
            &admin.token,
            Some(json!({"name": SCRIPT})),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let events = app
        .client
        .post(format!("{}/t/events", app.gateway))
        .header("x-write-key", key["key"].as_str().expect("key"))
        .header("content-type", "text/plain")
        .body(
            json!({"events": [{"type": "page_view", "lead_id": lead_id,
                "properties": {"title": SCRIPT, "url": JS_URL, "referrer": BREAKOUT}}]})
            .to_string(),
        )
        .send()
        .await
        .expect("events");
    assert_eq!(events.status(), 202);
    let (status, assignment) = app
        .call(
            "POST",
            "/api/assignments",
            &manager.token,
            Some(json!({"lead_id": lead_id, "assignee_id": rep.id,
                        "note": format!("{TABLE_BREAKOUT}{SCRIPT}")})),
        )
        .await;
    assert_eq!(status, 201, "{assignment}");
    // The lead turns Hot for its owner: the other e-mail that names a lead.
    let hot = Envelope::new("scores.updated", "scorer")
        .expect("event")
        .with_lead(lead_id)
        .with_data(
            json!({"score_id": Uuid::new_v4(), "owner_id": rep.id, "old_score": 60,
                          "new_score": 75, "old_tier": "warm", "new_tier": "hot",
                          "trigger_event_id": Uuid::new_v4()}),
        );
    app.publish(&hot, &hot.id.to_string()).await;

    let mails: Vec<(String, String, String)> = eventually(
        Duration::from_secs(10),
        "the assignment and hot-lead e-mails queued",
        || async {
            let rows: Vec<(String, String, String)> = sqlx::query_as(
                "select subject, text_body, html_body from email_queue order by created_at",
            )
            .fetch_all(&app.pool)
            .await
            .ok()?;
            (rows.len() == 2).then_some(rows)
        },
    )
    .await;
    for (subject, text, html) in &mails {
        assert_inert(subject, html);
        // The text was shown, escaped, not dropped: the lead's name is in each body.
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{subject}: {html}"
        );
        assert!(
            html.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"),
            "{subject}: {html}"
        );
        assert!(text.contains(SCRIPT), "plain text keeps the words: {text}");
        assert!(!subject.contains('\n') && !subject.contains('\r'));
    }
    assert!(
        mails.iter().any(|(_, _, html)| html.contains(
            "&lt;/td&gt;&lt;/tr&gt;&lt;/table&gt;&lt;iframe src=javascript:alert(1)&gt;"
        )),
        "the assignment note is shown escaped: {mails:?}"
    );

    // Every HTML page the services serve, fetched after the hostile text is everywhere.
    let pages = [
        format!("{}/health", app.gateway),
        format!("{}/docs/", app.gateway),
        format!("{}/redoc", app.gateway),
        format!("{}/health", app.notifiers[0]),
    ];
    for url in &pages {
        let response = app.client.get(url).send().await.expect("page");
        assert_eq!(response.status(), 200, "{url}");
        let headers = response.headers().clone();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(
            content_type.starts_with("text/html"),
            "{url}: {content_type}"
        );
        assert_eq!(
            headers.get("x-content-type-options").map(|v| v.as_bytes()),
            Some(b"nosniff".as_slice()),
            "{url}"
        );
        let policy = headers
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{url}: no Content-Security-Policy"));
        assert!(!allows_inline_script(policy), "{url}: {policy}");
        let html = response.text().await.expect("html");
        for payload in [SCRIPT, BREAKOUT, SINGLE_QUOTED, TABLE_BREAKOUT, JS_URL] {
            assert!(!html.contains(payload), "{url} shows {payload} unescaped");
        }
    }

    // The same text through the API is JSON a browser will not sniff into a page.
    for path in [
        format!("/api/leads/{lead_id}"),
        format!("/api/notes?lead_id={lead_id}"),
        "/api/tracking-keys".to_owned(),
    ] {
        let response = app
            .client
            .get(format!("{}{path}", app.gateway))
            .bearer_auth(&admin.token)
            .send()
            .await
            .expect("api");
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
        assert_eq!(
            headers.get("content-type").map(|v| v.as_bytes()),
            Some(b"application/json".as_slice()),
            "{path}"
        );
        assert_eq!(
            headers.get("x-content-type-options").map(|v| v.as_bytes()),
            Some(b"nosniff".as_slice()),
            "{path}"
        );
        let body: Value = response.json().await.expect("json");
        assert!(body.to_string().contains("alert(1)"), "{path}: {body}");
    }
    app.stop().await;
}
