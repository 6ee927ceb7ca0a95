//! The yardstick #4 names: a bare axum → JetStream → batched-upsert pipeline, with none of
//! leadflow's logic, run by `BARE=1 benches/tracking-load.sh` in place of `leadflow up` so both
//! are measured with the same load, on the same machine, by the same script. The machine's speed
//! differs as much as two to one between days (docs/benchmarks.md); the ratio between the two
//! moves far less, and says how much of the machine leadflow's own work takes.
//!
//! What it keeps of the real pipeline, so the comparison is of logic and not of shortcuts:
//! publish acks awaited before answering (a batch's in flight together), a `Nats-Msg-Id` on each
//! event, a file-storage stream, a durable pull consumer read by two tasks (the scorer's two
//! lanes) in fetches of up to the scorer's `BATCH`, explicit acks after commit, events inserted
//! once per id and each lead's running score carried forward with decay for newly stored events
//! only, in one transaction per batch, leads in id order so the two tasks' batches cannot
//! deadlock. What it leaves out: write keys, validation beyond what a subject needs, bots,
//! identity, the scoring model, history, insights, the outbox, notifications and everything about
//! failure (a batch that fails is left unacked, for redelivery after the ack wait).
//!
//! It serves `POST /t/events`, `GET /t/pixel.gif`, `/readyz` and `/metrics` on `GATEWAY_ADDR`,
//! with the metrics the script reads under the scorer's names, labels and buckets. Environment:
//! `NATS_URL`, `DATABASE_URL` (a scratch database: it creates its two tables),
//! `LEADFLOW_NAMESPACE` (its stream is that namespace's engagement stream, so `drop_streams`
//! removes it).

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
use leadflow_platform::metrics::Metrics;
use prometheus::{Encoder as _, Histogram, HistogramOpts, TextEncoder};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

/// The label the script's drain check and batch histogram look for.
const CONSUMER: &str = "scorer_engagement";
/// The scorer's default `SCORE_HALF_LIFE`, 14 days.
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
    metrics: Metrics,
    event_to_score: Histogram,
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

/// The type becomes a subject token: `.`, `*`, `>` or a space would change the subject.
fn subject_token(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= 64
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Bare {
    async fn publish(
        &self,
        kind: &str,
        lead_id: Option<Uuid>,
        data: Option<&RawValue>,
    ) -> anyhow::Result<jetstream::context::PublishAckFuture> {
        let event = Event {
            id: Uuid::now_v7(),
            kind,
            lead_id,
            at: micros_now(),
            data,
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", event.id.to_string().as_str());
        let body = serde_json::to_vec(&event)?;
        Ok(self
            .jetstream
            .publish_with_headers(
                self.namespace.subject(&format!("engagement.{kind}")),
                headers,
                body.into(),
            )
            .await?)
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
    if let Some(bad) = posted.events.iter().find(|e| !subject_token(e.kind)) {
        let detail = format!("type {:?}: lower-case letters, digits and _ only", bad.kind);
        return (StatusCode::BAD_REQUEST, detail).into_response();
    }
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

/// The GIF whatever happens, as leadflow's pixel answers.
async fn pixel(State(bare): State<Arc<Bare>>, Query(pixel): Query<Pixel>) -> Response {
    let kind = pixel.e.as_deref().unwrap_or("email_open");
    if subject_token(kind)
        && let Ok(ack) = bare.publish(kind, pixel.lead, None).await
    {
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

/// The lag gauges are read from the server at each scrape. Until a first reading they are absent,
/// and after a failed one the answer is 503: the script's drain check takes neither for "drained".
async fn serve_metrics(State(bare): State<Arc<Bare>>) -> Response {
    let mut consumer = bare.consumer.clone();
    let info = match consumer.info().await {
        Ok(info) => info,
        Err(err) => return (StatusCode::SERVICE_UNAVAILABLE, err.to_string()).into_response(),
    };
    let gauge = |vec: &prometheus::IntGaugeVec, value: usize| {
        vec.with_label_values(&[CONSUMER])
            .set(i64::try_from(value).unwrap_or(i64::MAX));
    };
    gauge(&bare.metrics.consumer_pending, info.num_pending as usize);
    gauge(&bare.metrics.consumer_ack_pending, info.num_ack_pending);
    let mut text = Vec::new();
    match TextEncoder::new().encode(&bare.metrics.registry().gather(), &mut text) {
        Ok(()) => text.into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

/// One fetched batch: its events inserted once per id and, for those newly stored, each lead's
/// running score carried forward and increased, in one transaction; acked after the commit.
async fn store(
    pool: &sqlx::PgPool,
    bare: &Bare,
    messages: Vec<jetstream::Message>,
) -> anyhow::Result<()> {
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

    let started = Instant::now();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "with stored as (
             insert into lead_engagement_events (event_id, lead_id, event_type, properties, occurred_at)
             select id, lead, kind, props::jsonb, timestamptz 'epoch' + at * interval '1 microsecond'
             from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::int8[]) as t(id, lead, kind, props, at)
             on conflict (event_id) do nothing
             returning lead_id)
         insert into lead_totals (lead_id, score, events, updated_at)
         select lead_id, count(*), count(*), now() from stored
         where lead_id is not null group by lead_id order by lead_id
         on conflict (lead_id) do update
         set score = lead_totals.score
                     * power(2, -extract(epoch from now() - lead_totals.updated_at)::float8 / $6)
                     + excluded.score,
             events = lead_totals.events + excluded.events,
             updated_at = now()",
    )
    .bind(&ids)
    .bind(&leads)
    .bind(&kinds)
    .bind(&data)
    .bind(&times)
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
    bare.metrics
        .batch_duration
        .with_label_values(&[CONSUMER])
        .observe(started.elapsed().as_secs_f64());
    Ok(())
}

/// One of the two consuming tasks: takes what has arrived, up to a fetch, and stores it.
async fn consume(pool: sqlx::PgPool, bare: Arc<Bare>) -> anyhow::Result<()> {
    let batch = leadflow_scorer::worker::BATCH;
    let mut batches = bare
        .consumer
        .stream()
        .max_messages_per_batch(batch)
        .messages()
        .await?
        .ready_chunks(batch);
    while let Some(chunk) = batches.next().await {
        let mut messages = Vec::with_capacity(chunk.len());
        for message in chunk {
            match message {
                Ok(message) => messages.push(message),
                // Missed heartbeats and the like: the stream carries on.
                Err(err) => eprintln!("pull: {err}"),
            }
        }
        if messages.is_empty() {
            continue;
        }
        if let Err(err) = store(&pool, &bare, messages).await {
            eprintln!("batch failed, left for redelivery: {err:#}");
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
        // One for each consuming task.
        .max_connections(2)
        // As leadflow's pools do (its sockets module), or every batch waits for a delayed ACK.
        .after_connect(move |_, _| {
            Box::pin(async move {
                if let Err(err) = leadflow_platform::db::sockets::apply(port) {
                    eprintln!("could not set TCP options on database connections: {err}");
                }
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
                // As leadflow's durables: no limit on messages awaiting their ack.
                max_ack_pending: -1,
                ..Default::default()
            },
        )
        .await?;

    let metrics = Metrics::new("bare")?;
    let event_to_score = Histogram::with_opts(
        HistogramOpts::new(
            "event_to_score_seconds",
            "From an event's publishing to its commit.",
        )
        .buckets(leadflow_scorer::worker::EVENT_TO_SCORE_BUCKETS.to_vec()),
    )?;
    metrics
        .registry()
        .register(Box::new(event_to_score.clone()))?;
    let bare = Arc::new(Bare {
        jetstream,
        namespace,
        consumer,
        metrics,
        event_to_score,
    });

    let mut consumers = tokio::task::JoinSet::new();
    for _ in 0..2 {
        consumers.spawn(consume(pool.clone(), bare.clone()));
    }
    let app = Router::new()
        .route("/t/events", post(post_events))
        .route("/t/pixel.gif", get(pixel))
        .route("/readyz", get(|| async { "ready" }))
        .route("/metrics", get(serve_metrics))
        .with_state(bare);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("bare pipeline on http://{addr}");
    tokio::select! {
        served = axum::serve(listener, app).into_future() => served?,
        Some(consumed) = consumers.join_next() => consumed??,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
