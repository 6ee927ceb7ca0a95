//! A small circuit breaker for the database. When PostgreSQL is down, failing fast beats making
//! every request wait out the pool's acquire timeout, and it gives the server room to come back.
//!
//! closed --(N consecutive failures)--> open --(cooldown)--> half_open --(trial ok)--> closed
//!                                        ^------------------(trial fails)----'

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use serde::Serialize;
use time::OffsetDateTime;

use crate::config::BreakerConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// What `/health.json` shows under `circuit_breaker`.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerSnapshot {
    pub state: BreakerState,
    /// Consecutive failures counted so far (reset by a success).
    pub failures: u32,
    #[serde(with = "time::serde::rfc3339::option")]
    pub opened_at: Option<OffsetDateTime>,
}

/// Returned instead of running the call while the breaker is open.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the database circuit breaker is open; retry in {retry_after:?}")]
pub struct BreakerOpen {
    pub retry_after: Duration,
}

pub struct CircuitBreaker {
    threshold: u32,
    cooldown: Duration,
    inner: Mutex<Inner>,
    on_transition: Box<dyn Fn(BreakerState) + Send + Sync>,
}

struct Inner {
    state: BreakerState,
    failures: u32,
    opened: Option<(Instant, OffsetDateTime)>,
    /// In half-open, only one trial call runs at a time; the rest are rejected like in open.
    trial_in_flight: bool,
}

/// Permission to make one call; report how it went with [`CircuitBreaker::record`]. A trial
/// permit dropped unreported (its future was cancelled, say by a request timeout) counts as a
/// failed trial, so the breaker can never be left waiting for a trial that will not report.
#[must_use]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    trial: bool,
    reported: bool,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.trial && !self.reported {
            self.breaker.settle(true, false);
        }
    }
}

impl CircuitBreaker {
    pub fn new(cfg: &BreakerConfig) -> Self {
        Self::with_observer(cfg, |_| {})
    }

    /// `on_transition` is told every new state (for metrics and logs).
    pub fn with_observer(
        cfg: &BreakerConfig,
        on_transition: impl Fn(BreakerState) + Send + Sync + 'static,
    ) -> Self {
        Self {
            threshold: cfg.breaker_failure_threshold.max(1),
            cooldown: cfg.breaker_cooldown,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                failures: 0,
                opened: None,
                trial_in_flight: false,
            }),
            on_transition: Box::new(on_transition),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The state stays consistent even if a holder panicked: every update is a single assignment.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks to make a call. Open rejects until the cooldown has passed, then lets one trial through.
    pub fn acquire(&self) -> Result<Permit<'_>, BreakerOpen> {
        let permit = |trial| Permit {
            breaker: self,
            trial,
            reported: false,
        };
        let mut inner = self.lock();
        match inner.state {
            BreakerState::Closed => Ok(permit(false)),
            BreakerState::Open => {
                let elapsed = inner.opened.map_or(self.cooldown, |(at, _)| at.elapsed());
                if elapsed < self.cooldown {
                    return Err(BreakerOpen {
                        retry_after: self.cooldown - elapsed,
                    });
                }
                inner.state = BreakerState::HalfOpen;
                inner.trial_in_flight = true;
                drop(inner);
                (self.on_transition)(BreakerState::HalfOpen);
                Ok(permit(true))
            }
            BreakerState::HalfOpen if inner.trial_in_flight => Err(BreakerOpen {
                retry_after: Duration::from_millis(100),
            }),
            BreakerState::HalfOpen => {
                inner.trial_in_flight = true;
                Ok(permit(true))
            }
        }
    }

    /// Reports the outcome of a permitted call. Only failures that say the database is unusable
    /// should be reported as failures; a constraint violation is a success for the breaker.
    pub fn record(&self, mut permit: Permit<'_>, success: bool) {
        permit.reported = true;
        self.settle(permit.trial, success);
    }

    fn settle(&self, trial: bool, success: bool) {
        let mut inner = self.lock();
        if trial {
            inner.trial_in_flight = false;
        }
        let before = inner.state;
        if success {
            inner.failures = 0;
            if before != BreakerState::Closed && (trial || before == BreakerState::HalfOpen) {
                inner.state = BreakerState::Closed;
                inner.opened = None;
            }
        } else {
            inner.failures = inner.failures.saturating_add(1);
            let trip = trial || inner.failures >= self.threshold;
            if trip && before != BreakerState::Open {
                inner.state = BreakerState::Open;
                inner.opened = Some((Instant::now(), OffsetDateTime::now_utc()));
            } else if trip && trial {
                inner.opened = Some((Instant::now(), OffsetDateTime::now_utc()));
            }
        }
        let after = inner.state;
        drop(inner);
        if after != before {
            (self.on_transition)(after);
        }
    }

    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    pub fn snapshot(&self) -> BreakerSnapshot {
        let inner = self.lock();
        BreakerSnapshot {
            state: inner.state,
            failures: inner.failures,
            opened_at: inner.opened.map(|(_, at)| at),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn breaker(
        threshold: u32,
        cooldown_ms: u64,
    ) -> (CircuitBreaker, Arc<Mutex<Vec<BreakerState>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let cfg = BreakerConfig {
            breaker_failure_threshold: threshold,
            breaker_cooldown: Duration::from_millis(cooldown_ms),
        };
        let b = CircuitBreaker::with_observer(&cfg, move |s| log.lock().expect("log").push(s));
        (b, seen)
    }

    fn fail(b: &CircuitBreaker) {
        let permit = b.acquire().expect("permitted");
        b.record(permit, false);
    }

    #[test]
    fn opens_after_the_configured_consecutive_failures_only() {
        let (b, _) = breaker(3, 10_000);
        fail(&b);
        fail(&b);
        let ok = b.acquire().expect("still closed");
        b.record(ok, true); // a success resets the count
        fail(&b);
        fail(&b);
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b);
        assert_eq!(b.state(), BreakerState::Open);
        let snap = b.snapshot();
        assert_eq!(snap.failures, 3);
        assert!(snap.opened_at.is_some());
        let rejected = b.acquire().err().expect("open rejects");
        assert!(rejected.retry_after <= Duration::from_secs(10));
    }

    #[test]
    fn half_opens_after_cooldown_with_a_single_trial_and_closes_on_success() {
        let (b, seen) = breaker(1, 30);
        fail(&b);
        assert!(b.acquire().is_err());
        std::thread::sleep(Duration::from_millis(40));
        let trial = b.acquire().expect("trial after cooldown");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.acquire().is_err(), "only one trial at a time");
        b.record(trial, true);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.snapshot().failures, 0);
        assert_eq!(
            *seen.lock().expect("log"),
            vec![
                BreakerState::Open,
                BreakerState::HalfOpen,
                BreakerState::Closed
            ]
        );
    }

    #[test]
    fn a_trial_that_never_reports_reopens_instead_of_wedging_half_open() {
        let (b, _) = breaker(1, 20);
        fail(&b);
        std::thread::sleep(Duration::from_millis(30));
        let trial = b.acquire().expect("trial");
        drop(trial); // the caller's future was cancelled mid-call
        assert_eq!(b.state(), BreakerState::Open);
        std::thread::sleep(Duration::from_millis(30));
        let next = b.acquire().expect("a new trial after the next cooldown");
        b.record(next, true);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_failed_trial_reopens_for_a_whole_new_cooldown() {
        let (b, _) = breaker(2, 30);
        fail(&b);
        fail(&b);
        std::thread::sleep(Duration::from_millis(40));
        let trial = b.acquire().expect("trial");
        b.record(trial, false);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.acquire().is_err(), "cooldown restarted");
    }
}
