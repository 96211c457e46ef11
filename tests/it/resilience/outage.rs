//! PostgreSQL goes away under load: nothing accepted is lost.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookit::api::{self, AppState};
use hookit::config::Config;
use hookit::db::{self, Store};
use hookit::domain::crypto::MasterKey;
use hookit::domain::ids::EventId;
use hookit::embedded_pg::{EmbeddedPg, StartOptions};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::common::{eventually, free_port, test_config, Receiver};

/// How the database is taken away.
#[derive(Clone, Copy, Debug)]
enum Outage {
    /// `pg.stop()`: fast shutdown (clients are disconnected, nothing is lost).
    FastShutdown,
    /// SIGKILL of the postmaster: crash recovery on restart.
    Kill,
}

/// A private cluster on a fixed port with the API and a worker in-process, so the
/// test can stop and restart the database under them.
struct PrivateStack {
    dir: tempfile::TempDir,
    port: u16,
    pg: Option<EmbeddedPg>,
    base: String,
    key: String,
    store: Store,
    shutdown: CancellationToken,
    api: tokio::task::JoinHandle<anyhow::Result<()>>,
    worker: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start_pg(dir: &Path, port: u16) -> EmbeddedPg {
    let opts = StartOptions {
        port: Some(port),
        die_with_parent: true,
        ..Default::default()
    };
    // After a SIGKILL the orphaned backends may still hold the old shared memory for
    // a moment, and the new postmaster refuses to start until they are gone: retry.
    let mut last = None;
    for _ in 0..30 {
        match EmbeddedPg::start_with(dir, &opts).await {
            Ok(pg) => return pg,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("postgres did not restart on port {port}: {last:?}");
}

impl PrivateStack {
    async fn start(configure: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("hookit-resilience-pg-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let pg = start_pg(dir.path(), port).await;
        let url = pg.url("postgres");
        let mut cfg = test_config();
        let master = MasterKey::generate_base64();
        cfg.master_key = Some(MasterKey::from_base64(&master).unwrap());
        cfg.database_url = Some(url.clone());
        configure(&mut cfg);
        // The production pool (lazy connections, 5 s acquire timeout).
        let pool = db::connect(&url, cfg.db_pool).await.unwrap();
        db::migrate(&pool).await.unwrap();
        let store = Store::new(pool, cfg.master_key.clone().unwrap());
        let key = store
            .create_api_key("acme", Some("resilience"))
            .await
            .unwrap();
        let shutdown = CancellationToken::new();
        let local_wake = Arc::new(Notify::new());
        let work = Arc::new(Notify::new());
        api::spawn_notifier(
            store.clone(),
            work.clone(),
            Some(local_wake.clone()),
            shutdown.clone(),
        );
        let state = AppState::new(&cfg, store.clone(), work, None).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let api = tokio::spawn(api::serve_on(listener, state, shutdown.clone()));
        let worker = tokio::spawn({
            let (store, stop) = (store.clone(), shutdown.clone());
            async move { hookit::worker::run(&cfg, store, local_wake, stop).await }
        });
        Self {
            dir,
            port,
            pg: Some(pg),
            base,
            key,
            store,
            shutdown,
            api,
            worker,
        }
    }

    async fn take_down(&mut self, how: Outage) {
        let pg = self.pg.take().expect("the database is up");
        if let Outage::Kill = how {
            let pid = pg.pid().expect("postmaster pid") as i32;
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
        }
        // After a kill this only reaps the dead postmaster (a zombie would keep its
        // pid "alive" and the restart would refuse to take over the data directory).
        pg.stop().await.unwrap();
    }

    async fn bring_up(&mut self) {
        self.pg = Some(start_pg(self.dir.path(), self.port).await);
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.worker.await.unwrap().unwrap();
        self.api.await.unwrap().unwrap();
        self.store.pool().close().await;
        if let Some(pg) = self.pg {
            pg.stop().await.unwrap();
        }
        drop(self.dir);
    }
}

/// What the publishers saw.
#[derive(Default)]
struct Tally {
    issued: AtomicUsize,
    unavailable: AtomicUsize,
    accepted: Mutex<HashSet<String>>,
    unexpected: Mutex<Vec<String>>,
}

impl Tally {
    fn accepted(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }
}

/// Publishes until `total` events were accepted (or the deadline), recording every
/// answer: a 2xx must carry the event id, anything else must be a 503 problem with
/// a Retry-After, after which it waits a little, as a client honouring Retry-After
/// would (shortened, so the test stays quick).
async fn publisher(base: String, key: String, tally: Arc<Tally>, total: usize, deadline: Instant) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    loop {
        if tally.accepted() >= total || Instant::now() > deadline {
            return;
        }
        let n = tally.issued.fetch_add(1, Ordering::SeqCst);
        let sent = http
            .post(format!("{base}/v1/events"))
            .bearer_auth(&key)
            .json(&json!({"event_type": "load.tick", "payload": {"n": n}}))
            .send()
            .await;
        let r = match sent {
            Ok(r) => r,
            Err(e) => {
                tally
                    .unexpected
                    .lock()
                    .unwrap()
                    .push(format!("request {n}: transport error {e}"));
                continue;
            }
        };
        let status = r.status().as_u16();
        let content_type = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let retry_after = r.headers().get("retry-after").is_some();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        match status {
            202 => match body["id"].as_str() {
                Some(id) => {
                    tally.accepted.lock().unwrap().insert(id.to_string());
                }
                None => tally
                    .unexpected
                    .lock()
                    .unwrap()
                    .push(format!("request {n}: 202 without an id: {body}")),
            },
            503 if content_type == "application/problem+json"
                && retry_after
                && body["status"] == 503 =>
            {
                tally.unavailable.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ => tally.unexpected.lock().unwrap().push(format!(
                "request {n}: {status} ({content_type}, retry-after: {retry_after}) {body}"
            )),
        }
    }
}

async fn database_goes_away_under_load(how: Outage) {
    const TOTAL: usize = 300;
    const PUBLISHERS: usize = 4;
    let mut stack = PrivateStack::start(|c| c.lease = Duration::from_secs(3)).await;
    let rx = Receiver::start().await;
    let (status, ep) = post_json(
        &stack.base,
        &stack.key,
        "/v1/endpoints",
        json!({"url": rx.url("/load")}),
    )
    .await;
    assert_eq!(status, 201, "{ep}");

    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + Duration::from_secs(90);
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|_| {
            tokio::spawn(publisher(
                stack.base.clone(),
                stack.key.clone(),
                tally.clone(),
                TOTAL,
                deadline,
            ))
        })
        .collect();

    eventually(
        "some events accepted before the outage",
        Duration::from_secs(30),
        || async { tally.accepted() >= 60 },
    )
    .await;
    stack.take_down(how).await;
    let accepted_before = tally.accepted();
    // Keep publishing into the outage until ingestion has refused several requests.
    eventually(
        "ingestion answers 503 while the database is down",
        Duration::from_secs(30),
        || async { tally.unavailable.load(Ordering::SeqCst) >= PUBLISHERS },
    )
    .await;
    stack.bring_up().await;
    for p in publishers {
        p.await.unwrap();
    }

    let unexpected = tally.unexpected.lock().unwrap().clone();
    assert!(
        unexpected.is_empty(),
        "every answer is a 202 or a 503 problem with Retry-After: {unexpected:#?}"
    );
    let accepted = tally.accepted.lock().unwrap().clone();
    eprintln!(
        "{how:?}: {} accepted ({accepted_before} before the outage), {} refused with 503",
        accepted.len(),
        tally.unavailable.load(Ordering::SeqCst)
    );
    assert!(
        accepted.len() > accepted_before,
        "publishing resumed after the restart"
    );
    assert!(accepted.len() >= TOTAL, "publishing went on to the end");
    assert_eq!(
        accepted.len() + tally.unavailable.load(Ordering::SeqCst),
        tally.issued.load(Ordering::SeqCst),
        "every request was answered"
    );

    // A 2xx means committed: every accepted event survived the outage...
    let ids: Vec<uuid::Uuid> = accepted
        .iter()
        .map(|id| id.parse::<EventId>().unwrap().uuid())
        .collect();
    let (stored,): (i64,) = sqlx::query_as("SELECT count(*) FROM events WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_one(stack.store.pool())
        .await
        .unwrap();
    assert_eq!(
        stored as usize,
        accepted.len(),
        "an accepted event is missing from the database"
    );
    // ...and reaches the receiver.
    eventually(
        "every accepted event is delivered",
        Duration::from_secs(60),
        || async {
            let seen: HashSet<String> = rx
                .received()
                .iter()
                .map(|r| r.header("webhook-id"))
                .collect();
            accepted.is_subset(&seen)
        },
    )
    .await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_fast_shutdown_under_load_loses_no_accepted_event() {
    database_goes_away_under_load(Outage::FastShutdown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sigkill_under_load_loses_no_accepted_event() {
    database_goes_away_under_load(Outage::Kill).await;
}

async fn post_json(base: &str, key: &str, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// One answer a publisher got: when the request started, how long it took, status.
type Answer = (Instant, Duration, u16);

/// Publishes until `stop`, recording every answer (a transport error is status 0).
async fn timed_publisher(
    base: String,
    key: String,
    answers: Arc<Mutex<Vec<Answer>>>,
    stop: CancellationToken,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // Bounded: at most this many requests, even if `stop` never came.
    for n in 0..100_000u32 {
        if stop.is_cancelled() {
            return;
        }
        let started = Instant::now();
        let r = http
            .post(format!("{base}/v1/events"))
            .bearer_auth(&key)
            .json(&json!({"event_type": "load.tick", "payload": {"n": n}}))
            .send()
            .await;
        let status = match r {
            Ok(r) => {
                let status = r.status().as_u16();
                let ok = status == 202
                    || (status == 503
                        && r.headers().get("retry-after").is_some()
                        && r.headers()["content-type"] == "application/problem+json");
                let _ = r.bytes().await;
                if ok {
                    status
                } else {
                    1000 + status
                }
            }
            Err(_) => 0,
        };
        answers
            .lock()
            .unwrap()
            .push((started, started.elapsed(), status));
        if status != 202 {
            // A client that got a 503 backs off a little, as Retry-After asks
            // (shortened: the test wants many samples of the outage).
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_answered_within_the_bound_and_fast_once_known() {
    // 12 concurrent publishers: with them, some 503s took 10 s before the fix
    // (3 writers each waiting 5 s for a connection, requests queued behind them).
    const PUBLISHERS: usize = 12;
    const BOUND: Duration = Duration::from_secs(5);
    let mut stack = PrivateStack::start(|_| {}).await;
    let rx = Receiver::start().await;
    let (status, ep) = post_json(
        &stack.base,
        &stack.key,
        "/v1/endpoints",
        json!({"url": rx.url("/o")}),
    )
    .await;
    assert_eq!(status, 201, "{ep}");
    let answers = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|_| {
            tokio::spawn(timed_publisher(
                stack.base.clone(),
                stack.key.clone(),
                answers.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let accepted = || {
        answers
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.2 == 202)
            .count()
    };
    eventually(
        "publishing works before the outage",
        Duration::from_secs(30),
        || async { accepted() >= 100 },
    )
    .await;

    let down_at = Instant::now();
    stack.take_down(Outage::FastShutdown).await;
    let http = reqwest::Client::new();
    // Readiness follows the known state: a prompt 503, not a hung probe.
    eventually(
        "readiness reports the outage",
        Duration::from_secs(10),
        || async {
            let r = http
                .get(format!("{}/readyz", stack.base))
                .send()
                .await
                .unwrap();
            r.status() == 503
        },
    )
    .await;
    let t = Instant::now();
    let r = http
        .get(format!("{}/readyz", stack.base))
        .send()
        .await
        .unwrap();
    let readyz_took = t.elapsed();
    assert_eq!(r.status(), 503);
    // Six seconds of outage under load: longer than the bound, so a request that
    // waited for a writer and then for a connection would show.
    tokio::time::sleep_until(down_at + Duration::from_secs(6)).await;
    stack.bring_up().await;
    let up_at = Instant::now();
    eventually(
        "publishing resumes after the restart",
        Duration::from_secs(30),
        || async {
            answers
                .lock()
                .unwrap()
                .iter()
                .any(|a| a.0 >= up_at && a.2 == 202)
        },
    )
    .await;
    stop.cancel();
    for p in publishers {
        p.await.unwrap();
    }

    let answers = answers.lock().unwrap().clone();
    let odd: Vec<_> = answers
        .iter()
        .filter(|a| a.2 != 202 && a.2 != 503)
        .collect();
    assert!(
        odd.is_empty(),
        "every answer is a 202 or a 503 problem with Retry-After: {odd:?}"
    );
    let slowest = answers.iter().map(|a| a.1).max().unwrap();
    let mut refused: Vec<Duration> = answers.iter().filter(|a| a.2 == 503).map(|a| a.1).collect();
    refused.sort();
    // Requests that started once the process knew (a second into the outage, by
    // which time readiness had long said so) and before the restart.
    let mut known: Vec<Duration> = answers
        .iter()
        .filter(|a| a.2 == 503 && a.0 >= down_at + Duration::from_secs(1) && a.0 + a.1 < up_at)
        .map(|a| a.1)
        .collect();
    known.sort();
    let first_accept = answers
        .iter()
        .filter(|a| a.0 >= up_at && a.2 == 202)
        .map(|a| a.0 + a.1)
        .min()
        .unwrap();
    eprintln!(
        "outage with {PUBLISHERS} publishers: {} refused, p50 {:?} p99 {:?} max {:?}; once known ({}): p50 {:?} p99 {:?} max {:?}; \
         /readyz answered in {readyz_took:?}; first 202 {:?} after the restart; slowest request {slowest:?}",
        refused.len(),
        percentile(&refused, 0.5),
        percentile(&refused, 0.99),
        refused.last().copied().unwrap_or_default(),
        known.len(),
        percentile(&known, 0.5),
        percentile(&known, 0.99),
        known.last().copied().unwrap_or_default(),
        first_accept - up_at,
    );
    assert!(
        slowest <= BOUND + Duration::from_secs(1),
        "a request took {slowest:?}; the documented bound is {BOUND:?}"
    );
    assert!(
        !known.is_empty(),
        "requests were refused while the database was known down"
    );
    // The target is < 100 ms; the assertion allows for a loaded CI machine, and
    // still fails if these requests waited for the pool (5 s).
    let slowest_known = *known.last().unwrap();
    assert!(
        slowest_known < Duration::from_secs(1),
        "once the database was known down, a 503 still took {slowest_known:?}"
    );
    assert!(
        readyz_took < Duration::from_secs(1),
        "/readyz took {readyz_took:?} in the outage"
    );
    stack.stop().await;
}
