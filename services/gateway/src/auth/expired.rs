//! Refresh tokens past their expiry are deleted, or the table would keep every token ever
//! rotated (one per access-token lifetime per signed-in user, for good).

use std::time::Duration;

use sqlx::PgPool;

use crate::state::AppState;

/// How long an expired token is kept. Longer than an access token lives
/// (`leadflow_platform::access::MAX_ACCESS_TTL`), so a sign-in that has ended is still listed
/// as ended while any access token of it could be presented; and for a while a replayed old
/// token still revokes its family (reuse detection) instead of being merely unknown.
pub const KEEP_EXPIRED: Duration = Duration::from_secs(2 * 24 * 3600);
const _: () = assert!(KEEP_EXPIRED.as_secs() > leadflow_platform::access::MAX_ACCESS_TTL.as_secs());

/// Tokens deleted a statement, so a first sweep over a large backlog holds no long locks.
const CHUNK: i64 = 5_000;

/// Deletes refresh tokens that expired more than [`KEEP_EXPIRED`] ago; returns how many.
///
/// A rotated token points at its successor (`replaced_by`, `on delete set null`), and a revoked
/// token that points nowhere marks its sign-in as ended (`leadflow_platform::access`, the
/// notifier's ticket check). So a token goes only with every token that points at it: oldest
/// first, and never while one that points at it is kept, which happens when the refresh-token
/// lifetime was shortened and a successor expires before its predecessor.
pub async fn delete_expired(pool: &PgPool) -> sqlx::Result<u64> {
    let cutoff = time::OffsetDateTime::now_utc() - KEEP_EXPIRED;
    let mut deleted = 0;
    loop {
        let done = sqlx::query(
            "delete from refresh_tokens where id in (
                 select r.id from refresh_tokens r
                 where r.expires_at < $1
                   and not exists (select 1 from refresh_tokens p
                                   where p.replaced_by = r.id and p.expires_at >= $1)
                 order by r.expires_at
                 limit $2 for update skip locked)",
        )
        .bind(cutoff)
        .bind(CHUNK)
        .execute(pool)
        .await?
        .rows_affected();
        deleted += done;
        if done < CHUNK as u64 {
            return Ok(deleted);
        }
    }
}

/// Sweeps at start and then hourly, until shutdown.
pub async fn sweep(state: AppState) {
    let token = state.platform.shutdown_token();
    loop {
        match delete_expired(state.platform.db.pool()).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "deleted expired refresh tokens"),
            Err(err) => tracing::warn!(
                error = %leadflow_platform::error_chain(&err),
                "deleting expired refresh tokens failed; trying again in an hour"
            ),
        }
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}
