//! `hookit demo`: standalone mode plus a built-in receiver you can take down from
//! the dashboard, and a generator of live `price.updated` events.
//!
//! The pieces:
//! - [`receiver`]: a small HTTP server on loopback that verifies signatures and
//!   answers `up` (200), `errors` (500) or `timeouts` (never), as switched through
//!   `/v1/demo/receiver`;
//! - [`setup`]: the `demo` tenant's endpoint pointing at that receiver (reused
//!   across runs), a fresh API key, and the banner that prints both;
//! - [`channel`]: optionally, a real Discord or Slack channel as a
//!   `discord`/`slack` endpoint next to the receiver (`--discord-webhook`,
//!   `--slack-webhook`); Pause/Resume on the dashboard holds and releases it;
//! - [`prices`]: optionally, a real spot-price API (`--prices`);
//! - [`feed`]: one `price.updated` event per ticker per round, real when the
//!   price API answers, from [`generator`]'s random walk otherwise;
//! - [`options`]: the flags, checked before anything starts.

pub mod channel;
pub mod feed;
pub mod generator;
pub mod options;
pub mod prices;
pub mod receiver;
pub mod setup;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::anyhow;
use ipnet::IpNet;
use tokio_util::sync::CancellationToken;
use tracing::error;

use crate::api::DemoControl;
use crate::config::Config;
use crate::db::endpoints::check_target;
use crate::domain::retry::RetryPolicy;
use crate::roles;
use receiver::Receiver;

/// The tenant the demo's endpoint, key and events belong to.
pub const TENANT: &str = "demo";

/// Default retry policy of the demo when none was configured: a failing delivery
/// is retried after about 1 s, 2 s and 4 s and is dead within seconds.
pub const DEMO_RETRY: RetryPolicy = RetryPolicy {
    base: Duration::from_secs(1),
    cap: Duration::from_secs(8),
    max_attempts: 4,
};

/// Adapts the configuration to the demo: loopback targets are allowed (the receiver
/// lives there), retries are short and the circuit breaker is off unless they were
/// configured.
pub fn demo_config(mut cfg: Config) -> Config {
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    if !cfg
        .allow_private_targets
        .iter()
        .any(|n| n.contains(&loopback))
    {
        cfg.allow_private_targets.push(IpNet::from(loopback));
    }
    if cfg.retry == RetryPolicy::default() {
        cfg.retry = DEMO_RETRY;
    }
    // An open circuit holds a failing endpoint's deliveries back (one probe at
    // growing intervals) instead of retrying and dead-lettering them, which is what
    // the demo is for. Off unless configured: no streak reaches i32::MAX.
    if cfg.circuit_threshold == Config::default().circuit_threshold {
        cfg.circuit_threshold = i32::MAX;
    }
    cfg
}

/// Runs the demo with `opts` (checked against `cfg`'s SSRF policy, as
/// configured) until `shutdown`.
pub async fn run(
    cfg: Config,
    opts: options::Options,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // A channel's host is resolved and checked against the policy as configured,
    // before the demo allows loopback for its own receiver: fail closed.
    let configured = cfg.ssrf_policy();
    for c in &opts.channels {
        check_target(&configured, c.expose_url())
            .await
            .map_err(|e| {
                anyhow!(
                    "{} webhook {} refused: {e}",
                    c.format().as_str(),
                    c.redacted()
                )
            })?;
    }
    let fetcher = opts.prices.clone().map(prices::Fetcher::new).transpose()?;
    let cfg = demo_config(cfg);
    let receiver = Receiver::new(shutdown.clone());
    let (receiver_url, receiver_task) = receiver.clone().serve().await?;
    // Bound here (not inside standalone) so the banner can name the real port,
    // also when HOOKIT_LISTEN asks for port 0.
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| anyhow!("cannot listen on {} (HOOKIT_LISTEN): {e}", cfg.listen))?;
    let api_addr = listener.local_addr()?;

    // The setup runs once the database is up (inside standalone); a failure
    // stops the demo and becomes its exit error.
    let failed: Arc<Mutex<Option<anyhow::Error>>> = Arc::default();
    let failure = failed.clone();
    let stop = shutdown.clone();
    let result = roles::standalone_with(cfg, shutdown.clone(), Some(listener), move |state| {
        state.demo = Some(receiver.clone() as Arc<dyn DemoControl>);
        let state = state.clone();
        tokio::spawn(async move {
            let prepared = async {
                let mut demo = setup::prepare(&state, &receiver, &receiver_url, api_addr).await?;
                for c in &opts.channels {
                    let (endpoint, reused) = channel::prepare(&state, c).await?;
                    demo.channels.push(setup::ChannelEndpoint {
                        endpoint,
                        reused,
                        url: c.redacted(),
                    });
                }
                demo.traffic = setup::traffic(opts.prices.as_ref(), opts.interval);
                anyhow::Ok(demo)
            };
            let demo = match prepared.await {
                Ok(demo) => demo,
                Err(e) => {
                    error!(error = format!("{e:#}"), "demo setup failed; stopping");
                    *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    stop.cancel();
                    return;
                }
            };
            setup::print_banner(&demo);
            tokio::spawn(setup::refresh_secret(
                state.store.clone(),
                demo.endpoint.id,
                receiver.clone(),
                stop.clone(),
            ));
            feed::run(
                state.store.clone(),
                state.work.clone(),
                fetcher,
                opts.interval,
                stop,
            )
            .await;
        });
    })
    .await;
    shutdown.cancel();
    let _ = receiver_task.await;
    result?;
    let setup_error = failed.lock().unwrap_or_else(|p| p.into_inner()).take();
    setup_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_config_allows_loopback_and_shortens_default_retries() {
        let c = demo_config(Config::default());
        assert!(c.ssrf_policy().check_ip(Ipv4Addr::LOCALHOST.into()).is_ok());
        assert_eq!(c.retry, DEMO_RETRY);
        assert_eq!(c.circuit_threshold, i32::MAX);
        assert_eq!(c.allow_private_targets.len(), 1);
        // An explicit setting is kept, and loopback is not added twice.
        let custom = Config {
            retry: RetryPolicy {
                max_attempts: 9,
                ..RetryPolicy::default()
            },
            allow_private_targets: vec!["127.0.0.0/8".parse().unwrap()],
            ..Config::default()
        };
        let c = demo_config(custom);
        assert_eq!(c.retry.max_attempts, 9);
        assert_eq!(c.allow_private_targets.len(), 1);
    }
}
