//! Outgoing webhooks (admins): register an endpoint and the event types it wants, see every
//! delivery and each HTTP attempt. The notifier sends them, signed the Standard Webhooks way with
//! the secret shown here once, at creation.

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    audit::{self, Change},
    error::{ApiError, ApiResult},
    extract::{ApiJson, ApiPath, ApiQuery, Auth, Meta},
    openapi::ProblemDoc,
    policy::{Permission, require},
    state::AppState,
    users::field,
};

/// The event types a webhook can ask for; none means all of them.
pub const EVENT_TYPES: &[&str] = &[
    "assignment.created",
    "assignment.transferred",
    "assignment.completed",
    "lead.hot",
];

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(update_webhook, delete_webhook))
        .routes(routes!(list_deliveries))
}

#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct Webhook {
    id: Uuid,
    url: String,
    description: Option<String>,
    /// Empty: every event type.
    event_types: Vec<String>,
    /// False once disabled, by an admin or after failing for long.
    active: bool,
    consecutive_failures: i32,
    #[serde(with = "time::serde::rfc3339::option")]
    failing_since: Option<OffsetDateTime>,
    last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    disabled_at: Option<OffsetDateTime>,
    created_by: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

const COLUMNS: &str = "id, url, description, event_types, active, consecutive_failures, failing_since, last_error, disabled_at, created_by, created_at";

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    #[schema(
        example = "https://hooks.example.com/leadflow",
        pattern = r"^[hH][tT][tT][pP][sS]?://[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*(:[0-9]{1,4})?(/\S*)?$",
        max_length = 2000
    )]
    url: String,
    #[schema(max_length = 500)]
    description: Option<String>,
    /// Any of `assignment.created`, `assignment.transferred`, `assignment.completed`, `lead.hot`;
    /// empty or absent: all.
    #[serde(default)]
    #[schema(value_type = Vec<EventTypeDoc>)]
    event_types: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    webhook: Webhook,
    /// The signing secret (`whsec_...`). Shown only in this answer.
    secret: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookUpdate {
    #[schema(
        pattern = r"^[hH][tT][tT][pP][sS]?://[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*(:[0-9]{1,4})?(/\S*)?$",
        max_length = 2000
    )]
    url: Option<String>,
    #[schema(max_length = 500)]
    description: Option<String>,
    #[schema(value_type = Option<Vec<EventTypeDoc>>)]
    event_types: Option<Vec<String>>,
    /// `true` re-enables a disabled webhook and forgets its failures.
    active: Option<bool>,
}

/// [`EVENT_TYPES`] as the OpenAPI document lists them; requests carry plain strings.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
enum EventTypeDoc {
    #[serde(rename = "assignment.created")]
    AssignmentCreated,
    #[serde(rename = "assignment.transferred")]
    AssignmentTransferred,
    #[serde(rename = "assignment.completed")]
    AssignmentCompleted,
    #[serde(rename = "lead.hot")]
    LeadHot,
}

/// The URL as given with its scheme in lower case: `HTTP://` names the same endpoint, and the
/// table only takes `http://` and `https://` (its check constraint is case-sensitive).
fn lowercase_scheme(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{}://{rest}", scheme.to_ascii_lowercase()),
        None => url.to_owned(),
    }
}

fn check_url(url: &str, errors: &mut Vec<leadflow_platform::problem::FieldError>) {
    let ok = url::Url::parse(url)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
    if !ok || url.len() > 2000 {
        errors.push(field(
            "url",
            "must be an http:// or https:// URL of at most 2000 characters",
        ));
    }
}

fn check_types(types: &[String], errors: &mut Vec<leadflow_platform::problem::FieldError>) {
    if let Some(bad) = types.iter().find(|t| !EVENT_TYPES.contains(&t.as_str())) {
        errors.push(field(
            "event_types",
            format!(
                "unknown event type {bad:?}; allowed: {}",
                EVENT_TYPES.join(", ")
            ),
        ));
    }
}

fn check_description(
    description: Option<&str>,
    errors: &mut Vec<leadflow_platform::problem::FieldError>,
) {
    if description.is_some_and(|d| d.chars().count() > 500) {
        errors.push(field("description", "must be at most 500 characters"));
    }
}

/// A Standard Webhooks secret: `whsec_` and 24 random bytes in base64.
fn new_secret() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("whsec_{}", STANDARD.encode(bytes))
}

/// Registered webhooks (admins).
#[utoipa::path(get, path = "/webhooks", tag = "webhooks", security(("bearer" = [])),
    responses((status = 200, body = Vec<Webhook>), (status = 401, body = ProblemDoc), (status = 403, body = ProblemDoc)))]
async fn list_webhooks(
    State(state): State<AppState>,
    Auth(actor): Auth,
) -> ApiResult<Json<Vec<Webhook>>> {
    require(&actor, Permission::ManageWebhooks)?;
    let mut conn = state.conn().await?;
    let hooks = sqlx::query_as(sql!(
        "select {COLUMNS} from webhooks order by created_at desc"
    ))
    .fetch_all(&mut *conn)
    .await?;
    Ok(Json(hooks))
}

/// Register a webhook (admins); its signing secret is in the answer, once.
#[utoipa::path(post, path = "/webhooks", tag = "webhooks", security(("bearer" = [])), request_body = NewWebhook,
    responses((status = 201, body = CreatedWebhook), (status = 403, body = ProblemDoc), (status = 422, body = ProblemDoc)))]
async fn create_webhook(
    State(state): State<AppState>,
    Auth(actor): Auth,
    meta: Meta,
    ApiJson(body): ApiJson<NewWebhook>,
) -> ApiResult<impl IntoResponse> {
    require(&actor, Permission::ManageWebhooks)?;
    let url = lowercase_scheme(body.url.trim());
    let url = url.as_str();
    let mut errors = Vec::new();
    check_url(url, &mut errors);
    check_types(&body.event_types, &mut errors);
    check_description(body.description.as_deref(), &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let secret = new_secret();
    let mut tx = state.begin().await?;
    let webhook: Webhook = sqlx::query_as(sql!(
        "insert into webhooks (url, description, secret, event_types, created_by)
         values ($1, $2, $3, $4, $5) returning {COLUMNS}"
    ))
    .bind(url)
    .bind(body.description.as_deref())
    .bind(&secret)
    .bind(&body.event_types)
    .bind(actor.id)
    .fetch_one(&mut *tx)
    .await?;
    audit::change(
        &mut tx,
        &actor,
        &meta,
        Change {
            action: "webhook.create",
            entity_type: "webhook",
            entity_id: webhook.id,
            details: json!({ "event_types": webhook.event_types }),
            event: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedWebhook { webhook, secret }),
    ))
}

/// Change a webhook (admins). `active: true` re-enables one that was disabled.
#[utoipa::path(patch, path = "/webhooks/{id}", tag = "webhooks", security(("bearer" = [])), params(("id" = Uuid, Path)),
    request_body = WebhookUpdate,
    responses((status = 200, body = Webhook), (status = 403, body = ProblemDoc), (status = 404, body = ProblemDoc), (status = 422, body = ProblemDoc)))]
async fn update_webhook(
    State(state): State<AppState>,
    Auth(actor): Auth,
    meta: Meta,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<WebhookUpdate>,
) -> ApiResult<Json<Webhook>> {
    require(&actor, Permission::ManageWebhooks)?;
    let url = body.url.as_deref().map(|u| lowercase_scheme(u.trim()));
    let url = url.as_deref();
    let mut errors = Vec::new();
    if let Some(url) = url {
        check_url(url, &mut errors);
    }
    if let Some(types) = &body.event_types {
        check_types(types, &mut errors);
    }
    check_description(body.description.as_deref(), &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut tx = state.begin().await?;
    let webhook: Webhook = sqlx::query_as(sql!(
        "update webhooks set
            url = coalesce($2, url),
            description = coalesce($3, description),
            event_types = coalesce($4, event_types),
            active = coalesce($5, active),
            disabled_at = case when $5 is null then disabled_at when $5 then null else now() end,
            consecutive_failures = case when $5 then 0 else consecutive_failures end,
            failing_since = case when $5 then null else failing_since end
         where id = $1 returning {COLUMNS}"
    ))
    .bind(id)
    .bind(url)
    .bind(body.description.as_deref())
    .bind(body.event_types.as_ref())
    .bind(body.active)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound("webhook"))?;
    audit::change(
        &mut tx,
        &actor,
        &meta,
        Change {
            action: "webhook.update",
            entity_type: "webhook",
            entity_id: id,
            details: json!({ "active": body.active, "event_types": body.event_types, "url_changed": url.is_some() }),
            event: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Json(webhook))
}

/// Remove a webhook and its delivery log (admins).
#[utoipa::path(delete, path = "/webhooks/{id}", tag = "webhooks", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 204, description = "deleted"), (status = 403, body = ProblemDoc), (status = 404, body = ProblemDoc)))]
async fn delete_webhook(
    State(state): State<AppState>,
    Auth(actor): Auth,
    meta: Meta,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    require(&actor, Permission::ManageWebhooks)?;
    let mut tx = state.begin().await?;
    let deleted = sqlx::query("delete from webhooks where id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if deleted == 0 {
        return Err(ApiError::NotFound("webhook"));
    }
    audit::change(
        &mut tx,
        &actor,
        &meta,
        Change {
            action: "webhook.delete",
            entity_type: "webhook",
            entity_id: id,
            details: json!({}),
            event: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Delivery {
    id: Uuid,
    event_id: Uuid,
    event_type: String,
    /// `pending` (waiting for a first try or a retry), `succeeded` or `failed` (gave up).
    status: String,
    attempts: i32,
    #[serde(with = "time::serde::rfc3339")]
    next_attempt_at: OffsetDateTime,
    last_status_code: Option<i32>,
    last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    /// Every HTTP attempt, first to last.
    #[schema(value_type = Vec<Object>)]
    attempt_log: Value,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveryFilter {
    /// Most recent deliveries to return (at most 100).
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 100)]
    limit: i64,
}

fn default_limit() -> i64 {
    50
}

/// A webhook's recent deliveries, newest first, each with its attempts (admins).
#[utoipa::path(get, path = "/webhooks/{id}/deliveries", tag = "webhooks", security(("bearer" = [])),
    params(("id" = Uuid, Path), DeliveryFilter),
    responses((status = 200, body = Vec<Delivery>), (status = 403, body = ProblemDoc), (status = 404, body = ProblemDoc)))]
async fn list_deliveries(
    State(state): State<AppState>,
    Auth(actor): Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(filter): ApiQuery<DeliveryFilter>,
) -> ApiResult<Json<Vec<Delivery>>> {
    require(&actor, Permission::ManageWebhooks)?;
    // A query parameter, so a 400 like every other unreadable query (the 422s are for bodies).
    if !(1..=100).contains(&filter.limit) {
        return Err(ApiError::BadRequest("limit must be 1 to 100.".into()));
    }
    let mut conn = state.conn().await?;
    let exists: Option<Uuid> = sqlx::query_scalar("select id from webhooks where id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    if exists.is_none() {
        return Err(ApiError::NotFound("webhook"));
    }
    type Row = (
        Uuid,
        Uuid,
        String,
        String,
        i32,
        OffsetDateTime,
        Option<i32>,
        Option<String>,
        OffsetDateTime,
        Value,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "select d.id, d.event_id, d.event_type, d.status, d.attempts, d.next_attempt_at,
                d.last_status_code, d.last_error, d.created_at,
                coalesce((select jsonb_agg(jsonb_build_object(
                            'attempt', a.attempt, 'status_code', a.status_code, 'error', a.error,
                            'duration_ms', a.duration_ms, 'at', a.created_at) order by a.attempt)
                          from webhook_attempts a where a.delivery_id = d.id), '[]'::jsonb)
         from webhook_deliveries d where d.webhook_id = $1
         order by d.created_at desc, d.id desc limit $2",
    )
    .bind(id)
    .bind(filter.limit)
    .fetch_all(&mut *conn)
    .await?;
    let deliveries = rows
        .into_iter()
        .map(|r| Delivery {
            id: r.0,
            event_id: r.1,
            event_type: r.2,
            status: r.3,
            attempts: r.4,
            next_attempt_at: r.5,
            last_status_code: r.6,
            last_error: r.7,
            created_at: r.8,
            attempt_log: r.9,
        })
        .collect();
    Ok(Json(deliveries))
}
