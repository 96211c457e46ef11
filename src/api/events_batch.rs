//! `POST /v1/events/batch`: publish up to [`MAX_BATCH_ITEMS`] events in one
//! request, each with its own idempotency key and its own outcome.
//!
//! Two kinds of failure, kept apart on purpose:
//! - the request itself: not JSON, not the documented shape (a missing field, an
//!   unknown one, a wrong JSON type, in any item), no items or too many. That is a
//!   client bug that affects every item alike, and the spec says so, so the whole
//!   request gets a problem (400, 413, 415, 422) and nothing is stored;
//! - one item: everything the schema cannot express (event type syntax, a payload
//!   that is not an object or is too large, an invalid idempotency key, a key
//!   reused with another body, a payload that breaks its event type's schema, a
//!   type a strict tenant's catalog lacks). That item is `refused` with a problem
//!   as its reason, and the others proceed.
//!
//! Items that pass go to the group commit as one request (see `db::events_batch`),
//! so the answer is 200 with one result per item, in order, or a 503 for the whole
//! request when the database cannot be written.

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::catalog::Verdict;
use super::events::{check_payload, event_traceparent, traceparent};
use super::extract::{read_json, Tenant};
use super::problem::Problem;
use super::warning::Warning;
use super::AppState;
use crate::db::events::{IngestedEvent, NewEvent};
use crate::db::events_batch::ItemOutcome;
use crate::domain::ids::EventId;
use crate::domain::patterns::validate_event_type;
use crate::error::Error;
use crate::telemetry::otel;
use tracing::Instrument;

/// Most events in one batch request.
pub const MAX_BATCH_ITEMS: usize = 1000;

pub(super) fn router(body_limit: usize) -> Router<AppState> {
    // A route-level limit: it overrides the router-wide single-event limit for
    // this route only.
    Router::new().route(
        "/v1/events/batch",
        post(publish_batch).layer(DefaultBodyLimit::max(body_limit)),
    )
}

/// Events to publish in one request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishBatch {
    /// 1 to 1,000 events, answered in this order.
    #[schema(min_items = 1, max_items = 1000)]
    pub events: Vec<BatchEvent>,
}

/// One event of a batch: the fields of `POST /v1/events`, plus its idempotency key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchEvent {
    /// Dot-separated type, e.g. `order.created`. An invalid one refuses this item.
    #[schema(example = "order.created")]
    pub event_type: String,
    /// A JSON object; delivered as `data`. Any other JSON value, or a payload over
    /// `HOOKIT_MAX_PAYLOAD`, refuses this item.
    #[schema(value_type = Value)]
    pub payload: Box<RawValue>,
    /// What the `Idempotency-Key` header is to a single publish: 1-255 visible
    /// ASCII characters, scoped to the tenant and shared with single publishes.
    /// A repeat with the same body (in this batch or any earlier request) replays
    /// the original event; with another body the item is refused.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// What became of one item.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BatchItemStatus {
    /// Stored and fanned out by this request.
    Accepted,
    /// Its idempotency key was used before with the same body: the original event.
    Replayed,
    /// Not stored; `problem` says why.
    Refused,
}

/// The result of one item, at the item's position.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchItemResult {
    /// accepted, replayed or refused.
    pub status: BatchItemStatus,
    /// `evt_…` (accepted and replayed).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub id: Option<EventId>,
    /// The event type (accepted and replayed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// When the event was accepted (for a replay: the first time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    /// How many endpoints it fanned out to (accepted and replayed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<i64>,
    /// Why the item was refused: the problem a single publish of it would get.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<Problem>,
    /// What the publisher should know about an accepted or replayed item, e.g.
    /// that its event type is deprecated. Absent when there is nothing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
}

/// The answer to a batch: one result per item, in order, and the tallies.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchPublished {
    /// One per item of the request, in the same order.
    pub results: Vec<BatchItemResult>,
    /// Items stored by this request.
    pub accepted: usize,
    /// Items answered with an earlier event.
    pub replayed: usize,
    /// Items not stored.
    pub refused: usize,
}

impl BatchItemResult {
    fn event(status: BatchItemStatus, ev: IngestedEvent) -> Self {
        Self {
            status,
            id: Some(ev.id),
            event_type: Some(ev.event_type),
            created_at: Some(ev.created_at),
            deliveries: Some(ev.deliveries),
            problem: None,
            warnings: Vec::new(),
        }
    }
    fn refused(problem: Problem) -> Self {
        Self {
            status: BatchItemStatus::Refused,
            id: None,
            event_type: None,
            created_at: None,
            deliveries: None,
            problem: Some(problem),
            warnings: Vec::new(),
        }
    }
}

/// Checks one item as single publish checks its body.
fn check_item(ev: &BatchEvent, max_payload: usize) -> Result<(), Problem> {
    validate_event_type(&ev.event_type)
        .map_err(|e| Error::invalid("invalid-event-type", format!("event_type {e}")))?;
    if ev.payload.get().len() > max_payload {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload too large",
            format!("this item's payload exceeds the limit of {max_payload} bytes"),
        ));
    }
    check_payload(&ev.payload, max_payload)
}

#[utoipa::path(post, path = "/v1/events/batch", tag = "events", request_body = PublishBatch,
    params(("traceparent" = Option<String>, Header, description = "W3C trace context propagated to every event of the batch")),
    responses((status = 200, body = BatchPublished, description = "One result per item, in order: accepted, replayed or refused (with a problem). Refused items do not affect the others"),
              (status = 400, body = Problem, description = "Not the documented shape, or no events"),
              (status = 401, body = Problem),
              (status = 413, body = Problem, description = "More than 1,000 events, or a body over HOOKIT_MAX_BATCH_BODY"),
              (status = 415, body = Problem), (status = 422, body = Problem),
              (status = 503, body = Problem, description = "The database could not be written: retry the batch (idempotency keys make that safe)")),
    security(("bearer" = [])))]
async fn publish_batch(
    State(s): State<AppState>,
    Tenant(t): Tenant,
    req: Request,
) -> Result<(StatusCode, Json<BatchPublished>), Problem> {
    let span = otel::ingest_span(
        "POST /v1/events/batch",
        "/v1/events/batch",
        traceparent(req.headers()),
    );
    span.record("hookit.tenant", t.as_str());
    let result = publish_items(s, t, req, &span)
        .instrument(span.clone())
        .await;
    otel::responded(
        &span,
        result.as_ref().map_or_else(|p| p.status, |r| r.0.as_u16()),
    );
    result
}

async fn publish_items(
    s: AppState,
    t: String,
    req: Request,
    span: &tracing::Span,
) -> Result<(StatusCode, Json<BatchPublished>), Problem> {
    let headers = req.headers().clone();
    let batch: PublishBatch = read_json(req, &s, s.batch_body_limit).await?;
    if batch.events.is_empty() {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "batch-empty",
            "Empty batch",
            format!("events must hold 1 to {MAX_BATCH_ITEMS} events"),
        ));
    }
    if batch.events.len() > MAX_BATCH_ITEMS {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch-too-large",
            "Too many events in one batch",
            format!(
                "a batch holds at most {MAX_BATCH_ITEMS} events, this one has {}; split it",
                batch.events.len()
            ),
        ));
    }
    let tp = event_traceparent(&headers, span);
    let tp = tp.as_deref();
    // One look at the catalog for the whole batch.
    let catalog = s.catalogs.snapshot(&s.store, &t).await?;
    // Refused here, or sent to the store as its item number (with what the
    // catalog says of its type).
    let mut checked: Vec<Result<(usize, Verdict), Problem>> =
        Vec::with_capacity(batch.events.len());
    let mut valid: Vec<NewEvent<'_>> = Vec::with_capacity(batch.events.len());
    for ev in &batch.events {
        let verdict =
            check_item(ev, s.max_payload).and_then(|()| catalog.check(&ev.event_type, &ev.payload));
        checked.push(verdict.map(|verdict| {
            valid.push(NewEvent {
                event_type: &ev.event_type,
                payload: &ev.payload,
                idempotency_key: ev.idempotency_key.as_deref(),
                traceparent: tp,
                only_endpoint: None,
            });
            (valid.len() - 1, verdict)
        }));
    }
    let mut outcomes = s
        .store
        .ingest_batch(&t, &valid)
        .await?
        .into_iter()
        .map(Some)
        .collect::<Vec<_>>();
    let mut out = BatchPublished {
        results: Vec::with_capacity(checked.len()),
        accepted: 0,
        replayed: 0,
        refused: 0,
    };
    let mut fanned_out = false;
    for c in checked {
        let deprecated = matches!(&c, Ok((_, v)) if v.deprecated_at.is_some());
        let mut r = match c.map(|(i, _)| outcomes.get_mut(i).and_then(Option::take)) {
            Err(p) => BatchItemResult::refused(p),
            Ok(Some(ItemOutcome::Accepted(ev))) => {
                fanned_out |= ev.deliveries > 0;
                BatchItemResult::event(BatchItemStatus::Accepted, ev)
            }
            Ok(Some(ItemOutcome::Replayed(ev))) => {
                BatchItemResult::event(BatchItemStatus::Replayed, ev)
            }
            Ok(Some(ItemOutcome::Refused(e))) => BatchItemResult::refused(e.into()),
            // The store answers one outcome per item it was given.
            Ok(None) => return Err(Error::Db(sqlx::Error::RowNotFound).into()),
        };
        if deprecated && r.id.is_some() {
            if let Some(et) = &r.event_type {
                r.warnings.push(Warning::deprecated_event_type(et));
            }
        }
        match r.status {
            BatchItemStatus::Accepted => out.accepted += 1,
            BatchItemStatus::Replayed => out.replayed += 1,
            BatchItemStatus::Refused => out.refused += 1,
        }
        out.results.push(r);
    }
    metrics::counter!("hookit_batch_items_total", "outcome" => "accepted")
        .increment(out.accepted as u64);
    metrics::counter!("hookit_batch_items_total", "outcome" => "replayed")
        .increment(out.replayed as u64);
    metrics::counter!("hookit_batch_items_total", "outcome" => "refused")
        .increment(out.refused as u64);
    if fanned_out {
        s.work.notify_one();
    }
    span.record("hookit.events", out.accepted + out.replayed);
    Ok((StatusCode::OK, Json(out)))
}
