use clap::Parser as _;
use leadflow_notifier::NotifierConfig;
use leadflow_platform::{shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = NotifierConfig::parse();
    let _telemetry = telemetry::init(leadflow_notifier::SERVICE, &config.platform.telemetry)?;
    let server = leadflow_notifier::build(config, shutdown::on_signals()).await?;
    tracing::info!(addr = %server.local_addr(), "notifier listening");
    server.run_until_stopped().await
}
