//! The gateway binary and library against this machine's real PostgreSQL and NATS.

mod access;
mod auth;
mod changes;
mod corpus;
mod helpers;
mod hostile;
mod http;
mod leads;
mod notifier;
mod openapi;
mod scores;
mod startup;
mod tracking;
