use std::{ops::Deref, sync::Arc};

use leadflow_platform::{Platform, db::DbError};
use sqlx::{Postgres, Transaction, pool::PoolConnection};
use tokio::sync::Semaphore;

use crate::{
    auth::tokens::TokenService,
    config::GatewayArgs,
    rate_limit::{Limiter, RateLimits},
};

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub platform: Arc<Platform>,
    pub tokens: TokenService,
    pub limits: RateLimits,
    pub settings: GatewayArgs,
    pub lead_counts: crate::leads::counts::LeadCounts,
    pub sessions: crate::auth::sessions::Sessions,
    pub key_ring: crate::tracking::KeyRing,
    pub lead_tokens: crate::tracking::keys::LeadTokens,
    /// `tracking_events_total{outcome}`.
    pub tracking: prometheus::IntCounterVec,
    /// Bounds concurrent argon2 work, so logins cannot starve everything else of CPU and memory.
    pub hashing: Arc<Semaphore>,
}

impl Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(platform: Arc<Platform>, settings: GatewayArgs) -> anyhow::Result<Self> {
        let secret = settings.jwt_secret()?.clone();
        // Half the cores by default: sign-in storms then leave the other half to everything else.
        let permits = match settings.password_hash_concurrency {
            0 => std::thread::available_parallelism().map_or(1, |n| (usize::from(n) / 2).max(1)),
            n => n,
        };
        Ok(Self(Arc::new(Inner {
            tokens: TokenService::new(
                &secret,
                settings.access_token_ttl,
                settings.refresh_token_ttl,
            ),
            limits: RateLimits {
                login_per_ip: Limiter::new(settings.login_rate_per_ip),
                login_per_account: Limiter::new(settings.login_rate_per_account),
                api_per_token: Limiter::new(settings.api_rate_per_token),
            },
            hashing: Arc::new(Semaphore::new(permits)),
            lead_counts: Default::default(),
            sessions: Default::default(),
            key_ring: Default::default(),
            lead_tokens: crate::tracking::keys::LeadTokens::new(&secret),
            tracking: crate::tracking::metric(platform.metrics.registry())?,
            platform,
            settings,
        })))
    }

    pub async fn conn(&self) -> Result<PoolConnection<Postgres>, DbError> {
        self.platform.db.acquire().await
    }

    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, DbError> {
        self.platform.db.begin().await
    }
}
