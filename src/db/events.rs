//! Ingestion: the event, its fan-out to deliveries and the idempotency record, in
//! one statement (and so one transaction and one round trip).

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use super::batcher::{Batcher, Job};
use super::deliveries::Delivery;
use super::Store;
use crate::domain::ids::{EndpointId, EventId};
use crate::error::{Error, Result};

/// Longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// What ingestion answers (and replays for a repeated idempotency key).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IngestedEvent {
    /// `evt_…`, also the `webhook-id` receivers see.
    #[schema(value_type = String)]
    pub id: EventId,
    /// The event type.
    pub event_type: String,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// How many endpoints it fanned out to.
    pub deliveries: i64,
}

/// The result of [`Store::ingest`].
#[derive(Debug)]
pub struct Ingest {
    /// The stored event.
    pub event: IngestedEvent,
    /// True when this is a replay of an earlier request with the same key.
    pub replayed: bool,
}

/// An event to ingest; validated by the API layer.
#[derive(Debug)]
pub struct NewEvent<'a> {
    /// The event type.
    pub event_type: &'a str,
    /// The payload JSON, exactly as received.
    pub payload: &'a RawValue,
    /// `Idempotency-Key` header, if any.
    pub idempotency_key: Option<&'a str>,
    /// W3C `traceparent` to propagate to the webhook requests.
    pub traceparent: Option<&'a str>,
    /// Deliver only to this endpoint (test events), ignoring subscriptions.
    pub only_endpoint: Option<EndpointId>,
}

/// An event with its deliveries, as `GET /v1/events/{id}` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventDetail {
    /// `evt_…`
    #[schema(value_type = String)]
    pub id: EventId,
    /// The event type.
    pub event_type: String,
    /// The payload as published.
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// One per endpoint it fanned out to.
    pub deliveries: Vec<Delivery>,
}

/// The envelope sent to receivers: `{"id","type","timestamp","data"}`. Built once
/// here and stored, so every attempt sends the same bytes without re-serialising.
pub fn envelope(id: &EventId, event_type: &str, at: DateTime<Utc>, payload: &RawValue) -> String {
    #[derive(Serialize)]
    struct Envelope<'a> {
        id: String,
        #[serde(rename = "type")]
        kind: &'a str,
        timestamp: String,
        data: &'a RawValue,
    }
    serde_json::to_string(&Envelope {
        id: id.to_string(),
        kind: event_type,
        timestamp: at.to_rfc3339_opts(SecondsFormat::Millis, true),
        data: payload,
    })
    .expect("serialising strings and raw JSON cannot fail")
}

pub(super) fn request_hash(ev: &NewEvent<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(ev.event_type.as_bytes());
    h.update([0]);
    h.update(ev.payload.get().as_bytes());
    h.update([0]);
    if let Some(only) = ev.only_endpoint {
        h.update(only.uuid().as_bytes());
    }
    h.finalize().into()
}

/// The row the group commit writes for `ev`, accepted `now` under a new id.
pub(super) fn job(tenant: &str, ev: &NewEvent<'_>, hash: &[u8; 32]) -> Job {
    let id = EventId::new();
    // Postgres keeps microseconds: truncate so a replay answers the same instant.
    let now = Utc::now().trunc_subsecs(6);
    Job {
        tenant: tenant.to_string(),
        key: ev.idempotency_key.map(str::to_string),
        hash: hash.to_vec(),
        id: id.uuid(),
        event_type: ev.event_type.to_string(),
        body: envelope(&id, ev.event_type, now, ev.payload),
        traceparent: ev.traceparent.map(str::to_string),
        created_at: now,
        only_endpoint: ev.only_endpoint.map(|e| e.uuid()),
    }
}

/// What a new event's job answers once committed.
pub(super) fn accepted(job: &Job, deliveries: i64) -> IngestedEvent {
    IngestedEvent {
        id: EventId::from_uuid(job.id),
        event_type: job.event_type.clone(),
        created_at: job.created_at,
        deliveries,
    }
}

/// The stored answer for a repeated key, if the request hash matches the one the
/// key was first used with; a different body under the same key is refused.
pub(super) fn replay(stored: &ReplayRow, hash: &[u8]) -> Result<IngestedEvent> {
    let (stored_hash, eid, event_type, created_at, deliveries) = stored;
    if !bool::from(subtle::ConstantTimeEq::ct_eq(&stored_hash[..], hash)) {
        return Err(key_reused());
    }
    Ok(IngestedEvent {
        id: EventId::from_uuid(*eid),
        event_type: event_type.clone(),
        created_at: *created_at,
        deliveries: *deliveries,
    })
}

/// Same key, other body: the 422 of single publish, a refused item in a batch.
pub(super) fn key_reused() -> Error {
    Error::invalid(
        "idempotency-key-reused",
        "this Idempotency-Key was already used with a different request body",
    )
}

/// A key whose record vanished between the insert and the look-up (pruned).
pub(super) fn record_changed() -> Error {
    Error::conflict(
        "idempotency-retry",
        "the idempotency record changed concurrently; retry",
    )
}

/// Checks an `Idempotency-Key`: 1-255 visible ASCII characters.
pub fn validate_idempotency_key(k: &str) -> Result<()> {
    if k.is_empty()
        || k.len() > MAX_IDEMPOTENCY_KEY_LEN
        || !k.bytes().all(|b| (0x21..=0x7e).contains(&b))
    {
        return Err(Error::invalid(
            "invalid-idempotency-key",
            format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
            ),
        ));
    }
    Ok(())
}

/// Stored request hash, event id, type, creation time and delivery count.
pub(super) type ReplayRow = (Vec<u8>, Uuid, String, DateTime<Utc>, i64);

impl Store {
    /// Stores an event and fans it out. With an idempotency key, concurrent and
    /// repeated requests resolve to the single event the first one stored.
    pub async fn ingest(&self, tenant: &str, ev: &NewEvent<'_>) -> Result<Ingest> {
        if let Some(k) = ev.idempotency_key {
            validate_idempotency_key(k)?;
        }
        let hash = request_hash(ev);
        let job = job(tenant, ev, &hash);
        let event = accepted(&job, 0);
        // Written by the group-commit batcher: the idempotency record, the event and
        // every delivery commit together or not at all (see db::batcher).
        let written = self.batcher().submit(vec![job]).await?;
        let (created, deliveries) = written
            .first()
            .copied()
            .ok_or(Error::Db(sqlx::Error::RowNotFound))?;
        if created {
            return Ok(Ingest {
                event: IngestedEvent {
                    deliveries,
                    ..event
                },
                replayed: false,
            });
        }
        let key = ev
            .idempotency_key
            .ok_or(Error::Db(sqlx::Error::RowNotFound))?;
        let row: Option<ReplayRow> = sqlx::query_as(
            "SELECT k.request_hash, e.id, e.event_type, e.created_at,
                    (SELECT count(*) FROM deliveries d WHERE d.event_id = e.id)
             FROM idempotency_keys k JOIN events e ON e.id = k.event_id
             WHERE k.tenant = $1 AND k.key = $2",
        )
        .bind(tenant)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        // The row can only vanish if it was pruned between the two statements.
        let row = row.ok_or_else(record_changed)?;
        Ok(Ingest {
            event: replay(&row, &hash)?,
            replayed: true,
        })
    }

    /// The group-commit writers, started on first use.
    pub(super) fn batcher(&self) -> &Batcher {
        self.batcher
            .get_or_init(|| Batcher::start(self.pool.clone(), self.availability().clone()))
    }

    /// An event of the tenant with its deliveries.
    pub async fn get_event(&self, tenant: &str, id: EventId) -> Result<EventDetail> {
        let row: Option<(String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT event_type, body, created_at FROM events WHERE id = $1 AND tenant = $2",
        )
        .bind(id.uuid())
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        let (event_type, body, created_at) = row.ok_or(Error::NotFound("event"))?;
        #[derive(serde::Deserialize)]
        struct Env {
            data: Box<RawValue>,
        }
        let env: Env =
            serde_json::from_str(&body).map_err(|e| Error::Db(sqlx::Error::Decode(Box::new(e))))?;
        let deliveries = self.deliveries_of_event(tenant, id).await?;
        Ok(EventDetail {
            id,
            event_type,
            payload: env.data,
            created_at,
            deliveries,
        })
    }
}
