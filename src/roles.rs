//! The process roles. Each has the same shape: `run(config, …, shutdown)`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use axum::routing::get;
use axum::Router;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{self, AppState};
use crate::config::Config;
use crate::db::{self, Store};
use crate::domain::crypto::MasterKey;
use crate::embedded_pg::{self, EmbeddedPg};
use crate::telemetry;

/// Cancels `token` on SIGINT or SIGTERM.
pub fn shutdown_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        info!("shutdown signal received");
        token.cancel();
    });
}

/// Requires a master key from the configuration.
pub fn require_master_key(cfg: &Config) -> anyhow::Result<MasterKey> {
    cfg.master_key
        .clone()
        .ok_or_else(|| anyhow!("HOOKIT_MASTER_KEY is required (base64 of 32 bytes; generate one with: openssl rand -base64 32)"))
}

/// Requires `DATABASE_URL`.
pub fn require_database_url(cfg: &Config) -> anyhow::Result<String> {
    cfg.database_url.clone().ok_or_else(|| {
        anyhow!("DATABASE_URL is required for this command (postgres://user:pass@host/db)")
    })
}

/// Loads the master key kept in the data directory, creating it (mode 0600) on
/// first start.
pub fn load_or_create_master_key(dir: &Path) -> anyhow::Result<MasterKey> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = dir.join("master.key");
    if path.exists() {
        let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            warn!(path = %path.display(), "master key file is readable by others; restricting to 0600");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        let text = std::fs::read_to_string(&path)?;
        return MasterKey::from_base64(&text).map_err(|e| anyhow!("{}: {e}", path.display()));
    }
    std::fs::create_dir_all(dir)?;
    let key = MasterKey::generate_base64();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::io::Write::write_all(&mut f, key.as_bytes())?;
    info!(path = %path.display(), "generated a master key for the embedded database");
    Ok(MasterKey::from_base64(&key)?)
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    std::io::Write::write_all(&mut f, text.as_bytes())?;
    Ok(())
}

/// A database connection for a role: `DATABASE_URL`, or (standalone only) the
/// embedded cluster, whose handle must live as long as the role.
pub struct Database {
    /// Access to the database.
    pub store: Store,
    /// The embedded server, if one was started.
    pub embedded: Option<EmbeddedPg>,
}

/// Connects, starting the embedded Postgres when allowed and no URL is set, and
/// applies migrations when `migrate` is set.
pub async fn open_database(
    cfg: &Config,
    allow_embedded: bool,
    migrate: bool,
) -> anyhow::Result<Database> {
    let (url, embedded, key) = match (&cfg.database_url, allow_embedded) {
        (Some(url), _) => (url.clone(), None, require_master_key(cfg)?),
        (None, true) => {
            let dir = cfg
                .data_dir
                .clone()
                .unwrap_or_else(embedded_pg::default_data_dir);
            info!(data_dir = %dir.display(), "DATABASE_URL not set: starting a private PostgreSQL");
            let pg = EmbeddedPg::start(&dir).await?;
            // Lets `hookit keys create` reach the running cluster without a URL.
            write_private(&dir.join("database.url"), &pg.url("postgres"))?;
            let key = match &cfg.master_key {
                Some(k) => k.clone(),
                None => load_or_create_master_key(&dir)?,
            };
            (pg.url("postgres"), Some(pg), key)
        }
        (None, false) => {
            return Err(anyhow!(
                "DATABASE_URL is required (postgres://user:pass@host/db)"
            ))
        }
    };
    let pool = db::connect(&url, cfg.db_pool).await?;
    if migrate {
        db::migrate(&pool).await.context("applying migrations")?;
    }
    Ok(Database {
        store: Store::new(pool, key),
        embedded,
    })
}

/// Serves `/healthz`, `/readyz` and `/metrics` for roles without the API.
pub fn spawn_ops_server(
    addr: SocketAddr,
    store: Store,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get({
                let store = store.clone();
                move || {
                    let store = store.clone();
                    async move {
                        match store.ping().await {
                            Ok(()) => (axum::http::StatusCode::OK, "ready"),
                            Err(_) => (
                                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                                "database unavailable",
                            ),
                        }
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                let store = store.clone();
                async move {
                    api::health::record_queue_gauges(&store).await;
                    metrics.map(|m| m.render()).unwrap_or_default()
                }
            }),
        );
    tokio::spawn(async move {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => {
                info!(%addr, "ops endpoints listening");
                let _ = axum::serve(l, app)
                    .with_graceful_shutdown(async move { shutdown.cancelled().await })
                    .await;
            }
            Err(e) => {
                warn!(%addr, error = %e, "cannot listen for ops endpoints (HOOKIT_METRICS_LISTEN)")
            }
        }
    });
}

/// Periodic upkeep: retention and auto-disable of endpoints failing too long.
pub fn spawn_maintenance(store: Store, cfg: &Config, shutdown: CancellationToken) {
    let retention = cfg.retention;
    let disable_after = cfg.disable_after;
    let ops = cfg.ops_webhook_url.is_some();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! { _ = tick.tick() => {}, _ = shutdown.cancelled() => return }
            match store.prune(retention, 1000).await {
                Ok(n) if n > 0 => info!(events = n, "pruned events past retention"),
                Ok(_) => {}
                Err(e) => warn!(error = %e, "retention prune failed"),
            }
            match store.disable_failing_endpoints(disable_after).await {
                Ok(ids) => {
                    for id in ids {
                        let endpoint_id = crate::domain::ids::EndpointId::from_uuid(id);
                        warn!(%endpoint_id, "endpoint disabled after failing continuously");
                        if ops {
                            let payload = serde_json::json!({
                                "endpoint_id": endpoint_id.to_string(),
                                "reason": format!("failing continuously for more than {}", humantime::format_duration(disable_after)),
                            });
                            if let Err(e) = store.emit_ops("endpoint.disabled", payload).await {
                                warn!(error = %e, "could not emit an operational webhook");
                            }
                        }
                    }
                }
                Err(e) => warn!(error = %e, "auto-disable check failed"),
            }
        }
    });
}

/// Registers (or re-points) the operational webhook endpoint when configured.
async fn ensure_ops_endpoint(cfg: &Config, store: &Store) -> anyhow::Result<()> {
    if let Some(url) = &cfg.ops_webhook_url {
        let ep = store
            .ensure_ops_endpoint(url, cfg.ops_webhook_secret.as_ref(), &cfg.ssrf_policy())
            .await
            .map_err(|e| anyhow!("HOOKIT_OPS_WEBHOOK_URL: {e}"))?;
        info!(endpoint_id = %ep.id, tenant = crate::db::ops::OPS_TENANT, "operational webhooks enabled");
    }
    Ok(())
}

/// A URL for a listening address, naming loopback when bound to all interfaces.
pub fn base_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        }
        ip => ip,
    };
    format!("http://{}/", SocketAddr::new(ip, addr.port()))
}

/// What someone who just ran `hookit standalone` needs next: where the API and
/// the dashboard are, and how to get a key (none is made here: a key is shown
/// only once, and a restart must not mint another). On stdout, like the demo's.
fn print_standalone_banner(cfg: &Config, addr: SocketAddr) {
    use std::io::Write;
    let base = base_url(addr);
    let database = match &cfg.database_url {
        Some(_) => "DATABASE_URL".to_string(),
        None => format!(
            "private PostgreSQL in {}",
            cfg.data_dir
                .clone()
                .unwrap_or_else(embedded_pg::default_data_dir)
                .join("pgdata")
                .display()
        ),
    };
    let data_dir = match (&cfg.database_url, &cfg.data_dir) {
        (None, Some(d)) => format!("HOOKIT_DATA_DIR={} ", d.display()),
        _ => String::new(),
    };
    let text = format!(
        "\nHookIt is running.\n\n  \
         API:        {base}v1/   (OpenAPI: {base}openapi.json)\n  \
         Dashboard:  {base}\n  \
         Database:   {database}\n\n\
         Get an API key (shown once; only its hash is stored), in another terminal:\n  \
         {data_dir}hookit keys create --tenant acme\n\n"
    );
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// `hookit standalone`: migrations, API and workers in one process.
pub async fn standalone(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| anyhow!("cannot listen on {} (HOOKIT_LISTEN): {e}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let banner_cfg = cfg.clone();
    // The banner goes out once the database is ready and just before serving.
    standalone_with(cfg, shutdown, Some(listener), move |_| {
        print_standalone_banner(&banner_cfg, addr)
    })
    .await
}

/// Standalone with hooks for `hookit demo`: an already bound listener, and a
/// callback that can adjust the API state before serving.
pub async fn standalone_with(
    cfg: Config,
    shutdown: CancellationToken,
    listener: Option<tokio::net::TcpListener>,
    adjust: impl FnOnce(&mut AppState),
) -> anyhow::Result<()> {
    let metrics = telemetry::init_metrics();
    let database = open_database(&cfg, true, true).await?;
    let store = database.store.clone();
    let local_wake = Arc::new(Notify::new());
    let work = Arc::new(Notify::new());
    api::spawn_notifier(
        store.clone(),
        work.clone(),
        Some(local_wake.clone()),
        shutdown.clone(),
    );
    spawn_maintenance(store.clone(), &cfg, shutdown.clone());
    ensure_ops_endpoint(&cfg, &store).await?;
    let mut state = AppState::new(&cfg, store.clone(), work, metrics)?;
    adjust(&mut state);
    let listener = match listener {
        Some(l) => l,
        None => tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| anyhow!("cannot listen on {} (HOOKIT_LISTEN): {e}", cfg.listen))?,
    };
    let api_task = tokio::spawn(api::serve_on(listener, state, shutdown.clone()));
    let worker = crate::worker::run(&cfg, store.clone(), local_wake, shutdown.clone()).await;
    let api = api_task.await?;
    store.pool().close().await;
    if let Some(pg) = database.embedded {
        let dir = cfg
            .data_dir
            .clone()
            .unwrap_or_else(embedded_pg::default_data_dir);
        let _ = std::fs::remove_file(dir.join("database.url"));
        pg.stop().await?;
    }
    worker?;
    api
}

/// `hookit api`: the HTTP API only.
pub async fn api(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = telemetry::init_metrics();
    let database = open_database(&cfg, false, false).await?;
    let store = database.store;
    let work = Arc::new(Notify::new());
    api::spawn_notifier(store.clone(), work.clone(), None, shutdown.clone());
    ensure_ops_endpoint(&cfg, &store).await?;
    let state = AppState::new(&cfg, store.clone(), work, metrics)?;
    api::serve(cfg.listen, state, shutdown).await?;
    store.pool().close().await;
    Ok(())
}

/// `hookit worker`: delivery only.
pub async fn worker(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = telemetry::init_metrics();
    let database = open_database(&cfg, false, false).await?;
    let store = database.store;
    if let Some(addr) = cfg.metrics_listen {
        spawn_ops_server(addr, store.clone(), metrics, shutdown.clone());
    }
    spawn_maintenance(store.clone(), &cfg, shutdown.clone());
    crate::worker::run(&cfg, store.clone(), Arc::new(Notify::new()), shutdown).await?;
    store.pool().close().await;
    Ok(())
}

/// `hookit migrate`.
pub async fn migrate(cfg: Config) -> anyhow::Result<()> {
    let url = require_database_url(&cfg)?;
    let pool = db::connect(&url, 2).await?;
    db::migrate(&pool).await.context("applying migrations")?;
    info!("migrations applied");
    Ok(())
}
