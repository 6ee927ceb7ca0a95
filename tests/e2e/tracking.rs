//! Engagement in, scores out: tracking endpoints, the scorer and the score routes together.

use std::time::Duration;

use leadflow_testkit::eventually;
use serde_json::{Value, json};

use crate::helpers::Stack;

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

async fn admin(stack: &Stack) -> Client {
    let pool = sqlx::PgPool::connect(&stack.db_url).await.expect("pool");
    let admin = leadflow_gateway::admin::NewAdmin::parse(
        "admin@example.com",
        "an-admin-password-123".to_owned().into(),
        "Admin",
    )
    .expect("admin");
    leadflow_gateway::admin::upsert_admin(&pool, &admin)
        .await
        .expect("insert admin");
    pool.close().await;
    let http = reqwest::Client::new();
    let session: Value = http
        .post(format!("{}/api/auth/login", stack.gateway))
        .json(&json!({"email": "admin@example.com", "password": "an-admin-password-123"}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("session");
    Client {
        http,
        base: stack.gateway.clone(),
        token: session["access_token"].as_str().expect("token").to_owned(),
    }
}

async fn write_key(client: &Client) -> String {
    let (status, key) = client
        .call(
            reqwest::Method::POST,
            "/api/tracking-keys",
            Some(json!({"name": "website"})),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    key["key"].as_str().expect("key shown once").to_owned()
}

async fn post_events(stack: &Stack, key: &str, body: &Value, user_agent: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/t/events", stack.gateway))
        .header("x-write-key", key)
        .header("user-agent", user_agent)
        .header("content-type", "text/plain") // as navigator.sendBeacon sends it
        .body(body.to_string())
        .send()
        .await
        .expect("post");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

async fn score_of(client: &Client, lead: &str) -> Option<i64> {
    let (_, lead) = client
        .call(reqwest::Method::GET, &format!("/api/leads/{lead}"), None)
        .await;
    lead["score"].as_i64()
}

const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";

#[tokio::test]
async fn tracked_events_change_the_score_once_and_the_score_routes_explain_it() {
    let stack = Stack::start().await;
    let client = admin(&stack).await;
    let key = write_key(&client).await;
    let (_, lead) = client
        .call(
            reqwest::Method::POST,
            "/api/leads",
            Some(json!({"first_name": "Tracked", "budget": 30000, "interest": "suv"})),
        )
        .await;
    let lead_id = lead["id"].as_str().expect("id").to_owned();
    // The lead is scored without anyone asking.
    let first = eventually(
        Duration::from_secs(20),
        "a score for the new lead",
        || async { score_of(&client, &lead_id).await },
    )
    .await;

    let batch = json!({"events": [
        {"id": uuid::Uuid::new_v4(), "type": "pricing_view", "lead_id": lead_id, "properties": {"url": "/pricing", "note": "<script>alert(1)</script>"}},
        {"id": uuid::Uuid::new_v4(), "type": "calculator_use", "lead_id": lead_id},
        {"id": uuid::Uuid::new_v4(), "type": "test_drive_request", "lead_id": lead_id},
        {"type": "page_view"},
        {"type": "bad type!", "lead_id": lead_id},
    ]});
    let (status, answer) = post_events(&stack, &key, &batch, BROWSER).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        (answer["accepted"].clone(), answer["rejected"].clone()),
        (json!(3), json!(2)),
        "{answer}"
    );
    assert_eq!(answer["errors"][0]["index"], 3);
    // The scorer may take the three events in more than one batch: wait for all of them (each
    // batch stores its events in the transaction that scores them).
    let path = format!("/api/leads/{lead_id}/events");
    eventually(
        Duration::from_secs(20),
        "the three events stored",
        || async {
            let (status, events) = client.call(reqwest::Method::GET, &path, None).await;
            (status == 200 && events.as_array().is_some_and(|e| e.len() == 3)).then_some(())
        },
    )
    .await;
    let raised = score_of(&client, &lead_id).await.expect("score");
    assert!(raised > first, "{raised} > {first}");
    let (_, history) = client
        .call(
            reqwest::Method::GET,
            &format!("/api/leads/{lead_id}/score/history"),
            None,
        )
        .await;
    let history_len = history.as_array().expect("history").len();

    // The same batch again (a retry) changes nothing.
    let (status, _) = post_events(&stack, &key, &batch, BROWSER).await;
    assert_eq!(status, 202);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, events) = client
        .call(
            reqwest::Method::GET,
            &format!("/api/leads/{lead_id}/events"),
            None,
        )
        .await;
    assert_eq!(events.as_array().expect("events").len(), 3, "stored once");
    let (_, history) = client
        .call(
            reqwest::Method::GET,
            &format!("/api/leads/{lead_id}/score/history"),
            None,
        )
        .await;
    assert_eq!(
        history.as_array().expect("history").len(),
        history_len,
        "scored once"
    );
    assert_eq!(score_of(&client, &lead_id).await, Some(raised));

    let (status, current) = client
        .call(
            reqwest::Method::GET,
            &format!("/api/leads/{lead_id}/score"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{current}");
    assert!(
        current["score"]["breakdown"]
            .to_string()
            .contains("test_drive_request")
    );
    assert!(
        current["insights"]
            .as_array()
            .expect("insights")
            .iter()
            .any(|i| i["text"].as_str().unwrap_or("").contains("test drive"))
    );

    let (status, fresh) = client
        .call(
            reqwest::Method::POST,
            &format!("/api/leads/{lead_id}/score"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{fresh}");
    assert_eq!(fresh["score"]["total"].as_i64(), Some(raised));
    stack.stop().await;
}

#[tokio::test]
async fn the_pixel_always_answers_and_a_token_only_moves_its_own_lead() {
    let stack = Stack::start().await;
    let client = admin(&stack).await;
    let key = write_key(&client).await;
    let (_, a) = client
        .call(
            reqwest::Method::POST,
            "/api/leads",
            Some(json!({"first_name": "A"})),
        )
        .await;
    let (_, b) = client
        .call(
            reqwest::Method::POST,
            "/api/leads",
            Some(json!({"first_name": "B"})),
        )
        .await;
    let (a, b) = (
        a["id"].as_str().expect("id").to_owned(),
        b["id"].as_str().expect("id").to_owned(),
    );
    let (_, token) = client
        .call(
            reqwest::Method::GET,
            &format!("/api/leads/{a}/tracking-token"),
            None,
        )
        .await;
    let token = token["token"].as_str().expect("token").to_owned();

    let http = reqwest::Client::new();
    for query in [
        format!("k={key}&lead={a}&e=email_open"),
        format!("t={token}&e=email_click&lead={b}"),
        "k=not-a-key&lead=x&e=email_open".to_owned(),
        String::new(),
        "t=forged&e=pricing_view".to_owned(),
    ] {
        let response = http
            .get(format!("{}/t/pixel.gif?{query}", stack.gateway))
            .header("user-agent", BROWSER)
            .send()
            .await
            .expect("pixel");
        assert_eq!(response.status(), 200, "{query}");
        assert_eq!(response.headers()["content-type"], "image/gif");
        assert!(
            response.headers()["cache-control"]
                .to_str()
                .expect("cc")
                .contains("no-store")
        );
        assert_eq!(response.bytes().await.expect("gif").len(), 43);
    }
    let (_, a_events) = eventually(
        Duration::from_secs(20),
        "both of A's pixel events",
        || async {
            let (status, events) = client
                .call(
                    reqwest::Method::GET,
                    &format!("/api/leads/{a}/events"),
                    None,
                )
                .await;
            (events.as_array().map_or(0, Vec::len) == 2).then_some((status, events))
        },
    )
    .await;
    assert_eq!(a_events.as_array().expect("events").len(), 2);
    let (_, b_events) = client
        .call(
            reqwest::Method::GET,
            &format!("/api/leads/{b}/events"),
            None,
        )
        .await;
    assert_eq!(b_events, json!([]), "A's token cannot move B");
    stack.stop().await;
}

#[tokio::test]
async fn identity_stitching_moves_earlier_anonymous_events_onto_the_lead_and_bots_never_count() {
    let stack = Stack::start().await;
    let client = admin(&stack).await;
    let key = write_key(&client).await;
    let (_, lead) = client
        .call(
            reqwest::Method::POST,
            "/api/leads",
            Some(json!({"first_name": "Later", "email": "later@example.com"})),
        )
        .await;
    let lead_id = lead["id"].as_str().expect("id").to_owned();
    let first = eventually(Duration::from_secs(20), "a first score", || async {
        score_of(&client, &lead_id).await
    })
    .await;

    let visits = json!({"events": [
        {"type": "pricing_view", "anonymous_id": "visitor-42"},
        {"type": "calculator_use", "anonymous_id": "visitor-42"},
    ]});
    let (status, _) = post_events(&stack, &key, &visits, BROWSER).await;
    assert_eq!(status, 202);
    let bot = json!({"events": [{"type": "email_click", "lead_id": lead_id}]});
    let (status, _) =
        post_events(&stack, &key, &bot, "Mozilla/5.0 (compatible; bingbot/2.0)").await;
    assert_eq!(status, 202);

    let response = reqwest::Client::new()
        .post(format!("{}/t/identify", stack.gateway))
        .header("x-write-key", &key)
        .json(&json!({"anonymous_id": "visitor-42", "email": "Later@Example.com"}))
        .send()
        .await
        .expect("identify");
    assert_eq!(response.status(), 202);
    let events = eventually(
        Duration::from_secs(20),
        "the visitor's and the bot's events on the lead",
        || async {
            let (_, events) = client
                .call(
                    reqwest::Method::GET,
                    &format!("/api/leads/{lead_id}/events"),
                    None,
                )
                .await;
            let types: Vec<String> = events
                .as_array()?
                .iter()
                .filter_map(|e| e["event_type"].as_str().map(str::to_owned))
                .collect();
            // The bot's click may be consumed by another scorer worker than the visits.
            ["pricing_view", "calculator_use", "email_click"]
                .iter()
                .all(|t| types.iter().any(|have| have == t))
                .then_some(events)
        },
    )
    .await;
    let bot_event = events
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["event_type"] == "email_click")
        .expect("bot event stored");
    assert_eq!(bot_event["suppressed_reason"], "crawler");
    let stitched = eventually(
        Duration::from_secs(20),
        "a re-score from the stitched events",
        || async { score_of(&client, &lead_id).await.filter(|s| *s > first) },
    )
    .await;
    assert!(stitched > first);
    let (_, current) = client
        .call(
            reqwest::Method::GET,
            &format!("/api/leads/{lead_id}/score"),
            None,
        )
        .await;
    assert!(
        !current["score"]["breakdown"]
            .to_string()
            .contains("email_click"),
        "the bot's click does not count"
    );
    stack.stop().await;
}

#[tokio::test]
async fn bad_keys_are_401_and_oversized_batches_413() {
    let stack = Stack::start().await;
    let client = admin(&stack).await;
    let key = write_key(&client).await;
    let (status, _) = post_events(&stack, "lfwk_wrong", &json!({"events": []}), BROWSER).await;
    assert_eq!(status, 401);
    let too_many: Vec<Value> = (0..501)
        .map(|_| json!({"type": "page_view", "anonymous_id": "x"}))
        .collect();
    let (status, _) = post_events(&stack, &key, &json!({"events": too_many}), BROWSER).await;
    assert_eq!(status, 413);
    let response = reqwest::Client::new()
        .post(format!("{}/t/events", stack.gateway))
        .header("x-write-key", &key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 400);
    // Revoked keys stop working at once.
    let (_, keys) = client
        .call(reqwest::Method::GET, "/api/tracking-keys", None)
        .await;
    let id = keys[0]["id"].as_str().expect("id").to_owned();
    assert!(keys[0].get("key").is_none(), "the secret is never listed");
    let (status, _) = client
        .call(
            reqwest::Method::DELETE,
            &format!("/api/tracking-keys/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = post_events(
        &stack,
        &key,
        &json!({"events": [{"type": "page_view", "anonymous_id": "x"}]}),
        BROWSER,
    )
    .await;
    assert_eq!(status, 401);
    stack.stop().await;
}
