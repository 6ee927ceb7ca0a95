//! `/openapi.json` describes exactly what the router serves.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::helpers::TestApp;

fn operations(spec: &Value) -> Vec<(String, String, String)> {
    let mut all = Vec::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("item") {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                let id = operation["operationId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                all.push((method.to_uppercase(), path.clone(), id));
            }
        }
    }
    all
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let app = TestApp::spawn().await;
    let admin = app.user("admin").await;
    let (status, spec) = app.call("GET", "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        spec["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(spec["components"]["schemas"]["ProblemDoc"].is_object());
    let operations = operations(&spec);
    assert!(operations.len() >= 40, "{}", operations.len());
    for (method, path, _) in &operations {
        let concrete = path.replace("{id}", &uuid::Uuid::new_v4().to_string());
        let body = (method != "GET" && method != "DELETE").then(|| json!({}));
        let (status, answer) = app.call(method, &concrete, Some(&admin.token), body).await;
        assert_ne!(status, 405, "{method} {path} is documented but not routed");
        let unrouted = status == 404
            && answer["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("No route matches"));
        assert!(!unrouted, "{method} {path} is documented but not routed");
        assert!(status < 500, "{method} {path}: {status} {answer}");
    }
    // Every operation documents its errors as problem+json.
    for (method, path, _) in &operations {
        let responses = &spec["paths"][path][method.to_lowercase()]["responses"];
        assert!(
            responses.as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path} documents no responses"
        );
    }
    app.stop().await;
}

/// Handler names registered with `routes!(...)` and paths registered with `.route("...")`.
fn registrations() -> (BTreeSet<String>, BTreeSet<String>) {
    let mut handlers = BTreeSet::new();
    let mut paths = BTreeSet::new();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![src];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).expect("src dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("source");
            for chunk in text.split("routes!(").skip(1) {
                let inside = chunk.split(')').next().unwrap_or_default();
                for name in inside.split(',') {
                    let name = name.trim().rsplit("::").next().unwrap_or_default();
                    if !name.is_empty() {
                        handlers.insert(name.to_owned());
                    }
                }
            }
            for chunk in text.split(".route(\"").skip(1) {
                paths.insert(chunk.split('"').next().unwrap_or_default().to_owned());
            }
        }
    }
    (handlers, paths)
}

#[tokio::test]
async fn every_route_the_router_registers_is_documented() {
    let app = TestApp::spawn().await;
    let (_, spec) = app.call("GET", "/openapi.json", None, None).await;
    let documented_ids: BTreeSet<String> =
        operations(&spec).into_iter().map(|(_, _, id)| id).collect();
    let documented_paths: BTreeSet<String> = operations(&spec)
        .into_iter()
        .map(|(_, path, _)| path)
        .collect();
    let (handlers, paths) = registrations();
    assert!(handlers.len() >= 35, "{handlers:?}");
    for handler in &handlers {
        assert!(
            documented_ids.contains(handler),
            "{handler} is routed but not in /openapi.json"
        );
    }
    // Plain `.route` registrations: the meta routes. /openapi.json describes itself implicitly.
    for path in paths
        .iter()
        .filter(|p| *p != "/openapi.json" && *p != "/redoc")
    {
        assert!(
            documented_paths.contains(path),
            "{path} is routed but not in /openapi.json"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn the_docs_are_served_by_the_gateway_itself() {
    let app = TestApp::spawn().await;
    let (status, page) = app.call("GET", "/docs/", None, None).await;
    assert_eq!(status, 200);
    let html = page.as_str().expect("html");
    assert!(html.contains("swagger-ui"), "{html}");
    for asset in html
        .split("src=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap_or_default())
    {
        assert!(
            !asset.starts_with("http"),
            "loads {asset} from the internet"
        );
        let (status, _) = app
            .call(
                "GET",
                &format!("/docs/{}", asset.trim_start_matches("./")),
                None,
                None,
            )
            .await;
        assert_eq!(status, 200, "{asset}");
    }
    let (status, list) = app.call("GET", "/api", None, None).await;
    assert_eq!(status, 200);
    assert!(
        list["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .any(|e| e["path"] == "/api/leads" && e["method"] == "POST")
    );
    app.stop().await;
}
