use clap::Parser as _;
use leadflow_gateway::GatewayConfig;
use leadflow_platform::{shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = GatewayConfig::parse();
    let _telemetry = telemetry::init(leadflow_gateway::SERVICE, &config.platform.telemetry)?;
    let server = leadflow_gateway::build(config, shutdown::on_signals()).await?;
    tracing::info!(addr = %server.local_addr(), "gateway listening");
    server.run_until_stopped().await
}
