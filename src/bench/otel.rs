//! The `tracing` scenario: what OpenTelemetry export costs a delivery. The same
//! closed-loop delivery case three times on one run: export off, on with every
//! trace kept, and on with 10 % of traces kept (`parentbased_traceidratio`,
//! the setting a busy installation would use). The spans go over OTLP/HTTP to a
//! sink in this (the benchmark's) process that reads and discards them, so the
//! HookIt CPU measured is the cost of making and exporting spans, not of a
//! collector's work.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::routing::post;
use serde_json::json;

use super::report::Row;
use super::scenarios::{deliver_case_with, Ctx};

pub(crate) async fn tracing(ctx: &Ctx<'_>) -> anyhow::Result<Vec<Row>> {
    let (workers, n_ep) = (1, 10);
    let (port, bytes, requests) = sink().await?;
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut rows = Vec::new();
    let cases: [(&str, Option<&str>); 3] = [
        ("export off", None),
        ("export on, every trace", Some("always_on")),
        ("export on, 10 % of traces", Some("traceidratio")),
    ];
    for (label, sampler) in cases {
        let mut env: Vec<(&str, &str)> = Vec::new();
        if let Some(sampler) = sampler {
            env.extend([
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
                ("OTEL_TRACES_SAMPLER", sampler),
                ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
            ]);
        }
        let (b0, r0) = (
            bytes.load(Ordering::Relaxed),
            requests.load(Ordering::Relaxed),
        );
        let mut row = deliver_case_with(ctx, n_ep, workers, json!({}), &env).await?;
        let (b1, r1) = (
            bytes.load(Ordering::Relaxed),
            requests.load(Ordering::Relaxed),
        );
        row.scenario = "tracing".into();
        row.case = format!("{n_ep} endpoints, {label}");
        if sampler.is_some() {
            row.note = format!(
                "{} OTLP requests, {:.1} MB of spans; {}",
                r1 - r0,
                (b1 - b0) as f64 / 1e6,
                row.note
            );
        }
        rows.push(row);
    }
    let base = (rows[0].hookit_cpu_s_per_1k, rows[0].rate);
    for row in rows.iter_mut().skip(1) {
        if let (Some(a), Some(b)) = (base.0, row.hookit_cpu_s_per_1k) {
            // CPU s per 1,000 deliveries → µs per delivery.
            row.note = format!(
                "{:+.1} µs HookIt CPU per delivery, {:.0} % of the throughput with export off; {}",
                (b - a) * 1000.0,
                100.0 * row.rate / base.1.max(f64::MIN_POSITIVE),
                row.note
            );
        }
    }
    Ok(rows)
}

/// An OTLP/HTTP endpoint that counts what it is sent and answers success.
async fn sink() -> anyhow::Result<(u16, Arc<AtomicU64>, Arc<AtomicU64>)> {
    let bytes = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let (b, r) = (bytes.clone(), requests.clone());
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            b.fetch_add(body.len() as u64, Ordering::Relaxed);
            r.fetch_add(1, Ordering::Relaxed);
            // An empty ExportTraceServiceResponse: full success.
            async { ([("content-type", "application/x-protobuf")], Bytes::new()) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((port, bytes, requests))
}
