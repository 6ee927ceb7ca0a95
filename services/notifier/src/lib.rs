//! The notifier: consumes assignment and score events, writes notifications and pushes them to the people they concern.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use leadflow_events::Stream;
use leadflow_platform::{
    Platform, Server,
    access::{AccessTokens, checked_secret},
    bus::ConsumerSpec,
    config::{PlatformConfig, parse_duration},
};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

mod auth;
pub mod egress;
pub mod email;
mod error;
mod health;
pub mod hub;
pub mod metrics;
pub mod processor;
pub mod recipients;
mod state;
pub mod store;
mod streams;
pub mod webhooks;
pub mod worker;

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
    #[command(flatten)]
    pub shared: SharedArgs,
}

/// Settings the notifier shares with the gateway, kept apart from [`NotifierArgs`] so that
/// `leadflow up`, which reads them once for the gateway, can hand the notifier the same values.
#[derive(Debug, Clone, clap::Args)]
pub struct SharedArgs {
    /// The gateway's HMAC key for access tokens (the same value): streams accept its tokens.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,
    /// Browser origins allowed to open the streams (comma-separated); the gateway's list.
    #[arg(
        long,
        env = "ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct NotifierArgs {
    /// Where the notification streams, health and metrics are served.
    #[arg(long, env = "NOTIFIER_ADDR", default_value = "0.0.0.0:8082")]
    pub notifier_addr: SocketAddr,
    /// How often an idle stream gets a heartbeat (SSE comment, WebSocket ping), so proxies keep it.
    #[arg(long, env = "NOTIFY_HEARTBEAT", default_value = "15s", value_parser = parse_duration)]
    pub notify_heartbeat: Duration,
    /// How often an open stream re-checks its user (active, same role, not signed out); a stream
    /// whose user lost access is closed.
    #[arg(long, env = "NOTIFY_RECHECK", default_value = "60s", value_parser = parse_duration)]
    pub notify_recheck: Duration,
    /// Pushes queued per connection; a client that falls this far behind is disconnected (it
    /// resumes with Last-Event-ID) instead of holding memory.
    #[arg(long, env = "NOTIFY_CLIENT_BUFFER", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub notify_client_buffer: u32,
    /// Streams one user may hold open on one notifier process (tabs, devices); more get 429.
    #[arg(long, env = "NOTIFY_MAX_CONNECTIONS_PER_USER", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub notify_max_connections_per_user: u32,
    /// Also tell every active manager when a lead turns Hot (the owner is always told).
    #[arg(long, env = "NOTIFY_MANAGERS_ON_HOT", default_value_t = false)]
    pub notify_managers_on_hot: bool,
    #[command(flatten)]
    pub webhooks: webhooks::WebhookArgs,
    #[command(flatten)]
    pub email: email::EmailArgs,
}

/// Builds the notifier and binds `NOTIFIER_ADDR`. PostgreSQL and NATS need not be up; health reports
/// them until they are, and streams and consumers are set up once NATS answers.
pub async fn build(config: NotifierConfig, shutdown: CancellationToken) -> anyhow::Result<Server> {
    let secret = checked_secret(config.shared.jwt_secret.as_ref(), "JWT_SECRET")?;
    let origins = leadflow_platform::http::parse_origins(&config.shared.allowed_origins)?;
    anyhow::ensure!(
        !config.notifier.notify_heartbeat.is_zero(),
        "NOTIFY_HEARTBEAT must be more than zero"
    );
    anyhow::ensure!(
        !config.notifier.notify_recheck.is_zero(),
        "NOTIFY_RECHECK must be more than zero"
    );
    let platform = Platform::start(SERVICE, &config.platform, CONSUMERS.to_vec(), shutdown).await?;
    let metrics = metrics::NotifierMetrics::register(platform.metrics.registry())?;
    let hub = hub::Hub::new(
        config.notifier.notify_client_buffer as usize,
        config.notifier.notify_max_connections_per_user as usize,
        metrics.clone(),
    );
    platform.spawn(hub::run(platform.clone(), hub.clone()));
    platform.spawn(health::refresh(platform.clone(), metrics.clone()));

    let email_queued = email::start(&platform, &metrics, &config.notifier.email)?;

    let webhooks_queued = Arc::new(tokio::sync::Notify::new());
    let deliverer = Arc::new(webhooks::Deliverer {
        platform: platform.clone(),
        metrics: metrics.clone(),
        http: webhooks::client(
            config.notifier.webhooks.webhook_timeout,
            config.notifier.webhooks.webhook_allow_private,
        )?,
        settings: config.notifier.webhooks.clone(),
        wake: webhooks_queued.clone(),
        email_queued: email_queued.clone(),
    });
    platform.spawn(deliverer.run());

    let processor = Arc::new(processor::Processor {
        platform: platform.clone(),
        notify_managers_on_hot: config.notifier.notify_managers_on_hot,
        webhooks_queued,
        email_queued,
    });
    for spec in CONSUMERS {
        platform.spawn(leadflow_platform::consume::run(
            platform.clone(),
            *spec,
            worker::BATCH,
            // One lane: a lead's assignment and its reassignment must be told in order.
            1,
            processor.clone(),
        ));
    }

    let state = state::AppState::new(state::Inner {
        platform: platform.clone(),
        tokens: AccessTokens::new(secret),
        sessions: Default::default(),
        hub,
        heartbeat: config.notifier.notify_heartbeat,
        recheck: config.notifier.notify_recheck,
    });
    Server::bind(
        platform,
        config.notifier.notifier_addr,
        streams::router(state, &origins),
        "NOTIFIER_ADDR",
    )
    .await
    .map(|server| server.long_lived(&[streams::SSE_PATH]))
}
