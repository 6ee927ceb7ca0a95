//! The gateway's one error type. Every variant maps to a status and an RFC 9457 problem body;
//! 5xx variants keep their cause for the log and tell the client nothing internal.

use std::time::Duration;

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use leadflow_platform::{
    db::DbError,
    error_chain,
    problem::{FieldError, Problem},
};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed (query string, path, unknown filter).
    #[error("{0}")]
    BadRequest(String),
    /// 422: well-formed, but fields are invalid; each is listed.
    #[error("invalid input")]
    Validation(Vec<FieldError>),
    /// 401: missing, expired or forged credentials.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403: authenticated, but this role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such resource, or one the caller may not know exists.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 409: conflicts with the current state (duplicate, stale version).
    #[error("{0}")]
    Conflict(String),
    /// 429: rate limited; `Retry-After` says when to come back.
    #[error("too many requests")]
    RateLimited { retry_after: Duration },
    /// 400/413/415/422 from axum's extractors, with their explanation.
    #[error("{detail}")]
    Rejected { status: StatusCode, detail: String },
    /// 503: the database is down or its circuit breaker is open.
    #[error("the database is unavailable")]
    Unavailable(#[source] DbError),
    /// 500: a database failure that is our bug, not the caller's.
    #[error("database error")]
    Database(#[source] sqlx::Error),
    /// 500: anything else unexpected.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        if leadflow_platform::db::is_unavailable(&err) {
            ApiError::Unavailable(DbError::Query(err))
        } else {
            ApiError::Database(err)
        }
    }
}

impl From<DbError> for ApiError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::Query(e) if !leadflow_platform::db::is_unavailable(&e) => {
                ApiError::Database(e)
            }
            other => ApiError::Unavailable(other),
        }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Rejected { status, .. } => *status,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Database(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn invalid(field: &str, detail: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError {
            field: field.to_owned(),
            detail: detail.into(),
        }])
    }
}

/// The constraint a failed statement violated, to map it to a 409 where the insert happens.
pub fn violated_constraint(err: &sqlx::Error) -> Option<&str> {
    err.as_database_error().and_then(|e| e.constraint())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match &self {
            ApiError::BadRequest(detail) => {
                Problem::new(StatusCode::BAD_REQUEST, "bad-request", detail)
            }
            ApiError::Validation(errors) => {
                let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
                let mut problem = Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "validation",
                    format!("Invalid fields: {}.", fields.join(", ")),
                );
                problem.errors = errors.clone();
                problem
            }
            ApiError::Unauthorized(detail) => {
                Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", *detail)
            }
            ApiError::Forbidden(detail) => Problem::new(StatusCode::FORBIDDEN, "forbidden", detail),
            ApiError::NotFound(what) => Problem::not_found(format!("No such {what}.")),
            ApiError::Conflict(detail) => Problem::new(StatusCode::CONFLICT, "conflict", detail),
            ApiError::RateLimited { retry_after } => {
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                let mut problem = Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate-limited",
                    format!("Too many requests; retry in {} s.", seconds.max(1)),
                );
                problem.retry_after = Some(seconds.max(1));
                problem
            }
            ApiError::Rejected { status, detail } => {
                Problem::new(*status, slug_for(*status), detail)
            }
            ApiError::Unavailable(err) => {
                tracing::warn!(error = %error_chain(err), "database unavailable");
                Problem::unavailable("The database is unavailable; retry shortly.", 5)
            }
            ApiError::Database(err) => {
                tracing::error!(error = %error_chain(err), "database error");
                Problem::internal()
            }
            ApiError::Internal(err) => {
                tracing::error!(error = %format!("{err:#}"), "internal error");
                Problem::internal()
            }
        };
        problem.into_response()
    }
}

pub fn slug_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad-request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not-found",
        405 => "method-not-allowed",
        408 | 504 => "timeout",
        409 => "conflict",
        413 => "payload-too-large",
        415 => "unsupported-media-type",
        422 => "validation",
        429 => "rate-limited",
        503 => "unavailable",
        _ if status.is_server_error() => "internal",
        _ => "error",
    }
}
