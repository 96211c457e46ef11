//! `hookit bench`: HookIt's own benchmark, like pgbench. It starts HookIt (API and
//! worker processes against the embedded Postgres or `DATABASE_URL`), or drives
//! one at `--target`, with its own load generator and receiver, and reports
//! throughput, latency, CPU per delivery (HookIt and Postgres, from /proc), peak
//! RSS, WAL bytes and database transactions per delivery.

mod batch;
mod fleet;
mod otel;
pub mod procstat;
mod queue;
pub mod receiver;
mod report;
mod scale;
mod scenarios;
mod transform;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use sqlx::Connection;
use tokio::process::{Child, Command};

use crate::db::{self, Store};
use crate::domain::crypto::MasterKey;
use crate::embedded_pg::EmbeddedPg;
pub use report::Row;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchArgs {
    /// Scenarios: ingest, ingest-batch, deliver, latency, backlog, noisy, fleet, scale, transform.
    pub scenarios: Vec<String>,
    /// Measurement window per case.
    pub duration: Duration,
    /// Concurrent publishers.
    pub publishers: usize,
    /// Deliveries queued by the backlog scenario.
    pub backlog: u64,
    /// Worker process counts of the deliver scenario.
    pub workers: Vec<usize>,
    /// Offered rates (events/s) of the latency scenario.
    pub rates: Vec<u64>,
    /// A running HookIt to drive instead of starting one.
    pub target: Option<String>,
    /// API key for `target`.
    pub api_key: Option<String>,
    /// Where the embedded Postgres lives (default: a temporary directory).
    pub data_dir: Option<PathBuf>,
    /// `DATABASE_URL` of a server to create benchmark databases on.
    pub database_url: Option<String>,
}

/// Where the benchmark gets its databases from.
pub(crate) struct Server {
    /// `postgres://user:pw@host:port` (no database).
    url_base: String,
    /// The embedded server, when we started one.
    _embedded: Option<EmbeddedPg>,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    async fn start(args: &BenchArgs) -> anyhow::Result<Self> {
        if let Some(url) = &args.database_url {
            let mut u = url::Url::parse(url).context("DATABASE_URL")?;
            u.set_path("");
            return Ok(Self {
                url_base: u.as_str().trim_end_matches('/').to_string(),
                _embedded: None,
                _tmp: None,
            });
        }
        let (dir, tmp) = match &args.data_dir {
            Some(d) => (d.clone(), None),
            None => {
                let t = tempfile::Builder::new().prefix("hookit-bench-").tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let pg = EmbeddedPg::start(&dir).await?;
        let base = pg.url("postgres").trim_end_matches("/postgres").to_string();
        Ok(Self {
            url_base: base,
            _embedded: Some(pg),
            _tmp: tmp,
        })
    }

    /// A fresh migrated database.
    async fn database(&self, name: &str) -> anyhow::Result<String> {
        let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", self.url_base)).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await?;
        let url = format!("{}/{name}", self.url_base);
        let pool = db::connect(&url, 2).await?;
        db::migrate(&pool).await?;
        pool.close().await;
        Ok(url)
    }

    async fn drop_database(&self, name: &str) {
        if let Ok(mut admin) =
            sqlx::PgConnection::connect(&format!("{}/postgres", self.url_base)).await
        {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await;
        }
    }
}

/// One HookIt deployment under test: API processes and N worker processes.
pub(crate) struct Deployment {
    pub(crate) base: String,
    pub(crate) key: String,
    pub(crate) store: Store,
    pub(crate) url: String,
    api: Option<Child>,
    /// More API processes on the same database (the scale scenario).
    more_apis: Vec<Child>,
    workers: Vec<Child>,
    master_key: String,
    worker_env: Vec<(String, String)>,
    /// Settings of every process (the tracing scenario's OTEL_* variables).
    env: Vec<(String, String)>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Deployment {
    async fn start(url: &str, workers: usize, worker_env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_with(url, workers, worker_env, &[]).await
    }

    /// [`Deployment::start`], with `env` set in every process.
    async fn start_with(
        url: &str,
        workers: usize,
        worker_env: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let master_key = MasterKey::generate_base64();
        let pool = db::connect(url, 4).await?;
        let store = Store::new(pool, MasterKey::from_base64(&master_key)?);
        let key = store.create_api_key("bench", Some("bench")).await?;
        let port = free_port()?;
        let mut d = Self {
            base: format!("http://127.0.0.1:{port}"),
            key,
            store,
            url: url.to_string(),
            api: None,
            more_apis: Vec::new(),
            workers: Vec::new(),
            master_key,
            worker_env: worker_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        d.api = Some(d.spawn("api", &[("HOOKIT_LISTEN", format!("127.0.0.1:{port}"))])?);
        for _ in 0..workers {
            d.add_worker()?;
        }
        ready(&d.base).await?;
        Ok(d)
    }

    /// Starts another API process on the same database; returns its base URL.
    pub(crate) async fn add_api(&mut self) -> anyhow::Result<String> {
        let port = free_port()?;
        let api = self.spawn("api", &[("HOOKIT_LISTEN", format!("127.0.0.1:{port}"))])?;
        self.more_apis.push(api);
        let base = format!("http://127.0.0.1:{port}");
        ready(&base).await?;
        Ok(base)
    }

    fn spawn(&self, role: &str, extra: &[(&str, String)]) -> anyhow::Result<Child> {
        let exe = std::env::current_exe()?;
        let mut c = Command::new(exe);
        c.arg(role)
            .env("DATABASE_URL", &self.url)
            .env("HOOKIT_MASTER_KEY", &self.master_key)
            .env("HOOKIT_ALLOW_PRIVATE_TARGETS", "127.0.0.0/8")
            .env("HOOKIT_LOG_FORMAT", "json")
            .env("RUST_LOG", "error")
            .env("HOOKIT_DB_POOL", "32")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())) {
            c.env(k, v);
        }
        for (k, v) in extra {
            c.env(k, v);
        }
        if role == "worker" {
            for (k, v) in &self.worker_env {
                c.env(k, v);
            }
        }
        Ok(c.spawn()?)
    }

    fn add_worker(&mut self) -> anyhow::Result<()> {
        let w = self.spawn("worker", &[])?;
        self.workers.push(w);
        Ok(())
    }

    /// Process ids of the API and workers.
    pub(crate) fn pids(&self) -> (Vec<u32>, Vec<u32>) {
        let api = self
            .api
            .iter()
            .chain(self.more_apis.iter())
            .filter_map(|c| c.id())
            .collect();
        let workers = self.workers.iter().filter_map(|c| c.id()).collect();
        (api, workers)
    }

    async fn stop(mut self) {
        let mut all: Vec<&mut Child> = self
            .api
            .iter_mut()
            .chain(self.more_apis.iter_mut())
            .chain(self.workers.iter_mut())
            .collect();
        for c in all.iter_mut() {
            if let Some(pid) = c.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        for c in all {
            if tokio::time::timeout(Duration::from_secs(10), c.wait())
                .await
                .is_err()
            {
                let _ = c.kill().await;
            }
        }
        self.store.pool().close().await;
    }
}

/// Waits (bounded) until the API at `base` answers /readyz.
async fn ready(base: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if matches!(http.get(format!("{base}/readyz")).send().await, Ok(r) if r.status().is_success())
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(anyhow!("the API process at {base} did not become ready"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the benchmark and returns its rows.
pub async fn run(args: &BenchArgs) -> anyhow::Result<Vec<Row>> {
    let tally = Arc::new(receiver::Tally::default());
    let receiver = receiver::start(tally.clone()).await?;
    let mut rows = Vec::new();
    if let Some(target) = &args.target {
        let key = args
            .api_key
            .clone()
            .ok_or_else(|| anyhow!("--target needs --api-key"))?;
        for s in &args.scenarios {
            rows.extend(scenarios::remote(s, args, target, &key, &receiver, &tally).await?);
        }
        return Ok(rows);
    }
    let server = Server::start(args).await?;
    let ctx = scenarios::Ctx {
        args,
        server: &server,
        receiver: &receiver,
        tally: &tally,
    };
    for s in &args.scenarios {
        let mut got = match s.as_str() {
            "ingest" => scenarios::ingest(&ctx).await?,
            "ingest-batch" => batch::ingest_batch(&ctx).await?,
            "deliver" => scenarios::deliver(&ctx).await?,
            "latency" => scenarios::latency(&ctx).await?,
            "backlog" => queue::backlog(&ctx).await?,
            "noisy" => queue::noisy(&ctx).await?,
            "fleet" => fleet::fleet(&ctx).await?,
            "scale" => scale::scale(&ctx).await?,
            "transform" => transform::transform(&ctx).await?,
            "tracing" => otel::tracing(&ctx).await?,
            other => {
                return Err(anyhow!(
                "--scenario: unknown scenario `{other}` (ingest, ingest-batch, deliver, latency, backlog, noisy, fleet, scale, transform, tracing)"
            ))
            }
        };
        for r in &got {
            eprintln!("{}", report::one_line(r));
        }
        rows.append(&mut got);
    }
    Ok(rows)
}

/// Prints rows as a table.
pub fn print_table(rows: &[Row]) {
    report::table(rows);
}
