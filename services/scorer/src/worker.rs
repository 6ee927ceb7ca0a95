//! The scorer's part of a durable consumer (the loop, acks and dead letters are
//! `leadflow_platform::consume`'s): a lane's part of a batch through the processor in one
//! transaction, then the event-to-score latency of what it scored. Events are keyed by lead or
//! visitor ([`key_of`]), so the transactions that run at once never wait for each other's lead
//! locks.

use async_nats::jetstream::Message;
use leadflow_events::Envelope;
use leadflow_platform::{Platform, consume::Handler};
use prometheus::{Histogram, HistogramOpts};
use tracing::Instrument as _;

use crate::processor::{Outcome, Processor};

/// The most events one fetch brings, split over the lanes by key. Draining a backlog, fetches of
/// 500 (about 250 events a transaction) scored 12,400-14,100 events/s here and fetches of 2,000
/// 16,500-18,700 (4,000: no further gain): each transaction's round trips, commit and acks cost
/// the same however many events it carries (docs/benchmarks.md, session 14). A steady load brings
/// smaller batches anyway, since a fetch takes only what has arrived.
pub const BATCH: usize = 2000;

pub struct Worker {
    pub processor: std::sync::Arc<Processor>,
    pub event_to_score: Histogram,
}

/// The key of an event, so that lanes' concurrent transactions never wait for each other's lead
/// locks and never miss each other's writes. An anonymous visitor's events and the identify call
/// that ties the visitor to a lead share a key: stitching moves the visitor's stored events onto
/// the lead, and in another transaction the identify could commit without seeing events still
/// being stored as anonymous, which would then never count. Other events go by lead. Where lanes
/// still meet (a visitor's key scoring the lead it is tied to), one waits for the other's row
/// locks, taken in id order, and never deadlocks.
pub fn key_of(event: &Envelope) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match (&event.anonymous_id, event.lead_id) {
        (Some(visitor), _) => visitor.hash(&mut h),
        (None, Some(lead)) => lead.hash(&mut h),
        (None, None) => event.id.hash(&mut h),
    }
    h.finish()
}

/// The event-to-score histogram's bounds, in seconds: fine up to 100 ms, around the 50 ms p99 the
/// pipeline aims for, so a quantile read from the buckets says which side of it the tail lies.
pub const EVENT_TO_SCORE_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The event-to-score latency histogram, registered with the service's metrics.
pub fn latency_histogram(platform: &Platform) -> anyhow::Result<Histogram> {
    let histogram = Histogram::with_opts(
        HistogramOpts::new(
            "event_to_score_seconds",
            "From an engagement event's time to its lead's new score being committed.",
        )
        .buckets(EVENT_TO_SCORE_BUCKETS.to_vec()),
    )?;
    platform
        .metrics
        .registry()
        .register(Box::new(histogram.clone()))?;
    Ok(histogram)
}

impl Handler for Worker {
    type Item = Envelope;
    type Done = Outcome;

    fn parse(&self, message: &Message) -> Result<Envelope, String> {
        Envelope::from_json(&message.payload).map_err(|e| e.to_string())
    }

    fn key(&self, event: &Envelope) -> u64 {
        key_of(event)
    }

    async fn process(&self, consumer: &str, events: &[Envelope]) -> sqlx::Result<Outcome> {
        // One span per batch, continuing the trace of the batch's first traced event, so a
        // beacon's trace runs from the gateway through its scoring.
        let span = tracing::info_span!("scorer.batch", consumer, events = events.len());
        let traceparent = events.iter().find_map(|e| e.traceparent.as_deref());
        leadflow_platform::telemetry::continue_trace(&span, traceparent);
        let outcome = self.processor.process(events).instrument(span).await?;
        tracing::debug!(
            consumer,
            stored = outcome.stored,
            rescored = outcome.rescored.len(),
            "batch done"
        );
        Ok(outcome)
    }

    async fn committed(&self, outcome: Outcome) {
        let now = time::OffsetDateTime::now_utc();
        for at in &outcome.scored_event_times {
            self.event_to_score
                .observe((now - *at).as_seconds_f64().max(0.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use leadflow_events::Envelope;
    use uuid::Uuid;

    use super::key_of;

    fn event(lead: Option<Uuid>, visitor: Option<&str>) -> Envelope {
        let mut event = Envelope::new("engagement.page_view", "test").expect("envelope");
        event.lead_id = lead;
        event.anonymous_id = visitor.map(str::to_owned);
        event
    }

    #[test]
    fn a_lead_or_a_visitor_keeps_one_key_and_leads_have_their_own() {
        let leads: Vec<Uuid> = (0..50).map(|_| Uuid::now_v7()).collect();
        for lead in &leads {
            let first = key_of(&event(Some(*lead), None));
            for _ in 0..4 {
                assert_eq!(
                    key_of(&event(Some(*lead), None)),
                    first,
                    "a lead's events share a key"
                );
            }
        }
        let keys: std::collections::BTreeSet<u64> = leads
            .iter()
            .map(|l| key_of(&event(Some(*l), None)))
            .collect();
        assert_eq!(keys.len(), 50, "leads do not share keys");

        // An identify call (lead and visitor) goes with the visitor's anonymous events, whatever
        // key the lead's own events have.
        for (i, lead) in leads.iter().enumerate() {
            let visitor = format!("visitor-{i}");
            let mut identify = event(Some(*lead), Some(&visitor));
            identify.kind = "engagement.identify".into();
            assert_eq!(key_of(&identify), key_of(&event(None, Some(&visitor))));
        }
    }
}
