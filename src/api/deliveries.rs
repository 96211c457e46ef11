//! `/v1/deliveries` and `/v1/dead-letters`: inspect deliveries with their attempt
//! logs, and redrive one or all matching dead letters.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::{ApiJson, ApiQuery, Tenant};
use super::problem::Problem;
use super::{AppState, Page};
use crate::db::deliveries::{Delivery, DeliveryDetail, DeliveryFilter, RedriveFilter};
use crate::domain::ids::DeliveryId;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/deliveries", get(list))
        .route("/v1/deliveries/{id}", get(show))
        .route("/v1/deliveries/{id}/redrive", post(redrive))
        .route("/v1/dead-letters/redrive", post(redrive_dead))
        .route("/v1/dead-letters/purge", post(purge_dead))
}

fn delivery_id(raw: &str) -> Result<DeliveryId, Problem> {
    raw.parse().map_err(|_| Problem::not_found("delivery"))
}

/// How many dead letters were (or, with dry_run, would be) redriven.
#[derive(Debug, Serialize, ToSchema)]
pub struct Redriven {
    /// The count.
    pub redriven: u64,
}

#[utoipa::path(get, path = "/v1/deliveries", tag = "deliveries", params(DeliveryFilter),
    responses((status = 200, body = Page<Delivery>), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn list(
    State(s): State<AppState>,
    Tenant(t): Tenant,
    ApiQuery(f): ApiQuery<DeliveryFilter>,
) -> Result<Json<Page<Delivery>>, Problem> {
    let limit = crate::db::page_limit(f.limit);
    let data = s.store.list_deliveries(&t, &f).await?;
    let next_cursor = (data.len() as i64 == limit)
        .then(|| data.last().map(|d| d.id.to_string()))
        .flatten();
    Ok(Json(Page { data, next_cursor }))
}

#[utoipa::path(get, path = "/v1/deliveries/{id}", tag = "deliveries", params(("id" = String, Path, description = "dlv_…")),
    responses((status = 200, body = DeliveryDetail), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn show(
    State(s): State<AppState>,
    Tenant(t): Tenant,
    Path(id): Path<String>,
) -> Result<Json<DeliveryDetail>, Problem> {
    Ok(Json(s.store.get_delivery(&t, delivery_id(&id)?).await?))
}

#[utoipa::path(post, path = "/v1/deliveries/{id}/redrive", tag = "deliveries", params(("id" = String, Path, description = "dlv_…")),
    responses((status = 200, body = Delivery), (status = 401, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem, description = "Still pending or in flight")),
    security(("bearer" = [])))]
async fn redrive(
    State(s): State<AppState>,
    Tenant(t): Tenant,
    Path(id): Path<String>,
) -> Result<Json<Delivery>, Problem> {
    let d = s.store.redrive(&t, delivery_id(&id)?).await?;
    tracing::info!(delivery_id = %d.id, "delivery redriven");
    s.work.notify_one();
    Ok(Json(d))
}

#[utoipa::path(post, path = "/v1/dead-letters/redrive", tag = "deliveries", request_body = RedriveFilter,
    responses((status = 200, body = Redriven), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 415, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn redrive_dead(
    State(s): State<AppState>,
    Tenant(t): Tenant,
    ApiJson(f): ApiJson<RedriveFilter>,
) -> Result<Json<Redriven>, Problem> {
    let n = s.store.redrive_dead(&t, &f).await?;
    if !f.dry_run && n > 0 {
        tracing::info!(redriven = n, "dead letters redriven");
        s.work.notify_one();
    }
    Ok(Json(Redriven { redriven: n }))
}

/// How many dead letters were (or, with dry_run, would be) deleted.
#[derive(Debug, Serialize, ToSchema)]
pub struct Purged {
    /// The count.
    pub purged: u64,
}

#[utoipa::path(post, path = "/v1/dead-letters/purge", tag = "deliveries", request_body = RedriveFilter,
    responses((status = 200, body = Purged, description = "Matching dead letters deleted with their attempt logs"),
              (status = 400, body = Problem), (status = 401, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn purge_dead(
    State(s): State<AppState>,
    Tenant(t): Tenant,
    ApiJson(f): ApiJson<RedriveFilter>,
) -> Result<Json<Purged>, Problem> {
    let n = s.store.purge_dead(&t, &f).await?;
    if !f.dry_run && n > 0 {
        tracing::info!(purged = n, "dead letters purged");
    }
    Ok(Json(Purged { purged: n }))
}
