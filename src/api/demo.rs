//! `/v1/demo/receiver`: the switch of `hookit demo`'s built-in receiver (404 when
//! not running the demo).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{ApiJson, Tenant};
use super::problem::Problem;
use super::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/demo/receiver", get(show).post(set))
}

/// The demo receiver's behaviour.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DemoMode {
    /// `up`, `errors` or `timeouts`.
    pub mode: String,
}

#[utoipa::path(get, path = "/v1/demo/receiver", tag = "demo",
    responses((status = 200, body = DemoMode), (status = 401, body = Problem), (status = 404, body = Problem, description = "Not in demo mode")),
    security(("bearer" = [])))]
async fn show(State(s): State<AppState>, _t: Tenant) -> Result<Json<DemoMode>, Problem> {
    let demo = s
        .demo
        .as_ref()
        .ok_or_else(|| Problem::not_found("demo receiver (not running `hookit demo`)"))?;
    Ok(Json(DemoMode { mode: demo.mode() }))
}

#[utoipa::path(post, path = "/v1/demo/receiver", tag = "demo", request_body = DemoMode,
    responses((status = 200, body = DemoMode), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem),
              (status = 415, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn set(
    State(s): State<AppState>,
    _t: Tenant,
    ApiJson(m): ApiJson<DemoMode>,
) -> Result<Json<DemoMode>, Problem> {
    let demo = s
        .demo
        .as_ref()
        .ok_or_else(|| Problem::not_found("demo receiver (not running `hookit demo`)"))?;
    if !demo.set_mode(&m.mode) {
        return Err(crate::error::Error::invalid(
            "invalid-demo-mode",
            "mode must be up, errors or timeouts",
        )
        .into());
    }
    tracing::info!(mode = %m.mode, "demo receiver switched");
    Ok(Json(DemoMode { mode: demo.mode() }))
}
