//! `/v1/event-types`: the tenant's event-type catalog (create, list, show,
//! change, deprecate). Each type has a description, an optional JSON Schema
//! (draft 2020-12) that published payloads are checked against, and an example.
//!
//! A schema is compiled here, at write time, so a broken one is refused with a
//! 422 that points into it; and the example must match it, so what consumers
//! read in the catalog is a payload that would be accepted.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::Value;
use utoipa::ToSchema;

use super::endpoints::PageParams;
use super::extract::{ApiJson, ApiQuery, Tenant};
use super::problem::Problem;
use super::{AppState, Page};
use crate::db::event_types::{EventType, EventTypeFields};
use crate::domain::event_schema::{EventSchema, Violation, MAX_SCHEMA_BYTES};
use crate::domain::patterns::validate_event_type;
use crate::error::Error;

/// Longest description.
pub const MAX_DESCRIPTION: usize = 4096;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/event-types", post(create).get(list))
        .route("/v1/event-types/{name}", get(show).patch(update))
        .route("/v1/event-types/{name}/deprecate", post(deprecate))
}

/// A new event type.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEventType {
    /// Dot-separated name, as published in `event_type` (e.g. `order.created`).
    #[schema(
        example = "order.created",
        max_length = 128,
        pattern = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
    )]
    pub name: String,
    /// What the event means and when it is sent (at most 4,096 characters).
    #[serde(default)]
    pub description: Option<String>,
    /// JSON Schema (draft 2020-12) of the payload. Without one, any payload
    /// object is accepted. `$ref`s to anything outside the schema are refused.
    #[serde(default)]
    #[schema(value_type = Option<Value>)]
    pub schema: Option<Box<RawValue>>,
    /// An example payload, a JSON object; must match the schema.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub example: Option<Box<RawValue>>,
}

/// A partial update: absent fields stay as they are; `null` removes the schema
/// or the example.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventTypePatch {
    /// New description.
    #[serde(default)]
    pub description: Option<String>,
    /// New schema, or null to stop checking payloads.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Value>)]
    pub schema: Option<Box<RawValue>>,
    /// New example, or null to remove it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
    pub example: Option<Box<RawValue>>,
    /// true deprecates the type (as `POST …/deprecate`), false restores it.
    #[serde(default)]
    pub deprecated: Option<bool>,
}

/// A field that is present, `null` included (as raw `null`), so a patch can
/// tell "remove" from "leave alone".
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

fn is_null(v: &RawValue) -> bool {
    v.get().trim() == "null"
}

/// A 422 with the violations as `errors`.
fn refused(slug: &str, title: &str, detail: String, errors: Vec<Violation>) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, slug, title, detail).with_errors(errors)
}

/// Checks what create and update would store: the description's length, the
/// schema (it compiles), the example (an object that matches the schema).
fn check_fields(
    description: &str,
    schema: Option<&RawValue>,
    example: Option<&RawValue>,
) -> Result<(), Problem> {
    if description.chars().count() > MAX_DESCRIPTION {
        return Err(Error::invalid(
            "invalid-event-type",
            format!("description is at most {MAX_DESCRIPTION} characters"),
        )
        .into());
    }
    let compiled = match schema {
        None => None,
        Some(raw) => {
            if raw.get().len() > MAX_SCHEMA_BYTES {
                return Err(Error::invalid(
                    "invalid-schema",
                    format!("schema is at most {MAX_SCHEMA_BYTES} bytes of JSON"),
                )
                .into());
            }
            let v: Value = serde_json::from_str(raw.get())
                .map_err(|e| Problem::bad_request(format!("invalid JSON: {e}")))?;
            let compiled = EventSchema::compile(&v, "/schema").map_err(|e| {
                refused(
                    "invalid-schema",
                    "Invalid JSON Schema",
                    e.detail,
                    e.violations,
                )
            })?;
            Some(compiled)
        }
    };
    if let Some(raw) = example {
        let v: Value = serde_json::from_str(raw.get())
            .map_err(|e| Problem::bad_request(format!("invalid JSON: {e}")))?;
        if !v.is_object() {
            return Err(refused(
                "invalid-example",
                "Invalid example",
                "example must be a JSON object, as payloads are".into(),
                vec![Violation {
                    pointer: "/example".into(),
                    detail: "must be an object".into(),
                }],
            ));
        }
        if let Some(s) = &compiled {
            s.check(&v, "/example").map_err(|errors| {
                refused(
                    "example-schema-mismatch",
                    "The example does not match the schema",
                    format!(
                        "the example breaks the schema in {} place(s); see errors",
                        errors.len()
                    ),
                    errors,
                )
            })?;
        }
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/event-types", tag = "event-types", request_body = NewEventType,
    responses((status = 201, body = EventType), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 409, body = Problem, description = "The name is taken, or the catalog is full (1,000 types)"),
              (status = 415, body = Problem),
              (status = 422, body = Problem, description = "Invalid name, schema or example; `errors` points at each fault")),
    security(("bearer" = [])))]
async fn create(
    State(s): State<AppState>,
    Tenant(t): Tenant,
    ApiJson(n): ApiJson<NewEventType>,
) -> Result<(StatusCode, Json<EventType>), Problem> {
    validate_event_type(&n.name)
        .map_err(|e| Error::invalid("invalid-event-type", format!("name {e}")))?;
    let description = n.description.unwrap_or_default();
    // `null` means absent here: there is nothing to remove yet.
    let schema = n.schema.as_deref().filter(|r| !is_null(r));
    let example = n.example.as_deref().filter(|r| !is_null(r));
    check_fields(&description, schema, example)?;
    let et = s
        .store
        .create_event_type(
            &t,
            &n.name,
            &EventTypeFields {
                description: &description,
                schema: schema.map(RawValue::get),
                example: example.map(RawValue::get),
                deprecated: None,
            },
        )
        .await?;
    s.catalogs.invalidate(&t);
    tracing::info!(tenant = %t, event_type = %et.name, schema = et.schema.is_some(), "event type created");
    Ok((StatusCode::CREATED, Json(et)))
}

#[utoipa::path(get, path = "/v1/event-types", tag = "event-types", params(PageParams),
    responses((status = 200, body = Page<EventType>, description = "In name order"), (status = 400, body = Problem),
              (status = 401, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn list(
    State(s): State<AppState>,
    Tenant(t): Tenant,
    ApiQuery(p): ApiQuery<PageParams>,
) -> Result<Json<Page<EventType>>, Problem> {
    if let Some(c) = p.cursor.as_deref() {
        validate_event_type(c).map_err(|_| {
            Error::invalid("invalid-cursor", "cursor is not a value this API returned")
        })?;
    }
    let limit = crate::db::page_limit(p.limit);
    let data = s
        .store
        .list_event_types(&t, p.cursor.as_deref(), limit)
        .await?;
    let next_cursor = (data.len() as i64 == limit)
        .then(|| data.last().map(|e| e.name.clone()))
        .flatten();
    Ok(Json(Page { data, next_cursor }))
}

#[utoipa::path(get, path = "/v1/event-types/{name}", tag = "event-types",
    params(("name" = String, Path, description = "The type's name, e.g. order.created")),
    responses((status = 200, body = EventType), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn show(
    State(s): State<AppState>,
    Tenant(t): Tenant,
    Path(name): Path<String>,
) -> Result<Json<EventType>, Problem> {
    Ok(Json(s.store.get_event_type(&t, &name).await?))
}

#[utoipa::path(patch, path = "/v1/event-types/{name}", tag = "event-types",
    params(("name" = String, Path, description = "The type's name")), request_body = EventTypePatch,
    responses((status = 200, body = EventType), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem, description = "Changed concurrently; retry"),
              (status = 415, body = Problem),
              (status = 422, body = Problem, description = "Invalid schema or example (the example, new or kept, must match the schema, new or kept)")),
    security(("bearer" = [])))]
async fn update(
    State(s): State<AppState>,
    Tenant(t): Tenant,
    Path(name): Path<String>,
    ApiJson(p): ApiJson<EventTypePatch>,
) -> Result<Json<EventType>, Problem> {
    let current = s.store.get_event_type(&t, &name).await?;
    let description = p.description.unwrap_or(current.description);
    // The result of the patch, checked as a whole: a new schema must accept the
    // kept example, and a new example must match the kept schema.
    let pick = |new: Option<Box<RawValue>>, old: Option<Box<RawValue>>| match new {
        None => old,
        Some(r) if is_null(&r) => None,
        Some(r) => Some(r),
    };
    let schema = pick(p.schema, current.schema);
    let example = pick(p.example, current.example);
    check_fields(&description, schema.as_deref(), example.as_deref())?;
    let et = s
        .store
        .update_event_type(
            &t,
            &name,
            current.version,
            &EventTypeFields {
                description: &description,
                schema: schema.as_deref().map(RawValue::get),
                example: example.as_deref().map(RawValue::get),
                deprecated: p.deprecated,
            },
        )
        .await?;
    s.catalogs.invalidate(&t);
    tracing::info!(tenant = %t, event_type = %et.name, schema = et.schema.is_some(), deprecated = et.deprecated, "event type changed");
    Ok(Json(et))
}

#[utoipa::path(post, path = "/v1/event-types/{name}/deprecate", tag = "event-types",
    params(("name" = String, Path, description = "The type's name")),
    responses((status = 200, body = EventType, description = "Deprecated (idempotent: the first deprecation time is kept). Events of the type are still accepted, with a `Deprecation` header"),
              (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn deprecate(
    State(s): State<AppState>,
    Tenant(t): Tenant,
    Path(name): Path<String>,
) -> Result<Json<EventType>, Problem> {
    let et = s.store.deprecate_event_type(&t, &name).await?;
    s.catalogs.invalidate(&t);
    tracing::info!(tenant = %t, event_type = %et.name, "event type deprecated");
    Ok(Json(et))
}
