//! What a receiver says about its rate limit, read from one response.
//!
//! Two kinds of hint, both honoured by the worker:
//! - **retry after** (on a 429): when this delivery may be tried again. The
//!   `Retry-After` header (seconds or an HTTP date), or, from Discord, the JSON
//!   body's `retry_after` (fractional seconds, more precise than the header).
//! - **pause** (on any response): `X-RateLimit-Remaining: 0` with
//!   `X-RateLimit-Reset-After` (seconds from now) or `X-RateLimit-Reset` (unix
//!   seconds) says the next request would be refused until then, so the worker
//!   holds the endpoint's next requests until then instead of spending one on a 429.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Longest pause a response can impose on its endpoint. Chat webhooks reset
/// their buckets within seconds; a larger value is more likely a bug or a
/// hostile receiver, and only delays that endpoint's own deliveries anyway.
pub const MAX_PAUSE: Duration = Duration::from_secs(15 * 60);

/// Seconds, whole or fractional (`"2"`, `"0.35"`), as a duration.
pub fn seconds(v: &str) -> Option<Duration> {
    let s: f64 = v.trim().parse().ok()?;
    (s.is_finite() && s >= 0.0).then(|| Duration::from_secs_f64(s.min(1e9)))
}

/// Parses a `Retry-After` value: delta-seconds (fractions accepted) or an HTTP date.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    if let Some(d) = seconds(value) {
        return Some(d);
    }
    let when = DateTime::parse_from_rfc2822(value.trim())
        .ok()?
        .with_timezone(&Utc);
    Some((when - now).to_std().unwrap_or(Duration::ZERO))
}

/// The `retry_after` of a Discord 429 body (`{"message", "retry_after", "global"}`).
pub fn body_retry_after(body: &str) -> Option<Duration> {
    #[derive(serde::Deserialize)]
    struct RateLimited {
        retry_after: f64,
    }
    let r: RateLimited = serde_json::from_str(body).ok()?;
    seconds(&r.retry_after.to_string())
}

/// The `X-RateLimit-*` headers of a response that a pause is read from.
#[derive(Debug, Default, Clone, Copy)]
pub struct Headers<'a> {
    /// `X-RateLimit-Remaining`.
    pub remaining: Option<&'a str>,
    /// `X-RateLimit-Reset-After` (seconds from now).
    pub reset_after: Option<&'a str>,
    /// `X-RateLimit-Reset` (unix seconds, fractional).
    pub reset: Option<&'a str>,
}

/// How long the endpoint's next request must wait, when the response says its
/// bucket is empty. `Reset-After` is preferred: it does not depend on the two
/// clocks agreeing.
pub fn pause(h: Headers<'_>, now: DateTime<Utc>) -> Option<Duration> {
    let remaining: f64 = h.remaining?.trim().parse().ok()?;
    if remaining > 0.0 {
        return None;
    }
    let wait = match h.reset_after.and_then(seconds) {
        Some(d) => d,
        None => {
            let reset: f64 = h.reset?.trim().parse().ok()?;
            if !reset.is_finite() {
                return None;
            }
            let now_s = now.timestamp_millis() as f64 / 1000.0;
            Duration::from_secs_f64((reset - now_s).clamp(0.0, MAX_PAUSE.as_secs_f64()))
        }
    };
    Some(wait.min(MAX_PAUSE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(
            parse_retry_after("30", now()),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after(" 0.25 ", now()),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 2026 00:01:00 GMT", now()),
            Some(Duration::from_secs(60))
        );
        // A date in the past: now.
        assert_eq!(
            parse_retry_after("Wed, 31 Dec 2025 23:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now()), None);
        assert_eq!(parse_retry_after("-1", now()), None);
        assert_eq!(parse_retry_after("NaN", now()), None);
    }

    #[test]
    fn discord_bodies() {
        let b =
            r#"{"message": "You are being rate limited.", "retry_after": 1.337, "global": false}"#;
        assert_eq!(body_retry_after(b), Some(Duration::from_millis(1337)));
        assert_eq!(body_retry_after("<html>"), None);
        assert_eq!(body_retry_after(r#"{"retry_after": "x"}"#), None);
    }

    #[test]
    fn pauses_only_when_the_bucket_is_empty() {
        let h = |remaining, reset_after, reset| Headers {
            remaining,
            reset_after,
            reset,
        };
        assert_eq!(pause(h(Some("3"), Some("1.5"), None), now()), None);
        assert_eq!(pause(h(None, Some("1.5"), None), now()), None);
        assert_eq!(
            pause(h(Some("0"), Some("1.5"), Some("1767225660")), now()),
            Some(Duration::from_millis(1500))
        );
        // Reset alone: unix seconds, against our clock.
        assert_eq!(
            pause(h(Some("0"), None, Some("1767225601.25")), now()),
            Some(Duration::from_millis(1250))
        );
        assert_eq!(
            pause(h(Some("0"), None, Some("1000")), now()),
            Some(Duration::ZERO)
        );
        assert_eq!(
            pause(h(Some("0"), Some("99999999"), None), now()),
            Some(MAX_PAUSE)
        );
        assert_eq!(pause(h(Some("0"), None, None), now()), None);
    }
}
