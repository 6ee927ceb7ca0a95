use std::{
    future::Future,
    sync::{Arc, OnceLock, RwLock},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    bus::{Bus, ConsumerSpec, ConsumerStats, NatsState},
    config::PlatformConfig,
    db::{BreakerState, Database},
    health::{self, Connectivity, DatabaseHealth, HealthReport, NatsHealth},
    metrics::Metrics,
    retry::backoff,
};

/// The shared parts of one running service, and the background tasks that keep its view of its
/// dependencies fresh.
pub struct Platform {
    pub service: &'static str,
    pub version: &'static str,
    pub config: PlatformConfig,
    pub metrics: Arc<Metrics>,
    pub db: Arc<Database>,
    pub bus: Arc<Bus>,
    consumers: Vec<ConsumerSpec>,
    consumer_stats: RwLock<Vec<ConsumerStats>>,
    health_sections: RwLock<serde_json::Map<String, serde_json::Value>>,
    started: Instant,
    shutdown: CancellationToken,
    /// When shutdown began: every step of it shares one `SHUTDOWN_TIMEOUT` from then.
    shutdown_began: Arc<OnceLock<Instant>>,
    tasks: TaskTracker,
}

impl Platform {
    /// Connects lazily: neither PostgreSQL nor NATS has to be up for this to succeed. Background
    /// tasks probe the database, set up streams and `consumers` once NATS is reachable, and keep
    /// health current until `shutdown` is cancelled.
    pub async fn start(
        service: &'static str,
        config: &PlatformConfig,
        consumers: Vec<ConsumerSpec>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        let metrics = Arc::new(Metrics::new(service).context("registering metrics")?);
        let db = Database::new(&config.database, &config.breaker, service, metrics.clone())
            .context("reading DATABASE_URL")?;
        let bus = Bus::connect(&config.nats, service)
            .await
            .context("configuring the NATS client (NATS_URL)")?;
        let platform = Arc::new(Self {
            service,
            version: env!("CARGO_PKG_VERSION"),
            config: config.clone(),
            metrics,
            db: Arc::new(db),
            bus: Arc::new(bus),
            consumers,
            consumer_stats: RwLock::new(Vec::new()),
            health_sections: RwLock::new(serde_json::Map::new()),
            started: Instant::now(),
            shutdown: shutdown.clone(),
            shutdown_began: Arc::new(OnceLock::new()),
            tasks: TaskTracker::new(),
        });
        let began = platform.shutdown_began.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            let _ = began.set(Instant::now());
        });
        platform.spawn(probe_database(platform.clone()));
        platform.spawn(watch_nats(platform.clone()));
        Ok(platform)
    }

    /// Runs `task` in the background; [`Platform::close`] waits for it. Tasks must watch
    /// [`Platform::shutdown_token`] and return once the work in hand is done.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task);
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub fn report(&self) -> HealthReport {
        let database = DatabaseHealth::new(self.db.status(), self.db.pool_stats());
        let circuit_breaker = self.db.breaker().snapshot();
        let setup_error = self.bus.setup_error();
        let nats = NatsHealth {
            status: self.bus.state(),
            url: self.bus.url_redacted(),
            streams_ready: setup_error.is_none(),
            setup_error,
        };
        let consumers = self
            .consumer_stats
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (status, urgency) = health::assess(&database, circuit_breaker.state, &nats, &consumers);
        HealthReport {
            service: self.service.to_owned(),
            version: self.version,
            status,
            urgency,
            uptime_s: self.started.elapsed().as_secs(),
            database,
            circuit_breaker,
            nats,
            consumers,
            sections: self
                .health_sections
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    /// Adds or replaces a section of `/health.json` that only this service has. It must hold no
    /// secrets: health is public.
    pub fn set_health_section(&self, name: &str, value: serde_json::Value) {
        self.health_sections
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), value);
    }

    /// `Ok` when this instance should receive traffic; otherwise the reasons it should not.
    pub fn readiness(&self) -> Result<(), Vec<&'static str>> {
        let mut reasons = Vec::new();
        if self.shutdown.is_cancelled() {
            reasons.push("shutting down");
        }
        if !self.db.status().connected {
            reasons.push("database unreachable");
        }
        if self.db.breaker().state() == BreakerState::Open {
            reasons.push("database circuit breaker open");
        }
        if self.bus.state() != NatsState::Connected {
            reasons.push("NATS unreachable");
        } else if self.bus.setup_error().is_some() {
            reasons.push("JetStream streams not set up");
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }

    /// The Prometheus text format, with gauges brought up to date first.
    pub fn render_metrics(&self) -> Result<String, prometheus::Error> {
        self.metrics.set_pool(self.db.pool_stats());
        self.metrics.set_breaker_state(self.db.breaker().state());
        self.metrics.db_up.set(i64::from(
            self.report().database.status == Connectivity::Connected,
        ));
        self.metrics
            .nats_up
            .set(i64::from(self.bus.state() == NatsState::Connected));
        self.metrics.render()
    }

    /// Time left of `SHUTDOWN_TIMEOUT`, counted from when shutdown began.
    pub fn shutdown_time_left(&self) -> Duration {
        let began = self
            .shutdown_began
            .get()
            .copied()
            .unwrap_or_else(Instant::now);
        self.config.shutdown_timeout.saturating_sub(began.elapsed())
    }

    /// After the servers stopped: waits for background tasks to finish what they hold, flushes
    /// NATS and closes the pool, all within what is left of `SHUTDOWN_TIMEOUT` (with at least a
    /// second each to flush and close, so a late shutdown still does not drop buffered messages).
    pub async fn close(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(self.shutdown_time_left(), self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                service = self.service,
                "background tasks did not stop in time"
            );
        }
        let flush = self.shutdown_time_left().max(Duration::from_secs(1));
        if tokio::time::timeout(flush, self.bus.close()).await.is_err() {
            tracing::warn!(service = self.service, "NATS did not drain in time");
        }
        self.db
            .close(self.shutdown_time_left().max(Duration::from_secs(1)))
            .await;
    }
}

async fn probe_database(platform: Arc<Platform>) {
    let token = platform.shutdown_token();
    loop {
        platform.db.probe().await;
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(platform.config.health_probe_interval) => {}
        }
    }
}

/// Sets up streams and consumers as soon as NATS answers (again after an outage, in case the
/// server lost its state), then refreshes consumer lag for health and metrics.
async fn watch_nats(platform: Arc<Platform>) {
    let token = platform.shutdown_token();
    let mut delays = backoff();
    let mut was_connected = false;
    loop {
        let connected = platform.bus.state() == NatsState::Connected;
        if connected && !was_connected {
            // A server that restarted may have lost its streams: check them again on every reconnect.
            platform.bus.mark_topology_stale();
        }
        was_connected = connected;
        let pause = if !connected {
            delays
                .next()
                .unwrap_or(platform.config.health_probe_interval)
        } else if platform.bus.setup_error().is_some() {
            match platform.bus.ensure_topology(&platform.consumers).await {
                Ok(()) => {
                    tracing::info!(
                        service = platform.service,
                        "JetStream streams and consumers ready"
                    );
                    delays = backoff();
                    std::time::Duration::ZERO
                }
                Err(e) => {
                    tracing::warn!(error = %crate::error_chain(&*e), "setting up JetStream streams failed; retrying");
                    delays
                        .next()
                        .unwrap_or(platform.config.health_probe_interval)
                }
            }
        } else {
            refresh_consumer_stats(&platform).await;
            platform.config.health_probe_interval
        };
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

async fn refresh_consumer_stats(platform: &Platform) {
    if platform.consumers.is_empty() {
        return;
    }
    match platform.bus.consumer_stats(&platform.consumers).await {
        Ok(stats) => {
            for c in &stats {
                let pending = i64::try_from(c.pending).unwrap_or(i64::MAX);
                let ack_pending = i64::try_from(c.ack_pending).unwrap_or(i64::MAX);
                platform
                    .metrics
                    .consumer_pending
                    .with_label_values(&[&c.name])
                    .set(pending);
                platform
                    .metrics
                    .consumer_ack_pending
                    .with_label_values(&[&c.name])
                    .set(ack_pending);
            }
            *platform
                .consumer_stats
                .write()
                .unwrap_or_else(|e| e.into_inner()) = stats;
        }
        Err(e) => {
            // A consumer or stream went missing (e.g. NATS restarted without its store): set up again.
            tracing::warn!(error = %crate::error_chain(&*e), "reading consumer state failed; re-creating topology");
            let _ = platform.bus.ensure_topology(&platform.consumers).await;
        }
    }
}
