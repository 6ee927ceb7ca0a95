//! What every leadflow service stands on: configuration, telemetry, metrics, the database pool
//! behind its circuit breaker, NATS and JetStream, the outbox relay, health reporting, the HTTP
//! server and graceful shutdown. A service builds a [`Platform`], adds its routes and workers, and
//! runs it with [`http::serve`].

// Every service binary links this crate, so one allocator serves them all: glibc malloc and free
// were a fifth of the gateway's user time under load, and with mimalloc it accepts more
// (docs/benchmarks.md, session 8).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod access;
pub mod bus;
pub mod config;
pub mod consume;
pub mod db;
pub mod health;
pub mod http;
pub mod long_lived;
pub mod metrics;
pub mod outbox;
mod platform;
pub mod problem;
pub mod retry;
mod server;
pub mod shutdown;
pub mod telemetry;

pub use platform::Platform;

/// "outer: inner: innermost", so the root cause is not lost behind a generic wrapper when an
/// error is logged or shown.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
pub use server::Server;
