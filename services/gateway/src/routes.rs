use std::sync::Arc;

use axum::{Json, Router, extract::State, routing::get};
use leadflow_platform::Platform;
use serde_json::{Value, json};

pub fn router(platform: Arc<Platform>) -> Router {
    Router::new()
        .route("/", get(service_info))
        .with_state(platform)
}

/// `GET /`: what this is and where to go next.
async fn service_info(State(platform): State<Arc<Platform>>) -> Json<Value> {
    Json(json!({
        "service": platform.service,
        "version": platform.version,
        "description": "leadflow gateway: REST API for leads, scores and notifications",
        "links": {
            "health": "/health",
            "health_json": "/health.json",
            "metrics": "/metrics",
            "ready": "/readyz",
            "live": "/livez",
        },
    }))
}
