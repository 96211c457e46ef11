//! Retry policy: exponential backoff with jitter, capped.

use std::time::Duration;

/// How often and how patiently a delivery is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the first retry (before jitter).
    pub base: Duration,
    /// Largest delay between two attempts (before jitter).
    pub cap: Duration,
    /// Attempts in one round before the delivery is dead.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(10),
            cap: Duration::from_secs(3600),
            max_attempts: 6,
        }
    }
}

impl RetryPolicy {
    /// The ceiling `d = min(cap, base·2^(n−1))` after failed attempt `n` (1-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(40);
        let factor = 1u64 << exp;
        let base_ms = self.base.as_millis() as u64;
        Duration::from_millis(base_ms.saturating_mul(factor)).min(self.cap)
    }

    /// The delay after failed attempt `n`: uniform in `[d/2, d]`, where `unit` is a
    /// uniform draw from `[0, 1]` (passed in so the policy stays deterministic).
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let d = self.ceiling(attempt).as_millis() as f64;
        let unit = unit.clamp(0.0, 1.0);
        Duration::from_millis((d / 2.0 + unit * d / 2.0).round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy::default();
        assert_eq!(p.ceiling(1), Duration::from_secs(10));
        assert_eq!(p.ceiling(2), Duration::from_secs(20));
        assert_eq!(p.ceiling(5), Duration::from_secs(160));
        assert_eq!(p.ceiling(10), Duration::from_secs(3600));
        assert_eq!(p.ceiling(1000), Duration::from_secs(3600));
        assert_eq!(p.delay(1, 0.0), Duration::from_secs(5));
        assert_eq!(p.delay(1, 1.0), Duration::from_secs(10));
        assert_eq!(p.delay(3, 0.5), Duration::from_secs(30));
    }
}
