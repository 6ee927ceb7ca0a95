//! The access rules of DESIGN.md §4 as a matrix: every role against every kind of route, and
//! sales reps against each other's leads (404, never 403, so existence does not leak).

use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser};

struct World {
    app: TestApp,
    admin: TestUser,
    manager: TestUser,
    rep1: TestUser,
    rep2: TestUser,
    /// Owned by rep1.
    lead: String,
}

async fn world() -> World {
    let app = TestApp::spawn().await;
    let admin = app.user("admin").await;
    let manager = app.user("manager").await;
    let rep1 = app.user("sales_rep").await;
    let rep2 = app.user("sales_rep").await;
    let lead = app
        .create_lead(
            &rep1.token,
            json!({"first_name": "Grace", "last_name": "Hopper", "company": "Navy"}),
        )
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    World {
        app,
        admin,
        manager,
        rep1,
        rep2,
        lead,
    }
}

#[tokio::test]
async fn each_role_reaches_exactly_the_routes_it_should() {
    let w = world().await;
    let reps_id = w.rep2.id.to_string();
    // (method, path, body, [admin, manager, rep1]) expected statuses.
    let matrix: Vec<(&str, String, Option<Value>, [u16; 3])> = vec![
        ("GET", "/api/users".into(), None, [200, 200, 403]),
        (
            "GET",
            format!("/api/users/{reps_id}"),
            None,
            [200, 200, 403],
        ),
        (
            "POST",
            "/api/users".into(),
            Some(
                json!({"email": "{role}@example.com", "name": "N", "password": "violet-harbour-engine"}),
            ),
            [201, 201, 403],
        ),
        (
            "POST",
            "/api/users".into(),
            Some(
                json!({"email": "mgr-{role}@example.com", "name": "N", "password": "violet-harbour-engine", "role": "manager"}),
            ),
            [201, 403, 403],
        ),
        (
            "PATCH",
            format!("/api/users/{reps_id}"),
            Some(json!({"name": "Renamed"})),
            [200, 200, 403],
        ),
        ("GET", "/api/audit".into(), None, [200, 403, 403]),
        ("GET", "/debug/routes".into(), None, [200, 403, 403]),
        ("GET", "/debug/database-url".into(), None, [200, 403, 403]),
        (
            "POST",
            "/api/inventory".into(),
            Some(json!({"name": "Car {role}", "category": "suv", "price": 1000})),
            [201, 201, 403],
        ),
        ("GET", "/api/inventory".into(), None, [200, 200, 200]),
        (
            "GET",
            format!("/api/leads/{}", w.lead),
            None,
            [200, 200, 200],
        ),
        ("GET", "/api/leads".into(), None, [200, 200, 200]),
        ("GET", "/api/assignments".into(), None, [200, 200, 200]),
        ("GET", "/api/notifications".into(), None, [200, 200, 200]),
        ("GET", "/api/auth/me".into(), None, [200, 200, 200]),
    ];
    for (method, path, body, expected) in matrix {
        for ((name, user), want) in [
            ("admin", &w.admin),
            ("manager", &w.manager),
            ("sales_rep", &w.rep1),
        ]
        .into_iter()
        .zip(expected)
        {
            let body = body.clone().map(|b| {
                serde_json::from_str(&b.to_string().replace("{role}", name)).expect("json")
            });
            let (status, answer) = w.app.call(method, &path, Some(&user.token), body).await;
            assert_eq!(status, want, "{name} {method} {path}: {answer}");
        }
    }

    let (status, _) = w
        .app
        .call(
            "POST",
            "/api/assignments",
            Some(&w.rep1.token),
            Some(json!({"lead_id": w.lead, "assignee_id": w.rep2.id})),
        )
        .await;
    assert_eq!(status, 403, "reps do not assign");
    let (status, a) = w
        .app
        .call(
            "POST",
            "/api/assignments",
            Some(&w.manager.token),
            Some(json!({"lead_id": w.lead, "assignee_id": w.rep2.id})),
        )
        .await;
    assert_eq!(status, 201, "{a}");
    w.app.stop().await;
}

#[tokio::test]
async fn nobody_raises_their_own_role_and_managers_only_manage_sales_reps() {
    let w = world().await;
    let (status, _) = w
        .app
        .call(
            "PATCH",
            &format!("/api/users/{}", w.manager.id),
            Some(&w.manager.token),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = w
        .app
        .call(
            "PATCH",
            &format!("/api/users/{}", w.admin.id),
            Some(&w.admin.token),
            Some(json!({"role": "manager"})),
        )
        .await;
    assert_eq!(status, 403, "not even admins change their own role");
    let (status, _) = w
        .app
        .call(
            "PATCH",
            &format!("/api/users/{}", w.rep1.id),
            Some(&w.manager.token),
            Some(json!({"role": "manager"})),
        )
        .await;
    assert_eq!(status, 403, "managers cannot promote");
    let (status, _) = w
        .app
        .call(
            "PATCH",
            &format!("/api/users/{}", w.admin.id),
            Some(&w.manager.token),
            Some(json!({"active": false})),
        )
        .await;
    assert_eq!(status, 403, "managers cannot touch admins");
    let roles: Vec<String> = sqlx::query_scalar("select role from users order by role")
        .fetch_all(&w.app.pool)
        .await
        .expect("roles");
    assert_eq!(roles, ["admin", "manager", "sales_rep", "sales_rep"]);

    let (status, _) = w
        .app
        .call(
            "PATCH",
            &format!("/api/users/{}", w.rep1.id),
            Some(&w.manager.token),
            Some(json!({"active": false})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = w
        .app
        .call(
            "POST",
            "/api/auth/refresh",
            None,
            Some(json!({"refresh_token": w.rep1.refresh})),
        )
        .await;
    assert_eq!(
        status, 401,
        "a deactivated user's sessions end at their next refresh"
    );
    w.app.stop().await;
}

#[tokio::test]
async fn a_sales_rep_cannot_see_touch_or_find_another_reps_lead() {
    let w = world().await;
    let lead = &w.lead;
    let other = &w.rep2.token;
    let probes: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", format!("/api/leads/{lead}"), None),
        (
            "PATCH",
            format!("/api/leads/{lead}"),
            Some(json!({"status": "lost"})),
        ),
        ("DELETE", format!("/api/leads/{lead}"), None),
        ("GET", format!("/api/leads/{lead}/activities"), None),
        (
            "POST",
            format!("/api/leads/{lead}/activities"),
            Some(json!({"kind": "call", "summary": "hi"})),
        ),
        ("GET", format!("/api/notes?lead_id={lead}"), None),
        (
            "POST",
            "/api/notes".into(),
            Some(json!({"lead_id": lead, "body": "sneaky"})),
        ),
    ];
    for (method, path, body) in probes {
        let (status, problem) = w.app.call(method, &path, Some(other), body).await;
        assert_eq!(status, 404, "{method} {path}: {problem}");
        assert_eq!(
            problem["detail"], "No such lead.",
            "indistinguishable from a missing lead"
        );
    }
    let (status, missing) = w
        .app
        .call(
            "GET",
            &format!("/api/leads/{}", uuid::Uuid::new_v4()),
            Some(other),
            None,
        )
        .await;
    assert_eq!(
        (status, missing["detail"].clone()),
        (404, json!("No such lead."))
    );

    for path in [
        "/api/leads?q=hopper",
        "/api/leads",
        "/api/leads?assigned_to=me",
    ] {
        let (status, page) = w.app.call("GET", path, Some(other), None).await;
        assert_eq!(status, 200);
        assert_eq!(page["total"], 0, "{path}: {page}");
    }
    let (status, csv) = w
        .app
        .call("GET", "/api/leads/export", Some(other), None)
        .await;
    assert_eq!(status, 200);
    assert!(!csv.as_str().expect("csv").contains("Hopper"));

    let (status, report) = w
        .app
        .call(
            "POST",
            "/api/leads/bulk",
            Some(other),
            Some(json!({"action": "delete", "ids": [lead]})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(report["failed"][0]["status"], 404);

    // Nothing changed for the owner.
    let (status, mine) = w
        .app
        .call(
            "GET",
            &format!("/api/leads/{lead}"),
            Some(&w.rep1.token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (mine["status"].clone(), mine["version"].clone()),
        (json!("new"), json!(1))
    );
    assert_eq!(w.app.count("select count(*) from lead_notes").await, 0);
    w.app.stop().await;
}

#[tokio::test]
async fn fields_a_role_may_not_set_are_refused_and_never_applied() {
    let w = world().await;
    let (status, problem) = w
        .app
        .call(
            "POST",
            "/api/leads",
            Some(&w.rep1.token),
            Some(json!({"first_name": "X", "owner_id": w.rep2.id})),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    let (status, _) = w
        .app
        .call(
            "PATCH",
            &format!("/api/leads/{}", w.lead),
            Some(&w.rep1.token),
            Some(json!({"owner_id": w.rep2.id})),
        )
        .await;
    assert_eq!(status, 422);
    let (status, _) = w
        .app
        .call(
            "PATCH",
            &format!("/api/leads/{}", w.lead),
            Some(&w.rep1.token),
            Some(json!({"score": 100})),
        )
        .await;
    assert_eq!(status, 422);
    let (status, _) = w.app.call("POST", "/api/auth/register", None, Some(json!({"email": "r@example.com", "password": "violet-harbour-engine", "name": "R", "role": "admin"}))).await;
    assert_eq!(status, 422, "register has no role field");
    let owner: Option<uuid::Uuid> = sqlx::query_scalar("select owner_id from leads")
        .fetch_one(&w.app.pool)
        .await
        .expect("owner");
    assert_eq!(owner, Some(w.rep1.id));
    let score: Option<i16> = sqlx::query_scalar("select score from leads")
        .fetch_one(&w.app.pool)
        .await
        .expect("score");
    assert_eq!(score, None);

    // Owners change only through assignments, so every owner has one.
    let (status, problem) = w
        .app
        .call(
            "PATCH",
            &format!("/api/leads/{}", w.lead),
            Some(&w.manager.token),
            Some(json!({"owner_id": w.rep2.id})),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    let (status, lead) = w
        .app
        .call(
            "POST",
            "/api/leads",
            Some(&w.manager.token),
            Some(json!({"first_name": "Assigned", "owner_id": w.rep2.id})),
        )
        .await;
    assert_eq!((status, lead["owner_id"].clone()), (201, json!(w.rep2.id)));
    let (_, assignments) = w
        .app
        .call(
            "GET",
            &format!(
                "/api/assignments?lead_id={}",
                lead["id"].as_str().expect("id")
            ),
            Some(&w.manager.token),
            None,
        )
        .await;
    assert_eq!(assignments["items"][0]["assignee_id"], json!(w.rep2.id));
    w.app.stop().await;
}

#[tokio::test]
async fn a_rep_who_lost_a_lead_cannot_act_on_its_old_assignment() {
    let w = world().await;
    let (_, first) = w
        .app
        .call(
            "POST",
            "/api/assignments",
            Some(&w.manager.token),
            Some(json!({"lead_id": w.lead, "assignee_id": w.rep1.id})),
        )
        .await;
    let first_id = first["id"].as_str().expect("id").to_owned();
    let (status, second) = w
        .app
        .call(
            "POST",
            &format!("/api/assignments/{first_id}/transfer"),
            Some(&w.manager.token),
            Some(json!({"assignee_id": w.rep2.id})),
        )
        .await;
    assert_eq!(status, 201, "{second}");
    let second_id = second["id"].as_str().expect("id");
    for path in [
        format!("/api/assignments/{second_id}/transfer"),
        format!("/api/assignments/{second_id}/complete"),
    ] {
        let (status, _) = w
            .app
            .call(
                "POST",
                &path,
                Some(&w.rep1.token),
                Some(json!({"assignee_id": w.rep1.id})),
            )
            .await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, _) = w
        .app
        .call(
            "POST",
            &format!("/api/assignments/{second_id}/complete"),
            Some(&w.rep2.token),
            None,
        )
        .await;
    assert_eq!(status, 200, "the current assignee completes it");
    w.app.stop().await;
}

#[tokio::test]
async fn a_demoted_or_deactivated_user_loses_access_at_once() {
    let w = world().await;
    let (status, _) = w
        .app
        .call("GET", "/api/users", Some(&w.manager.token), None)
        .await;
    assert_eq!(status, 200);
    let (status, _) = w
        .app
        .call(
            "PATCH",
            &format!("/api/users/{}", w.manager.id),
            Some(&w.admin.token),
            Some(json!({"role": "sales_rep"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, problem) = w
        .app
        .call("GET", "/api/users", Some(&w.manager.token), None)
        .await;
    assert_eq!(
        status, 401,
        "the old token no longer carries the manager role: {problem}"
    );

    let (status, _) = w
        .app
        .call(
            "PATCH",
            &format!("/api/users/{}", w.rep2.id),
            Some(&w.admin.token),
            Some(json!({"active": false})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = w
        .app
        .call("GET", "/api/auth/me", Some(&w.rep2.token), None)
        .await;
    assert_eq!(status, 401);
    let (status, _) = w
        .app
        .call(
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"email": w.rep2.email, "password": crate::helpers::PASSWORD})),
        )
        .await;
    assert_eq!(status, 401, "a deactivated user cannot sign in");
    w.app.stop().await;
}
