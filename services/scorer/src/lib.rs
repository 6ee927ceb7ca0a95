//! The scorer: consumes engagement and lead events and keeps every lead's score, tier and insights current. It serves only health and metrics over HTTP.

use std::{net::SocketAddr, sync::Arc};

use leadflow_events::Stream;
use leadflow_platform::{
    Platform, Server,
    bus::ConsumerSpec,
    config::PlatformConfig,
    outbox::{OutboxRelay, RelayConfig},
};
use tokio_util::sync::CancellationToken;

pub mod model;
pub mod processor;
pub mod rescore;
pub mod rescore_all;
pub mod stored_signals;
pub mod worker;

pub const SERVICE: &str = "scorer";

/// Durable consumers this service reads (created at start, idempotently).
pub const CONSUMERS: &[ConsumerSpec] = &[
    ConsumerSpec {
        name: "scorer_engagement",
        stream: Stream::Engagement,
        filter: "engagement.>",
    },
    ConsumerSpec {
        name: "scorer_leads",
        stream: Stream::Domain,
        filter: "leads.>",
    },
    ConsumerSpec {
        name: "scorer_notes",
        stream: Stream::Domain,
        filter: "notes.created",
    },
];

/// `scorer`'s command line and environment.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "scorer",
    version,
    about = "leadflow scorer: engagement and lead events in, scores and insights out"
)]
pub struct ScorerConfig {
    #[command(flatten)]
    pub platform: PlatformConfig,
    #[command(flatten)]
    pub scorer: ScorerArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ScorerArgs {
    /// Where health and metrics are served.
    #[arg(long, env = "SCORER_ADDR", default_value = "0.0.0.0:8081")]
    pub scorer_addr: SocketAddr,
    /// Half-life of an engagement event's weight.
    #[arg(long, env = "SCORE_HALF_LIFE", default_value = "14d", value_parser = leadflow_platform::config::parse_duration)]
    pub score_half_life: std::time::Duration,
    /// Lowest score that is Hot.
    #[arg(long, env = "SCORE_HOT_THRESHOLD", default_value_t = 70, value_parser = clap::value_parser!(i32).range(1..=100))]
    pub score_hot_threshold: i32,
    /// Lowest score that is Warm.
    #[arg(long, env = "SCORE_WARM_THRESHOLD", default_value_t = 40, value_parser = clap::value_parser!(i32).range(1..=100))]
    pub score_warm_threshold: i32,
    /// Lanes each consumer runs: each commits a batch in a transaction of its own, at the same
    /// time as the others. A lead's events go to one lane at a time, so lanes do not wait for
    /// each other's locks; PostgreSQL works on all of them in parallel. Two lanes take work
    /// whenever idle; more only while a backlog waits (see `leadflow_platform::consume`). A third
    /// drains a backlog faster but costs a pixel load CPU on two cores (docs/benchmarks.md,
    /// session 11), so two is the default.
    #[arg(long, env = "SCORER_WORKERS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub scorer_workers: u16,
}

impl ScorerArgs {
    pub fn model_config(&self) -> anyhow::Result<model::Config> {
        anyhow::ensure!(
            self.score_warm_threshold < self.score_hot_threshold,
            "SCORE_WARM_THRESHOLD must be below SCORE_HOT_THRESHOLD"
        );
        Ok(model::Config {
            half_life_days: self.score_half_life.as_secs_f64() / 86_400.0,
            hot_threshold: self.score_hot_threshold,
            warm_threshold: self.score_warm_threshold,
        })
    }
}

/// Builds the scorer and binds `SCORER_ADDR`. PostgreSQL and NATS need not be up; health reports
/// them until they are, and streams and consumers are set up once NATS answers.
pub async fn build(config: ScorerConfig, shutdown: CancellationToken) -> anyhow::Result<Server> {
    let model_config = config.scorer.model_config()?;
    let platform = Platform::start(SERVICE, &config.platform, CONSUMERS.to_vec(), shutdown).await?;
    let processor = Arc::new(processor::Processor {
        pool: platform.db.pool().clone(),
        config: model_config,
    });
    let worker = Arc::new(worker::Worker {
        processor,
        event_to_score: worker::latency_histogram(&platform)?,
    });
    for spec in CONSUMERS {
        platform.spawn(leadflow_platform::consume::run(
            platform.clone(),
            *spec,
            worker::BATCH,
            config.scorer.scorer_workers.into(),
            worker.clone(),
        ));
    }
    platform.spawn(rescore::respond(platform.clone(), worker.processor.clone()));
    // `scores.updated` goes out through the outbox, like the gateway's domain events.
    let relay = OutboxRelay::new(
        platform.db.pool().clone(),
        platform.bus.clone(),
        platform.metrics.clone(),
        RelayConfig::default(),
    );
    platform.spawn(relay.run(platform.shutdown_token()));
    Server::bind(
        platform,
        config.scorer.scorer_addr,
        axum::Router::new(),
        "SCORER_ADDR",
    )
    .await
}
