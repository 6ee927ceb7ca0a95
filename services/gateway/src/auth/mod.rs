//! Accounts: register, login, refresh (rotation with reuse detection), logout, me (read and update).

pub mod expired;
mod me;
pub mod password;
pub mod sessions;
pub mod tokens;

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    audit::{self, Entry},
    config::Registration,
    error::{ApiError, ApiResult, violated_constraint},
    extract::{ApiJson, Auth, Meta},
    state::AppState,
    users::{self, User},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(me, me::update_me))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    #[schema(example = "rep@example.com")]
    #[schema(
        pattern = r"^\s*[^@\s]+@[^@\s.][^@\s]*\.[^@\s]*[^@\s.]\s*$",
        max_length = 254
    )]
    email: String,
    #[schema(
        example = "a long and unusual passphrase",
        min_length = 8,
        max_length = 128
    )]
    password: String,
    #[schema(example = "Ada Lovelace")]
    #[schema(pattern = r"\S", max_length = 200)]
    name: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    email: String,
    password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    refresh_token: String,
}

/// What login, register and refresh answer.
#[derive(Serialize, ToSchema)]
pub struct Session {
    access_token: String,
    refresh_token: String,
    #[schema(example = "bearer")]
    token_type: &'static str,
    /// Seconds until the access token expires.
    expires_in: u64,
    user: User,
}

const BAD_CREDENTIALS: &str = "Invalid e-mail or password.";

/// Create an account (a sales rep) and sign in.
#[utoipa::path(post, path = "/auth/register", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, body = Session), (status = 403, description = "registration is closed", body = crate::openapi::ProblemDoc),
              (status = 409, body = crate::openapi::ProblemDoc), (status = 422, body = crate::openapi::ProblemDoc),
              (status = 429, body = crate::openapi::ProblemDoc)))]
async fn register(
    State(state): State<AppState>,
    meta: Meta,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> ApiResult<impl IntoResponse> {
    if state.settings.registration == Registration::Closed {
        return Err(ApiError::Forbidden(
            "Registration is closed; ask an admin for an account.".into(),
        ));
    }
    state.limits.login_per_ip.check(&meta.ip)?;
    let (email, name) = users::check_account(&body.email, &body.name, &body.password)?;
    let hash = password::hash_bounded(&state, SecretString::from(body.password)).await?;

    let mut tx = state.begin().await?;
    let user: User = sqlx::query_as(sql!(
        "insert into users (email, name, password_hash, role) values ($1, $2, $3, 'sales_rep') returning {}",
        users::COLUMNS
    ))
    .bind(&email)
    .bind(&name)
    .bind(&hash)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| match violated_constraint(&e) {
        Some("users_email_key") => ApiError::Conflict("An account with this e-mail already exists.".into()),
        _ => e.into(),
    })?;
    audit::record(
        &mut tx,
        &meta,
        Entry {
            actor: Some(user.id),
            actor_email: Some(&email),
            action: "auth.register",
            entity_type: Some("user"),
            entity_id: Some(user.id),
            success: true,
            details: json!({}),
        },
    )
    .await?;
    let session = start_session(&state, &mut tx, &meta, user, None).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(session)))
}

/// Sign in with e-mail and password.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = Session), (status = 401, body = crate::openapi::ProblemDoc),
              (status = 429, description = "too many attempts; see Retry-After", body = crate::openapi::ProblemDoc)))]
async fn login(
    State(state): State<AppState>,
    meta: Meta,
    ApiJson(body): ApiJson<LoginRequest>,
) -> ApiResult<Json<Session>> {
    let email = body.email.trim().to_lowercase();
    state.limits.login_per_ip.check(&meta.ip)?;
    if let Err(limited) = state.limits.login_per_account.check(&email) {
        let mut conn = state.conn().await?;
        audit_login(&mut conn, &meta, None, &email, false, "rate_limited").await?;
        return Err(limited);
    }

    let found: Option<(Uuid, String, bool)> =
        sqlx::query_as("select id, password_hash, active from users where email = $1")
            .bind(&email)
            .fetch_optional(&mut *state.conn().await?)
            .await?;
    // No connection is held while hashing: a queue of sign-ins must not drain the pool that every
    // other request needs. Unknown users are checked against a dummy hash, so both failures take
    // the same time.
    let stored = found.as_ref().map(|(_, hash, _)| hash.clone());
    let matches =
        password::verify_bounded(&state, SecretString::from(body.password), stored).await?;
    let mut conn = state.conn().await?;
    let user_id = match found {
        Some((id, _, true)) if matches => id,
        Some((id, _, _)) => {
            audit_login(&mut conn, &meta, Some(id), &email, false, "bad_credentials").await?;
            return Err(ApiError::Unauthorized(BAD_CREDENTIALS));
        }
        None => {
            audit_login(&mut conn, &meta, None, &email, false, "bad_credentials").await?;
            return Err(ApiError::Unauthorized(BAD_CREDENTIALS));
        }
    };
    drop(conn);

    let mut tx = state.begin().await?;
    let user: User = sqlx::query_as(sql!(
        "update users set last_login_at = now() where id = $1 returning {}",
        users::COLUMNS
    ))
    .bind(user_id)
    .fetch_one(&mut *tx)
    .await?;
    audit_login(&mut tx, &meta, Some(user_id), &email, true, "ok").await?;
    let session = start_session(&state, &mut tx, &meta, user, None).await?;
    tx.commit().await?;
    Ok(Json(session))
}

async fn audit_login(
    conn: &mut PgConnection,
    meta: &Meta,
    user: Option<Uuid>,
    email: &str,
    success: bool,
    outcome: &str,
) -> sqlx::Result<()> {
    audit::record(
        conn,
        meta,
        Entry {
            actor: user,
            actor_email: Some(email),
            action: "auth.login",
            entity_type: Some("user"),
            entity_id: user,
            success,
            details: json!({ "outcome": outcome }),
        },
    )
    .await
}

/// New access token and refresh token for `user`; a refresh continues `family`.
async fn start_session(
    state: &AppState,
    conn: &mut PgConnection,
    meta: &Meta,
    user: User,
    family: Option<Uuid>,
) -> ApiResult<Session> {
    let (refresh_token, hash) = tokens::new_refresh_token();
    let family = family.unwrap_or_else(Uuid::now_v7);
    let ttl =
        time::Duration::try_from(state.tokens.refresh_ttl).unwrap_or(time::Duration::days(30));
    sqlx::query(
        "insert into refresh_tokens (user_id, token_hash, family_id, expires_at, user_agent, ip)
         values ($1, $2, $3, $4, $5, $6::inet)",
    )
    .bind(user.id)
    .bind(&hash)
    .bind(family)
    .bind(OffsetDateTime::now_utc() + ttl)
    .bind(meta.user_agent.as_deref())
    .bind(meta.ip.to_string())
    .execute(&mut *conn)
    .await?;
    let (access_token, expires_in) = state.tokens.issue_access(user.id, user.role, family)?;
    Ok(Session {
        access_token,
        refresh_token,
        token_type: "bearer",
        expires_in,
        user,
    })
}

/// Exchange a refresh token for a new pair. Each token works once: presenting a used one
/// again means it was stolen, and signs out every session descended from the same login.
#[utoipa::path(post, path = "/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = Session), (status = 401, body = crate::openapi::ProblemDoc)))]
async fn refresh(
    State(state): State<AppState>,
    meta: Meta,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> ApiResult<Json<Session>> {
    let hash = tokens::hash_token(body.refresh_token.trim());
    let mut tx = state.begin().await?;
    let found: Option<(Uuid, Uuid, Uuid, Option<OffsetDateTime>, OffsetDateTime)> = sqlx::query_as(
        "select id, user_id, family_id, revoked_at, expires_at from refresh_tokens where token_hash = $1 for update",
    )
    .bind(&hash)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((token_id, user_id, family, revoked_at, expires_at)) = found else {
        return Err(ApiError::Unauthorized("Unknown refresh token."));
    };
    if revoked_at.is_some() {
        end_sessions(&mut tx, Sessions::OfFamily(family)).await?;
        audit::record(
            &mut tx,
            &meta,
            Entry {
                actor: Some(user_id),
                actor_email: None,
                action: "auth.refresh_reuse",
                entity_type: Some("user"),
                entity_id: Some(user_id),
                success: false,
                details: json!({ "family_id": family }),
            },
        )
        .await?;
        tx.commit().await?;
        // The family's access tokens end with it; this process must not trust its cache.
        state.sessions.forget(user_id);
        return Err(ApiError::Unauthorized(
            "This refresh token was already used; sign in again.",
        ));
    }
    if expires_at <= OffsetDateTime::now_utc() {
        return Err(ApiError::Unauthorized(
            "The refresh token has expired; sign in again.",
        ));
    }
    let user: Option<User> = sqlx::query_as(sql!(
        "select {} from users where id = $1 and active",
        users::COLUMNS
    ))
    .bind(user_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(user) = user else {
        return Err(ApiError::Unauthorized("The account is disabled."));
    };
    let session = start_session(&state, &mut tx, &meta, user, Some(family)).await?;
    let new_id: Uuid = sqlx::query_scalar("select id from refresh_tokens where token_hash = $1")
        .bind(tokens::hash_token(&session.refresh_token))
        .fetch_one(&mut *tx)
        .await?;
    sqlx::query("update refresh_tokens set revoked_at = now(), replaced_by = $2 where id = $1")
        .bind(token_id)
        .bind(new_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Json(session))
}

/// Whose sign-ins [`end_sessions`] ends.
#[derive(Clone, Copy)]
pub(crate) enum Sessions {
    /// One sign-in: a sign-out, or a refresh token used twice.
    OfFamily(Uuid),
    /// Every sign-in of a user: a password reset, a role change, a deactivation.
    OfUser(Uuid),
}

/// Revokes the live refresh tokens of `sessions`.
///
/// Two statements, because one would miss a token being made: a refresh of a live token in
/// flight holds its lock and has inserted its successor, which the update's snapshot, taken
/// before that refresh commits, cannot see. Locking the live tokens first waits that refresh out,
/// and the update then starts from a snapshot that has the successor. Only live tokens are
/// touched: a rotated one keeps the moment it was revoked and is neither written nor locked
/// again (the expired-token sweep may hold it).
pub(crate) async fn end_sessions(
    tx: &mut sqlx::PgConnection,
    sessions: Sessions,
) -> sqlx::Result<()> {
    let (lock, end, id) = match sessions {
        Sessions::OfFamily(family) => (
            "select id from refresh_tokens where family_id = $1 and revoked_at is null order by id for update",
            "update refresh_tokens set revoked_at = now() where family_id = $1 and revoked_at is null",
            family,
        ),
        Sessions::OfUser(user) => (
            "select id from refresh_tokens where user_id = $1 and revoked_at is null order by id for update",
            "update refresh_tokens set revoked_at = now() where user_id = $1 and revoked_at is null",
            user,
        ),
    };
    sqlx::query(lock).bind(id).execute(&mut *tx).await?;
    sqlx::query(end).bind(id).execute(&mut *tx).await?;
    Ok(())
}

/// Sign out: the refresh token, every token rotated from the same login, and the access tokens
/// issued to that login stop working.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", request_body = RefreshRequest,
    responses((status = 204, description = "signed out"), (status = 401, body = crate::openapi::ProblemDoc)))]
async fn logout(
    State(state): State<AppState>,
    meta: Meta,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> ApiResult<StatusCode> {
    let hash = tokens::hash_token(body.refresh_token.trim());
    let mut tx = state.begin().await?;
    let token: Option<(Uuid, Uuid)> =
        sqlx::query_as("select user_id, family_id from refresh_tokens where token_hash = $1")
            .bind(&hash)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((user, family)) = token else {
        return Err(ApiError::Unauthorized("Unknown refresh token."));
    };
    // A sign-in already ended still answers 204.
    end_sessions(&mut tx, Sessions::OfFamily(family)).await?;
    audit::record(
        &mut tx,
        &meta,
        Entry {
            actor: Some(user),
            actor_email: None,
            action: "auth.logout",
            entity_type: Some("user"),
            entity_id: Some(user),
            success: true,
            details: json!({}),
        },
    )
    .await?;
    tx.commit().await?;
    // The sign-in's access tokens end with it; this process must not trust its cache.
    state.sessions.forget(user);
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in user.
#[utoipa::path(get, path = "/auth/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = User), (status = 401, body = crate::openapi::ProblemDoc)))]
async fn me(State(state): State<AppState>, Auth(actor): Auth) -> ApiResult<Json<User>> {
    let mut conn = state.conn().await?;
    let user: Option<User> = sqlx::query_as(sql!(
        "select {} from users where id = $1 and active",
        users::COLUMNS
    ))
    .bind(actor.id)
    .fetch_optional(&mut *conn)
    .await?;
    user.map(Json).ok_or(ApiError::Unauthorized(
        "The account no longer exists or is disabled.",
    ))
}
