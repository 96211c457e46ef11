//! The queue's rows: the types the API shows, and the queries by job —
//! [`claim`] (leases: claim, release, rescue, renew), [`batch`] (the members a
//! FIFO head takes with it), [`completion`] (writing an attempt's outcome back,
//! with the circuit breaker's bookkeeping) and [`queries`] (listing, detail,
//! redrive and purge, used by the API).

mod batch;
mod claim;
mod completion;
mod queries;

pub use batch::{BatchItem, FifoBatch, MAX_BATCH_BYTES};
pub use claim::Claimed;
pub use completion::{Completed, Completion};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::domain::ids::{DeliveryId, EndpointId, EventId};
use crate::error::{Error, Result};

/// Longest stored excerpt of a receiver's response body.
pub const RESPONSE_EXCERPT: usize = 4096;

/// A delivery: one event to one endpoint.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Delivery {
    /// `dlv_…`
    #[schema(value_type = String)]
    pub id: DeliveryId,
    /// `evt_…`
    #[schema(value_type = String)]
    pub event_id: EventId,
    /// `ep_…`
    #[schema(value_type = String)]
    pub endpoint_id: EndpointId,
    /// The event's type.
    pub event_type: String,
    /// `pending`, `in_flight`, `succeeded` or `dead`.
    pub status: String,
    /// Requests made so far (all rounds), rate-limited ones included.
    pub attempts: i32,
    /// Requests of the current round that were rate-limited (429) and spent no
    /// attempt: the round has spent `attempts - rate_limited` minus earlier rounds'.
    pub rate_limited: i32,
    /// When the next attempt is due; null when not scheduled (finished, in flight,
    /// or held because the endpoint is paused).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Status code of the last attempt.
    pub last_status_code: Option<i32>,
    /// Error of the last attempt.
    pub last_error: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

#[derive(FromRow)]
struct DeliveryRow {
    id: Uuid,
    event_id: Uuid,
    endpoint_id: Uuid,
    event_type: String,
    status: String,
    attempts: i32,
    rate_limited: i32,
    next_attempt_at: Option<DateTime<Utc>>,
    last_status_code: Option<i32>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<DeliveryRow> for Delivery {
    fn from(r: DeliveryRow) -> Self {
        Delivery {
            id: DeliveryId::from_uuid(r.id),
            event_id: EventId::from_uuid(r.event_id),
            endpoint_id: EndpointId::from_uuid(r.endpoint_id),
            event_type: r.event_type,
            status: r.status,
            attempts: r.attempts,
            rate_limited: r.rate_limited,
            next_attempt_at: r.next_attempt_at,
            last_status_code: r.last_status_code,
            last_error: r.last_error,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

pub(super) const COLUMNS: &str =
    "d.id, d.event_id, d.endpoint_id, ev.event_type, d.status::text AS status, d.attempts, d.rate_limited,
    d.next_attempt_at, d.last_status_code, d.last_error, d.created_at, d.updated_at";

/// One attempt.
#[derive(Debug, Clone, Serialize, ToSchema, FromRow)]
pub struct Attempt {
    /// 1-based attempt number (across rounds).
    pub attempt: i32,
    /// When the request started.
    pub started_at: DateTime<Utc>,
    /// How long it took.
    pub duration_ms: i32,
    /// HTTP status, if the receiver answered.
    pub status_code: Option<i32>,
    /// Error, if it failed.
    pub error: Option<String>,
    /// The first few KiB of the response body.
    pub response_body: Option<String>,
    /// The receiver answered 429 and the delivery was rescheduled without
    /// spending an attempt.
    pub rate_limited: bool,
    /// Whether a request went on the wire: false when the endpoint's
    /// transformation refused to build it or cancelled it (`error` says which).
    pub sent: bool,
}

/// A delivery with its attempt log.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryDetail {
    /// The delivery.
    #[serde(flatten)]
    pub delivery: Delivery,
    /// Every attempt, oldest first.
    pub attempt_log: Vec<Attempt>,
}

/// Filters of the delivery listing.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryFilter {
    /// `pending`, `in_flight`, `succeeded` or `dead`.
    pub status: Option<String>,
    /// Only this endpoint's.
    #[param(value_type = Option<String>)]
    pub endpoint_id: Option<EndpointId>,
    /// Only this event's.
    #[param(value_type = Option<String>)]
    pub event_id: Option<EventId>,
    /// Only this event type.
    pub event_type: Option<String>,
    /// Page size, 1-1000 (default 100); outside that range, 400.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    pub limit: Option<crate::domain::page::PageLimit>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The states a delivery can be in.
pub const STATUSES: [&str; 5] = ["pending", "in_flight", "succeeded", "dead", "skipped"];

/// Filters of a bulk dead-letter redrive.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedriveFilter {
    /// Only this endpoint's dead letters.
    #[schema(value_type = Option<String>)]
    pub endpoint_id: Option<EndpointId>,
    /// Only this event type.
    pub event_type: Option<String>,
    /// Only those that died at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only those that died before this time.
    pub until: Option<DateTime<Utc>>,
    /// Count what would be redriven, change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// Cuts a response body to [`RESPONSE_EXCERPT`] bytes on a character boundary.
pub fn excerpt(body: &[u8]) -> String {
    let cut = &body[..body.len().min(RESPONSE_EXCERPT)];
    String::from_utf8_lossy(cut).into_owned()
}

pub(super) fn parse_cursor(cursor: Option<&str>) -> Result<Option<Uuid>> {
    cursor
        .map(|c| {
            c.parse::<DeliveryId>().map(|d| d.uuid()).map_err(|_| {
                Error::invalid("invalid-cursor", "cursor is not a value this API returned")
            })
        })
        .transpose()
}
