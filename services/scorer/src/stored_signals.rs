//! A lead's running signals as `leads.signal_state` keeps them (migration 20): an array of float8,
//! three numbers a signal in the order of [`Signal::ALL`], each its value, its `as_of` in microseconds
//! since 1970 and its count, a count of 0 for a signal never seen. `lead_signal_rows` shows them as
//! rows.
//!
//! They live on the lead's row because a batch locks, reads and updates every lead it scores
//! anyway; a table of their own cost a read and an upsert more a batch. They are numbers rather
//! than the JSON object they were (migration 14) because they cross the wire twice a lead a batch:
//! printing, parsing and printing JSON again was about a tenth of the database's work in a drain
//! (docs/benchmarks.md, session 13). A batch writes a folded lead's whole array back: it holds the
//! lead's row lock from reading it to writing it.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use crate::model::{Running, Signal};

/// The largest whole number up to which every whole number is a float8 (2^53): microseconds until
/// the year 2255, and counts far beyond any lead's.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

/// Whether `n` is a whole number a float8 holds exactly, as every stored time and count is: NaN,
/// infinities and fractions were not written by a scorer.
fn exact(n: f64) -> bool {
    n.is_finite() && n.fract() == 0.0 && n.abs() <= MAX_EXACT
}

/// A lead's stored signals.
#[derive(Debug, Default)]
pub struct Signals {
    /// The signals this model knows and could read.
    pub known: BTreeMap<Signal, Running>,
    /// The numbers past this model's slots, as they were stored.
    kept: Vec<f64>,
}

/// Reads a lead's stored array. A slot that holds no valid signal (a time out of range, a value
/// that is not a number) counts as none and is logged.
pub fn parse(stored: &[f64]) -> Signals {
    // Numbers past the signals this model knows (a newer model's, appended to `Signal::ALL`)
    // are kept, to be written back as they were read.
    let known_len = (3 * Signal::ALL.len()).min(stored.len());
    let mut signals = Signals {
        known: BTreeMap::new(),
        kept: stored[known_len..].to_vec(),
    };
    for (signal, slot) in Signal::ALL.iter().zip(stored[..known_len].chunks_exact(3)) {
        let &[value, as_of, count] = slot else {
            continue;
        };
        if count == 0.0 {
            continue;
        }
        let as_of = (exact(as_of) && exact(count) && count > 0.0)
            .then(|| OffsetDateTime::from_unix_timestamp_nanos(as_of as i128 * 1_000).ok())
            .flatten();
        match as_of {
            Some(as_of) if value.is_finite() => {
                signals.known.insert(
                    *signal,
                    Running {
                        value,
                        as_of,
                        count: count as i64,
                    },
                );
            }
            _ => {
                tracing::warn!(
                    signal = signal.as_str(),
                    value,
                    count,
                    "unreadable stored signal, counted as none"
                );
            }
        }
    }
    signals
}

impl Signals {
    /// The whole array to store: the known signals (as a fold left them), then what was kept.
    /// `as_of` is cut to whole microseconds, as a `timestamptz` keeps it, so it compares exactly
    /// with the events' `occurred_at` and reads back as it was folded.
    pub fn to_stored(&self) -> Vec<f64> {
        let mut stored = Vec::with_capacity(3 * Signal::ALL.len() + self.kept.len());
        for signal in Signal::ALL {
            match self.known.get(&signal) {
                Some(running) => stored.extend([
                    running.value,
                    (running.as_of.unix_timestamp_nanos() / 1_000) as f64,
                    running.count as f64,
                ]),
                None => stored.extend([0.0; 3]),
            }
        }
        stored.extend_from_slice(&self.kept);
        stored
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn signals_read_back_as_stored_to_the_microsecond() {
        let running = Running {
            value: 1.234567890123456,
            as_of: datetime!(2026-11-26 10:00:00.123456789 UTC),
            count: 7,
        };
        let mut signals = Signals::default();
        signals.known.insert(Signal::PricingView, running);
        let stored = signals.to_stored();
        assert_eq!(stored.len(), 27);
        assert_eq!(
            &stored[9..12],
            &[1.234567890123456, 1_795_687_200_123_456.0, 7.0],
            "pricing_view is the fourth slot"
        );
        assert!(stored[..9].iter().chain(&stored[12..]).all(|n| *n == 0.0));
        let read = parse(&stored);
        assert_eq!(read.known.len(), 1);
        assert_eq!(
            read.known.get(&Signal::PricingView),
            Some(&Running {
                as_of: datetime!(2026-11-26 10:00:00.123456 UTC),
                ..running
            })
        );
    }

    #[test]
    fn a_newer_models_slots_are_written_back_and_unreadable_slots_count_as_none() {
        let mut stored = vec![0.0; 27];
        stored[6..9].copy_from_slice(&[2.5, 1_796_292_000_000_000.0, 3.0]); // page_view
        stored[0..3].copy_from_slice(&[f64::NAN, 1_796_292_000_000_000.0, 1.0]); // email_open
        stored[3..6].copy_from_slice(&[1.0, 1e30, 1.0]); // email_click: a time out of range
        stored[9..12].copy_from_slice(&[1.0, f64::NAN, 1.0]); // pricing_view: no time
        stored[12..15].copy_from_slice(&[1.0, 1_796_292_000_000_000.0, f64::NAN]); // calculator_use
        stored[15..18].copy_from_slice(&[1.0, 1_796_292_000_000_000.0, 1e300]); // form_submit
        stored[18..21].copy_from_slice(&[1.0, f64::INFINITY, 2.0]); // chat_message
        stored[21..24].copy_from_slice(&[1.0, 1_796_292_000_000_000.0, -2.0]); // test_drive_request
        stored.extend([4.0, 1_796_292_000_000_000.0, 2.0]); // a tenth signal, a newer model's
        let mut read = parse(&stored);
        assert_eq!(read.known.len(), 1, "{read:?}");
        assert_eq!(read.known[&Signal::PageView].count, 3);

        read.known.insert(
            Signal::Urgency,
            Running::first(datetime!(2026-11-27 08:00:00 UTC)),
        );
        let written = read.to_stored();
        assert_eq!(written.len(), 30);
        assert_eq!(&written[27..], &[4.0, 1_796_292_000_000_000.0, 2.0]);
        assert_eq!(&written[6..9], &[2.5, 1_796_292_000_000_000.0, 3.0]);
        assert_eq!(written[26], 1.0, "the urgency folded in");
        assert_eq!(
            &written[0..6],
            &[0.0; 6],
            "unreadable slots are written empty"
        );
        assert_eq!(&written[9..24], &[0.0; 15]);
    }

    #[test]
    fn short_arrays_hold_what_they_hold() {
        assert!(parse(&[]).known.is_empty());
        let read = parse(&[1.0, 1_796_292_000_000_000.0, 1.0, 9.0]);
        assert_eq!(read.known.len(), 1);
        assert!(read.kept.is_empty());
        assert_eq!(read.to_stored().len(), 27);
    }

    /// Migration 20 names the slots (in its conversion and in the view `lead_signal_rows`); it
    /// must list them in `Signal::ALL`'s order.
    #[test]
    fn the_views_names_follow_the_slots() {
        let migration =
            include_str!("../../../migrations/20261207000020_signal_state_as_numbers.sql");
        let names: Vec<String> = Signal::ALL
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        let squashed: String = migration.split_whitespace().collect();
        let expected = format!("array[{}]", names.join(","));
        assert_eq!(squashed.matches(&expected).count(), 2, "{expected}");
    }
}
