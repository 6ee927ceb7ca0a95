//! Who is opening a stream: the gateway's access token in `Authorization: Bearer`, checked with
//! the same code and the same revocation rule as the gateway; or, for browsers (which cannot set
//! headers on EventSource or WebSocket), a single-use ticket from `POST /api/notifications/ticket`.
//! Access tokens are never accepted in the URL, where they would end up in logs and history.

use axum::http::{HeaderMap, header};
use leadflow_platform::access::Verified;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::{error::StreamError, state::AppState};

/// Who a stream is for, and what its credentials must still stand for while it is open.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: Uuid,
    pub role: String,
    /// Unix seconds: when the token (or ticket) was issued.
    pub issued_at: i64,
    /// The sign-in the token belongs to; signing out of it closes the stream.
    pub session: Option<Uuid>,
}

impl Principal {
    /// Whether the user is still active, in the same role, and not signed out since (the
    /// gateway's rule, cached for a few seconds).
    pub async fn still_stands(&self, state: &AppState) -> Result<bool, StreamError> {
        let token = Verified {
            user_id: self.user,
            role: self.role.clone(),
            issued_at: self.issued_at,
            session: self.session,
        };
        Ok(state
            .sessions
            .still_valid(&state.platform.db, &token)
            .await?)
    }
}

pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    ticket: Option<&str>,
) -> Result<Principal, StreamError> {
    if let Some(token) = bearer(headers) {
        let verified = state.tokens.verify(token).ok_or(StreamError::Unauthorized(
            "The access token is invalid or expired.",
        ))?;
        let principal = Principal {
            user: verified.user_id,
            role: verified.role,
            issued_at: verified.issued_at,
            session: verified.session,
        };
        if !principal.still_stands(state).await? {
            return Err(StreamError::Unauthorized(
                "Your access changed or your session ended; sign in again.",
            ));
        }
        return Ok(principal);
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
/// win. A ticket of a user deactivated or signed out since it was issued does not count. Checked in
/// the statement rather than through the standing cache, which may be a few seconds old.
async fn redeem(state: &AppState, ticket: &str) -> Result<Principal, StreamError> {
    let hash = Sha256::digest(ticket.trim().as_bytes()).to_vec();
    let mut conn = state.platform.db.acquire().await?;
    let found: Option<(Uuid, String, i64, Option<Uuid>)> = sqlx::query_as(
        "update stream_tickets t set used_at = now()
         from users u
         where t.ticket_hash = $1 and t.used_at is null and t.expires_at > now()
           and u.id = t.user_id and u.active and t.created_at >= u.sessions_valid_after
           -- the sign-in it was asked for has not ended (signed out, or its refresh token reused)
           and not exists (select 1 from refresh_tokens r
                           where r.user_id = t.user_id and r.family_id = t.session_id
                             and r.replaced_by is null and r.revoked_at is not null)
         returning t.user_id, u.role, floor(extract(epoch from t.created_at))::bigint, t.session_id",
    )
    .bind(&hash)
    .fetch_optional(&mut *conn)
    .await?;
    // From here on the ticket's stream answers to the same rule as a token issued when it was,
    // in the sign-in it was asked for: signing out of that ends the stream.
    found
        .map(|(user, role, issued_at, session)| Principal {
            user,
            role,
            issued_at,
            session,
        })
        .ok_or(StreamError::Unauthorized(
            "The ticket is unknown, expired, already used, or its sign-in has ended; ask for a new one.",
        ))
}
