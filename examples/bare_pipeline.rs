//! The yardstick #4 names: a bare axum → JetStream → batched-upsert pipeline, with none of
//! leadflow's logic, run by `BARE=1 benches/tracking-load.sh` in place of `leadflow up` so both
//! are measured with the same load, on the same machine, by the same script. The machine's speed
//! moves by half from one day to the next (docs/benchmarks.md); the ratio between the two moves
//! far less, and says how much of the machine leadflow's own work takes.
//!
//! What it keeps of the real pipeline, so the comparison is of logic and not of shortcuts:
//! publish acks awaited before answering (a batch's in flight together), a `Nats-Msg-Id` on each
//! event, a file-storage stream, a durable pull consumer with explicit acks after commit, events
//! inserted once per id and a per-lead running score carried forward with decay, in one
//! transaction per fetched batch, leads sorted so concurrent batches cannot deadlock. What it
//! leaves out: write keys, validation, bots, identity, the scoring model, history, insights,
//! the outbox, notifications and everything about failure.
//!
//! It serves `POST /t/events`, `GET /t/pixel.gif`, `/readyz` and `/metrics` on `GATEWAY_ADDR`,
//! with the scorer's metric names the script reads. Environment: `NATS_URL`, `DATABASE_URL` (a
//! scratch database: it creates its two tables), `LEADFLOW_NAMESPACE` (its stream is that
//! namespace's engagement stream, so `drop_streams` removes it).

use std::{
    future::IntoFuture as _,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull};
use axum::{
    Json, Router,
    body::Bytes,
    extract::{Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use futures::{StreamExt as _, future::try_join_all};
use leadflow_events::{Namespace, Stream};
use prometheus::{Encoder as _, Histogram, HistogramOpts, IntGauge, Registry, TextEncoder};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

/// The scorer's event-to-score buckets (services/scorer/src/worker.rs), so the script reads both
/// pipelines' quantiles to the same bounds.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const FETCH: usize = 500;
const HALF_LIFE_SECONDS: f64 = 14.0 * 24.0 * 3600.0;
const GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

struct Bare {
    jetstream: jetstream::Context,
    namespace: Namespace,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    registry: Registry,
    event_to_score: Histogram,
    batch_duration: Histogram,
    pending: IntGauge,
    ack_pending: IntGauge,
}

#[derive(Serialize, Deserialize)]
struct Event<'a> {
    id: Uuid,
    #[serde(rename = "type")]
    kind: &'a str,
    lead_id: Option<Uuid>,
    /// Microseconds since 1970 when the gateway took it: the start of event-to-score.
    at: i64,
    #[serde(borrow, skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
}

fn micros_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

impl Bare {
    async fn publish(
        &self,
        kind: &str,
        lead_id: Option<Uuid>,
        data: Option<&RawValue>,
    ) -> Result<jetstream::context::PublishAckFuture, jetstream::context::PublishError> {
        let event = Event {
            id: Uuid::now_v7(),
            kind,
            lead_id,
            at: micros_now(),
            data,
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", event.id.to_string().as_str());
        let body = serde_json::to_vec(&event).unwrap_or_default();
        self.jetstream
            .publish_with_headers(
                self.namespace.subject(&format!("engagement.{kind}")),
                headers,
                body.into(),
            )
            .await
    }
}

#[derive(Deserialize)]
struct Posted<'a> {
    #[serde(borrow)]
    events: Vec<PostedEvent<'a>>,
}

#[derive(Deserialize)]
struct PostedEvent<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    lead_id: Option<Uuid>,
    #[serde(borrow)]
    properties: Option<&'a RawValue>,
}

async fn post_events(State(bare): State<Arc<Bare>>, body: Bytes) -> Response {
    let posted: Posted = match serde_json::from_slice(&body) {
        Ok(posted) => posted,
        Err(err) => return (StatusCode::BAD_REQUEST, err.to_string()).into_response(),
    };
    let mut acks = Vec::with_capacity(posted.events.len());
    for event in &posted.events {
        match bare
            .publish(event.kind, event.lead_id, event.properties)
            .await
        {
            Ok(ack) => acks.push(ack.into_future()),
            Err(err) => return (StatusCode::SERVICE_UNAVAILABLE, err.to_string()).into_response(),
        }
    }
    match try_join_all(acks).await {
        Ok(acked) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "accepted": acked.len() })),
        )
            .into_response(),
        Err(err) => (StatusCode::SERVICE_UNAVAILABLE, err.to_string()).into_response(),
    }
}

#[derive(Deserialize)]
struct Pixel {
    lead: Option<Uuid>,
    e: Option<String>,
}

async fn pixel(State(bare): State<Arc<Bare>>, Query(pixel): Query<Pixel>) -> Response {
    let kind = pixel.e.as_deref().unwrap_or("email_open");
    if let Ok(ack) = bare.publish(kind, pixel.lead, None).await {
        let _ = ack.await;
    }
    (
        [
            (header::CONTENT_TYPE, "image/gif"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        GIF,
    )
        .into_response()
}

async fn metrics(State(bare): State<Arc<Bare>>) -> Response {
    let mut consumer = bare.consumer.clone();
    if let Ok(info) = consumer.info().await {
        bare.pending
            .set(i64::try_from(info.num_pending).unwrap_or(i64::MAX));
        bare.ack_pending
            .set(i64::try_from(info.num_ack_pending).unwrap_or(i64::MAX));
    }
    let mut text = Vec::new();
    match TextEncoder::new().encode(&bare.registry.gather(), &mut text) {
        Ok(()) => text.into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

/// One fetched batch: its events inserted once per id, each lead's running score carried forward
/// and increased, in one transaction; acked after the commit.
async fn store(
    pool: &sqlx::PgPool,
    bare: &Bare,
    messages: Vec<jetstream::Message>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut ids = Vec::with_capacity(messages.len());
    let mut leads = Vec::with_capacity(messages.len());
    let mut kinds = Vec::with_capacity(messages.len());
    let mut data = Vec::with_capacity(messages.len());
    let mut times = Vec::with_capacity(messages.len());
    for message in &messages {
        let event: Event = serde_json::from_slice(&message.payload)?;
        ids.push(event.id);
        leads.push(event.lead_id);
        kinds.push(event.kind.to_owned());
        data.push(event.data.map_or("{}", RawValue::get).to_owned());
        times.push(event.at);
    }
    let mut totals: Vec<(Uuid, i32)> = Vec::new();
    let mut sorted: Vec<Uuid> = leads.iter().flatten().copied().collect();
    sorted.sort_unstable();
    for lead in sorted {
        match totals.last_mut() {
            Some((last, count)) if *last == lead => *count += 1,
            _ => totals.push((lead, 1)),
        }
    }
    let (total_leads, counts): (Vec<Uuid>, Vec<i32>) = totals.into_iter().unzip();

    let mut tx = pool.begin().await?;
    sqlx::query(
        "insert into lead_engagement_events (event_id, lead_id, event_type, properties, occurred_at)
         select id, lead, kind, props::jsonb, timestamptz 'epoch' + at * interval '1 microsecond'
         from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::int8[]) as t(id, lead, kind, props, at)
         on conflict (event_id) do nothing",
    )
    .bind(&ids)
    .bind(&leads)
    .bind(&kinds)
    .bind(&data)
    .bind(&times)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into lead_totals (lead_id, score, events, updated_at)
         select lead, n, n, now() from unnest($1::uuid[], $2::int4[]) as t(lead, n)
         on conflict (lead_id) do update
         set score = lead_totals.score
                     * power(2, -extract(epoch from now() - lead_totals.updated_at)::float8 / $3)
                     + excluded.score,
             events = lead_totals.events + excluded.events,
             updated_at = now()",
    )
    .bind(&total_leads)
    .bind(&counts)
    .bind(HALF_LIFE_SECONDS)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let now = micros_now();
    for at in times {
        bare.event_to_score
            .observe((now - at).max(0) as f64 / 1_000_000.0);
    }
    for message in messages {
        message
            .ack()
            .await
            .map_err(|err| anyhow::anyhow!("ack: {err}"))?;
    }
    bare.batch_duration.observe(started.elapsed().as_secs_f64());
    Ok(())
}

async fn consume(pool: sqlx::PgPool, bare: Arc<Bare>) -> anyhow::Result<()> {
    let mut batches = bare
        .consumer
        .stream()
        .max_messages_per_batch(FETCH)
        .messages()
        .await?
        .ready_chunks(FETCH);
    while let Some(batch) = batches.next().await {
        let messages = batch.into_iter().filter_map(Result::ok).collect();
        if let Err(err) = store(&pool, &bare, messages).await {
            // Unacked, they come back after the ack wait.
            eprintln!("batch failed: {err:#}");
        }
    }
    Ok(())
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = env("GATEWAY_ADDR", "127.0.0.1:18180")
        .parse()
        .context("GATEWAY_ADDR")?;
    let namespace = Namespace::parse(&env("LEADFLOW_NAMESPACE", "bare"))?;
    let options: sqlx::postgres::PgConnectOptions = env(
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    )
    .parse()?;
    let port = options.get_port();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        // As leadflow's pools do (its sockets module), or every batch waits for a delayed ACK.
        .after_connect(move |_, _| {
            Box::pin(async move {
                let _ = leadflow_platform::db::sockets::apply(port);
                Ok(())
            })
        })
        .connect_with(options)
        .await?;
    sqlx::raw_sql(
        "create table if not exists lead_engagement_events (
             event_id uuid primary key, lead_id uuid, event_type text not null,
             properties jsonb not null, occurred_at timestamptz not null,
             received_at timestamptz not null default now());
         create index if not exists lead_engagement_events_lead_idx
             on lead_engagement_events (lead_id, occurred_at desc);
         create table if not exists lead_totals (
             lead_id uuid primary key, score float8 not null, events int4 not null,
             updated_at timestamptz not null);",
    )
    .execute(&pool)
    .await?;

    let client = async_nats::connect(env("NATS_URL", "nats://127.0.0.1:4222")).await?;
    let jetstream = jetstream::new(client);
    let stream = jetstream
        .get_or_create_stream(jetstream::stream::Config {
            name: namespace.stream_name(Stream::Engagement),
            subjects: vec![namespace.subject("engagement.>")],
            storage: jetstream::stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await?;
    let consumer = stream
        .get_or_create_consumer(
            "bare",
            pull::Config {
                durable_name: Some("bare".to_owned()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                max_ack_pending: -1,
                ..Default::default()
            },
        )
        .await?;

    let registry = Registry::new_custom(Some("leadflow".to_owned()), None)?;
    let histogram = |name: &str| -> anyhow::Result<Histogram> {
        let opts = HistogramOpts::new(name, name).buckets(BUCKETS.to_vec());
        let opts = if name == "consumer_batch_duration_seconds" {
            opts.const_label("consumer", "scorer_engagement")
        } else {
            opts
        };
        let histogram = Histogram::with_opts(opts)?;
        registry.register(Box::new(histogram.clone()))?;
        Ok(histogram)
    };
    let gauge = |name: &str| -> anyhow::Result<IntGauge> {
        let gauge = IntGauge::with_opts(
            prometheus::Opts::new(name, name).const_label("consumer", "scorer_engagement"),
        )?;
        registry.register(Box::new(gauge.clone()))?;
        Ok(gauge)
    };
    let bare = Arc::new(Bare {
        event_to_score: histogram("event_to_score_seconds")?,
        batch_duration: histogram("consumer_batch_duration_seconds")?,
        pending: gauge("consumer_pending_messages")?,
        ack_pending: gauge("consumer_ack_pending_messages")?,
        registry,
        jetstream,
        namespace,
        consumer,
    });

    let consumer = tokio::spawn(consume(pool, bare.clone()));
    let app = Router::new()
        .route("/t/events", post(post_events))
        .route("/t/pixel.gif", get(pixel))
        .route("/readyz", get(|| async { "ready" }))
        .route("/metrics", get(metrics))
        .with_state(bare);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("bare pipeline on http://{addr}");
    tokio::select! {
        served = axum::serve(listener, app).into_future() => served?,
        consumed = consumer => consumed??,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
