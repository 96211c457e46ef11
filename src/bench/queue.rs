//! The queue-state scenarios: `backlog` (a million deliveries queued, then
//! drained, with the claim's latency on the full queue) and `noisy` (healthy
//! endpoints next to a hanging one).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;
use uuid::Uuid;

use super::procstat;
use super::receiver::Tally;
use super::report::Row;
use super::scenarios::{costs, endpoints, probe, publish_owned, Ctx, Pace, WINDOW};
use super::Deployment;
use crate::db::Store;

/// Queues `n` more deliveries to the first endpoint directly in SQL (the fastest
/// way to build a large backlog; the ingestion path is measured by `ingest`).
async fn fill(store: &Store, n: u64) -> anyhow::Result<()> {
    let mut left = n;
    while left > 0 {
        // Chunks well under a second each (sqlx warns about slower statements).
        let chunk = left.min(20_000);
        sqlx::query(
            "WITH ev AS (
                INSERT INTO events (id, tenant, event_type, body)
                SELECT hookit_uuid_v7(), 'bench', 'bench.backlog',
                       '{\"id\":\"evt_backlog\",\"type\":\"bench.backlog\",\"timestamp\":\"2026-01-01T00:00:00.000Z\",\"data\":{}}'
                FROM generate_series(1, $1) RETURNING id)
             INSERT INTO deliveries (id, tenant, event_id, endpoint_id, next_attempt_at)
             SELECT hookit_uuid_v7(), 'bench', ev.id, (SELECT id FROM endpoints LIMIT 1), now() FROM ev",
        )
        .bind(chunk as i64)
        .execute(store.pool())
        .await?;
        left -= chunk;
    }
    sqlx::query("VACUUM ANALYZE deliveries")
        .execute(store.pool())
        .await?;
    Ok(())
}

/// Median time of `reps` claims of 128 rows (each put back at once).
async fn claim_latency_ms(store: &Store, reps: usize) -> anyhow::Result<f64> {
    let me = Uuid::new_v4();
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        let got = store.claim(me, 128, 60_000, &[]).await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        let ids: Vec<Uuid> = got.iter().map(|c| c.id).collect();
        store.release(me, &ids, Some(chrono::Utc::now())).await?;
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(times[times.len() / 2])
}

pub(crate) async fn backlog(ctx: &Ctx<'_>) -> anyhow::Result<Vec<Row>> {
    let total = ctx.args.backlog.max(2000);
    let url = ctx.server.database("hookit_bench").await?;
    let mut d = Deployment::start(&url, 0, &[]).await?;
    endpoints(&d, ctx.receiver, 1, json!({})).await?;
    fill(&d.store, 1000).await?;
    let at_1k = claim_latency_ms(&d.store, 21).await?;
    let t = Instant::now();
    fill(&d.store, total - 1000).await?;
    let fill_secs = t.elapsed().as_secs_f64();
    let at_full = claim_latency_ms(&d.store, 21).await?;

    ctx.tally.reset();
    d.add_worker()?;
    let (api, wk) = d.pids();
    let all: Vec<u32> = api.iter().chain(wk.iter()).copied().collect();
    let a = probe(&d.store, &all).await?;
    let mut rss_samples = Vec::new();
    let deadline = Instant::now() + Duration::from_secs((total / 300).max(120));
    while ctx.tally.delivered.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss_samples.push(wk.iter().filter_map(|p| procstat::rss_mib(*p)).sum::<f64>());
    }
    let b = probe(&d.store, &all).await?;
    let drained = ctx.tally.delivered.load(Ordering::Relaxed);
    let mut row = Row {
        scenario: "backlog".into(),
        case: format!("{total} queued, 1 worker"),
        rate: drained as f64 / (b.at - a.at).as_secs_f64(),
        unit: "deliveries/s".into(),
        note: format!(
            "drained {drained}/{total}; claim(128) median {at_1k:.2} ms at 1k vs {at_full:.2} ms at {total}; worker RSS first/last {:.0}/{:.0} MiB; fill took {fill_secs:.0} s",
            rss_samples.first().copied().unwrap_or(0.0),
            rss_samples.last().copied().unwrap_or(0.0)
        ),
        ..Default::default()
    };
    costs(&mut row, &a, &b, drained as f64, &all);
    let rows = vec![row];
    d.stop().await;
    ctx.server.drop_database("hookit_bench").await;
    Ok(rows)
}

pub(crate) async fn noisy(ctx: &Ctx<'_>) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut alone = None;
    for with_hanging in [false, true] {
        let url = ctx.server.database("hookit_bench").await?;
        let d = Deployment::start(&url, 1, &[]).await?;
        endpoints(&d, ctx.receiver, 9, json!({})).await?;
        if with_hanging {
            let http = reqwest::Client::new();
            http.post(format!("{}/v1/endpoints", d.base))
                .bearer_auth(&d.key)
                .json(&json!({"url": format!("{}/hang", ctx.receiver), "timeout_ms": 5000}))
                .send()
                .await?;
        }
        let (api, wk) = d.pids();
        let all: Vec<u32> = api.iter().chain(wk.iter()).copied().collect();
        ctx.tally.reset();
        // A closed loop over the healthy endpoints only (the hanging one never
        // answers), so both cases offer the load the nine can take and the
        // backlog of the healthy ones does not grow between the two runs.
        let credits = ctx.tally.credit_window(WINDOW);
        let warmup = Duration::from_secs(2);
        let end = Instant::now() + warmup + ctx.args.duration;
        let publishing = tokio::spawn(publish_owned(
            d.base.clone(),
            d.key.clone(),
            ctx.args.publishers,
            end,
            Pace::Window(credits, 9),
        ));
        tokio::time::sleep(warmup).await;
        let healthy = |t: &Tally| {
            t.per_path()
                .iter()
                .filter(|(p, _)| !p.starts_with("/hang"))
                .map(|(_, n)| *n)
                .sum::<u64>()
        };
        let before = healthy(ctx.tally);
        let a = probe(&d.store, &all).await?;
        tokio::time::sleep_until(end.into()).await;
        let b = probe(&d.store, &all).await?;
        let delivered = (healthy(ctx.tally) - before) as f64;
        let _ = publishing.await;
        let rate = delivered / (b.at - a.at).as_secs_f64();
        let mut row = Row {
            scenario: "noisy".into(),
            case: if with_hanging {
                "9 healthy + 1 hanging (5 s timeout)".into()
            } else {
                "9 healthy alone".into()
            },
            rate,
            unit: "healthy deliveries/s".into(),
            ..Default::default()
        };
        if let (true, Some(base)) = (with_hanging, alone) {
            row.note = format!(
                "healthy endpoints keep {:.0}% of their throughput alone",
                rate / base * 100.0
            );
        }
        alone.get_or_insert(rate);
        costs(&mut row, &a, &b, delivered, &all);
        rows.push(row);
        d.stop().await;
        ctx.server.drop_database("hookit_bench").await;
    }
    Ok(rows)
}
