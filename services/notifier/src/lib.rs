//! The notifier: consumes assignment and score events, writes notifications and pushes them to the people they concern.

use std::net::SocketAddr;

use leadflow_events::Stream;
use leadflow_platform::{Platform, Server, bus::ConsumerSpec, config::PlatformConfig};
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "notifier";

/// Durable consumers this service reads (created at start, idempotently).
pub const CONSUMERS: &[ConsumerSpec] = &[
    ConsumerSpec {
        name: "notifier_assignments",
        stream: Stream::Domain,
        filter: "assignments.>",
    },
    ConsumerSpec {
        name: "notifier_scores",
        stream: Stream::Domain,
        filter: "scores.updated",
    },
];

/// `notifier`'s command line and environment.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "notifier",
    version,
    about = "leadflow notifier: assignment and hot-lead notifications"
)]
pub struct NotifierConfig {
    #[command(flatten)]
    pub platform: PlatformConfig,
    #[command(flatten)]
    pub notifier: NotifierArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct NotifierArgs {
    /// Where health and metrics are served.
    #[arg(long, env = "NOTIFIER_ADDR", default_value = "0.0.0.0:8082")]
    pub notifier_addr: SocketAddr,
}

/// Builds the notifier and binds `NOTIFIER_ADDR`. PostgreSQL and NATS need not be up; health reports
/// them until they are, and streams and consumers are set up once NATS answers.
pub async fn build(config: NotifierConfig, shutdown: CancellationToken) -> anyhow::Result<Server> {
    let platform = Platform::start(SERVICE, &config.platform, CONSUMERS.to_vec(), shutdown).await?;
    Server::bind(
        platform,
        config.notifier.notifier_addr,
        axum::Router::new(),
        "NOTIFIER_ADDR",
    )
    .await
}
