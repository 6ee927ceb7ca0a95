//! The scorer's part of a durable consumer (the loop, acks and dead letters are
//! `leadflow_platform::consume`'s): a batch of events through the processor, split by lead into
//! `partitions` transactions that run at once, then the event-to-score latency of what it scored.

use async_nats::jetstream::Message;
use leadflow_events::Envelope;
use leadflow_platform::{Platform, consume::Handler};
use prometheus::{Histogram, HistogramOpts};
use tracing::Instrument as _;

use crate::processor::{Outcome, Processor};

pub const BATCH: usize = 500;

pub struct Worker {
    pub processor: std::sync::Arc<Processor>,
    pub event_to_score: Histogram,
    /// Transactions a batch is split into (at least 1).
    pub partitions: usize,
}

/// Splits `events` into `n` groups such that all events of one lead (or of one anonymous visitor)
/// fall in the same group, keeping their order. Concurrent transactions over different groups then
/// touch different leads and never wait for each other's row locks; a visitor already tied to a
/// lead may meet that lead's group, which costs a wait (locks are taken in id order), not a
/// deadlock.
pub fn partition(events: &[Envelope], n: usize) -> Vec<Vec<Envelope>> {
    use std::hash::{Hash as _, Hasher as _};
    let n = n.max(1);
    let mut groups: Vec<Vec<Envelope>> = (0..n).map(|_| Vec::new()).collect();
    for event in events {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        match (event.lead_id, &event.anonymous_id) {
            (Some(lead), _) => lead.hash(&mut h),
            (None, Some(visitor)) => visitor.hash(&mut h),
            (None, None) => event.id.hash(&mut h),
        }
        groups[(h.finish() % n as u64) as usize].push(event.clone());
    }
    groups.retain(|g| !g.is_empty());
    groups
}

/// The event-to-score latency histogram, registered with the service's metrics.
pub fn latency_histogram(platform: &Platform) -> anyhow::Result<Histogram> {
    let histogram = Histogram::with_opts(
        HistogramOpts::new(
            "event_to_score_seconds",
            "From an engagement event's time to its lead's new score being committed.",
        )
        .buckets(vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ]),
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

    async fn process(&self, consumer: &str, events: &[Envelope]) -> sqlx::Result<Outcome> {
        // One span per batch, continuing the trace of the batch's first traced event, so a
        // beacon's trace runs from the gateway through its scoring.
        let span = tracing::info_span!("scorer.batch", consumer, events = events.len());
        let traceparent = events.iter().find_map(|e| e.traceparent.as_deref());
        leadflow_platform::telemetry::continue_trace(&span, traceparent);
        let groups = partition(events, self.partitions);
        let outcomes =
            futures::future::try_join_all(groups.iter().map(|group| self.processor.process(group)))
                .instrument(span)
                .await?;
        let outcome = outcomes
            .into_iter()
            .fold(Outcome::default(), Outcome::merge);
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

    use super::partition;

    fn event(lead: Option<Uuid>, visitor: Option<&str>) -> Envelope {
        let mut event = Envelope::new("engagement.page_view", "test").expect("envelope");
        event.lead_id = lead;
        event.anonymous_id = visitor.map(str::to_owned);
        event
    }

    #[test]
    fn a_lead_or_a_visitor_stays_in_one_group_in_order() {
        let leads: Vec<Uuid> = (0..50).map(|_| Uuid::now_v7()).collect();
        let mut events = Vec::new();
        for round in 0..4 {
            for (i, lead) in leads.iter().enumerate() {
                events.push(event(Some(*lead), None));
                events.push(event(None, Some(&format!("visitor-{i}-{}", round % 2))));
            }
        }
        let groups = partition(&events, 3);
        assert_eq!(groups.len(), 3, "50 leads spread over all three groups");
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), events.len());
        for lead in &leads {
            let holding: Vec<usize> = (0..groups.len())
                .filter(|g| groups[*g].iter().any(|e| e.lead_id == Some(*lead)))
                .collect();
            assert_eq!(holding.len(), 1, "one group holds all of a lead's events");
        }
        for visitor in ["visitor-7-0", "visitor-7-1"] {
            let holding = groups
                .iter()
                .filter(|g| g.iter().any(|e| e.anonymous_id.as_deref() == Some(visitor)))
                .count();
            assert_eq!(holding, 1);
        }
        // Within a group, events keep the order they were fetched in.
        for group in &groups {
            let positions: Vec<usize> = group
                .iter()
                .map(|e| {
                    events
                        .iter()
                        .position(|x| x.id == e.id)
                        .expect("from the batch")
                })
                .collect();
            assert!(positions.windows(2).all(|w| w[0] < w[1]));
        }
        assert_eq!(partition(&events, 1).len(), 1);
        assert!(partition(&[], 4).is_empty());
    }
}
