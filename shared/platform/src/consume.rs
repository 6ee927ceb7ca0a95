//! The loop every durable consumer runs, whatever it does with the events: pull a batch, commit it
//! in one transaction, ack it after the commit. What goes wrong is sorted by what it says about
//! the events:
//! - a message that cannot be read is kept on `deadletter.<subject>` at once;
//! - PostgreSQL unreachable, or a lost deadlock, says nothing about the events: the batch is held,
//!   JetStream is told it is in progress (so no delivery attempt is spent), and it is retried until
//!   the database is back. An outage must not push healthy events towards the dead-letter subject;
//! - any other failure of a batch is retried event by event, so one bad event fails alone; it is
//!   redelivered, and dead-lettered after `NATS_MAX_DELIVER` attempts.
//!
//! Batches are pulled explicitly (`fetch`), not streamed, so nothing waits unacknowledged in the
//! client while a batch is held.

use std::{future::Future, sync::Arc, time::Duration};

use async_nats::jetstream::{AckKind, Message, consumer::PullConsumer};
use futures::StreamExt as _;
use leadflow_events::subjects;

use crate::{Platform, bus::ConsumerSpec, db};

/// What a consumer does with its events.
pub trait Handler: Send + Sync + 'static {
    /// A message read and understood.
    type Item: Send + Sync;
    /// What a committed batch leaves for [`Handler::committed`].
    type Done: Send;

    /// Reads a message; an error (why) sends it to the dead-letter subject.
    fn parse(&self, message: &Message) -> Result<Self::Item, String>;

    /// Writes everything the items change in one transaction.
    fn process(
        &self,
        consumer: &str,
        items: &[Self::Item],
    ) -> impl Future<Output = sqlx::Result<Self::Done>> + Send;

    /// Runs after the commit, before the batch is acked (pushes, metrics).
    fn committed(&self, done: Self::Done) -> impl Future<Output = ()> + Send;
}

/// Consumes `spec` with batches of up to `batch` messages until shutdown; the batch in hand is
/// finished and acked first.
pub async fn run<H: Handler>(
    platform: Arc<Platform>,
    spec: ConsumerSpec,
    batch: usize,
    handler: Arc<H>,
) {
    let token = platform.shutdown_token();
    let name = platform.bus.namespace().name(spec.name);
    let mut delays = crate::retry::backoff();
    let mut consumer: Option<PullConsumer> = None;
    while !token.is_cancelled() {
        let current = match &consumer {
            Some(c) => c.clone(),
            None => match platform.bus.consumer(&spec).await {
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
        let fetched = tokio::select! {
            () = token.cancelled() => return,
            fetched = fetch(&current, batch) => fetched,
        };
        match fetched {
            Ok(messages) if messages.is_empty() => {}
            Ok(messages) => {
                delays = crate::retry::backoff();
                // The durable's settings as the server reported them when this loop looked it up,
                // not this instance's: during a rollout that changes them, another instance may
                // have set them last.
                let settings = &current.cached_info().config;
                Batches {
                    platform: &platform,
                    handler: &*handler,
                    consumer: &name,
                    ack_wait: settings.ack_wait,
                    max_deliver: settings.max_deliver,
                }
                .handle(messages)
                .await;
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

/// Whatever has arrived, up to `batch` messages, waiting at most half a second for the first.
async fn fetch(consumer: &PullConsumer, batch: usize) -> Result<Vec<Message>, async_nats::Error> {
    let mut pulled = consumer
        .fetch()
        .max_messages(batch)
        .expires(Duration::from_millis(500))
        .messages()
        .await?;
    let mut messages = Vec::new();
    while let Some(message) = pulled.next().await {
        messages.push(message?);
    }
    Ok(messages)
}

struct Batches<'a, H> {
    platform: &'a Platform,
    handler: &'a H,
    consumer: &'a str,
    /// How long the server waits for an ack before redelivering.
    ack_wait: Duration,
    /// Deliveries the server makes of one message (0 or less: no limit).
    max_deliver: i64,
}

impl<H: Handler> Batches<'_, H> {
    async fn handle(&self, messages: Vec<Message>) {
        let mut items = Vec::with_capacity(messages.len());
        let mut good = Vec::with_capacity(messages.len());
        for message in messages {
            match self.handler.parse(&message) {
                Ok(item) => {
                    items.push(item);
                    good.push(message);
                }
                Err(reason) => self.dead_letter(&message, &reason).await,
            }
        }
        if !good.is_empty() {
            self.process(items, good).await;
        }
    }

    async fn process(&self, items: Vec<H::Item>, messages: Vec<Message>) {
        let metrics = &self.platform.metrics;
        let token = self.platform.shutdown_token();
        let mut delays = crate::retry::backoff();
        loop {
            let error = match self.handler.process(self.consumer, &items).await {
                Ok(done) => {
                    self.handler.committed(done).await;
                    self.acknowledge(&messages).await;
                    return;
                }
                Err(e) => e,
            };
            metrics
                .events_failed
                .with_label_values(&[self.consumer])
                .inc_by(messages.len() as u64);
            let error_text = crate::error_chain(&error);
            if is_transient(&error) {
                tracing::warn!(consumer = self.consumer, error = %error_text, "batch held until the database is back");
                for message in &messages {
                    let _ = message.ack_with(AckKind::Progress).await;
                }
                // Progress must be reported again before `NATS_ACK_WAIT` runs out.
                let delay = delays
                    .next()
                    .unwrap_or(Duration::from_secs(5))
                    .min(self.ack_wait / 2);
                tokio::select! {
                    () = tokio::time::sleep(delay) => continue,
                    () = token.cancelled() => {
                        // Shutting down: hand the batch back for another instance.
                        for message in &messages {
                            let _ = message.ack_with(AckKind::Nak(None)).await;
                        }
                        return;
                    }
                }
            }
            if messages.len() > 1 {
                tracing::warn!(consumer = self.consumer, error = %error_text, "batch failed; retrying its events one by one");
                for (item, message) in items.into_iter().zip(messages) {
                    Box::pin(self.process(vec![item], vec![message])).await;
                }
                return;
            }
            tracing::warn!(consumer = self.consumer, error = %error_text, "event failed; it will be redelivered");
            for message in messages {
                let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
                if self.max_deliver > 0 && delivered >= self.max_deliver {
                    self.dead_letter(&message, &error.to_string()).await;
                } else {
                    let _ = message
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                        .await;
                }
            }
            return;
        }
    }

    async fn acknowledge(&self, messages: &[Message]) {
        // Plain acks, not confirmed ones: a lost ack only means a redelivery, which every
        // consumer turns into a no-op, and waiting for each confirmation costs a round trip.
        for message in messages {
            if let Err(e) = message.ack().await {
                tracing::warn!(consumer = self.consumer, error = %e, "ack failed; the message will be redelivered and skipped");
            }
        }
        self.platform
            .metrics
            .events_consumed
            .with_label_values(&[self.consumer])
            .inc_by(messages.len() as u64);
    }

    /// Keeps the message on `deadletter.<subject>` with why, then terminates it.
    async fn dead_letter(&self, message: &Message, reason: &str) {
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
        headers.insert("Leadflow-Consumer", self.consumer);
        // How many times it was tried, so an operator can tell "unreadable" (1) from "kept failing".
        let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
        headers.insert("Leadflow-Deliveries", delivered.to_string().as_str());
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
                .with_label_values(&[self.consumer])
                .inc();
            tracing::warn!(consumer = self.consumer, reason, "message dead-lettered");
        } else {
            // Could not keep it: let JetStream redeliver rather than lose it.
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                .await;
        }
    }
}

/// Failures that say nothing about the events: the database is unreachable or busy, or the
/// transaction lost a deadlock. Retrying the same batch later is right for them.
fn is_transient(error: &sqlx::Error) -> bool {
    db::is_unavailable(error)
        || matches!(error, sqlx::Error::Database(e)
            if e.code().is_some_and(|c| c == "40P01" || c == "40001"))
}
