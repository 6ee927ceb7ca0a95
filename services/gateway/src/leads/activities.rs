//! A lead's activity log: calls, e-mails, meetings, and status changes logged automatically.

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgConnection;
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::fetch_visible;
use crate::{
    audit::{self, Change},
    error::{ApiError, ApiResult},
    extract::{ApiJson, ApiPath, Auth, Meta},
    openapi::ProblemDoc,
    state::AppState,
    users::field,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_activities, create_activity))
}

#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct Activity {
    id: Uuid,
    lead_id: Uuid,
    user_id: Option<Uuid>,
    kind: String,
    summary: String,
    #[schema(value_type = Object)]
    details: Value,
    #[serde(with = "time::serde::rfc3339")]
    occurred_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

const COLUMNS: &str = "id, lead_id, user_id, kind, summary, details, occurred_at, created_at";

/// Kinds a person may log; `status_change` and `assignment` are written by the system.
const LOGGABLE: [&str; 5] = ["call", "email", "meeting", "note", "other"];

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewActivity {
    /// call, email, meeting, note or other.
    #[schema(pattern = "^(call|email|meeting|note|other)$")]
    kind: String,
    #[schema(pattern = r"\S", max_length = 2000)]
    summary: String,
    #[schema(value_type = Option<Object>)]
    details: Option<Value>,
    /// When it happened; now if absent.
    #[serde(default, with = "time::serde::rfc3339::option")]
    occurred_at: Option<OffsetDateTime>,
}

pub async fn insert(
    conn: &mut PgConnection,
    lead_id: Uuid,
    user_id: Option<Uuid>,
    kind: &str,
    summary: &str,
    details: Value,
) -> sqlx::Result<Activity> {
    let activity = sqlx::query_as(sql!(
        "insert into lead_activities (lead_id, user_id, kind, summary, details) values ($1, $2, $3, $4, $5) returning {COLUMNS}"
    ))
    .bind(lead_id)
    .bind(user_id)
    .bind(kind)
    .bind(summary)
    .bind(details)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("update leads set last_activity_at = greatest(coalesce(last_activity_at, now()), now()) where id = $1")
        .bind(lead_id)
        .execute(conn)
        .await?;
    Ok(activity)
}

/// A lead's activities, newest first.
#[utoipa::path(get, path = "/leads/{id}/activities", tag = "leads", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = Vec<Activity>), (status = 404, body = ProblemDoc)))]
async fn list_activities(
    State(state): State<AppState>,
    Auth(actor): Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Vec<Activity>>> {
    let mut conn = state.conn().await?;
    fetch_visible(&mut conn, &actor, id, false).await?;
    let rows = sqlx::query_as(sql!(
        "select {COLUMNS} from lead_activities where lead_id = $1 order by occurred_at desc, id desc limit 500"
    ))
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Json(rows))
}

/// Log a call, e-mail, meeting or note on a lead.
#[utoipa::path(post, path = "/leads/{id}/activities", tag = "leads", security(("bearer" = [])), params(("id" = Uuid, Path)), request_body = NewActivity,
    responses((status = 201, body = Activity), (status = 404, body = ProblemDoc), (status = 422, body = ProblemDoc)))]
async fn create_activity(
    State(state): State<AppState>,
    Auth(actor): Auth,
    meta: Meta,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<NewActivity>,
) -> ApiResult<impl IntoResponse> {
    let mut errors = Vec::new();
    if !LOGGABLE.contains(&body.kind.as_str()) {
        errors.push(field(
            "kind",
            format!("must be one of {}", LOGGABLE.join(", ")),
        ));
    }
    let summary = body.summary.trim();
    if summary.is_empty() || summary.chars().count() > 2000 {
        errors.push(field("summary", "must be 1 to 2000 characters"));
    }
    let details = body.details.unwrap_or_else(|| json!({}));
    if !details.is_object() {
        errors.push(field("details", "must be a JSON object"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut tx = state.begin().await?;
    fetch_visible(&mut tx, &actor, id, true).await?;
    let mut activity = insert(&mut tx, id, Some(actor.id), &body.kind, summary, details).await?;
    if let Some(at) = body.occurred_at {
        sqlx::query("update lead_activities set occurred_at = $2 where id = $1")
            .bind(activity.id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        activity.occurred_at = at;
    }
    audit::change(
        &mut tx,
        &actor,
        &meta,
        Change {
            action: "activity.create",
            entity_type: "lead",
            entity_id: id,
            details: json!({ "activity_id": activity.id, "kind": activity.kind }),
            event: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(activity)))
}
