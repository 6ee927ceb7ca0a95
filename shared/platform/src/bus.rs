//! NATS and JetStream: a connection that reconnects by itself, idempotent stream and durable
//! consumer setup, and publishing that waits for JetStream's acknowledgement.

use std::{
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::{Duration, Instant},
};

use async_nats::{
    connection::State,
    jetstream::{
        self,
        consumer::{AckPolicy, pull},
        message::PublishMessage,
        stream,
    },
};
use bytes::Bytes;
use leadflow_events::{Namespace, Stream};
use serde::Serialize;

use crate::config::{NatsConfig, NatsCredentials, nats_credentials, nats_servers, redact_nats_url};

/// A durable pull consumer a service reads from. Names and filters are logical: the namespace is
/// added when it is created.
#[derive(Debug, Clone, Copy)]
pub struct ConsumerSpec {
    /// Durable name, e.g. `scorer_engagement`.
    pub name: &'static str,
    pub stream: Stream,
    /// One subject filter (nats-server 2.9 allows one per consumer), e.g. `engagement.>`; left
    /// off when it is the stream's only subject (see `Bus::filter_subject`).
    pub filter: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsumerStats {
    pub name: String,
    pub pending: u64,
    pub ack_pending: u64,
    pub redelivered: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NatsState {
    Connected,
    Connecting,
    Disconnected,
}

pub struct Bus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    namespace: Namespace,
    config: NatsConfig,
    /// Set once streams and consumers exist; until then health says so.
    setup_error: RwLock<Option<String>>,
}

/// Counts events that come one at a time, and says when to tell of them: at the first, and then
/// at most once a minute, with how many came since.
#[derive(Default)]
struct Tally(Mutex<(u64, Option<Instant>)>);

impl Tally {
    fn add_one(&self) -> Option<u64> {
        let mut guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (count, told) = &mut *guard;
        *count += 1;
        if told.is_some_and(|at| at.elapsed() < Duration::from_secs(60)) {
            return None;
        }
        *told = Some(Instant::now());
        Some(std::mem::take(count))
    }
}

impl Bus {
    /// Returns at once even when NATS is down: the client connects, and reconnects, in the background.
    pub async fn connect(
        config: &NatsConfig,
        client_name: &str,
    ) -> Result<Self, async_nats::ConnectError> {
        let redacted = redact_nats_url(&config.nats_url);
        let service = client_name.to_owned();
        let dropped = Arc::new(Tally::default());
        let options = match nats_credentials(&config.nats_url) {
            Some(NatsCredentials::UserPassword { user, password }) => {
                async_nats::ConnectOptions::with_user_and_password(user, password)
            }
            Some(NatsCredentials::Token(token)) => async_nats::ConnectOptions::with_token(token),
            None => async_nats::ConnectOptions::new(),
        };
        let client = options
            .name(client_name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(3))
            // Capped so a returning server is noticed within seconds; jittered so a fleet of
            // clients does not reconnect in lock-step.
            .reconnect_delay_callback(|attempt| {
                let millis = 100u64.saturating_mul(1 << attempt.min(5)).min(3_000);
                Duration::from_millis(rand::random_range(millis / 2..=millis))
            })
            .event_callback(move |event| {
                let url = redacted.clone();
                let service = service.clone();
                let dropped = dropped.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!(%service, %url, "NATS connected")
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!(%service, %url, "NATS disconnected")
                        }
                        // The server's word on something it refused, such as a subscription its
                        // permissions deny. Nothing else reports it: a refused subscription simply
                        // never receives (a consume loop's doorbell then stays silent, and the loop
                        // falls back to its slow poll).
                        async_nats::Event::ServerError(error) => {
                            tracing::warn!(%service, %url, %error, "NATS server error")
                        }
                        // Messages this client dropped because a subscription fell behind. The
                        // client reports each one, so a burst is told once a minute.
                        async_nats::Event::SlowConsumer(subscription) => {
                            if let Some(count) = dropped.add_one() {
                                tracing::warn!(%service, %url, subscription, reported = count, "NATS slow consumer: messages dropped");
                            }
                        }
                        other => tracing::debug!(%service, %url, event = %other, "NATS event"),
                    }
                }
            })
            .connect(nats_servers(&config.nats_url))
            .await?;
        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(config.nats_ack_timeout);
        Ok(Self {
            client,
            jetstream,
            namespace: config.leadflow_namespace.clone(),
            config: config.clone(),
            setup_error: RwLock::new(Some("streams not set up yet".into())),
        })
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    pub fn state(&self) -> NatsState {
        match self.client.connection_state() {
            State::Connected => NatsState::Connected,
            State::Pending => NatsState::Connecting,
            State::Disconnected => NatsState::Disconnected,
        }
    }

    pub fn url_redacted(&self) -> String {
        redact_nats_url(&self.config.nats_url)
    }

    /// Makes the next health round set streams and consumers up again.
    pub fn mark_topology_stale(&self) {
        let mut error = self.setup_error.write().unwrap_or_else(|e| e.into_inner());
        if error.is_none() {
            *error = Some("re-checking streams after reconnecting".into());
        }
    }

    pub fn setup_error(&self) -> Option<String> {
        self.setup_error
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Creates or updates every stream and the given durable consumers. Idempotent: every service
    /// calls it at start, in any order.
    #[tracing::instrument(name = "nats.setup", skip_all, fields(namespace = %self.namespace))]
    pub async fn ensure_topology(
        &self,
        consumers: &[ConsumerSpec],
    ) -> Result<(), async_nats::Error> {
        let result = self.try_ensure_topology(consumers).await;
        *self.setup_error.write().unwrap_or_else(|e| e.into_inner()) =
            result.as_ref().err().map(|e| e.to_string());
        result
    }

    async fn try_ensure_topology(
        &self,
        consumers: &[ConsumerSpec],
    ) -> Result<(), async_nats::Error> {
        for s in Stream::ALL {
            self.jetstream
                .create_or_update_stream(self.stream_config(s))
                .await?;
        }
        for spec in consumers {
            self.set_up_consumer(spec).await?;
        }
        Ok(())
    }

    fn stream_config(&self, s: Stream) -> stream::Config {
        let max_age = match s {
            Stream::Engagement | Stream::Domain => Duration::from_secs(7 * 24 * 3600),
            Stream::DeadLetter => Duration::from_secs(30 * 24 * 3600),
        };
        stream::Config {
            name: self.namespace.stream_name(s),
            subjects: self.namespace.stream_subjects(s),
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            duplicate_window: self.config.nats_duplicate_window,
            num_replicas: usize::from(self.config.nats_stream_replicas),
            max_age,
            ..Default::default()
        }
    }

    /// The durable pull consumer for `spec` as the server holds it. [`Bus::ensure_topology`]
    /// creates and configures it; consumers only look it up, so that configuring is one write per
    /// set-up, not one more each time a consume loop starts or recovers.
    pub async fn consumer(
        &self,
        spec: &ConsumerSpec,
    ) -> Result<jetstream::consumer::PullConsumer, async_nats::Error> {
        let stream = self
            .jetstream
            .get_stream(self.namespace.stream_name(spec.stream))
            .await?;
        stream.get_consumer(&self.namespace.name(spec.name)).await
    }

    /// Creates the durable pull consumer for `spec`, or brings it to this release's configuration
    /// (a durable left by an earlier release, or by a different `NATS_ACK_WAIT` or
    /// `NATS_MAX_DELIVER`, keeps its position and takes the new settings).
    pub async fn set_up_consumer(
        &self,
        spec: &ConsumerSpec,
    ) -> Result<jetstream::consumer::PullConsumer, async_nats::Error> {
        let durable = self.namespace.name(spec.name);
        let stream = self
            .jetstream
            .get_stream(self.namespace.stream_name(spec.stream))
            .await?;
        let created = stream
            .create_consumer(pull::Config {
                durable_name: Some(durable.clone()),
                filter_subject: self.filter_subject(spec),
                ack_policy: AckPolicy::Explicit,
                ack_wait: self.config.nats_ack_wait,
                max_deliver: self.config.nats_max_deliver,
                // No limit on the server: each consume loop bounds what it holds (a batch running
                // per lane, and at most a batch waiting). At the limit, nats-server 2.9.10 leaves a pull
                // unanswered until acks make room, and a pull given up on by the client can lose a
                // redelivery there (docs/durability.md, "Pulls that never wait").
                max_ack_pending: -1,
                ..Default::default()
            })
            .await;
        match created {
            Ok(consumer) => Ok(consumer),
            // The server refuses to change some settings of an existing durable (one edited by
            // hand, say). Reading it as it stands beats staying unready until someone notices.
            Err(refused) => match self.consumer(spec).await {
                Ok(existing) => {
                    tracing::warn!(consumer = %durable, error = %refused,
                        "could not update the durable consumer; reading it with the settings it has");
                    Ok(existing)
                }
                Err(_) => Err(refused.into()),
            },
        }
    }

    /// The subject filter `spec` is created with: none when it would select everything its stream
    /// holds. On nats-server 2.9, with the filter equal to the stream's only subject, the scorer's
    /// drain of a burst stalled near its end for 16 s to minutes (a fetch holding a few hundred
    /// messages until the client's timeout); created without one, it never did in six runs
    /// (docs/benchmarks.md, session 6). Our guess is 2.9's filtered lookup path; 2.10 is not known
    /// to need this, and it costs nothing there.
    fn filter_subject(&self, spec: &ConsumerSpec) -> String {
        if spec.stream.base_subjects() == [spec.filter] {
            String::new()
        } else {
            self.namespace.subject(spec.filter)
        }
    }

    /// A one-shot subscription to the subjects `spec` reads, for a consume loop whose stream has
    /// gone quiet: it yields the next message published there (a copy, which the loop drops; the
    /// event itself is pulled from the stream), and the server removes it after that one message.
    /// Subscribed only while quiet, it costs nothing under load, when every pull finds events.
    pub async fn doorbell(
        &self,
        spec: &ConsumerSpec,
    ) -> Result<async_nats::Subscriber, async_nats::Error> {
        let mut bell = self
            .client
            .subscribe(self.namespace.subject(spec.filter))
            .await?;
        bell.unsubscribe_after(1).await?;
        Ok(bell)
    }

    /// Lag and redelivery counts of the given consumers, for health and metrics.
    pub async fn consumer_stats(
        &self,
        consumers: &[ConsumerSpec],
    ) -> Result<Vec<ConsumerStats>, async_nats::Error> {
        let mut stats = Vec::with_capacity(consumers.len());
        for spec in consumers {
            let durable = self.namespace.name(spec.name);
            let stream = self
                .jetstream
                .get_stream_no_info(self.namespace.stream_name(spec.stream))
                .await?;
            let info = stream.consumer_info(&durable).await?;
            stats.push(ConsumerStats {
                name: durable,
                pending: info.num_pending,
                ack_pending: info.num_ack_pending as u64,
                redelivered: info.num_redelivered as u64,
            });
        }
        Ok(stats)
    }

    /// Sends to `logical_subject` (the namespace is added) with `message_id` as `Nats-Msg-Id`, so a
    /// re-send inside the duplicate window is stored once. Await the returned future for
    /// JetStream's acknowledgement: only then is the message stored. Sending a batch first and then
    /// awaiting all acks costs one round trip, not one per message.
    pub async fn send(
        &self,
        logical_subject: &str,
        message_id: String,
        payload: Bytes,
    ) -> Result<jetstream::context::PublishAckFuture, async_nats::jetstream::context::PublishError>
    {
        self.jetstream
            .send_publish(
                self.namespace.subject(logical_subject),
                PublishMessage::build()
                    .payload(payload)
                    .message_id(message_id),
            )
            .await
    }

    /// Sends what is buffered and closes the connection.
    pub async fn close(&self) {
        if let Err(e) = self.client.drain().await {
            tracing::debug!(error = %e, "draining NATS connection");
        }
    }
}

/// Which stream a logical subject lands in, for metric labels.
pub fn stream_of(logical_subject: &str) -> &'static str {
    let first = logical_subject.split('.').next().unwrap_or_default();
    match first {
        "engagement" => Stream::Engagement.base_name(),
        "deadletter" => Stream::DeadLetter.base_name(),
        _ => Stream::Domain.base_name(),
    }
}

#[cfg(test)]
mod tally_tests {
    use super::Tally;

    #[test]
    fn a_tally_tells_the_first_event_and_then_holds_the_rest() {
        let tally = Tally::default();
        assert_eq!(tally.add_one(), Some(1));
        assert_eq!(tally.add_one(), None);
        assert_eq!(tally.add_one(), None);
        assert_eq!(tally.0.lock().expect("tally").0, 2, "counted while held");
    }
}
