//! The `notifications` table as the notifier writes and reads it.

use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::recipients::Planned;

/// A notification as it is pushed and resumed (the same shape the gateway lists).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Notification {
    pub id: Uuid,
    pub seq: i64,
    #[serde(skip)]
    pub user_id: Uuid,
    pub kind: String,
    pub payload: Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl Notification {
    pub fn to_json(&self) -> String {
        // A struct of strings, numbers, a uuid and a Value always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Writes each planned notification for `event_id` once: a redelivered event inserts nothing
/// (the `notifications_once_per_event` constraint), and only new rows come back, so only they are
/// pushed. Unknown or deactivated users are skipped.
/// Takes each recipient's notification lock for the rest of the transaction, in id order so
/// batches cannot deadlock. `seq` is drawn when a row is inserted, not when it commits: without the
/// lock, a user's row 11 could commit while row 10 is still open, a client resuming in between
/// would move past 10, and never see it. With it, a user's rows commit in `seq` order.
pub async fn lock_recipients(conn: &mut PgConnection, users: &mut Vec<Uuid>) -> sqlx::Result<()> {
    users.sort_unstable();
    users.dedup();
    if users.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "select pg_advisory_xact_lock(hashtextextended('leadflow.notifications:' || u::text, 0))
         from unnest($1::uuid[]) with ordinality as t(u, n) order by n",
    )
    .bind(&*users)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn insert(
    conn: &mut PgConnection,
    event_id: Uuid,
    planned: &[Planned],
) -> sqlx::Result<Vec<Notification>> {
    if planned.is_empty() {
        return Ok(Vec::new());
    }
    let users: Vec<Uuid> = planned.iter().map(|p| p.user_id).collect();
    let kinds: Vec<&str> = planned.iter().map(|p| p.kind).collect();
    let payloads: Vec<Value> = planned.iter().map(|p| p.payload.clone()).collect();
    sqlx::query_as(
        "insert into notifications (user_id, kind, payload, source_event_id)
         select p.user_id, p.kind, p.payload, $4
         from unnest($1::uuid[], $2::text[], $3::jsonb[]) as p(user_id, kind, payload)
         join users u on u.id = p.user_id and u.active
         on conflict on constraint notifications_once_per_event do nothing
         returning id, seq, user_id, kind, payload, created_at",
    )
    .bind(&users)
    .bind(&kinds)
    .bind(&payloads)
    .bind(event_id)
    .fetch_all(conn)
    .await
}

/// Active managers, told about Hot leads when `NOTIFY_MANAGERS_ON_HOT` is on.
pub async fn managers(conn: &mut PgConnection) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar("select id from users where role = 'manager' and active")
        .fetch_all(conn)
        .await
}

/// What `user` missed after `after_seq`, oldest first, at most `limit`.
pub async fn since(
    conn: &mut PgConnection,
    user: Uuid,
    after_seq: i64,
    limit: i64,
) -> sqlx::Result<Vec<Notification>> {
    sqlx::query_as(
        "select id, seq, user_id, kind, payload, created_at from notifications
         where user_id = $1 and seq > $2 order by seq limit $3",
    )
    .bind(user)
    .bind(after_seq)
    .bind(limit)
    .fetch_all(conn)
    .await
}
