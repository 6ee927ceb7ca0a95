use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn prioritized_puts_the_best_open_leads_first_and_reps_see_only_theirs() {
    let app = TestApp::spawn().await;
    let manager = app.user("manager").await;
    let rep = app.user("sales_rep").await;
    for (name, score, status, mine) in [
        ("Low", 20, "new", true),
        ("Top", 95, "qualified", false),
        ("Mid", 60, "contacted", true),
        ("Won", 99, "won", true),
        ("High", 80, "new", true),
    ] {
        let token = if mine { &rep.token } else { &manager.token };
        let lead = app
            .create_lead(token, json!({"first_name": name, "status": status}))
            .await;
        sqlx::query("update leads set score = $2 where id = $1::uuid")
            .bind(lead["id"].as_str().expect("id"))
            .bind(score as i16)
            .execute(&app.pool)
            .await
            .expect("score");
    }
    let names = |list: &serde_json::Value| -> Vec<String> {
        list.as_array()
            .expect("list")
            .iter()
            .map(|p| p["lead"]["first_name"].as_str().expect("name").to_owned())
            .collect()
    };
    let (status, all) = app
        .call(
            "GET",
            "/api/leads/prioritized?limit=3",
            Some(&manager.token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        names(&all),
        ["Top", "High", "Mid"],
        "closed leads are not worth a call"
    );
    let (_, mine) = app
        .call("GET", "/api/leads/prioritized", Some(&rep.token), None)
        .await;
    assert_eq!(names(&mine), ["High", "Mid", "Low"]);
    assert!(mine[0]["insights"].is_array());
    let (status, _) = app
        .call(
            "GET",
            "/api/leads/prioritized?limit=500",
            Some(&rep.token),
            None,
        )
        .await;
    assert_eq!(status, 400);
    app.stop().await;
}

#[tokio::test]
async fn asking_for_a_fresh_score_without_a_scorer_is_a_quick_503() {
    let app = TestApp::spawn().await;
    let rep = app.user("sales_rep").await;
    let lead = app
        .create_lead(&rep.token, json!({"first_name": "Waiting"}))
        .await;
    let id = lead["id"].as_str().expect("id");
    let (status, problem) = app
        .call(
            "POST",
            &format!("/api/leads/{id}/score"),
            Some(&rep.token),
            None,
        )
        .await;
    assert_eq!(status, 503, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("scorer")
    );
    let (status, _) = app
        .call(
            "GET",
            &format!("/api/leads/{id}/score"),
            Some(&rep.token),
            None,
        )
        .await;
    assert_eq!(status, 404, "not scored yet");
    let other = app.user("sales_rep").await;
    let (status, _) = app
        .call(
            "GET",
            &format!("/api/leads/{id}/events"),
            Some(&other.token),
            None,
        )
        .await;
    assert_eq!(status, 404, "another rep's lead");
    app.stop().await;
}
