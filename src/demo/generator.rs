//! Live traffic for the demo: a random walk of a few tickers, one
//! `price.updated` event per ticker every second.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::TENANT;
use crate::db::events::NewEvent;
use crate::db::Store;

/// The event type the generator publishes.
pub const EVENT_TYPE: &str = "price.updated";
/// Time between two rounds of price updates.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// A simulated instrument.
#[derive(Debug, Clone)]
struct Ticker {
    symbol: &'static str,
    price: f64,
    /// Standard deviation of one step, as a fraction of the price.
    volatility: f64,
}

/// The payload of a `price.updated` event.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PriceUpdate {
    /// `BTC`, `ETH` or `SOL`.
    pub ticker: &'static str,
    /// The new price, in cents precision.
    pub price: f64,
    /// Change from the previous price, in percent.
    pub change_pct: f64,
    /// When the price was observed (RFC 3339).
    pub at: String,
}

/// A few tickers whose prices take a random walk.
#[derive(Debug, Clone)]
pub struct Market {
    tickers: Vec<Ticker>,
}

impl Default for Market {
    fn default() -> Self {
        let t = |symbol, price, volatility| Ticker {
            symbol,
            price,
            volatility,
        };
        Self {
            tickers: vec![
                t("BTC", 64_000.0, 0.0006),
                t("ETH", 3_400.0, 0.0009),
                t("SOL", 150.0, 0.0015),
            ],
        }
    }
}

fn round(v: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (v * f).round() / f
}

impl Market {
    /// Moves every price one step (log-normal, so prices stay positive) and
    /// returns the updates, observed at `at`.
    pub fn step(&mut self, rng: &mut impl Rng, at: DateTime<Utc>) -> Vec<PriceUpdate> {
        let at = at.to_rfc3339_opts(SecondsFormat::Millis, true);
        self.tickers
            .iter_mut()
            .map(|t| {
                let before = t.price;
                t.price = round(before * (t.volatility * gaussian(rng)).exp(), 2).max(0.01);
                PriceUpdate {
                    ticker: t.symbol,
                    price: t.price,
                    change_pct: round((t.price - before) / before * 100.0, 3),
                    at: at.clone(),
                }
            })
            .collect()
    }
}

/// A standard normal draw (Box-Muller), so no distribution crate is needed.
fn gaussian(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Publishes price updates for the demo tenant every [`INTERVAL`] until `shutdown`.
pub async fn run(store: Store, work: Arc<Notify>, shutdown: CancellationToken) {
    let mut market = Market::default();
    let mut rng = StdRng::from_entropy();
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    info!(
        event_type = EVENT_TYPE,
        tenant = TENANT,
        "demo generator started"
    );
    let mut failing = false;
    loop {
        tokio::select! { _ = tick.tick() => {}, _ = shutdown.cancelled() => return }
        for update in market.step(&mut rng, Utc::now()) {
            let payload = serde_json::to_string(&update)
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
                Ok(_) if failing => {
                    failing = false;
                    info!("demo generator publishing again");
                }
                Ok(_) => {}
                // Once per outage, not once per event.
                Err(e) if !failing => {
                    failing = true;
                    warn!(error = %e, "demo generator cannot publish; retrying every second");
                }
                Err(_) => {}
            }
        }
        work.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_walk_in_small_rounded_steps() {
        let mut market = Market::default();
        let mut rng = StdRng::seed_from_u64(7);
        let at = Utc::now();
        let mut last = Vec::new();
        for _ in 0..1000 {
            last = market.step(&mut rng, at);
            assert_eq!(last.len(), 3);
            for u in &last {
                assert!(u.price > 0.0);
                assert_eq!(u.price, round(u.price, 2));
                assert!(u.change_pct.abs() < 2.0, "{u:?}");
            }
        }
        // A random walk, not a constant.
        assert_ne!(last[0].price, 64_000.0);
        let json = serde_json::to_value(&last[0]).unwrap();
        assert_eq!(json["ticker"], "BTC");
        assert!(json["at"].as_str().unwrap().ends_with('Z'));
    }
}
