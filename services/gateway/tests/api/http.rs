//! Cross-cutting HTTP behaviour: security headers, CORS, request ids, JSON errors everywhere.

use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn responses_carry_security_headers_and_a_request_id() {
    let app = TestApp::spawn().await;
    for path in ["/", "/api/leads", "/health", "/nope"] {
        let response = app.client.get(app.url(path)).send().await.expect("request");
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
        assert!(
            headers["content-security-policy"]
                .to_str()
                .expect("csp")
                .contains("frame-ancestors 'none'"),
            "{path}"
        );
        assert!(!headers["x-request-id"].is_empty(), "{path}");
    }
    let response = app
        .client
        .get(app.url("/"))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .expect("request");
    assert_eq!(
        response.headers()["x-request-id"],
        "trace-me-123",
        "a caller's id is kept"
    );
    app.stop().await;
}

#[tokio::test]
async fn cors_answers_only_the_allowed_origins() {
    let app = TestApp::spawn_with(&["--allowed-origins", "https://app.example.com"]).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/leads"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let allowed = preflight("https://app.example.com")
        .await
        .expect("preflight");
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        allowed
            .headers()
            .get("access-control-allow-credentials")
            .is_none()
    );
    let denied = preflight("https://evil.example.com")
        .await
        .expect("preflight");
    assert!(
        denied
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    app.stop().await;

    let open = TestApp::spawn().await;
    let response = open
        .client
        .get(open.url("/api/leads"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .expect("request");
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "no origins configured, no CORS"
    );
    open.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_problem_json() {
    let app = TestApp::spawn().await;
    let (status, problem) = app.call("GET", "/api/nothing-here", None, None).await;
    assert_eq!(
        (status, problem["type"].clone()),
        (404, json!("https://leadflow.dev/problems/not-found"))
    );
    let response = app
        .client
        .put(app.url("/api/leads"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 405);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(response.headers().get("allow").is_some());
    app.stop().await;
}

#[tokio::test]
async fn notifications_are_listed_and_marked_read_for_their_owner_only() {
    let app = TestApp::spawn().await;
    let rep = app.user("sales_rep").await;
    let other = app.user("sales_rep").await;
    for (user, kind) in [
        (&rep, "assignment"),
        (&rep, "hot_lead"),
        (&other, "assignment"),
    ] {
        sqlx::query("insert into notifications (user_id, kind, payload) values ($1, $2, '{}')")
            .bind(user.id)
            .bind(kind)
            .execute(&app.pool)
            .await
            .expect("notification");
    }
    let (_, page) = app
        .call(
            "GET",
            "/api/notifications?unread=true",
            Some(&rep.token),
            None,
        )
        .await;
    assert_eq!(page["total"], 2);
    assert_eq!(page["items"][0]["kind"], "hot_lead", "newest first");
    let (_, past) = app
        .call(
            "GET",
            "/api/notifications?unread=true&per_page=1&page=3",
            Some(&rep.token),
            None,
        )
        .await;
    assert_eq!(
        (
            past["items"].as_array().expect("items").len(),
            past["total"].clone()
        ),
        (0, json!(2)),
        "a page past the end still counts"
    );
    let first = page["items"][0]["id"].as_str().expect("id").to_owned();
    let (status, _) = app
        .call(
            "POST",
            &format!("/api/notifications/{first}/read"),
            Some(&other.token),
            None,
        )
        .await;
    assert_eq!(status, 404, "not someone else's");
    let (status, read) = app
        .call(
            "POST",
            &format!("/api/notifications/{first}/read"),
            Some(&rep.token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(read["read_at"].is_string());
    let (_, page) = app
        .call(
            "GET",
            "/api/notifications?unread=true",
            Some(&rep.token),
            None,
        )
        .await;
    assert_eq!(page["total"], 1);
    let (_, marked) = app
        .call(
            "POST",
            "/api/notifications/read-all",
            Some(&rep.token),
            None,
        )
        .await;
    assert_eq!(marked["marked"], 1);
    let (_, theirs) = app
        .call(
            "GET",
            "/api/notifications?unread=true",
            Some(&other.token),
            None,
        )
        .await;
    assert_eq!(theirs["total"], 1, "untouched");
    app.stop().await;
}

#[tokio::test]
async fn inventory_is_read_by_all_and_kept_by_managers() {
    let app = TestApp::spawn().await;
    let manager = app.user("manager").await;
    let rep = app.user("sales_rep").await;
    let (status, item) = app
        .call("POST", "/api/inventory", Some(&manager.token), Some(json!({"sku": "EV-1", "name": "Aurora EV", "category": "ev", "price": 31900, "quantity": 3})))
        .await;
    assert_eq!(status, 201, "{item}");
    let (status, _) = app
        .call(
            "POST",
            "/api/inventory",
            Some(&manager.token),
            Some(json!({"sku": "EV-1", "name": "Twin", "category": "ev", "price": 1})),
        )
        .await;
    assert_eq!(status, 409, "SKU is unique");
    let (status, problem) = app
        .call(
            "POST",
            "/api/inventory",
            Some(&manager.token),
            Some(json!({"name": "No price"})),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(
        problem["errors"].as_array().expect("errors").len(),
        2,
        "category and price: {problem}"
    );
    let id = item["id"].as_str().expect("id");
    let (status, updated) = app
        .call(
            "PATCH",
            &format!("/api/inventory/{id}"),
            Some(&manager.token),
            Some(json!({"quantity": 0})),
        )
        .await;
    assert_eq!(
        (
            status,
            updated["quantity"].clone(),
            updated["price"].clone()
        ),
        (200, json!(0), json!(31900.0))
    );
    let (_, in_stock) = app
        .call(
            "GET",
            "/api/inventory?in_stock=true",
            Some(&rep.token),
            None,
        )
        .await;
    assert_eq!(in_stock["total"], 0);
    let (_, all) = app
        .call("GET", "/api/inventory?category=EV", Some(&rep.token), None)
        .await;
    assert_eq!(all["total"], 1);
    let (status, _) = app
        .call(
            "DELETE",
            &format!("/api/inventory/{id}"),
            Some(&rep.token),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = app
        .call(
            "DELETE",
            &format!("/api/inventory/{id}"),
            Some(&manager.token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    app.stop().await;
}

#[tokio::test]
async fn notes_belong_to_their_author_and_the_leads_reader() {
    let app = TestApp::spawn().await;
    let manager = app.user("manager").await;
    let rep = app.user("sales_rep").await;
    let lead = app
        .create_lead(&rep.token, json!({"first_name": "Noted"}))
        .await;
    let (status, note) = app
        .call(
            "POST",
            "/api/notes",
            Some(&manager.token),
            Some(json!({"lead_id": lead["id"], "body": "  Wants a test drive <b>soon</b>  "})),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        note["body"], "Wants a test drive <b>soon</b>",
        "trimmed, stored as data"
    );
    let id = note["id"].as_str().expect("id");
    let (status, _) = app
        .call(
            "PATCH",
            &format!("/api/notes/{id}"),
            Some(&rep.token),
            Some(json!({"body": "changed"})),
        )
        .await;
    assert_eq!(status, 403, "only the author or a manager edits");
    let (status, _) = app
        .call(
            "PATCH",
            &format!("/api/notes/{id}"),
            Some(&manager.token),
            Some(json!({"body": ""})),
        )
        .await;
    assert_eq!(status, 422);
    let (status, listed) = app
        .call(
            "GET",
            &format!("/api/notes?lead_id={}", lead["id"].as_str().expect("id")),
            Some(&rep.token),
            None,
        )
        .await;
    assert_eq!((status, listed.as_array().expect("notes").len()), (200, 1));
    let (status, _) = app
        .call(
            "DELETE",
            &format!("/api/notes/{id}"),
            Some(&manager.token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    app.stop().await;
}

#[tokio::test]
async fn a_request_that_runs_too_long_is_answered_503() {
    let app = TestApp::spawn_degraded(&["--request-timeout", "5ms"]).await;
    // Signing in hashes with argon2, which takes far longer than 5 ms.
    let (status, problem) = app
        .call(
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"email": "x@example.com", "password": "long-enough-password"})),
        )
        .await;
    assert_eq!(status, 503, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("took longer"),
        "{problem}"
    );
    app.stop_degraded().await;
}

#[tokio::test]
async fn each_user_has_an_api_rate_limit() {
    let app = TestApp::spawn_with(&["--api-rate-per-token", "3/1m"]).await;
    let rep = app.user("sales_rep").await;
    for _ in 0..3 {
        let (status, _) = app
            .call("GET", "/api/auth/me", Some(&rep.token), None)
            .await;
        assert_eq!(status, 200);
    }
    let response = app
        .client
        .get(app.url("/api/auth/me"))
        .bearer_auth(&rep.token)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 429);
    assert!(response.headers().get("retry-after").is_some());
    let other = app.user("sales_rep").await;
    let (status, _) = app
        .call("GET", "/api/auth/me", Some(&other.token), None)
        .await;
    assert_eq!(status, 200, "the limit is per user");
    app.stop().await;
}
