//! The delivery state machine, in one place, as a pure function.
//!
//! ```text
//!             claim (lease)            2xx
//!  pending ───────────────▶ in_flight ─────▶ succeeded ──┐
//!     ▲  ▲                    │   │                       │ redrive
//!     │  └── failure, budget ─┘   │ failure, budget spent │ (fresh budget,
//!     │      left (retry at)      ▼   or 410 Gone         │  history kept)
//!     │                          dead ◀───────────────────┘
//!     └──── lease expired (worker died): rescued back to pending
//!     └──── redrive ◀── dead
//! ```
//! `pending` with no `next_attempt_at` is *held*: its endpoint is paused (or its
//! circuit is open) and no attempt is spent until it resumes.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::retry::RetryPolicy;

/// What one attempt on the wire came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered 2xx.
    Delivered {
        /// The HTTP status.
        status: u16,
    },
    /// Any other status, a timeout, or a connection error.
    Failed {
        /// The HTTP status, when the receiver answered at all.
        status: Option<u16>,
        /// Short, secret-free description of the failure.
        error: String,
        /// A `Retry-After` the receiver asked for (429/502/503/504 only).
        retry_after: Option<Duration>,
    },
}

impl Outcome {
    /// The HTTP status, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            Outcome::Delivered { status } => Some(*status),
            Outcome::Failed { status, .. } => *status,
        }
    }
    /// Whether the attempt succeeded.
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Delivered { .. })
    }
}

/// Where a delivery goes after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Delivered: terminal until redriven.
    Succeeded,
    /// Failed with budget left: pending again, due at `at`.
    Retry {
        /// When the next attempt is due.
        at: DateTime<Utc>,
    },
    /// Failed and the round's attempt budget is spent: dead-lettered.
    Dead,
    /// The receiver answered `410 Gone`: dead-lettered, and the endpoint is disabled.
    Gone,
}

/// Longest `Retry-After` honoured; a receiver cannot park a delivery for longer.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The transition after attempt number `attempts` (total, including this one, so
/// at least 1) of a delivery whose current round started after `round_base` attempts.
/// `unit` is a uniform draw from `[0, 1]` for the jitter.
pub fn transition(
    attempts: u32,
    round_base: u32,
    outcome: &Outcome,
    policy: &RetryPolicy,
    now: DateTime<Utc>,
    unit: f64,
) -> Transition {
    let (status, retry_after) = match outcome {
        Outcome::Delivered { .. } => return Transition::Succeeded,
        Outcome::Failed {
            status,
            retry_after,
            ..
        } => (*status, *retry_after),
    };
    if status == Some(410) {
        return Transition::Gone;
    }
    let in_round = attempts.saturating_sub(round_base).max(1);
    if in_round >= policy.max_attempts {
        return Transition::Dead;
    }
    let mut delay = policy.delay(in_round, unit);
    if let Some(asked) = retry_after {
        // Honoured only when longer than our own backoff, and never unbounded.
        delay = delay.max(asked.min(MAX_RETRY_AFTER));
    }
    let at = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
    Transition::Retry { at }
}

/// Parses a `Retry-After` header value: delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    (when - now).to_std().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(status: Option<u16>, retry_after: Option<Duration>) -> Outcome {
        Outcome::Failed {
            status,
            error: "x".into(),
            retry_after,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn success_is_terminal_at_any_attempt() {
        let p = RetryPolicy::default();
        for n in 1..=10 {
            let t = transition(n, 0, &Outcome::Delivered { status: 204 }, &p, now(), 0.3);
            assert_eq!(t, Transition::Succeeded);
        }
    }

    #[test]
    fn failures_retry_with_growing_jittered_delay_then_die() {
        let p = RetryPolicy::default();
        let mut last_ceiling = Duration::ZERO;
        for n in 1..p.max_attempts {
            for unit in [0.0, 0.5, 1.0] {
                let t = transition(n, 0, &failed(Some(500), None), &p, now(), unit);
                let Transition::Retry { at } = t else {
                    panic!("attempt {n} should retry, got {t:?}")
                };
                let delay = (at - now()).to_std().unwrap();
                let d = p.ceiling(n);
                assert!(
                    delay >= d / 2 && delay <= d,
                    "attempt {n}: {delay:?} not in [{:?}, {d:?}]",
                    d / 2
                );
            }
            assert!(p.ceiling(n) >= last_ceiling);
            last_ceiling = p.ceiling(n);
        }
        let t = transition(p.max_attempts, 0, &failed(None, None), &p, now(), 0.5);
        assert_eq!(t, Transition::Dead);
        assert_eq!(
            transition(p.max_attempts + 3, 0, &failed(None, None), &p, now(), 0.5),
            Transition::Dead
        );
    }

    #[test]
    fn redrive_round_gets_a_fresh_budget() {
        let p = RetryPolicy::default();
        // Six attempts were spent in the first round; the redrive set round_base = 6.
        let t = transition(7, 6, &failed(Some(500), None), &p, now(), 0.0);
        assert_eq!(
            t,
            Transition::Retry {
                at: now() + chrono::Duration::seconds(5)
            }
        );
        assert_eq!(
            transition(12, 6, &failed(Some(500), None), &p, now(), 0.0),
            Transition::Dead
        );
    }

    #[test]
    fn retry_after_is_honoured_only_when_longer_and_bounded() {
        let p = RetryPolicy::default();
        let t = transition(
            1,
            0,
            &failed(Some(429), Some(Duration::from_secs(120))),
            &p,
            now(),
            1.0,
        );
        assert_eq!(
            t,
            Transition::Retry {
                at: now() + chrono::Duration::seconds(120)
            }
        );
        let t = transition(
            1,
            0,
            &failed(Some(503), Some(Duration::from_secs(1))),
            &p,
            now(),
            1.0,
        );
        assert_eq!(
            t,
            Transition::Retry {
                at: now() + chrono::Duration::seconds(10)
            }
        );
        let t = transition(
            1,
            0,
            &failed(Some(429), Some(Duration::from_secs(10 * 86400))),
            &p,
            now(),
            0.0,
        );
        assert_eq!(
            t,
            Transition::Retry {
                at: now() + chrono::Duration::from_std(MAX_RETRY_AFTER).unwrap()
            }
        );
    }

    #[test]
    fn gone_disables_regardless_of_budget() {
        let p = RetryPolicy::default();
        assert_eq!(
            transition(1, 0, &failed(Some(410), None), &p, now(), 0.5),
            Transition::Gone
        );
    }

    #[test]
    fn parses_retry_after_forms() {
        assert_eq!(
            parse_retry_after("30", now()),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 2026 00:01:00 GMT", now()),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_retry_after("soon", now()), None);
    }
}
