//! `PATCH /api/auth/me`: what users may change about themselves: their display name and their
//! preferences (today: whether notifications also come by e-mail).

use axum::{Json, extract::State};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::{
    audit::{self, Change},
    error::{ApiError, ApiResult},
    extract::{ApiJson, Auth, Meta},
    state::AppState,
    users::{self, User},
};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MeUpdate {
    #[schema(example = "Ada Lovelace", pattern = r"\S", max_length = 200)]
    name: Option<String>,
    preferences: Option<Preferences>,
}

/// Known preferences; absent ones keep their value.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    /// Also e-mail each notification (on by default).
    email_notifications: Option<bool>,
}

/// Change the signed-in user's name or preferences; answers the updated user.
#[utoipa::path(patch, path = "/auth/me", tag = "auth", security(("bearer" = [])), request_body = MeUpdate,
    responses((status = 200, body = User), (status = 401, body = crate::openapi::ProblemDoc),
              (status = 422, body = crate::openapi::ProblemDoc)))]
pub async fn update_me(
    State(state): State<AppState>,
    Auth(actor): Auth,
    meta: Meta,
    ApiJson(body): ApiJson<MeUpdate>,
) -> ApiResult<Json<User>> {
    let name = body.name.as_deref().map(str::trim);
    if name.is_some_and(|n| n.is_empty() || n.chars().count() > 200) {
        return Err(ApiError::invalid("name", "must be 1 to 200 characters"));
    }
    let mut changes = Map::new();
    if let Some(email) = body
        .preferences
        .as_ref()
        .and_then(|p| p.email_notifications)
    {
        changes.insert("email_notifications".into(), Value::Bool(email));
    }
    let mut tx = state.begin().await?;
    let user: User = sqlx::query_as(sql!(
        "update users set name = coalesce($2, name), preferences = preferences || $3
         where id = $1 and active returning {}",
        users::COLUMNS
    ))
    .bind(actor.id)
    .bind(name)
    .bind(Value::Object(changes.clone()))
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::Unauthorized(
        "The account no longer exists or is disabled.",
    ))?;
    audit::change(
        &mut tx,
        &actor,
        &meta,
        Change {
            action: "user.update_self",
            entity_type: "user",
            entity_id: actor.id,
            details: json!({ "name_changed": name.is_some(), "preferences": changes }),
            event: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Json(user))
}
