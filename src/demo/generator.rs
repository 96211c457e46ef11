//! Simulated prices for the demo: a random walk of a few tickers, which also
//! takes over from the last real prices when a real source is unreachable.

use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use serde::Serialize;

/// The event type the feed publishes.
pub const EVENT_TYPE: &str = "price.updated";
/// What `source` says of a simulated price.
pub const SIMULATED: &str = "simulated";

/// A simulated instrument.
#[derive(Debug, Clone)]
struct Ticker {
    symbol: &'static str,
    price: f64,
    /// Standard deviation of one step, as a fraction of the price.
    volatility: f64,
    /// Whether `price` came from a real source at least once.
    real: bool,
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
    /// Where the price comes from: the price API's host, or `simulated`.
    pub source: String,
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
            real: false,
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
                    source: SIMULATED.into(),
                    at: at.clone(),
                }
            })
            .collect()
    }

    /// The symbols, in publication order.
    pub fn symbols(&self) -> Vec<&'static str> {
        self.tickers.iter().map(|t| t.symbol).collect()
    }

    /// Records a real price of `symbol` from `source`, observed at `at`: the
    /// walk continues from it when the source goes away, so a fallback does not
    /// jump back to made-up levels. The first real price shows no change (its
    /// predecessor was made up). None for an unknown symbol.
    pub fn observe(
        &mut self,
        symbol: &str,
        price: f64,
        source: &str,
        at: DateTime<Utc>,
    ) -> Option<PriceUpdate> {
        let t = self.tickers.iter_mut().find(|t| t.symbol == symbol)?;
        let before = if t.real { t.price } else { price };
        t.price = price;
        t.real = true;
        Some(PriceUpdate {
            ticker: t.symbol,
            price,
            change_pct: round((price - before) / before * 100.0, 3),
            source: source.into(),
            at: at.to_rfc3339_opts(SecondsFormat::Millis, true),
        })
    }
}

/// A standard normal draw (Box-Muller), so no distribution crate is needed.
fn gaussian(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn a_real_price_anchors_the_walk() {
        let mut market = Market::default();
        let at = Utc::now();
        let u = market.observe("BTC", 96_000.0, "api.example", at).unwrap();
        assert_eq!(
            (u.ticker, u.price, u.source.as_str()),
            ("BTC", 96_000.0, "api.example")
        );
        assert_eq!(u.change_pct, 0.0, "no change from a made-up price");
        let u = market.observe("BTC", 97_920.0, "api.example", at).unwrap();
        assert_eq!(u.change_pct, 2.0);
        assert!(market.observe("DOGE", 1.0, "x", at).is_none());
        let next = market.step(&mut StdRng::seed_from_u64(1), at);
        assert!((next[0].price / 97_920.0 - 1.0).abs() < 0.01, "{next:?}");
        assert_eq!(next[0].source, SIMULATED);
    }

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
