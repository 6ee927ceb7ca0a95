use serde_json::{Value, json};

use crate::helpers::TestApp;

/// first_name, last_name, company, budget, tags, repeat_customer, status
type LeadFields = (
    String,
    String,
    Option<String>,
    Option<f64>,
    Vec<String>,
    bool,
    String,
);

async fn snapshot(app: &TestApp) -> Value {
    let rows: Vec<sqlx::types::Json<Value>> =
        sqlx::query_scalar("select to_jsonb(l) - 'search_text' from leads l order by id")
            .fetch_all(&app.pool)
            .await
            .expect("snapshot");
    Value::Array(rows.into_iter().map(|r| r.0).collect())
}

#[tokio::test]
async fn create_read_update_with_optimistic_locking_and_soft_delete() {
    let app = TestApp::spawn().await;
    let rep = app.user("sales_rep").await;
    let lead = app
        .create_lead(&rep.token, json!({"first_name": " Ada ", "last_name": "Lovelace", "email": "ADA@Example.com", "budget": 12500.555, "tags": ["VIP", "vip", "ev"]}))
        .await;
    assert_eq!(lead["email"], "ada@example.com");
    assert_eq!(lead["first_name"], "Ada");
    assert_eq!(lead["budget"], 12500.56);
    assert_eq!(lead["tags"], json!(["vip", "ev"]));
    assert_eq!(
        (lead["status"].clone(), lead["version"].clone()),
        (json!("new"), json!(1))
    );
    assert_eq!(lead["owner_id"], json!(rep.id));
    let id = lead["id"].as_str().expect("id");

    let (status, updated) = app
        .call(
            "PATCH",
            &format!("/api/leads/{id}"),
            Some(&rep.token),
            Some(json!({"status": "contacted", "phone": "+1 555 0100", "version": 1})),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(
        (updated["status"].clone(), updated["version"].clone()),
        (json!("contacted"), json!(2))
    );

    let before = snapshot(&app).await;
    let (status, problem) = app
        .call(
            "PATCH",
            &format!("/api/leads/{id}"),
            Some(&rep.token),
            Some(json!({"status": "won", "version": 1})),
        )
        .await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(
        snapshot(&app).await,
        before,
        "a stale write changes nothing"
    );

    let (status, activities) = app
        .call(
            "GET",
            &format!("/api/leads/{id}/activities"),
            Some(&rep.token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        activities[0]["kind"], "status_change",
        "status changes are logged: {activities}"
    );
    assert_eq!(
        activities[0]["details"],
        json!({"from": "new", "to": "contacted"})
    );

    let (status, _) = app
        .call(
            "PATCH",
            &format!("/api/leads/{id}"),
            Some(&rep.token),
            Some(json!({"phone": null})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, fetched) = app
        .call("GET", &format!("/api/leads/{id}"), Some(&rep.token), None)
        .await;
    assert_eq!(fetched["phone"], Value::Null, "null clears");
    assert_eq!(fetched["status"], "contacted", "absent fields stay");

    let (status, _) = app
        .call(
            "DELETE",
            &format!("/api/leads/{id}"),
            Some(&rep.token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = app
        .call("GET", &format!("/api/leads/{id}"), Some(&rep.token), None)
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        app.count("select count(*) from leads where deleted_at is not null")
            .await,
        1,
        "kept for history"
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_input_gets_its_status_and_a_problem_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let rep = app.user("sales_rep").await;
    let lead = app
        .create_lead(
            &rep.token,
            json!({"first_name": "Keep", "company": "Stable"}),
        )
        .await;
    let id = lead["id"].as_str().expect("id").to_owned();
    let before = snapshot(&app).await;
    let url = app.url(&format!("/api/leads/{id}"));

    let send = |method: reqwest::Method, content_type: Option<&'static str>, body: Vec<u8>| {
        let mut request = app
            .client
            .request(method, url.clone())
            .bearer_auth(&rep.token)
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        async move {
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            let content_type = response.headers()["content-type"]
                .to_str()
                .expect("type")
                .to_owned();
            let problem: Value = response.json().await.expect("problem body");
            (status, content_type, problem)
        }
    };
    let cases: Vec<(&str, Option<&'static str>, Vec<u8>, u16)> = vec![
        (
            "malformed JSON",
            Some("application/json"),
            b"{\"status\": ".to_vec(),
            400,
        ),
        (
            "wrong content type",
            Some("text/plain"),
            b"{\"status\": \"won\"}".to_vec(),
            415,
        ),
        (
            "no content type",
            None,
            b"{\"status\": \"won\"}".to_vec(),
            415,
        ),
        (
            "unknown status",
            Some("application/json"),
            br#"{"status": "maybe"}"#.to_vec(),
            422,
        ),
        (
            "wrong type",
            Some("application/json"),
            br#"{"budget": "lots"}"#.to_vec(),
            422,
        ),
        (
            "invalid email",
            Some("application/json"),
            br#"{"email": "not-an-email"}"#.to_vec(),
            422,
        ),
        (
            "negative budget",
            Some("application/json"),
            br#"{"budget": -5}"#.to_vec(),
            422,
        ),
        (
            "too large",
            Some("application/json"),
            format!("{{\"interest\": \"{}\"}}", "x".repeat(1024 * 1024 + 10)).into_bytes(),
            413,
        ),
    ];
    for (name, content_type, body, want) in cases {
        let (status, kind, problem) = send(reqwest::Method::PATCH, content_type, body).await;
        assert_eq!(status, want, "{name}: {problem}");
        assert_eq!(kind, "application/problem+json", "{name}");
        assert_eq!(problem["status"], want, "{name}");
        assert!(
            problem["type"]
                .as_str()
                .expect("type")
                .starts_with("https://leadflow.dev/problems/")
        );
        assert!(
            problem["detail"].as_str().expect("detail").len() > 5,
            "{name}: a useful detail"
        );
    }
    let (status, problem) = app
        .call(
            "POST",
            "/api/leads",
            Some(&rep.token),
            Some(json!({"email": "bad", "budget": -1, "tags": [""]})),
        )
        .await;
    assert_eq!(status, 422);
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().expect("field"))
        .collect();
    assert_eq!(
        fields,
        ["email", "budget", "tags"],
        "every invalid field is listed"
    );
    let (status, _) = app
        .call("POST", "/api/leads", Some(&rep.token), Some(json!({})))
        .await;
    assert_eq!(status, 422, "a lead needs a name, e-mail or company");
    let (status, problem) = app
        .call(
            "PATCH",
            &format!("/api/leads/{id}"),
            Some(&rep.token),
            Some(json!({"budget": "lots"})),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(
        problem["errors"][0]["field"], "budget",
        "a wrong type names its field: {problem}"
    );

    assert_eq!(snapshot(&app).await, before);
    assert_eq!(app.count("select count(*) from leads").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn list_filters_searches_sorts_and_paginates() {
    let app = TestApp::spawn().await;
    let manager = app.user("manager").await;
    let rep = app.user("sales_rep").await;
    for (i, (name, company, status)) in [
        ("Alice", "Acme Rockets", "new"),
        ("Bob", "Bobcat Tools", "qualified"),
        ("Carol", "Acme Anvils", "won"),
        ("Dan", "Zenith", "qualified"),
        ("Eve", "Acme Labs", "lost"),
    ]
    .into_iter()
    .enumerate()
    {
        let owner = if i % 2 == 0 {
            json!(rep.id)
        } else {
            Value::Null
        };
        app.create_lead(
            &manager.token,
            json!({"first_name": name, "company": company, "status": status, "owner_id": owner}),
        )
        .await;
    }
    sqlx::query("update leads set score = case first_name when 'Alice' then 90 when 'Bob' then 40 when 'Carol' then 75 when 'Dan' then 10 else 55 end, tier = case when first_name in ('Alice', 'Carol') then 'hot' else 'cold' end")
        .execute(&app.pool)
        .await
        .expect("scores");

    let names = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|l| l["first_name"].as_str().expect("name").to_owned())
            .collect()
    };
    let token = manager.token.as_str();
    assert_eq!(
        names(&page(&app, token, "/api/leads?q=acme&sort=-score").await),
        ["Alice", "Carol", "Eve"]
    );
    assert_eq!(
        names(&page(&app, token, "/api/leads?q=ACME%20an").await),
        ["Carol"],
        "search ignores case"
    );
    assert_eq!(
        names(
            &page(
                &app,
                token,
                "/api/leads?status=qualified,won&sort=last_name,-score"
            )
            .await
        ),
        ["Carol", "Bob", "Dan"]
    );
    assert_eq!(
        names(&page(&app, token, "/api/leads?tier=hot&sort=score").await),
        ["Carol", "Alice"]
    );
    assert_eq!(
        names(
            &page(
                &app,
                token,
                "/api/leads?min_score=40&max_score=75&sort=-score"
            )
            .await
        ),
        ["Carol", "Eve", "Bob"]
    );
    assert_eq!(
        names(
            &page(
                &app,
                token,
                &format!("/api/leads?owner_id={}&sort=score", rep.id)
            )
            .await
        ),
        ["Eve", "Carol", "Alice"]
    );
    assert_eq!(
        names(&page(&app, &rep.token, "/api/leads?assigned_to=me&sort=-score").await),
        ["Alice", "Carol", "Eve"]
    );
    assert_eq!(
        page(&app, token, "/api/leads?created_after=2000-01-01").await["total"],
        5
    );
    assert_eq!(
        page(&app, token, "/api/leads?created_after=2999-01-01").await["total"],
        0
    );

    let first = page(&app, token, "/api/leads?sort=-score&per_page=2&page=1").await;
    let second = page(&app, token, "/api/leads?sort=-score&per_page=2&page=2").await;
    let past = page(&app, token, "/api/leads?sort=-score&per_page=2&page=9").await;
    assert_eq!(
        (
            first["total"].clone(),
            first["page"].clone(),
            first["per_page"].clone()
        ),
        (json!(5), json!(1), json!(2))
    );
    assert_eq!(names(&first), ["Alice", "Carol"]);
    assert_eq!(names(&second), ["Eve", "Bob"]);
    assert_eq!(
        (names(&past).len(), past["total"].clone()),
        (0, json!(5)),
        "past the end still counts"
    );

    for (path, needle) in [
        ("/api/leads?colour=red", "allowed: q, status"),
        ("/api/leads?sort=-password", "allowed: score, created_at"),
        ("/api/leads?per_page=101", "per_page"),
        ("/api/leads?status=maybe", "allowed: new, contacted"),
        ("/api/leads?owner_id=not-a-uuid", "UUID"),
    ] {
        let (status, problem) = app.call("GET", path, Some(token), None).await;
        assert_eq!(status, 400, "{path}");
        assert!(
            problem["detail"].as_str().expect("detail").contains(needle),
            "{path}: {problem}"
        );
    }
    app.stop().await;
}

async fn page(app: &TestApp, token: &str, path: &str) -> Value {
    let (status, page) = app.call("GET", path, Some(token), None).await;
    assert_eq!(status, 200, "{path}: {page}");
    page
}

#[tokio::test]
async fn csv_import_keeps_good_rows_reports_bad_ones_and_export_round_trips() {
    let app = TestApp::spawn().await;
    let rep = app.user("sales_rep").await;
    let csv = "first_name,last_name,email,company,status,budget,tags,repeat_customer\n\
               Ada,Lovelace,ada@example.com,Analytical,qualified,5000,vip;ev,true\n\
               ,,not-an-email,,,,,\n\
               Grace,Hopper,grace@example.com,\"Navy, US\",new,,,\n\
               Bad,Status,,,maybe,abc,,\n\
               =HYPERLINK(\"x\"),Formula,,Sheets Inc,,,,\n";
    let response = app
        .client
        .post(app.url("/api/leads/import"))
        .bearer_auth(&rep.token)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .expect("import");
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.expect("report");
    assert_eq!(
        (report["imported"].clone(), report["rejected"].clone()),
        (json!(3), json!(2)),
        "{report}"
    );
    let statuses: Vec<&str> = report["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["status"].as_str().expect("status"))
        .collect();
    assert_eq!(
        statuses,
        ["imported", "rejected", "imported", "rejected", "imported"]
    );
    assert!(
        report["rows"][1]["errors"][0]
            .as_str()
            .expect("why")
            .contains("email"),
        "{report}"
    );
    assert!(
        report["rows"][3]["errors"].to_string().contains("status"),
        "{report}"
    );
    assert_eq!(app.count("select count(*) from leads").await, 3);

    let (status, exported) = app
        .call(
            "GET",
            "/api/leads/export?sort=last_name",
            Some(&rep.token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let exported = exported.as_str().expect("csv").to_owned();
    assert!(
        exported.contains("'=HYPERLINK"),
        "formulas are neutralised: {exported}"
    );
    assert!(exported.contains("\"Navy, US\""));

    // Importing the export as it is creates the same leads again.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(exported.clone().into_bytes())
            .file_name("leads.csv")
            .mime_str("text/csv")
            .expect("mime"),
    );
    let response = app
        .client
        .post(app.url("/api/leads/import"))
        .bearer_auth(&rep.token)
        .multipart(form)
        .send()
        .await
        .expect("re-import");
    assert_eq!(response.status(), 200);
    let again: Value = response.json().await.expect("report");
    assert_eq!(again["imported"], 3, "{again}");
    let pairs: Vec<LeadFields> = sqlx::query_as(
        "select first_name, last_name, company, budget::float8, tags, repeat_customer, status from leads order by last_name, created_at",
    )
    .fetch_all(&app.pool)
    .await
    .expect("leads");
    assert_eq!(pairs.len(), 6);
    for chunk in pairs.chunks(2) {
        assert_eq!(chunk[0], chunk[1], "round trip keeps every field");
    }
    app.stop().await;
}

#[tokio::test]
async fn bulk_changes_each_lead_on_its_own_and_reports_each() {
    let app = TestApp::spawn().await;
    let manager = app.user("manager").await;
    let rep = app.user("sales_rep").await;
    let mut ids = Vec::new();
    for name in ["One", "Two", "Three"] {
        ids.push(
            app.create_lead(&manager.token, json!({"first_name": name}))
                .await["id"]
                .clone(),
        );
    }
    let missing = uuid::Uuid::new_v4();
    let (status, report) = app
        .call("POST", "/api/leads/bulk", Some(&manager.token), Some(json!({"action": "assign", "ids": [ids[0], ids[1], missing], "assignee_id": rep.id})))
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["succeeded"].as_array().expect("ok").len(), 2);
    assert_eq!(
        report["failed"][0],
        json!({"id": missing, "status": 404, "detail": "lead not found"})
    );
    assert_eq!(
        app.count("select count(*) from assignments where status = 'active'")
            .await,
        2
    );
    assert_eq!(
        app.count(&format!(
            "select count(*) from leads where owner_id = '{}'",
            rep.id
        ))
        .await,
        2
    );

    let (status, report) = app
        .call("POST", "/api/leads/bulk", Some(&rep.token), Some(json!({"action": "update", "ids": [ids[0], ids[2]], "changes": {"status": "contacted"}})))
        .await;
    assert_eq!(status, 200);
    assert_eq!(report["succeeded"], json!([ids[0]]), "{report}");
    assert_eq!(
        report["failed"][0]["status"], 404,
        "the rep does not own the third"
    );

    let (status, report) = app
        .call(
            "POST",
            "/api/leads/bulk",
            Some(&manager.token),
            Some(json!({"action": "delete", "ids": ids})),
        )
        .await;
    assert_eq!(
        (status, report["succeeded"].as_array().expect("ok").len()),
        (200, 3)
    );
    assert_eq!(
        app.count("select count(*) from assignments where status = 'active'")
            .await,
        0
    );
    let (status, _) = app
        .call(
            "POST",
            "/api/leads/bulk",
            Some(&rep.token),
            Some(json!({"action": "assign", "ids": [ids[0]], "assignee_id": rep.id})),
        )
        .await;
    assert_eq!(status, 403);
    app.stop().await;
}
