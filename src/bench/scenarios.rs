//! The benchmark scenarios. Each case gets a fresh database and fresh processes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use serde_json::json;
use uuid::Uuid;

use super::procstat;
use super::receiver::Tally;
use super::report::Row;
use super::{BenchArgs, Deployment, Server};
use crate::db::Store;

/// What every scenario gets.
pub(crate) struct Ctx<'a> {
    pub(crate) args: &'a BenchArgs,
    pub(crate) server: &'a Server,
    pub(crate) receiver: &'a str,
    pub(crate) tally: &'a Arc<Tally>,
}

/// Resource counters at one instant.
pub(super) struct Probe {
    pub(super) at: Instant,
    hookit_cpu: f64,
    pg_cpu: f64,
    wal: f64,
    xacts: f64,
}

pub(super) async fn probe(store: &Store, pids: &[u32]) -> anyhow::Result<Probe> {
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(store.pool())
        .await?;
    let (wal, xacts): (f64, f64) = sqlx::query_as(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8,
                (SELECT sum(xact_commit + xact_rollback)::float8 FROM pg_stat_database)",
    )
    .fetch_one(store.pool())
    .await?;
    Ok(Probe {
        at: Instant::now(),
        hookit_cpu: pids.iter().filter_map(|p| procstat::cpu_seconds(*p)).sum(),
        pg_cpu: procstat::postgres_cpu_seconds(),
        wal,
        xacts,
    })
}

/// Fills a row's resource figures from two probes over `items` items.
pub(super) fn costs(row: &mut Row, a: &Probe, b: &Probe, items: f64, pids: &[u32]) {
    if items <= 0.0 {
        return;
    }
    row.hookit_cpu_s_per_1k = Some((b.hookit_cpu - a.hookit_cpu) / items * 1000.0);
    row.postgres_cpu_s_per_1k = Some((b.pg_cpu - a.pg_cpu) / items * 1000.0);
    row.wal_bytes_per_item = Some((b.wal - a.wal) / items);
    row.db_xacts_per_item = Some((b.xacts - a.xacts) / items);
    row.peak_rss_mib = pids
        .iter()
        .filter_map(|p| procstat::peak_rss_mib(*p))
        .reduce(f64::max);
}

pub(super) fn percentiles(row: &mut Row, mut lat: Vec<f64>) {
    if lat.is_empty() {
        return;
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
    row.p50_ms = Some(at(0.50));
    row.p90_ms = Some(at(0.90));
    row.p99_ms = Some(at(0.99));
}

/// How publishers pace themselves.
#[derive(Clone)]
pub(super) enum Pace {
    /// As fast as the API answers (ingestion throughput).
    Flat,
    /// A fixed offered rate, events/s in total (latency at a given load).
    Rate(f64),
    /// A closed loop: each event takes `per_event` credits (its deliveries) and
    /// the receiver returns one per delivery, so the queue cannot grow without
    /// bound. Sustained delivery is measured this way: with an open loop the
    /// backlog grows, and the cost of ingesting events that are never delivered
    /// within the window would be charged to the ones that are.
    Window(Arc<tokio::sync::Semaphore>, u32),
}

/// Deliveries outstanding in a closed-loop case: several claim batches (128), so
/// workers never run dry, yet a queue short enough that the reported latency is
/// the system's and not the benchmark's (Little's law: 512 at 5,000/s is ~100 ms).
pub(super) const WINDOW: usize = 512;

/// Publishers: `n` tasks posting events until `until`, paced by `pace`.
/// Returns the number of 2xx answers.
pub(super) async fn publish(
    base: &str,
    key: &str,
    n: usize,
    keyed: bool,
    until: Instant,
    pace: Pace,
) -> u64 {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(n)
        .build()
        .unwrap_or_default();
    let ok = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for p in 0..n {
        let (http, ok, url, key) = (
            http.clone(),
            ok.clone(),
            format!("{base}/v1/events"),
            key.to_string(),
        );
        let pace = pace.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = match pace {
                Pace::Rate(r) => {
                    let mut i = tokio::time::interval(Duration::from_secs_f64(n as f64 / r));
                    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    Some(i)
                }
                _ => None,
            };
            let mut i = 0u64;
            while Instant::now() < until {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                if let Pace::Window(sem, per_event) = &pace {
                    match tokio::time::timeout_at(until.into(), sem.acquire_many(*per_event)).await {
                        Ok(Ok(permit)) => permit.forget(),
                        _ => break,
                    }
                }
                i += 1;
                let body = json!({"event_type": "bench.event", "payload": {"publisher": p, "n": i, "amount": 1999, "currency": "EUR"}});
                let mut req = http.post(&url).bearer_auth(&key).json(&body);
                if keyed {
                    req = req.header("idempotency-key", Uuid::new_v4().to_string());
                }
                let accepted = matches!(req.send().await, Ok(r) if r.status().is_success());
                if accepted {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else if let Pace::Window(sem, per_event) = &pace {
                    // Nothing will be delivered for it: give the credits back.
                    sem.add_permits(*per_event as usize);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    ok.load(Ordering::Relaxed)
}

pub(super) async fn endpoints(
    d: &Deployment,
    receiver: &str,
    n: usize,
    extra: serde_json::Value,
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    for i in 0..n {
        let mut body = json!({"url": format!("{receiver}/ep{i}")});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let r = http
            .post(format!("{}/v1/endpoints", d.base))
            .bearer_auth(&d.key)
            .json(&body)
            .send()
            .await?;
        if !r.status().is_success() {
            return Err(anyhow!(
                "creating a benchmark endpoint failed: {}",
                r.text().await.unwrap_or_default()
            ));
        }
    }
    Ok(())
}

/// Registers `bench.event` in the catalog with a schema that every benchmark
/// payload satisfies, so the schema cases measure the check on the hot path
/// (every payload parsed and validated) without refusing anything.
pub(super) async fn bench_event_schema(d: &Deployment) -> anyhow::Result<()> {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/event-types", d.base))
        .bearer_auth(&d.key)
        .json(&json!({
            "name": "bench.event",
            "description": "A benchmark event.",
            "schema": {
                "type": "object",
                "required": ["publisher", "n", "amount", "currency"],
                "properties": {
                    "publisher": {"type": "integer", "minimum": 0},
                    "n": {"type": "integer", "minimum": 0},
                    "i": {"type": "integer", "minimum": 0},
                    "amount": {"type": "integer", "minimum": 0},
                    "currency": {"type": "string", "enum": ["EUR", "USD", "GBP"]}
                },
                "additionalProperties": false
            },
            "example": {"publisher": 0, "n": 1, "amount": 1999, "currency": "EUR"}
        }))
        .send()
        .await?;
    if !r.status().is_success() {
        return Err(anyhow!(
            "registering the benchmark event type failed: {}",
            r.text().await.unwrap_or_default()
        ));
    }
    Ok(())
}

async fn wait_delivered(tally: &Tally, n: u64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while tally.delivered.load(Ordering::Relaxed) < n {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

pub(crate) async fn ingest(ctx: &Ctx<'_>) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    // (endpoints, keyed, checked against a JSON Schema from the catalog)
    let cases = [
        (1usize, false, false),
        (1, true, false),
        (10, false, false),
        (10, true, false),
        (1, false, true),
    ];
    for (n_ep, keyed, schema) in cases {
        let url = ctx.server.database("hookit_bench").await?;
        let d = Deployment::start(&url, 0, &[]).await?;
        endpoints(&d, ctx.receiver, n_ep, json!({})).await?;
        if schema {
            bench_event_schema(&d).await?;
        }
        let (api, _) = d.pids();
        publish(
            &d.base,
            &d.key,
            ctx.args.publishers,
            keyed,
            Instant::now() + Duration::from_secs(1),
            Pace::Flat,
        )
        .await;
        let a = probe(&d.store, &api).await?;
        let n = publish(
            &d.base,
            &d.key,
            ctx.args.publishers,
            keyed,
            Instant::now() + ctx.args.duration,
            Pace::Flat,
        )
        .await;
        let b = probe(&d.store, &api).await?;
        let mut row = Row {
            scenario: "ingest".into(),
            case: format!(
                "{n_ep} endpoint{}, {}{}",
                if n_ep > 1 { "s" } else { "" },
                if keyed { "keyed" } else { "unkeyed" },
                if schema { ", schema" } else { "" }
            ),
            rate: n as f64 / (b.at - a.at).as_secs_f64(),
            unit: "events/s".into(),
            note: format!("{} publishers; per event", ctx.args.publishers),
            ..Default::default()
        };
        costs(&mut row, &a, &b, n as f64, &api);
        rows.push(row);
        d.stop().await;
        ctx.server.drop_database("hookit_bench").await;
    }
    Ok(rows)
}

pub(crate) async fn deliver(ctx: &Ctx<'_>) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for n_ep in [1usize, 10] {
        for &workers in &ctx.args.workers {
            rows.push(deliver_case(ctx, n_ep, workers, json!({})).await?);
        }
    }
    Ok(rows)
}

/// One case of the deliver scenario: `n_ep` endpoints created with the extra
/// settings `endpoint`, `workers` worker processes, a closed loop of deliveries.
pub(super) async fn deliver_case(
    ctx: &Ctx<'_>,
    n_ep: usize,
    workers: usize,
    endpoint: serde_json::Value,
) -> anyhow::Result<Row> {
    deliver_case_with(ctx, n_ep, workers, endpoint, &[]).await
}

/// [`deliver_case`] with `env` set in every HookIt process.
pub(super) async fn deliver_case_with(
    ctx: &Ctx<'_>,
    n_ep: usize,
    workers: usize,
    endpoint: serde_json::Value,
    env: &[(&str, &str)],
) -> anyhow::Result<Row> {
    let url = ctx.server.database("hookit_bench").await?;
    let d = Deployment::start_with(&url, workers, &[], env).await?;
    endpoints(&d, ctx.receiver, n_ep, endpoint).await?;
    let (api, wk) = d.pids();
    let all: Vec<u32> = api.iter().chain(wk.iter()).copied().collect();
    ctx.tally.reset();
    let credits = ctx.tally.credit_window(WINDOW);
    let warmup = Duration::from_secs(2);
    let end = Instant::now() + warmup + ctx.args.duration;
    let publishing = tokio::spawn(publish_owned(
        d.base.clone(),
        d.key.clone(),
        ctx.args.publishers,
        end,
        Pace::Window(credits, n_ep as u32),
    ));
    tokio::time::sleep(warmup).await;
    ctx.tally.take_latencies();
    let a = probe(&d.store, &all).await?;
    let before = ctx.tally.delivered.load(Ordering::Relaxed);
    tokio::time::sleep_until(end.into()).await;
    let after = ctx.tally.delivered.load(Ordering::Relaxed);
    let b = probe(&d.store, &all).await?;
    let published = publishing.await.unwrap_or(0);
    let delivered = (after - before) as f64;
    let mut row = Row {
        scenario: "deliver".into(),
        case: format!(
            "{n_ep} endpoint{}, {workers} worker{}",
            if n_ep > 1 { "s" } else { "" },
            if workers > 1 { "s" } else { "" }
        ),
        rate: delivered / (b.at - a.at).as_secs_f64(),
        unit: "deliveries/s".into(),
        note: format!(
            "end to end, closed loop of {WINDOW} deliveries, {} publishers; {published} events accepted; duplicates {}",
            ctx.args.publishers,
            ctx.tally.duplicates.load(Ordering::Relaxed)
        ),
        ..Default::default()
    };
    percentiles(&mut row, ctx.tally.take_latencies());
    costs(&mut row, &a, &b, delivered, &all);
    d.stop().await;
    ctx.server.drop_database("hookit_bench").await;
    Ok(row)
}

pub(super) async fn publish_owned(
    base: String,
    key: String,
    n: usize,
    until: Instant,
    pace: Pace,
) -> u64 {
    publish(&base, &key, n, false, until, pace).await
}

pub(crate) async fn latency(ctx: &Ctx<'_>) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &rate in &ctx.args.rates {
        let url = ctx.server.database("hookit_bench").await?;
        let d = Deployment::start(&url, 1, &[]).await?;
        endpoints(&d, ctx.receiver, 1, json!({})).await?;
        let (api, wk) = d.pids();
        let all: Vec<u32> = api.iter().chain(wk.iter()).copied().collect();
        ctx.tally.reset();
        let publishers = ctx.args.publishers.min(rate as usize).max(1);
        let a = probe(&d.store, &all).await?;
        let sent = publish(
            &d.base,
            &d.key,
            publishers,
            false,
            Instant::now() + ctx.args.duration,
            Pace::Rate(rate as f64),
        )
        .await;
        wait_delivered(ctx.tally, sent, Duration::from_secs(30)).await;
        let b = probe(&d.store, &all).await?;
        let delivered = ctx.tally.delivered.load(Ordering::Relaxed);
        let mut row = Row {
            scenario: "latency".into(),
            case: format!("{rate} events/s offered"),
            rate: sent as f64 / ctx.args.duration.as_secs_f64(),
            unit: "events/s".into(),
            note: format!("{delivered}/{sent} delivered; 1 worker"),
            ..Default::default()
        };
        percentiles(&mut row, ctx.tally.take_latencies());
        costs(&mut row, &a, &b, delivered as f64, &all);
        rows.push(row);
        d.stop().await;
        ctx.server.drop_database("hookit_bench").await;
    }
    Ok(rows)
}

/// Scenarios against a running HookIt (`--target`): throughput and latency only.
pub(crate) async fn remote(
    scenario: &str,
    args: &BenchArgs,
    target: &str,
    key: &str,
    receiver: &str,
    tally: &Arc<Tally>,
) -> anyhow::Result<Vec<Row>> {
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{target}/v1/endpoints"))
        .bearer_auth(key)
        .json(&json!({"url": format!("{receiver}/remote"), "event_types": ["bench.*"]}))
        .send()
        .await?;
    if !r.status().is_success() {
        return Err(anyhow!(
            "creating the benchmark endpoint on the target failed (is 127.0.0.0/8 allowed?): {}",
            r.text().await.unwrap_or_default()
        ));
    }
    tally.reset();
    let row = match scenario {
        "ingest" => {
            let t = Instant::now();
            let n = publish(
                target,
                key,
                args.publishers,
                true,
                Instant::now() + args.duration,
                Pace::Flat,
            )
            .await;
            Row {
                scenario: "ingest".into(),
                case: "remote, keyed".into(),
                rate: n as f64 / t.elapsed().as_secs_f64(),
                unit: "events/s".into(),
                ..Default::default()
            }
        }
        "deliver" | "latency" => {
            let rate =
                (scenario == "latency").then(|| args.rates.first().copied().unwrap_or(500) as f64);
            let t = Instant::now();
            let n = publish(
                target,
                key,
                args.publishers,
                false,
                Instant::now() + args.duration,
                rate.map_or(Pace::Flat, Pace::Rate),
            )
            .await;
            wait_delivered(tally, n, Duration::from_secs(60)).await;
            let mut row = Row {
                scenario: scenario.into(),
                case: "remote".into(),
                rate: tally.delivered.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64(),
                unit: "deliveries/s".into(),
                note: format!("{n} published"),
                ..Default::default()
            };
            percentiles(&mut row, tally.take_latencies());
            row
        }
        other => {
            return Err(anyhow!(
                "--scenario {other} needs a HookIt the benchmark starts itself (drop --target)"
            ))
        }
    };
    Ok(vec![row])
}
