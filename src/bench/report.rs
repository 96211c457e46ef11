//! Benchmark rows, as a table or JSON.

use serde::Serialize;

/// One measured case.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Row {
    /// ingest, deliver, latency, backlog, noisy.
    pub scenario: String,
    /// The case, e.g. "1 endpoint, keyed".
    pub case: String,
    /// Throughput in `unit`.
    pub rate: f64,
    /// `events/s` or `deliveries/s`.
    pub unit: String,
    /// Ingest-to-delivery latency percentiles.
    pub p50_ms: Option<f64>,
    /// 90th percentile.
    pub p90_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// HookIt processes' CPU seconds per 1,000 items.
    pub hookit_cpu_s_per_1k: Option<f64>,
    /// Postgres CPU seconds per 1,000 items.
    pub postgres_cpu_s_per_1k: Option<f64>,
    /// Peak RSS of the largest HookIt process, MiB.
    pub peak_rss_mib: Option<f64>,
    /// WAL bytes per item.
    pub wal_bytes_per_item: Option<f64>,
    /// Database transactions (≈ round trips: every statement is its own) per item.
    pub db_xacts_per_item: Option<f64>,
    /// Anything else worth saying.
    pub note: String,
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map(|x| format!("{x:.prec$}"))
        .unwrap_or_else(|| "-".into())
}

/// A one-line progress summary.
pub fn one_line(r: &Row) -> String {
    format!(
        "[{}] {}: {:.0} {} p50={} p99={} cpu/1k hookit={} pg={} rss={} wal/item={} xacts/item={} {}",
        r.scenario,
        r.case,
        r.rate,
        r.unit,
        opt(r.p50_ms, 1),
        opt(r.p99_ms, 1),
        opt(r.hookit_cpu_s_per_1k, 3),
        opt(r.postgres_cpu_s_per_1k, 3),
        opt(r.peak_rss_mib, 0),
        opt(r.wal_bytes_per_item, 0),
        opt(r.db_xacts_per_item, 3),
        r.note
    )
}

/// Prints an aligned table.
pub fn table(rows: &[Row]) {
    let header = [
        "scenario",
        "case",
        "rate",
        "unit",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "cpu s/1k hookit",
        "cpu s/1k pg",
        "peak RSS MiB",
        "WAL B/item",
        "xacts/item",
        "note",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.scenario.clone(),
                r.case.clone(),
                format!("{:.0}", r.rate),
                r.unit.clone(),
                opt(r.p50_ms, 1),
                opt(r.p90_ms, 1),
                opt(r.p99_ms, 1),
                opt(r.hookit_cpu_s_per_1k, 3),
                opt(r.postgres_cpu_s_per_1k, 3),
                opt(r.peak_rss_mib, 0),
                opt(r.wal_bytes_per_item, 0),
                opt(r.db_xacts_per_item, 3),
                r.note.clone(),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &cells {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cols: Vec<&str>| {
        let parts: Vec<String> = cols
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{:<w$}", c, w = widths[i]))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in &cells {
        line(row.iter().map(String::as_str).collect());
    }
}
