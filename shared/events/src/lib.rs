//! The event contract of DESIGN.md §2: the envelope every NATS message carries, the streams and
//! subjects, and the namespace that lets several deployments (and parallel tests) share one server.
//!
//! Pure data: serde only, no I/O, so every service and test can depend on it cheaply.

mod envelope;
mod namespace;

pub use envelope::{Envelope, EnvelopeError};
pub use namespace::{Namespace, NamespaceError, Stream};

/// Subjects of domain events (stream `DOMAIN`), without the namespace prefix.
pub mod subjects {
    pub const LEADS_CREATED: &str = "leads.created";
    pub const LEADS_UPDATED: &str = "leads.updated";
    pub const LEADS_DELETED: &str = "leads.deleted";
    pub const ASSIGNMENTS_CREATED: &str = "assignments.created";
    pub const ASSIGNMENTS_TRANSFERRED: &str = "assignments.transferred";
    pub const ASSIGNMENTS_COMPLETED: &str = "assignments.completed";
    pub const NOTES_CREATED: &str = "notes.created";
    pub const SCORES_UPDATED: &str = "scores.updated";
    /// Prefix of engagement subjects (stream `ENGAGEMENT`): `engagement.<type>`.
    pub const ENGAGEMENT_PREFIX: &str = "engagement";
    /// Request/reply subject the gateway uses to ask the scorer for a fresh score.
    pub const RESCORE: &str = "scorer.rescore";
    /// Where a message goes after `max_deliver` failed attempts: `deadletter.<original subject>`.
    pub const DEAD_LETTER_PREFIX: &str = "deadletter";
}
