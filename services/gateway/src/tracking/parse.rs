//! What tracking senders post, read as plain functions: no state and no I/O, so the handlers,
//! the fuzz targets (`fuzz/`) and the corpus replay tests all run exactly the same code on
//! hostile input. Credentials (write keys, lead tokens) are checked by the handlers around them.

use leadflow_events::Envelope;
use leadflow_platform::telemetry::current_traceparent;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use super::bots;

/// Most events one `POST /t/events` takes.
pub const MAX_EVENTS: usize = 500;
/// Largest `properties` object of one event, as JSON.
pub const MAX_PROPERTIES: usize = 8 * 1024;
/// Longest page URL a pixel records (`u=`); a longer one is dropped, the open still counts.
pub const MAX_PIXEL_URL: usize = 2000;

#[derive(Deserialize)]
struct Batch {
    events: Vec<Value>,
}

/// One event as a sender posts it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    id: Option<Uuid>,
    #[serde(rename = "type")]
    kind: String,
    lead_id: Option<Uuid>,
    anonymous_id: Option<String>,
    properties: Option<Map<String, Value>>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    timestamp: Option<OffsetDateTime>,
}

/// A batch whose envelope parsed: the events that are valid, and why each other one is not.
#[derive(Debug)]
pub struct ParsedBatch {
    pub events: Vec<Envelope>,
    pub errors: Vec<EventError>,
}

/// Why the event at `index` (0-based, in the posted order) was refused.
#[derive(Debug, Serialize)]
pub struct EventError {
    pub index: usize,
    pub detail: String,
}

/// Why a whole batch was refused.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// 400: the body is not JSON of the shape `{"events": [...]}`.
    #[error("The body is not a batch such as {{\"events\": [...]}}: {0}.")]
    NotABatch(#[source] serde_json::Error),
    /// 413: more than [`MAX_EVENTS`] events.
    #[error("At most {MAX_EVENTS} events per request.")]
    TooMany,
}

/// Reads a `POST /t/events` body (JSON, or the same JSON sent as `text/plain` by
/// `navigator.sendBeacon`). One bad event does not refuse the others.
pub fn parse_batch(
    body: &[u8],
    agent: Option<&str>,
    now: OffsetDateTime,
) -> Result<ParsedBatch, BatchError> {
    let batch: Batch = serde_json::from_slice(body).map_err(BatchError::NotABatch)?;
    if batch.events.len() > MAX_EVENTS {
        return Err(BatchError::TooMany);
    }
    let mut events = Vec::with_capacity(batch.events.len());
    let mut errors = Vec::new();
    for (index, raw) in batch.events.into_iter().enumerate() {
        match envelope(raw, agent, now) {
            Ok(event) => events.push(event),
            Err(detail) => errors.push(EventError { index, detail }),
        }
    }
    Ok(ParsedBatch { events, errors })
}

/// Validates one event into an envelope; the error says what is wrong with it.
pub fn envelope(raw: Value, agent: Option<&str>, now: OffsetDateTime) -> Result<Envelope, String> {
    // Accepted, it could never be stored (PostgreSQL text and jsonb cannot hold NUL): it would be
    // answered 202 and then dead-lettered, or fail a whole outbox batch while NATS is down.
    if let Some(field) = crate::extract::nul_field(&raw, "") {
        return Err(format!(
            "{field} must not contain the NUL character (\\u0000)"
        ));
    }
    let raw: RawEvent = serde_json::from_value(raw).map_err(|e| e.to_string())?;
    let kind = raw.kind.trim().to_ascii_lowercase();
    if kind.is_empty()
        || kind.len() > 100
        || !kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(
            "type must be 1 to 100 letters, digits or underscores, e.g. pricing_view".into(),
        );
    }
    let anonymous = raw
        .anonymous_id
        .map(|a| a.trim().to_owned())
        .filter(|a| !a.is_empty());
    if anonymous.as_ref().is_some_and(|a| a.chars().count() > 200) {
        return Err("anonymous_id must be at most 200 characters".into());
    }
    if raw.lead_id.is_none() && anonymous.is_none() {
        return Err("give lead_id or anonymous_id".into());
    }
    let properties = Value::Object(raw.properties.unwrap_or_default());
    if properties.to_string().len() > MAX_PROPERTIES {
        return Err("properties must be at most 8 KiB".into());
    }
    let time = raw.timestamp.unwrap_or(now);
    if time > now + time::Duration::minutes(5) {
        return Err("timestamp is in the future".into());
    }
    if time < now - time::Duration::days(30) {
        return Err("timestamp is more than 30 days old".into());
    }
    let mut data = json!({ "properties": properties, "user_agent": agent });
    if let Some(reason) = bots::suppression(agent) {
        data["suppressed_reason"] = json!(reason);
    }
    let mut event = Envelope::new(format!("engagement.{kind}"), "gateway")
        .map_err(|e| e.to_string())?
        .with_data(data)
        .with_traceparent(current_traceparent());
    event.id = raw.id.unwrap_or(event.id);
    event.time = time;
    event.lead_id = raw.lead_id;
    event.anonymous_id = anonymous;
    Ok(event)
}

/// `GET /t/pixel.gif?k=<write key>&lead=<id>` or `?t=<lead token>`, with optional `e=<type>`
/// (default `email_open`) and `u=<page url>`.
#[derive(Debug, Deserialize)]
pub struct PixelQuery {
    pub k: Option<String>,
    pub t: Option<String>,
    pub lead: Option<Uuid>,
    pub e: Option<String>,
    pub u: Option<String>,
}

/// What a pixel request offers to prove it may record an event.
#[derive(Debug, PartialEq, Eq)]
pub enum PixelCredential<'a> {
    /// A signed lead token; it names the lead, whatever `lead=` says.
    LeadToken(&'a str),
    /// A write key, with the lead the query names (if any).
    WriteKey {
        key: &'a str,
        lead: Option<Uuid>,
    },
    None,
}

/// Reads the raw query string of a pixel request, as axum's `Query` extractor would.
pub fn parse_pixel_query(query: &str) -> Result<PixelQuery, serde_urlencoded::de::Error> {
    serde_urlencoded::from_str(query)
}

impl PixelQuery {
    /// A token wins over a key: it is the stronger proof and names its own lead.
    pub fn credential(&self) -> PixelCredential<'_> {
        match (&self.t, &self.k) {
            (Some(token), _) => PixelCredential::LeadToken(token),
            (None, Some(key)) => PixelCredential::WriteKey {
                key,
                lead: self.lead,
            },
            (None, None) => PixelCredential::None,
        }
    }

    /// The event this pixel records for `lead`, once its credential was checked.
    pub fn event(
        &self,
        lead: Uuid,
        agent: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Envelope, String> {
        let mut properties = Map::new();
        if let Some(url) = self
            .u
            .as_ref()
            .filter(|u| u.len() <= MAX_PIXEL_URL && !u.contains('\0'))
        {
            properties.insert("url".into(), Value::String(url.clone()));
        }
        let kind = self.e.as_deref().unwrap_or("email_open");
        let raw = json!({ "type": kind, "lead_id": lead, "properties": properties });
        envelope(raw, agent, now)
    }
}
