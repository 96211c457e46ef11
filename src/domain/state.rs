//! The delivery state machine, in one place, as a pure function.
//!
//! ```text
//!             claim (lease)            2xx
//!  pending ───────────────▶ in_flight ─────▶ succeeded ──┐
//!     ▲  ▲                    │   │                       │ redrive
//!     │  └── failure, budget ─┘   │ failure, budget spent │ (fresh budget,
//!     │      left (retry at)      ▼   or 410 Gone         │  history kept)
//!     │                          dead ◀───────────────────┘
//!     │◀─── 429, allowance left (retry after; no attempt spent)
//!     └──── lease expired (worker died): rescued back to pending
//!     └──── redrive ◀── dead
//! ```
//! Two outcomes never reach the wire. When the endpoint's transformation
//! *refuses* to build the request (it threw, ran out of time or memory, or
//! returned something unsendable), the delivery is dead at once: the same code
//! on the same event fails the same way, so retrying would only wait, and a fixed
//! transformation plus a redrive delivers it. When the transformation *cancels*
//! the delivery, it ends `skipped`: terminal, not a failure, redrivable.
//!
//! `pending` with no `next_attempt_at` is *held*: its endpoint is paused (or its
//! circuit is open) and no attempt is spent until it resumes.
//!
//! **FIFO endpoints** add no state: a delivery behind its endpoint's head is
//! simply `pending` and not claimable (the claim decides, `db::deliveries::claim`).
//! Every transition here applies to the head as to any delivery; what matters for
//! order is that none of them (retry, 429, give-back, rescue, redrive) moves a
//! delivery out of its place, which is fixed by its event's acceptance.
//!
//! **Rate limits.** A `429` is the receiver asking to slow down, not failing, so
//! it is *deferred*: pending again at its `Retry-After` (Discord: the body's
//! fractional `retry_after`), with the attempt budget untouched. Every request
//! is still numbered in `attempts` and logged (marked rate-limited); the budget a
//! round has spent is `attempts - round_base - rate_limited`. Two bounds keep an
//! endpoint that always answers 429 from holding a delivery forever: at most
//! [`RATE_LIMIT_ALLOWANCE`] deferrals per round, and none that asks to wait more
//! than [`RATE_LIMIT_MAX_WAIT`]. Past either, a 429 spends an attempt like any
//! failure (its `Retry-After` still honoured, up to [`MAX_RETRY_AFTER`]), so such
//! a delivery is dead after at most allowance + max_attempts requests, having
//! waited at most allowance × max wait on rate limits.

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
    /// The receiver answered 429: slow down.
    RateLimited {
        /// The HTTP status (429).
        status: u16,
        /// Short, secret-free description.
        error: String,
        /// When the receiver said to try again, if it did.
        retry_after: Option<Duration>,
    },
    /// Nothing was sent: the endpoint's transformation could not build the
    /// request, and would not on a retry either.
    Refused {
        /// Short, secret-free description (`transformation: …`).
        error: String,
    },
    /// Nothing was sent: the endpoint's transformation cancelled the delivery.
    Cancelled,
}

impl Outcome {
    /// The HTTP status, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            Outcome::Delivered { status } => Some(*status),
            Outcome::Failed { status, .. } => *status,
            Outcome::RateLimited { status, .. } => Some(*status),
            Outcome::Refused { .. } | Outcome::Cancelled => None,
        }
    }
    /// Whether a request went on the wire.
    pub fn was_sent(&self) -> bool {
        !matches!(self, Outcome::Refused { .. } | Outcome::Cancelled)
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
    /// Cancelled by the endpoint's transformation: terminal, not a failure.
    Skipped,
    /// Rate-limited within the allowance: pending again, due at `at`, and the
    /// attempt is not counted against the budget.
    Deferred {
        /// When the next attempt is due.
        at: DateTime<Utc>,
    },
}

/// Longest `Retry-After` honoured; a receiver cannot park a delivery for longer.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Rate-limit deferrals per round that spend no attempt (see the module doc).
pub const RATE_LIMIT_ALLOWANCE: u32 = 25;
/// Longest `Retry-After` a deferral honours; a 429 asking for longer spends an
/// attempt (a receiver that wants an hour's rest is down, not busy).
pub const RATE_LIMIT_MAX_WAIT: Duration = Duration::from_secs(15 * 60);

/// Where a delivery's attempts stand when an outcome arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    /// Requests made, all rounds, including the one whose outcome this is (≥ 1).
    pub attempts: u32,
    /// Requests made before the current round started (redrive).
    pub round_base: u32,
    /// Requests of the current round deferred as rate-limited (not this one).
    pub rate_limited: u32,
}

impl Count {
    /// Attempts the current round has spent, this one included.
    pub fn spent(&self) -> u32 {
        self.attempts
            .saturating_sub(self.round_base)
            .saturating_sub(self.rate_limited)
            .max(1)
    }
}

/// The transition after an attempt of a delivery whose requests stand at `n`.
/// `unit` is a uniform draw from `[0, 1]` for the jitter.
pub fn transition(
    n: Count,
    outcome: &Outcome,
    policy: &RetryPolicy,
    now: DateTime<Utc>,
    unit: f64,
) -> Transition {
    let (status, retry_after) = match outcome {
        Outcome::Delivered { .. } => return Transition::Succeeded,
        Outcome::Cancelled => return Transition::Skipped,
        // Deterministic: no budget is worth spending on it (see the module doc).
        Outcome::Refused { .. } => return Transition::Dead,
        Outcome::Failed {
            status,
            retry_after,
            ..
        } => (*status, *retry_after),
        Outcome::RateLimited { retry_after, .. } => {
            // Without a Retry-After, back off on the deferrals so far (this
            // round's attempt count does not move).
            let wait = retry_after.unwrap_or_else(|| policy.delay(n.rate_limited + 1, unit));
            if n.rate_limited < RATE_LIMIT_ALLOWANCE && wait <= RATE_LIMIT_MAX_WAIT {
                let at = now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
                return Transition::Deferred { at };
            }
            (Some(429), *retry_after)
        }
    };
    if status == Some(410) {
        return Transition::Gone;
    }
    let in_round = n.spent();
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

pub use super::ratelimit::parse_retry_after;

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

    fn c(attempts: u32, round_base: u32) -> Count {
        Count {
            attempts,
            round_base,
            rate_limited: 0,
        }
    }

    fn limited(retry_after: Option<Duration>) -> Outcome {
        Outcome::RateLimited {
            status: 429,
            error: "HTTP 429".into(),
            retry_after,
        }
    }

    #[test]
    fn a_rate_limit_is_deferred_without_spending_the_budget() {
        let p = RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        };
        // max_attempts = 1 and the only attempt so far was a 429: not dead.
        let t = transition(
            c(1, 0),
            &limited(Some(Duration::from_millis(1500))),
            &p,
            now(),
            0.5,
        );
        assert_eq!(
            t,
            Transition::Deferred {
                at: now() + chrono::Duration::milliseconds(1500)
            }
        );
        // After three deferrals, the fourth request succeeds or fails on a
        // budget of one attempt: a failure now is the first spent attempt.
        let n = Count {
            attempts: 4,
            round_base: 0,
            rate_limited: 3,
        };
        assert_eq!(n.spent(), 1);
        assert_eq!(
            transition(n, &failed(Some(500), None), &p, now(), 0.5),
            Transition::Dead
        );
        let p6 = RetryPolicy::default();
        assert!(matches!(
            transition(n, &failed(Some(500), None), &p6, now(), 0.5),
            Transition::Retry { .. }
        ));
    }

    #[test]
    fn a_rate_limit_without_retry_after_backs_off_on_the_deferrals() {
        let p = RetryPolicy::default();
        for k in 0..5 {
            let n = Count {
                attempts: k + 1,
                round_base: 0,
                rate_limited: k,
            };
            let t = transition(n, &limited(None), &p, now(), 1.0);
            assert_eq!(
                t,
                Transition::Deferred {
                    at: now() + chrono::Duration::from_std(p.ceiling(k + 1)).unwrap()
                }
            );
        }
    }

    #[test]
    fn rate_limits_are_bounded_per_round_and_in_wait() {
        let p = RetryPolicy::default();
        let spent = Count {
            attempts: RATE_LIMIT_ALLOWANCE + 1,
            round_base: 0,
            rate_limited: RATE_LIMIT_ALLOWANCE,
        };
        // The allowance is used up: this 429 is the round's first spent attempt,
        // and its Retry-After is honoured like any failure's.
        let t = transition(
            spent,
            &limited(Some(Duration::from_secs(120))),
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
        let last = Count {
            attempts: RATE_LIMIT_ALLOWANCE + p.max_attempts,
            ..spent
        };
        assert_eq!(
            transition(last, &limited(None), &p, now(), 1.0),
            Transition::Dead
        );
        // A 429 asking for longer than the deferral bound spends an attempt.
        let long = RATE_LIMIT_MAX_WAIT + Duration::from_secs(1);
        let t = transition(c(1, 0), &limited(Some(long)), &p, now(), 1.0);
        assert_eq!(
            t,
            Transition::Retry {
                at: now() + chrono::Duration::from_std(long).unwrap()
            }
        );
        let one = RetryPolicy {
            max_attempts: 1,
            ..p
        };
        assert_eq!(
            transition(c(1, 0), &limited(Some(long)), &one, now(), 1.0),
            Transition::Dead
        );
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
            let t = transition(c(n, 0), &Outcome::Delivered { status: 204 }, &p, now(), 0.3);
            assert_eq!(t, Transition::Succeeded);
        }
    }

    #[test]
    fn failures_retry_with_growing_jittered_delay_then_die() {
        let p = RetryPolicy::default();
        let mut last_ceiling = Duration::ZERO;
        for n in 1..p.max_attempts {
            for unit in [0.0, 0.5, 1.0] {
                let t = transition(c(n, 0), &failed(Some(500), None), &p, now(), unit);
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
        let t = transition(c(p.max_attempts, 0), &failed(None, None), &p, now(), 0.5);
        assert_eq!(t, Transition::Dead);
        assert_eq!(
            transition(
                c(p.max_attempts + 3, 0),
                &failed(None, None),
                &p,
                now(),
                0.5
            ),
            Transition::Dead
        );
    }

    #[test]
    fn redrive_round_gets_a_fresh_budget() {
        let p = RetryPolicy::default();
        // Six attempts were spent in the first round; the redrive set round_base = 6.
        let t = transition(c(7, 6), &failed(Some(500), None), &p, now(), 0.0);
        assert_eq!(
            t,
            Transition::Retry {
                at: now() + chrono::Duration::seconds(5)
            }
        );
        assert_eq!(
            transition(c(12, 6), &failed(Some(500), None), &p, now(), 0.0),
            Transition::Dead
        );
    }

    #[test]
    fn retry_after_is_honoured_only_when_longer_and_bounded() {
        let p = RetryPolicy::default();
        let t = transition(
            c(1, 0),
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
            c(1, 0),
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
            c(1, 0),
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
            transition(c(1, 0), &failed(Some(410), None), &p, now(), 0.5),
            Transition::Gone
        );
    }

    #[test]
    fn a_refused_transformation_is_dead_at_once_and_a_cancel_is_skipped() {
        let p = RetryPolicy::default();
        let refused = Outcome::Refused {
            error: "transformation: TypeError: x is undefined at line 3".into(),
        };
        // On the first attempt of a fresh round, with the whole budget left.
        assert_eq!(
            transition(c(1, 0), &refused, &p, now(), 0.5),
            Transition::Dead
        );
        assert_eq!(
            transition(c(7, 6), &refused, &p, now(), 0.5),
            Transition::Dead
        );
        assert_eq!(
            transition(c(1, 0), &Outcome::Cancelled, &p, now(), 0.5),
            Transition::Skipped
        );
        assert!(!refused.was_sent() && !Outcome::Cancelled.was_sent());
        assert!(failed(Some(500), None).was_sent());
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
