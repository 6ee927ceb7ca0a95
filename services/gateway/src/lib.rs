//! The gateway: the REST API the web frontend and integrations use (DESIGN.md §4), and the
//! publisher of domain events through the transactional outbox.

/// `format!` for SQL assembled only from constant pieces (column lists, fixed filters), never
/// from input: input always goes through bind parameters.
macro_rules! sql {
    ($($arg:tt)*) => {
        sqlx::AssertSqlSafe(format!($($arg)*))
    };
}

pub mod admin;
mod assignments;
mod audit;
mod audit_log;
pub mod auth;
pub mod config;
pub mod demo;
mod error;
mod extract;
mod inventory;
mod leads;
mod meta;
mod middleware;
mod notes;
mod notifications;
pub mod openapi;
mod pagination;
pub mod policy;
/// The parsers that take untrusted input from the network, as plain functions without state or
/// I/O: the fuzz targets in `fuzz/` and the corpus replay tests call them, and so do the handlers.
pub mod parse {
    pub use crate::{
        leads::{
            import::{ImportError, ParsedImport, RowReport, parse_import},
            model::ValidLead,
        },
        tracking::{
            keys::LeadTokens,
            parse::{
                BatchError, EventError, MAX_EVENTS, ParsedBatch, PixelCredential, PixelQuery,
                envelope, parse_batch, parse_pixel_query,
            },
        },
    };
}
mod rate_limit;
mod scores;
mod state;
mod tracking;
mod unique_keys;
mod users;
mod webhooks;

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::Router;
use leadflow_platform::{
    Platform, Server,
    outbox::{OutboxRelay, RelayConfig},
    retry::backoff,
};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi as _;
use utoipa_axum::{router::OpenApiRouter, routes};
use utoipa_swagger_ui::SwaggerUi;

pub use config::GatewayConfig;
use state::AppState;

pub const SERVICE: &str = "gateway";

/// Every `/api` route, with its OpenAPI description.
fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(auth::router())
        .merge(users::router())
        .merge(leads::router())
        .merge(notes::router())
        .merge(assignments::router())
        .merge(notifications::router())
        .merge(inventory::router())
        .merge(audit_log::router())
        .merge(tracking::admin_router())
        .merge(scores::router())
        .merge(webhooks::router())
}

/// The router and the OpenAPI document built from the same registrations, so they cannot drift.
pub fn router_and_spec() -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut spec) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .nest("/api", api())
        .routes(routes!(meta::service_info))
        .split_for_parts();
    openapi::complete(&mut spec);
    (router, spec)
}

/// Builds the gateway: validates its configuration, binds `GATEWAY_ADDR`, and starts the outbox
/// relay. PostgreSQL and NATS need not be up; health reports them until they are.
pub async fn build(config: GatewayConfig, shutdown: CancellationToken) -> anyhow::Result<Server> {
    config.gateway.validate()?;
    let origins = middleware::parse_origins(&config.gateway.allowed_origins)?;
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
    let state = AppState::new(platform.clone(), config.gateway.clone())?;
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
    platform.spawn(shrink_rate_limits(state.clone()));
    platform.spawn(auth::expired::sweep(state.clone()));
    platform.spawn(tracking::reload_keys(state.clone()));

    let (routes, spec) = router_and_spec();
    let spec = Arc::new(spec);
    // CORS for the API follows ALLOWED_ORIGINS; the tracking routes carry their own, open one.
    let api: Router = routes
        .with_state(state.clone())
        .merge(meta::router(state.clone(), spec.clone()))
        .merge(SwaggerUi::new("/docs").url("/docs/openapi.json", (*spec).clone()));
    let routes = middleware::cors(api, &origins).merge(tracking::router(state.clone()));
    let timeout = config.gateway.request_timeout;
    Ok(Server::bind(
        platform,
        config.gateway.gateway_addr,
        routes,
        "GATEWAY_ADDR",
    )
    .await?
    .map_router(|router| middleware::apply(router, timeout)))
}

/// Rate limiters remember every key they saw; forget the idle ones now and then.
async fn shrink_rate_limits(state: AppState) {
    let token = state.platform.shutdown_token();
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(60)) => state.limits.shrink(),
        }
    }
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
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
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
