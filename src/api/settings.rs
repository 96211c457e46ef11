//! `/v1/settings`: the tenant's own settings. Today: `strict_event_types`, which
//! makes publishing refuse event types that are not in the catalog.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::ToSchema;

use super::extract::{ApiJson, Tenant};
use super::problem::Problem;
use super::AppState;
use crate::db::tenant_settings::TenantSettings;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/settings", get(show).patch(update))
}

/// A change of settings: absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    /// true: refuse events whose type is not in the catalog (422
    /// `unknown-event-type`); false (default): accept them.
    #[serde(default)]
    pub strict_event_types: Option<bool>,
}

#[utoipa::path(get, path = "/v1/settings", tag = "settings",
    responses((status = 200, body = TenantSettings), (status = 401, body = Problem)),
    security(("bearer" = [])))]
async fn show(
    State(s): State<AppState>,
    Tenant(t): Tenant,
) -> Result<Json<TenantSettings>, Problem> {
    Ok(Json(s.store.tenant_settings(&t).await?))
}

#[utoipa::path(patch, path = "/v1/settings", tag = "settings", request_body = SettingsPatch,
    responses((status = 200, body = TenantSettings, description = "Applies to this process's next publish, and to other API processes within a second"),
              (status = 400, body = Problem), (status = 401, body = Problem), (status = 415, body = Problem),
              (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn update(
    State(s): State<AppState>,
    Tenant(t): Tenant,
    ApiJson(p): ApiJson<SettingsPatch>,
) -> Result<Json<TenantSettings>, Problem> {
    let settings = s
        .store
        .set_tenant_settings(&t, p.strict_event_types)
        .await?;
    s.catalogs.invalidate(&t);
    tracing::info!(tenant = %t, strict_event_types = settings.strict_event_types, "tenant settings changed");
    Ok(Json(settings))
}
