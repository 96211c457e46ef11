//! `/v1/stats`: the dashboard's aggregates.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiQuery, Tenant};
use super::problem::Problem;
use super::AppState;
use crate::db::stats::{Bucket, EndpointStats};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/stats/endpoints", get(endpoints))
        .route("/v1/stats/timeseries", get(timeseries))
}

/// Per-endpoint figures.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointStatsList {
    /// One per endpoint.
    pub data: Vec<EndpointStats>,
}

/// Per-minute buckets.
#[derive(Debug, Serialize, ToSchema)]
pub struct Timeseries {
    /// Oldest first.
    pub buckets: Vec<Bucket>,
}

/// Window of the time series.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Window {
    /// Minutes, 1-1440 (default 180).
    pub minutes: Option<i64>,
}

#[utoipa::path(get, path = "/v1/stats/endpoints", tag = "stats",
    responses((status = 200, body = EndpointStatsList), (status = 401, body = Problem)), security(("bearer" = [])))]
async fn endpoints(
    State(s): State<AppState>,
    Tenant(t): Tenant,
) -> Result<Json<EndpointStatsList>, Problem> {
    Ok(Json(EndpointStatsList {
        data: s.store.endpoint_stats(&t).await?,
    }))
}

#[utoipa::path(get, path = "/v1/stats/timeseries", tag = "stats", params(Window),
    responses((status = 200, body = Timeseries), (status = 400, body = Problem), (status = 401, body = Problem)),
    security(("bearer" = [])))]
async fn timeseries(
    State(s): State<AppState>,
    Tenant(t): Tenant,
    ApiQuery(w): ApiQuery<Window>,
) -> Result<Json<Timeseries>, Problem> {
    Ok(Json(Timeseries {
        buckets: s.store.timeseries(&t, w.minutes.unwrap_or(180)).await?,
    }))
}
