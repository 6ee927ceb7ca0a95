//! Tracking (no user auth): `POST /t/events` (batches, also `text/plain` from `sendBeacon`),
//! `GET /t/pixel.gif`, `POST /t/identify`; and the admin side: write keys and lead tokens.
//!
//! Events reach JetStream before the sender gets its answer (the publish acks are awaited). When
//! NATS is unreachable they go to the outbox instead and are still accepted; when both are down
//! the answer is 503, except for the pixel, which always answers its GIF and counts the loss.

mod admin;
pub mod bots;
pub mod keys;
pub mod parse;

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Query, RawQuery, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use leadflow_events::Envelope;
use leadflow_platform::outbox;
use prometheus::IntCounterVec;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tower_http::cors::{Any, CorsLayer};
use uuid::Uuid;

pub use admin::router as admin_router;
use parse::PixelCredential;

use crate::{error::ApiError, state::AppState};

const PIXEL: [u8; 43] = *b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff\x21\xf9\x04\x01\x00\x00\x00\x00\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00\x3b";

/// `tracking_events_total{outcome}`: accepted (JetStream), queued (outbox), rejected, lost.
pub fn metric(registry: &prometheus::Registry) -> prometheus::Result<IntCounterVec> {
    let counter = IntCounterVec::new(
        prometheus::Opts::new(
            "tracking_events_total",
            "Tracking events by outcome: published, queued (outbox), rejected, lost.",
        ),
        &["outcome"],
    )?;
    registry.register(Box::new(counter.clone()))?;
    Ok(counter)
}

/// `/t/...`, open to any origin without credentials: pixels and beacons run on customers' sites.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/t/events", post(events))
        .route("/t/pixel.gif", get(pixel))
        .route("/t/identify", post(identify))
        .layer(
            CorsLayer::new()
                .allow_origin(Any)
                .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
                .allow_headers([
                    header::CONTENT_TYPE,
                    header::HeaderName::from_static("x-write-key"),
                ]),
        )
        .with_state(state)
}

#[derive(Deserialize)]
pub struct KeyQuery {
    key: Option<String>,
}

fn write_key(headers: &HeaderMap, query: &KeyQuery) -> Option<String> {
    headers
        .get("x-write-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query.key.clone())
}

fn user_agent(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(500).collect())
}

/// How a batch was stored.
#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    Published,
    Queued,
}

/// Publishes to JetStream and waits for every ack; what JetStream does not take goes to the outbox.
pub async fn store(state: &AppState, events: &[Envelope]) -> Result<Stored, ApiError> {
    let bus = &state.platform.bus;
    let mut pending = Vec::with_capacity(events.len());
    for event in events {
        pending.push(
            bus.send(
                &event.kind,
                event.id.to_string(),
                Bytes::from(event.to_json()),
            )
            .await,
        );
    }
    let acks = futures::future::join_all(pending.into_iter().map(|sent| async move {
        match sent {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        }
    }))
    .await;
    let missed: Vec<&Envelope> = events
        .iter()
        .zip(&acks)
        .filter(|(_, ok)| !**ok)
        .map(|(e, _)| e)
        .collect();
    if missed.is_empty() {
        state
            .tracking
            .with_label_values(&["published"])
            .inc_by(events.len() as u64);
        return Ok(Stored::Published);
    }
    // Same ids: if some did reach JetStream after all, de-duplication drops the second copy.
    // One statement, a row per subject and hundred events: a NATS outage under load must not
    // turn every tracked event into an outbox row for the relay to find and delete.
    let queued = tokio::time::timeout(Duration::from_secs(3), async {
        let mut conn = state.platform.db.acquire().await?;
        outbox::enqueue_many(&mut conn, missed.iter().copied()).await?;
        Ok::<_, ApiError>(())
    })
    .await;
    match queued {
        Ok(Ok(())) => {
            state
                .tracking
                .with_label_values(&["published"])
                .inc_by((events.len() - missed.len()) as u64);
            state
                .tracking
                .with_label_values(&["queued"])
                .inc_by(missed.len() as u64);
            Ok(Stored::Queued)
        }
        _ => {
            state
                .tracking
                .with_label_values(&["lost"])
                .inc_by(missed.len() as u64);
            Err(ApiError::Rejected {
                status: StatusCode::SERVICE_UNAVAILABLE,
                detail: "Events cannot be stored right now (message bus and database unavailable); retry later.".into(),
            })
        }
    }
}

fn origin_allowed(info: &keys::KeyInfo, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true; // servers and sendBeacon from the same site send none
    };
    info.allowed_origins.is_empty() || info.allowed_origins.iter().any(|o| o == origin)
}

/// Accept a batch of up to 500 events (JSON, or text/plain as `navigator.sendBeacon` sends it).
async fn events(
    State(state): State<AppState>,
    Query(query): Query<KeyQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match accept_batch(&state, &query, &headers, &body).await {
        Ok(answer) => (StatusCode::ACCEPTED, Json(answer)).into_response(),
        Err(err) => err.into_response(),
    }
}

async fn accept_batch(
    state: &AppState,
    query: &KeyQuery,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, ApiError> {
    let key = write_key(headers, query).ok_or(ApiError::Unauthorized(
        "Send a write key in X-Write-Key or ?key=.",
    ))?;
    let info = state
        .key_ring
        .lookup(&key)
        .ok_or(ApiError::Unauthorized("Unknown or revoked write key."))?;
    if !origin_allowed(&info, headers) {
        return Err(ApiError::Forbidden(
            "This write key is not allowed from this origin.".into(),
        ));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !(content_type.starts_with("application/json")
        || content_type.starts_with("text/plain")
        || content_type.is_empty())
    {
        return Err(ApiError::Rejected {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            detail: "Send the batch as application/json (or text/plain, as sendBeacon does)."
                .into(),
        });
    }
    let parsed = parse::parse_batch(
        body,
        user_agent(headers).as_deref(),
        OffsetDateTime::now_utc(),
    )
    .map_err(|err| match err {
        parse::BatchError::NotABatch(_) => ApiError::BadRequest(err.to_string()),
        parse::BatchError::TooMany => ApiError::Rejected {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            detail: err.to_string(),
        },
    })?;
    let (good, errors) = (parsed.events, parsed.errors);
    state
        .tracking
        .with_label_values(&["rejected"])
        .inc_by(errors.len() as u64);
    if !good.is_empty() {
        store(state, &good).await?;
    }
    Ok(json!({ "accepted": good.len(), "rejected": errors.len(), "errors": errors }))
}

/// The 43-byte transparent GIF, whatever happens: problems are counted, never shown.
async fn pixel(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    match parse::parse_pixel_query(query.as_deref().unwrap_or_default()) {
        Ok(query) => {
            if let Err(err) = track_pixel(&state, &query, &headers).await {
                tracing::debug!(error = %err, "pixel event not stored");
            }
        }
        Err(_) => state.tracking.with_label_values(&["rejected"]).inc(),
    }
    let mut response = PIXEL.to_vec().into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/gif"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache, must-revalidate, max-age=0"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(header::EXPIRES, HeaderValue::from_static("0"));
    response
}

async fn track_pixel(
    state: &AppState,
    query: &parse::PixelQuery,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let reject = |detail: &'static str| {
        state.tracking.with_label_values(&["rejected"]).inc();
        ApiError::Unauthorized(detail)
    };
    // A signed token names its lead; a write key lets the query name one.
    let lead = match query.credential() {
        PixelCredential::LeadToken(token) => state
            .lead_tokens
            .verify(token)
            .ok_or_else(|| reject("bad lead token"))?,
        PixelCredential::WriteKey { key, lead } => {
            state
                .key_ring
                .lookup(key)
                .ok_or_else(|| reject("unknown write key"))?;
            lead.ok_or_else(|| reject("no lead"))?
        }
        PixelCredential::None => return Err(reject("no credentials")),
    };
    let event = query
        .event(
            lead,
            user_agent(headers).as_deref(),
            OffsetDateTime::now_utc(),
        )
        .map_err(|_| reject("bad event"))?;
    store(state, &[event]).await.map(drop)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Identify {
    anonymous_id: String,
    lead_id: Option<Uuid>,
    email: Option<String>,
}

/// Ties an anonymous visitor to a lead: their earlier events then count for the lead.
async fn identify(
    State(state): State<AppState>,
    Query(query): Query<KeyQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let outcome = async {
        let key = write_key(&headers, &query).ok_or(ApiError::Unauthorized("Send a write key in X-Write-Key or ?key=."))?;
        let info = state.key_ring.lookup(&key).ok_or(ApiError::Unauthorized("Unknown or revoked write key."))?;
        if !origin_allowed(&info, &headers) {
            return Err(ApiError::Forbidden("This write key is not allowed from this origin.".into()));
        }
        let request: Identify = serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("Expected {{anonymous_id, lead_id | email}}: {e}.")))?;
        let anonymous = request.anonymous_id.trim();
        if anonymous.is_empty() || anonymous.chars().count() > 200 {
            return Err(ApiError::invalid("anonymous_id", "must be 1 to 200 characters"));
        }
        let lead = match (request.lead_id, request.email.as_deref().and_then(crate::admin::normalize_email)) {
            (Some(lead), _) => lead,
            (None, Some(email)) => {
                let mut conn = state.conn().await?;
                sqlx::query_scalar("select id from leads where email = $1 and deleted_at is null order by created_at limit 1")
                    .bind(&email)
                    .fetch_optional(&mut *conn)
                    .await?
                    .ok_or(ApiError::NotFound("lead"))?
            }
            (None, None) => return Err(ApiError::invalid("lead_id", "give lead_id or email")),
        };
        let raw = json!({ "type": "identify", "lead_id": lead, "anonymous_id": anonymous });
        let event = parse::envelope(raw, user_agent(&headers).as_deref(), OffsetDateTime::now_utc()).map_err(ApiError::BadRequest)?;
        store(&state, &[event]).await?;
        Ok(json!({ "lead_id": lead, "anonymous_id": anonymous }))
    }
    .await;
    match outcome {
        Ok(answer) => (StatusCode::ACCEPTED, Json(answer)).into_response(),
        Err(err) => err.into_response(),
    }
}

/// Keeps the in-memory write keys current.
pub async fn reload_keys(state: AppState) {
    let token = state.platform.shutdown_token();
    loop {
        if let Err(e) = state.key_ring.reload(state.platform.db.pool()).await {
            tracing::debug!(error = %e, "reloading write keys failed; keeping the ones loaded");
        }
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(keys::RELOAD_EVERY) => {}
        }
    }
}

pub type KeyRing = Arc<keys::KeyRing>;
