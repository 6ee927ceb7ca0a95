//! The gateway's outer layers: security headers, CORS, body size limits, request timeout, and
//! problem+json for every error response, whoever produced it.

use std::time::Duration;

use axum::{
    Router,
    body::Body,
    extract::{DefaultBodyLimit, Request, State},
    http::{HeaderName, HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use leadflow_platform::problem::Problem;
use tower_http::{
    cors::{AllowOrigin, CorsLayer},
    set_header::SetResponseHeaderLayer,
};

use crate::{error::slug_for, leads::csv_limits};

/// The general request body limit (DESIGN.md §4); CSV imports get more.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Adds CORS for `allowed_origins`; none configured means no CORS headers at all.
pub fn cors(router: Router, allowed_origins: &[HeaderValue]) -> Router {
    if allowed_origins.is_empty() {
        router
    } else {
        router.layer(cors_layer(allowed_origins))
    }
}

pub fn apply(router: Router, timeout: Duration) -> Router {
    router
        .layer(middleware::from_fn(problem_for_bare_errors))
        .layer(middleware::from_fn_with_state(timeout, request_timeout))
        .layer(middleware::from_fn(limit_body))
        // Our own limit (above) replaces axum's per-extractor default.
        .layer(DefaultBodyLimit::disable())
        .layer(header_if_missing(header::CONTENT_SECURITY_POLICY, "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"))
        .layer(header_if_missing(header::X_FRAME_OPTIONS, "DENY"))
        .layer(header_if_missing(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(header_if_missing(header::REFERRER_POLICY, "no-referrer"))
        .layer(header_if_missing(HeaderName::from_static("cross-origin-opener-policy"), "same-origin"))
}

fn header_if_missing(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
}

/// Only the configured origins get CORS headers; bearer tokens, so no credentials.
fn cors_layer(origins: &[HeaderValue]) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.iter().cloned()))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([HeaderName::from_static("x-request-id"), header::RETRY_AFTER])
        .max_age(Duration::from_secs(600))
}

/// Shared with the notifier, whose streams answer the same browser origins.
pub use leadflow_platform::http::parse_origins;

/// 413 before reading a body that announces itself too large; a body that turns out too large
/// while streaming fails the extractor with 413 as well.
async fn limit_body(request: Request, next: Next) -> Response {
    let limit = csv_limits(request.uri().path()).unwrap_or(BODY_LIMIT);
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            format!(
                "The request body is larger than the {} MiB limit.",
                limit / 1024 / 1024
            ),
        )
        .into_response();
    }
    let request = request.map(|body| Body::new(http_body_util::Limited::new(body, limit)));
    next.run(request).await
}

/// Long requests are cut off with a 503 the client can retry, not left hanging.
async fn request_timeout(
    State(timeout): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Problem::unavailable(
            format!(
                "The request took longer than {} s; retry later.",
                timeout.as_secs()
            ),
            1,
        )
        .into_response(),
    }
}

/// Error responses made outside our handlers (405, rejections in layers) become problem+json too.
async fn problem_for_bare_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if is_json {
        return response;
    }
    let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
    let allow = response.headers().get(header::ALLOW).cloned();
    let detail = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            "This route does not accept that method; see Allow.".to_owned()
        }
        _ => status.canonical_reason().unwrap_or("Error").to_owned() + ".",
    };
    let mut problem = Problem::new(status, slug_for(status), detail).into_response();
    for (name, value) in [(header::RETRY_AFTER, retry_after), (header::ALLOW, allow)] {
        if let Some(value) = value {
            problem.headers_mut().insert(name, value);
        }
    }
    problem
}
