//! `/v1/endpoints`: register, inspect, change, pause and delete endpoints, and
//! reveal or rotate their signing secrets.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use super::events::EventAccepted;
use super::extract::{ApiJson, ApiQuery, Tenant};
use super::problem::Problem;
use super::warning::Warning;
use super::{AppState, Page};
use crate::db::endpoints::{check_target, Endpoint, EndpointPatch, EndpointSpec};
use crate::db::events::NewEvent;
use crate::domain::ids::EndpointId;
use crate::domain::patterns::{subscription_issues, validate_event_type};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/endpoints", post(create).get(list))
        .route("/v1/endpoints/{id}", get(show).patch(update).delete(remove))
        .route("/v1/endpoints/{id}/secret", get(secret))
        .route("/v1/endpoints/{id}/secret/rotate", post(rotate))
        .route("/v1/endpoints/{id}/pause", post(pause))
        .route("/v1/endpoints/{id}/resume", post(resume))
        .route("/v1/endpoints/{id}/test", post(test_event))
}

/// Parses a path id; an unparseable id is simply not found.
pub(super) fn endpoint_id(raw: &str) -> Result<EndpointId, Problem> {
    raw.parse().map_err(|_| Problem::not_found("endpoint"))
}

/// Page parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page size, 1-1000 (default 100); outside that range, 400.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    pub limit: Option<crate::domain::page::PageLimit>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A signing secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretBody {
    /// `whsec_…`
    pub secret: String,
}

/// An endpoint as created or changed, with warnings about its subscriptions.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointWritten {
    /// The endpoint.
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// Subscriptions the tenant's event-type catalog does not back: a pattern
    /// no type matches (`unknown-event-type`), or only deprecated types match
    /// (`deprecated-event-type`). Absent when there are none, or when the
    /// tenant has no catalog. The endpoint is saved either way.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
}

/// `ep` with the warnings about its subscriptions. Best effort: the endpoint
/// is already saved, so a failed catalog read costs the warnings, not the answer.
async fn with_warnings(s: &AppState, tenant: &str, ep: Endpoint) -> EndpointWritten {
    let mut warnings = Vec::new();
    if ep.event_types.iter().any(|p| p != "*") {
        match s.store.event_type_names(tenant).await {
            Ok(catalog) => {
                warnings = subscription_issues(&ep.event_types, &catalog)
                    .iter()
                    .map(Warning::subscription)
                    .collect();
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the event-type catalog for subscription warnings")
            }
        }
    }
    EndpointWritten {
        endpoint: ep,
        warnings,
    }
}

/// A test event for one endpoint.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestEvent {
    /// Event type (default `hookit.test`).
    pub event_type: Option<String>,
    /// Payload, a JSON object (default `{"test": true}`).
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Box<RawValue>>,
}

#[utoipa::path(post, path = "/v1/endpoints", tag = "endpoints", request_body = EndpointSpec,
    responses((status = 201, body = EndpointWritten), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 409, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn create(
    State(s): State<AppState>,
    Tenant(t): Tenant,
    ApiJson(spec): ApiJson<EndpointSpec>,
) -> Result<(StatusCode, Json<EndpointWritten>), Problem> {
    spec.validate(&s.ssrf)?;
    check_target(&s.ssrf, &spec.url).await?;
    if let Some(code) = &spec.transformation {
        super::transformations::check(&s, &t, code).await?;
    }
    let ep = s.store.create_endpoint(&t, &spec, s.max_endpoints).await?;
    tracing::info!(endpoint_id = %ep.id, tenant = %t, "endpoint created");
    Ok((StatusCode::CREATED, Json(with_warnings(&s, &t, ep).await)))
}

#[utoipa::path(get, path = "/v1/endpoints", tag = "endpoints", params(PageParams),
    responses((status = 200, body = Page<Endpoint>), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn list(
    State(s): State<AppState>,
    Tenant(t): Tenant,
    ApiQuery(p): ApiQuery<PageParams>,
) -> Result<Json<Page<Endpoint>>, Problem> {
    let cursor = p
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<EndpointId>().map_err(|_| {
                Problem::from(crate::error::Error::invalid(
                    "invalid-cursor",
                    "cursor is not a value this API returned",
                ))
            })
        })
        .transpose()?;
    let limit = crate::db::page_limit(p.limit);
    let data = s.store.list_endpoints(&t, cursor, limit).await?;
    let next_cursor = (data.len() as i64 == limit)
        .then(|| data.last().map(|e| e.id.to_string()))
        .flatten();
    Ok(Json(Page { data, next_cursor }))
}

#[utoipa::path(get, path = "/v1/endpoints/{id}", tag = "endpoints", params(("id" = String, Path, description = "ep_…")),
    responses((status = 200, body = Endpoint), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn show(
    State(s): State<AppState>,
    Tenant(t): Tenant,
    Path(id): Path<String>,
) -> Result<Json<Endpoint>, Problem> {
    Ok(Json(s.store.get_endpoint(&t, endpoint_id(&id)?).await?))
}

#[utoipa::path(patch, path = "/v1/endpoints/{id}", tag = "endpoints", params(("id" = String, Path, description = "ep_…")),
    request_body = EndpointPatch,
    responses((status = 200, body = EndpointWritten), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn update(
    State(s): State<AppState>,
    Tenant(t): Tenant,
    Path(id): Path<String>,
    ApiJson(p): ApiJson<EndpointPatch>,
) -> Result<Json<EndpointWritten>, Problem> {
    let id = endpoint_id(&id)?;
    if let Some(u) = &p.url {
        s.ssrf.check_url(u).map_err(crate::error::Error::from)?;
        check_target(&s.ssrf, u).await?;
    }
    if let Some(Some(code)) = &p.transformation {
        super::transformations::check(&s, &t, code).await?;
    }
    let ep = s.store.update_endpoint(&t, id, &p, &s.ssrf).await?;
    Ok(Json(with_warnings(&s, &t, ep).await))
}

#[utoipa::path(delete, path = "/v1/endpoints/{id}", tag = "endpoints", params(("id" = String, Path, description = "ep_…")),
    responses((status = 204, description = "Deleted; its pending deliveries are dead-lettered"), (status = 401, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
async fn remove(
    State(s): State<AppState>,
    Tenant(t): Tenant,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    s.store.delete_endpoint(&t, endpoint_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/endpoints/{id}/secret", tag = "endpoints", params(("id" = String, Path, description = "ep_…")),
    responses((status = 200, body = SecretBody), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn secret(
    State(s): State<AppState>,
    Tenant(t): Tenant,
    Path(id): Path<String>,
) -> Result<Json<SecretBody>, Problem> {
    let secret = s.store.get_endpoint_secret(&t, endpoint_id(&id)?).await?;
    Ok(Json(SecretBody {
        secret: secret.expose(),
    }))
}

#[utoipa::path(post, path = "/v1/endpoints/{id}/secret/rotate", tag = "endpoints", params(("id" = String, Path, description = "ep_…")),
    responses((status = 200, body = SecretBody, description = "The new secret; the previous one keeps signing for 24 h"),
              (status = 401, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
async fn rotate(
    State(s): State<AppState>,
    Tenant(t): Tenant,
    Path(id): Path<String>,
) -> Result<Json<SecretBody>, Problem> {
    let secret = s
        .store
        .rotate_endpoint_secret(&t, endpoint_id(&id)?)
        .await?;
    tracing::info!(endpoint_id = %id, "endpoint secret rotated");
    Ok(Json(SecretBody {
        secret: secret.expose(),
    }))
}

#[utoipa::path(post, path = "/v1/endpoints/{id}/pause", tag = "endpoints", params(("id" = String, Path, description = "ep_…")),
    responses((status = 200, body = Endpoint), (status = 401, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
async fn pause(
    State(s): State<AppState>,
    Tenant(t): Tenant,
    Path(id): Path<String>,
) -> Result<Json<Endpoint>, Problem> {
    Ok(Json(s.store.set_paused(&t, endpoint_id(&id)?, true).await?))
}

#[utoipa::path(post, path = "/v1/endpoints/{id}/resume", tag = "endpoints", params(("id" = String, Path, description = "ep_…")),
    responses((status = 200, body = Endpoint), (status = 401, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
async fn resume(
    State(s): State<AppState>,
    Tenant(t): Tenant,
    Path(id): Path<String>,
) -> Result<Json<Endpoint>, Problem> {
    let ep = s.store.set_paused(&t, endpoint_id(&id)?, false).await?;
    s.work.notify_one();
    Ok(Json(ep))
}

#[utoipa::path(post, path = "/v1/endpoints/{id}/test", tag = "endpoints", params(("id" = String, Path, description = "ep_…")),
    request_body = TestEvent,
    responses((status = 202, body = EventAccepted), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem),
              (status = 415, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn test_event(
    State(s): State<AppState>,
    Tenant(t): Tenant,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<TestEvent>,
) -> Result<(StatusCode, Json<EventAccepted>), Problem> {
    let id = endpoint_id(&id)?;
    s.store.get_endpoint(&t, id).await?;
    let event_type = body.event_type.unwrap_or_else(|| "hookit.test".into());
    validate_event_type(&event_type).map_err(|e| {
        crate::error::Error::invalid("invalid-event-type", format!("event_type {e}"))
    })?;
    let default_payload = RawValue::from_string(r#"{"test":true}"#.into())
        .map_err(|e| Problem::bad_request(e.to_string()))?;
    let payload = body.payload.unwrap_or(default_payload);
    super::events::check_payload(&payload, s.max_payload)?;
    let ingest = s
        .store
        .ingest(
            &t,
            &NewEvent {
                event_type: &event_type,
                payload: &payload,
                idempotency_key: None,
                traceparent: None,
                only_endpoint: Some(id),
            },
        )
        .await?;
    s.work.notify_one();
    Ok((StatusCode::ACCEPTED, Json(ingest.event)))
}
