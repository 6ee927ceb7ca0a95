//! Exponential back-off with jitter, for every loop that waits for a dependency to come back.

use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};

/// 100 ms doubling to at most 5 s, each delay jittered so that many processes restarting together
/// do not retry in lock-step. Never ends; callers stop on shutdown or success.
pub fn backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_is_capped() {
        let delays: Vec<Duration> = backoff().take(12).collect();
        assert!(delays[0] < Duration::from_millis(250));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(10)));
        assert!(delays[11] >= Duration::from_secs(5), "{delays:?}");
    }
}
