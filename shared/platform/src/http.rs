//! The HTTP pieces every service shares: health and metrics routes, per-route request metrics,
//! and a server that stops gracefully.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use axum::serve::{Listener, ListenerExt as _};
use axum::{
    Json, Router,
    extract::{MatchedPath, Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use tokio_util::sync::CancellationToken;

use crate::{Platform, health::render_html, metrics::Metrics};

/// `/health`, `/health.json`, `/metrics`, `/livez`, `/readyz`.
pub fn platform_routes(platform: Arc<Platform>) -> Router {
    Router::new()
        .route("/health", get(health_page))
        .route("/health.json", get(health_json))
        .route("/metrics", get(metrics))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(platform)
}

async fn health_page(State(platform): State<Arc<Platform>>) -> Response {
    let mut response = no_store(Html(render_html(&platform.report())).into_response());
    // The page quotes error messages, which can quote input: escaping is the first defence, and
    // this policy the second (no script runs at all; only its own inline style applies). The
    // scorer and notifier have no security-header middleware, so the page brings its own.
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn health_json(State(platform): State<Arc<Platform>>) -> Response {
    no_store(Json(platform.report()).into_response())
}

async fn metrics(State(platform): State<Arc<Platform>>) -> Response {
    match platform.render_metrics() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn livez() -> Response {
    no_store(Json(serde_json::json!({"status": "alive"})).into_response())
}

async fn readyz(State(platform): State<Arc<Platform>>) -> Response {
    let response = match platform.readiness() {
        Ok(()) => Json(serde_json::json!({"ready": true})).into_response(),
        Err(reasons) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"ready": false, "reasons": reasons})),
        )
            .into_response(),
    };
    no_store(response)
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Counts requests and observes latency by matched route (never the raw path, which would give
/// every lead id its own time series).
pub fn track_requests(router: Router, metrics: Arc<Metrics>) -> Router {
    router.layer(middleware::from_fn_with_state(metrics, record_request))
}

async fn record_request(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // Only standard methods become label values: arbitrary ones would each make a new series.
    let method = match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let started = Instant::now();
    let response = next.run(request).await;
    metrics
        .http_duration
        .with_label_values(&[&route, method])
        .observe(started.elapsed().as_secs_f64());
    metrics
        .http_requests
        .with_label_values(&[&route, method, response.status().as_str()])
        .inc();
    response
}

/// Serves `app` until `shutdown` is cancelled, then stops accepting and lets in-flight requests
/// finish, for at most `grace()` once shutdown began (long-lived streams would otherwise hold
/// shutdown forever).
pub async fn serve<L: Listener<Addr = SocketAddr>>(
    listener: L,
    app: Router,
    shutdown: CancellationToken,
    grace: impl FnOnce() -> std::time::Duration,
) -> std::io::Result<()> {
    let server = axum::serve(
        // A no-op tap: axum provides `ConnectInfo<SocketAddr>` for any tapped listener, where for
        // an untapped one only for its own `TcpListener`.
        listener.tap_io(|_| {}),
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace()).await;
    };
    tokio::select! {
        result = server => result,
        () = deadline => {
            tracing::warn!("in-flight requests did not finish within the shutdown timeout");
            Ok(())
        }
    }
}

/// Parses `ALLOWED_ORIGINS` entries. `*` and paths are refused: an origin is a scheme and a host.
pub fn parse_origins(raw: &[String]) -> anyhow::Result<Vec<HeaderValue>> {
    raw.iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .map(|origin| {
            let host = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            match host {
                Some(host) if !host.is_empty() && !host.contains(['/', '*']) => {
                    HeaderValue::from_str(origin).map_err(|_| {
                        anyhow::anyhow!("ALLOWED_ORIGINS: {origin:?} is not a valid header value")
                    })
                }
                _ => anyhow::bail!(
                    "ALLOWED_ORIGINS: {origin:?} is not an origin such as https://app.example.com"
                ),
            }
        })
        .collect()
}
