//! The demo's tenant: its endpoint (reused across runs), a fresh API key, and the
//! banner that tells the user where to go.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::prices::PriceSource;
use super::receiver::Receiver;
use super::TENANT;
use crate::api::AppState;
use crate::db::endpoints::{check_target, Endpoint, EndpointPatch, EndpointSpec};
use crate::db::Store;
use crate::domain::ids::EndpointId;
use crate::domain::signing::Secret;
use crate::error::Error;
pub use crate::roles::base_url;

/// The description that marks the demo's endpoint, so a later run finds it.
pub const DESCRIPTION: &str = "Demo receiver";
/// How often the receiver re-reads the endpoint's secret (it may be rotated from
/// the dashboard; the previous secret keeps signing meanwhile).
const SECRET_REFRESH: Duration = Duration::from_secs(10);

/// What the demo set up, for the banner.
#[derive(Debug)]
pub struct Demo {
    /// The endpoint pointing at the receiver.
    pub endpoint: Endpoint,
    /// Whether it was kept from an earlier run.
    pub reused: bool,
    /// The new API key of the `demo` tenant.
    pub api_key: String,
    /// Where the dashboard is.
    pub dashboard_url: String,
    /// The real chat channels' endpoints.
    pub channels: Vec<ChannelEndpoint>,
    /// What the feed publishes, for the banner.
    pub traffic: String,
}

/// A real chat channel's endpoint, for the banner.
#[derive(Debug)]
pub struct ChannelEndpoint {
    /// The endpoint (its URL carries the webhook's token: never print it).
    pub endpoint: Endpoint,
    /// Whether it was kept from an earlier run.
    pub reused: bool,
    /// The webhook URL, redacted.
    pub url: String,
}

/// The banner's description of the feed.
pub fn traffic(prices: Option<&PriceSource>, interval: Duration) -> String {
    let every = humantime::format_duration(interval);
    match prices {
        Some(p) => format!(
            "price.updated for BTC, ETH and SOL from {}, every {every} (simulated while it does not answer)",
            p.name()
        ),
        None => format!("price.updated for BTC, ETH and SOL (simulated), every {every}"),
    }
}

/// The endpoint the demo creates: short retries and timeout, so the story of a
/// failing receiver plays out in seconds.
pub fn endpoint_spec(url: &str, secret: &Secret) -> EndpointSpec {
    EndpointSpec {
        url: url.to_string(),
        event_types: Some(vec!["price.*".into()]),
        description: Some(DESCRIPTION.into()),
        secret: Some(secret.expose()),
        max_attempts: Some(4),
        retry_base_ms: Some(1_000),
        retry_cap_ms: Some(8_000),
        timeout_ms: Some(2_000),
        ..EndpointSpec::default()
    }
}

/// The demo tenant's endpoint with this description that no operator manages.
pub(super) async fn find_endpoint(
    store: &Store,
    description: &str,
) -> crate::error::Result<Option<Endpoint>> {
    let mut cursor = None;
    loop {
        let page = store.list_endpoints(TENANT, cursor, 100).await?;
        let last = page.last().map(|e| e.id);
        if let Some(ep) = page
            .into_iter()
            .find(|e| e.description == description && e.managed_by.is_none())
        {
            return Ok(Some(ep));
        }
        match last {
            Some(id) => cursor = Some(id),
            None => return Ok(None),
        }
    }
}

/// Points the demo endpoint at the receiver (creating it on the first run), arms
/// the receiver with its secret, and creates an API key.
pub async fn prepare(
    state: &AppState,
    receiver: &Receiver,
    receiver_url: &str,
    api_addr: SocketAddr,
) -> anyhow::Result<Demo> {
    let store = &state.store;
    check_target(&state.ssrf, receiver_url).await?;
    let (endpoint, reused) = match find_endpoint(store, DESCRIPTION)
        .await
        .context("looking up the demo endpoint")?
    {
        Some(ep) => {
            // Armed before the URL changes, so no delivery meets an unarmed receiver.
            receiver.set_secret(store.get_endpoint_secret(TENANT, ep.id).await?);
            let patch = EndpointPatch {
                url: Some(receiver_url.to_string()),
                ..EndpointPatch::default()
            };
            let ep = store
                .update_endpoint(TENANT, ep.id, &patch, &state.ssrf)
                .await
                .context("pointing the demo endpoint at this run's receiver")?;
            (ep, true)
        }
        None => {
            let secret = Secret::generate();
            receiver.set_secret(secret.clone());
            let spec = endpoint_spec(receiver_url, &secret);
            spec.validate(&state.ssrf)?;
            let ep = store
                .create_endpoint(TENANT, &spec, state.max_endpoints)
                .await
                .context("creating the demo endpoint")?;
            (ep, false)
        }
    };
    info!(endpoint_id = %endpoint.id, url = %endpoint.url, reused, "demo endpoint ready");
    let api_key = store
        .create_api_key(TENANT, Some("hookit demo"))
        .await
        .context("creating the demo API key")?;
    Ok(Demo {
        endpoint,
        reused,
        api_key,
        dashboard_url: base_url(api_addr),
        channels: Vec::new(),
        traffic: traffic(None, super::options::FAST_INTERVAL),
    })
}

/// Prints where everything is, with the API key alone on the last line of stdout
/// (as `hookit keys create` does), so scripts can take it with `tail -n 1`.
pub fn print_banner(demo: &Demo) {
    let ep = &demo.endpoint;
    let api = demo.dashboard_url.trim_end_matches('/');
    let mut text = format!(
        "\nHookIt demo is running. Open the dashboard and sign in with the API key below.\n\n  \
         Dashboard:       {dashboard}\n  \
         Demo receiver:   {url}  (endpoint {id}{reused})\n{channels}  \
         Traffic:         {traffic}\n\n\
         Take the receiver down from the dashboard's \"Demo receiver\" bar, or with:\n  \
         curl -X POST {api}/v1/demo/receiver -H \"Authorization: Bearer $KEY\" \\\n    \
         -H 'content-type: application/json' -d '{{\"mode\": \"errors\"}}'   # or up, timeouts\n",
        dashboard = demo.dashboard_url,
        channels = channel_lines(demo),
        traffic = demo.traffic,
        url = ep.url,
        id = ep.id,
        reused = if demo.reused {
            ", kept from an earlier run"
        } else {
            ""
        },
    );
    if !demo.channels.is_empty() {
        text.push_str(
            "\nHold a chat channel with Pause on the Endpoints page (or POST \
             /v1/endpoints/{id}/pause), release it with Resume.\n",
        );
    }
    for c in demo
        .channels
        .iter()
        .filter(|c| c.endpoint.status != "active")
    {
        text.push_str(&format!(
            "\nNote: the endpoint {} of the {} channel is {}; press Resume on the Endpoints page to deliver to it.\n",
            c.endpoint.id,
            c.endpoint.format.as_str(),
            c.endpoint.status
        ));
    }
    if ep.status != "active" {
        text.push_str(&format!(
            "\nNote: the demo endpoint is {}; press Resume on the Endpoints page to deliver to it.\n",
            ep.status
        ));
    }
    text.push_str(&format!(
        "\nAPI key of tenant `{TENANT}` (shown only once; only its hash is stored):\n{}\n",
        demo.api_key
    ));
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

fn channel_lines(demo: &Demo) -> String {
    demo.channels
        .iter()
        .map(|c| {
            let name = match c.endpoint.format.as_str() {
                "slack" => "Slack channel:",
                _ => "Discord channel:",
            };
            format!(
                "  {name:<17}{}  (endpoint {}{})\n",
                c.url,
                c.endpoint.id,
                if c.reused {
                    ", kept from an earlier run"
                } else {
                    ""
                }
            )
        })
        .collect()
}

/// Keeps the receiver's secret in step with the endpoint's, until `shutdown`.
pub async fn refresh_secret(
    store: Store,
    id: EndpointId,
    receiver: Arc<Receiver>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SECRET_REFRESH) => {}
            _ = shutdown.cancelled() => return,
        }
        match store.get_endpoint_secret(TENANT, id).await {
            Ok(secret) => receiver.set_secret(secret),
            Err(Error::NotFound(_)) => {
                info!(endpoint_id = %id, "the demo endpoint was deleted; restart `hookit demo` to create it again");
                return;
            }
            Err(e) => warn!(error = %e, "cannot re-read the demo endpoint's secret"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashboard_url_names_loopback_for_wildcard_binds() {
        assert_eq!(
            base_url("0.0.0.0:8080".parse().unwrap()),
            "http://127.0.0.1:8080/"
        );
        assert_eq!(base_url("[::]:80".parse().unwrap()), "http://[::1]:80/");
        assert_eq!(
            base_url("127.0.0.1:9000".parse().unwrap()),
            "http://127.0.0.1:9000/"
        );
    }

    #[test]
    fn the_demo_endpoint_is_valid_for_the_demo_policy() {
        let cfg = super::super::demo_config(crate::config::Config::default());
        let spec = endpoint_spec("http://127.0.0.1:4000/demo/prices", &Secret::generate());
        spec.validate(&cfg.ssrf_policy()).unwrap();
        // …and refused without the demo's loopback allowance.
        assert!(spec
            .validate(&crate::config::Config::default().ssrf_policy())
            .is_err());
    }
}
