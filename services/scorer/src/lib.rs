//! The scorer: consumes engagement and lead events and keeps every lead's score, tier and insights current. It serves only health and metrics over HTTP.

use std::net::SocketAddr;

use leadflow_events::Stream;
use leadflow_platform::{Platform, Server, bus::ConsumerSpec, config::PlatformConfig};
use tokio_util::sync::CancellationToken;

pub mod model;

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
}

/// Builds the scorer and binds `SCORER_ADDR`. PostgreSQL and NATS need not be up; health reports
/// them until they are, and streams and consumers are set up once NATS answers.
pub async fn build(config: ScorerConfig, shutdown: CancellationToken) -> anyhow::Result<Server> {
    let platform = Platform::start(SERVICE, &config.platform, CONSUMERS.to_vec(), shutdown).await?;
    Server::bind(
        platform,
        config.scorer.scorer_addr,
        axum::Router::new(),
        "SCORER_ADDR",
    )
    .await
}
