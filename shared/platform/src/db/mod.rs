//! The PostgreSQL pool, behind a circuit breaker, with a health probe that says why it is down.

mod breaker;
mod diagnose;
mod loopback;
mod migrate;
pub mod sockets;

use std::{
    future::Future,
    str::FromStr,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use serde::Serialize;
use sqlx::{
    Connection, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

pub use breaker::{BreakerOpen, BreakerSnapshot, BreakerState, CircuitBreaker, Permit};

/// How long a health probe waits for a pooled connection before asking the server directly.
const PROBE_POOL_WAIT: Duration = Duration::from_millis(250);
pub use diagnose::{ErrorType, classify, is_unavailable};
pub use migrate::{MIGRATOR, ensure_database, migrate};

use crate::{
    config::{BreakerConfig, DatabaseConfig, DatabaseUrl},
    error_chain,
    metrics::Metrics,
};

/// A query that did not run: either the breaker refused it, or PostgreSQL failed it.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Unavailable(#[from] BreakerOpen),
    #[error("database query failed")]
    Query(#[from] sqlx::Error),
}

impl DbError {
    /// True when the caller should answer 503: the database, not the request, is the problem.
    pub fn is_unavailable(&self) -> bool {
        match self {
            DbError::Unavailable(_) => true,
            DbError::Query(e) => is_unavailable(e),
        }
    }
}

/// The last probe's verdict, as `/health.json` shows it under `database`.
#[derive(Debug, Clone, Serialize)]
pub struct DbStatus {
    pub connected: bool,
    pub error_type: Option<ErrorType>,
    /// Never contains the password: every message goes through [`DatabaseUrl::scrub`].
    pub error_message: Option<String>,
    pub fix: Option<&'static str>,
    pub latency_ms: Option<f64>,
}

impl DbStatus {
    fn unchecked() -> Self {
        Self {
            connected: false,
            error_type: None,
            error_message: Some("not checked yet".into()),
            fix: None,
            latency_ms: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
    pub in_use: u32,
    pub max: u32,
    /// `in_use / max`, 0 to 1.
    pub utilization: f64,
}

pub struct Database {
    service: String,
    pool: PgPool,
    url: DatabaseUrl,
    connect_options: PgConnectOptions,
    acquire_timeout: Duration,
    breaker: CircuitBreaker,
    status: RwLock<DbStatus>,
}

impl Database {
    /// Builds the pool without connecting, so a service starts (and reports why) even when the
    /// database is down; connections are made on first use and re-made after an outage.
    pub fn new(
        cfg: &DatabaseConfig,
        breaker: &BreakerConfig,
        application_name: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Self, sqlx::Error> {
        let statement_timeout = cfg.db_statement_timeout.as_millis().to_string();
        let url = cfg.database_url.expose();
        let connect_options = loopback::without_tls_on_loopback(
            PgConnectOptions::from_str(url)?,
            url,
            loopback::pgssl_env(),
        )
        .application_name(application_name)
        .options(
            std::iter::once(("statement_timeout", statement_timeout)).chain(sockets::server_side()),
        );
        let port = connect_options.get_port();
        let pool = PgPoolOptions::new()
            .max_connections(cfg.db_pool_max)
            .min_connections(cfg.db_pool_min.min(cfg.db_pool_max))
            .acquire_timeout(cfg.db_acquire_timeout)
            .idle_timeout(Duration::from_secs(300))
            .after_connect(move |_conn, _meta| {
                Box::pin(async move {
                    if let Err(e) = sockets::apply(port) {
                        tracing::warn!(error = %e, "could not set TCP options on database connections");
                    }
                    Ok(())
                })
            })
            .connect_lazy_with(connect_options.clone());
        let service = application_name.to_owned();
        let breaker = CircuitBreaker::with_observer(breaker, move |state| {
            metrics.record_breaker_transition(state);
            match state {
                BreakerState::Open => tracing::warn!(%service, "database circuit breaker opened"),
                BreakerState::HalfOpen => {
                    tracing::info!(%service, "database circuit breaker half-open: trying")
                }
                BreakerState::Closed => {
                    tracing::info!(%service, "database circuit breaker closed: database usable again")
                }
            }
        });
        Ok(Self {
            service: application_name.to_owned(),
            pool,
            url: cfg.database_url.clone(),
            connect_options,
            acquire_timeout: cfg.db_acquire_timeout,
            breaker,
            status: RwLock::new(DbStatus::unchecked()),
        })
    }

    /// The pool itself, bypassing the breaker: for migrations, tests and background jobs that
    /// have their own back-off.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// Runs `work` unless the breaker is open; its availability failures count against the breaker.
    pub async fn guarded<T, F, Fut>(&self, work: F) -> Result<T, DbError>
    where
        F: FnOnce(PgPool) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let permit = self.breaker.acquire()?;
        let result = work(self.pool.clone()).await;
        let healthy = match &result {
            Ok(_) => true,
            Err(e) => !is_unavailable(e),
        };
        self.breaker.record(permit, healthy);
        Ok(result?)
    }

    /// A connection, through the breaker: fails fast with [`DbError::Unavailable`] while it is open.
    /// Only failing to get one counts against the breaker; a query that fails later is the
    /// caller's to judge.
    pub async fn acquire(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>, DbError> {
        self.guarded(|pool| async move { pool.acquire().await })
            .await
    }

    /// A transaction, through the breaker.
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, DbError> {
        self.guarded(|pool| async move { pool.begin().await }).await
    }

    /// Checks the database end to end and remembers the verdict for health reports. The probe is
    /// also the breaker's trial once the cooldown has passed, so the breaker closes again on its own
    /// when the database comes back, even with no traffic.
    #[tracing::instrument(name = "db.probe", skip_all)]
    pub async fn probe(&self) -> DbStatus {
        let permit = self.breaker.acquire().ok();
        let started = Instant::now();
        // The pool retries a refused connection until its acquire timeout, which would make each
        // failed probe take seconds and the breaker slow to open. A pool that cannot hand over a
        // connection quickly is told apart from a saturated one by `diagnose`'s direct attempt.
        let pool_wait = self.acquire_timeout.min(PROBE_POOL_WAIT);
        let outcome = tokio::time::timeout(pool_wait, async {
            let mut conn = self.pool.acquire().await?;
            sqlx::query("select 1").execute(&mut *conn).await
        })
        .await
        .unwrap_or(Err(sqlx::Error::PoolTimedOut));
        let latency = started.elapsed();

        let status = match outcome {
            Ok(_) => DbStatus {
                connected: true,
                error_type: None,
                error_message: None,
                fix: None,
                latency_ms: Some(latency.as_secs_f64() * 1000.0),
            },
            Err(err) => self.diagnose(err).await,
        };
        if let Some(permit) = permit {
            self.breaker.record(permit, status.connected);
        }
        let previous = self.status();
        if previous.connected != status.connected || previous.error_type != status.error_type {
            match (&status.error_type, &status.error_message) {
                (Some(kind), Some(message)) => tracing::warn!(
                    service = %self.service,
                    error_type = kind.as_str(),
                    error = %message,
                    "database unreachable"
                ),
                _ => tracing::info!(service = %self.service, "database connected"),
            }
        }
        *self.status.write().unwrap_or_else(|e| e.into_inner()) = status.clone();
        status
    }

    /// The pool only says "timed out" when it cannot connect; a direct connection attempt tells
    /// refused from unresolvable from wrong password, and a busy pool from a dead server.
    async fn diagnose(&self, err: sqlx::Error) -> DbStatus {
        let saturated = |latency: Duration| DbStatus {
            connected: true,
            error_type: None,
            error_message: None,
            fix: None,
            latency_ms: Some(latency.as_secs_f64() * 1000.0),
        };
        let err = if matches!(err, sqlx::Error::PoolTimedOut) {
            let stats = self.pool_stats();
            if stats.size >= stats.max && stats.idle == 0 {
                // Every connection is open and busy: the server is answering our queries. Asking
                // it for one more would only add to its load (or be refused for lack of slots).
                return saturated(Duration::ZERO);
            }
            let started = Instant::now();
            match tokio::time::timeout(
                self.acquire_timeout,
                PgConnection::connect_with(&self.connect_options),
            )
            .await
            {
                Ok(Ok(conn)) => {
                    let _ = conn.close().await;
                    // The server answers; only our pool is saturated, which health shows as
                    // utilization, not as an outage.
                    return saturated(started.elapsed());
                }
                Ok(Err(direct)) => direct,
                Err(_) => sqlx::Error::PoolTimedOut,
            }
        } else {
            err
        };
        // "too many connections" (53300): up and answering, only out of connection slots.
        if matches!(&err, sqlx::Error::Database(e) if e.code().as_deref() == Some("53300")) {
            return saturated(Duration::ZERO);
        }
        let kind = classify(&err);
        DbStatus {
            connected: false,
            error_type: Some(kind),
            error_message: Some(self.url.scrub(&error_chain(&err))),
            fix: Some(kind.fix()),
            latency_ms: None,
        }
    }

    /// The last probe's verdict (cheap: health endpoints call this on every request).
    pub fn status(&self) -> DbStatus {
        self.status
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn pool_stats(&self) -> PoolStats {
        let size = self.pool.size();
        let idle = u32::try_from(self.pool.num_idle())
            .unwrap_or(u32::MAX)
            .min(size);
        let max = self.pool.options().get_max_connections();
        let in_use = size - idle;
        PoolStats {
            size,
            idle,
            in_use,
            max,
            utilization: if max == 0 {
                0.0
            } else {
                f64::from(in_use) / f64::from(max)
            },
        }
    }

    /// Closes the pool, waiting at most `grace` for connections still checked out.
    pub async fn close(&self, grace: Duration) {
        if tokio::time::timeout(grace, self.pool.close())
            .await
            .is_err()
        {
            tracing::warn!(service = %self.service, "database connections still busy at shutdown; closing anyway");
        }
    }
}
