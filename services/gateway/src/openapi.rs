//! The OpenAPI document, generated from the handlers' annotations as the router is built (so the
//! two cannot drift), plus what lives outside `/api`.

use serde::Serialize;
use utoipa::{
    Modify, OpenApi, ToSchema,
    openapi::security::{Http, HttpAuthScheme, SecurityScheme},
};

/// RFC 9457 problem details: every error the API returns.
#[derive(Serialize, ToSchema)]
pub struct ProblemDoc {
    /// Stable identifier, `https://leadflow.dev/problems/<slug>`.
    #[serde(rename = "type")]
    #[schema(example = "https://leadflow.dev/problems/validation")]
    kind: String,
    #[schema(example = "Unprocessable Entity")]
    title: String,
    #[schema(example = 422)]
    status: u16,
    #[schema(example = "Invalid fields: email.")]
    detail: String,
    /// Present on validation errors: one entry per invalid field.
    errors: Option<Vec<FieldErrorDoc>>,
}

#[derive(Serialize, ToSchema)]
pub struct FieldErrorDoc {
    field: String,
    detail: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "leadflow API",
        description = "Leads, scores, assignments and notifications. Errors are RFC 9457 problem+json. \
                       Authenticate with `Authorization: Bearer <access token>` from /api/auth/login.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    paths(
        crate::meta::service_info,
        crate::meta::endpoint_list,
        crate::meta::debug_routes,
        crate::meta::debug_database_url,
        health_page,
        health_json,
        metrics,
        livez,
        readyz,
        track_events,
        track_pixel,
        track_identify
    ),
    components(schemas(ProblemDoc, FieldErrorDoc)),
    tags(
        (name = "auth", description = "Sign in, tokens, the current user"),
        (name = "users", description = "People and roles"),
        (name = "leads", description = "Leads, their activities, import and export"),
        (name = "notes"), (name = "assignments"), (name = "notifications"), (name = "inventory"),
        (name = "audit", description = "Who did what (admins)"),
        (name = "scores", description = "Scores, their history and the events behind them"),
        (name = "webhooks", description = "Signed outgoing webhooks and their delivery log (admins)"),
        (name = "tracking", description = "Write keys and lead tokens for pixels and beacons (the /t/ routes)"),
        (name = "meta", description = "Service information and debugging"),
        (name = "health", description = "Health, readiness and metrics (every service)")
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

// The platform serves these on every service; they are documented here so the API description
// is complete. They are not routed from here.

/// Health dashboard (HTML, refreshes every 5 s).
#[utoipa::path(get, path = "/health", tag = "health", responses((status = 200, content_type = "text/html", body = String)))]
#[allow(dead_code)]
fn health_page() {}

/// Health as JSON: database, pool, circuit breaker, NATS, consumers.
#[utoipa::path(get, path = "/health.json", tag = "health", responses((status = 200, body = Object)))]
#[allow(dead_code)]
fn health_json() {}

/// Prometheus metrics (text format).
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, content_type = "text/plain", body = String)))]
#[allow(dead_code)]
fn metrics() {}

/// Liveness: 200 while the process runs.
#[utoipa::path(get, path = "/livez", tag = "health", responses((status = 200, body = Object)))]
#[allow(dead_code)]
fn livez() {}

/// Readiness: 503 with reasons while the database or NATS is unusable.
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, body = Object), (status = 503, body = Object)))]
#[allow(dead_code)]
fn readyz() {}

/// Accept a batch of up to 500 engagement events, authenticated by a write key (`X-Write-Key` or
/// `?key=`). JSON, or `text/plain` as `navigator.sendBeacon` sends it. Each event is checked on its
/// own: the answer counts what was accepted and says why each refused one was refused.
#[utoipa::path(post, path = "/t/events", tag = "tracking",
    params(("key" = Option<String>, Query, description = "write key, if not in X-Write-Key")),
    request_body(content = Object, description = "{\"events\": [{\"id\"?, \"type\", \"lead_id\"? | \"anonymous_id\"?, \"properties\"?, \"timestamp\"?}]}"),
    responses((status = 202, body = Object, example = json!({"accepted": 2, "rejected": 1, "errors": [{"index": 1, "detail": "give lead_id or anonymous_id"}]})),
              (status = 400, body = ProblemDoc), (status = 401, body = ProblemDoc), (status = 403, body = ProblemDoc),
              (status = 413, body = ProblemDoc), (status = 415, body = ProblemDoc), (status = 503, body = ProblemDoc)))]
#[allow(dead_code)]
fn track_events() {}

/// A 43-byte transparent GIF that records an event: `?k=KEY&lead=ID&e=TYPE` or `?t=TOKEN&e=TYPE`
/// (optional `u`: the URL). Always answers the GIF, with no-cache headers.
#[utoipa::path(get, path = "/t/pixel.gif", tag = "tracking",
    params(("k" = Option<String>, Query), ("lead" = Option<Uuid>, Query), ("t" = Option<String>, Query),
           ("e" = Option<String>, Query), ("u" = Option<String>, Query)),
    responses((status = 200, content_type = "image/gif", body = Vec<u8>)))]
#[allow(dead_code)]
fn track_pixel() {}

/// Tie an anonymous visitor to a lead (`{anonymous_id, lead_id | email}`); their earlier events
/// then count for the lead, and it is re-scored.
#[utoipa::path(post, path = "/t/identify", tag = "tracking",
    request_body(content = Object, description = "{\"anonymous_id\", \"lead_id\" | \"email\"}"),
    responses((status = 202, body = Object), (status = 401, body = ProblemDoc), (status = 404, body = ProblemDoc), (status = 422, body = ProblemDoc)))]
#[allow(dead_code)]
fn track_identify() {}
