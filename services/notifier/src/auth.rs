//! Who is opening a stream: the gateway's access token in `Authorization: Bearer`, checked with
//! the same code and the same revocation rule as the gateway; or, for browsers (which cannot set
//! headers on EventSource or WebSocket), a single-use ticket from `POST /api/notifications/ticket`.
//! Access tokens are never accepted in the URL, where they would end up in logs and history.

use axum::http::{HeaderMap, header};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::{error::StreamError, state::AppState};

pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    ticket: Option<&str>,
) -> Result<Uuid, StreamError> {
    if let Some(token) = bearer(headers) {
        let verified = state.tokens.verify(token).ok_or(StreamError::Unauthorized(
            "The access token is invalid or expired.",
        ))?;
        let valid = state
            .sessions
            .still_valid(
                &state.platform.db,
                verified.user_id,
                &verified.role,
                verified.issued_at,
            )
            .await?;
        if !valid {
            return Err(StreamError::Unauthorized(
                "Your access changed or your session ended; sign in again.",
            ));
        }
        return Ok(verified.user_id);
    }
    if let Some(ticket) = ticket {
        return redeem(state, ticket).await;
    }
    Err(StreamError::Unauthorized(
        "Sign in: send `Authorization: Bearer <access token>`, or `?ticket=` from POST /api/notifications/ticket.",
    ))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// Uses the ticket up in one statement, so two connections racing with one ticket cannot both
/// win. A ticket of a user deactivated or signed out since it was issued does not count.
async fn redeem(state: &AppState, ticket: &str) -> Result<Uuid, StreamError> {
    let hash = Sha256::digest(ticket.trim().as_bytes()).to_vec();
    let mut conn = state.platform.db.acquire().await?;
    let user: Option<Uuid> = sqlx::query_scalar(
        "update stream_tickets t set used_at = now()
         from users u
         where t.ticket_hash = $1 and t.used_at is null and t.expires_at > now()
           and u.id = t.user_id and u.active and t.created_at >= u.sessions_valid_after
         returning t.user_id",
    )
    .bind(&hash)
    .fetch_optional(&mut *conn)
    .await?;
    user.ok_or(StreamError::Unauthorized(
        "The ticket is unknown, expired or already used; ask for a new one.",
    ))
}
