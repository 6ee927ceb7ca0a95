//! The transactional outbox (DESIGN.md §2): domain events are inserted in the same transaction as
//! the change they describe, and a relay publishes them to JetStream with the row id as
//! `Nats-Msg-Id`, deleting each row only after its acknowledgement. A crash or a NATS outage delays
//! events; it never loses them, and JetStream's de-duplication absorbs the re-sends.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use leadflow_events::Envelope;
use serde_json::value::RawValue;
use sqlx::{PgConnection, types::Json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    bus::{Bus, NatsState, stream_of},
    metrics::Metrics,
    retry::backoff,
};

/// Writes `event` to the outbox on the caller's connection, normally inside its transaction.
pub async fn enqueue(conn: &mut PgConnection, event: &Envelope) -> sqlx::Result<()> {
    sqlx::query(
        "insert into outbox (id, subject, payload) values ($1, $2, $3) on conflict (id) do nothing",
    )
    .bind(event.id)
    .bind(&event.kind)
    .bind(Json(event))
    .execute(conn)
    .await?;
    Ok(())
}

/// Events one outbox row holds at most (see [`enqueue_many`]).
const EVENTS_PER_ROW: usize = 100;

/// Writes many events to the outbox in one statement, as rows of up to [`EVENTS_PER_ROW`] events
/// of one subject, each row's payload an array of envelopes. A scorer batch re-scores hundreds of
/// leads; a row per event cost it a third of its outbox time to write, and as much again for the
/// relay to find and delete them.
pub async fn enqueue_many<'a>(
    conn: &mut PgConnection,
    events: impl IntoIterator<Item = &'a Envelope>,
) -> sqlx::Result<()> {
    let mut by_subject: std::collections::BTreeMap<&str, Vec<&Envelope>> = Default::default();
    for event in events {
        by_subject.entry(&event.kind).or_default().push(event);
    }
    let (mut ids, mut subjects, mut payloads, mut counts) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (subject, events) in &by_subject {
        for chunk in events.chunks(EVENTS_PER_ROW) {
            ids.push(Uuid::now_v7());
            subjects.push(subject);
            // Serialized straight into the statement's parameter: a JSON tree of each envelope,
            // its data cloned into it, was built only to be written out again.
            payloads.push(Json(chunk));
            counts.push(chunk.len() as i32);
        }
    }
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "insert into outbox (id, subject, payload, events)
         select * from unnest($1::uuid[], $2::text[], $3::jsonb[], $4::int4[])",
    )
    .bind(&ids)
    .bind(&subjects)
    .bind(&payloads)
    .bind(&counts)
    .execute(conn)
    .await?;
    Ok(())
}

/// The messages of an outbox row: the row itself ([`enqueue`]), its id the `Nats-Msg-Id`; or
/// the envelopes of an array ([`enqueue_many`]), each with its own id. Envelopes are published as
/// the text PostgreSQL returned: building and re-serializing a JSON tree of each was most of the
/// relay's work, and only the ids are needed.
fn messages_of(row: Uuid, payload: &RawValue) -> Vec<(String, &RawValue)> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: Option<Uuid>,
    }
    if !is_array(payload) {
        return vec![(row.to_string(), payload)];
    }
    // Any JSON array reads as raw values; should that ever fail, the row goes out as one message
    // (a consumer dead-letters it) rather than as none.
    let Ok(envelopes) = serde_json::from_str::<Vec<&RawValue>>(payload.get()) else {
        return vec![(row.to_string(), payload)];
    };
    envelopes
        .into_iter()
        .enumerate()
        .map(|(i, envelope)| {
            let id = serde_json::from_str::<Id>(envelope.get())
                .ok()
                .and_then(|e| e.id)
                .map_or_else(|| format!("{row}-{i}"), |id| id.to_string());
            (id, envelope)
        })
        .collect()
}

fn is_array(payload: &RawValue) -> bool {
    payload.get().trim_start().starts_with('[')
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("reading or deleting outbox rows failed")]
    Database(#[from] sqlx::Error),
    #[error("NATS is not connected; events stay in the outbox")]
    Disconnected,
    #[error("{failed} of {total} outbox events were not acknowledged by JetStream: {first_error}")]
    Publish {
        failed: usize,
        total: usize,
        first_error: String,
    },
}

/// What one relay round did.
#[derive(Debug, Default)]
struct Round {
    /// Events delivered.
    events: usize,
    /// Rows deleted or rewritten: the dead versions left for vacuum.
    dead_rows: usize,
}

/// Deleted rows after which a relay vacuums the outbox itself (see [`OutboxRelay::vacuum`]).
const VACUUM_EVERY: usize = 5_000;

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Rows published per round trip.
    pub batch_size: i64,
    /// Pause between polls when the outbox is empty.
    pub idle_interval: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 200,
            idle_interval: Duration::from_millis(200),
        }
    }
}

pub struct OutboxRelay {
    pool: sqlx::PgPool,
    bus: Arc<Bus>,
    metrics: Arc<Metrics>,
    config: RelayConfig,
}

impl OutboxRelay {
    pub fn new(
        pool: sqlx::PgPool,
        bus: Arc<Bus>,
        metrics: Arc<Metrics>,
        config: RelayConfig,
    ) -> Self {
        Self {
            pool,
            bus,
            metrics,
            config,
        }
    }

    /// Publishes one batch of due rows, about `batch_size` events. The rows chosen stay locked
    /// (`FOR UPDATE SKIP LOCKED`) until their acks are in, so several relays (several gateways)
    /// share the work without publishing a row twice at once. The batch is sent at once and its
    /// acks awaited together, so a stalled JetStream costs one ack timeout per batch, not one per
    /// row. A row JetStream refuses is retried later with its own back-off and never holds up the
    /// others; of a row of many events, only the refused ones are. Returns how many events were
    /// delivered.
    #[tracing::instrument(name = "outbox.relay_once", skip_all)]
    pub async fn relay_once(&self) -> Result<usize, RelayError> {
        self.relay_round().await.map(|round| round.events)
    }

    async fn relay_round(&self) -> Result<Round, RelayError> {
        if self.bus.state() != NatsState::Connected {
            return Err(RelayError::Disconnected);
        }
        // The due rows that make about `batch_size` events (a scorer row holds up to 100), chosen
        // from their counts alone, then locked and read. Rows another relay holds are skipped.
        let due: Vec<(Uuid, i32)> = sqlx::query_as(
            // In the due index's order, so the scan stops at `limit`: ordered by `created_at`
            // alone it read and sorted every due row, 21 ms a poll with a few thousand waiting.
            // Rows are due when written, so this is creation order but for retried rows.
            "select id, events from outbox where next_attempt_at <= now()
             order by next_attempt_at, created_at, id limit $1",
        )
        .bind(self.config.batch_size)
        .fetch_all(&self.pool)
        .await?;
        let mut budget = self.config.batch_size.max(1);
        let chosen: Vec<Uuid> = due
            .into_iter()
            .take_while(|(_, events)| {
                let fits = budget > 0;
                budget -= i64::from(*events).min(budget);
                fits
            })
            .map(|(id, _)| id)
            .collect();
        if chosen.is_empty() {
            return Ok(Round::default());
        }
        let mut tx = self.pool.begin().await?;
        let rows: Vec<(Uuid, String, Json<Box<RawValue>>)> = sqlx::query_as(
            "select id, subject, payload from outbox where id = any($1) and next_attempt_at <= now()
             order by next_attempt_at, created_at, id for update skip locked",
        )
        .bind(&chosen)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(Round::default());
        }
        let messages: Vec<_> = rows
            .iter()
            .map(|(id, _, payload)| messages_of(*id, &payload.0))
            .collect();

        let mut sent = Vec::new();
        for ((_, subject, _), messages) in rows.iter().zip(&messages) {
            for (msg_id, payload) in messages {
                let bytes = Bytes::copy_from_slice(payload.get().as_bytes());
                sent.push(self.bus.send(subject, msg_id.clone(), bytes).await);
            }
        }
        let mut acks = futures::future::join_all(sent.into_iter().map(|sent| async move {
            match sent {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }))
        .await
        .into_iter();

        let mut delivered = 0;
        let mut deleted = Vec::with_capacity(rows.len());
        // Rows with refused messages, what is left of them, and the first error.
        let mut failed: Vec<(Uuid, Box<RawValue>, i32, String)> = Vec::new();
        let mut total = 0;
        for ((id, subject, payload), messages) in rows.iter().zip(&messages) {
            let stream = stream_of(subject);
            let mut refused = Vec::new();
            let mut first_error = None;
            for (_, payload) in messages {
                total += 1;
                match acks
                    .next()
                    .unwrap_or_else(|| Err("no acknowledgement".into()))
                {
                    Ok(()) => {
                        delivered += 1;
                        self.metrics
                            .events_published
                            .with_label_values(&[stream])
                            .inc();
                    }
                    Err(e) => {
                        self.metrics
                            .events_publish_failed
                            .with_label_values(&[stream])
                            .inc();
                        refused.push(*payload);
                        first_error.get_or_insert(e);
                    }
                }
            }
            match first_error {
                None => deleted.push(*id),
                Some(error) => {
                    // Only what was refused is sent again; a single event stays as it was.
                    let count = refused.len() as i32;
                    let rest = if is_array(&payload.0) {
                        serde_json::value::to_raw_value(&refused)
                            .map_err(|e| sqlx::Error::Encode(Box::new(e)))?
                    } else {
                        payload.0.clone()
                    };
                    failed.push((*id, rest, count, error));
                }
            }
        }

        sqlx::query("delete from outbox where id = any($1)")
            .bind(&deleted)
            .execute(&mut *tx)
            .await?;
        for (id, rest, count, error) in &failed {
            // 1 s, 2 s, 4 s ... capped at 5 minutes: a refused row waits, it is never dropped.
            sqlx::query(
                "update outbox set attempts = attempts + 1, last_error = $2, payload = $3, events = $4,
                        next_attempt_at = now() + least(interval '5 minutes', interval '1 second' * power(2, least(attempts, 20)))
                 where id = $1",
            )
            .bind(id)
            .bind(error)
            .bind(Json(rest))
            .bind(count)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        let round = Round {
            events: delivered,
            dead_rows: rows.len(),
        };
        if !failed.is_empty() {
            // "No responders" usually means the stream is gone (a server that lost its store):
            // have the topology checked again.
            self.bus.mark_topology_stale();
        }

        match failed.first() {
            Some((_, _, _, first_error)) if delivered == 0 => Err(RelayError::Publish {
                failed: total - delivered,
                total,
                first_error: first_error.clone(),
            }),
            Some((_, _, _, first_error)) => {
                tracing::warn!(failed = total - delivered, error = %first_error, "some outbox events were not acknowledged; retrying them later");
                Ok(round)
            }
            None => Ok(round),
        }
    }

    /// Clears the dead rows the relay leaves behind. Autovacuum wakes at most once a minute
    /// (`autovacuum_naptime`) whatever the table's thresholds; under load a minute of deleted rows
    /// made each poll for due rows (and each count of pending ones) walk a hundred thousand dead
    /// entries, 10-20 ms each. Skipped if another relay is vacuuming; failures only cost speed.
    async fn vacuum(&self) {
        if let Err(e) = sqlx::query("vacuum (skip_locked) outbox")
            .execute(&self.pool)
            .await
        {
            tracing::debug!(error = %e, "vacuuming the outbox failed");
        }
    }

    /// Events waiting to be published.
    pub async fn pending(&self) -> sqlx::Result<i64> {
        sqlx::query_scalar("select coalesce(sum(events), 0)::int8 from outbox")
            .fetch_one(&self.pool)
            .await
    }

    /// Relays until `shutdown`, backing off with jitter while NATS or the database is down.
    /// A batch in progress finishes before it returns.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut delays = backoff();
        let mut deleted = 0;
        while !shutdown.is_cancelled() {
            let pause = match self.relay_round().await {
                Ok(Round {
                    events: n,
                    dead_rows,
                }) => {
                    delays = backoff();
                    deleted += dead_rows;
                    if deleted >= VACUUM_EVERY {
                        deleted = 0;
                        self.vacuum().await;
                    }
                    if n as i64 >= self.config.batch_size {
                        continue;
                    }
                    self.config.idle_interval
                }
                Err(RelayError::Disconnected) => {
                    self.config.idle_interval.max(Duration::from_millis(250))
                }
                Err(err) => {
                    let delay = delays.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(
                        error = %crate::error_chain(&err),
                        retry_in = ?delay,
                        "outbox relay failed; events stay in the outbox"
                    );
                    delay
                }
            };
            if let Ok(n) = self.pending().await {
                self.metrics.outbox_pending.set(n);
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).expect("json")
    }

    #[test]
    fn an_array_row_is_its_envelopes_as_stored_and_a_single_row_is_itself() {
        let row = Uuid::now_v7();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let array = raw(&format!(
            r#"[{{"id": "{a}", "data": {{"x": "é\n"}}}}, {{"data": 1}}, {{"id": "{b}"}}]"#
        ));
        let messages: Vec<(String, &str)> = messages_of(row, &array)
            .into_iter()
            .map(|(id, body)| (id, body.get()))
            .collect();
        assert_eq!(
            messages,
            [
                (
                    a.to_string(),
                    format!(r#"{{"id": "{a}", "data": {{"x": "é\n"}}}}"#).as_str()
                ),
                (format!("{row}-1"), r#"{"data": 1}"#),
                (b.to_string(), format!(r#"{{"id": "{b}"}}"#).as_str()),
            ]
        );
        let single = raw(&format!(r#"{{"id": "{a}"}}"#));
        let messages = messages_of(row, &single);
        assert_eq!(messages.len(), 1);
        assert_eq!(
            messages[0].0,
            row.to_string(),
            "a single row goes by its row id"
        );
        assert_eq!(messages[0].1.get(), single.get());
    }
}
