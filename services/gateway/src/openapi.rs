//! The OpenAPI document, generated from the handlers' annotations as the router is built (so the
//! two cannot drift), plus what lives outside `/api`.

use serde::Serialize;
use utoipa::{
    Modify, OpenApi, ToSchema,
    openapi::{
        Content, Object, Ref, RefOr, Response, Schema, Type,
        header::Header,
        path::{Operation, Parameter, PathItem},
        schema::SchemaType,
        security::{Http, HttpAuthScheme, SecurityScheme},
    },
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

/// `POST /t/events`: a batch. Each event is checked on its own, and the answer lists the refused.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrackBatchDoc {
    #[schema(max_items = 500)]
    events: Vec<TrackEventDoc>,
}

#[derive(Serialize, ToSchema)]
pub struct TrackEventDoc {
    /// Makes a retried batch safe: the same id is stored once.
    id: Option<uuid::Uuid>,
    /// e.g. `page_view`, `pricing_view`, `email_click`.
    #[serde(rename = "type")]
    kind: String,
    /// This or `anonymous_id`.
    lead_id: Option<uuid::Uuid>,
    anonymous_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    properties: Option<serde_json::Value>,
    /// RFC 3339; now if absent.
    timestamp: Option<String>,
}

/// `POST /t/identify`: `lead_id` or `email` names the lead.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentifyDoc {
    #[schema(min_length = 1, max_length = 200)]
    anonymous_id: String,
    lead_id: Option<uuid::Uuid>,
    email: Option<String>,
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
    components(schemas(ProblemDoc, FieldErrorDoc, TrackBatchDoc, TrackEventDoc, IdentifyDoc)),
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

/// The media type of every error the gateway answers (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Adds what the handlers' annotations leave out because a whole kind of operation shares it,
/// and which the extractors and middleware answer before a handler runs: 401 and 429 on every
/// authenticated operation, 400/413/415/422 on every JSON body, 400 on unreadable path or query
/// parameters, 503 when the database is down or the request ran out of time. Every error is
/// documented as `application/problem+json` with the `ProblemDoc` schema, which is what the
/// middleware guarantees, so a client (or a fuzzer) can rely on the media type the spec names.
pub fn complete(spec: &mut utoipa::openapi::OpenApi) {
    for (path, item) in spec.paths.paths.iter_mut() {
        let is_api = path.starts_with("/api") || path.starts_with("/debug");
        for operation in operations_mut(item) {
            complete_operation(operation, is_api);
        }
    }
}

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
    ]
    .into_iter()
    .flatten()
}

fn complete_operation(operation: &mut Operation, is_api: bool) {
    let authenticated = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let body_types: Vec<String> = match &operation.request_body {
        Some(RefOr::T(body)) => body.content.keys().cloned().collect(),
        _ => Vec::new(),
    };
    let has_parameters = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
    for parameter in operation.parameters.iter_mut().flatten() {
        not_nullable(parameter);
    }

    let mut implied: Vec<(u16, &str)> = Vec::new();
    if authenticated {
        implied.push((401, "No valid access token: sign in again."));
        implied.push((429, "Too many requests for this token; see `Retry-After`."));
    }
    if has_parameters {
        implied.push((400, "A path or query parameter cannot be read."));
    }
    if !body_types.is_empty() {
        implied.push((413, "The body is larger than the limit."));
        implied.push((415, "The body is not of a documented media type."));
    }
    if body_types.iter().any(|t| t == "application/json") {
        implied.push((400, "The body is not well-formed JSON."));
        implied.push((
            422,
            "The body has the wrong shape, or fields are invalid (each is listed).",
        ));
    }
    if is_api {
        implied.push((
            503,
            "The database is unavailable, or the request ran out of time; retry.",
        ));
    }
    let responses = &mut operation.responses.responses;
    for (status, description) in implied {
        responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::T(problem_response(description)));
    }

    for (status, response) in responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        let is_error = status.starts_with('4') || status.starts_with('5');
        if is_error && let Some(content) = response.content.shift_remove("application/json") {
            response.content.insert(PROBLEM_JSON.to_owned(), content);
        }
        if response.description.is_empty() {
            response.description = default_description(status).to_owned();
        }
        if status == "429" {
            response
                .headers
                .entry("Retry-After".to_owned())
                .or_insert_with(|| {
                    let mut header = Header::new(Object::with_type(Type::Integer));
                    header.description = Some("Seconds to wait before trying again.".to_owned());
                    RefOr::T(header)
                });
        }
    }
}

/// An optional path or query parameter is left out, never `null` (there is no way to send one in
/// a URL), but `Option<T>` fields come out of the derive as `[T, "null"]`.
fn not_nullable(parameter: &mut RefOr<Parameter>) {
    if let RefOr::T(parameter) = parameter
        && let Some(RefOr::T(Schema::Object(schema))) = parameter.schema.as_mut()
        && let SchemaType::Array(types) = &mut schema.schema_type
    {
        types.retain(|t| *t != Type::Null);
        if let [only] = types.as_slice() {
            schema.schema_type = SchemaType::Type(only.clone());
        }
    }
}

fn problem_response(description: &str) -> Response {
    let mut response = Response::new(description);
    response.content.insert(
        PROBLEM_JSON.to_owned(),
        RefOr::T(Content::new(Some(Ref::from_schema_name("ProblemDoc")))),
    );
    response
}

fn default_description(status: &str) -> &'static str {
    match status {
        "200" => "OK",
        "201" => "Created",
        "202" => "Accepted",
        "204" => "No Content",
        "400" => "Bad request: a parameter or the body cannot be read.",
        "401" => "Not signed in, or the credentials are invalid.",
        "403" => "This role may not do this.",
        "404" => "No such resource (or one the caller may not see).",
        "409" => "Conflicts with the current state.",
        "413" => "The body is larger than the limit.",
        "415" => "The body is not of a documented media type.",
        "422" => "Fields are invalid; each is listed.",
        "429" => "Rate limited; see `Retry-After`.",
        "503" => "Temporarily unavailable; retry.",
        _ => "See the body.",
    }
}

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
    request_body(content(
        (TrackBatchDoc = "application/json"),
        (TrackBatchDoc = "text/plain"),
    )),
    responses((status = 202, body = Object, example = json!({"accepted": 2, "rejected": 1, "errors": [{"index": 1, "detail": "give lead_id or anonymous_id"}]})),
              (status = 400, body = ProblemDoc), (status = 401, body = ProblemDoc), (status = 403, body = ProblemDoc),
              (status = 413, body = ProblemDoc), (status = 415, body = ProblemDoc), (status = 503, body = ProblemDoc)))]
#[allow(dead_code)]
fn track_events() {}

/// A 43-byte transparent GIF that records an event: `?k=KEY&lead=ID&e=TYPE` or `?t=TOKEN&e=TYPE`
/// (optional `u`: the URL). Always answers the GIF, with no-cache headers.
#[utoipa::path(get, path = "/t/pixel.gif", tag = "tracking",
    params(("k" = Option<String>, Query),
           // A string, not a UUID: the pixel answers its GIF whatever it is given.
           ("lead" = Option<String>, Query, description = "the lead's id (a UUID; anything else is counted as lost)"),
           ("t" = Option<String>, Query),
           ("e" = Option<String>, Query), ("u" = Option<String>, Query)),
    responses((status = 200, content_type = "image/gif", body = Vec<u8>)))]
#[allow(dead_code)]
fn track_pixel() {}

/// Tie an anonymous visitor to a lead (`{anonymous_id, lead_id | email}`); their earlier events
/// then count for the lead, and it is re-scored.
#[utoipa::path(post, path = "/t/identify", tag = "tracking",
    request_body = IdentifyDoc,
    responses((status = 202, body = Object), (status = 401, body = ProblemDoc), (status = 404, body = ProblemDoc), (status = 422, body = ProblemDoc)))]
#[allow(dead_code)]
fn track_identify() {}
