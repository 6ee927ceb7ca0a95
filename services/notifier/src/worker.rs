//! Reads a durable consumer continuously (a pull stream, so a new event is handed over at once
//! rather than at the next poll), takes whatever has arrived as one batch, and acks the batch only
//! after its transaction committed. Failures are retried by redelivery; a message that failed
//! `max_deliver` times, or can never be read, goes to the dead-letter subject.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{AckKind, Message};
use futures::StreamExt as _;
use leadflow_events::{Envelope, subjects};
use leadflow_platform::{Platform, bus::ConsumerSpec};

use crate::{processor::Processor, recipients};

/// Most messages taken into one transaction.
pub const BATCH: usize = 200;

pub struct Worker {
    pub platform: Arc<Platform>,
    pub processor: Arc<Processor>,
}

impl Worker {
    /// Consumes `spec` until shutdown; the batch in hand is finished and acked first.
    pub async fn run(self: Arc<Self>, spec: ConsumerSpec) {
        let token = self.platform.shutdown_token();
        let name = self.platform.bus.namespace().name(spec.name);
        let mut delays = leadflow_platform::retry::backoff();
        while !token.is_cancelled() {
            let stream = match self.platform.bus.consumer(&spec).await {
                Ok(consumer) => consumer
                    .stream()
                    .max_messages_per_batch(BATCH)
                    .heartbeat(Duration::from_secs(5))
                    .messages()
                    .await
                    .map_err(async_nats::Error::from),
                Err(e) => Err(e),
            };
            let stream = match stream {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::debug!(consumer = %name, error = %e, "consumer not ready");
                    let delay = delays.next().unwrap_or(Duration::from_secs(1));
                    tokio::select! {
                        () = token.cancelled() => return,
                        () = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            delays = leadflow_platform::retry::backoff();
            let mut batches = stream.ready_chunks(BATCH);
            loop {
                let batch = tokio::select! {
                    () = token.cancelled() => return,
                    batch = batches.next() => batch,
                };
                let Some(batch) = batch else { break };
                let mut messages = Vec::with_capacity(batch.len());
                let mut broken = false;
                for item in batch {
                    match item {
                        Ok(message) => messages.push(message),
                        Err(e) => {
                            tracing::warn!(consumer = %name, error = %e, "reading from JetStream failed");
                            broken = true;
                        }
                    }
                }
                self.handle(&name, messages).await;
                if broken {
                    break;
                }
            }
            let delay = delays.next().unwrap_or(Duration::from_secs(1));
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Processes one batch: unreadable messages are dead-lettered, the rest go through the
    /// processor in one transaction and are acked together after it commits.
    pub async fn handle(&self, consumer: &str, messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        let mut events = Vec::with_capacity(messages.len());
        let mut good = Vec::with_capacity(messages.len());
        for message in messages {
            let planned = Envelope::from_json(&message.payload)
                .map_err(|e| e.to_string())
                .and_then(|event| {
                    recipients::plan(&event)
                        .map(|plan| (event, plan))
                        .map_err(|e| e.to_string())
                });
            match planned {
                Ok(item) => {
                    events.push(item);
                    good.push(message);
                }
                Err(reason) => self.dead_letter(consumer, &message, &reason).await,
            }
        }
        if good.is_empty() {
            return;
        }
        let single = good.len() == 1;
        if self.commit(consumer, &events, &good, single).await || single {
            return;
        }
        // One event the database refuses must not hold back the rest of its batch: each goes
        // alone, so only the bad one is retried and, in the end, dead-lettered.
        for (event, message) in events.into_iter().zip(good) {
            self.commit(
                consumer,
                std::slice::from_ref(&event),
                std::slice::from_ref(&message),
                true,
            )
            .await;
        }
    }

    /// Processes `events` in one transaction and acks `messages` after it commits. On failure,
    /// `settle` naks them for redelivery (or dead-letters the ones out of tries); otherwise the
    /// caller decides. Returns whether it committed.
    async fn commit(
        &self,
        consumer: &str,
        events: &[(Envelope, recipients::Plan)],
        messages: &[Message],
        settle: bool,
    ) -> bool {
        let metrics = &self.platform.metrics;
        match self.processor.process(events).await {
            Ok(written) => {
                self.processor.push(&written).await;
                for message in messages {
                    if let Err(e) = message.ack().await {
                        tracing::warn!(consumer, error = %e, "ack failed; the message will be redelivered and skipped");
                    }
                }
                metrics
                    .events_consumed
                    .with_label_values(&[consumer])
                    .inc_by(messages.len() as u64);
                tracing::debug!(
                    consumer,
                    events = messages.len(),
                    notifications = written.len(),
                    "batch done"
                );
                true
            }
            Err(e) => {
                tracing::warn!(consumer, events = messages.len(), error = %leadflow_platform::error_chain(&e), "processing failed");
                if !settle {
                    return false;
                }
                metrics
                    .events_failed
                    .with_label_values(&[consumer])
                    .inc_by(messages.len() as u64);
                let max_deliver = self.platform.config.nats.nats_max_deliver;
                for message in messages {
                    let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
                    if delivered >= max_deliver {
                        self.dead_letter(consumer, message, &e.to_string()).await;
                    } else {
                        let _ = message
                            .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                            .await;
                    }
                }
                false
            }
        }
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
