//! The platform against the real PostgreSQL and NATS of this machine.

mod consumers;
mod database;
mod lanes;
mod long_lived;
mod outbox;
mod server;

use leadflow_platform::config::PlatformConfig;

/// Configuration for a test: the given database and NATS, a private namespace, short timings.
pub fn config(
    database_url: &str,
    nats_url: &str,
    namespace: &str,
    extra: &[&str],
) -> PlatformConfig {
    let mut args = vec![
        "--database-url",
        database_url,
        "--nats-url",
        nats_url,
        "--leadflow-namespace",
        namespace,
        "--db-acquire-timeout",
        "1s",
        "--health-probe-interval",
        "200ms",
        "--nats-ack-timeout",
        "1s",
        "--shutdown-timeout",
        "5s",
    ];
    args.extend_from_slice(extra);
    PlatformConfig::try_from_args(args).expect("test configuration parses")
}

pub fn init_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        let telemetry = PlatformConfig::try_from_args::<_, &str>([])
            .expect("defaults")
            .telemetry;
        // The guard only flushes OTLP spans, which tests do not export.
        std::mem::forget(leadflow_platform::telemetry::init("test", &telemetry));
    }
}
