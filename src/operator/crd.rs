//! The `WebhookEndpoint` custom resource. The Rust types are the source of the
//! CRD: `hookit crd` prints what they generate, and the committed
//! `crds/webhookendpoint.yaml` is checked against it.
//!
//! Everything the API server can check is in the schema (bounds, patterns and
//! CEL rules), so a bad manifest is refused by `kubectl apply` before the
//! controller sees it. What needs I/O (DNS for the SSRF policy, Secrets) is left
//! to the controller, which reports it in `.status`.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::db::endpoints::EndpointSpec;
use crate::domain::formats::Format;

/// API group of the resource.
pub const GROUP: &str = "hookit.dev";
/// Key of the signing secret inside a Secret, unless `secretRef.key` says otherwise.
pub const DEFAULT_SECRET_KEY: &str = "secret";
/// The `Ready` condition type.
pub const READY: &str = "Ready";

/// Pattern of a duration string: Go-style units, e.g. `500ms`, `10s`, `1h30m`.
/// (A macro so that CEL rules can embed it with `concat!`; the CEL rules check it
/// first, so a malformed value gets the pattern's message and no CEL error.)
macro_rules! duration_pattern {
    () => {
        "^([0-9]{1,6}(ms|s|m|h))+$"
    };
}
const DURATION_PATTERN: &str = duration_pattern!();

/// A webhook subscription: events published by the namespace's tenant whose type
/// matches `eventTypes` are delivered to `url`, signed with the Secret's key.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "hookit.dev",
    version = "v1alpha1",
    kind = "WebhookEndpoint",
    namespaced,
    shortname = "whe",
    category = "hookit",
    status = "WebhookEndpointStatus",
    doc = "A webhook subscription of the namespace's tenant, delivered by HookIt.",
    // Raw JSON: the structured printcolumn(...) form repeats keys, which clippy
    // flags as duplicated attributes.
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".spec.url"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Paused","type":"boolean","priority":1,"jsonPath":".spec.paused"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("!has(self.transformation) || !has(self.transformationFrom)")
    .message("set transformation or transformationFrom, not both"))]
#[x_kube(validation = Rule::new(
    "!has(self.batchSize) || self.batchSize == 1 || (has(self.ordering) && self.ordering == 'fifo' && (!has(self.format) || self.format == 'standard') && !has(self.transformation) && !has(self.transformationFrom))"
).message("batchSize above 1 needs ordering: fifo, the standard format and no transformation"))]
#[serde(rename_all = "camelCase")]
pub struct WebhookEndpointSpec {
    /// Where deliveries are POSTed: an absolute http:// or https:// URL. The
    /// controller also checks it against the SSRF policy (private, loopback and
    /// link-local targets are refused unless the operator allows them).
    #[x_kube(validation = Rule::new(
        "isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHost() != ''"
    ).message("url must be an absolute http:// or https:// URL"))]
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,

    /// Event types to deliver: exact (`order.created`), a prefix (`order.*`) or `*`.
    #[serde(default = "all_event_types")]
    #[schemars(length(min = 1, max = 50))]
    #[schemars(inner(
        length(min = 1, max = 130),
        regex(pattern = r"^(\*|[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*(\.\*)?)$")
    ))]
    pub event_types: Vec<String>,

    /// A Secret of this namespace holding the signing secret (`whsec_…`). When
    /// unset, the controller generates one into Secret `<name>-signing`.
    /// Changing the Secret's content rotates the signing secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,

    /// Retry policy of failed deliveries (defaults: the server's settings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,

    /// Time limit of one attempt, 100ms to 300s (default: the server's setting).
    #[x_kube(validation = Rule::new(concat!("!self.matches('", duration_pattern!(), "') || (duration(self) >= duration('100ms') && duration(self) <= duration('300s'))"))
        .message("timeout must be from 100ms to 300s"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub timeout: Option<String>,

    /// Extra HTTP headers sent with every delivery (at most 20). Headers HookIt
    /// sets itself (webhook-*, content-type, host, …) cannot be overridden.
    #[x_kube(validation = Rule::new(
        "self.all(k, !(k.lowerAscii() in ['host', 'content-type', 'content-length', 'transfer-encoding', 'connection', 'user-agent', 'webhook-id', 'webhook-timestamp', 'webhook-signature', 'traceparent', 'upgrade', 'te', 'keep-alive']))"
    ).message("headers may not set host, content-type, content-length, transfer-encoding, connection, user-agent, upgrade, te, keep-alive, traceparent or webhook-*"))]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[!#$%&\\'*+.^_`|~0-9A-Za-z-]{1,256}$'))")
        .message("header names must be HTTP tokens (letters, digits and !#$%&'*+.^_`|~-)"))]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 20))]
    pub headers: BTreeMap<String, String>,

    /// Holds deliveries without spending attempts while true; they go out when it
    /// is set back to false. Also re-enables an endpoint that was disabled.
    #[serde(default)]
    pub paused: bool,

    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,

    /// Most deliveries per second to this endpoint (per worker process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub rate_limit: Option<i32>,

    /// Most deliveries in flight to this endpoint at once (per worker process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_in_flight: Option<i32>,

    /// How deliveries are rendered: `standard` (the Standard Webhooks envelope,
    /// the default), `discord` or `slack` (a readable message for a Discord or
    /// Slack webhook URL, still signed). Chat formats send one request at a
    /// time unless `maxInFlight` says otherwise, paced by the receiver's
    /// rate-limit headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<EndpointFormat>,

    /// JavaScript defining `function handler(webhook)`, run before each
    /// delivery (after the format) to reshape it: a new `payload`, `headers`,
    /// `url` or `method`, or `cancel: true` to skip it. The controller checks
    /// that it compiles (`Ready=False TransformationInvalid` with the line
    /// otherwise). For longer code, use `transformationFrom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65536))]
    pub transformation: Option<String>,

    /// A key of a ConfigMap in this namespace holding the transformation's
    /// code. A change of the ConfigMap applies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transformation_from: Option<ConfigMapKeyRef>,

    /// `none` (the default: deliveries go out concurrently) or `fifo`: one
    /// delivery at a time, in the order the events were accepted; a failing
    /// delivery holds the ones behind it until it succeeds or is dead-lettered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<EndpointOrdering>,

    /// With `ordering: fifo`: up to this many queued events in one request, as
    /// a JSON array in acceptance order, signed like any body; the batch
    /// succeeds or fails as a whole. 1 (the default) sends one event per
    /// request. Needs the `standard` format and no transformation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub batch_size: Option<i32>,
}

/// Whether an endpoint's deliveries are ordered (see docs/fifo.md).
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum EndpointOrdering {
    /// Concurrent delivery, each as soon as it is due.
    #[default]
    None,
    /// One at a time, in acceptance order.
    Fifo,
}

impl EndpointOrdering {
    /// The value of the `endpoint_ordering` column.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointOrdering::None => "none",
            EndpointOrdering::Fifo => "fifo",
        }
    }
}

/// A key of a ConfigMap in the resource's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyRef {
    /// Name of the ConfigMap.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// Key inside the ConfigMap's `data`.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// How an endpoint's deliveries are rendered (see `domain::formats`).
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum EndpointFormat {
    /// The Standard Webhooks envelope.
    #[default]
    Standard,
    /// A Discord execute-webhook message.
    Discord,
    /// A Slack incoming-webhook message.
    Slack,
}

impl From<EndpointFormat> for Format {
    fn from(f: EndpointFormat) -> Self {
        match f {
            EndpointFormat::Standard => Format::Standard,
            EndpointFormat::Discord => Format::Discord,
            EndpointFormat::Slack => Format::Slack,
        }
    }
}

fn all_event_types() -> Vec<String> {
    vec!["*".into()]
}

/// A key of a Secret in the resource's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// Key inside the Secret (default `secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: Option<String>,
}

/// How failed deliveries are retried.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new(
    concat!("!has(self.initialBackoff) || !has(self.maxBackoff) || !self.initialBackoff.matches('", duration_pattern!(), "') || !self.maxBackoff.matches('", duration_pattern!(), "') || duration(self.initialBackoff) <= duration(self.maxBackoff)")
).message("retry.initialBackoff must not be longer than retry.maxBackoff"))]
#[serde(rename_all = "camelCase")]
pub struct RetrySpec {
    /// Attempts before a delivery is dead-lettered, 1 to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts: Option<i32>,
    /// Delay before the first retry, e.g. `10s` (at most 24h).
    #[x_kube(validation = Rule::new(concat!("!self.matches('", duration_pattern!(), "') || (duration(self) > duration('0s') && duration(self) <= duration('24h'))"))
        .message("retry.initialBackoff must be more than 0s and at most 24h"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub initial_backoff: Option<String>,
    /// Longest delay between retries, e.g. `1h` (at most 168h).
    #[x_kube(validation = Rule::new(concat!("!self.matches('", duration_pattern!(), "') || (duration(self) > duration('0s') && duration(self) <= duration('168h'))"))
        .message("retry.maxBackoff must be more than 0s and at most 168h"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub max_backoff: Option<String>,
}

/// What the controller observed and did.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEndpointStatus {
    /// `Ready`: whether the endpoint receives deliveries as specified, and if
    /// not, why (e.g. the URL was refused by the SSRF policy).
    /// `EventTypesKnown`: whether every subscribed event type is in the
    /// namespace's event-type catalog (False names those that are not).
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `.metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// HookIt's id of the endpoint (`ep_…`), as the REST API shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_id: Option<String>,
    /// The Secret the signing secret is read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// `active`, `paused` or `disabled` (after failing continuously, or a 410 Gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// `closed` or `open`: whether the circuit breaker currently holds deliveries back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_state: Option<String>,
    /// Recent delivery figures, refreshed periodically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<DeliveryFigures>,
}

/// Delivery figures of the last 24 hours.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryFigures {
    /// Deliveries that succeeded.
    pub succeeded: i64,
    /// Failed attempts (each retry counts; a 429 that spent nothing does not).
    pub failed: i64,
    /// Deliveries that were dead-lettered.
    pub dead: i64,
    /// Deliveries waiting or in flight now.
    pub pending: i64,
    /// When the latest delivery succeeded (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_delivery_time: Option<String>,
    /// When the latest attempt failed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_failure_time: Option<String>,
}

/// A status condition, shaped like `metav1.Condition`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// One-word CamelCase reason.
    pub reason: String,
    /// Human-readable explanation.
    pub message: String,
    /// When `status` last changed (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: String,
    /// The `.metadata.generation` the condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl WebhookEndpointStatus {
    /// The `Ready` condition, if set.
    pub fn ready(&self) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == READY)
    }
}

/// Why a spec cannot be turned into endpoint settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SpecError {
    /// The offending field, in manifest spelling.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

/// Parses a duration field (`10s`, `1h30m`, `250ms`).
fn duration(field: &'static str, v: &str) -> Result<Duration, SpecError> {
    humantime::parse_duration(v).map_err(|e| SpecError {
        field,
        reason: format!("`{v}` is not a duration like 500ms, 10s or 1h30m ({e})"),
    })
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl WebhookEndpointSpec {
    /// The endpoint settings this spec asks for (the signing secret is resolved
    /// separately). The schema has already bounded the values; the store's
    /// validation still runs on the result.
    pub fn to_endpoint_spec(&self) -> Result<EndpointSpec, SpecError> {
        let retry = self.retry.clone().unwrap_or_default();
        let opt = |field, v: &Option<String>| -> Result<Option<i64>, SpecError> {
            v.as_deref()
                .map(|s| duration(field, s).map(millis))
                .transpose()
        };
        Ok(EndpointSpec {
            url: self.url.clone(),
            event_types: Some(self.event_types.clone()),
            description: self.description.clone(),
            secret: None,
            max_attempts: retry.max_attempts,
            retry_base_ms: opt("retry.initialBackoff", &retry.initial_backoff)?,
            retry_cap_ms: opt("retry.maxBackoff", &retry.max_backoff)?,
            timeout_ms: opt("timeout", &self.timeout)?,
            headers: Some(self.headers.clone()),
            rate_limit: self.rate_limit,
            max_in_flight: self.max_in_flight,
            format: self.format.map(|f| Format::from(f).as_str().to_string()),
            // Inline code; `transformationFrom` is read by the reconciler.
            transformation: self.transformation.clone(),
            ordering: self.ordering.map(|o| o.as_str().to_string()),
            batch_size: self.batch_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    fn spec(yaml: &str) -> WebhookEndpointSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn ordering_maps_to_the_endpoint_setting() {
        let fifo = spec("url: https://example.com/h\nordering: fifo\n");
        assert_eq!(
            fifo.to_endpoint_spec().unwrap().ordering.as_deref(),
            Some("fifo")
        );
        let default = spec("url: https://example.com/h\n");
        assert_eq!(default.to_endpoint_spec().unwrap().ordering, None);
        assert_eq!(default.to_endpoint_spec().unwrap().batch_size, None);
        let batched = spec("url: https://example.com/h\nordering: fifo\nbatchSize: 50\n");
        assert_eq!(batched.to_endpoint_spec().unwrap().batch_size, Some(50));
        assert!(serde_yaml::from_str::<WebhookEndpointSpec>(
            "url: https://example.com/h\nordering: lifo\n"
        )
        .is_err());
    }

    #[test]
    fn defaults_and_durations_translate_to_endpoint_settings() {
        let s = spec("url: https://example.com/hook\n");
        assert_eq!(s.event_types, vec!["*".to_string()]);
        let e = s.to_endpoint_spec().unwrap();
        assert_eq!(e.retry_base_ms, None);
        assert_eq!(e.event_types, Some(vec!["*".to_string()]));

        let s = spec(
            "url: https://example.com/hook\nretry: {maxAttempts: 3, initialBackoff: 1m30s, maxBackoff: 2h}\ntimeout: 250ms\nrateLimit: 5\nmaxInFlight: 2\n",
        );
        let e = s.to_endpoint_spec().unwrap();
        assert_eq!(e.max_attempts, Some(3));
        assert_eq!(e.retry_base_ms, Some(90_000));
        assert_eq!(e.retry_cap_ms, Some(7_200_000));
        assert_eq!(e.timeout_ms, Some(250));
        assert_eq!((e.rate_limit, e.max_in_flight), (Some(5), Some(2)));
        assert_eq!(e.format, None);
        let e = spec("url: https://discord.com/api/webhooks/1/x\nformat: discord\n")
            .to_endpoint_spec()
            .unwrap();
        assert_eq!(e.format().unwrap(), Format::Discord);
        assert!(serde_yaml::from_str::<WebhookEndpointSpec>(
            "url: https://x.dev/\nformat: teams\n"
        )
        .is_err());
    }

    #[test]
    fn a_bad_duration_names_its_field() {
        let s = spec("url: https://example.com/\ntimeout: soon\n");
        assert_eq!(s.to_endpoint_spec().unwrap_err().field, "timeout");
    }

    #[test]
    fn the_schema_carries_the_server_side_validation() {
        let crd = serde_json::to_string(&WebhookEndpoint::crd()).unwrap();
        for needle in [
            "x-kubernetes-validations",
            "url must be an absolute http:// or https:// URL",
            "retry.initialBackoff must not be longer than retry.maxBackoff",
            "batchSize above 1 needs ordering: fifo",
            r#""maximum":100"#,
            r#""maxProperties":20"#,
            r#""shortNames":["whe"]"#,
            r#""subresources":{"status":{}}"#,
            r#""x-kubernetes-list-type":"map""#,
            r#""enum":["standard","discord","slack"]"#,
        ] {
            assert!(crd.contains(needle), "the CRD lacks {needle}");
        }
    }
}
