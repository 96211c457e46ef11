//! `/healthz`, `/readyz` and `/metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::problem::Problem;
use super::AppState;
use crate::db::Store;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
}

#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "The process is up", body = String)))]
async fn healthz() -> &'static str {
    "ok"
}

#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "The database is reachable", body = String), (status = 503, body = Problem)))]
async fn readyz(State(s): State<AppState>) -> Result<&'static str, Problem> {
    s.store.ping().await?;
    Ok("ready")
}

/// Refreshes the queue gauges from the database.
pub async fn record_queue_gauges(store: &Store) {
    // Keep /metrics fast in an outage (hookit_database_up says why they are stale).
    if store.availability().is_down() {
        return;
    }
    if let Ok(q) = store.queue_stats().await {
        for status in crate::db::deliveries::STATUSES {
            let n = q
                .by_status
                .iter()
                .find(|(s, _)| s == status)
                .map(|(_, n)| *n)
                .unwrap_or(0);
            metrics::gauge!("hookit_queue_depth", "status" => status).set(n as f64);
        }
        metrics::gauge!("hookit_oldest_due_delivery_age_seconds").set(q.oldest_due_secs);
        metrics::gauge!("hookit_due_deliveries").set(q.due as f64);
        metrics::gauge!("hookit_queue_work").set(q.work() as f64);
    }
}

#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, description = "Prometheus text format", body = String)))]
async fn metrics_text(State(s): State<AppState>) -> Response {
    let Some(handle) = &s.metrics else {
        return (StatusCode::NOT_FOUND, "metrics are not enabled").into_response();
    };
    record_queue_gauges(&s.store).await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}
