//! Faults injected for real: the database stopped or killed under load, a worker
//! process SIGKILLed over and over, a hanging receiver next to healthy ones, an
//! endpoint failing until its circuit opens, receivers that misbehave at the TCP
//! level, retention, and request limits.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookit::api::{self, AppState};
use hookit::config::Config;
use hookit::db::{self, Store};
use hookit::domain::crypto::MasterKey;
use hookit::domain::ids::EventId;
use hookit::embedded_pg::{EmbeddedPg, StartOptions};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::common::{eventually, test_config, Options, Receiver, Reply, TestApp};

// ---------------------------------------------------------------------------
// 1. PostgreSQL goes away under load
// ---------------------------------------------------------------------------

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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
        let state = AppState::new(&cfg, store.clone(), work, None);
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

/// Publishes until `total` requests were issued (or the deadline), recording every
/// answer: a 2xx must carry the event id, anything else must be a 503 problem with
/// a Retry-After.
async fn publisher(base: String, key: String, tally: Arc<Tally>, total: usize, deadline: Instant) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    loop {
        let n = tally.issued.fetch_add(1, Ordering::SeqCst);
        if n >= total || Instant::now() > deadline {
            return;
        }
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
    assert_eq!(
        accepted.len() + tally.unavailable.load(Ordering::SeqCst),
        TOTAL,
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

// ---------------------------------------------------------------------------
// 2. A worker process SIGKILLed over and over
// ---------------------------------------------------------------------------

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_sigkilled_repeatedly_loses_nothing() {
    const EVENTS: usize = 500;
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let rx = Receiver::start().await;
    // Slow enough that every kill lands on deliveries in flight.
    rx.set_reply(Reply::Delay(Duration::from_millis(100)));
    app.endpoint(json!({"url": rx.url("/hook")})).await;

    let publishing = async {
        let mut ids = HashSet::new();
        for i in 0..EVENTS {
            ids.insert(app.publish("a.b", json!({"i": i})).await);
        }
        ids
    };
    let killing = async {
        // Fixed, varied lifetimes (300-700 ms): deterministic, and not in step with anything.
        for life_ms in [300u64, 700, 450, 600, 350] {
            let mut child = worker_process(&app);
            tokio::time::sleep(Duration::from_millis(life_ms)).await;
            child.start_kill().unwrap(); // SIGKILL
            child.wait().await.unwrap();
        }
    };
    let (ids, ()) = tokio::join!(publishing, killing);
    let killed_in_flight: (i64,) =
        sqlx::query_as("SELECT count(*) FROM deliveries WHERE status = 'in_flight'")
            .fetch_one(app.store.pool())
            .await
            .unwrap();

    let mut survivor = worker_process(&app);
    eventually(
        "every event reaches the receiver",
        Duration::from_secs(90),
        || async {
            let seen: HashSet<String> = rx
                .received()
                .iter()
                .map(|r| r.header("webhook-id"))
                .collect();
            seen.len() >= EVENTS
        },
    )
    .await;
    let seen: HashSet<String> = rx
        .received()
        .iter()
        .map(|r| r.header("webhook-id"))
        .collect();
    assert_eq!(seen, ids, "exactly the published events were delivered");
    app.wait_deliveries("status=succeeded", Duration::from_secs(30), |d| {
        d.len() == EVENTS
    })
    .await;
    eprintln!(
        "sigkill loop: {} requests for {EVENTS} events, {} leases orphaned by the last kill",
        rx.received().len(),
        killed_in_flight.0
    );
    survivor.start_kill().unwrap();
    survivor.wait().await.unwrap();
    app.stop().await;
}

// ---------------------------------------------------------------------------
// 3. Noisy neighbour
// ---------------------------------------------------------------------------

/// Connection counters of a raw TCP receiver.
#[derive(Default)]
struct RawStats {
    connections: AtomicUsize,
    open: AtomicUsize,
    max_open: AtomicUsize,
    /// Connections the client closed while we were still writing.
    closed_by_client: AtomicUsize,
    /// Connections on which we gave up writing because the client stopped reading.
    stalled: AtomicUsize,
    max_bytes_sent: AtomicU64,
}

struct OpenGuard(Arc<RawStats>);

impl OpenGuard {
    fn new(s: &Arc<RawStats>) -> Self {
        s.connections.fetch_add(1, Ordering::SeqCst);
        let now = s.open.fetch_add(1, Ordering::SeqCst) + 1;
        s.max_open.fetch_max(now, Ordering::SeqCst);
        Self(s.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How a raw receiver misbehaves.
#[derive(Clone, Copy, Debug)]
enum Misbehaviour {
    /// Reads the request and never answers: open connections = requests in flight.
    BlackHole,
    /// This status, then a chunked body that never ends.
    EndlessBody(u16),
    /// A status line, then header lines that never end.
    EndlessHeaders,
    /// The whole response one byte per 200 ms.
    DripAll,
    /// Headers at once, then the body one byte per 200 ms.
    DripBody,
    /// Bytes that are not HTTP, then close.
    Garbage,
    /// Close as soon as the connection is accepted.
    CloseAtOnce,
}

/// A receiver written against the raw socket, for what a well-behaved HTTP server
/// would never do. Returns its URL and counters.
async fn raw_receiver(mode: Misbehaviour) -> (String, Arc<RawStats>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let stats = Arc::new(RawStats::default());
    let s = stats.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(misbehave(stream, mode, s.clone()));
        }
    });
    (url, stats)
}

/// Reads one request (head and content-length body), bounded in size and time.
async fn read_request(stream: &mut TcpStream) -> bool {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    return true;
                }
            }
            if buf.len() > 1 << 20 {
                return false;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .unwrap_or(false)
}

/// Writes `piece` over and over until the client closes (the expected end) or stops
/// reading for long (a stall, counted), for at most 30 s.
async fn write_forever(stream: &mut TcpStream, piece: &[u8], stats: &RawStats) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sent = 0u64;
    loop {
        match tokio::time::timeout_at(deadline, stream.write_all(piece)).await {
            Ok(Ok(())) => sent += piece.len() as u64,
            Ok(Err(_)) => {
                stats.closed_by_client.fetch_add(1, Ordering::SeqCst);
                break;
            }
            Err(_) => {
                stats.stalled.fetch_add(1, Ordering::SeqCst);
                break;
            }
        }
    }
    stats.max_bytes_sent.fetch_max(sent, Ordering::SeqCst);
}

/// Writes `bytes` one at a time, 200 ms apart, until done or the client closes.
async fn drip(stream: &mut TcpStream, bytes: &[u8], stats: &RawStats) {
    for b in bytes {
        if stream.write_all(&[*b]).await.is_err() {
            stats.closed_by_client.fetch_add(1, Ordering::SeqCst);
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn misbehave(mut stream: TcpStream, mode: Misbehaviour, stats: Arc<RawStats>) {
    let _open = OpenGuard::new(&stats);
    if let Misbehaviour::CloseAtOnce = mode {
        return;
    }
    if !read_request(&mut stream).await {
        return;
    }
    match mode {
        Misbehaviour::BlackHole => {
            // Until the client gives up and closes (bounded: the attempt timeout).
            let mut sink = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_secs(60), async {
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
        }
        Misbehaviour::EndlessBody(status) => {
            let head = format!("HTTP/1.1 {status} Whatever\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n");
            if stream.write_all(head.as_bytes()).await.is_ok() {
                let chunk = format!("4000\r\n{}\r\n", "x".repeat(0x4000));
                write_forever(&mut stream, chunk.as_bytes(), &stats).await;
            }
        }
        Misbehaviour::EndlessHeaders => {
            if stream.write_all(b"HTTP/1.1 200 OK\r\n").await.is_ok() {
                let line = format!("x-filler: {}\r\n", "y".repeat(1000));
                write_forever(&mut stream, line.as_bytes(), &stats).await;
            }
        }
        Misbehaviour::DripAll => {
            drip(
                &mut stream,
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                &stats,
            )
            .await
        }
        Misbehaviour::DripBody => {
            if stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
                .await
                .is_ok()
            {
                drip(&mut stream, &[b'z'; 100], &stats).await;
            }
        }
        Misbehaviour::Garbage => {
            let _ = stream
                .write_all(b"SSH-2.0-OpenSSH_9.6\r\n\x00\xff\xfe not http at all \x1b[31m\r\n\r\n")
                .await;
            let _ = stream.shutdown().await;
        }
        Misbehaviour::CloseAtOnce => unreachable!("handled above"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_does_not_starve_healthy_ones() {
    const CAP: usize = 8;
    let app = TestApp::spawn_with(Options {
        worker: true,
        configure: Box::new(|c| {
            // Without the per-endpoint cap the hanging endpoint would take every slot.
            c.worker_concurrency = 32;
            c.endpoint_concurrency = CAP;
            c.shutdown_grace = Duration::from_secs(1);
        }),
    })
    .await;
    let (hang_url, hang) = raw_receiver(Misbehaviour::BlackHole).await;
    let hang_ep = app
        .endpoint(json!({"url": hang_url, "event_types": ["noisy.hang"], "timeout_ms": 2000}))
        .await;
    let rx = Receiver::start().await;
    let mut healthy = Vec::new();
    for i in 1..=9 {
        healthy.push(
            app.endpoint(
                json!({"url": rx.url(&format!("/h{i}")), "event_types": [format!("noisy.h{i}")]}),
            )
            .await,
        );
    }

    let started = Instant::now();
    // The hanging endpoint's events go first, so they sit at the head of the queue.
    for i in 0..40 {
        app.publish("noisy.hang", json!({"i": i})).await;
    }
    for round in 0..20 {
        for i in 1..=9 {
            app.publish(&format!("noisy.h{i}"), json!({"round": round}))
                .await;
        }
    }
    for ep in &healthy {
        app.wait_deliveries(
            &format!("endpoint_id={ep}&status=succeeded"),
            Duration::from_secs(20),
            |d| d.len() == 20,
        )
        .await;
    }
    let healthy_done = started.elapsed();
    let (unfinished,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM deliveries WHERE endpoint_id = $1 AND status IN ('pending', 'in_flight')")
            .bind(hang_ep.parse::<hookit::domain::ids::EndpointId>().unwrap().uuid())
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    let max_open = hang.max_open.load(Ordering::SeqCst);
    eprintln!("noisy neighbour: 180 healthy deliveries in {healthy_done:?}; hanging endpoint: {unfinished} unfinished, at most {max_open} in flight");
    assert!(
        unfinished > 0,
        "the hanging endpoint was still stuck while the healthy ones finished"
    );
    assert!(
        (1..=CAP).contains(&max_open),
        "the hanging endpoint held {max_open} requests in flight; its cap is {CAP}"
    );
    assert_eq!(
        rx.received().len(),
        180,
        "each healthy delivery was sent once"
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------
// 4. Circuit breaker
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_circuit_opens_holds_without_spending_attempts_and_a_probe_closes_it() {
    // WorkerConfig::from_config fixes the threshold at 20 failures and the first probe at 5 s.
    const THRESHOLD: usize = 20;
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    rx.set_reply(Reply::Status(500));
    // Retries 2.5-5 s out: the first round of THRESHOLD failures is written long
    // before any retry is due, so the streak reaches the threshold exactly.
    let ep = app
        .endpoint(json!({"url": rx.url("/cb"), "max_attempts": 100, "retry_base_ms": 5000, "retry_cap_ms": 5000}))
        .await;
    let circuit = || async {
        let (_, e) = app.get(&format!("/v1/endpoints/{ep}")).await;
        e["circuit_state"].as_str().unwrap_or("").to_string()
    };
    let mut failing = HashSet::new();
    for n in 0..THRESHOLD {
        failing.insert(app.publish("cb.test", json!({"n": n})).await);
    }
    eventually("the circuit opens", Duration::from_secs(30), || async {
        circuit().await == "open"
    })
    .await;
    let sent_when_opened = rx.received().len();
    assert_eq!(
        sent_when_opened, THRESHOLD,
        "the circuit opened after {THRESHOLD} consecutive failures"
    );

    let mut held = HashSet::new();
    for n in 0..5 {
        held.insert(app.publish("cb.test", json!({"late": n})).await);
    }
    // The new deliveries wait in the queue until the probe is due: a worker that has
    // seen the open circuit leaves them unclaimed, one that has not yet claims them
    // and puts them back; either way no attempt is spent.
    eventually(
        "the new deliveries are parked until the probe",
        Duration::from_secs(10),
        || async {
            let (_, page) = app
                .get(&format!("/v1/deliveries?endpoint_id={ep}&limit=1000"))
                .await;
            let data = page["data"].as_array().cloned().unwrap_or_default();
            let parked = data
                .iter()
                .filter(|d| held.contains(d["event_id"].as_str().unwrap_or("")))
                .filter(|d| d["status"] == "pending" && d["attempts"] == 0)
                .count();
            parked == held.len()
        },
    )
    .await;
    let (_, e) = app.get(&format!("/v1/endpoints/{ep}")).await;
    assert_eq!(e["circuit_state"], "open", "{e}");
    assert_eq!(
        rx.received().len(),
        sent_when_opened,
        "nothing is sent while the circuit is open"
    );
    let (_, page) = app.get(&format!("/v1/deliveries?endpoint_id={ep}")).await;
    for d in page["data"].as_array().unwrap() {
        let expected = if failing.contains(d["event_id"].as_str().unwrap()) {
            1
        } else {
            0
        };
        assert_eq!(
            d["attempts"], expected,
            "no attempt is spent while open: {d}"
        );
        assert_eq!(d["status"], "pending", "{d}");
    }

    rx.set_reply(Reply::Status(200));
    let recovering = Instant::now();
    eventually(
        "a probe closes the circuit",
        Duration::from_secs(30),
        || async { circuit().await == "closed" },
    )
    .await;
    let closed_after = recovering.elapsed();
    let all = THRESHOLD + held.len();
    let done = app
        .wait_deliveries(
            &format!("endpoint_id={ep}&status=succeeded"),
            Duration::from_secs(40),
            |d| d.len() == all,
        )
        .await;
    eprintln!(
        "circuit: closed {closed_after:?} after recovery; all held deliveries done {:?} after",
        recovering.elapsed()
    );
    for d in &done {
        let expected = if failing.contains(d["event_id"].as_str().unwrap()) {
            2
        } else {
            1
        };
        assert_eq!(d["attempts"], expected, "{d}");
    }
    let got: HashSet<String> = rx.received()[sent_when_opened..]
        .iter()
        .map(|r| r.header("webhook-id"))
        .collect();
    assert_eq!(
        got,
        failing.union(&held).cloned().collect(),
        "every held delivery went out once recovered"
    );
    assert_eq!(
        rx.received().len(),
        sent_when_opened + all,
        "one request each after recovery"
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------
// 5. Receivers that misbehave below HTTP
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_receivers_cost_one_bounded_attempt_each() {
    const TIMEOUT_MS: i64 = 1500;
    let app = TestApp::spawn().await;
    let cases = [
        (Misbehaviour::EndlessBody(200), "succeeded"),
        (Misbehaviour::EndlessBody(500), "dead"),
        (Misbehaviour::EndlessHeaders, "dead"),
        (Misbehaviour::DripAll, "dead"),
        (Misbehaviour::DripBody, "succeeded"),
        (Misbehaviour::Garbage, "dead"),
        (Misbehaviour::CloseAtOnce, "dead"),
    ];
    let mut setups = Vec::new();
    for (i, (mode, expected)) in cases.into_iter().enumerate() {
        let (url, stats) = raw_receiver(mode).await;
        let ep = app
            .endpoint(
                json!({"url": url, "event_types": [format!("raw.m{i}")], "timeout_ms": TIMEOUT_MS,
                             "max_attempts": 2, "retry_base_ms": 50, "retry_cap_ms": 100}),
            )
            .await;
        app.publish(&format!("raw.m{i}"), json!({"mode": format!("{mode:?}")}))
            .await;
        setups.push((mode, expected, ep, stats));
    }
    for (mode, expected, ep, stats) in &setups {
        let done = app
            .wait_deliveries(&format!("endpoint_id={ep}"), Duration::from_secs(30), |d| {
                d.len() == 1 && (d[0]["status"] == "succeeded" || d[0]["status"] == "dead")
            })
            .await;
        assert_eq!(done[0]["status"], *expected, "{mode:?}: {}", done[0]);
        let (_, detail) = app
            .get(&format!(
                "/v1/deliveries/{}",
                done[0]["id"].as_str().unwrap()
            ))
            .await;
        let log = detail["attempt_log"].as_array().unwrap();
        assert_eq!(
            log.len(),
            if *expected == "dead" { 2 } else { 1 },
            "{mode:?}: {detail}"
        );
        for a in log {
            let ms = a["duration_ms"].as_i64().unwrap();
            assert!(
                ms <= TIMEOUT_MS + 1500,
                "{mode:?}: an attempt took {ms} ms, past its {TIMEOUT_MS} ms timeout"
            );
            let excerpt = a["response_body"].as_str().unwrap_or("").len();
            assert!(excerpt <= 4096, "{mode:?}: stored a {excerpt}-byte excerpt");
        }
        if let Misbehaviour::EndlessBody(_) = mode {
            assert_eq!(
                log[0]["response_body"].as_str().unwrap().len(),
                4096,
                "{mode:?}: the excerpt is the first 4 KiB"
            );
        }
        if let Misbehaviour::EndlessBody(_) | Misbehaviour::EndlessHeaders = mode {
            // The worker read a bounded amount and hung up; it did not keep reading.
            eventually(
                "the worker hangs up on an endless response",
                Duration::from_secs(10),
                || async { stats.open.load(Ordering::SeqCst) == 0 },
            )
            .await;
            assert_eq!(
                stats.stalled.load(Ordering::SeqCst),
                0,
                "{mode:?}: the worker neither read nor closed"
            );
            let sent = stats.max_bytes_sent.load(Ordering::SeqCst);
            assert!(
                sent < 32 << 20,
                "{mode:?}: the receiver got {sent} bytes out before the worker hung up"
            );
        }
        eprintln!(
            "{mode:?}: {} after {} attempt(s), last error {:?}, {} connection(s), max {} bytes written",
            done[0]["status"],
            log.len(),
            done[0]["last_error"],
            stats.connections.load(Ordering::SeqCst),
            stats.max_bytes_sent.load(Ordering::SeqCst)
        );
    }
    app.stop().await;
}

// ---------------------------------------------------------------------------
// 6. Retention
// ---------------------------------------------------------------------------

#[tokio::test]
async fn retention_prunes_only_old_fully_delivered_events() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let pool = app.store.pool();
    let a = app
        .endpoint(json!({"url": "https://93.184.216.34/a"}))
        .await;
    app.endpoint(json!({"url": "https://93.184.216.34/b", "event_types": ["two.*"]}))
        .await;
    let uuid = |id: &str| id.parse::<EventId>().unwrap().uuid();
    let set_status = |event: uuid::Uuid, status: &'static str| async move {
        sqlx::query(
            "UPDATE deliveries SET status = $2::delivery_status, attempts = 1, next_attempt_at = NULL, finished_at = now()
             WHERE event_id = $1",
        )
        .bind(event)
        .bind(status)
        .execute(pool)
        .await
        .unwrap();
    };
    let backdate = |event: uuid::Uuid| async move {
        sqlx::query("UPDATE events SET created_at = now() - interval '40 days' WHERE id = $1")
            .bind(event)
            .execute(pool)
            .await
            .unwrap();
    };

    let old_ok = uuid(&app.publish("one.x", json!({})).await);
    set_status(old_ok, "succeeded").await;
    sqlx::query(
        "INSERT INTO delivery_attempts (delivery_id, attempt, endpoint_id, started_at, duration_ms, status_code, succeeded)
         SELECT id, 1, endpoint_id, now() - interval '40 days', 5, 200, true FROM deliveries WHERE event_id = $1",
    )
    .bind(old_ok)
    .execute(pool)
    .await
    .unwrap();
    backdate(old_ok).await;
    let old_dead = uuid(&app.publish("one.x", json!({})).await);
    set_status(old_dead, "dead").await;
    backdate(old_dead).await;
    let old_pending = uuid(&app.publish("one.x", json!({})).await);
    backdate(old_pending).await;
    // Two deliveries: one succeeded, one dead letter.
    let old_mixed = uuid(&app.publish("two.x", json!({})).await);
    set_status(old_mixed, "succeeded").await;
    sqlx::query("UPDATE deliveries SET status = 'dead' WHERE event_id = $1 AND endpoint_id = $2")
        .bind(old_mixed)
        .bind(a.parse::<hookit::domain::ids::EndpointId>().unwrap().uuid())
        .execute(pool)
        .await
        .unwrap();
    backdate(old_mixed).await;
    let new_ok = uuid(&app.publish("one.x", json!({})).await);
    set_status(new_ok, "succeeded").await;
    // An idempotency record past its 24 h, on an event that is itself kept.
    let r = app
        .req(reqwest::Method::POST, "/v1/events")
        .header("idempotency-key", "old-key")
        .json(&json!({"event_type": "one.x", "payload": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    sqlx::query(
        "UPDATE idempotency_keys SET created_at = now() - interval '2 days' WHERE key = 'old-key'",
    )
    .execute(pool)
    .await
    .unwrap();
    // Enough old delivered events to need several batches.
    sqlx::query(
        "WITH ev AS (
            INSERT INTO events (id, tenant, event_type, body, created_at)
            SELECT gen_random_uuid(), 'acme', 'bulk.old', '{}', now() - interval '35 days' FROM generate_series(1, 2500)
            RETURNING id)
         INSERT INTO deliveries (id, tenant, event_id, endpoint_id, status, attempts, finished_at)
         SELECT gen_random_uuid(), 'acme', ev.id, $1, 'succeeded', 1, now() FROM ev",
    )
    .bind(a.parse::<hookit::domain::ids::EndpointId>().unwrap().uuid())
    .execute(pool)
    .await
    .unwrap();

    let retention = Duration::from_secs(30 * 86_400);
    // Oldest first, one batch at a time.
    assert_eq!(app.store.prune(retention, 1).await.unwrap(), 1000);
    let exists = |event: uuid::Uuid| async move {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM events WHERE id = $1")
            .bind(event)
            .fetch_one(pool)
            .await
            .unwrap();
        n == 1
    };
    assert!(
        !exists(old_ok).await,
        "the oldest delivered event goes in the first batch"
    );
    assert_eq!(app.store.prune(retention, 50).await.unwrap(), 1501);
    assert_eq!(
        app.store.prune(retention, 50).await.unwrap(),
        0,
        "nothing left to prune"
    );

    for (what, event) in [
        ("dead letter", old_dead),
        ("pending", old_pending),
        ("partly dead", old_mixed),
        ("recent", new_ok),
    ] {
        assert!(exists(event).await, "the {what} event was kept");
    }
    let count = |sql: &'static str| async move {
        let (n,): (i64,) = sqlx::query_as(sql).fetch_one(pool).await.unwrap();
        n
    };
    assert_eq!(
        count("SELECT count(*) FROM events WHERE event_type = 'bulk.old'").await,
        0
    );
    assert_eq!(count("SELECT count(*) FROM deliveries d LEFT JOIN events e ON e.id = d.event_id WHERE e.id IS NULL").await, 0);
    assert_eq!(
        count("SELECT count(*) FROM delivery_attempts").await,
        0,
        "attempt logs go with their event"
    );
    assert_eq!(
        count("SELECT count(*) FROM idempotency_keys WHERE key = 'old-key'").await,
        0,
        "expired idempotency records are pruned"
    );
    assert_eq!(
        count("SELECT count(*) FROM deliveries WHERE status = 'dead'").await,
        2,
        "dead letters are kept"
    );
    app.stop().await;
}

#[tokio::test]
async fn retention_keeps_a_delivery_redriven_while_it_prunes() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let pool = app.store.pool();
    app.endpoint(json!({"url": "https://93.184.216.34/a"}))
        .await;
    let event = app
        .publish("one.x", json!({}))
        .await
        .parse::<EventId>()
        .unwrap()
        .uuid();
    sqlx::query(
        "UPDATE deliveries SET status = 'succeeded', attempts = 1, next_attempt_at = NULL, finished_at = now()
         WHERE event_id = $1",
    )
    .bind(event)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("UPDATE events SET created_at = now() - interval '40 days' WHERE id = $1")
        .bind(event)
        .execute(pool)
        .await
        .unwrap();

    // A redrive of the delivery, still uncommitted: retention's snapshot sees a
    // fully delivered old event and picks it, then waits for the delivery's lock.
    let mut redrive = pool.begin().await.unwrap();
    sqlx::query(
        "UPDATE deliveries SET status = 'pending', round_base = attempts, finished_at = NULL,
             next_attempt_at = now(), updated_at = now()
         WHERE event_id = $1",
    )
    .bind(event)
    .execute(&mut *redrive)
    .await
    .unwrap();
    let store = app.store.clone();
    let pruning = tokio::spawn(async move {
        store
            .prune(Duration::from_secs(30 * 86_400), 1)
            .await
            .unwrap()
    });
    eventually("retention waits for the redrive's row lock", Duration::from_secs(10), || async {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%WITH picked AS%'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        n > 0
    })
    .await;
    redrive.commit().await.unwrap();

    assert_eq!(pruning.await.unwrap(), 0, "nothing was pruned");
    let (events,): (i64,) = sqlx::query_as("SELECT count(*) FROM events WHERE id = $1")
        .bind(event)
        .fetch_one(pool)
        .await
        .unwrap();
    let (status,): (String,) =
        sqlx::query_as("SELECT status::text FROM deliveries WHERE event_id = $1")
            .bind(event)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(
        (events, status.as_str()),
        (1, "pending"),
        "the redriven delivery and its event survive retention"
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------
// 7. Limits
// ---------------------------------------------------------------------------

#[tokio::test]
async fn limits_refuse_clearly_and_store_nothing() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        configure: Box::new(|c| c.max_endpoints_per_tenant = 3),
    })
    .await;
    let count = || async {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM endpoints WHERE tenant = 'acme' AND deleted_at IS NULL",
        )
        .fetch_one(app.store.pool())
        .await
        .unwrap();
        n
    };
    // Concurrent creations cannot overshoot the cap.
    let attempts = (0..6).map(|i| {
        app.post(
            "/v1/endpoints",
            json!({"url": format!("https://93.184.216.34/{i}")}),
        )
    });
    let answers = futures::future::join_all(attempts).await;
    let created: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 201)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(created.len(), 3, "{answers:?}");
    for (status, body) in answers.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(*status, 409, "{body}");
        assert_eq!(
            body["type"],
            "https://hookit.dev/problems/too-many-endpoints"
        );
        assert!(
            body["detail"].as_str().unwrap().contains("at most 3"),
            "{body}"
        );
    }
    assert_eq!(count().await, 3);
    // Another tenant has its own allowance; a deleted endpoint frees a place.
    let other = app.key_for("other").await;
    let r = app
        .req_as(&other, reqwest::Method::POST, "/v1/endpoints")
        .json(&json!({"url": "https://93.184.216.34/o"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let gone = created[0]["id"].as_str().unwrap();
    assert_eq!(
        app.req(reqwest::Method::DELETE, &format!("/v1/endpoints/{gone}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        app.post(
            "/v1/endpoints",
            json!({"url": "https://93.184.216.34/again"})
        )
        .await
        .0,
        201
    );
    assert_eq!(count().await, 3);

    // Endpoint URLs longer than 2048 bytes, on create and on change.
    let long_url = format!("https://93.184.216.34/{}", "a".repeat(2048));
    let (status, body) = app.post("/v1/endpoints", json!({"url": long_url})).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("2048"), "{body}");
    let keep = created[1]["id"].as_str().unwrap();
    let r = app
        .req(reqwest::Method::PATCH, &format!("/v1/endpoints/{keep}"))
        .json(&json!({"url": long_url}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let (_, shown) = app.get(&format!("/v1/endpoints/{keep}")).await;
    assert_eq!(
        shown["url"], created[1]["url"],
        "a refused change changes nothing"
    );

    // Oversized request heads: a 64 KiB header, and a 16 KiB request target.
    let events_before = count_rows(&app, "events").await;
    let r = app
        .req(reqwest::Method::POST, "/v1/events")
        .header("x-padding", "p".repeat(64 * 1024))
        .json(&json!({"event_type": "a.b", "payload": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = app
        .req(reqwest::Method::POST, "/v1/events")
        .header("idempotency-key", "k".repeat(64 * 1024))
        .json(&json!({"event_type": "a.b", "payload": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    let r = app
        .req(
            reqwest::Method::GET,
            &format!("/v1/deliveries?event_type={}", "t".repeat(16 * 1024)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 414);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    // Query strings that do not parse are problems too (not axum's plain text), and
    // the spec says that errors are problem+json.
    let r = app
        .req(reqwest::Method::GET, "/v1/deliveries?limit=lots")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let (_, spec) = app.get("/openapi.json").await;
    let refused = &spec["paths"]["/v1/events"]["post"]["responses"]["503"]["content"];
    assert!(refused["application/problem+json"].is_object(), "{refused}");
    assert_eq!(
        count_rows(&app, "events").await,
        events_before,
        "refused requests store nothing"
    );
    app.stop().await;
}

async fn count_rows(app: &TestApp, table: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    n
}

// ---------------------------------------------------------------------------
// Circuit-breaker accounting, pinned at the store level.
// ---------------------------------------------------------------------------

/// Claims every due delivery for a fresh owner.
async fn claim_all(store: &Store, owner: uuid::Uuid) -> Vec<hookit::db::deliveries::Claimed> {
    store.claim(owner, 1000, 60_000, &[]).await.unwrap()
}

fn failed(c: &hookit::db::deliveries::Claimed) -> hookit::db::deliveries::Completion {
    hookit::db::deliveries::Completion {
        id: c.id,
        attempt: c.attempts + 1,
        status: "pending",
        next_attempt_at: Some(chrono::Utc::now() + chrono::Duration::seconds(60)),
        succeeded: false,
        status_code: Some(500),
        error: Some("HTTP 500".into()),
        response_body: None,
        started_at: chrono::Utc::now(),
        duration_ms: 1,
        probe: false,
    }
}

async fn probe_ms(app: &TestApp) -> Option<i64> {
    let (ms,): (Option<i64>,) = sqlx::query_as("SELECT circuit_probe_ms FROM endpoints")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    ms
}

#[tokio::test]
async fn failures_in_flight_when_the_circuit_opens_do_not_push_the_probe_back() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    app.endpoint(json!({"url": "https://93.184.216.34/a", "max_attempts": 100}))
        .await;
    for n in 0..24 {
        app.publish("a.b", json!({ "n": n })).await;
    }
    let owner = uuid::Uuid::new_v4();
    let claimed = claim_all(&app.store, owner).await;
    assert_eq!(claimed.len(), 24, "all 24 are in flight at once");
    // The first 20 failures open the circuit with a 5 s probe interval...
    let first: Vec<_> = claimed[..20].iter().map(failed).collect();
    app.store.complete(owner, &first, 20, 5000).await.unwrap();
    assert_eq!(probe_ms(&app).await, Some(5000));
    // ...and the 4 attempts that were already in flight fail afterwards, one
    // completion batch each. None of them was a probe: the interval must not grow.
    for c in &claimed[20..] {
        app.store
            .complete(owner, &[failed(c)], 20, 5000)
            .await
            .unwrap();
    }
    assert_eq!(
        probe_ms(&app).await,
        Some(5000),
        "stale failures doubled the probe interval (5 s -> 80 s after 4 batches)"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_successful_probe_makes_the_parked_deliveries_due() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let ep = app
        .endpoint(json!({"url": "https://93.184.216.34/a", "max_attempts": 100}))
        .await;
    let ep = ep
        .parse::<hookit::domain::ids::EndpointId>()
        .unwrap()
        .uuid();
    for n in 0..20 {
        app.publish("a.b", json!({ "n": n })).await;
    }
    let owner = uuid::Uuid::new_v4();
    let claimed = claim_all(&app.store, owner).await;
    let failures: Vec<_> = claimed.iter().map(failed).collect();
    app.store
        .complete(owner, &failures, 20, 5000)
        .await
        .unwrap();
    // Make the probe due now, and queue three more deliveries behind it.
    sqlx::query("UPDATE endpoints SET circuit_open_until = now()")
        .execute(app.store.pool())
        .await
        .unwrap();
    for n in 0..3 {
        app.publish("a.b", json!({ "late": n })).await;
    }
    let claimed = claim_all(&app.store, owner).await;
    assert_eq!(claimed.len(), 3);
    // What the worker does: one wins the probe, the others are parked until the next one.
    assert_eq!(
        app.store.take_probe(ep, 5000).await.unwrap(),
        None,
        "the probe slot"
    );
    let next = app
        .store
        .take_probe(ep, 5000)
        .await
        .unwrap()
        .expect("taken");
    let parked: Vec<_> = claimed[1..].iter().map(|c| c.id).collect();
    app.store.release(owner, &parked, Some(next)).await.unwrap();
    // The probe succeeds: the circuit closes...
    let mut ok = failed(&claimed[0]);
    (
        ok.status,
        ok.next_attempt_at,
        ok.succeeded,
        ok.status_code,
        ok.error,
    ) = ("succeeded", None, true, Some(200), None);
    app.store.complete(owner, &[ok], 20, 5000).await.unwrap();
    let (_, e) = app
        .get(&format!(
            "/v1/endpoints/{}",
            hookit::domain::ids::EndpointId::from_uuid(ep)
        ))
        .await;
    assert_eq!(e["circuit_state"], "closed");
    // ...and what it held back should go now, not at the probe time that no longer applies.
    let (waiting,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM deliveries WHERE status = 'pending' AND next_attempt_at > now() + interval '1 second'
           AND attempts = 0",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(
        waiting, 0,
        "parked deliveries still wait for a probe after the circuit closed"
    );
    app.stop().await;
}
