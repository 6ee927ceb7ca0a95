//! Load generator for `benches/notifier-load.sh`: opens `CLIENTS` SSE streams (one user each),
//! publishes `RATE` `assignments.created` events a second to JetStream for random connected users
//! for `DURATION` seconds, and reports how many pushes arrived and the latency from publishing to
//! the push reaching its client (p50, p99, max).
//!
//! Environment: NOTIFIER_URL, DATABASE_URL, NATS_URL, LEADFLOW_NAMESPACE, JWT_SECRET, CLIENTS,
//! RATE, DURATION. It creates its users in DATABASE_URL: point it at a scratch database.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use leadflow_events::{Envelope, Namespace};
use leadflow_platform::access::AccessTokens;
use secrecy::SecretString;
use serde_json::json;
use uuid::Uuid;

type Sent = Arc<Mutex<HashMap<Uuid, Instant>>>;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let base = env("NOTIFIER_URL", "http://127.0.0.1:8082");
    let clients: usize = env("CLIENTS", "1000").parse().context("CLIENTS")?;
    let rate: u64 = env("RATE", "200").parse().context("RATE")?;
    let duration: u64 = env("DURATION", "20").parse().context("DURATION")?;
    let ns = Namespace::parse(&env("LEADFLOW_NAMESPACE", "")).context("LEADFLOW_NAMESPACE")?;
    let tokens = AccessTokens::new(&SecretString::from(
        std::env::var("JWT_SECRET").context("JWT_SECRET")?,
    ));

    let pool =
        sqlx::PgPool::connect(&std::env::var("DATABASE_URL").context("DATABASE_URL")?).await?;
    let users: Vec<Uuid> = sqlx::query_scalar(
        "insert into users (email, name, password_hash, role)
         select 'load-' || gen_random_uuid() || '@example.com', 'Load ' || i, 'not-a-hash', 'sales_rep'
         from generate_series(1, $1) i returning id",
    )
    .bind(i64::try_from(clients)?)
    .fetch_all(&pool)
    .await?;

    let sent: Sent = Arc::default();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let connected = Arc::new(AtomicUsize::new(0));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let started = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(200));
    for user in &users {
        let token = tokens.issue(*user, "sales_rep", Duration::from_secs(3600))?;
        let permit = gate.clone().acquire_owned().await?;
        let (http, url) = (http.clone(), format!("{base}/api/notifications/stream"));
        let (sent, latencies, connected) = (sent.clone(), latencies.clone(), connected.clone());
        tokio::spawn(async move {
            let response = http.get(url).bearer_auth(token).send().await;
            drop(permit);
            let Ok(mut response) = response else { return };
            if !response.status().is_success() {
                return;
            }
            connected.fetch_add(1, Ordering::Relaxed);
            let mut buffer = String::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) else {
                        continue;
                    };
                    let Ok(value) = serde_json::from_str::<serde_json::Value>(data.trim()) else {
                        continue;
                    };
                    let event: Option<Uuid> = value["payload"]["event_id"]
                        .as_str()
                        .and_then(|s| s.parse().ok());
                    let at = event.and_then(|id| sent.lock().ok()?.remove(&id));
                    if let (Some(at), Ok(mut l)) = (at, latencies.lock()) {
                        l.push(at.elapsed());
                    }
                }
            }
        });
    }
    while connected.load(Ordering::Relaxed) < clients
        && started.elapsed() < Duration::from_secs(300)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "connected {} of {clients} SSE clients in {:.1} s",
        connected.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );

    let nats = async_nats::connect(env("NATS_URL", "nats://127.0.0.1:4222")).await?;
    let jetstream = async_nats::jetstream::new(nats);
    let subject = ns.subject("assignments.created");
    let total = rate * duration;
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    let manager = Uuid::new_v4();
    let mut acks = Vec::new();
    for i in 0..total {
        ticker.tick().await;
        let user = users[(i as usize * 7919) % users.len()];
        let event = Envelope::new("assignments.created", "load")?
            .with_lead(Uuid::new_v4())
            .with_data(json!({"assignment_id": Uuid::new_v4(), "assignee_id": user, "assigned_by": manager}));
        if let Ok(mut s) = sent.lock() {
            s.insert(event.id, Instant::now());
        }
        let message = async_nats::jetstream::message::PublishMessage::build()
            .payload(event.to_json().into())
            .message_id(event.id.to_string());
        acks.push(jetstream.send_publish(subject.clone(), message).await?);
        if acks.len() >= 100 {
            for ack in acks.drain(..) {
                ack.await?;
            }
        }
    }
    for ack in acks {
        ack.await?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut l = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort();
    let q = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "published {total} events at {rate}/s; pushes received {} (missing {})",
        l.len(),
        sent.lock().map(|s| s.len()).unwrap_or_default()
    );
    println!(
        "publish-to-push latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        q(0.5),
        q(0.99),
        l.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    );
    Ok(())
}
