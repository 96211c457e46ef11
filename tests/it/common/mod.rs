//! Shared test harness: a private PostgreSQL cluster per test binary (or
//! `DATABASE_URL`), a fresh migrated database per test, the app (API + worker) on
//! port 0, and a real HTTP receiver on loopback.

#![allow(dead_code)]

pub mod chat;
pub mod receiver;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hookit::api::{self, AppState};
use hookit::config::Config;
use hookit::db::{self, Store};
use hookit::domain::crypto::MasterKey;
use hookit::embedded_pg::{EmbeddedPg, StartOptions};
use serde_json::{json, Value};
use sqlx::Connection;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use receiver::{Receiver, Reply};

/// Where the shared cluster lives and how to reach it as an administrator.
pub struct Cluster {
    /// `postgres://user:pw@host:port` without a database.
    pub url_base: String,
    /// The data directory when the cluster is ours.
    pub dir: Option<PathBuf>,
    /// The TCP port.
    pub port: u16,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static CREATE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The cluster for this test binary: `DATABASE_URL` (its server), or a private one
/// started once on a dedicated thread that lives as long as the process, so the
/// server (which dies with that thread) outlives every test and no test leaves
/// it running after the binary exits.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            let parsed = url::Url::parse(&url).expect("DATABASE_URL must be a URL");
            let mut base = parsed.clone();
            base.set_path("");
            return Cluster {
                url_base: base.as_str().trim_end_matches('/').to_string(),
                dir: None,
                port: parsed.port().unwrap_or(5432),
            };
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("test-postgres".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let dir = tempfile::Builder::new()
                        .prefix("hookit-test-pg-")
                        .tempdir()
                        .expect("tempdir")
                        .keep();
                    let opts = StartOptions {
                        die_with_parent: true,
                        ..Default::default()
                    };
                    let pg = EmbeddedPg::start_with(&dir, &opts)
                        .await
                        .expect("starting the private test PostgreSQL");
                    let url = pg.url("postgres");
                    let base = url.trim_end_matches("/postgres").to_string();
                    tx.send(Cluster {
                        url_base: base,
                        dir: Some(dir),
                        port: pg.port(),
                    })
                    .expect("send");
                    // Keep the server (and this thread) alive for the life of the process.
                    std::future::pending::<()>().await;
                    drop(pg);
                });
            })
            .expect("spawning the postgres thread");
        rx.recv()
            .expect("the test PostgreSQL failed to start (see the panic above)")
    })
}

/// What the shared cluster's log last said, and the free disk: once the cluster
/// is gone every later test fails the same way, and this says why (a full disk
/// makes the server PANIC on its next WAL write).
fn cluster_trouble(c: &Cluster) -> String {
    let Some(dir) = &c.dir else {
        return "(the cluster is DATABASE_URL's; see its server's log)".into();
    };
    let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(15).collect();
    let df = std::process::Command::new("df")
        .args(["-h", &dir.to_string_lossy()])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    format!(
        "last lines of {}/postgres.log:\n{}\nfree disk:\n{df}",
        dir.display(),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

/// A fresh, migrated database for one test.
pub async fn fresh_database() -> String {
    let c = cluster();
    let _guard = CREATE_LOCK.lock().await;
    let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", c.url_base))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "admin connection to the test cluster: {e}\n{}",
                cluster_trouble(c)
            )
        });
    let template_ready: Option<(i32,)> =
        sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = 'hookit_template'")
            .fetch_optional(&mut admin)
            .await
            .expect("query");
    if template_ready.is_none() {
        sqlx::query("CREATE DATABASE hookit_template")
            .execute(&mut admin)
            .await
            .expect("create template");
        let pool = db::connect(&format!("{}/hookit_template", c.url_base), 2)
            .await
            .expect("pool");
        db::migrate(&pool).await.expect("migrate template");
        pool.close().await;
    }
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE hookit_template"))
        .execute(&mut admin)
        .await
        .expect("create test database");
    format!("{}/{name}", c.url_base)
}

/// A test configuration: loopback targets allowed, fast retries.
pub fn test_config() -> Config {
    let defaults = Config::default();
    Config {
        allow_private_targets: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        retry: hookit::domain::retry::RetryPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_millis(400),
            max_attempts: 3,
        },
        lease: Duration::from_secs(10),
        request_timeout: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(5),
        ..defaults
    }
}

/// The app (API, and optionally a worker) running in-process against a fresh database.
pub struct TestApp {
    /// `http://127.0.0.1:port`
    pub base: String,
    /// Database access, as the app has it.
    pub store: Store,
    /// The configuration it runs with (DATABASE_URL set).
    pub cfg: Config,
    /// An API key of tenant `acme`.
    pub key: String,
    /// HTTP client for the API.
    pub http: reqwest::Client,
    master_key_b64: String,
    shutdown: CancellationToken,
    worker: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    api: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// How to start a [`TestApp`].
pub struct Options {
    /// Start an in-process worker.
    pub worker: bool,
    /// Adjust the configuration.
    pub configure: Box<dyn FnOnce(&mut Config) + Send>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            worker: true,
            configure: Box::new(|_| {}),
        }
    }
}

impl TestApp {
    /// API + worker with the test configuration.
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::default()).await
    }

    /// With options.
    pub async fn spawn_with(opts: Options) -> Self {
        let url = fresh_database().await;
        let mut cfg = test_config();
        let master_key_b64 = MasterKey::generate_base64();
        cfg.master_key = Some(MasterKey::from_base64(&master_key_b64).unwrap());
        cfg.database_url = Some(url.clone());
        (opts.configure)(&mut cfg);
        let pool = db::connect(&url, cfg.db_pool).await.unwrap();
        let store = Store::new(pool, cfg.master_key.clone().unwrap());
        let key = store.create_api_key("acme", Some("test")).await.unwrap();
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let api = tokio::spawn(api::serve_on(listener, state, shutdown.clone()));
        let worker = opts.worker.then(|| {
            let (cfg, store, wake, stop) = (
                cfg.clone(),
                store.clone(),
                local_wake.clone(),
                shutdown.clone(),
            );
            tokio::spawn(async move { hookit::worker::run(&cfg, store, wake, stop).await })
        });
        Self {
            base,
            store,
            cfg,
            key,
            http: reqwest::Client::new(),
            master_key_b64,
            shutdown,
            worker,
            api,
        }
    }

    /// The master key, as `HOOKIT_MASTER_KEY` would carry it (for child processes).
    pub fn cfg_master_key_b64(&self) -> String {
        self.master_key_b64.clone()
    }

    /// Another API key, for another tenant.
    pub async fn key_for(&self, tenant: &str) -> String {
        self.store.create_api_key(tenant, None).await.unwrap()
    }

    /// A request with the `acme` key.
    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.req_as(&self.key, method, path)
    }

    /// A request with a given key.
    pub fn req_as(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key)
    }

    /// POST JSON, returning status and body.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send_json(reqwest::Method::POST, path, body).await
    }

    /// Sends JSON with any method, returning status and body.
    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> (u16, Value) {
        let r = self.req(method, path).json(&body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// GET, returning status and body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.req(reqwest::Method::GET, path).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Registers an endpoint; returns its id.
    pub async fn endpoint(&self, body: Value) -> String {
        let (status, ep) = self.post("/v1/endpoints", body).await;
        assert_eq!(status, 201, "endpoint creation failed: {ep}");
        ep["id"].as_str().unwrap().to_string()
    }

    /// Publishes an event; returns its id.
    pub async fn publish(&self, event_type: &str, payload: Value) -> String {
        let (status, ev) = self
            .post(
                "/v1/events",
                json!({"event_type": event_type, "payload": payload}),
            )
            .await;
        assert_eq!(status, 202, "publish failed: {ev}");
        ev["id"].as_str().unwrap().to_string()
    }

    /// Waits (bounded) until the delivery listing with `query` satisfies `pred`.
    pub async fn wait_deliveries(
        &self,
        query: &str,
        timeout: Duration,
        pred: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (_, page) = self
                .get(&format!("/v1/deliveries?limit=1000&{query}"))
                .await;
            let data = page["data"].as_array().cloned().unwrap_or_default();
            if pred(&data) {
                return data;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for deliveries ({query}); last: {data:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the worker and the API.
    pub async fn stop(self) {
        self.shutdown.cancel();
        if let Some(w) = self.worker {
            w.await.unwrap().unwrap();
        }
        self.api.await.unwrap().unwrap();
    }
}

/// A `hookit worker` process on `app`'s database, allowed to send to
/// loopback, with a 2 s lease (so a killed one's deliveries are rescued fast).
pub fn worker_process(app: &TestApp) -> tokio::process::Child {
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

/// A port of 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (bounded) for an async condition, polling.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A worker running in-process with its own configuration (tests that need a
/// worker unlike the app's own, or several of them).
pub struct RunningWorker {
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Starts a worker with `cfg` against `store`.
pub fn spawn_worker(cfg: Config, store: Store) -> RunningWorker {
    let stop = CancellationToken::new();
    let handle = tokio::spawn({
        let stop = stop.clone();
        async move { hookit::worker::run(&cfg, store, Arc::new(Notify::new()), stop).await }
    });
    RunningWorker { stop, handle }
}

impl RunningWorker {
    /// Asks the worker to stop and waits until it has (graceful shutdown included).
    pub async fn stop(self) {
        self.stop.cancel();
        self.handle.await.unwrap().unwrap();
    }
}
