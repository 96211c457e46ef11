//! The command line of `hookit demo`: its flags (each with an environment
//! variable, so a deployment can pass the webhook URL as a secret), checked once
//! before anything starts. A refusal names the flag and never echoes a webhook
//! URL, which carries a token.

use std::time::Duration;

use super::channel::Channel;
use super::prices::PriceSource;
use crate::domain::formats::Format;
use crate::domain::ssrf::SsrfPolicy;

/// Time between rounds of the simulated feed alone: lively, for the built-in
/// receiver.
pub const FAST_INTERVAL: Duration = Duration::from_secs(1);
/// Time between rounds when a real price API or a real chat channel is involved:
/// polite to the price API (one request per symbol per round) and readable in a
/// channel (three messages per round), well inside Discord's 5 requests per 2 s.
pub const POLITE_INTERVAL: Duration = Duration::from_secs(15);
/// Shortest allowed round: below it a real price API would be hammered and
/// Discord's per-webhook limit (about 2.5 messages/s) could not keep up.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Default time a price request may take.
pub const PRICE_TIMEOUT: Duration = Duration::from_secs(5);

/// `hookit demo`'s flags, as clap reads them.
#[derive(clap::Args, Default)]
pub struct DemoArgs {
    /// Also deliver the price feed into this Discord channel, through a `discord`
    /// endpoint (https://discord.com/api/webhooks/ID/TOKEN; a secret: prefer the
    /// environment variable).
    #[arg(
        long,
        value_name = "URL",
        env = "HOOKIT_DEMO_DISCORD_WEBHOOK",
        hide_env_values = true
    )]
    pub discord_webhook: Option<String>,
    /// Also deliver the price feed into this Slack channel, through a `slack`
    /// endpoint (https://hooks.slack.com/services/…; a secret: prefer the
    /// environment variable).
    #[arg(
        long,
        value_name = "URL",
        env = "HOOKIT_DEMO_SLACK_WEBHOOK",
        hide_env_values = true
    )]
    pub slack_webhook: Option<String>,
    /// Publish real spot prices: `coinbase` (the default when the flag has no
    /// value), or a URL template with a `{symbol}` placeholder (BTC, ETH, SOL).
    /// Falls back to simulated prices while the source is unreachable.
    #[arg(long, value_name = "SOURCE", env = "HOOKIT_DEMO_PRICES", num_args = 0..=1, default_missing_value = "coinbase")]
    pub prices: Option<String>,
    /// Where the price is in the source's JSON answer: a JSON pointer
    /// (`/data/amount`) or a dotted path (`data.amount`); a number or a numeric string.
    #[arg(long, value_name = "PATH", env = "HOOKIT_DEMO_PRICE_PATH")]
    pub price_path: Option<String>,
    /// Time between rounds of price updates (one event per symbol per round), at
    /// least 1s; default 1s, or 15s with --prices or a chat channel.
    #[arg(long, value_name = "DURATION", env = "HOOKIT_DEMO_INTERVAL")]
    pub interval: Option<String>,
    /// How long one price request may take.
    #[arg(long, value_name = "DURATION", env = "HOOKIT_DEMO_PRICE_TIMEOUT")]
    pub price_timeout: Option<String>,
}

/// A flag that could not be used; names the flag and its variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {flag} ({var}): {reason}")]
pub struct OptionError {
    /// The flag, e.g. `--discord-webhook`.
    pub flag: &'static str,
    /// Its environment variable.
    pub var: &'static str,
    /// Why it was refused (never the value of a webhook URL).
    pub reason: String,
}

impl OptionError {
    pub(super) fn new(flag: &'static str, var: &'static str, reason: impl Into<String>) -> Self {
        Self {
            flag,
            var,
            reason: reason.into(),
        }
    }
}

/// What the demo was asked to do, checked.
#[derive(Debug)]
pub struct Options {
    /// The real chat channels to deliver into (Discord, Slack, or both).
    pub channels: Vec<Channel>,
    /// The real price source, if any.
    pub prices: Option<PriceSource>,
    /// Time between rounds of price updates.
    pub interval: Duration,
}

impl Default for Options {
    /// The demo with no flags: the simulated feed, every second.
    fn default() -> Self {
        Self {
            channels: Vec::new(),
            prices: None,
            interval: FAST_INTERVAL,
        }
    }
}

fn duration(
    flag: &'static str,
    var: &'static str,
    raw: Option<&str>,
) -> Result<Option<Duration>, OptionError> {
    raw.map(|v| {
        humantime::parse_duration(v.trim()).map_err(|e| {
            OptionError::new(flag, var, format!("{e} (use forms like 500ms, 15s, 1m)"))
        })
    })
    .transpose()
}

impl DemoArgs {
    /// Checks the flags; `ssrf` is the policy as configured (before the demo adds
    /// loopback for its own receiver), so a loopback channel URL is accepted only
    /// where `HOOKIT_ALLOW_PRIVATE_TARGETS` allows it.
    pub fn validate(&self, ssrf: &SsrfPolicy) -> Result<Options, OptionError> {
        let mut channels = Vec::new();
        if let Some(url) = &self.discord_webhook {
            channels.push(Channel::parse(Format::Discord, url, ssrf)?);
        }
        if let Some(url) = &self.slack_webhook {
            channels.push(Channel::parse(Format::Slack, url, ssrf)?);
        }
        let timeout = duration(
            "--price-timeout",
            "HOOKIT_DEMO_PRICE_TIMEOUT",
            self.price_timeout.as_deref(),
        )?
        .unwrap_or(PRICE_TIMEOUT);
        if timeout.is_zero() {
            return Err(OptionError::new(
                "--price-timeout",
                "HOOKIT_DEMO_PRICE_TIMEOUT",
                "must be greater than zero",
            ));
        }
        let prices = match &self.prices {
            Some(source) => Some(PriceSource::parse(
                source,
                self.price_path.as_deref(),
                timeout,
            )?),
            None if self.price_path.is_some() => {
                return Err(OptionError::new(
                    "--price-path",
                    "HOOKIT_DEMO_PRICE_PATH",
                    "needs --prices",
                ))
            }
            None => None,
        };
        let default = if prices.is_some() || !channels.is_empty() {
            POLITE_INTERVAL
        } else {
            FAST_INTERVAL
        };
        let interval = duration(
            "--interval",
            "HOOKIT_DEMO_INTERVAL",
            self.interval.as_deref(),
        )?
        .unwrap_or(default);
        if interval < MIN_INTERVAL {
            return Err(OptionError::new(
                "--interval",
                "HOOKIT_DEMO_INTERVAL",
                "must be at least 1s",
            ));
        }
        Ok(Options {
            channels,
            prices,
            interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> DemoArgs {
        DemoArgs::default()
    }

    #[test]
    fn defaults_are_fast_alone_and_polite_with_real_services() {
        let strict = SsrfPolicy::new(vec![]);
        assert_eq!(args().validate(&strict).unwrap().interval, FAST_INTERVAL);
        let with_prices = DemoArgs {
            prices: Some("coinbase".into()),
            ..args()
        };
        let o = with_prices.validate(&strict).unwrap();
        assert_eq!(o.interval, POLITE_INTERVAL);
        assert!(o.prices.is_some() && o.channels.is_empty());
        let with_channel = DemoArgs {
            discord_webhook: Some("https://discord.com/api/webhooks/1/tok".into()),
            interval: Some("30s".into()),
            ..args()
        };
        let o = with_channel.validate(&strict).unwrap();
        assert_eq!(o.interval, Duration::from_secs(30));
        assert_eq!(o.channels.len(), 1);
    }

    #[test]
    fn bad_values_name_their_flag() {
        let strict = SsrfPolicy::new(vec![]);
        for (a, flag) in [
            (
                DemoArgs {
                    interval: Some("500ms".into()),
                    ..args()
                },
                "--interval",
            ),
            (
                DemoArgs {
                    interval: Some("often".into()),
                    ..args()
                },
                "--interval",
            ),
            (
                DemoArgs {
                    prices: Some("coinbase".into()),
                    price_timeout: Some("0s".into()),
                    ..args()
                },
                "--price-timeout",
            ),
            (
                DemoArgs {
                    price_path: Some("/data/amount".into()),
                    ..args()
                },
                "--price-path",
            ),
            (
                DemoArgs {
                    prices: Some("https://example.com/spot".into()),
                    ..args()
                },
                "--prices",
            ),
            (
                DemoArgs {
                    slack_webhook: Some("http://hooks.slack.com/services/T/B/x".into()),
                    ..args()
                },
                "--slack-webhook",
            ),
        ] {
            let e = a.validate(&strict).unwrap_err();
            assert_eq!(e.flag, flag, "{e}");
            assert!(e.to_string().starts_with(&format!("invalid {flag} (")));
        }
    }
}
