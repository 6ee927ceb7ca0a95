//! The gateway: the REST API the web frontend and integrations use, and the publisher of domain
//! events (through the transactional outbox).

pub mod admin;
pub mod config;
pub mod password;
mod routes;

use std::sync::Arc;

use anyhow::Context as _;
use leadflow_platform::{
    Platform, Server,
    outbox::{OutboxRelay, RelayConfig},
    retry::backoff,
};
use tokio_util::sync::CancellationToken;

pub use config::GatewayConfig;

pub const SERVICE: &str = "gateway";

/// Builds the gateway: validates its configuration, binds `GATEWAY_ADDR`, and starts the outbox
/// relay. PostgreSQL and NATS need not be up; health reports them until they are.
pub async fn build(config: GatewayConfig, shutdown: CancellationToken) -> anyhow::Result<Server> {
    config.gateway.jwt_secret()?;
    let admin = match config.gateway.admin.requested()? {
        Some((email, password)) => Some(
            admin::NewAdmin::parse(
                email,
                password.clone(),
                &config.gateway.admin.leadflow_admin_name,
            )
            .context("LEADFLOW_ADMIN_EMAIL / LEADFLOW_ADMIN_PASSWORD / LEADFLOW_ADMIN_NAME")?,
        ),
        None => None,
    };

    let platform = Platform::start(SERVICE, &config.platform, Vec::new(), shutdown).await?;
    if let Some(admin) = admin {
        platform.spawn(bootstrap_admin(platform.clone(), admin));
    }
    let relay = OutboxRelay::new(
        platform.db.pool().clone(),
        platform.bus.clone(),
        platform.metrics.clone(),
        RelayConfig::default(),
    );
    platform.spawn(relay.run(platform.shutdown_token()));

    let routes = routes::router(platform.clone());
    Server::bind(
        platform,
        config.gateway.gateway_addr,
        routes,
        "GATEWAY_ADDR",
    )
    .await
}

/// Retries until the database is reachable, so the admin exists as soon as it can.
async fn bootstrap_admin(platform: Arc<Platform>, admin: admin::NewAdmin) {
    let token = platform.shutdown_token();
    let mut delays = backoff();
    loop {
        match admin::upsert_admin(platform.db.pool(), &admin).await {
            Ok(_) => {
                tracing::info!(
                    email = admin.email(),
                    "admin user from LEADFLOW_ADMIN_EMAIL is ready"
                );
                return;
            }
            Err(err) => {
                let delay = delays.next().unwrap_or(std::time::Duration::from_secs(5));
                tracing::warn!(
                    error = %leadflow_platform::error_chain(&err),
                    retry_in = ?delay,
                    "creating the admin user failed; retrying"
                );
                tokio::select! {
                    () = token.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
