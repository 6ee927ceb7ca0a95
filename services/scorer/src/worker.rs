//! The scorer's part of a durable consumer (the loop, acks and dead letters are
//! `leadflow_platform::consume`'s): a batch of events through the processor in one transaction,
//! then the event-to-score latency of what it scored.

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
