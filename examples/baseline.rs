//! What this machine allows, measured without leadflow's logic, for `benches/baseline.sh`:
//!
//! 1. raw JetStream publishing: messages the size of a tracking event (with a `Nats-Msg-Id`, as
//!    leadflow sends them) into a file-storage stream, acknowledgements awaited in windows, as the
//!    gateway does for a batch;
//! 2. raw PostgreSQL batched inserts: rows shaped like `lead_engagement_events` (primary key, jsonb
//!    properties, two indexes), `UNNEST` batches as the scorer writes them, on one connection and on
//!    two at once.
//!
//! Environment: NATS_URL, DATABASE_URL (a scratch database: the table is created and dropped),
//! MESSAGES (default 200000), ROWS (default 200000), BATCH (default 500).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::future::try_join_all;
use serde_json::json;
use uuid::Uuid;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn per_second(n: usize, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let messages: usize = env("MESSAGES", "200000").parse().context("MESSAGES")?;
    let rows: usize = env("ROWS", "200000").parse().context("ROWS")?;
    let batch: usize = env("BATCH", "500").parse().context("BATCH")?;
    let payload = json!({
        "id": Uuid::now_v7(), "type": "engagement.page_view", "source": "gateway",
        "time": "2026-11-26T07:00:00Z", "lead_id": Uuid::new_v4(), "anonymous_id": null,
        "data": {"url": "https://example.com/pricing", "referrer": "https://example.com/"},
        "traceparent": null,
    })
    .to_string();

    let client = async_nats::connect(env("NATS_URL", "nats://127.0.0.1:4222")).await?;
    let jetstream = async_nats::jetstream::new(client);
    let stream = format!("BASELINE_{}", Uuid::new_v4().simple());
    jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![format!("{stream}.>")],
            storage: async_nats::jetstream::stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await?;
    let started = Instant::now();
    let subject = format!("{stream}.page_view");
    for window in (0..messages).collect::<Vec<_>>().chunks(batch) {
        let mut acks = Vec::with_capacity(window.len());
        for _ in window {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", Uuid::now_v7().to_string().as_str());
            acks.push(
                jetstream
                    .publish_with_headers(subject.clone(), headers, payload.clone().into())
                    .await?,
            );
        }
        try_join_all(acks.into_iter().map(std::future::IntoFuture::into_future)).await?;
    }
    let took = started.elapsed();
    jetstream.delete_stream(&stream).await?;
    println!(
        "jetstream publish: {messages} messages of {} bytes, acks awaited per {batch}: {:.0}/s",
        payload.len(),
        per_second(messages, took)
    );

    let options: sqlx::postgres::PgConnectOptions = env(
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    )
    .parse()?;
    let port = options.get_port();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        // As leadflow's pools do (see its sockets module), or every batch waits for a delayed ACK.
        .after_connect(move |_, _| {
            Box::pin(async move {
                let _ = leadflow_platform::db::sockets::apply(port);
                Ok(())
            })
        })
        .connect_with(options)
        .await?;
    sqlx::raw_sql(
        "drop table if exists baseline_events;
         create table baseline_events (
             event_id uuid primary key, lead_id uuid, event_type text not null,
             properties jsonb not null, occurred_at timestamptz not null,
             received_at timestamptz not null default now());
         create index on baseline_events (lead_id, occurred_at desc);
         create index on baseline_events (event_type, occurred_at desc);",
    )
    .execute(&pool)
    .await?;
    let properties = json!({"url": "https://example.com/pricing"});
    let insert = |count: usize| {
        let pool = pool.clone();
        let properties = properties.clone();
        async move {
            let leads: Vec<Uuid> = (0..1000).map(|_| Uuid::new_v4()).collect();
            for chunk in (0..count).collect::<Vec<_>>().chunks(batch) {
                let ids: Vec<Uuid> = chunk.iter().map(|_| Uuid::now_v7()).collect();
                let lead_ids: Vec<Uuid> = chunk.iter().map(|i| leads[i % leads.len()]).collect();
                let types: Vec<&str> = chunk.iter().map(|_| "page_view").collect();
                let props: Vec<serde_json::Value> =
                    chunk.iter().map(|_| properties.clone()).collect();
                sqlx::query(
                    "insert into baseline_events (event_id, lead_id, event_type, properties, occurred_at)
                     select id, lead, kind, props, now()
                     from unnest($1::uuid[], $2::uuid[], $3::text[], $4::jsonb[]) as t(id, lead, kind, props)
                     on conflict (event_id) do nothing",
                )
                .bind(&ids)
                .bind(&lead_ids)
                .bind(&types)
                .bind(&props)
                .execute(&pool)
                .await?;
            }
            anyhow::Ok(())
        }
    };
    let started = Instant::now();
    insert(rows).await?;
    let one = per_second(rows, started.elapsed());
    let started = Instant::now();
    try_join_all([insert(rows / 2), insert(rows / 2)]).await?;
    let two = per_second(rows, started.elapsed());
    sqlx::query("drop table baseline_events")
        .execute(&pool)
        .await?;
    println!(
        "postgresql batched insert: {rows} rows in batches of {batch}: {one:.0}/s on one connection, {two:.0}/s on two"
    );
    Ok(())
}
