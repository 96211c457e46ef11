//! The settings of an endpoint as the API and the controller write them, and
//! their validation (everything but DNS, which [`check_target`] adds).

use std::collections::BTreeMap;

use serde::Deserialize;
use utoipa::ToSchema;

use super::{MAX_EVENT_TYPES, MAX_HEADERS};
use crate::domain::formats::Format;
use crate::domain::patterns::validate_pattern;
use crate::domain::ssrf::SsrfPolicy;
use crate::domain::transform::{is_reserved_header, MAX_SOURCE_BYTES};
use crate::error::{Error, Result};

/// The settings of an endpoint, as written by the API or the controller.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// Target URL (http or https; checked against the SSRF policy).
    pub url: String,
    /// Subscribed event types; default `["*"]`.
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Signing secret `whsec_…`; generated when absent.
    #[serde(default)]
    pub secret: Option<String>,
    /// Attempts per round, 1-100.
    #[serde(default)]
    pub max_attempts: Option<i32>,
    /// First retry delay in ms.
    #[serde(default)]
    pub retry_base_ms: Option<i64>,
    /// Largest retry delay in ms.
    #[serde(default)]
    pub retry_cap_ms: Option<i64>,
    /// Per-attempt timeout in ms (100-300000).
    #[serde(default)]
    pub timeout_ms: Option<i64>,
    /// Custom headers.
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    /// Most deliveries per second (per worker process).
    #[serde(default)]
    pub rate_limit: Option<i32>,
    /// Most deliveries in flight (per worker process).
    #[serde(default)]
    pub max_in_flight: Option<i32>,
    /// How deliveries are rendered (default `standard`). `discord` and `slack`
    /// send a readable message to a Discord or Slack webhook URL instead of the
    /// Standard Webhooks envelope, still signed.
    #[serde(default)]
    #[schema(value_type = Option<FormatName>)]
    pub format: Option<String>,
    /// JavaScript defining `function handler(webhook)`, run before each delivery
    /// (after the format): see docs/transformations.md.
    #[serde(default)]
    pub transformation: Option<String>,
    /// `none` (default) or `fifo`: one delivery at a time, in the order the
    /// events were accepted (docs/fifo.md).
    #[serde(default)]
    #[schema(value_type = Option<OrderingName>)]
    pub ordering: Option<String>,
    /// FIFO endpoints only: up to this many queued events in one request, as a
    /// JSON array in acceptance order (1-100, default 1: one event per request,
    /// not an array). Needs `ordering: fifo`, the `standard` format and no
    /// transformation (docs/fifo.md).
    #[serde(default)]
    pub batch_size: Option<i32>,
}

/// A partial update: absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointPatch {
    /// New URL.
    pub url: Option<String>,
    /// New subscriptions.
    pub event_types: Option<Vec<String>>,
    /// New description.
    pub description: Option<String>,
    /// New attempt budget.
    pub max_attempts: Option<i32>,
    /// New first retry delay in ms.
    pub retry_base_ms: Option<i64>,
    /// New largest retry delay in ms.
    pub retry_cap_ms: Option<i64>,
    /// New timeout in ms.
    pub timeout_ms: Option<i64>,
    /// New custom headers (replaces all).
    pub headers: Option<BTreeMap<String, String>>,
    /// New rate limit.
    pub rate_limit: Option<i32>,
    /// New in-flight cap.
    pub max_in_flight: Option<i32>,
    /// New format.
    #[schema(value_type = Option<FormatName>)]
    pub format: Option<String>,
    /// New transformation code; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable)]
    pub transformation: Option<Option<String>>,
    /// New ordering: `none` or `fifo`. Applies to deliveries already queued
    /// (docs/fifo.md).
    #[schema(value_type = Option<OrderingName>)]
    pub ordering: Option<String>,
    /// New batch size (FIFO endpoints; docs/fifo.md).
    pub batch_size: Option<i32>,
}

/// Tells a field sent as `null` (`Some(None)`: remove) from one left out
/// (`None`, by `#[serde(default)]`: keep).
fn present<'de, D, T>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// `standard`, `discord` or `slack`: how an endpoint's deliveries are rendered.
/// (The API's view of `domain::formats::Format`; kept as text in the request
/// types so that a bad value is answered with a problem naming the field.)
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // only its schema is used
pub enum FormatName {
    /// The Standard Webhooks envelope.
    Standard,
    /// A Discord execute-webhook message.
    Discord,
    /// A Slack incoming-webhook message.
    Slack,
}

/// `none` or `fifo`: whether an endpoint's deliveries go one at a time, in the
/// order their events were accepted. Text in the request types, like `format`,
/// so a bad value is answered with a problem naming the field.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // only its schema is used
pub enum OrderingName {
    /// Deliveries go out concurrently, each as soon as it is due.
    None,
    /// One delivery in flight at a time, in acceptance order.
    Fifo,
}

/// The values of the `endpoint_ordering` column.
pub const ORDERINGS: [&str; 2] = ["none", "fifo"];

/// Parses an `ordering` field into its column value.
pub(super) fn parse_ordering(v: Option<&str>) -> Result<Option<&'static str>> {
    v.map(|o| {
        ORDERINGS.into_iter().find(|k| *k == o).ok_or_else(|| {
            Error::invalid(
                "invalid-endpoint",
                format!("ordering must be `none` or `fifo`, not `{o}`"),
            )
        })
    })
    .transpose()
}

/// The largest `batch_size`: a batch is one request body, so it is bounded
/// like one (see also `db::deliveries::batch::MAX_BATCH_BYTES`).
pub const MAX_BATCH_SIZE: i32 = 100;

/// Batching (`batch_size` above 1) is for FIFO endpoints that send the standard
/// envelope as is: a JSON array of envelopes means nothing to a chat webhook,
/// and a transformation reshapes one event, not a list. Checked against the
/// endpoint as it will be after the change, so a PATCH of any one of these
/// fields is refused when it would break the rule.
pub(super) fn check_batching(
    batch_size: i32,
    ordering: &str,
    format: Format,
    transformation: bool,
) -> Result<()> {
    if batch_size == 1 {
        return Ok(());
    }
    let why = if ordering != "fifo" {
        "needs `ordering: fifo`"
    } else if format != Format::Standard {
        "needs the `standard` format"
    } else if transformation {
        "cannot be combined with a transformation"
    } else {
        return Ok(());
    };
    Err(Error::invalid(
        "invalid-endpoint",
        format!("batch_size {batch_size} {why}; set batch_size to 1 to send one event per request"),
    ))
}

/// Parses a `format` field.
pub(super) fn parse_format(v: Option<&str>) -> Result<Option<Format>> {
    v.map(|f| {
        f.parse::<Format>()
            .map_err(|e| Error::invalid("invalid-endpoint", e.to_string()))
    })
    .transpose()
}

fn validate_headers(h: &BTreeMap<String, String>) -> Result<()> {
    if h.len() > MAX_HEADERS {
        return Err(Error::invalid(
            "invalid-headers",
            format!("at most {MAX_HEADERS} custom headers"),
        ));
    }
    for (k, v) in h {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
            Error::invalid(
                "invalid-headers",
                format!("`{k}` is not a valid header name"),
            )
        })?;
        if is_reserved_header(name.as_str()) {
            return Err(Error::invalid(
                "invalid-headers",
                format!("`{k}` is set by HookIt and cannot be overridden"),
            ));
        }
        if v.len() > 4096 || reqwest::header::HeaderValue::from_str(v).is_err() {
            return Err(Error::invalid(
                "invalid-headers",
                format!("the value of `{k}` is not a valid header value"),
            ));
        }
    }
    Ok(())
}

/// Size only: whether it compiles is checked by the engine, which `db` does
/// not run (the API and the controller call `Transformer::check` first).
fn validate_transformation(code: &str) -> Result<()> {
    if code.trim().is_empty() || code.len() > MAX_SOURCE_BYTES {
        return Err(Error::invalid(
            "invalid-transformation",
            format!("transformation must be 1 to {MAX_SOURCE_BYTES} bytes of JavaScript (null removes it)"),
        ));
    }
    Ok(())
}

fn validate_event_types(types: &[String]) -> Result<()> {
    if types.is_empty() || types.len() > MAX_EVENT_TYPES {
        return Err(Error::invalid(
            "invalid-event-types",
            format!("event_types needs 1 to {MAX_EVENT_TYPES} patterns"),
        ));
    }
    for t in types {
        validate_pattern(t)
            .map_err(|e| Error::invalid("invalid-event-types", format!("`{t}`: {e}")))?;
    }
    Ok(())
}

fn validate_numbers(
    max_attempts: Option<i32>,
    base: Option<i64>,
    cap: Option<i64>,
    timeout: Option<i64>,
    rate: Option<i32>,
    in_flight: Option<i32>,
    batch: Option<i32>,
) -> Result<()> {
    let bad =
        |f: &str, range: &str| Error::invalid("invalid-endpoint", format!("{f} must be {range}"));
    if max_attempts.is_some_and(|v| !(1..=100).contains(&v)) {
        return Err(bad("max_attempts", "from 1 to 100"));
    }
    if base.is_some_and(|v| !(1..=86_400_000).contains(&v)) {
        return Err(bad("retry_base_ms", "from 1 to 86400000"));
    }
    if cap.is_some_and(|v| !(1..=7 * 86_400_000).contains(&v)) {
        return Err(bad("retry_cap_ms", "from 1 to 604800000"));
    }
    if timeout.is_some_and(|v| !(100..=super::MAX_TIMEOUT_MS).contains(&v)) {
        return Err(bad("timeout_ms", "from 100 to 300000"));
    }
    if rate.is_some_and(|v| !(1..=100_000).contains(&v)) {
        return Err(bad("rate_limit", "from 1 to 100000"));
    }
    if in_flight.is_some_and(|v| !(1..=10_000).contains(&v)) {
        return Err(bad("max_in_flight", "from 1 to 10000"));
    }
    if batch.is_some_and(|v| !(1..=MAX_BATCH_SIZE).contains(&v)) {
        return Err(bad("batch_size", "from 1 to 100"));
    }
    Ok(())
}

impl EndpointSpec {
    /// Validates everything but DNS (see [`check_target`]).
    pub fn validate(&self, ssrf: &SsrfPolicy) -> Result<()> {
        ssrf.check_url(&self.url)?;
        self.as_patch().validate(ssrf)?;
        check_batching(
            self.batch_size.unwrap_or(1),
            self.ordering()?,
            self.format()?,
            self.transformation.is_some(),
        )
    }

    fn as_patch(&self) -> EndpointPatch {
        EndpointPatch {
            url: None,
            event_types: self.event_types.clone(),
            description: self.description.clone(),
            max_attempts: self.max_attempts,
            retry_base_ms: self.retry_base_ms,
            retry_cap_ms: self.retry_cap_ms,
            timeout_ms: self.timeout_ms,
            headers: self.headers.clone(),
            rate_limit: self.rate_limit,
            max_in_flight: self.max_in_flight,
            format: self.format.clone(),
            transformation: self.transformation.clone().map(Some),
            ordering: self.ordering.clone(),
            batch_size: self.batch_size,
        }
    }

    /// The ordering asked for, `none` when absent (validated first).
    pub fn ordering(&self) -> Result<&'static str> {
        Ok(parse_ordering(self.ordering.as_deref())?.unwrap_or("none"))
    }

    /// The format asked for, `standard` when absent (validated first).
    pub fn format(&self) -> Result<Format> {
        Ok(parse_format(self.format.as_deref())?.unwrap_or_default())
    }
}

impl EndpointPatch {
    /// Validates the fields that are present (DNS aside).
    pub fn validate(&self, ssrf: &SsrfPolicy) -> Result<()> {
        if let Some(u) = &self.url {
            ssrf.check_url(u)?;
        }
        if let Some(t) = &self.event_types {
            validate_event_types(t)?;
        }
        if let Some(h) = &self.headers {
            validate_headers(h)?;
        }
        parse_format(self.format.as_deref())?;
        parse_ordering(self.ordering.as_deref())?;
        if let Some(Some(code)) = &self.transformation {
            validate_transformation(code)?;
        }
        if self.description.as_ref().is_some_and(|d| d.len() > 1024) {
            return Err(Error::invalid(
                "invalid-endpoint",
                "description is at most 1024 characters",
            ));
        }
        validate_numbers(
            self.max_attempts,
            self.retry_base_ms,
            self.retry_cap_ms,
            self.timeout_ms,
            self.rate_limit,
            self.max_in_flight,
            self.batch_size,
        )
    }

    /// Whether this patch touches a field of the batching rule (see
    /// [`check_batching`]), so the merged endpoint must be checked.
    pub(super) fn touches_batching(&self) -> bool {
        self.batch_size.is_some()
            || self.ordering.is_some()
            || self.format.is_some()
            || self.transformation.is_some()
    }

    /// Checks the batching rule on `current` as this patch would leave it.
    pub(super) fn check_batching_on(&self, current: &super::Endpoint) -> Result<()> {
        let transformation = match &self.transformation {
            Some(t) => t.is_some(),
            None => current.transformation.is_some(),
        };
        check_batching(
            self.batch_size.unwrap_or(current.batch_size),
            parse_ordering(self.ordering.as_deref())?.unwrap_or(current.ordering.as_str()),
            parse_format(self.format.as_deref())?.unwrap_or(current.format),
            transformation,
        )
    }
}

/// Resolves the URL's host and checks every address against the SSRF policy; a
/// host with any forbidden address is refused (fail closed).
pub async fn check_target(ssrf: &SsrfPolicy, raw: &str) -> Result<()> {
    let url = ssrf.check_url(raw)?;
    if let Some(url::Host::Domain(d)) = url.host() {
        let port = url.port_or_known_default().unwrap_or(443);
        let host = d.trim_end_matches('.').to_string();
        let addrs: Vec<_> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|_| crate::domain::ssrf::SsrfError::Unresolvable(host.clone()))?
            .collect();
        if addrs.is_empty() {
            return Err(crate::domain::ssrf::SsrfError::Unresolvable(host).into());
        }
        for a in addrs {
            ssrf.check_ip(a.ip())?;
        }
    }
    Ok(())
}
