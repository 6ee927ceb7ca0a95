use clap::Parser as _;
use leadflow_platform::{shutdown, telemetry};
use leadflow_scorer::ScorerConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ScorerConfig::parse();
    let _telemetry = telemetry::init(leadflow_scorer::SERVICE, &config.platform.telemetry)?;
    let server = leadflow_scorer::build(config, shutdown::on_signals()).await?;
    tracing::info!(addr = %server.local_addr(), "scorer listening");
    server.run_until_stopped().await
}
