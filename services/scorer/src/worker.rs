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

/// Splits `events` into `n` groups, keeping their order, so that the groups' concurrent
/// transactions never wait for each other's lead locks and never miss each other's writes. An
/// anonymous visitor's events and the identify call that ties the visitor to a lead share a group:
/// stitching moves the visitor's stored events onto the lead, and in another transaction the
/// identify could commit without seeing events still being stored as anonymous, which would then
/// never count. Other events go by lead. Where groups still meet (a visitor's group scoring the
/// lead it is tied to), one waits for the other's row locks, taken in id order, and never deadlocks.
pub fn partition(events: &[Envelope], n: usize) -> Vec<Vec<&Envelope>> {
    use std::hash::{Hash as _, Hasher as _};
    let n = n.max(1);
    let mut groups: Vec<Vec<&Envelope>> = (0..n).map(|_| Vec::new()).collect();
    for event in events {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        match (&event.anonymous_id, event.lead_id) {
            (Some(visitor), _) => visitor.hash(&mut h),
            (None, Some(lead)) => lead.hash(&mut h),
            (None, None) => event.id.hash(&mut h),
        }
        groups[(h.finish() % n as u64) as usize].push(event);
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
        // An identify call (lead and visitor) goes with the visitor's anonymous events.
        let lead = leads[3];
        let mut identify = event(Some(lead), Some("visitor-3-0"));
        identify.kind = "engagement.identify".into();
        let mut with_identify = events.clone();
        with_identify.push(identify.clone());
        let groups_with = partition(&with_identify, 3);
        let of = |id: uuid::Uuid| {
            groups_with
                .iter()
                .position(|g| g.iter().any(|e| e.id == id))
                .expect("placed")
        };
        let visitor_event = events
            .iter()
            .find(|e| e.anonymous_id.as_deref() == Some("visitor-3-0"))
            .expect("one");
        assert_eq!(of(identify.id), of(visitor_event.id));
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
