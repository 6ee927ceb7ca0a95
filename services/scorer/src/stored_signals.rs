//! A lead's running signals as `leads.signals` keeps them: a JSON object from signal name to
//! `{"value", "as_of", "count"}` (migration 14; the `lead_signal_rows` view shows them as rows).
//! They live on the lead's row because a batch locks, reads and updates every lead it scores
//! anyway; a table of their own cost a read and an upsert more a batch.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::model::{Running, Signal};

#[derive(Serialize, Deserialize)]
struct Stored {
    value: f64,
    #[serde(with = "time::serde::rfc3339")]
    as_of: OffsetDateTime,
    count: i64,
}

/// The signals this model knows, from a lead's stored object. Names it does not know (written by
/// a newer model) are skipped, and stay in the row: only changed signals are written back.
pub fn parse(stored: &Value) -> BTreeMap<Signal, Running> {
    let Some(object) = stored.as_object() else {
        return BTreeMap::new();
    };
    object
        .iter()
        .filter_map(|(name, entry)| {
            let signal = Signal::parse(name)?;
            match Stored::deserialize(entry) {
                Ok(s) => Some((
                    signal,
                    Running {
                        value: s.value,
                        as_of: s.as_of,
                        count: s.count,
                    },
                )),
                Err(error) => {
                    tracing::warn!(signal = name, %error, "unreadable stored signal, counted as none");
                    None
                }
            }
        })
        .collect()
}

/// The given signals as an object to merge into a lead's (`signals || $changed`). `as_of` is cut
/// to whole microseconds, as a `timestamptz` keeps it, so it compares exactly with the events'
/// `occurred_at` and reads back as it was folded.
pub fn to_stored<'a>(signals: impl IntoIterator<Item = (&'a Signal, &'a Running)>) -> Value {
    let object: Map<String, Value> = signals
        .into_iter()
        .filter_map(|(signal, running)| {
            let as_of = running
                .as_of
                .replace_nanosecond(running.as_of.nanosecond() / 1_000 * 1_000)
                .unwrap_or(running.as_of);
            let stored = Stored {
                value: running.value,
                as_of,
                count: running.count,
            };
            // Only a time outside RFC 3339's years fails; leaving the signal out keeps the row's.
            match serde_json::to_value(stored) {
                Ok(value) => Some((signal.as_str().to_owned(), value)),
                Err(error) => {
                    tracing::warn!(signal = signal.as_str(), %error, "signal not stored");
                    None
                }
            }
        })
        .collect();
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::datetime;

    use super::*;

    #[test]
    fn signals_read_back_as_stored_to_the_microsecond() {
        let running = Running {
            value: 1.234567890123456,
            as_of: datetime!(2026-11-26 10:00:00.123456789 UTC),
            count: 7,
        };
        let stored = to_stored([(&Signal::PricingView, &running)]);
        assert_eq!(
            stored,
            json!({"pricing_view": {"value": 1.234567890123456, "as_of": "2026-11-26T10:00:00.123456Z", "count": 7}})
        );
        let read = parse(&stored);
        assert_eq!(
            read.get(&Signal::PricingView),
            Some(&Running {
                as_of: datetime!(2026-11-26 10:00:00.123456 UTC),
                ..running
            })
        );
    }

    #[test]
    fn unknown_and_unreadable_signals_are_skipped() {
        let stored = json!({
            "page_view": {"value": 1.0, "as_of": "2026-11-26T10:00:00+01:00", "count": 1},
            "signal_of_a_newer_model": {"value": 1.0, "as_of": "2026-11-26T10:00:00Z", "count": 1},
            "email_open": {"value": "lots"},
        });
        let read = parse(&stored);
        assert_eq!(read.len(), 1, "{read:?}");
        assert_eq!(
            read[&Signal::PageView].as_of,
            datetime!(2026-11-26 09:00:00 UTC),
            "offsets, as PostgreSQL writes them, are read"
        );
        assert!(parse(&Value::Null).is_empty());
    }
}
