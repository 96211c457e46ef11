//! `/v1/events`: publish an event (idempotently) and look one up.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::extract::{ApiJson, Tenant};
use super::problem::Problem;
use super::AppState;
use crate::db::events::{EventDetail, IngestedEvent, NewEvent};
use crate::domain::ids::EventId;
use crate::domain::patterns::validate_event_type;
use crate::error::Error;
use crate::telemetry::otel;
use tracing::Instrument;

/// What ingestion answers.
pub type EventAccepted = IngestedEvent;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/events", post(publish))
        .route("/v1/events/{id}", get(show))
}

/// An event to publish.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishEvent {
    /// Dot-separated type, e.g. `order.created`.
    #[schema(example = "order.created")]
    pub event_type: String,
    /// A JSON object; delivered as `data`. Other JSON values get 422.
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
}

/// A payload is a JSON object, as in the Standard Webhooks examples and Svix: the
/// receiver's `data` is then always a map it can add fields to and look fields
/// up in, and the built-in formats can summarise its top-level fields. Anything
/// else is refused before it is stored, rather than delivered as a surprise.
pub(super) fn check_payload(payload: &RawValue, max: usize) -> Result<(), Problem> {
    let text = payload.get();
    if text.len() > max {
        return Err(Problem::too_large(max));
    }
    if !text.starts_with('{') {
        let kind = match text.as_bytes().first() {
            Some(b'[') => "an array",
            Some(b'"') => "a string",
            Some(b't' | b'f') => "a boolean",
            Some(b'n') => "null",
            _ => "a number",
        };
        return Err(Error::invalid(
            "invalid-payload",
            format!("payload must be a JSON object, not {kind}; wrap other values, e.g. {{\"value\": …}}"),
        )
        .into());
    }
    Ok(())
}

/// A W3C traceparent (`00-<32 hex>-<16 hex>-<2 hex>`), or None if malformed.
pub(super) fn traceparent(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get("traceparent")?.to_str().ok()?.trim();
    let parts: Vec<&str> = v.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (parts.len() == 4
        && hex(parts[0], 2)
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2))
    .then_some(v)
}

/// The trace context an event keeps for its deliveries: the publisher's, or,
/// when it sent none and spans are exported, the ingestion span's own (so the
/// attempts join the trace that ingestion started).
pub(super) fn event_traceparent<'a>(
    headers: &'a HeaderMap,
    span: &tracing::Span,
) -> Option<std::borrow::Cow<'a, str>> {
    match traceparent(headers) {
        Some(tp) => Some(std::borrow::Cow::Borrowed(tp)),
        None => otel::traceparent_of(span).map(std::borrow::Cow::Owned),
    }
}

#[utoipa::path(post, path = "/v1/events", tag = "events", request_body = PublishEvent,
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeats with the same key and body return the original response")),
    responses((status = 202, body = EventAccepted, description = "Stored and fanned out",
                headers(("deprecation" = String, description = "Only for an event type the catalog deprecates: `@<unix time>` of the deprecation (RFC 9745)"),
                        ("link" = String, description = "With `deprecation`: the type's catalog entry, `rel=\"deprecation\"`"))),
              (status = 200, body = EventAccepted, description = "Replay of an earlier request with the same Idempotency-Key"),
              (status = 422, body = Problem, description = "Invalid event type or payload; a payload that breaks its type's schema (`payload-schema-mismatch`, with `errors` pointing into `/payload`); a type not in the catalog of a strict tenant (`unknown-event-type`). An event of a deprecated type is accepted with `Deprecation` and `Link` headers"),
              (status = 400, body = Problem), (status = 401, body = Problem), (status = 413, body = Problem),
              (status = 415, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = [])))]
async fn publish(
    State(s): State<AppState>,
    Tenant(t): Tenant,
    headers: HeaderMap,
    ApiJson(ev): ApiJson<PublishEvent>,
) -> Result<Response, Problem> {
    let span = otel::ingest_span("POST /v1/events", "/v1/events", traceparent(&headers));
    if !span.is_disabled() {
        span.record("hookit.tenant", t.as_str());
        span.record("hookit.event.type", ev.event_type.as_str());
    }
    let result = publish_one(s, t, headers, ev, &span)
        .instrument(span.clone())
        .await;
    otel::responded(
        &span,
        result
            .as_ref()
            .map_or_else(|p| p.status, |r| r.status().as_u16()),
    );
    result
}

async fn publish_one(
    s: AppState,
    t: String,
    headers: HeaderMap,
    ev: PublishEvent,
    span: &tracing::Span,
) -> Result<Response, Problem> {
    validate_event_type(&ev.event_type)
        .map_err(|e| Error::invalid("invalid-event-type", format!("event_type {e}")))?;
    check_payload(&ev.payload, s.max_payload)?;
    // The catalog: strict switch and schema (compiled once, see api::catalog).
    let verdict = s
        .catalogs
        .snapshot(&s.store, &t)
        .await?
        .check(&ev.event_type, &ev.payload)?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            Error::invalid(
                "invalid-idempotency-key",
                "Idempotency-Key must be visible ASCII",
            )
        })?),
    };
    let ingest = s
        .store
        .ingest(
            &t,
            &NewEvent {
                event_type: &ev.event_type,
                payload: &ev.payload,
                idempotency_key: key,
                traceparent: event_traceparent(&headers, span).as_deref(),
                only_endpoint: None,
            },
        )
        .await?;
    span.record("hookit.event.id", tracing::field::display(&ingest.event.id));
    let mut resp = if ingest.replayed {
        let mut resp = (StatusCode::OK, Json(ingest.event)).into_response();
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
        resp
    } else {
        if ingest.event.deliveries > 0 {
            s.work.notify_one();
        }
        (StatusCode::ACCEPTED, Json(ingest.event)).into_response()
    };
    if let Some(at) = verdict.deprecated_at {
        flag_deprecated(resp.headers_mut(), &ev.event_type, at);
    }
    Ok(resp)
}

/// Tells the publisher of an event of a deprecated type, in the headers of
/// RFC 9745: `Deprecation: @<unix time>` and a `Link` to the type's entry.
/// Headers rather than a body field, so the answer keeps its schema and a
/// client library can surface them without knowing HookIt.
fn flag_deprecated(h: &mut HeaderMap, event_type: &str, at: chrono::DateTime<chrono::Utc>) {
    if let Ok(v) = HeaderValue::from_str(&format!("@{}", at.timestamp())) {
        h.insert("deprecation", v);
    }
    // Event type names are [A-Za-z0-9_.-]: nothing to escape in the path.
    if let Ok(v) = HeaderValue::from_str(&format!(
        "</v1/event-types/{event_type}>; rel=\"deprecation\""
    )) {
        h.insert(axum::http::header::LINK, v);
    }
}

#[utoipa::path(get, path = "/v1/events/{id}", tag = "events", params(("id" = String, Path, description = "evt_…")),
    responses((status = 200, body = EventDetail), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn show(
    State(s): State<AppState>,
    Tenant(t): Tenant,
    Path(id): Path<String>,
) -> Result<Json<EventDetail>, Problem> {
    let id: EventId = id.parse().map_err(|_| Problem::not_found("event"))?;
    Ok(Json(s.store.get_event(&t, id).await?))
}
