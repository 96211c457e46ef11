//! OpenTelemetry traces: the exporter, and the W3C trace-context plumbing the
//! API and the worker use to join their spans to the publisher's trace.
//!
//! HookIt's spans are ordinary `tracing` spans with target [`TARGET`]. Only the
//! OpenTelemetry layer listens to that target (the log layer is told to ignore
//! it), so with tracing off no layer is interested and creating one of these
//! spans costs a cached callsite check: nothing is allocated per delivery.
//!
//! The exporter is the SDK's batch processor on its own thread, posting OTLP
//! over HTTP; a slow or absent collector costs dropped spans (the queue is
//! bounded), never a delayed delivery.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
pub use opentelemetry::trace::SpanContext;
use opentelemetry::trace::{Status, TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::{OtlpProtocol, Root, SamplerChoice, TracingConfig};

/// The `tracing` target of every span meant for OpenTelemetry.
pub const TARGET: &str = "hookit::otel";

static ON: AtomicBool = AtomicBool::new(false);

/// Whether spans are being exported (set once the layer is installed).
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Keeps the exporter alive; dropping it flushes what is queued (bounded by
/// the export timeout), so a clean exit loses no spans.
pub struct OtelGuard {
    provider: SdkTracerProvider,
}

impl Drop for OtelGuard {
    fn drop(&mut self) {
        ON.store(false, Ordering::Relaxed);
        if let Err(e) = self.provider.shutdown() {
            eprintln!("hookit: flushing the last spans failed: {e}");
        }
    }
}

/// The tracer provider for `cfg`, and the guard that flushes it.
pub(super) fn provider(cfg: &TracingConfig) -> anyhow::Result<(SdkTracerProvider, OtelGuard)> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(cfg.endpoint.clone())
        .with_protocol(match cfg.protocol {
            OtlpProtocol::HttpProtobuf => Protocol::HttpBinary,
            OtlpProtocol::HttpJson => Protocol::HttpJson,
        })
        .with_timeout(cfg.timeout)
        .with_headers(cfg.headers.iter().cloned().collect::<HashMap<_, _>>())
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler(cfg.sampler))
        .with_resource(
            Resource::builder()
                .with_service_name(cfg.service_name.clone())
                .build(),
        )
        .build();
    Ok((provider.clone(), OtelGuard { provider }))
}

/// The tracer the layer records into.
pub(super) fn tracer(provider: &SdkTracerProvider) -> opentelemetry_sdk::trace::Tracer {
    provider.tracer("hookit")
}

/// Called once the layer is the global subscriber's.
pub(super) fn mark_enabled() {
    ON.store(true, Ordering::Relaxed);
}

fn sampler(choice: SamplerChoice) -> Sampler {
    let root = |r: Root| match r {
        Root::AlwaysOn => Sampler::AlwaysOn,
        Root::AlwaysOff => Sampler::AlwaysOff,
        Root::Ratio(x) => Sampler::TraceIdRatioBased(x),
    };
    match choice {
        SamplerChoice::AlwaysOn => Sampler::AlwaysOn,
        SamplerChoice::AlwaysOff => Sampler::AlwaysOff,
        SamplerChoice::Ratio(x) => Sampler::TraceIdRatioBased(x),
        SamplerChoice::ParentBased(r) => Sampler::ParentBased(Box::new(root(r))),
    }
}

/// A carrier holding just the one header HookIt stores.
struct Traceparent<'a>(&'a str);

impl Extractor for Traceparent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }
    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

/// Makes `span` a child of the remote span `traceparent` names, if it names a
/// valid one; otherwise `span` starts a trace of its own.
pub fn adopt_parent(span: &Span, traceparent: Option<&str>) {
    if span.is_disabled() {
        return;
    }
    let Some(tp) = traceparent else { return };
    let cx = TraceContextPropagator::new().extract(&Traceparent(tp));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The `traceparent` naming `span`, to send on so the next hop's spans are its
/// children; None when `span` is not exported.
pub fn traceparent_of(span: &Span) -> Option<String> {
    context_of(span).map(|cx| cx.traceparent())
}

/// What a span's context gives: the `traceparent` naming it and, when its
/// trace is sampled, its span context to link to. One lookup of the span's
/// context serves both (each lookup costs the layer a visit of the span).
pub struct SpanRef(opentelemetry::Context);

impl SpanRef {
    /// The `traceparent` header naming the span.
    pub fn traceparent(&self) -> String {
        let mut carrier: HashMap<String, String> = HashMap::with_capacity(1);
        TraceContextPropagator::new().inject_context(&self.0, &mut carrier);
        carrier.remove("traceparent").unwrap_or_default()
    }

    /// The span's context if its trace is sampled (see [`span_context`]).
    pub fn sampled(&self) -> Option<SpanContext> {
        let sc = self.0.span().span_context().clone();
        (sc.is_valid() && sc.is_sampled()).then_some(sc)
    }
}

/// `span`'s context; None when it is not exported.
pub fn context_of(span: &Span) -> Option<SpanRef> {
    if span.is_disabled() || !enabled() {
        return None;
    }
    Some(SpanRef(span.context()))
}

/// `span`'s own context, for spans of other traces to link to; None when
/// `span` is not exported (tracing off, or the sampler dropped its trace: a
/// link to a span nobody will see costs and shows nothing).
pub fn span_context(span: &Span) -> Option<SpanContext> {
    context_of(span).and_then(|cx| cx.sampled())
}

/// Links `span` to `to`, a span of another trace it is related to (an
/// attempt and the claim that leased its delivery; a completion batch and the
/// attempts it wrote). A no-op when either is not exported.
pub fn link(span: &Span, to: Option<&SpanContext>) {
    if let Some(to) = to {
        if !span.is_disabled() {
            span.add_link(to.clone());
        }
    }
}

/// The server span of one ingestion request (`name` is `"POST /v1/events"` or
/// the like), a child of the publisher's `traceparent` when it sent one. The
/// handler records `hookit.event.id`/`hookit.event.type` (single events) or
/// `hookit.events` (batches), then [`responded`].
pub fn ingest_span(name: &'static str, route: &'static str, traceparent: Option<&str>) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        parent: None,
        "ingest",
        otel.name = name,
        otel.kind = "server",
        http.request.method = "POST",
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        hookit.tenant = tracing::field::Empty,
        hookit.event.id = tracing::field::Empty,
        hookit.event.type = tracing::field::Empty,
        hookit.events = tracing::field::Empty,
    );
    adopt_parent(&span, traceparent);
    span
}

/// Records the response status; a 5xx marks a server span failed (a 4xx is
/// the caller's error, not ours, per the semantic conventions).
pub fn responded(span: &Span, status: u16) {
    if span.is_disabled() {
        return;
    }
    span.record("http.response.status_code", status);
    if status >= 500 {
        fail(span, format!("HTTP {status}"));
    }
}

/// Marks `span` failed with a short, secret-free description.
pub fn fail(span: &Span, description: impl Into<String>) {
    if !span.is_disabled() {
        span.set_status(Status::error(description.into()));
    }
}

/// The URL as a span may show it: scheme, host, port and path, never the
/// query (tokens live there) or user info.
pub fn redacted_url(url: &url::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_in_a_span_keeps_no_query_and_no_credentials() {
        let u =
            url::Url::parse("https://user:pw@hooks.example:8443/in/abc?token=s3cret#x").unwrap();
        assert_eq!(redacted_url(&u), "https://hooks.example:8443/in/abc");
    }
}
