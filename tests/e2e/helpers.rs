use std::time::Duration;

use leadflow_platform::{config::DatabaseUrl, db};
use leadflow_testkit::{TestDb, eventually, unique_namespace};
use serde_json::Value;

use crate::processes::{NatsServer, Service};

pub const JWT_SECRET: &str = "test-secret-that-is-long-enough-for-hs256-0123456789";
pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "an-admin-password-123";

/// A migrated test database with an admin (`ADMIN_EMAIL`, `ADMIN_PASSWORD`) and `leads` leads.
pub async fn seeded_db(leads: usize) -> (TestDb, sqlx::PgPool, Vec<uuid::Uuid>) {
    let db = TestDb::empty().await;
    let url: DatabaseUrl = db.url.parse().expect("url");
    db::migrate(&url).await.expect("migrate");
    let pool = sqlx::PgPool::connect(&db.url).await.expect("pool");
    let admin = leadflow_gateway::admin::NewAdmin::parse(
        ADMIN_EMAIL,
        ADMIN_PASSWORD.to_owned().into(),
        "Admin",
    )
    .expect("admin");
    leadflow_gateway::admin::upsert_admin(&pool, &admin)
        .await
        .expect("admin");
    let ids = sqlx::query_scalar(
        "insert into leads (first_name, email) select 'Lead', 'l' || i || '@example.com'
         from generate_series(1, $1) i returning id",
    )
    .bind(i32::try_from(leads).expect("lead count"))
    .fetch_all(&pool)
    .await
    .expect("leads");
    (db, pool, ids)
}

/// The three service binaries, each its own process on a free port, against one test database and
/// a `nats-server` of the stack's own.
pub struct Stack {
    pub gateway: String,
    pub scorer: String,
    pub notifier: String,
    pub namespace: String,
    pub db_url: String,
    pub nats: NatsServer,
    services: Vec<Service>,
    /// Dropped (with the database) when the stack is.
    _db: TestDb,
}

impl Stack {
    pub async fn start() -> Self {
        leadflow_testkit::show_logs();
        let db = TestDb::empty().await;
        let url: DatabaseUrl = db.url.parse().expect("url");
        db::migrate(&url).await.expect("migrate");
        let namespace = unique_namespace();
        let nats = NatsServer::start().await;
        let services: Vec<Service> = ["gateway", "scorer", "notifier"]
            .into_iter()
            .map(|name| {
                Service::start(
                    name,
                    &db.url,
                    &nats.url(),
                    &namespace,
                    &[("SHUTDOWN_TIMEOUT", "5s")],
                )
            })
            .collect();
        let stack = Self {
            gateway: services[0].base.clone(),
            scorer: services[1].base.clone(),
            notifier: services[2].base.clone(),
            namespace,
            db_url: db.url.clone(),
            nats,
            services,
            _db: db,
        };
        for base in stack.bases() {
            wait_until_healthy(base).await;
        }
        stack
    }

    pub fn bases(&self) -> [&str; 3] {
        [&self.gateway, &self.scorer, &self.notifier]
    }

    /// SIGTERM to each service, which must finish its in-flight work and exit cleanly.
    pub async fn stop(mut self) {
        for service in &mut self.services {
            service.terminate().await;
        }
    }
}

pub async fn get_json(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

/// Waits until the database and NATS are connected and the streams are set up.
pub async fn wait_until_healthy(base: &str) -> Value {
    let url = format!("{base}/health.json");
    eventually(
        Duration::from_secs(20),
        &format!("{url} to report healthy"),
        || async {
            // A process that has only just started may not be listening yet.
            let health: Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
            let ready = health["database"]["status"] == "connected"
                && health["nats"]["status"] == "connected"
                && health["nats"]["streams_ready"] == true;
            ready.then_some(health)
        },
    )
    .await
}
