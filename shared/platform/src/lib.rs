//! What every leadflow service stands on: configuration, telemetry, metrics, the database pool
//! behind its circuit breaker, NATS and JetStream, the outbox relay, health reporting, the HTTP
//! server and graceful shutdown. A service builds a [`Platform`], adds its routes and workers, and
//! runs it with [`http::serve`].

pub mod bus;
pub mod config;
pub mod db;
pub mod health;
pub mod http;
pub mod metrics;
pub mod outbox;
mod platform;
pub mod problem;
mod server;
pub mod shutdown;
pub mod telemetry;

pub use platform::Platform;
pub use server::Server;
