//! `--scenario scale` (not in the default set): how far more processes carry on
//! one Postgres. The deliver closed loop (10 endpoints) with 1, 2, 4 and 8 worker
//! processes, then flat-out ingestion through 1 to 4 API processes. Each case
//! also reads Postgres's own view of the run, which is what says where and why
//! the curve bends:
//! - what the database's active backends were doing, sampled every 50 ms from
//!   `pg_stat_activity`: on CPU (no wait event), `Lock` (row and transaction
//!   locks: two transactions after the same row), `LWLock` (e.g. `WALWrite`,
//!   buffer content), `IO` (e.g. `WALSync`); and how many were active on average
//!   (more than the machine's cores means they queue for CPU);
//! - index tuples fetched from `deliveries` per delivery
//!   (`pg_stat_user_tables.idx_tup_fetch`): every row a claim steps over, locked
//!   by another worker's SKIP LOCKED claim or dead, is fetched and dropped, so
//!   this grows when claims collide;
//! - the peak number of connections, and rolled-back transactions.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

use super::report::Row;
use super::scenarios::{costs, endpoints, percentiles, probe, publish, Ctx, Pace, WINDOW};
use super::Deployment;

/// Postgres's counters for the benchmark database at one instant.
struct DbCounters {
    idx_tup_fetch: f64,
    rollbacks: f64,
}

async fn counters(d: &Deployment) -> anyhow::Result<DbCounters> {
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(d.store.pool())
        .await?;
    let (idx_tup_fetch, rollbacks): (f64, f64) = sqlx::query_as(
        "SELECT (SELECT coalesce(sum(idx_tup_fetch), 0)::float8 FROM pg_stat_user_tables
                  WHERE relname = 'deliveries'),
                (SELECT xact_rollback::float8 FROM pg_stat_database
                  WHERE datname = current_database())",
    )
    .fetch_one(d.store.pool())
    .await?;
    Ok(DbCounters {
        idx_tup_fetch,
        rollbacks,
    })
}

/// Wait-event samples of the benchmark database's backends.
#[derive(Default)]
struct Waits {
    samples: u64,
    /// "CPU", "Lock:transactionid", "LWLock:WALWrite", ... → active backends seen.
    by_event: HashMap<String, u64>,
    peak_connections: i64,
}

impl Waits {
    fn active(&self) -> u64 {
        self.by_event.values().sum()
    }

    /// "3.1 active: CPU 71%, LWLock:WALWrite 12%, ..." (the four largest).
    fn summary(&self) -> String {
        let active = self.active().max(1) as f64;
        let mut v: Vec<(&String, &u64)> = self.by_event.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let top: Vec<String> = v
            .iter()
            .take(4)
            .map(|(k, n)| format!("{k} {:.0}%", **n as f64 / active * 100.0))
            .collect();
        let lock = self
            .by_event
            .iter()
            .filter(|(k, _)| k.starts_with("Lock:"))
            .map(|(_, n)| *n)
            .sum::<u64>() as f64;
        format!(
            "{:.1} active backends ({}); Lock waits {:.1}%",
            self.active() as f64 / self.samples.max(1) as f64,
            top.join(", "),
            lock / active * 100.0
        )
    }
}

/// Samples `pg_stat_activity` until `stop`, on a connection of its own (which
/// it leaves out of the figures).
async fn sample_waits(url: String, stop: CancellationToken) -> anyhow::Result<Waits> {
    let mut conn = sqlx::PgConnection::connect(&url).await?;
    let mut waits = Waits::default();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    while !stop.is_cancelled() {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let rows: Vec<(Option<String>, Option<String>, i64)> = sqlx::query_as(
            "SELECT state, CASE WHEN wait_event_type IS NULL THEN 'CPU'
                                ELSE wait_event_type || ':' || wait_event END,
                    count(*)
               FROM pg_stat_activity
              WHERE datname = current_database() AND pid <> pg_backend_pid()
              GROUP BY 1, 2",
        )
        .fetch_all(&mut conn)
        .await?;
        waits.samples += 1;
        let mut connections = 0;
        for (state, event, n) in rows {
            connections += n;
            if state.as_deref() == Some("active") {
                *waits.by_event.entry(event.unwrap_or_default()).or_default() += n as u64;
            }
        }
        waits.peak_connections = waits.peak_connections.max(connections);
    }
    Ok(waits)
}

/// Runs `work` while sampling; returns its result and the samples.
async fn sampled<F, T>(url: &str, work: F) -> anyhow::Result<(T, Waits)>
where
    F: std::future::Future<Output = anyhow::Result<T>>,
{
    let stop = CancellationToken::new();
    let sampler = tokio::spawn(sample_waits(url.to_string(), stop.clone()));
    let out = work.await;
    stop.cancel();
    let waits = sampler.await??;
    Ok((out?, waits))
}

fn note(waits: &Waits, a: &DbCounters, b: &DbCounters, items: f64, extra: &str) -> String {
    format!(
        "{extra}; {}; index tuples fetched from deliveries per item {:.1}; peak connections {}; rollbacks {}",
        waits.summary(),
        (b.idx_tup_fetch - a.idx_tup_fetch) / items.max(1.0),
        waits.peak_connections,
        b.rollbacks - a.rollbacks
    )
}

/// Worker processes 1, 2, 4, 8 against the deliver closed loop.
async fn workers_case(ctx: &Ctx<'_>, workers: usize) -> anyhow::Result<Row> {
    let url = ctx.server.database("hookit_bench").await?;
    let d = Deployment::start(&url, workers, &[]).await?;
    endpoints(&d, ctx.receiver, 10, json!({})).await?;
    let (api, wk) = d.pids();
    let all: Vec<u32> = api.iter().chain(wk.iter()).copied().collect();
    ctx.tally.reset();
    let credits = ctx.tally.credit_window(WINDOW);
    let warmup = Duration::from_secs(2);
    let end = Instant::now() + warmup + ctx.args.duration;
    let (base, key, publishers) = (d.base.clone(), d.key.clone(), ctx.args.publishers);
    let publishing = tokio::spawn(async move {
        publish(
            &base,
            &key,
            publishers,
            false,
            end,
            Pace::Window(credits, 10),
        )
        .await
    });
    tokio::time::sleep(warmup).await;
    ctx.tally.take_latencies();
    let ((a, b, ca, cb, delivered), waits) = sampled(&url, async {
        let ca = counters(&d).await?;
        let a = probe(&d.store, &all).await?;
        let before = ctx.tally.delivered.load(Ordering::Relaxed);
        tokio::time::sleep_until(end.into()).await;
        let after = ctx.tally.delivered.load(Ordering::Relaxed);
        let b = probe(&d.store, &all).await?;
        let cb = counters(&d).await?;
        Ok((a, b, ca, cb, (after - before) as f64))
    })
    .await?;
    let _ = publishing.await;
    let mut row = Row {
        scenario: "scale".into(),
        case: format!(
            "10 endpoints, {workers} worker process{}",
            if workers > 1 { "es" } else { "" }
        ),
        rate: delivered / (b.at - a.at).as_secs_f64(),
        unit: "deliveries/s".into(),
        note: note(&waits, &ca, &cb, delivered, "closed loop"),
        ..Default::default()
    };
    percentiles(&mut row, ctx.tally.take_latencies());
    costs(&mut row, &a, &b, delivered, &all);
    d.stop().await;
    ctx.server.drop_database("hookit_bench").await;
    Ok(row)
}

/// API processes 1–4, publishers spread evenly, no workers.
async fn apis_case(ctx: &Ctx<'_>, apis: usize) -> anyhow::Result<Row> {
    let url = ctx.server.database("hookit_bench").await?;
    let mut d = Deployment::start(&url, 0, &[]).await?;
    endpoints(&d, ctx.receiver, 1, json!({})).await?;
    let mut bases = vec![d.base.clone()];
    for _ in 1..apis {
        bases.push(d.add_api().await?);
    }
    let (api, _) = d.pids();
    let per = (ctx.args.publishers / apis).max(1);
    let flat = |until: Instant| {
        let bases = bases.clone();
        let key = d.key.clone();
        async move {
            let runs = bases
                .iter()
                .map(|b| publish(b, &key, per, false, until, Pace::Flat));
            futures::future::join_all(runs)
                .await
                .into_iter()
                .sum::<u64>()
        }
    };
    flat(Instant::now() + Duration::from_secs(1)).await;
    let ((a, b, ca, cb, n), waits) = sampled(&url, async {
        let ca = counters(&d).await?;
        let a = probe(&d.store, &api).await?;
        let n = flat(Instant::now() + ctx.args.duration).await;
        let b = probe(&d.store, &api).await?;
        let cb = counters(&d).await?;
        Ok((a, b, ca, cb, n as f64))
    })
    .await?;
    let mut row = Row {
        scenario: "scale".into(),
        case: format!(
            "ingest, {apis} API process{}",
            if apis > 1 { "es" } else { "" }
        ),
        rate: n / (b.at - a.at).as_secs_f64(),
        unit: "events/s".into(),
        note: note(&waits, &ca, &cb, n, &format!("{} publishers", per * apis)),
        ..Default::default()
    };
    costs(&mut row, &a, &b, n, &api);
    d.stop().await;
    ctx.server.drop_database("hookit_bench").await;
    Ok(row)
}

pub(crate) async fn scale(ctx: &Ctx<'_>) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for workers in [1, 2, 4, 8] {
        rows.push(workers_case(ctx, workers).await?);
    }
    for apis in [1, 2, 3, 4] {
        rows.push(apis_case(ctx, apis).await?);
    }
    Ok(rows)
}
