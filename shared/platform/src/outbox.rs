//! The transactional outbox (DESIGN.md §2): domain events are inserted in the same transaction as
//! the change they describe, and a relay publishes them to JetStream with the row id as
//! `Nats-Msg-Id`, deleting each row only after its acknowledgement. A crash or a NATS outage delays
//! events; it never loses them, and JetStream's de-duplication absorbs the re-sends.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use leadflow_events::Envelope;
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    bus::{Bus, NatsState, stream_of},
    metrics::Metrics,
    retry::backoff,
};

/// Writes `event` to the outbox on the caller's connection, normally inside its transaction.
pub async fn enqueue(conn: &mut PgConnection, event: &Envelope) -> sqlx::Result<()> {
    let payload = serde_json::to_value(event).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "insert into outbox (id, subject, payload) values ($1, $2, $3) on conflict (id) do nothing",
    )
    .bind(event.id)
    .bind(&event.kind)
    .bind(payload)
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes many events to the outbox in one statement (a scorer batch re-scores hundreds of leads).
pub async fn enqueue_many(conn: &mut PgConnection, events: &[Envelope]) -> sqlx::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    let subjects: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let payloads = events
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "insert into outbox (id, subject, payload)
         select * from unnest($1::uuid[], $2::text[], $3::jsonb[]) on conflict (id) do nothing",
    )
    .bind(&ids)
    .bind(&subjects)
    .bind(&payloads)
    .execute(conn)
    .await?;
    Ok(())
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

    /// Publishes one batch of due rows. Rows stay locked (`FOR UPDATE SKIP LOCKED`) until their
    /// acks are in, so several relays (several gateways) share the work without publishing a row
    /// twice at once. The batch is sent at once and its acks awaited together, so a stalled
    /// JetStream costs one ack timeout per batch, not one per row. A row JetStream refuses is
    /// retried later with its own back-off and never holds up the others. Returns how many rows
    /// were delivered and deleted.
    #[tracing::instrument(name = "outbox.relay_once", skip_all)]
    pub async fn relay_once(&self) -> Result<usize, RelayError> {
        if self.bus.state() != NatsState::Connected {
            return Err(RelayError::Disconnected);
        }
        let mut tx = self.pool.begin().await?;
        let rows: Vec<(Uuid, String, serde_json::Value)> = sqlx::query_as(
            // In the due index's order, so the scan stops at `limit`: ordered by `created_at`
            // alone it read and sorted every due row, 21 ms a poll with a few thousand waiting.
            // Rows are due when written, so this is creation order but for retried rows.
            "select id, subject, payload from outbox where next_attempt_at <= now()
             order by next_attempt_at, created_at, id limit $1 for update skip locked",
        )
        .bind(self.config.batch_size)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }

        let mut sent = Vec::with_capacity(rows.len());
        for (id, subject, payload) in &rows {
            let bytes = Bytes::from(serde_json::to_vec(payload).unwrap_or_default());
            sent.push(self.bus.send(subject, id.to_string(), bytes).await);
        }
        let acks = futures::future::join_all(sent.into_iter().map(|sent| async move {
            match sent {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }))
        .await;

        let mut delivered = Vec::with_capacity(rows.len());
        let mut failed: Vec<(Uuid, String)> = Vec::new();
        for ((id, subject, _), acked) in rows.iter().zip(acks) {
            let stream = stream_of(subject);
            match acked {
                Ok(()) => {
                    self.metrics
                        .events_published
                        .with_label_values(&[stream])
                        .inc();
                    delivered.push(*id);
                }
                Err(e) => {
                    self.metrics
                        .events_publish_failed
                        .with_label_values(&[stream])
                        .inc();
                    failed.push((*id, e));
                }
            }
        }

        sqlx::query("delete from outbox where id = any($1)")
            .bind(&delivered)
            .execute(&mut *tx)
            .await?;
        for (id, error) in &failed {
            // 1 s, 2 s, 4 s ... capped at 5 minutes: a refused row waits, it is never dropped.
            sqlx::query(
                "update outbox set attempts = attempts + 1, last_error = $2,
                        next_attempt_at = now() + least(interval '5 minutes', interval '1 second' * power(2, least(attempts, 20)))
                 where id = $1",
            )
            .bind(id)
            .bind(error)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        if !failed.is_empty() {
            // "No responders" usually means the stream is gone (a server that lost its store):
            // have the topology checked again.
            self.bus.mark_topology_stale();
        }

        match failed.first() {
            Some((_, first_error)) if delivered.is_empty() => Err(RelayError::Publish {
                failed: failed.len(),
                total: rows.len(),
                first_error: first_error.clone(),
            }),
            Some((_, first_error)) => {
                tracing::warn!(failed = failed.len(), error = %first_error, "some outbox events were not acknowledged; retrying them later");
                Ok(delivered.len())
            }
            None => Ok(delivered.len()),
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

    /// Rows waiting to be published.
    pub async fn pending(&self) -> sqlx::Result<i64> {
        sqlx::query_scalar("select count(*) from outbox")
            .fetch_one(&self.pool)
            .await
    }

    /// Relays until `shutdown`, backing off with jitter while NATS or the database is down.
    /// A batch in progress finishes before it returns.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut delays = backoff();
        let mut deleted = 0;
        while !shutdown.is_cancelled() {
            let pause = match self.relay_once().await {
                Ok(n) => {
                    delays = backoff();
                    deleted += n;
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
