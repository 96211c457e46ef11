//! The worker's OpenTelemetry spans (see [`crate::telemetry::otel`]): one per
//! delivery attempt, a child of the publisher's `traceparent` so the user sees
//! their service → HookIt → the receiver as one trace, and one per claim and
//! per completion batch, each a trace of its own (a batch serves many traces)
//! tied to the attempts it served by span links: an attempt links to its claim,
//! a completion to the attempts it wrote.
//!
//! What a span carries: the HTTP client semantic-convention attributes, the
//! endpoint, delivery and event ids, the attempt number. Never the payload, a
//! header value, a secret, or the URL's query.

use tracing::field::Empty;
use tracing::Span;

use crate::db::deliveries::Claimed;
use crate::domain::ids::{DeliveryId, EndpointId, EventId};
use crate::domain::state::Outcome;
use crate::telemetry::otel::{self, TARGET};

use super::prepare::Outgoing;

/// The span of one attempt to send `out`; disabled (free) when tracing is off.
pub(super) fn attempt(d: &Claimed, out: &Outgoing) -> Span {
    let method = out.method.as_str();
    // `parent: None`: the trace is the publisher's, not the worker task's.
    let span = tracing::info_span!(
        target: TARGET,
        parent: None,
        "attempt",
        otel.name = method,
        otel.kind = "client",
        http.request.method = method,
        server.address = Empty,
        server.port = Empty,
        url.full = Empty,
        http.response.status_code = Empty,
        error.type = Empty,
        hookit.endpoint.id = Empty,
        hookit.delivery.id = Empty,
        hookit.event.id = Empty,
        hookit.event.type = d.event_type.as_str(),
        hookit.attempt = d.attempts + 1,
    );
    if span.is_disabled() {
        return span;
    }
    otel::adopt_parent(&span, d.traceparent.as_deref());
    span.record(
        "hookit.endpoint.id",
        EndpointId::from_uuid(d.endpoint_id).to_string(),
    );
    span.record(
        "hookit.delivery.id",
        DeliveryId::from_uuid(d.id).to_string(),
    );
    span.record(
        "hookit.event.id",
        EventId::from_uuid(d.event_id).to_string(),
    );
    if let Ok(url) = url::Url::parse(&out.url) {
        if let Some(host) = url.host_str() {
            span.record("server.address", host);
        }
        if let Some(port) = url.port_or_known_default() {
            span.record("server.port", port);
        }
        span.record("url.full", otel::redacted_url(&url));
    }
    span
}

/// The `traceparent` the receiver gets: the attempt span's own (`span`, from
/// [`otel::context_of`]) when spans are exported (the receiver's spans become
/// its children), else the publisher's as it came.
pub(super) fn traceparent_to_send(span: Option<&otel::SpanRef>, d: &Claimed) -> Option<String> {
    span.map(|s| s.traceparent())
        .or_else(|| d.traceparent.clone())
}

/// Records what the attempt came to.
pub(super) fn outcome(span: &Span, outcome: &Outcome) {
    if span.is_disabled() {
        return;
    }
    if let Some(status) = outcome.status() {
        span.record("http.response.status_code", status);
    }
    match outcome {
        Outcome::Delivered { .. } => {}
        Outcome::Failed {
            status: Some(s), ..
        }
        | Outcome::RateLimited { status: s, .. } => {
            // The semantic conventions: a client span's error.type is the status.
            span.record("error.type", s.to_string());
            otel::fail(span, format!("HTTP {s}"));
        }
        Outcome::Failed {
            status: None,
            error,
            ..
        } => {
            let kind = if error.starts_with("timed out") {
                "timeout"
            } else if error.starts_with("connection failed") {
                "connection"
            } else if error.starts_with("refused by SSRF") {
                "ssrf"
            } else {
                "request"
            };
            span.record("error.type", kind);
            // The description is the attempt log's: short, secret-free, no URL.
            otel::fail(span, error.clone());
        }
        Outcome::Refused { error } => {
            span.record("error.type", "transformation");
            otel::fail(span, error.clone());
        }
        Outcome::Cancelled => {}
    }
}

/// The span of one claim query.
pub(super) fn claim(worker: uuid::Uuid, wanted: usize) -> Span {
    tracing::info_span!(
        target: TARGET,
        parent: None,
        "claim",
        otel.kind = "internal",
        hookit.worker.id = %worker,
        hookit.claim.wanted = wanted,
        hookit.claim.got = Empty,
    )
}

/// The span of one completion batch's write.
pub(super) fn completion(worker: uuid::Uuid, batch: usize) -> Span {
    tracing::info_span!(
        target: TARGET,
        parent: None,
        "complete",
        otel.kind = "internal",
        hookit.worker.id = %worker,
        hookit.completion.batch = batch,
        hookit.completion.written = Empty,
    )
}
