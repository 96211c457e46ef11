//! Logging (text on a terminal, structured JSON otherwise) and the Prometheus recorder.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber. Logs go to stderr, so stdout stays
/// clean for command output (e.g. `hookit keys create`).
pub fn init_logging(format: crate::config::LogFormat) {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let json = format.json(terminal);
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn,reqwest=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        // Colours only on a terminal: a log file or collector gets plain text.
        .with_ansi(terminal);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.compact().try_init()
    };
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
