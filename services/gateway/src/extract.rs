//! Extractors that turn every rejection into problem+json, and the caller's identity.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::{
    extract::{
        ConnectInfo, FromRef, FromRequest, FromRequestParts, Request, rejection::JsonRejection,
    },
    http::{header, request::Parts},
};
use serde::de::DeserializeOwned;

use crate::{error::ApiError, policy::Actor, state::AppState, unique_keys::UniqueKeys};

/// `axum::Json`, with 400 (malformed), 413 (too large), 415 (not JSON) and 422 (wrong shape) as
/// problem+json naming what is wrong.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Read as a JSON value first: every body the API takes is an object, and serde would
        // otherwise also fill a struct from an array of its fields in order (`[null, null]`).
        // A key given twice is refused here (see `UniqueKeys`).
        let axum::Json(UniqueKeys(value)) = axum::Json::<UniqueKeys>::from_request(req, state)
            .await
            .map_err(json_rejection)?;
        if !value.is_object() {
            return Err(ApiError::invalid("body", "must be a JSON object"));
        }
        // PostgreSQL text and jsonb cannot hold NUL; refuse it here rather than fail the insert.
        if let Some(field) = nul_field(&value, "") {
            return Err(ApiError::invalid(
                &field,
                "must not contain the NUL character (\\u0000)",
            ));
        }
        serde_path_to_error::deserialize(value)
            .map(Self)
            .map_err(|error| ApiError::Validation(vec![field_error(&error)]))
    }
}

/// The first field (as `a.b[2]`) whose name or text holds a NUL character. Every JSON body goes
/// through this, so the common case (no NUL) is one walk that builds no paths.
pub(crate) fn nul_field(value: &serde_json::Value, path: &str) -> Option<String> {
    has_nul(value).then(|| locate_nul(value, path)).flatten()
}

fn has_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(text) => text.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(has_nul),
        serde_json::Value::Object(fields) => fields
            .iter()
            .any(|(name, item)| name.contains('\0') || has_nul(item)),
        _ => false,
    }
}

fn locate_nul(value: &serde_json::Value, path: &str) -> Option<String> {
    let here = || {
        if path.is_empty() {
            "body".to_owned()
        } else {
            path.to_owned()
        }
    };
    match value {
        serde_json::Value::String(text) => text.contains('\0').then(here),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| locate_nul(item, &format!("{}[{i}]", here()))),
        serde_json::Value::Object(fields) => fields.iter().find_map(|(name, item)| {
            let path = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            if name.contains('\0') {
                Some(here())
            } else {
                locate_nul(item, &path)
            }
        }),
        _ => None,
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let status = rejection.status();
    let detail = match &rejection {
        JsonRejection::MissingJsonContentType(_) => {
            "Expected a JSON body with `Content-Type: application/json`.".to_owned()
        }
        JsonRejection::BytesRejection(_) if status.as_u16() == 413 => {
            "The request body is larger than the 1 MiB limit.".to_owned()
        }
        other => other.body_text(),
    };
    ApiError::Rejected { status, detail }
}

/// The field a well-formed body got wrong (`budget: invalid type: string "lots", expected f64`).
fn field_error(
    error: &serde_path_to_error::Error<serde_json::Error>,
) -> leadflow_platform::problem::FieldError {
    let path = error.path().to_string();
    let field = if path == "." { "body".to_owned() } else { path };
    leadflow_platform::problem::FieldError {
        field,
        detail: error.inner().to_string(),
    }
}

/// `axum::extract::Query` with a 400 problem that quotes the parser.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // `%00` decodes to NUL, which PostgreSQL text cannot hold: refuse it before any query.
        if parts.uri.query().is_some_and(|q| q.contains("%00")) {
            return Err(ApiError::BadRequest(
                "Query parameters must not contain the NUL character (%00).".into(),
            ));
        }
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// `axum::extract::Path` with a 400 problem (e.g. an id that is not a UUID).
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// The authenticated caller, from `Authorization: Bearer <access token>`. Also where the
/// per-token API rate limit applies.
pub struct Auth(pub Actor);

impl<S: Send + Sync> FromRequestParts<S> for Auth
where
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or(ApiError::Unauthorized(
                "Sign in: send `Authorization: Bearer <access token>`.",
            ))?;
        let (actor, verified) = state
            .tokens
            .verify(token.trim())
            .ok_or(ApiError::Unauthorized(
                "The access token is invalid or expired.",
            ))?;
        if !state
            .sessions
            .still_valid(&state.platform.db, &verified)
            .await?
        {
            return Err(ApiError::Unauthorized(
                "Your access changed or your session ended; sign in again.",
            ));
        }
        state.limits.api_per_token.check(&actor.id)?;
        // For what must end with this sign-in (stream tickets): see [`SignIn`].
        parts.extensions.insert(SignIn(verified.session));
        Ok(Self(actor))
    }
}

/// The sign-in the request's access token belongs to (`None` for tokens issued outside one).
/// Put in the request's extensions by [`Auth`], so take it after `Auth` in a handler.
#[derive(Debug, Clone, Copy)]
pub struct SignIn(pub Option<uuid::Uuid>);

/// Where a request came from, for the audit log and per-address limits.
#[derive(Debug, Clone)]
pub struct Meta {
    pub ip: IpAddr,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Meta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(500).collect::<String>())
        };
        Ok(Self {
            ip,
            user_agent: header("user-agent"),
            request_id: header("x-request-id"),
        })
    }
}
