//! Logging (text on a terminal, structured JSON otherwise), OpenTelemetry
//! traces ([`otel`]) and the Prometheus recorder.

pub mod otel;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::{LogFormat, TracingConfig};

pub use otel::OtelGuard;

/// Installs the global tracing subscriber: logs to stderr (so stdout stays
/// clean for command output, e.g. `hookit keys create`), and spans to the OTLP
/// collector when `tracing` is set. Keep the returned guard until exit: dropping
/// it flushes the spans still queued.
pub fn init(
    format: LogFormat,
    tracing: Option<&TracingConfig>,
) -> anyhow::Result<Option<OtelGuard>> {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let json = format.json(terminal);
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn,reqwest=warn"))
        // The OpenTelemetry spans are for the collector, not the log: were the
        // log layer to enable them, every delivery would pay for a span even
        // with tracing off.
        .add_directive(format!("{}=off", otel::TARGET).parse()?);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        // Colours only on a terminal: a log file or collector gets plain text.
        .with_ansi(terminal);
    let logs = if json {
        fmt.json().flatten_event(true).with_filter(filter).boxed()
    } else {
        fmt.compact().with_filter(filter).boxed()
    };
    let (spans, guard) = match tracing {
        None => (None, None),
        Some(cfg) => {
            let (provider, guard) = otel::provider(cfg)?;
            let layer = tracing_opentelemetry::layer()
                .with_tracer(otel::tracer(&provider))
                .with_filter(Targets::new().with_target(otel::TARGET, tracing::Level::TRACE));
            (Some(layer), Some(guard))
        }
    };
    // A second init keeps the first subscriber (and exports nothing).
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()
        .is_ok();
    if installed && guard.is_some() {
        otel::mark_enabled();
    }
    Ok(guard)
}

/// Installs the global metrics recorder and returns the handle that renders it.
pub fn init_metrics() -> Option<PrometheusHandle> {
    use metrics_exporter_prometheus::Matcher;
    let seconds = [
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];
    // Batch sizes are counts, not seconds: they need their own buckets.
    let sizes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
    PrometheusBuilder::new()
        .set_buckets(&seconds)
        .ok()?
        .set_buckets_for_metric(Matcher::Suffix("_batch_size".into()), &sizes)
        .ok()?
        .install_recorder()
        .ok()
}
