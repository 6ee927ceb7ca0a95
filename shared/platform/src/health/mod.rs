//! The health report of DESIGN.md §6, and the rule that turns its parts into a status and urgency.

mod html;

use serde::Serialize;

pub use html::render_html;

use crate::{
    bus::{ConsumerStats, NatsState},
    db::{BreakerSnapshot, BreakerState, DbStatus, ErrorType, PoolStats},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Degraded,
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Urgency {
    Low,
    Medium,
    High,
    Critical,
}

/// `/health.json`.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub service: String,
    pub version: &'static str,
    pub status: Status,
    pub urgency: Urgency,
    pub uptime_s: u64,
    pub database: DatabaseHealth,
    pub circuit_breaker: BreakerSnapshot,
    pub nats: NatsHealth,
    pub consumers: Vec<ConsumerStats>,
    /// Service-specific sections (e.g. the notifier's `smtp` and `webhooks`), set with
    /// `Platform::set_health_section`.
    #[serde(flatten)]
    pub sections: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatabaseHealth {
    pub status: Connectivity,
    pub error_type: Option<ErrorType>,
    pub error_message: Option<String>,
    /// What to do about `error_type`, in plain words.
    pub fix: Option<&'static str>,
    pub latency_ms: Option<f64>,
    pub pool: PoolStats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Connectivity {
    Connected,
    Disconnected,
}

#[derive(Debug, Clone, Serialize)]
pub struct NatsHealth {
    pub status: NatsState,
    /// The server URL(s), credentials removed.
    pub url: String,
    /// Whether streams and durable consumers exist; `setup_error` says why not.
    pub streams_ready: bool,
    pub setup_error: Option<String>,
}

impl DatabaseHealth {
    pub fn new(status: DbStatus, pool: PoolStats) -> Self {
        Self {
            status: if status.connected {
                Connectivity::Connected
            } else {
                Connectivity::Disconnected
            },
            error_type: status.error_type,
            error_message: status.error_message,
            fix: status.fix,
            latency_ms: status.latency_ms,
            pool,
        }
    }
}

/// Consumer lag above which a service is degraded: work is piling up faster than it is done.
pub const LAG_WARNING: u64 = 10_000;

/// The worst of each part decides. The database is what every request needs, so losing it is
/// `down`/`critical`; NATS loss delays events but loses none (outbox), so it is `degraded`/`high`.
pub fn assess(
    database: &DatabaseHealth,
    breaker: BreakerState,
    nats: &NatsHealth,
    consumers: &[ConsumerStats],
) -> (Status, Urgency) {
    let mut verdict = (Status::Ok, Urgency::Low);
    let mut worsen = |status: Status, urgency: Urgency| {
        if urgency > verdict.1 {
            verdict.1 = urgency;
        }
        let rank = |s: Status| match s {
            Status::Ok => 0,
            Status::Degraded => 1,
            Status::Down => 2,
        };
        if rank(status) > rank(verdict.0) {
            verdict.0 = status;
        }
    };
    if database.status == Connectivity::Disconnected {
        worsen(Status::Down, Urgency::Critical);
    }
    match breaker {
        BreakerState::Open => worsen(Status::Degraded, Urgency::High),
        BreakerState::HalfOpen => worsen(Status::Degraded, Urgency::Medium),
        BreakerState::Closed => {}
    }
    if nats.status != NatsState::Connected {
        worsen(Status::Degraded, Urgency::High);
    } else if !nats.streams_ready {
        worsen(Status::Degraded, Urgency::Medium);
    }
    if database.pool.utilization >= 0.9 {
        worsen(Status::Degraded, Urgency::Medium);
    } else if database.pool.utilization >= 0.75 {
        worsen(Status::Ok, Urgency::Medium);
    }
    if consumers.iter().any(|c| c.pending >= LAG_WARNING) {
        worsen(Status::Degraded, Urgency::Medium);
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(connected: bool, utilization: f64) -> DatabaseHealth {
        DatabaseHealth {
            status: if connected {
                Connectivity::Connected
            } else {
                Connectivity::Disconnected
            },
            error_type: None,
            error_message: None,
            fix: None,
            latency_ms: None,
            pool: PoolStats {
                size: 10,
                idle: 0,
                in_use: 10,
                max: 10,
                utilization,
            },
        }
    }

    fn nats(status: NatsState) -> NatsHealth {
        NatsHealth {
            status,
            url: String::new(),
            streams_ready: true,
            setup_error: None,
        }
    }

    #[test]
    fn all_well_is_ok_and_low() {
        let verdict = assess(
            &db(true, 0.1),
            BreakerState::Closed,
            &nats(NatsState::Connected),
            &[],
        );
        assert_eq!(verdict, (Status::Ok, Urgency::Low));
    }

    #[test]
    fn losing_the_database_is_down_and_critical_whatever_else_holds() {
        let verdict = assess(
            &db(false, 0.0),
            BreakerState::Open,
            &nats(NatsState::Disconnected),
            &[],
        );
        assert_eq!(verdict, (Status::Down, Urgency::Critical));
    }

    #[test]
    fn losing_nats_or_a_saturated_pool_degrades() {
        let no_nats = assess(
            &db(true, 0.1),
            BreakerState::Closed,
            &nats(NatsState::Disconnected),
            &[],
        );
        assert_eq!(no_nats, (Status::Degraded, Urgency::High));
        let busy = assess(
            &db(true, 0.95),
            BreakerState::Closed,
            &nats(NatsState::Connected),
            &[],
        );
        assert_eq!(busy, (Status::Degraded, Urgency::Medium));
        let lag = [ConsumerStats {
            name: "c".into(),
            pending: LAG_WARNING,
            ack_pending: 0,
            redelivered: 0,
        }];
        let lagging = assess(
            &db(true, 0.1),
            BreakerState::Closed,
            &nats(NatsState::Connected),
            &lag,
        );
        assert_eq!(lagging, (Status::Degraded, Urgency::Medium));
    }
}
