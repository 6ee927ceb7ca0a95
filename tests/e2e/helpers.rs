use std::time::Duration;

use clap::Parser as _;
use leadflow_platform::{config::DatabaseUrl, db};
use leadflow_testkit::{TestDb, eventually, unique_namespace};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::processes::NatsServer;

pub const JWT_SECRET: &str = "test-secret-that-is-long-enough-for-hs256-0123456789";

/// The three services, started in this process on free ports against one test database and a
/// `nats-server` of the stack's own.
pub struct Stack {
    pub gateway: String,
    pub scorer: String,
    pub notifier: String,
    pub namespace: String,
    pub db_url: String,
    pub nats: NatsServer,
    /// Dropped (with the database) when the stack is.
    _db: TestDb,
    token: CancellationToken,
    running: Vec<JoinHandle<anyhow::Result<()>>>,
}

fn common_args<'a>(db: &'a TestDb, nats_url: &'a str, namespace: &'a str) -> Vec<&'a str> {
    vec![
        "--database-url",
        &db.url,
        "--nats-url",
        nats_url,
        "--leadflow-namespace",
        namespace,
        "--health-probe-interval",
        "200ms",
        "--shutdown-timeout",
        "5s",
    ]
}

impl Stack {
    pub async fn start() -> Self {
        let db = TestDb::empty().await;
        let url: DatabaseUrl = db.url.parse().expect("url");
        db::migrate(&url).await.expect("migrate");
        let namespace = unique_namespace();
        let nats = NatsServer::start().await;
        let nats_url = nats.url();
        let token = CancellationToken::new();
        let common = common_args(&db, &nats_url, &namespace);

        let gateway_args: Vec<&str> = [
            "gateway",
            "--gateway-addr",
            "127.0.0.1:0",
            "--jwt-secret",
            JWT_SECRET,
        ]
        .into_iter()
        .chain(common.iter().copied())
        .collect();
        let gateway = leadflow_gateway::build(
            leadflow_gateway::GatewayConfig::try_parse_from(gateway_args).expect("gateway config"),
            token.clone(),
        )
        .await
        .expect("gateway starts");
        let scorer_args: Vec<&str> = ["scorer", "--scorer-addr", "127.0.0.1:0"]
            .into_iter()
            .chain(common.iter().copied())
            .collect();
        let scorer = leadflow_scorer::build(
            leadflow_scorer::ScorerConfig::try_parse_from(scorer_args).expect("scorer config"),
            token.clone(),
        )
        .await
        .expect("scorer starts");
        let notifier_args: Vec<&str> = [
            "notifier",
            "--notifier-addr",
            "127.0.0.1:0",
            "--jwt-secret",
            JWT_SECRET,
        ]
        .into_iter()
        .chain(common.iter().copied())
        .collect();
        let notifier = leadflow_notifier::build(
            leadflow_notifier::NotifierConfig::try_parse_from(notifier_args)
                .expect("notifier config"),
            token.clone(),
        )
        .await
        .expect("notifier starts");

        let gateway_url = format!("http://{}", gateway.local_addr());
        let scorer_url = format!("http://{}", scorer.local_addr());
        let notifier_url = format!("http://{}", notifier.local_addr());
        let running = vec![
            tokio::spawn(gateway.run_until_stopped()),
            tokio::spawn(scorer.run_until_stopped()),
            tokio::spawn(notifier.run_until_stopped()),
        ];
        let stack = Self {
            gateway: gateway_url,
            scorer: scorer_url,
            notifier: notifier_url,
            namespace,
            db_url: db.url.clone(),
            nats,
            _db: db,
            token,
            running,
        };
        for base in stack.bases() {
            wait_until_healthy(base).await;
        }
        stack
    }

    pub fn bases(&self) -> [&str; 3] {
        [&self.gateway, &self.scorer, &self.notifier]
    }

    pub async fn stop(self) {
        self.token.cancel();
        for task in self.running {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("service stops in time")
                .expect("task")
                .expect("clean stop");
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
            let (_, health) = get_json(&url).await;
            let ready = health["database"]["status"] == "connected"
                && health["nats"]["status"] == "connected"
                && health["nats"]["streams_ready"] == true;
            ready.then_some(health)
        },
    )
    .await
}
