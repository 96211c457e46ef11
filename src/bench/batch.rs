//! `--scenario ingest-batch`: ingestion through `POST /v1/events/batch`, flat out,
//! over loopback HTTP with concurrent producers, each posting batches of
//! [`BATCH`] events. Measured like `ingest` (same deployment, same probes), so
//! the two rows compare per event.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use serde_json::json;
use uuid::Uuid;

use super::report::Row;
use super::scenarios::{bench_event_schema, costs, endpoints, probe, Ctx};
use super::Deployment;

/// Events per request.
pub(crate) const BATCH: usize = 100;

/// Producers posting batches: fewer than single-event publishers, since each
/// request carries [`BATCH`] events (16 × 100 = 1,600 events in flight).
const PRODUCERS: usize = 16;

/// One request body of `BATCH` events from producer `p`, request `n`, keyed or
/// not. Written by hand: the load generator shares the cores with HookIt, and
/// building `serde_json::Value`s per event would cost it more than the API.
fn body(p: usize, n: u64, keyed: bool) -> String {
    let mut s = String::with_capacity(BATCH * 140);
    s.push_str("{\"events\":[");
    for i in 0..BATCH {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(
            s,
            "{{\"event_type\":\"bench.event\",\"payload\":{{\"publisher\":{p},\"n\":{n},\"i\":{i},\"amount\":1999,\"currency\":\"EUR\"}}"
        );
        if keyed {
            let _ = write!(s, ",\"idempotency_key\":\"{}\"", Uuid::new_v4());
        }
        s.push('}');
    }
    s.push_str("]}");
    s
}

/// Producers posting batches until `until`; returns the events accepted (items
/// whose result is `accepted`).
async fn produce(base: &str, key: &str, keyed: bool, until: Instant) -> anyhow::Result<u64> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(PRODUCERS)
        .build()?;
    let ok = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        let (http, ok, url, key) = (
            http.clone(),
            ok.clone(),
            format!("{base}/v1/events/batch"),
            key.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < until {
                n += 1;
                let r = http
                    .post(&url)
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(body(p, n, keyed))
                    .send()
                    .await;
                let Ok(r) = r else { continue };
                if !r.status().is_success() {
                    continue;
                }
                #[derive(serde::Deserialize)]
                struct Tally {
                    accepted: u64,
                }
                if let Ok(t) = r.json::<Tally>().await {
                    ok.fetch_add(t.accepted, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(ok.load(Ordering::Relaxed))
}

pub(crate) async fn ingest_batch(ctx: &Ctx<'_>) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    // (keyed, checked against a JSON Schema from the event-type catalog)
    for (keyed, schema) in [(false, false), (true, false), (false, true)] {
        let url = ctx.server.database("hookit_bench").await?;
        let d = Deployment::start(&url, 0, &[]).await?;
        endpoints(&d, ctx.receiver, 1, json!({})).await?;
        if schema {
            bench_event_schema(&d).await?;
        }
        let (api, _) = d.pids();
        // Check the route answers as expected before measuring it.
        let warm = produce(
            &d.base,
            &d.key,
            keyed,
            Instant::now() + Duration::from_secs(1),
        )
        .await?;
        if warm == 0 {
            return Err(anyhow!(
                "ingest-batch: no event was accepted while warming up"
            ));
        }
        let a = probe(&d.store, &api).await?;
        let n = produce(&d.base, &d.key, keyed, Instant::now() + ctx.args.duration).await?;
        let b = probe(&d.store, &api).await?;
        let mut row = Row {
            scenario: "ingest-batch".into(),
            case: format!(
                "1 endpoint, {}{}, batches of {BATCH}",
                if keyed { "keyed" } else { "unkeyed" },
                if schema { ", schema" } else { "" }
            ),
            rate: n as f64 / (b.at - a.at).as_secs_f64(),
            unit: "events/s".into(),
            note: format!("{PRODUCERS} producers; per event"),
            ..Default::default()
        };
        costs(&mut row, &a, &b, n as f64, &api);
        rows.push(row);
        d.stop().await;
        ctx.server.drop_database("hookit_bench").await;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_the_documented_shape() {
        for keyed in [false, true] {
            let v: serde_json::Value = serde_json::from_str(&body(3, 7, keyed)).unwrap();
            let events = v["events"].as_array().unwrap();
            assert_eq!(events.len(), BATCH);
            assert_eq!(events[5]["payload"]["i"], 5);
            assert_eq!(events[5]["idempotency_key"].is_string(), keyed);
        }
    }
}
