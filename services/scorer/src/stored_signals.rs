//! A lead's running signals as `leads.signals` keeps them: a JSON object from signal name to
//! `{"value", "as_of", "count"}` (migration 14; the `lead_signal_rows` view shows them as rows).
//! They live on the lead's row because a batch locks, reads and updates every lead it scores
//! anyway; a table of their own cost a read and an upsert more a batch.
//!
//! A batch writes a folded lead's whole object back rather than merging the changed entries into
//! the row's (`signals || $changed`): it holds the lead's row lock from reading the object to
//! writing it, so nothing can change it in between, and PostgreSQL's merge of two objects was a
//! fifth of the cost of an update that leaves the indexes alone (docs/benchmarks.md, session 13).
//! Entries this model cannot use travel through as the JSON text they were read as.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;

use crate::model::{Running, Signal};

#[derive(Serialize, Deserialize)]
struct Stored {
    value: f64,
    #[serde(with = "time::serde::rfc3339")]
    as_of: OffsetDateTime,
    count: i64,
}

/// A lead's stored signals, read from the column's JSON text without building a tree of it.
#[derive(Debug, Default)]
pub struct Signals<'a> {
    /// The signals this model knows and could read.
    pub known: BTreeMap<Signal, Running>,
    /// Everything else, as it was stored: names a newer model wrote, and entries this model could
    /// not read. Written back unchanged, except where a known signal of the same name replaces it.
    kept: Vec<(String, &'a RawValue)>,
}

/// Reads a lead's stored object. A column that is not an object counts as no signals.
pub fn parse(stored: &RawValue) -> Signals<'_> {
    let Ok(entries) = serde_json::from_str::<BTreeMap<String, &RawValue>>(stored.get()) else {
        return Signals::default();
    };
    let mut signals = Signals::default();
    for (name, entry) in entries {
        let read = Signal::parse(&name)
            .map(|signal| (signal, serde_json::from_str::<Stored>(entry.get())));
        match read {
            Some((signal, Ok(s))) => {
                signals.known.insert(
                    signal,
                    Running {
                        value: s.value,
                        as_of: s.as_of,
                        count: s.count,
                    },
                );
            }
            Some((_, Err(error))) => {
                tracing::warn!(signal = name, %error, "unreadable stored signal, counted as none");
                signals.kept.push((name, entry));
            }
            None => signals.kept.push((name, entry)),
        }
    }
    signals
}

impl Signals<'_> {
    /// The whole object to store: the known signals (as a fold left them) and what was kept. `as_of`
    /// is cut to whole microseconds, as a `timestamptz` keeps it, so it compares exactly with the
    /// events' `occurred_at` and reads back as it was folded.
    pub fn to_stored(&self) -> Option<String> {
        let mut object: BTreeMap<&str, Entry<'_>> = BTreeMap::new();
        for (name, entry) in &self.kept {
            object.insert(name, Entry::Kept(entry));
        }
        for (signal, running) in &self.known {
            let as_of = running
                .as_of
                .replace_nanosecond(running.as_of.nanosecond() / 1_000 * 1_000)
                .unwrap_or(running.as_of);
            let stored = Stored {
                value: running.value,
                as_of,
                count: running.count,
            };
            object.insert(signal.as_str(), Entry::Known(stored));
        }
        // Only a time outside RFC 3339's years fails to serialize; the row then keeps its object.
        serde_json::to_string(&object)
            .inspect_err(|error| tracing::warn!(%error, "signals not stored"))
            .ok()
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum Entry<'a> {
    Known(Stored),
    Kept(&'a RawValue),
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use time::macros::datetime;

    use super::*;

    fn raw(value: &Value) -> Box<RawValue> {
        serde_json::value::to_raw_value(value).expect("json")
    }

    fn stored_as_value(signals: &Signals<'_>) -> Value {
        serde_json::from_str(&signals.to_stored().expect("stored")).expect("json")
    }

    #[test]
    fn signals_read_back_as_stored_to_the_microsecond() {
        let running = Running {
            value: 1.234567890123456,
            as_of: datetime!(2026-11-26 10:00:00.123456789 UTC),
            count: 7,
        };
        let mut signals = Signals::default();
        signals.known.insert(Signal::PricingView, running);
        let stored = stored_as_value(&signals);
        assert_eq!(
            stored,
            json!({"pricing_view": {"value": 1.234567890123456, "as_of": "2026-11-26T10:00:00.123456Z", "count": 7}})
        );
        let raw = raw(&stored);
        let read = parse(&raw);
        assert_eq!(
            read.known.get(&Signal::PricingView),
            Some(&Running {
                as_of: datetime!(2026-11-26 10:00:00.123456 UTC),
                ..running
            })
        );
    }

    #[test]
    fn entries_this_model_cannot_use_are_not_counted_and_are_written_back_as_they_were() {
        let stored = json!({
            "page_view": {"value": 1.0, "as_of": "2026-11-26T10:00:00+01:00", "count": 1},
            "signal_of_a_newer_model": {"value": 1.0, "as_of": "2026-11-26T10:00:00Z", "count": 1, "extra": [1, 2]},
            "email_open": {"value": "lots"},
        });
        let stored_raw = raw(&stored);
        let mut read = parse(&stored_raw);
        assert_eq!(read.known.len(), 1, "{read:?}");
        assert_eq!(
            read.known[&Signal::PageView].as_of,
            datetime!(2026-11-26 09:00:00 UTC),
            "offsets, as PostgreSQL writes them, are read"
        );

        let written = stored_as_value(&read);
        assert_eq!(
            written["signal_of_a_newer_model"],
            stored["signal_of_a_newer_model"]
        );
        assert_eq!(written["email_open"], stored["email_open"]);
        let written_raw = raw(&written);
        assert_eq!(
            parse(&written_raw).known[&Signal::PageView],
            read.known[&Signal::PageView],
            "a known signal is written as it was read"
        );

        // A fold of the unreadable signal replaces it.
        read.known.insert(
            Signal::EmailOpen,
            Running::first(datetime!(2026-11-27 08:00:00 UTC)),
        );
        let written = stored_as_value(&read);
        assert_eq!(written["email_open"]["count"], 1);
        assert_eq!(
            written["signal_of_a_newer_model"],
            stored["signal_of_a_newer_model"]
        );
    }

    #[test]
    fn a_column_that_is_not_an_object_holds_no_signals() {
        for stored in [Value::Null, json!([1, 2]), json!("page_view")] {
            let raw = raw(&stored);
            let read = parse(&raw);
            assert!(read.known.is_empty() && read.kept.is_empty(), "{stored}");
            assert_eq!(read.to_stored().as_deref(), Some("{}"));
        }
    }
}
