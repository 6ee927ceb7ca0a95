//! Deletes the JetStream streams of one namespace, for the benchmark scripts: each run starts from
//! empty streams, and none are left behind. Usage: `drop_streams NAMESPACE` (NATS at
//! `TEST_NATS_URL`, by default 127.0.0.1:4222).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let namespace = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: drop_streams NAMESPACE"))?;
    leadflow_testkit::drop_namespace(&namespace).await;
    Ok(())
}
