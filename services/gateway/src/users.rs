//! Users: admins manage everyone, managers list users and manage sales reps, nobody changes their
//! own role.

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use leadflow_platform::problem::FieldError;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    admin::normalize_email,
    audit::{self, Change},
    auth::password,
    error::{ApiError, ApiResult, violated_constraint},
    extract::{ApiJson, ApiPath, ApiQuery, Auth, Meta},
    pagination::{Page, PageParams, PageQuery, fetch_page},
    policy::{Permission, Role, may_manage_user, require},
    state::AppState,
};

pub const COLUMNS: &str =
    "id, email, name, role, active, preferences, last_login_at, created_at, updated_at";

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    pub active: bool,
    #[schema(value_type = Object)]
    pub preferences: serde_json::Value,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_login_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl TryFrom<String> for Role {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Role::parse(&raw).ok_or_else(|| format!("unknown role {raw:?}"))
    }
}

pub fn field(name: &str, detail: impl Into<String>) -> FieldError {
    FieldError {
        field: name.to_owned(),
        detail: detail.into(),
    }
}

/// The rules every new account follows (registration and users created by admins and managers):
/// the normalised e-mail and name, or every field that breaks them.
pub fn check_account(
    email: &str,
    name: &str,
    password: &str,
) -> Result<(String, String), ApiError> {
    let mut errors = Vec::new();
    let email = normalize_email(email);
    if email.is_none() {
        errors.push(field("email", "must be an e-mail address"));
    }
    let name = name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 200 {
        errors.push(field("name", "must be 1 to 200 characters"));
    }
    if let Err(e) = password::validate(password) {
        errors.push(field("password", e.to_string()));
    }
    match email {
        Some(email) if errors.is_empty() => Ok((email, name)),
        _ => Err(ApiError::Validation(errors)),
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UserFilter {
    role: Option<Role>,
    active: Option<bool>,
    /// 1-based page number.
    #[serde(default = "crate::pagination::first_page")]
    #[param(minimum = 1)]
    page: i64,
    /// At most 100.
    #[serde(default = "crate::pagination::default_per_page")]
    #[param(minimum = 1, maximum = 100)]
    per_page: i64,
}

impl UserFilter {
    fn paging(&self) -> PageParams {
        PageParams {
            page: self.page,
            per_page: self.per_page,
        }
    }
}

/// List users (admins and managers).
#[utoipa::path(get, path = "/users", tag = "users", security(("bearer" = [])), params(UserFilter),
    responses((status = 200, body = Page<User>), (status = 401, body = crate::openapi::ProblemDoc), (status = 403, body = crate::openapi::ProblemDoc)))]
async fn list_users(
    State(state): State<AppState>,
    Auth(actor): Auth,
    ApiQuery(filter): ApiQuery<UserFilter>,
) -> ApiResult<Json<Page<User>>> {
    require(&actor, Permission::ListUsers)?;
    let mut conn = state.conn().await?;
    let query = PageQuery {
        columns: COLUMNS,
        from: "users",
        order: "created_at, id",
    };
    let page = fetch_page(&mut conn, query, &filter.paging(), |qb| {
        if let Some(role) = filter.role {
            qb.push(" and role = ").push_bind(role.as_str());
        }
        if let Some(active) = filter.active {
            qb.push(" and active = ").push_bind(active);
        }
    })
    .await?;
    Ok(Json(page))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    #[schema(
        pattern = r"^\s*[^@\s]+@[^@\s.][^@\s]*\.[^@\s]*[^@\s.]\s*$",
        max_length = 254
    )]
    email: String,
    #[schema(pattern = r"\S", max_length = 200)]
    name: String,
    #[schema(min_length = 8, max_length = 128)]
    password: String,
    /// Defaults to `sales_rep`; managers may only create sales reps.
    role: Option<Role>,
}

/// Create a user (admins: any role; managers: sales reps).
#[utoipa::path(post, path = "/users", tag = "users", security(("bearer" = [])), request_body = NewUser,
    responses((status = 201, body = User), (status = 403, body = crate::openapi::ProblemDoc), (status = 409, body = crate::openapi::ProblemDoc), (status = 422, body = crate::openapi::ProblemDoc)))]
async fn create_user(
    State(state): State<AppState>,
    Auth(actor): Auth,
    meta: Meta,
    ApiJson(body): ApiJson<NewUser>,
) -> ApiResult<impl IntoResponse> {
    require(&actor, Permission::ManageUsers)?;
    let role = body.role.unwrap_or(Role::SalesRep);
    if !may_manage_user(&actor, None, role, None) {
        return Err(ApiError::Forbidden(format!(
            "You may not create a user with role {}.",
            role.as_str()
        )));
    }
    let (email, name) = check_account(&body.email, &body.name, &body.password)?;
    let hash = password::hash_bounded(&state, SecretString::from(body.password)).await?;
    let mut tx = state.begin().await?;
    let user: User = sqlx::query_as(sql!(
        "insert into users (email, name, password_hash, role) values ($1, $2, $3, $4) returning {COLUMNS}"
    ))
    .bind(&email)
    .bind(&name)
    .bind(&hash)
    .bind(role.as_str())
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| match violated_constraint(&e) {
        Some("users_email_key") => ApiError::Conflict("A user with this e-mail already exists.".into()),
        _ => e.into(),
    })?;
    audit::change(
        &mut tx,
        &actor,
        &meta,
        Change {
            action: "user.create",
            entity_type: "user",
            entity_id: user.id,
            details: json!({ "email": email, "role": role }),
            event: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(user)))
}

async fn fetch(conn: &mut sqlx::PgConnection, id: Uuid) -> ApiResult<User> {
    sqlx::query_as(sql!("select {COLUMNS} from users where id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or(ApiError::NotFound("user"))
}

/// One user (admins and managers; anyone may read themselves).
#[utoipa::path(get, path = "/users/{id}", tag = "users", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = User), (status = 403, body = crate::openapi::ProblemDoc), (status = 404, body = crate::openapi::ProblemDoc)))]
async fn get_user(
    State(state): State<AppState>,
    Auth(actor): Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<User>> {
    if id != actor.id {
        require(&actor, Permission::ListUsers)?;
    }
    let mut conn = state.conn().await?;
    Ok(Json(fetch(&mut conn, id).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    #[schema(pattern = r"\S", max_length = 200)]
    name: Option<String>,
    role: Option<Role>,
    active: Option<bool>,
    /// Sets a new password (a reset); the user's sessions are signed out.
    #[schema(min_length = 8, max_length = 128)]
    password: Option<String>,
}

/// Change a user's name, role, active flag or password.
#[utoipa::path(patch, path = "/users/{id}", tag = "users", security(("bearer" = [])), params(("id" = Uuid, Path)), request_body = UserPatch,
    responses((status = 200, body = User), (status = 403, body = crate::openapi::ProblemDoc), (status = 404, body = crate::openapi::ProblemDoc), (status = 422, body = crate::openapi::ProblemDoc)))]
async fn update_user(
    State(state): State<AppState>,
    Auth(actor): Auth,
    meta: Meta,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(patch): ApiJson<UserPatch>,
) -> ApiResult<Json<User>> {
    require(&actor, Permission::ManageUsers)?;
    let mut errors = Vec::new();
    let name = patch.name.as_deref().map(str::trim);
    if name.is_some_and(|n| n.is_empty() || n.chars().count() > 200) {
        errors.push(field("name", "must be 1 to 200 characters"));
    }
    if let Some(Err(e)) = patch.password.as_deref().map(password::validate) {
        errors.push(field("password", e.to_string()));
    }
    if id == actor.id && patch.active == Some(false) {
        errors.push(field("active", "you cannot deactivate yourself"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let hash = match patch.password {
        Some(p) => Some(password::hash_bounded(&state, SecretString::from(p)).await?),
        None => None,
    };

    let mut tx = state.begin().await?;
    let target: User = sqlx::query_as(sql!("select {COLUMNS} from users where id = $1 for update"))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    if !may_manage_user(&actor, Some(id), target.role, patch.role) {
        return Err(ApiError::Forbidden(
            "You may not change this user or give this role.".into(),
        ));
    }
    // A new role, a deactivation or a new password ends the user's current sessions.
    let ends_sessions = hash.is_some()
        || patch.active == Some(false)
        || patch.role.is_some_and(|r| r != target.role);
    let user: User = sqlx::query_as(sql!(
        "update users set name = coalesce($2, name), role = coalesce($3, role), active = coalesce($4, active),
                          password_hash = coalesce($5, password_hash),
                          sessions_valid_after = case when $6 then now() else sessions_valid_after end
         where id = $1 returning {COLUMNS}"
    ))
    .bind(id)
    .bind(name)
    .bind(patch.role.map(Role::as_str))
    .bind(patch.active)
    .bind(hash.as_deref())
    .bind(ends_sessions)
    .fetch_one(&mut *tx)
    .await?;
    if ends_sessions {
        crate::auth::end_sessions(&mut tx, crate::auth::Sessions::OfUser(id)).await?;
    }
    audit::change(
        &mut tx,
        &actor,
        &meta,
        Change {
            action: "user.update",
            entity_type: "user",
            entity_id: id,
            details: json!({ "name": name, "role": patch.role, "active": patch.active, "password_reset": hash.is_some() }),
            event: None,
        },
    )
    .await?;
    tx.commit().await?;
    state.sessions.forget(id);
    Ok(Json(user))
}
