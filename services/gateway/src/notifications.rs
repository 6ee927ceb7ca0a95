//! The read side of notifications (the notifier writes them): list, mark one read, mark all read,
//! and tickets for the notifier's streams.

use axum::{Extension, Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult},
    extract::{ApiPath, ApiQuery, Auth, SignIn},
    openapi::ProblemDoc,
    pagination::{Page, PageParams, PageQuery, fetch_page},
    state::AppState,
};

#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct Notification {
    id: Uuid,
    /// Increasing position, also the SSE event id.
    seq: i64,
    kind: String,
    #[schema(value_type = Object)]
    payload: Value,
    #[serde(with = "time::serde::rfc3339::option")]
    read_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

const COLUMNS: &str = "id, seq, kind, payload, read_at, created_at";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_notifications))
        .routes(routes!(mark_read))
        .routes(routes!(mark_all_read))
        .routes(routes!(stream_ticket))
}

/// How long a stream ticket may wait before it is used: long enough to open a connection.
const TICKET_TTL_SECS: i64 = 30;

#[derive(Serialize, ToSchema)]
pub struct StreamTicket {
    /// Opens one notifier stream (`?ticket=`), once, within `expires_in` seconds. Stored hashed.
    ticket: String,
    #[schema(example = 30)]
    expires_in: i64,
}

/// A short-lived, single-use ticket for the notifier's SSE and WebSocket streams, which browsers
/// cannot send headers to: the access token never has to appear in a URL.
#[utoipa::path(post, path = "/notifications/ticket", tag = "notifications", security(("bearer" = [])),
    responses((status = 201, body = StreamTicket), (status = 401, body = ProblemDoc)))]
async fn stream_ticket(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Extension(SignIn(session)): Extension<SignIn>,
) -> ApiResult<(StatusCode, Json<StreamTicket>)> {
    let (ticket, hash) = crate::auth::tokens::new_refresh_token();
    let mut conn = state.conn().await?;
    // Each user's spent and stale tickets go when they ask for a new one, so the table stays small.
    sqlx::query("delete from stream_tickets where user_id = $1 and expires_at < now()")
        .bind(actor.id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "insert into stream_tickets (ticket_hash, user_id, expires_at, session_id)
         values ($1, $2, now() + make_interval(secs => $3), $4)",
    )
    .bind(&hash)
    .bind(actor.id)
    .bind(TICKET_TTL_SECS as f64)
    .bind(session)
    .execute(&mut *conn)
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(StreamTicket {
            ticket,
            expires_in: TICKET_TTL_SECS,
        }),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct NotificationFilter {
    /// `true`: only unread ones.
    #[serde(default)]
    unread: bool,
    /// 1-based page number.
    #[serde(default = "crate::pagination::first_page")]
    #[param(minimum = 1)]
    page: i64,
    /// At most 100.
    #[serde(default = "crate::pagination::default_per_page")]
    #[param(minimum = 1, maximum = 100)]
    per_page: i64,
}

impl NotificationFilter {
    fn paging(&self) -> PageParams {
        PageParams {
            page: self.page,
            per_page: self.per_page,
        }
    }
}

/// The caller's notifications, newest first.
#[utoipa::path(get, path = "/notifications", tag = "notifications", security(("bearer" = [])), params(NotificationFilter),
    responses((status = 200, body = Page<Notification>), (status = 401, body = ProblemDoc)))]
async fn list_notifications(
    State(state): State<AppState>,
    Auth(actor): Auth,
    ApiQuery(filter): ApiQuery<NotificationFilter>,
) -> ApiResult<Json<Page<Notification>>> {
    let mut conn = state.conn().await?;
    let query = PageQuery {
        columns: COLUMNS,
        from: "notifications",
        order: "seq desc",
    };
    let page = fetch_page(&mut conn, query, &filter.paging(), |qb| {
        qb.push(" and user_id = ").push_bind(actor.id);
        if filter.unread {
            qb.push(" and read_at is null");
        }
    })
    .await?;
    Ok(Json(page))
}

/// Mark one of the caller's notifications read.
#[utoipa::path(post, path = "/notifications/{id}/read", tag = "notifications", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = Notification), (status = 404, body = ProblemDoc)))]
async fn mark_read(
    State(state): State<AppState>,
    Auth(actor): Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Notification>> {
    let mut conn = state.conn().await?;
    let notification = sqlx::query_as(sql!(
        "update notifications set read_at = coalesce(read_at, now()) where id = $1 and user_id = $2 returning {COLUMNS}"
    ))
    .bind(id)
    .bind(actor.id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(ApiError::NotFound("notification"))?;
    Ok(Json(notification))
}

/// Mark all the caller's notifications read; answers how many changed.
#[utoipa::path(post, path = "/notifications/read-all", tag = "notifications", security(("bearer" = [])),
    responses((status = 200, body = Object, example = json!({"marked": 3})), (status = 401, body = ProblemDoc)))]
async fn mark_all_read(
    State(state): State<AppState>,
    Auth(actor): Auth,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let mut conn = state.conn().await?;
    let marked = sqlx::query(
        "update notifications set read_at = now() where user_id = $1 and read_at is null",
    )
    .bind(actor.id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok((StatusCode::OK, Json(json!({ "marked": marked }))))
}
