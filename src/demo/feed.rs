//! The demo's live traffic: one `price.updated` event per symbol per round,
//! from a real price source when one is configured and answering, simulated
//! otherwise.
//!
//! When the source fails (unreachable, an error status, or an answer that holds
//! no price), the round is simulated from the last real prices, a warning says
//! so once per outage, and the source is asked again after a backoff that
//! doubles from two rounds up to [`MAX_BACKOFF`], so it comes back on its own.
//! `hookit_demo_price_source_up` (1 live, 0 simulated) and
//! `hookit_demo_price_fallbacks_total` show the same on `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::value::RawValue;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::generator::{Market, PriceUpdate, EVENT_TYPE};
use super::prices::Fetcher;
use super::TENANT;
use crate::db::events::NewEvent;
use crate::db::Store;

/// Longest wait between two tries of a failing price source.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Whether the price source is answering, and when to ask a failing one again.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Health {
    /// Failed tries in a row (0: live).
    pub failures: u32,
    /// When a failing source may be asked again.
    pub retry_at: Option<Instant>,
}

impl Health {
    /// Whether to ask the source this round.
    pub fn due(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|at| now >= at)
    }

    /// Records a failed try at `now`; returns the wait before the next one.
    pub fn failed(&mut self, now: Instant, interval: Duration) -> Duration {
        self.failures += 1;
        let wait = backoff(interval, self.failures);
        self.retry_at = Some(now + wait);
        wait
    }

    /// Records an answer; returns whether the source was failing before.
    pub fn answered(&mut self) -> bool {
        let was_down = self.failures > 0;
        *self = Health::default();
        was_down
    }
}

/// The wait after the `failures`-th failure in a row: 2, 4, 8… rounds, at most
/// [`MAX_BACKOFF`] (but never less than a round).
pub fn backoff(interval: Duration, failures: u32) -> Duration {
    let rounds = 1u32 << failures.clamp(1, 16);
    interval
        .saturating_mul(rounds)
        .min(MAX_BACKOFF)
        .max(interval)
}

/// Publishes a round of price updates every `interval` until `shutdown`.
pub async fn run(
    store: Store,
    work: Arc<Notify>,
    source: Option<Fetcher>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut market = Market::default();
    let symbols = market.symbols();
    let mut rng = StdRng::from_entropy();
    let mut health = Health::default();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let source_name = source.as_ref().map(|f| f.source().name().to_string());
    info!(
        event_type = EVENT_TYPE,
        tenant = TENANT,
        interval_ms = interval.as_millis() as u64,
        source = source_name.as_deref().unwrap_or("simulated"),
        "demo price feed started"
    );
    if source.is_some() {
        metrics::gauge!("hookit_demo_price_source_up").set(1.0);
    }
    let mut publishing_failed = false;
    loop {
        tokio::select! { _ = tick.tick() => {}, _ = shutdown.cancelled() => return }
        let live = match &source {
            Some(f) if health.due(Instant::now()) => {
                let asked = tokio::select! {
                    r = fetch_all(f, &symbols) => r,
                    _ = shutdown.cancelled() => return,
                };
                match asked {
                    Ok(prices) => {
                        if health.answered() {
                            info!(
                                source = f.source().name(),
                                "price source answering again; publishing real prices"
                            );
                        }
                        metrics::gauge!("hookit_demo_price_source_up").set(1.0);
                        let at = Utc::now();
                        Some(
                            prices
                                .into_iter()
                                .filter_map(|(s, p)| market.observe(s, p, f.source().name(), at))
                                .collect::<Vec<_>>(),
                        )
                    }
                    Err(reason) => {
                        let first = health.failures == 0;
                        let wait = health.failed(Instant::now(), interval);
                        let retry_in = humantime::format_duration(wait).to_string();
                        if first {
                            metrics::counter!("hookit_demo_price_fallbacks_total").increment(1);
                            metrics::gauge!("hookit_demo_price_source_up").set(0.0);
                            warn!(source = f.source().name(), reason = %reason, retry_in = %retry_in, "price source unreachable or unreadable; falling back to simulated prices");
                        } else {
                            info!(source = f.source().name(), reason = %reason, retry_in = %retry_in, "price source still failing; publishing simulated prices");
                        }
                        None
                    }
                }
            }
            _ => None,
        };
        let updates = live.unwrap_or_else(|| market.step(&mut rng, Utc::now()));
        publish(&store, &updates, &mut publishing_failed).await;
        work.notify_one();
    }
}

/// Every symbol's price, asked concurrently; the first failure fails the round
/// (a round is all real or all simulated, so a channel never mixes the two).
async fn fetch_all(
    f: &Fetcher,
    symbols: &[&'static str],
) -> Result<Vec<(&'static str, f64)>, String> {
    let answers = futures::future::join_all(symbols.iter().map(|s| f.price(s))).await;
    symbols
        .iter()
        .zip(answers)
        .map(|(s, a)| a.map(|p| (*s, p)))
        .collect()
}

async fn publish(store: &Store, updates: &[PriceUpdate], failing: &mut bool) {
    for update in updates {
        let payload = serde_json::to_string(update)
            .ok()
            .and_then(|s| RawValue::from_string(s).ok());
        let Some(payload) = payload else { continue };
        let ev = NewEvent {
            event_type: EVENT_TYPE,
            payload: &payload,
            idempotency_key: None,
            traceparent: None,
            only_endpoint: None,
        };
        match store.ingest(TENANT, &ev).await {
            Ok(_) if *failing => {
                *failing = false;
                info!("demo price feed publishing again");
            }
            Ok(_) => {}
            // Once per outage, not once per event.
            Err(e) if !*failing => {
                *failing = true;
                warn!(error = %e, "demo price feed cannot publish; retrying every round");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_two_rounds_to_the_cap() {
        let s = Duration::from_secs;
        assert_eq!(backoff(s(15), 1), s(30));
        assert_eq!(backoff(s(15), 2), s(60));
        assert_eq!(backoff(s(15), 5), MAX_BACKOFF);
        assert_eq!(backoff(s(15), 40), MAX_BACKOFF);
        // A round longer than the cap still waits a round.
        assert_eq!(backoff(s(600), 1), s(600));
    }

    #[test]
    fn a_failing_source_is_asked_again_after_its_backoff_and_recovers() {
        let t0 = Instant::now();
        let round = Duration::from_secs(1);
        let mut h = Health::default();
        assert!(h.due(t0));
        assert_eq!(h.failed(t0, round), Duration::from_secs(2));
        assert!(!h.due(t0 + round));
        assert!(h.due(t0 + 2 * round));
        assert_eq!(h.failed(t0 + 2 * round, round), Duration::from_secs(4));
        assert!(!h.due(t0 + 5 * round));
        assert!(h.answered(), "it was down");
        assert!(h.due(t0) && !h.answered());
    }
}
