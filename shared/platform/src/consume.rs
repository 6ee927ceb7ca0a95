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
//! A batch is split into lanes ([`Handler::lane`]) that commit at once, each in the order its
//! parts arrived, and the next batch is pulled while they work: neither PostgreSQL nor the lanes
//! wait for a fetch, or for the slowest lane of the last batch. At most one batch is pulled ahead.
//! A part whose lane is still busy waits in the loop, which tells JetStream it is in progress, so
//! its ack wait never runs out however long the lane's own batch takes (a database outage).

use std::{future::Future, sync::Arc, time::Duration};

use async_nats::jetstream::{AckKind, Message, consumer::PullConsumer};
use futures::StreamExt as _;
use leadflow_events::subjects;
use tokio::{sync::mpsc, task::JoinSet, time::Instant};

use crate::{Platform, bus::ConsumerSpec, db};

/// What a consumer does with its events.
pub trait Handler: Send + Sync + 'static {
    /// A message read and understood.
    type Item: Send + Sync + 'static;
    /// What a committed batch leaves for [`Handler::committed`].
    type Done: Send;

    /// Reads a message; an error (why) sends it to the dead-letter subject.
    fn parse(&self, message: &Message) -> Result<Self::Item, String>;

    /// Which lane an item goes to (taken modulo the number of lanes). Items of one lane are
    /// processed in the order they were delivered; different lanes commit at once, so items whose
    /// order matters, or whose transactions would wait for each other, must share a lane.
    fn lane(&self, _item: &Self::Item) -> u64 {
        0
    }

    /// Writes everything the items change in one transaction.
    fn process(
        &self,
        consumer: &str,
        items: &[Self::Item],
    ) -> impl Future<Output = sqlx::Result<Self::Done>> + Send;

    /// Runs after the commit, before the batch is acked (pushes, metrics).
    fn committed(&self, done: Self::Done) -> impl Future<Output = ()> + Send;
}

/// The durable's settings as the server reported them when the loop looked it up, not this
/// instance's: during a rollout that changes them, another instance may have set them last.
#[derive(Debug, Clone, Copy)]
struct Settings {
    /// How long the server waits for an ack before redelivering.
    ack_wait: Duration,
    /// Deliveries the server makes of one message (0 or less: no limit).
    max_deliver: i64,
}

/// One lane's share of a fetched batch.
struct Part<I> {
    items: Vec<I>,
    messages: Vec<Message>,
    settings: Settings,
}

/// A part held back until its lane is free, and when JetStream last heard of it.
struct Waiting<I> {
    part: Part<I>,
    since: Instant,
}

impl<I> Waiting<I> {
    /// When JetStream must next hear that the part is in progress: well before its ack wait ends.
    fn progress_due(&self) -> Instant {
        self.since + (self.part.settings.ack_wait / 3).max(Duration::from_millis(100))
    }
}

/// Consumes `spec` in batches of up to `batch` messages, split over `lanes` lanes, until
/// shutdown. The parts in hand are finished and acked first; a part still waiting for its lane is
/// handed back to JetStream for another instance.
pub async fn run<H: Handler>(
    platform: Arc<Platform>,
    spec: ConsumerSpec,
    batch: usize,
    lanes: usize,
    handler: Arc<H>,
) {
    let token = platform.shutdown_token();
    let name: Arc<str> = platform.bus.namespace().name(spec.name).into();
    let lanes = lanes.max(1);
    let (idle_tx, mut idle_rx) = mpsc::unbounded_channel::<usize>();
    let mut senders = Vec::with_capacity(lanes);
    let mut workers = JoinSet::new();
    for lane in 0..lanes {
        // A part is sent only to an idle lane, so one place is enough.
        let (sender, mut parts) = mpsc::channel::<Part<H::Item>>(1);
        senders.push(sender);
        let (platform, handler, name, idle) = (
            platform.clone(),
            handler.clone(),
            name.clone(),
            idle_tx.clone(),
        );
        workers.spawn(async move {
            while let Some(part) = parts.recv().await {
                Batches {
                    platform: &platform,
                    handler: &*handler,
                    consumer: &name,
                    settings: part.settings,
                }
                .process(part.items, part.messages)
                .await;
                let _ = idle.send(lane);
            }
        });
    }
    let mut busy = vec![false; lanes];
    let mut waiting: Vec<Option<Waiting<H::Item>>> = (0..lanes).map(|_| None).collect();

    let mut delays = crate::retry::backoff();
    let mut consumer: Option<PullConsumer> = None;
    'pulling: while !token.is_cancelled() {
        // The next batch is pulled only once every part of the last one is in its lane.
        while waiting.iter().any(Option::is_some) {
            let next_progress = waiting
                .iter()
                .flatten()
                .map(Waiting::progress_due)
                .min()
                .unwrap_or_else(Instant::now);
            tokio::select! {
                () = token.cancelled() => break 'pulling,
                Some(lane) = idle_rx.recv() => {
                    busy[lane] = false;
                    if let Some(w) = waiting[lane].take() {
                        busy[lane] = true;
                        let _ = senders[lane].send(w.part).await;
                    }
                }
                () = tokio::time::sleep_until(next_progress) => {
                    for w in waiting.iter_mut().flatten().filter(|w| w.progress_due() <= next_progress) {
                        for message in &w.part.messages {
                            let _ = message.ack_with(AckKind::Progress).await;
                        }
                        w.since = Instant::now();
                    }
                }
            }
        }
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
                        () = token.cancelled() => break 'pulling,
                        () = tokio::time::sleep(delay) => continue,
                    }
                }
            },
        };
        let fetched = tokio::select! {
            () = token.cancelled() => break 'pulling,
            fetched = fetch(&current, batch) => fetched,
        };
        match fetched {
            Ok(messages) if messages.is_empty() => {}
            Ok(messages) => {
                delays = crate::retry::backoff();
                let config = &current.cached_info().config;
                let settings = Settings {
                    ack_wait: config.ack_wait,
                    max_deliver: config.max_deliver,
                };
                let batches = Batches {
                    platform: &platform,
                    handler: &*handler,
                    consumer: &name,
                    settings,
                };
                let mut parts: Vec<Part<H::Item>> = (0..lanes)
                    .map(|_| Part {
                        items: Vec::new(),
                        messages: Vec::new(),
                        settings,
                    })
                    .collect();
                for message in messages {
                    match handler.parse(&message) {
                        Ok(item) => {
                            let part = &mut parts[(handler.lane(&item) % lanes as u64) as usize];
                            part.items.push(item);
                            part.messages.push(message);
                        }
                        Err(reason) => batches.dead_letter(&message, &reason).await,
                    }
                }
                while let Ok(lane) = idle_rx.try_recv() {
                    busy[lane] = false;
                }
                for (lane, part) in parts.into_iter().enumerate() {
                    if part.items.is_empty() {
                        continue;
                    }
                    if busy[lane] {
                        waiting[lane] = Some(Waiting {
                            part,
                            since: Instant::now(),
                        });
                    } else {
                        busy[lane] = true;
                        let _ = senders[lane].send(part).await;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(consumer = %name, error = %e, "fetching from JetStream failed");
                consumer = None;
                let delay = delays.next().unwrap_or(Duration::from_secs(1));
                tokio::select! {
                    () = token.cancelled() => break 'pulling,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    // Shutting down: what waits goes back for another instance; the lanes finish what they hold.
    for w in waiting.into_iter().flatten() {
        for message in &w.part.messages {
            let _ = message.ack_with(AckKind::Nak(None)).await;
        }
    }
    drop(senders);
    while workers.join_next().await.is_some() {}
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
    settings: Settings,
}

impl<H: Handler> Batches<'_, H> {
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
                    .min(self.settings.ack_wait / 2);
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
                if self.settings.max_deliver > 0 && delivered >= self.settings.max_deliver {
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
