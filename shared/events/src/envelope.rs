use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// One event, one NATS message. The `id` doubles as the `Nats-Msg-Id` header, so JetStream drops
/// duplicates inside its window and consumers stay idempotent on it beyond that window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: Uuid,
    /// The subject without namespace, e.g. `engagement.pricing_view` or `leads.created`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The service that produced the event.
    pub source: String,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub lead_id: Option<Uuid>,
    pub anonymous_id: Option<String>,
    #[serde(default)]
    pub data: serde_json::Value,
    /// W3C trace context of the span that produced the event, so one trace spans every service.
    pub traceparent: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("event type {0:?} is not a valid subject (letters, digits, '_', '-' and single dots)")]
    InvalidType(String),
    #[error("malformed event envelope: {0}")]
    Malformed(#[from] serde_json::Error),
}

impl Envelope {
    /// A new event with a fresh time-ordered id and the current time.
    pub fn new(kind: impl Into<String>, source: impl Into<String>) -> Result<Self, EnvelopeError> {
        let kind = kind.into();
        if !is_valid_subject(&kind) {
            return Err(EnvelopeError::InvalidType(kind));
        }
        Ok(Self {
            id: Uuid::now_v7(),
            kind,
            source: source.into(),
            time: OffsetDateTime::now_utc(),
            lead_id: None,
            anonymous_id: None,
            data: serde_json::Value::Object(Default::default()),
            traceparent: None,
        })
    }

    pub fn with_lead(mut self, lead_id: Uuid) -> Self {
        self.lead_id = Some(lead_id);
        self
    }

    pub fn with_data(mut self, data: serde_json::Value) -> Self {
        self.data = data;
        self
    }

    pub fn with_traceparent(mut self, traceparent: Option<String>) -> Self {
        self.traceparent = traceparent;
        self
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serialising a struct of strings, uuids and a Value cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

/// NATS subject tokens: non-empty, no wildcards or whitespace. We are stricter than NATS and allow
/// only what event types need, because event types arrive from untrusted tracking clients.
pub(crate) fn is_valid_subject(subject: &str) -> bool {
    !subject.is_empty()
        && subject.len() <= 200
        && subject.split('.').all(|token| {
            !token.is_empty()
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_with_the_documented_field_names() {
        let lead = Uuid::now_v7();
        let event = Envelope::new("engagement.pricing_view", "gateway")
            .expect("valid type")
            .with_lead(lead)
            .with_data(serde_json::json!({"url": "https://example.com/pricing"}));
        let json: serde_json::Value = serde_json::from_slice(&event.to_json()).expect("json");
        for field in [
            "id",
            "type",
            "source",
            "time",
            "lead_id",
            "anonymous_id",
            "data",
            "traceparent",
        ] {
            assert!(json.get(field).is_some(), "missing {field} in {json}");
        }
        assert_eq!(json["type"], "engagement.pricing_view");
        assert!(json["time"].as_str().expect("time string").ends_with('Z'));
        assert_eq!(Envelope::from_json(&event.to_json()).expect("parse"), event);
    }

    #[test]
    fn ids_are_time_ordered_uuid_v7() {
        let a = Envelope::new("leads.created", "gateway").expect("valid");
        let b = Envelope::new("leads.created", "gateway").expect("valid");
        assert_eq!(a.id.get_version_num(), 7);
        assert!(a.id < b.id);
    }

    #[test]
    fn wildcards_and_empty_tokens_are_not_event_types() {
        for bad in [
            "",
            "engagement.*",
            "engagement.>",
            "a..b",
            "a b",
            ".a",
            "a.",
        ] {
            assert!(Envelope::new(bad, "gateway").is_err(), "{bad:?} accepted");
        }
        assert!(Envelope::new("engagement.test_drive-request", "gateway").is_ok());
    }
}
