//! Admin side of tracking: write keys (`/api/tracking-keys`) and signed lead tokens.

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::keys::new_key;
use crate::{
    audit::{self, Change},
    error::{ApiError, ApiResult},
    extract::{ApiJson, ApiPath, Auth, Meta},
    leads::fetch_visible,
    openapi::ProblemDoc,
    policy::{Permission, require},
    state::AppState,
    users::field,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_keys, create_key))
        .routes(routes!(revoke_key))
        .routes(routes!(lead_token))
}

#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct TrackingKey {
    id: Uuid,
    name: String,
    /// The first characters, to tell keys apart; the key itself is shown only once.
    key_prefix: String,
    allowed_origins: Vec<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    revoked_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

const COLUMNS: &str = "id, name, key_prefix, allowed_origins, revoked_at, created_at";

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    #[schema(pattern = r"\S", max_length = 200)]
    name: String,
    /// Origins allowed to send events with this key (e.g. `https://www.example.com`); empty: any.
    #[serde(default)]
    allowed_origins: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    key_info: TrackingKey,
    /// The write key. Shown only in this answer: it is stored hashed.
    key: String,
}

/// Write keys (admins).
#[utoipa::path(get, path = "/tracking-keys", tag = "tracking", security(("bearer" = [])),
    responses((status = 200, body = Vec<TrackingKey>), (status = 403, body = ProblemDoc)))]
async fn list_keys(
    State(state): State<AppState>,
    Auth(actor): Auth,
) -> ApiResult<Json<Vec<TrackingKey>>> {
    require(&actor, Permission::ManageTrackingKeys)?;
    let mut conn = state.conn().await?;
    let keys = sqlx::query_as(sql!(
        "select {COLUMNS} from tracking_keys order by created_at desc"
    ))
    .fetch_all(&mut *conn)
    .await?;
    Ok(Json(keys))
}

/// Create a write key for pixels and beacons (admins); the key is in the answer, once.
#[utoipa::path(post, path = "/tracking-keys", tag = "tracking", security(("bearer" = [])), request_body = NewKey,
    responses((status = 201, body = CreatedKey), (status = 403, body = ProblemDoc), (status = 422, body = ProblemDoc)))]
async fn create_key(
    State(state): State<AppState>,
    Auth(actor): Auth,
    meta: Meta,
    ApiJson(body): ApiJson<NewKey>,
) -> ApiResult<impl IntoResponse> {
    require(&actor, Permission::ManageTrackingKeys)?;
    let name = body.name.trim();
    let mut errors = Vec::new();
    if name.is_empty() || name.chars().count() > 200 {
        errors.push(field("name", "must be 1 to 200 characters"));
    }
    let origins = crate::middleware::parse_origins(&body.allowed_origins)
        .map_err(|e| {
            errors.push(field(
                "allowed_origins",
                e.to_string().replace("ALLOWED_ORIGINS: ", ""),
            ))
        })
        .unwrap_or_default();
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let origins: Vec<String> = origins
        .iter()
        .filter_map(|o| o.to_str().ok().map(str::to_owned))
        .collect();
    let (key, hash) = new_key();
    let mut tx = state.begin().await?;
    let created: TrackingKey = sqlx::query_as(sql!(
        "insert into tracking_keys (name, key_prefix, key_hash, allowed_origins, created_by)
         values ($1, $2, $3, $4, $5) returning {COLUMNS}"
    ))
    .bind(name)
    .bind(&key[..12])
    .bind(&hash)
    .bind(&origins)
    .bind(actor.id)
    .fetch_one(&mut *tx)
    .await?;
    audit::change(
        &mut tx,
        &actor,
        &meta,
        Change {
            action: "tracking_key.create",
            entity_type: "tracking_key",
            entity_id: created.id,
            details: json!({ "name": name }),
            event: None,
        },
    )
    .await?;
    tx.commit().await?;
    state.key_ring.reload(state.platform.db.pool()).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key_info: created,
            key,
        }),
    ))
}

/// Revoke a write key (admins); events sent with it are refused from then on.
#[utoipa::path(delete, path = "/tracking-keys/{id}", tag = "tracking", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 204, description = "revoked"), (status = 403, body = ProblemDoc), (status = 404, body = ProblemDoc)))]
async fn revoke_key(
    State(state): State<AppState>,
    Auth(actor): Auth,
    meta: Meta,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    require(&actor, Permission::ManageTrackingKeys)?;
    let mut tx = state.begin().await?;
    let revoked = sqlx::query(
        "update tracking_keys set revoked_at = coalesce(revoked_at, now()) where id = $1",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if revoked == 0 {
        return Err(ApiError::NotFound("tracking key"));
    }
    audit::change(
        &mut tx,
        &actor,
        &meta,
        Change {
            action: "tracking_key.revoke",
            entity_type: "tracking_key",
            entity_id: id,
            details: json!({}),
            event: None,
        },
    )
    .await?;
    tx.commit().await?;
    state.key_ring.reload(state.platform.db.pool()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A signed token for this lead's pixels and links (`/t/pixel.gif?t=TOKEN&e=email_open`).
#[utoipa::path(get, path = "/leads/{id}/tracking-token", tag = "tracking", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = Object, example = json!({"token": "…", "pixel": "/t/pixel.gif?t=…&e=email_open"})), (status = 404, body = ProblemDoc)))]
async fn lead_token(
    State(state): State<AppState>,
    Auth(actor): Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<serde_json::Value>> {
    let mut conn = state.conn().await?;
    fetch_visible(&mut conn, &actor, id, false).await?;
    let token = state.lead_tokens.sign(id);
    Ok(Json(
        json!({ "token": token, "pixel": format!("/t/pixel.gif?t={token}&e=email_open") }),
    ))
}
