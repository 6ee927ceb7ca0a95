//! In-memory rate limits (GCRA, from governor): login and register per client address and per
//! account, and a general per-token API limit. Per process: with N gateways the effective limit
//! is up to N times higher, which still stops guessing at scale (see README).

use std::{hash::Hash, net::IpAddr, time::Duration};

use governor::{
    DefaultKeyedRateLimiter, Quota,
    clock::{Clock as _, DefaultClock},
};
use uuid::Uuid;

use crate::{config::RateSpec, error::ApiError};

pub struct Limiter<K: Hash + Eq + Clone> {
    inner: DefaultKeyedRateLimiter<K>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub fn new(spec: RateSpec) -> Self {
        // `count` attempts at once, refilled one by one over `period`.
        let quota = Quota::with_period(spec.period / spec.count.get())
            .unwrap_or_else(|| Quota::per_second(spec.count))
            .allow_burst(spec.count);
        Self {
            inner: DefaultKeyedRateLimiter::keyed(quota),
        }
    }

    pub fn check(&self, key: &K) -> Result<(), ApiError> {
        self.inner
            .check_key(key)
            .map_err(|not_until| ApiError::RateLimited {
                retry_after: not_until
                    .wait_time_from(DefaultClock::default().now())
                    .max(Duration::from_millis(1)),
            })
    }

    /// Forgets keys that are back to a full bucket, so memory stays bounded.
    pub fn shrink(&self) {
        self.inner.retain_recent();
        self.inner.shrink_to_fit();
    }
}

pub struct RateLimits {
    pub login_per_ip: Limiter<IpAddr>,
    pub login_per_account: Limiter<String>,
    pub api_per_token: Limiter<Uuid>,
}

impl RateLimits {
    pub fn shrink(&self) {
        self.login_per_ip.shrink();
        self.login_per_account.shrink();
        self.api_per_token.shrink();
    }
}
