//! Ingestion: the event, its fan-out to deliveries and the idempotency record, in
//! one statement (and so one transaction and one round trip).

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

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

fn request_hash(ev: &NewEvent<'_>) -> [u8; 32] {
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
type ReplayRow = (Vec<u8>, Uuid, String, DateTime<Utc>, i64);

impl Store {
    /// Stores an event and fans it out. With an idempotency key, concurrent and
    /// repeated requests resolve to the single event the first one stored.
    pub async fn ingest(&self, tenant: &str, ev: &NewEvent<'_>) -> Result<Ingest> {
        if let Some(k) = ev.idempotency_key {
            validate_idempotency_key(k)?;
        }
        let id = EventId::new();
        // Postgres keeps microseconds: truncate so a replay answers the same instant.
        let now = Utc::now().trunc_subsecs(6);
        let body = envelope(&id, ev.event_type, now, ev.payload);
        let hash = request_hash(ev);
        let batcher = self.batcher.get_or_init(|| {
            super::batcher::Batcher::start(self.pool.clone(), self.availability().clone())
        });
        // Written by the group-commit batcher: the idempotency record, the event and
        // every delivery commit together or not at all (see db::batcher).
        let (created, deliveries) = batcher
            .submit(super::batcher::Job {
                tenant: tenant.to_string(),
                key: ev.idempotency_key.map(str::to_string),
                hash: hash.to_vec(),
                id: id.uuid(),
                event_type: ev.event_type.to_string(),
                body,
                traceparent: ev.traceparent.map(str::to_string),
                created_at: now,
                only_endpoint: ev.only_endpoint.map(|e| e.uuid()),
                reply: super::batcher::unset_reply(),
            })
            .await?;
        if created {
            return Ok(Ingest {
                event: IngestedEvent {
                    id,
                    event_type: ev.event_type.to_string(),
                    created_at: now,
                    deliveries,
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
        let (stored_hash, eid, event_type, created_at, deliveries) = row.ok_or_else(|| {
            Error::conflict(
                "idempotency-retry",
                "the idempotency record changed concurrently; retry",
            )
        })?;
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&stored_hash[..], &hash[..])) {
            return Err(Error::invalid(
                "idempotency-key-reused",
                "this Idempotency-Key was already used with a different request body",
            ));
        }
        Ok(Ingest {
            event: IngestedEvent {
                id: EventId::from_uuid(eid),
                event_type,
                created_at,
                deliveries,
            },
            replayed: true,
        })
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
