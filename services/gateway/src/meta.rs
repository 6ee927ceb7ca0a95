//! Around the API: service information, the endpoint list, API docs, and admin-only debugging.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderValue, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};
use utoipa::openapi::OpenApi;

use crate::{
    error::ApiResult,
    extract::Auth,
    policy::{Permission, require},
    state::AppState,
};

#[derive(Clone)]
pub struct MetaState {
    pub app: AppState,
    pub spec: Arc<OpenApi>,
}

/// Routes that need the finished OpenAPI document, so they are added after it is built.
pub fn router(app: AppState, spec: Arc<OpenApi>) -> Router {
    Router::new()
        .route("/api", get(endpoint_list))
        .route("/openapi.json", get(openapi_json))
        .route("/redoc", get(redoc))
        .route("/debug/routes", get(debug_routes))
        .route("/debug/database-url", get(debug_database_url))
        .with_state(MetaState { app, spec })
}

impl axum::extract::FromRef<MetaState> for AppState {
    fn from_ref(meta: &MetaState) -> AppState {
        meta.app.clone()
    }
}

/// What this is and where to go next.
#[utoipa::path(get, path = "/", tag = "meta", responses((status = 200, body = Object)))]
pub async fn service_info(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "service": state.platform.service,
        "version": state.platform.version,
        "description": "leadflow gateway: REST API for leads, scores, assignments and notifications",
        "links": {
            "api": "/api",
            "docs": "/docs",
            "redoc": "/redoc",
            "openapi": "/openapi.json",
            "health": "/health",
            "health_json": "/health.json",
            "metrics": "/metrics",
        },
    }))
}

/// `(method, path, summary)` of every operation in the document.
fn operations(spec: &OpenApi) -> Vec<(String, String, String)> {
    let mut all = Vec::new();
    for (path, item) in &spec.paths.paths {
        let methods = [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("PATCH", &item.patch),
            ("DELETE", &item.delete),
        ];
        for (method, operation) in methods {
            if let Some(operation) = operation {
                let summary = operation
                    .summary
                    .clone()
                    .or_else(|| operation.description.clone())
                    .unwrap_or_default();
                all.push((method.to_owned(), path.clone(), summary));
            }
        }
    }
    all.sort();
    all
}

/// Every endpoint, with what it does.
#[utoipa::path(get, path = "/api", tag = "meta", responses((status = 200, body = Object)))]
pub async fn endpoint_list(State(meta): State<MetaState>) -> Json<Value> {
    let endpoints: Vec<Value> = operations(&meta.spec)
        .into_iter()
        .map(
            |(method, path, summary)| json!({ "method": method, "path": path, "summary": summary }),
        )
        .collect();
    Json(json!({ "docs": "/docs", "openapi": "/openapi.json", "endpoints": endpoints }))
}

async fn openapi_json(State(meta): State<MetaState>) -> Json<Arc<OpenApi>> {
    Json(meta.spec.clone())
}

/// ReDoc renders from its CDN script: the one page here that needs the internet (Swagger UI at
/// /docs is served entirely by the gateway).
async fn redoc() -> Response {
    let page = Html(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>leadflow API</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><noscript>ReDoc needs JavaScript; the offline docs are at <a href="/docs">/docs</a>.</noscript>
<redoc spec-url="/openapi.json"></redoc>
<script src="https://cdn.jsdelivr.net/npm/redoc@2/bundles/redoc.standalone.js"></script>
<p style="font-family:sans-serif">If nothing shows, this network blocks the ReDoc CDN: use <a href="/docs">/docs</a>.</p>
</body></html>"#,
    );
    let mut response = page.into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self' https://cdn.jsdelivr.net; style-src 'self' 'unsafe-inline' https://fonts.googleapis.com; font-src https://fonts.gstatic.com; img-src 'self' data: https://cdn.redoc.ly; worker-src blob:; frame-ancestors 'none'",
        ),
    );
    response
}

/// Every route this gateway serves (admins).
#[utoipa::path(get, path = "/debug/routes", tag = "meta", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 403, body = crate::openapi::ProblemDoc)))]
pub async fn debug_routes(
    State(meta): State<MetaState>,
    Auth(actor): Auth,
) -> ApiResult<Json<Value>> {
    require(&actor, Permission::Debug)?;
    let mut routes: Vec<Value> = operations(&meta.spec)
        .into_iter()
        .map(|(method, path, _)| json!({ "method": method, "path": path }))
        .collect();
    routes.push(json!({ "method": "GET", "path": "/docs" }));
    Ok(Json(json!({ "routes": routes })))
}

/// The database URL in use, password redacted (admins).
#[utoipa::path(get, path = "/debug/database-url", tag = "meta", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 403, body = crate::openapi::ProblemDoc)))]
pub async fn debug_database_url(
    State(meta): State<MetaState>,
    Auth(actor): Auth,
) -> ApiResult<Json<Value>> {
    require(&actor, Permission::Debug)?;
    let url = meta.app.platform.db.url();
    Ok(Json(
        json!({ "database_url": url.redacted(), "database": url.database_name(), "host": url.host() }),
    ))
}
