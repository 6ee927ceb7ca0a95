//! Pulls batches from a durable consumer, hands them to the processor, and acks only after the
//! processor's transaction committed. Failures are retried by redelivery; a message that failed
//! `max_deliver` times, or can never be read, goes to the dead-letter subject.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{AckKind, Message, consumer::PullConsumer};
use futures::StreamExt as _;
use leadflow_events::{Envelope, subjects};
use leadflow_platform::{Platform, bus::ConsumerSpec};
use prometheus::{Histogram, HistogramOpts};
use tracing::Instrument as _;

use crate::processor::{Outcome, Processor};

pub const BATCH: usize = 500;

pub struct Worker {
    pub platform: Arc<Platform>,
    pub processor: Arc<Processor>,
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

impl Worker {
    /// Consumes `spec` until shutdown; the batch in hand is finished and acked first.
    pub async fn run(self: Arc<Self>, spec: ConsumerSpec) {
        let token = self.platform.shutdown_token();
        let name = self.platform.bus.namespace().name(spec.name);
        let mut delays = leadflow_platform::retry::backoff();
        let mut consumer: Option<PullConsumer> = None;
        while !token.is_cancelled() {
            let current = match &consumer {
                Some(c) => c.clone(),
                None => match self.platform.bus.consumer(&spec).await {
                    Ok(c) => {
                        consumer = Some(c.clone());
                        c
                    }
                    Err(e) => {
                        tracing::debug!(consumer = %name, error = %e, "consumer not ready");
                        let delay = delays.next().unwrap_or(Duration::from_secs(1));
                        tokio::select! {
                            () = token.cancelled() => return,
                            () = tokio::time::sleep(delay) => continue,
                        }
                    }
                },
            };
            let batch = tokio::select! {
                () = token.cancelled() => return,
                batch = fetch(&current) => batch,
            };
            match batch {
                Ok(messages) if messages.is_empty() => {}
                Ok(messages) => {
                    delays = leadflow_platform::retry::backoff();
                    self.handle(&name, messages).await;
                }
                Err(e) => {
                    tracing::warn!(consumer = %name, error = %e, "fetching from JetStream failed");
                    consumer = None;
                    let delay = delays.next().unwrap_or(Duration::from_secs(1));
                    tokio::select! {
                        () = token.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Processes one batch: unreadable messages are dead-lettered, the rest go through the
    /// processor in one transaction and are acked together after it commits.
    pub async fn handle(&self, consumer: &str, messages: Vec<Message>) {
        let mut events = Vec::with_capacity(messages.len());
        let mut good = Vec::with_capacity(messages.len());
        for message in messages {
            match Envelope::from_json(&message.payload) {
                Ok(event) => {
                    events.push(event);
                    good.push(message);
                }
                Err(e) => self.dead_letter(consumer, &message, &e.to_string()).await,
            }
        }
        if !good.is_empty() {
            self.process(consumer, events, good).await;
        }
    }

    /// Commits and acks the batch, or, when that fails:
    /// - PostgreSQL unreachable (or a deadlock): keeps the messages, telling JetStream they are in
    ///   progress so no delivery attempt is spent, and retries until it is back or shutdown comes.
    ///   An outage must not push healthy events towards the dead-letter subject.
    /// - anything else: retries the events one by one, so one bad event cannot fail the others;
    ///   the one that fails alone is redelivered, and dead-lettered after `NATS_MAX_DELIVER` tries.
    async fn process(&self, consumer: &str, events: Vec<Envelope>, good: Vec<Message>) {
        let metrics = &self.platform.metrics;
        let token = self.platform.shutdown_token();
        let mut delays = leadflow_platform::retry::backoff();
        loop {
            // One span per batch, continuing the trace of the batch's first traced event, so a
            // beacon's trace runs from the gateway through its scoring.
            let span = tracing::info_span!("scorer.batch", consumer, events = events.len());
            let traceparent = events.iter().find_map(|e| e.traceparent.as_deref());
            leadflow_platform::telemetry::continue_trace(&span, traceparent);
            let error = match self.processor.process(&events).instrument(span).await {
                Ok(outcome) => {
                    self.acknowledge(consumer, &outcome, &good).await;
                    return;
                }
                Err(e) => e,
            };
            metrics
                .events_failed
                .with_label_values(&[consumer])
                .inc_by(good.len() as u64);
            if is_transient(&error) {
                tracing::warn!(consumer, error = %leadflow_platform::error_chain(&error), "batch held until the database is back");
                for message in &good {
                    let _ = message.ack_with(AckKind::Progress).await;
                }
                // Progress must be reported again before `NATS_ACK_WAIT` runs out.
                let ack_wait = self.platform.config.nats.nats_ack_wait;
                let delay = delays
                    .next()
                    .unwrap_or(Duration::from_secs(5))
                    .min(ack_wait / 2);
                tokio::select! {
                    () = tokio::time::sleep(delay) => continue,
                    () = token.cancelled() => {
                        // Shutting down: hand the batch back for another scorer.
                        for message in &good {
                            let _ = message.ack_with(AckKind::Nak(None)).await;
                        }
                        return;
                    }
                }
            }
            if good.len() > 1 {
                tracing::warn!(consumer, error = %leadflow_platform::error_chain(&error), "batch failed; retrying its events one by one");
                for (event, message) in events.into_iter().zip(good) {
                    Box::pin(self.process(consumer, vec![event], vec![message])).await;
                }
                return;
            }
            tracing::warn!(consumer, error = %leadflow_platform::error_chain(&error), "event failed; it will be redelivered");
            let max_deliver = self.platform.config.nats.nats_max_deliver;
            for message in good {
                let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
                if delivered >= max_deliver {
                    self.dead_letter(consumer, &message, &error.to_string())
                        .await;
                } else {
                    let _ = message
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                        .await;
                }
            }
            return;
        }
    }

    async fn acknowledge(&self, consumer: &str, outcome: &Outcome, good: &[Message]) {
        let now = time::OffsetDateTime::now_utc();
        for at in &outcome.scored_event_times {
            self.event_to_score
                .observe((now - *at).as_seconds_f64().max(0.0));
        }
        // Plain acks, not confirmed ones: a lost ack only means a redelivery, which the
        // processor turns into a no-op, and waiting for 500 confirmations costs a round trip each.
        for message in good {
            if let Err(e) = message.ack().await {
                tracing::warn!(consumer, error = %e, "ack failed; the message will be redelivered and skipped");
            }
        }
        self.platform
            .metrics
            .events_consumed
            .with_label_values(&[consumer])
            .inc_by(good.len() as u64);
        tracing::debug!(
            consumer,
            stored = outcome.stored,
            rescored = outcome.rescored.len(),
            "batch done"
        );
    }

    /// Keeps the message on `deadletter.<subject>` with why, then terminates it.
    async fn dead_letter(&self, consumer: &str, message: &Message, reason: &str) {
        let ns = self.platform.bus.namespace();
        let original = ns
            .strip(message.subject.as_str())
            .unwrap_or(message.subject.as_str())
            .to_owned();
        let subject = ns.subject(&format!("{}.{original}", subjects::DEAD_LETTER_PREFIX));
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            "Leadflow-Dead-Letter-Reason",
            reason.chars().take(500).collect::<String>().as_str(),
        );
        headers.insert("Leadflow-Consumer", consumer);
        let published = match self
            .platform
            .bus
            .jetstream()
            .publish_with_headers(subject, headers, message.payload.clone())
            .await
        {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        };
        if published {
            let _ = message.ack_with(AckKind::Term).await;
            self.platform
                .metrics
                .events_dead_lettered
                .with_label_values(&[consumer])
                .inc();
            tracing::warn!(consumer, reason, "message dead-lettered");
        } else {
            // Could not keep it: let JetStream redeliver rather than lose it.
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                .await;
        }
    }
}

async fn fetch(consumer: &PullConsumer) -> Result<Vec<Message>, async_nats::Error> {
    let mut batch = consumer
        .fetch()
        .max_messages(BATCH)
        .expires(Duration::from_millis(500))
        .messages()
        .await?;
    let mut messages = Vec::new();
    while let Some(message) = batch.next().await {
        messages.push(message?);
    }
    Ok(messages)
}

/// Failures that say nothing about the events: the database is unreachable or busy, or the
/// transaction lost a deadlock. Retrying the same batch later is right for them.
fn is_transient(error: &sqlx::Error) -> bool {
    leadflow_platform::db::is_unavailable(error)
        || matches!(error, sqlx::Error::Database(db)
            if db.code().is_some_and(|c| c == "40P01" || c == "40001"))
}
