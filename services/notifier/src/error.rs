//! The notifier's HTTP errors, as problem+json like every service's. 5xx variants keep their cause
//! for the log and tell the client nothing internal.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use leadflow_platform::{db::DbError, error_chain, problem::Problem};

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// 401: no credentials, a forged or expired token, a revoked session, or a used ticket.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 429: the user already has `NOTIFY_MAX_CONNECTIONS_PER_USER` streams open on this process.
    #[error("too many open streams")]
    TooManyConnections,
    /// 400: a malformed `Last-Event-ID` or query.
    #[error("{0}")]
    BadRequest(String),
    /// 503: the database is down or its circuit breaker is open.
    #[error("the database is unavailable")]
    Unavailable(#[source] DbError),
    /// 500: a database failure that is our bug.
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

impl From<DbError> for StreamError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::Query(e) if !leadflow_platform::db::is_unavailable(&e) => {
                StreamError::Database(e)
            }
            other => StreamError::Unavailable(other),
        }
    }
}

impl From<sqlx::Error> for StreamError {
    fn from(err: sqlx::Error) -> Self {
        if leadflow_platform::db::is_unavailable(&err) {
            StreamError::Unavailable(DbError::Query(err))
        } else {
            StreamError::Database(err)
        }
    }
}

impl IntoResponse for StreamError {
    fn into_response(self) -> Response {
        match &self {
            StreamError::Unauthorized(detail) => {
                let mut response =
                    Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", *detail).into_response();
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"leadflow\""),
                );
                response
            }
            StreamError::TooManyConnections => {
                let mut problem = Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too-many-streams",
                    "You have too many notification streams open; close one (other tabs or devices) and retry.",
                );
                problem.retry_after = Some(5);
                problem.into_response()
            }
            StreamError::BadRequest(detail) => {
                Problem::new(StatusCode::BAD_REQUEST, "bad-request", detail.clone()).into_response()
            }
            StreamError::Unavailable(cause) => {
                tracing::warn!(error = %error_chain(cause), "stream refused: database unavailable");
                Problem::unavailable("The database is unavailable; retry shortly.", 2)
                    .into_response()
            }
            StreamError::Database(cause) => {
                tracing::error!(error = %error_chain(cause), "stream failed");
                Problem::internal().into_response()
            }
        }
    }
}
