//! `leadflow up`: migrate, then gateway, scorer and notifier in one process, each on its own port,
//! sharing one shutdown.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context as _;
use leadflow_gateway::{GatewayConfig, config::GatewayArgs};
use leadflow_notifier::{NotifierArgs, NotifierConfig, SharedArgs};
use leadflow_platform::{
    config::{DatabaseConfig, PlatformConfig},
    db, shutdown, telemetry,
};
use leadflow_scorer::{ScorerArgs, ScorerConfig};

use crate::jwt_secret;

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    #[command(flatten)]
    platform: PlatformConfig,
    #[command(flatten)]
    gateway: GatewayArgs,
    #[command(flatten)]
    scorer: ScorerArgs,
    #[command(flatten)]
    notifier: NotifierArgs,
    /// Where `leadflow up` keeps what must survive restarts (the generated JWT secret).
    #[arg(long, env = "LEADFLOW_STATE_DIR", default_value = ".leadflow")]
    state_dir: PathBuf,
}

pub async fn run(mut args: UpArgs) -> anyhow::Result<()> {
    let _telemetry = telemetry::init("leadflow", &args.platform.telemetry)?;

    let (secret, source) = jwt_secret::resolve(args.gateway.jwt_secret.take(), &args.state_dir)?;
    args.gateway.jwt_secret = Some(secret.clone());
    match source {
        jwt_secret::Source::Generated(path) => println!(
            "Generated a JWT secret in {} (kept, so restarts keep sessions; set JWT_SECRET to use your own).",
            path.display()
        ),
        jwt_secret::Source::Stored(path) => {
            println!("Using the JWT secret kept in {}.", path.display())
        }
        jwt_secret::Source::Environment => {}
    }

    migrate_or_explain(&args.platform.database).await?;

    let token = shutdown::on_signals();
    let allowed_origins = args.gateway.allowed_origins.clone();
    let gateway = leadflow_gateway::build(
        GatewayConfig {
            platform: args.platform.clone(),
            gateway: args.gateway,
        },
        token.clone(),
    )
    .await
    .context("starting the gateway")?;
    let scorer = leadflow_scorer::build(
        ScorerConfig {
            platform: args.platform.clone(),
            scorer: args.scorer,
        },
        token.clone(),
    )
    .await
    .context("starting the scorer")?;
    let notifier = leadflow_notifier::build(
        NotifierConfig {
            platform: args.platform,
            notifier: args.notifier,
            // The notifier verifies the gateway's tokens and serves the same web app.
            shared: SharedArgs {
                jwt_secret: Some(secret),
                allowed_origins,
            },
        },
        token.clone(),
    )
    .await
    .context("starting the notifier")?;

    let gateway_url = browsable(gateway.local_addr());
    println!(
        "\nleadflow is up.\n  gateway   {gateway_url}  (REST API)\n  scorer    {}/health\n  notifier  {}/health\n\nNext: open {gateway_url}/health to see the database, NATS and breaker state, then create an admin:\n  cargo run --release -- admin create --email you@example.com --password 'choose-a-long-one'\nStop with Ctrl-C; in-flight work finishes first.\n",
        browsable(scorer.local_addr()),
        browsable(notifier.local_addr()),
    );

    let (g, s, n) = tokio::join!(
        gateway.run_until_stopped(),
        scorer.run_until_stopped(),
        notifier.run_until_stopped()
    );
    g.and(s).and(n)
}

/// `0.0.0.0:8080` is where we listen; `http://127.0.0.1:8080` is what a person can open.
fn browsable(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("http://127.0.0.1:{}", addr.port())
    } else {
        format!("http://{addr}")
    }
}

/// Migrates, and when the database cannot be reached says why and what to do about it.
pub async fn migrate_or_explain(database: &DatabaseConfig) -> anyhow::Result<()> {
    let url = &database.database_url;
    db::migrate(url).await.map_err(|err| {
        match err.chain().find_map(|e| e.downcast_ref::<sqlx::Error>()) {
            Some(cause) => {
                let kind = db::classify(cause);
                let explanation = format!(
                    "cannot prepare the database at {url} ({}). {}",
                    kind.as_str(),
                    kind.fix()
                );
                err.context(explanation)
            }
            None => err,
        }
    })
}
