//! The demo's real chat channel: a Discord or Slack webhook URL from the command
//! line, checked for its shape and against the SSRF policy, shown only redacted
//! (its last path segment is the webhook's token), and set up as a
//! `discord`/`slack` endpoint next to the built-in receiver.

use anyhow::Context;
use tracing::info;
use url::Url;

use super::options::OptionError;
use super::setup::find_endpoint;
use super::TENANT;
use crate::api::AppState;
use crate::db::endpoints::{Endpoint, EndpointPatch, EndpointSpec};
use crate::domain::formats::Format;
use crate::domain::ssrf::{classify, SsrfPolicy};

/// A chat webhook to deliver the demo's feed into. `Debug` shows it redacted.
#[derive(Clone)]
pub struct Channel {
    format: Format,
    url: String,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("format", &self.format)
            .field("url", &self.redacted())
            .finish()
    }
}

fn flag(format: Format) -> (&'static str, &'static str) {
    match format {
        Format::Slack => ("--slack-webhook", "HOOKIT_DEMO_SLACK_WEBHOOK"),
        _ => ("--discord-webhook", "HOOKIT_DEMO_DISCORD_WEBHOOK"),
    }
}

/// Whether `segments` is a Discord execute-webhook path:
/// `api/[v10/]webhooks/{numeric id}/{token}`.
fn discord_path(segments: &[&str]) -> bool {
    let rest = match segments {
        ["api", "webhooks", rest @ ..] => rest,
        ["api", v, "webhooks", rest @ ..]
            if v.len() > 1 && v.starts_with('v') && v[1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            rest
        }
        _ => return false,
    };
    matches!(rest, [id, token] if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && !token.is_empty())
}

/// Whether `segments` is a Slack incoming-webhook (`services/T…/B…/token`) or
/// workflow-trigger (`triggers/…`) path.
fn slack_path(segments: &[&str]) -> bool {
    match segments {
        ["services", rest @ ..] => rest.len() == 3 && rest.iter().all(|s| !s.is_empty()),
        ["triggers", rest @ ..] => !rest.is_empty() && rest.iter().all(|s| !s.is_empty()),
        _ => false,
    }
}

impl Channel {
    /// Checks `raw` as a webhook URL of `format` (discord or slack): https to a
    /// public host, or http(s) to a private address that `ssrf` allows (a local
    /// fake); the service's path shape. Errors name the flag, never the URL.
    pub fn parse(format: Format, raw: &str, ssrf: &SsrfPolicy) -> Result<Self, OptionError> {
        let (flag, var) = flag(format);
        let err = |reason: String| OptionError::new(flag, var, reason);
        let expected = match format {
            Format::Slack => "https://hooks.slack.com/services/T…/B…/…",
            _ => "https://discord.com/api/webhooks/ID/TOKEN",
        };
        let url =
            Url::parse(raw.trim()).map_err(|_| err(format!("not a URL (expected {expected})")))?;
        // Fail closed: the same policy as every endpoint, as configured (the demo
        // allows loopback for its own receiver only after this check).
        ssrf.check_url(url.as_str())
            .map_err(|e| err(format!("refused by the SSRF policy: {e}")))?;
        let private_ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => classify(ip.into()).is_some(),
            Some(url::Host::Ipv6(ip)) => classify(ip.into()).is_some(),
            Some(url::Host::Domain(d)) if !d.is_empty() => false,
            _ => return Err(err(format!("has no host (expected {expected})"))),
        };
        // A token must not cross the internet in the clear; plain http is only
        // for a private address the operator allowed (a local fake in tests).
        if url.scheme() != "https" && !private_ip {
            return Err(err(format!("must be an https URL (expected {expected})")));
        }
        let segments: Vec<&str> = url
            .path_segments()
            .map(Iterator::collect)
            .unwrap_or_default();
        let shaped = match format {
            Format::Slack => slack_path(&segments),
            _ => discord_path(&segments),
        };
        if !shaped {
            return Err(err(format!(
                "is not a {} webhook URL (expected {expected})",
                format.as_str()
            )));
        }
        Ok(Self {
            format,
            url: url.to_string(),
        })
    }

    /// `discord` or `slack`.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The full URL, token included: for the endpoint only, never for display.
    pub fn expose_url(&self) -> &str {
        &self.url
    }

    /// The URL without its token (the last path segment) and query, for logs and
    /// the banner.
    pub fn redacted(&self) -> String {
        redact(&self.url)
    }

    /// The description that marks this channel's endpoint, so a later run finds it.
    pub fn description(&self) -> &'static str {
        match self.format {
            Format::Slack => "Demo Slack channel",
            _ => "Demo Discord channel",
        }
    }

    /// The endpoint for this channel: the demo's short retries, and one request
    /// at a time, so that each is paced by the previous answer's rate-limit
    /// headers (Discord: 5 per 2 s) and messages arrive in order.
    pub fn endpoint_spec(&self) -> EndpointSpec {
        EndpointSpec {
            url: self.url.clone(),
            event_types: Some(vec!["price.*".into()]),
            description: Some(self.description().into()),
            max_attempts: Some(4),
            retry_base_ms: Some(1_000),
            retry_cap_ms: Some(8_000),
            timeout_ms: Some(5_000),
            max_in_flight: Some(1),
            format: Some(self.format.as_str().into()),
            ..EndpointSpec::default()
        }
    }
}

/// `raw` without userinfo, query, fragment and last path segment.
pub fn redact(raw: &str) -> String {
    let Ok(url) = Url::parse(raw) else {
        return "<redacted>".into();
    };
    let host = url.host_str().unwrap_or("");
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let mut segments: Vec<&str> = url
        .path_segments()
        .map(Iterator::collect)
        .unwrap_or_default();
    segments.pop();
    let mut path = segments.join("/");
    if !path.is_empty() {
        path.push('/');
    }
    format!("{}://{host}{port}/{path}…", url.scheme())
}

/// Points this channel's endpoint at its URL (creating it on the first run;
/// reusing it keeps its history and its paused state across runs). The URL was
/// checked, resolved included, against the configured policy by `demo::run`.
pub async fn prepare(state: &AppState, channel: &Channel) -> anyhow::Result<(Endpoint, bool)> {
    let store = &state.store;
    let what = channel.format.as_str();
    let found = find_endpoint(store, channel.description())
        .await
        .with_context(|| format!("looking up the demo {what} endpoint"))?;
    let (endpoint, reused) = match found {
        Some(ep) => {
            let patch = EndpointPatch {
                url: Some(channel.url.clone()),
                format: Some(what.into()),
                ..EndpointPatch::default()
            };
            let ep = store
                .update_endpoint(TENANT, ep.id, &patch, &state.ssrf)
                .await
                .with_context(|| format!("pointing the demo {what} endpoint at its webhook"))?;
            (ep, true)
        }
        None => {
            let spec = channel.endpoint_spec();
            spec.validate(&state.ssrf)?;
            let ep = store
                .create_endpoint(TENANT, &spec, state.max_endpoints)
                .await
                .with_context(|| format!("creating the demo {what} endpoint"))?;
            (ep, false)
        }
    };
    info!(endpoint_id = %endpoint.id, url = %channel.redacted(), format = what, reused, "demo chat channel ready");
    Ok((endpoint, reused))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "s3cr3t-T0KEN";

    fn strict() -> SsrfPolicy {
        SsrfPolicy::new(vec![])
    }

    #[test]
    fn discord_and_slack_urls_of_the_documented_shapes_are_accepted() {
        for (f, url) in [
            (
                Format::Discord,
                format!("https://discord.com/api/webhooks/123/{TOKEN}"),
            ),
            (
                Format::Discord,
                format!("https://discord.com/api/v10/webhooks/123/{TOKEN}?wait=true"),
            ),
            (
                Format::Slack,
                format!("https://hooks.slack.com/services/T0/B0/{TOKEN}"),
            ),
            (
                Format::Slack,
                format!("https://hooks.slack.com/triggers/T0/1/{TOKEN}"),
            ),
        ] {
            let c = Channel::parse(f, &url, &strict()).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(c.format(), f);
            assert!(!c.redacted().contains(TOKEN), "{}", c.redacted());
            assert!(!format!("{c:?}").contains(TOKEN));
            assert_eq!(c.endpoint_spec().format.as_deref(), Some(f.as_str()));
        }
    }

    #[test]
    fn bad_urls_are_refused_naming_the_flag_and_never_the_token() {
        for (f, url, why) in [
            (
                Format::Discord,
                format!("http://discord.com/api/webhooks/1/{TOKEN}"),
                "https",
            ),
            (
                Format::Discord,
                format!("discord.com/api/webhooks/1/{TOKEN}"),
                "not a URL",
            ),
            (
                Format::Discord,
                format!("https://discord.com/api/hooks/1/{TOKEN}"),
                "not a discord webhook",
            ),
            (
                Format::Discord,
                format!("https://discord.com/api/webhooks/abc/{TOKEN}"),
                "not a discord webhook",
            ),
            (
                Format::Discord,
                format!("https://user:{TOKEN}@discord.com/api/webhooks/1/x"),
                "SSRF",
            ),
            (
                Format::Discord,
                format!("http://127.0.0.1:9/api/webhooks/1/{TOKEN}"),
                "SSRF",
            ),
            (
                Format::Discord,
                format!("https://localhost/api/webhooks/1/{TOKEN}"),
                "SSRF",
            ),
            (
                Format::Slack,
                format!("https://hooks.slack.com/api/{TOKEN}"),
                "not a slack webhook",
            ),
            (
                Format::Slack,
                format!("ftp://hooks.slack.com/services/T/B/{TOKEN}"),
                "SSRF",
            ),
        ] {
            let e = Channel::parse(f, &url, &strict()).unwrap_err();
            let text = e.to_string();
            let flag = if f == Format::Slack {
                "--slack-webhook"
            } else {
                "--discord-webhook"
            };
            assert_eq!(e.flag, flag);
            assert!(text.contains(why), "{url}: {text}");
            assert!(!text.contains(TOKEN), "{text}");
        }
    }

    #[test]
    fn a_private_fake_is_accepted_only_where_the_policy_allows_it() {
        let url = format!("http://127.0.0.1:4000/api/webhooks/1/{TOKEN}");
        assert!(Channel::parse(Format::Discord, &url, &strict()).is_err());
        let allow = SsrfPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        let c = Channel::parse(Format::Discord, &url, &allow).unwrap();
        assert_eq!(c.redacted(), "http://127.0.0.1:4000/api/webhooks/1/…");
        assert_eq!(c.expose_url(), url);
    }

    #[test]
    fn redaction_drops_the_token_query_and_userinfo() {
        assert_eq!(
            redact("https://discord.com/api/webhooks/123/tok?wait=true#x"),
            "https://discord.com/api/webhooks/123/…"
        );
        assert_eq!(redact("https://a:b@h.example/"), "https://h.example/…");
        assert_eq!(redact("not a url"), "<redacted>");
    }
}
