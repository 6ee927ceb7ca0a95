//! The gateway binary and library against this machine's real PostgreSQL and NATS.

mod access;
mod auth;
mod helpers;
mod leads;
mod startup;
