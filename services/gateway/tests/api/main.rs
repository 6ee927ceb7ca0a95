//! The gateway binary and library against this machine's real PostgreSQL and NATS.

mod helpers;
mod startup;
