//! Ordered (FIFO) endpoints: the claim hands out only an endpoint's head, one at
//! a time, to any number of concurrent claimers; and the proof from issue #12,
//! with worker processes, failing receivers and a worker killed midway.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use hookit::domain::ids::EventId;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{eventually, Options, TestApp};

#[tokio::test]
async fn ordering_is_shown_validated_and_patched() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let (s, ep) = app
        .post("/v1/endpoints", json!({"url": "https://93.184.216.34/a"}))
        .await;
    assert_eq!(s, 201, "{ep}");
    assert_eq!(ep["ordering"], "none", "the default");
    let (s, bad) = app
        .post(
            "/v1/endpoints",
            json!({"url": "https://93.184.216.34/a", "ordering": "lifo"}),
        )
        .await;
    assert_eq!(s, 422, "{bad}");
    assert!(
        bad["detail"].as_str().unwrap().contains("ordering"),
        "{bad}"
    );
    let id = ep["id"].as_str().unwrap();
    // Queued deliveries follow the endpoint's mode when it changes.
    app.publish("a.b", json!({})).await;
    let r = app
        .req(reqwest::Method::PATCH, &format!("/v1/endpoints/{id}"))
        .json(&json!({"ordering": "fifo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["ordering"], "fifo");
    let (_, shown) = app.get(&format!("/v1/endpoints/{id}")).await;
    assert_eq!(shown["ordering"], "fifo");
    let (fifo,): (bool,) = sqlx::query_as("SELECT bool_and(fifo) FROM deliveries")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert!(fifo, "the pending delivery joined the ordered queue");
    app.stop().await;
}

/// What one claimer saw: per endpoint, the events it was handed, in order.
type Claims = Vec<(Uuid, Uuid)>;

#[tokio::test]
async fn concurrent_claimers_only_ever_get_the_head_of_a_fifo_endpoint() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let mut fifo = Vec::new();
    for i in 0..3 {
        let id = app
            .endpoint(json!({"url": format!("https://93.184.216.34/f{i}"), "ordering": "fifo"}))
            .await;
        fifo.push(id);
    }
    app.endpoint(json!({"url": "https://93.184.216.34/plain"}))
        .await;
    let mut published = Vec::new();
    for i in 0..60 {
        published.push(app.publish("a.b", json!({"i": i})).await);
    }
    let endpoint_ids: HashMap<Uuid, bool> =
        sqlx::query_as::<_, (Uuid, bool)>("SELECT id, ordering = 'fifo' FROM endpoints")
            .fetch_all(app.store.pool())
            .await
            .unwrap()
            .into_iter()
            .collect();

    // Who holds each FIFO endpoint right now, as the claimers themselves see it:
    // a claimer clears its entry before it writes the outcome, so a second
    // entry for one endpoint means the queue handed out two at once.
    let holding: Arc<Mutex<HashMap<Uuid, Uuid>>> = Default::default();
    let log: Arc<Mutex<Claims>> = Default::default();
    let plain_batches = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let (store, holding, log, plain_batches, fifo_of) = (
            app.store.clone(),
            holding.clone(),
            log.clone(),
            plain_batches.clone(),
            endpoint_ids.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let me = Uuid::new_v4();
            let mut rng = rand::rngs::StdRng::seed_from_u64(t);
            let mut idle = 0;
            // Bounded: 240 deliveries, each given back at most a few times.
            for _ in 0..5_000 {
                let batch = store.claim(me, 4, 60_000, &[]).await.unwrap();
                if batch.is_empty() {
                    idle += 1;
                    if idle > 50 {
                        return;
                    }
                    tokio::task::yield_now().await;
                    continue;
                }
                idle = 0;
                let plain = batch.iter().filter(|c| !fifo_of[&c.endpoint_id]).count();
                if plain > 1 {
                    plain_batches.fetch_add(1, Ordering::Relaxed);
                }
                for c in &batch {
                    if fifo_of[&c.endpoint_id] {
                        let prev = holding.lock().unwrap().insert(c.endpoint_id, c.id);
                        assert!(prev.is_none(), "two deliveries of one FIFO endpoint in flight");
                    }
                }
                tokio::task::yield_now().await;
                for c in batch {
                    let fifo = fifo_of[&c.endpoint_id];
                    if fifo {
                        holding.lock().unwrap().remove(&c.endpoint_id);
                    }
                    if rng.gen_bool(0.25) {
                        // A give-back (a rate limit, an open circuit): the head
                        // stays the head.
                        store.release(me, &[c.id], Some(chrono::Utc::now())).await.unwrap();
                    } else {
                        if fifo {
                            log.lock().unwrap().push((c.endpoint_id, c.event_id));
                        }
                        sqlx::query(
                            "UPDATE deliveries SET status = 'succeeded', lease_owner = NULL,
                                lease_expires_at = NULL, finished_at = now() WHERE id = $1 AND lease_owner = $2",
                        )
                        .bind(c.id)
                        .bind(me)
                        .execute(store.pool())
                        .await
                        .unwrap();
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (left,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM deliveries WHERE status <> 'succeeded'")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(left, 0, "every delivery was claimed and finished");
    let log = log.lock().unwrap().clone();
    for ep in endpoint_ids.iter().filter(|(_, f)| **f).map(|(e, _)| *e) {
        let order: Vec<String> = log
            .iter()
            .filter(|(e, _)| *e == ep)
            .map(|(_, ev)| EventId::from_uuid(*ev).to_string())
            .collect();
        assert_eq!(
            order, published,
            "a FIFO endpoint's deliveries finish in publish order"
        );
    }
    assert!(
        plain_batches.load(Ordering::Relaxed) > 0,
        "an ordinary endpoint's deliveries are still claimed several at a time"
    );
    app.stop().await;
}

/// A receiver per path that records the `data.seq` of every request in arrival
/// order, fails a seeded random share of them with 500, and counts requests
/// open at once per path.
#[derive(Clone)]
struct Recorder {
    log: Arc<Mutex<HashMap<String, Vec<u64>>>>,
    open: Arc<Mutex<HashMap<String, usize>>>,
    most_open: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
    rng: Arc<Mutex<rand::rngs::StdRng>>,
    fail: f64,
    delay: Duration,
}

/// Decrements a path's open count however the request ends (a killed worker's
/// connection drops the handler mid-way).
struct OpenGuard(Recorder, String);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        *self.0.open.lock().unwrap().get_mut(&self.1).unwrap() -= 1;
    }
}

async fn record(State(r): State<Recorder>, Path(path): Path<String>, body: Bytes) -> StatusCode {
    let v: Value = serde_json::from_slice(&body).unwrap();
    let seq = v["data"]["seq"].as_u64().unwrap();
    let _guard = {
        let mut open = r.open.lock().unwrap();
        let n = open.entry(path.clone()).or_default();
        *n += 1;
        r.most_open.fetch_max(*n, Ordering::Relaxed);
        r.log
            .lock()
            .unwrap()
            .entry(path.clone())
            .or_default()
            .push(seq);
        OpenGuard(r.clone(), path)
    };
    r.total.fetch_add(1, Ordering::Relaxed);
    if !r.delay.is_zero() {
        tokio::time::sleep(r.delay).await;
    }
    if r.rng.lock().unwrap().gen_bool(r.fail) {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

impl Recorder {
    async fn start(fail: f64, seed: u64, delay: Duration) -> (Self, String) {
        let r = Recorder {
            log: Default::default(),
            open: Default::default(),
            most_open: Default::default(),
            total: Default::default(),
            rng: Arc::new(Mutex::new(rand::rngs::StdRng::seed_from_u64(seed))),
            fail,
            delay,
        };
        let app = Router::new()
            .route("/{path}", post(record))
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (r, base)
    }

    /// Each event's first arrival, per path, in arrival order.
    fn firsts(&self) -> HashMap<String, Vec<u64>> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|(p, seqs)| {
                let mut seen = HashSet::new();
                let f = seqs.iter().copied().filter(|s| seen.insert(*s)).collect();
                (p.clone(), f)
            })
            .collect()
    }
}

fn worker_process(app: &TestApp) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_hookit"))
        .arg("worker")
        .env("DATABASE_URL", app.cfg.database_url.as_ref().unwrap())
        .env("HOOKIT_MASTER_KEY", app.cfg_master_key_b64())
        .env("HOOKIT_ALLOW_PRIVATE_TARGETS", "127.0.0.0/8")
        .env("HOOKIT_LEASE", "2s")
        .env("HOOKIT_LOG_FORMAT", "text")
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// The proof, sized by the caller: `events` events, each to all of
/// `endpoints` FIFO endpoints, published in batches of 100 while 4 worker
/// processes deliver them; receivers fail 20 % of requests at random; one worker
/// is SIGKILLed halfway. Returns the wall time of the delivery.
async fn proof(events: u64, endpoints: usize, fail: f64, delay: Duration, kill: bool) -> Duration {
    let app = TestApp::spawn_with(Options {
        worker: false,
        configure: Box::new(|c| c.max_payload = 1 << 20),
    })
    .await;
    let (rx, base) = Recorder::start(fail, 12, delay).await;
    for i in 0..endpoints {
        app.endpoint(json!({
            "url": format!("{base}/r{i}"),
            "ordering": "fifo",
            "max_attempts": 50,
            "retry_base_ms": 5,
            "retry_cap_ms": 40,
        }))
        .await;
    }
    let mut workers: Vec<_> = (0..4).map(|_| worker_process(&app)).collect();
    let started = Instant::now();
    for chunk in (0..events).collect::<Vec<_>>().chunks(100) {
        let items: Vec<Value> = chunk
            .iter()
            .map(|seq| json!({"event_type": "order.changed", "payload": {"seq": seq}}))
            .collect();
        let r = app
            .req(reqwest::Method::POST, "/v1/events/batch")
            .json(&json!({ "events": items }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let total = events as usize * endpoints;
    let limit = Duration::from_secs(60 + events / 20);
    if kill {
        eventually("half the deliveries arrived", limit, || {
            let n = rx.total.load(Ordering::Relaxed);
            async move { n >= total / 2 }
        })
        .await;
        // SIGKILL: its leases are left to expire and be rescued.
        workers[0].kill().await.unwrap();
    }
    eventually("every delivery succeeded", limit, || async {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM deliveries WHERE status = 'succeeded'")
                .fetch_one(app.store.pool())
                .await
                .unwrap();
        n as usize == total
    })
    .await;
    let took = started.elapsed();
    for w in workers.iter_mut() {
        let _ = w.kill().await;
    }
    let firsts = rx.firsts();
    assert_eq!(firsts.len(), endpoints);
    for (path, seqs) in &firsts {
        assert_eq!(seqs.len() as u64, events, "{path}: every event arrived");
        if let Some(w) = seqs.windows(2).find(|w| w[0] >= w[1]) {
            panic!(
                "{path}: first deliveries out of order: {} then {}",
                w[0], w[1]
            );
        }
    }
    assert_eq!(
        rx.most_open.load(Ordering::Relaxed),
        1,
        "never two requests open at one FIFO receiver"
    );
    let requests = rx.total.load(Ordering::Relaxed);
    eprintln!(
        "fifo proof: {events} events x {endpoints} endpoints, {requests} requests in {took:?} ({:.0} deliveries/s)",
        total as f64 / took.as_secs_f64()
    );
    app.stop().await;
    took
}

#[tokio::test]
async fn fifo_order_holds_across_worker_processes_failures_and_a_kill() {
    proof(1_000, 5, 0.2, Duration::ZERO, true).await;
}

/// The full size (10,000 events); run by hand for the figures.
#[tokio::test]
#[ignore]
async fn fifo_proof_full_size() {
    proof(10_000, 5, 0.2, Duration::ZERO, true).await;
}

/// FIFO throughput against a receiver answering in 5 ms, never failing (the
/// figure in docs/fifo.md); run by hand.
#[tokio::test]
#[ignore]
async fn fifo_throughput_5ms_receiver() {
    proof(2_000, 1, 0.0, Duration::from_millis(5), false).await;
}

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

#[tokio::test]
async fn a_dead_head_releases_the_queue_and_a_redrive_sends_it_again() {
    let app = TestApp::spawn().await;
    let rx = crate::common::Receiver::start().await;
    rx.set_reply(crate::common::Reply::Status(500));
    app.endpoint(json!({
        "url": rx.url("/hook"), "ordering": "fifo",
        "max_attempts": 2, "retry_base_ms": 10, "retry_cap_ms": 20,
    }))
    .await;
    let mut events = Vec::new();
    for i in 0..3 {
        events.push(app.publish("a.b", json!({"i": i})).await);
    }
    let dead = app
        .wait_deliveries("status=dead", Duration::from_secs(30), |d| d.len() == 3)
        .await;
    let seen = |rx: &crate::common::Receiver| -> Vec<u64> {
        rx.received()
            .iter()
            .map(|r| {
                serde_json::from_slice::<Value>(&r.body).unwrap()["data"]["i"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    };
    // Each head's two attempts, and nothing behind it until it was dead.
    assert_eq!(seen(&rx), vec![0, 0, 1, 1, 2, 2]);
    rx.set_reply(crate::common::Reply::Status(200));
    let first = dead
        .iter()
        .find(|d| d["event_id"] == events[0].as_str())
        .unwrap();
    let id = first["id"].as_str().unwrap();
    let (s, body) = app
        .post(&format!("/v1/deliveries/{id}/redrive"), json!({}))
        .await;
    assert_eq!(s, 200, "{body}");
    rx.wait_for(7, Duration::from_secs(30)).await;
    assert_eq!(seen(&rx)[6], 0, "the redriven head is sent again");
    app.stop().await;
}
