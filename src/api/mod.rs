//! The HTTP API (axum): one router per resource, merged here, with problem-details
//! errors, API-key auth and a generated OpenAPI spec.

pub mod catalog;
pub mod dashboard;
pub mod deliveries;
pub mod demo;
pub mod endpoints;
pub mod event_types;
pub mod events;
pub mod events_batch;
pub mod extract;
pub mod health;
pub mod openapi;
pub mod problem;
pub mod settings;
pub mod stats;
pub mod transformations;
pub mod warning;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use utoipa::ToSchema;

use crate::config::Config;
use crate::db::Store;
use crate::domain::ssrf::SsrfPolicy;
use crate::transform::Transformer;
use extract::KeyCache;
use problem::Problem;

/// Everything handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Database access.
    pub store: Store,
    /// Target policy for endpoint URLs.
    pub ssrf: Arc<SsrfPolicy>,
    /// Largest event payload.
    pub max_payload: usize,
    /// Largest request body (payload plus envelope fields).
    pub body_limit: usize,
    /// Largest `POST /v1/events/batch` body.
    pub batch_body_limit: usize,
    /// Endpoints per tenant.
    pub max_endpoints: i64,
    /// API-key lookups.
    pub keys: KeyCache,
    /// Compiled event-type schemas and strict switches, per tenant.
    pub catalogs: catalog::Catalogs,
    /// Coalesced "new work" signal; see [`spawn_notifier`].
    pub work: Arc<Notify>,
    /// Prometheus registry.
    pub metrics: Option<PrometheusHandle>,
    /// Extra routes (the demo's receiver switch) merged under `/v1`.
    pub demo: Option<Arc<dyn DemoControl>>,
    /// Checks transformations on write and runs `/v1/transformations/test`.
    pub transformer: Transformer,
}

/// The demo receiver's switch, provided by `hookit demo`.
pub trait DemoControl: Send + Sync {
    /// Current mode: `up`, `errors` or `timeouts`.
    fn mode(&self) -> String;
    /// Sets the mode; false if unknown.
    fn set_mode(&self, mode: &str) -> bool;
}

/// A page of a list route.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T: ToSchema> {
    /// The items.
    pub data: Vec<T>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

impl AppState {
    /// State for the given configuration (starts the transformation engine's
    /// threads).
    pub fn new(
        cfg: &Config,
        store: Store,
        work: Arc<Notify>,
        metrics: Option<PrometheusHandle>,
    ) -> std::io::Result<Self> {
        Ok(Self {
            store,
            ssrf: Arc::new(cfg.ssrf_policy()),
            max_payload: cfg.max_payload,
            body_limit: cfg.max_payload + 4096,
            batch_body_limit: cfg.max_batch_body.max(cfg.max_payload + 4096),
            max_endpoints: cfg.max_endpoints_per_tenant,
            keys: KeyCache::default(),
            catalogs: catalog::Catalogs::default(),
            work,
            metrics,
            demo: None,
            transformer: cfg.transformer()?,
        })
    }
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let body_limit = state.body_limit;
    let availability = state.store.availability().clone();
    Router::new()
        .merge(endpoints::router())
        .merge(events::router())
        .merge(event_types::router())
        .merge(settings::router())
        .merge(events_batch::router(state.batch_body_limit))
        .merge(deliveries::router())
        .merge(stats::router())
        .merge(transformations::router())
        .merge(demo::router())
        .merge(health::router())
        .merge(openapi::router())
        .merge(dashboard::router())
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            availability,
            fail_fast,
        ))
        .layer(axum::middleware::from_fn(limit_head))
        .layer(axum::middleware::from_fn(observe))
        .with_state(state)
}

/// Longest accepted request target (path and query), in bytes.
pub const MAX_URI_LEN: usize = 8 * 1024;
/// Largest accepted total of request header names and values, in bytes.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Refuses oversized request heads with a problem before any extractor reads them.
/// hyper alone accepts heads of up to ~400 KiB, which every handler would then carry
/// (and an `Idempotency-Key` or `traceparent` would be parsed from).
async fn limit_head(req: Request, next: Next) -> Response {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > MAX_URI_LEN {
        return Problem::new(
            StatusCode::URI_TOO_LONG,
            "uri-too-long",
            "URI too long",
            format!("the request target may be at most {MAX_URI_LEN} bytes"),
        )
        .into_response();
    }
    let headers: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if headers > MAX_HEADER_BYTES {
        return Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            "Request header fields too large",
            format!("the request headers may total at most {MAX_HEADER_BYTES} bytes"),
        )
        .into_response();
    }
    next.run(req).await
}

/// While the database is known down, answers `/v1` requests (which all need it)
/// with 503 and Retry-After at once, instead of letting each wait out the pool's
/// connect timeout. The demo's receiver switch needs no database.
async fn fail_fast(
    State(availability): State<crate::db::availability::Availability>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    if path.starts_with("/v1/") && !path.starts_with("/v1/demo/") {
        if let Some(down) = availability.down_for() {
            return Problem::from(crate::error::Error::DatabaseDown(down)).into_response();
        }
    }
    next.run(req).await
}

/// Counts requests by route and status, and logs them without bodies or keys.
async fn observe(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    metrics::counter!("hookit_http_requests_total", "route" => route.clone(), "method" => method.to_string(), "status" => status.to_string()).increment(1);
    metrics::histogram!("hookit_http_request_duration_seconds", "route" => route.clone())
        .record(start.elapsed().as_secs_f64());
    if status >= 500 {
        warn!(%method, %route, status, "request failed");
    }
    resp
}

/// Shortest gap between two `NOTIFY`s. Each NOTIFY is a transaction that takes an
/// xid and flushes a commit record, so under load they are coalesced: one per gap
/// at most, whatever the ingest rate, at a cost of at most this much wake-up latency.
const NOTIFY_GAP: std::time::Duration = std::time::Duration::from_millis(5);

/// Turns the coalesced work signal into `NOTIFY hookit_work`: at most one NOTIFY
/// in flight and one per [`NOTIFY_GAP`], however many events arrive meanwhile, so
/// ingestion never serialises on Postgres's notification queue lock. `local` wakes
/// a worker in this process at once.
pub fn spawn_notifier(
    store: Store,
    work: Arc<Notify>,
    local: Option<Arc<Notify>>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! { _ = work.notified() => {}, _ = stop.cancelled() => return }
            if let Some(l) = &local {
                l.notify_one();
            }
            if let Err(e) = store.notify_work().await {
                tracing::debug!(error = %e, "NOTIFY failed; workers fall back to polling");
            }
            tokio::time::sleep(NOTIFY_GAP).await;
        }
    });
}

/// Serves the API on `listen` until `shutdown`, then drains open requests.
pub async fn serve(
    listen: SocketAddr,
    state: AppState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen} (HOOKIT_LISTEN): {e}"))?;
    serve_on(listener, state, shutdown).await
}

/// Serves on an already bound listener (tests bind port 0).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    info!(addr = %listener.local_addr()?, "API listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}

/// Shared `State` extractor alias.
pub type St = State<AppState>;
