//! Regressions found by fuzzing the API through its own OpenAPI document
//! (`tests/schemathesis/run.sh`): hostile input gets a 4xx problem that says what is wrong, never
//! a 500, and the document describes what the server answers.

use serde_json::{Value, json};

use crate::helpers::TestApp;

#[tokio::test]
async fn a_nul_character_in_a_body_is_a_422_naming_the_field_not_a_500() {
    let app = TestApp::spawn().await;
    let admin = app.user("admin").await;
    let (status, problem) = app
        .call(
            "POST",
            "/api/auth/register",
            None,
            Some(json!({"email": "nul@example.com", "password": "a long and unusual passphrase", "name": "A\u{0}B"})),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "name", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("name"))
    );

    let lead = app
        .create_lead(&admin.token, json!({"first_name": "Ada"}))
        .await;
    let (status, problem) = app
        .call(
            "PATCH",
            &format!("/api/leads/{}", lead["id"].as_str().expect("id")),
            Some(&admin.token),
            Some(json!({"custom": {"nested": ["ok", "bad\u{0}"]}})),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(
        problem["errors"][0]["field"], "custom.nested[1]",
        "{problem}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_nul_character_in_a_query_is_a_400_not_a_500() {
    let app = TestApp::spawn().await;
    let admin = app.user("admin").await;
    for path in [
        "/api/inventory?category=a%00b",
        "/api/audit?action=x%00",
        "/api/leads?q=a%00b",
        "/api/leads?tag=%00",
        "/api/leads/export?source=a%00",
    ] {
        let (status, problem) = app.call("GET", path, Some(&admin.token), None).await;
        assert_eq!(status, 400, "{path}: {problem}");
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("NUL")),
            "{path}: {problem}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_key_given_twice_is_refused_not_guessed_at() {
    let app = TestApp::spawn().await;
    let admin = app.user("admin").await;
    let lead = app
        .create_lead(&admin.token, json!({"first_name": "Ada"}))
        .await;
    let path = format!("/api/leads/{}", lead["id"].as_str().expect("id"));
    for body in [
        r#"{"first_name": "Grace", "first_name": "Mallory"}"#,
        r#"{"custom": {"plan": "pro", "plan": "free"}}"#,
    ] {
        let response = app
            .client
            .patch(app.url(&path))
            .bearer_auth(&admin.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("patch");
        assert_eq!(response.status(), 422, "{body}");
        let problem: Value = response.json().await.expect("problem");
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("duplicate key")),
            "{body}: {problem}"
        );
    }
    let (_, stored) = app.call("GET", &path, Some(&admin.token), None).await;
    assert_eq!(stored["first_name"], "Ada", "nothing changed: {stored}");
    assert_eq!(stored["version"], lead["version"], "{stored}");
    app.stop().await;
}

#[tokio::test]
async fn a_json_body_that_is_not_an_object_is_refused() {
    let app = TestApp::spawn().await;
    let admin = app.user("admin").await;
    // serde fills a struct from an array of its fields in order; the API takes objects only.
    for body in [
        json!([null, null]),
        json!(["Ada", null]),
        json!("Ada"),
        json!(3),
    ] {
        let (status, problem) = app
            .call(
                "PATCH",
                "/api/auth/me",
                Some(&admin.token),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, 422, "{body}: {problem}");
        assert_eq!(problem["errors"][0]["field"], "body", "{body}: {problem}");
    }
    let (_, me) = app
        .call("GET", "/api/auth/me", Some(&admin.token), None)
        .await;
    assert_eq!(me["name"], "Test admin", "nothing changed: {me}");
    app.stop().await;
}

#[tokio::test]
async fn a_webhook_url_with_an_upper_case_scheme_is_stored_not_a_500() {
    let app = TestApp::spawn().await;
    let admin = app.user("admin").await;
    let (status, webhook) = app
        .call(
            "POST",
            "/api/webhooks",
            Some(&admin.token),
            Some(json!({"url": "HTTPS://hooks.example.com/leadflow"})),
        )
        .await;
    assert_eq!(status, 201, "{webhook}");
    assert_eq!(webhook["url"], "https://hooks.example.com/leadflow");
    let id = webhook["id"].as_str().expect("id");
    let (status, webhook) = app
        .call(
            "PATCH",
            &format!("/api/webhooks/{id}"),
            Some(&admin.token),
            Some(json!({"url": "Http://hooks.example.com/other"})),
        )
        .await;
    assert_eq!(status, 200, "{webhook}");
    assert_eq!(webhook["url"], "http://hooks.example.com/other");
    app.stop().await;
}

#[tokio::test]
async fn an_out_of_range_query_parameter_is_a_400_like_every_other() {
    let app = TestApp::spawn().await;
    let admin = app.user("admin").await;
    let (_, webhook) = app
        .call(
            "POST",
            "/api/webhooks",
            Some(&admin.token),
            Some(json!({"url": "https://hooks.example.com/leadflow"})),
        )
        .await;
    let id = webhook["id"].as_str().expect("id");
    let (status, problem) = app
        .call(
            "GET",
            &format!("/api/webhooks/{id}/deliveries?limit=1000"),
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("limit"))
    );
    app.stop().await;
}

fn operations(spec: &Value) -> impl Iterator<Item = (&String, &String, &Value)> {
    spec["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(path, item)| {
            item.as_object()
                .into_iter()
                .flatten()
                .map(move |(method, operation)| (path, method, operation))
        })
}

#[tokio::test]
async fn the_document_describes_errors_as_problems_and_parameters_where_they_are_read() {
    let app = TestApp::spawn().await;
    let (_, spec) = app.call("GET", "/openapi.json", None, None).await;
    for (path, method, operation) in operations(&spec) {
        let responses = operation["responses"].as_object().expect("responses");
        for (status, response) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                let content = response["content"].as_object().expect("content");
                assert!(
                    content.keys().all(|k| k == "application/problem+json"),
                    "{method} {path} {status}: {content:?}"
                );
            }
        }
        if operation.get("security").is_some() {
            for status in ["401", "429"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} lacks {status}"
                );
            }
            assert!(
                responses["429"]["headers"].get("Retry-After").is_some(),
                "{method} {path}"
            );
        }
        if operation["requestBody"]["content"]
            .get("application/json")
            .is_some()
        {
            for status in ["400", "413", "415", "422"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} lacks {status}"
                );
            }
        }
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            let name = parameter["name"].as_str().expect("name");
            let placeholder = format!("{{{name}}}");
            let expected = if path.contains(&placeholder) {
                "path"
            } else {
                "query"
            };
            assert_eq!(parameter["in"], expected, "{method} {path} {name}");
            assert!(
                !parameter["schema"]["type"]
                    .as_array()
                    .is_some_and(|t| t.contains(&json!("null"))),
                "{method} {path} {name} is nullable"
            );
        }
    }
    // A score's breakdown is the scorer's list of contributions, not an object.
    let breakdown = &spec["components"]["schemas"]["ScoreRecord"]["properties"]["breakdown"];
    assert_eq!(breakdown["type"], "array", "{breakdown}");
    app.stop().await;
}

#[tokio::test]
async fn a_huge_number_in_free_form_json_reads_back_instead_of_a_500() {
    let app = TestApp::spawn().await;
    let admin = app.user("admin").await;
    // jsonb keeps the number exactly and answers it as 309 digits; reading that back must give
    // the same f64, not "number out of range".
    let lead = app
        .create_lead(
            &admin.token,
            json!({"first_name": "Ada", "custom": {"big": f64::MAX, "tiny": -f64::MAX}, "utm": {"n": 7.0072935250900616e16}}),
        )
        .await;
    assert_eq!(lead["custom"]["big"], json!(f64::MAX), "{lead}");
    let (status, read) = app
        .call(
            "GET",
            &format!("/api/leads/{}", lead["id"].as_str().expect("id")),
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["custom"]["tiny"], json!(-f64::MAX), "{read}");
    app.stop().await;
}
