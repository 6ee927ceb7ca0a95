//! The workspace's end-to-end tests: the services and the `leadflow` command against this
//! machine's real PostgreSQL, each test in its own database. Tests that run the services start a
//! `nats-server` of their own (`processes::NatsServer`), so they may kill or pause it; the `cli`
//! tests use the machine's NATS, in a namespace of their own.

mod cli;
mod cluster;
mod deploy;
mod faults;
mod health;
mod helpers;
mod processes;
mod scale_out;
mod tracking;
