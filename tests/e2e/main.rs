//! The workspace's end-to-end tests: the services and the `leadflow` command against this
//! machine's real PostgreSQL and NATS, each test in its own database and NATS namespace.

mod cli;
mod cluster;
mod deploy;
mod faults;
mod health;
mod helpers;
mod processes;
mod scale_out;
mod tracking;
