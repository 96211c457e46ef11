//! What FIFO endpoints cost the claim of ordinary rows (figures in
//! docs/fifo.md; run by hand).

use std::time::Instant;

use serde_json::json;
use uuid::Uuid;

use crate::common::{Options, TestApp};

/// Queues `n` deliveries to `endpoint` directly in SQL (a large backlog fast),
/// due now, or held behind a head that is not due when `fifo`.
async fn fill(app: &TestApp, endpoint: Uuid, n: i64, fifo: bool) {
    sqlx::query(
        "WITH ev AS (
            INSERT INTO events (id, tenant, event_type, body)
            SELECT hookit_uuid_v7(), 'acme', 'bench.backlog', '{}' FROM generate_series(1, $1)
            RETURNING id, created_at)
         INSERT INTO deliveries (id, tenant, event_id, endpoint_id, next_attempt_at, created_at, fifo)
         SELECT hookit_uuid_v7(), 'acme', ev.id, $2, now(), ev.created_at, $3 FROM ev",
    )
    .bind(n)
    .bind(endpoint)
    .bind(fifo)
    .execute(app.store.pool())
    .await
    .unwrap();
    sqlx::query("VACUUM ANALYZE deliveries")
        .execute(app.store.pool())
        .await
        .unwrap();
}

/// Median and p90 of 41 claims of 128 rows, each given back at once.
async fn claim_ms(app: &TestApp) -> (f64, f64, usize) {
    let me = Uuid::new_v4();
    let mut times = Vec::new();
    let mut got = 0;
    for _ in 0..41 {
        let t = Instant::now();
        let c = app.store.claim(me, 128, 60_000, &[]).await.unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        got = c.len();
        let ids: Vec<Uuid> = c.iter().map(|c| c.id).collect();
        app.store
            .release(me, &ids, Some(chrono::Utc::now()))
            .await
            .unwrap();
    }
    times.sort_by(|a, b| a.total_cmp(b));
    (times[20], times[36], got)
}

/// The claim statement as it was before FIFO endpoints (with its index, made
/// here for the comparison and dropped after): median and p90 of 41 claims.
async fn baseline_claim_ms(app: &TestApp) -> (f64, f64) {
    let pool = app.store.pool();
    sqlx::query(
        "CREATE INDEX before_fifo_due_idx ON deliveries (next_attempt_at, id)
         WHERE status = 'pending' AND next_attempt_at IS NOT NULL",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE deliveries")
        .execute(pool)
        .await
        .unwrap();
    let me = Uuid::new_v4();
    let mut times = Vec::new();
    for _ in 0..41 {
        let t = Instant::now();
        let ids: Vec<(Uuid,)> = sqlx::query_as(
            "WITH due AS (
                SELECT id FROM deliveries
                WHERE status = 'pending' AND next_attempt_at <= now() AND NOT (endpoint_id = ANY($4))
                ORDER BY next_attempt_at, id
                LIMIT $1
                FOR UPDATE SKIP LOCKED
             )
             UPDATE deliveries d
             SET status = 'in_flight', next_attempt_at = NULL, lease_owner = $2,
                 lease_expires_at = now() + $3 * interval '1 millisecond', updated_at = now()
             FROM due, events ev, endpoints e
             WHERE d.id = due.id AND ev.id = d.event_id AND e.id = d.endpoint_id
             RETURNING d.id, d.event_id, d.tenant, d.endpoint_id, d.attempts, d.round_base, d.rate_limited, ev.body, ev.traceparent,
                 e.url, e.secret_enc,
                 CASE WHEN e.prev_secret_expires_at > now() THEN e.prev_secret_enc END AS prev_secret_enc,
                 e.headers, e.max_attempts, e.retry_base_ms, e.retry_cap_ms, e.timeout_ms, e.max_in_flight, e.rate_limit,
                 CASE WHEN e.deleted_at IS NOT NULL THEN 'deleted' ELSE e.status::text END AS endpoint_state,
                 e.circuit_open_until, e.format::text AS format, ev.event_type, e.transformation_sha",
        )
        .bind(128i64)
        .bind(me)
        .bind(60_000i64)
        .bind(Vec::<Uuid>::new())
        .fetch_all(pool)
        .await
        .unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        let ids: Vec<Uuid> = ids.into_iter().map(|(i,)| i).collect();
        app.store
            .release(me, &ids, Some(chrono::Utc::now()))
            .await
            .unwrap();
    }
    sqlx::query("DROP INDEX before_fifo_due_idx")
        .execute(pool)
        .await
        .unwrap();
    times.sort_by(|a, b| a.total_cmp(b));
    (times[20], times[36])
}

/// The claim's cost with and without FIFO endpoints in the queue (the figures
/// in docs/fifo.md); run by hand.
#[tokio::test]
#[ignore]
async fn fifo_claim_cost() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let id = |s: String| s.parse::<hookit::domain::ids::EndpointId>().unwrap().uuid();
    let plain = id(app
        .endpoint(json!({"url": "https://93.184.216.34/plain"}))
        .await);
    fill(&app, plain, 100_000, false).await;
    let before = baseline_claim_ms(&app).await;
    let none = claim_ms(&app).await;
    let mut fifo = Vec::new();
    for i in 0..20 {
        let ep = app
            .endpoint(json!({"url": format!("https://93.184.216.34/f{i}"), "ordering": "fifo"}))
            .await;
        fifo.push(id(ep));
    }
    for ep in &fifo {
        fill(&app, *ep, 5_000, true).await;
    }
    let with_due_heads = claim_ms(&app).await;
    // Every FIFO head failing (retry in an hour): 100,000 rows held behind them.
    sqlx::query(
        "UPDATE deliveries d SET next_attempt_at = now() + interval '1 hour'
         WHERE d.fifo AND d.id IN (SELECT DISTINCT ON (endpoint_id) id FROM deliveries
                                   WHERE fifo AND status = 'pending' ORDER BY endpoint_id, created_at, event_id, id)",
    )
    .execute(app.store.pool())
    .await
    .unwrap();
    let with_held_heads = claim_ms(&app).await;
    let next_due = Instant::now();
    app.store.next_due_at().await.unwrap();
    let next_due_ms = next_due.elapsed().as_secs_f64() * 1000.0;
    eprintln!(
        "claim(128) median/p90 ms: before FIFO (the previous statement and index) {:.2}/{:.2}",
        before.0, before.1
    );
    eprintln!(
        "claim(128) median/p90 ms (rows): 100k ordinary only {:.2}/{:.2} ({}); \
         + 20 FIFO endpoints x 5k due {:.2}/{:.2} ({}); same with every head failing {:.2}/{:.2} ({}); \
         next_due_at {next_due_ms:.2} ms",
        none.0, none.1, none.2, with_due_heads.0, with_due_heads.1, with_due_heads.2,
        with_held_heads.0, with_held_heads.1, with_held_heads.2
    );
    app.stop().await;
}
