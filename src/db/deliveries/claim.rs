//! Leases: the claim (who locks what, and why no lock lives across HTTP), giving
//! leased rows back, dead-lettering without an attempt, and rescuing leases whose
//! worker is gone.

use std::collections::BTreeMap;

use sqlx::FromRow;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::db::Store;
use crate::domain::formats::{Format, UnknownFormat};
use crate::error::Result;

/// A delivery a worker has leased, with everything needed to send it: one claim
/// statement returns the event body and the endpoint settings too.
#[derive(Debug, FromRow)]
pub struct Claimed {
    /// Delivery id.
    pub id: Uuid,
    /// Event id (the `webhook-id`).
    pub event_id: Uuid,
    /// The tenant.
    pub tenant: String,
    /// Endpoint id.
    pub endpoint_id: Uuid,
    /// Attempts made before this one.
    pub attempts: i32,
    /// Attempts made before the current round.
    pub round_base: i32,
    /// Requests of the current round deferred as rate-limited (no attempt spent).
    pub rate_limited: i32,
    /// The JSON envelope to send.
    pub body: String,
    /// Trace context to propagate.
    pub traceparent: Option<String>,
    /// Target URL.
    pub url: String,
    /// Encrypted current secret.
    pub secret_enc: Vec<u8>,
    /// Encrypted previous secret, while its overlap lasts.
    pub prev_secret_enc: Option<Vec<u8>>,
    /// Custom headers.
    pub headers: sqlx::types::Json<BTreeMap<String, String>>,
    /// Endpoint overrides of the retry policy and timeout.
    pub max_attempts: Option<i32>,
    /// First retry delay override.
    pub retry_base_ms: Option<i64>,
    /// Retry cap override.
    pub retry_cap_ms: Option<i64>,
    /// Timeout override.
    pub timeout_ms: Option<i64>,
    /// In-flight cap override.
    pub max_in_flight: Option<i32>,
    /// Rate limit.
    pub rate_limit: Option<i32>,
    /// `active`, `paused`, `disabled`, or `deleted`.
    pub endpoint_state: String,
    /// When an open circuit lets the next probe through (None: closed).
    pub circuit_open_until: Option<DateTime<Utc>>,
    /// `standard`, `discord` or `slack` (see [`Claimed::format`]).
    pub format: String,
    /// The event's type (what a transformation sees as `eventType`).
    pub event_type: String,
    /// SHA-256 of the endpoint's transformation, when it has one. Only the hash
    /// travels with every claimed row; the code itself is read once per version
    /// ([`Store::transformation`]) and kept by the worker.
    pub transformation_sha: Option<Vec<u8>>,
}

impl Claimed {
    /// How the body is rendered for this endpoint. The column is an enum of
    /// exactly these names, so an unknown one is a bug: refused, never guessed.
    pub fn format(&self) -> Result<Format, UnknownFormat> {
        self.format.parse()
    }
}

impl Store {
    /// The endpoint's transformation code, as of now (it may be newer than the
    /// hash a claim returned; the caller keys what it compiles by the code's
    /// own hash, so that is harmless).
    pub async fn transformation(&self, endpoint: Uuid) -> Result<Option<String>> {
        let code: Option<(Option<String>,)> =
            sqlx::query_as("SELECT transformation FROM endpoints WHERE id = $1")
                .bind(endpoint)
                .fetch_optional(&self.pool)
                .await?;
        Ok(code.and_then(|(c,)| c))
    }

    /// Leases up to `limit` due deliveries to worker `owner` for `lease_ms`.
    ///
    /// Locking: the CTE picks the due rows in queue order and row-locks them with
    /// SKIP LOCKED, so concurrent workers take disjoint batches without waiting on
    /// each other; the UPDATE then flips them to `in_flight` with the lease in the
    /// same statement, and the locks are released at its (implicit) commit. No lock
    /// is held while the HTTP request runs: the lease alone marks ownership, and
    /// every later write is guarded by `lease_owner`.
    ///
    /// `skip` lists endpoints this worker is saturated on (in-flight cap), so their
    /// rows stay in the queue for other workers instead of being claimed and put back.
    pub async fn claim(
        &self,
        owner: Uuid,
        limit: i64,
        lease_ms: i64,
        skip: &[Uuid],
    ) -> Result<Vec<Claimed>> {
        let rows = sqlx::query_as::<_, Claimed>(
            "WITH due AS (
                SELECT id FROM deliveries
                WHERE status = 'pending' AND next_attempt_at <= now() AND NOT (endpoint_id = ANY($4))
                ORDER BY next_attempt_at, id
                LIMIT $1
                FOR UPDATE SKIP LOCKED
             )
             UPDATE deliveries d
             SET status = 'in_flight', next_attempt_at = NULL, lease_owner = $2,
                 lease_expires_at = now() + $3 * interval '1 millisecond', updated_at = now()
             FROM due, events ev, endpoints e
             WHERE d.id = due.id AND ev.id = d.event_id AND e.id = d.endpoint_id
             RETURNING d.id, d.event_id, d.tenant, d.endpoint_id, d.attempts, d.round_base, d.rate_limited, ev.body, ev.traceparent,
                 e.url, e.secret_enc,
                 CASE WHEN e.prev_secret_expires_at > now() THEN e.prev_secret_enc END AS prev_secret_enc,
                 e.headers, e.max_attempts, e.retry_base_ms, e.retry_cap_ms, e.timeout_ms, e.max_in_flight, e.rate_limit,
                 CASE WHEN e.deleted_at IS NOT NULL THEN 'deleted' ELSE e.status::text END AS endpoint_state,
                 e.circuit_open_until, e.format::text AS format, ev.event_type, e.transformation_sha",
        )
        .bind(limit)
        .bind(owner)
        .bind(lease_ms)
        .bind(skip)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Claims the single probe of an endpoint whose circuit is open and due: the
    /// winner (None returned) sends one delivery; everyone else gets the time the
    /// next probe is due. The row update serialises competing workers.
    pub async fn take_probe(
        &self,
        endpoint: Uuid,
        default_probe_ms: i64,
    ) -> Result<Option<DateTime<Utc>>> {
        let won: Option<(DateTime<Utc>,)> = sqlx::query_as(
            "UPDATE endpoints SET circuit_open_until = now() + coalesce(circuit_probe_ms, $2) * interval '1 millisecond'
             WHERE id = $1 AND circuit_open_until <= now() RETURNING circuit_open_until",
        )
        .bind(endpoint)
        .bind(default_probe_ms)
        .fetch_optional(&self.pool)
        .await?;
        if won.is_some() {
            return Ok(None);
        }
        let (until,): (Option<DateTime<Utc>>,) =
            sqlx::query_as("SELECT circuit_open_until FROM endpoints WHERE id = $1")
                .bind(endpoint)
                .fetch_one(&self.pool)
                .await?;
        Ok(Some(until.unwrap_or_else(Utc::now)))
    }

    /// Gives leased deliveries back without spending an attempt: due at `at`, or
    /// held (None) when the endpoint is paused. A held row whose endpoint is active
    /// again by now is made due at once (the un-hold sweep covers the remaining race).
    pub async fn release(
        &self,
        owner: Uuid,
        ids: &[Uuid],
        at: Option<DateTime<Utc>>,
    ) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let r = sqlx::query(
            "UPDATE deliveries d
             SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL, updated_at = now(),
                 next_attempt_at = CASE WHEN $3::timestamptz IS NOT NULL THEN $3
                     WHEN (SELECT e.status = 'active' AND e.deleted_at IS NULL FROM endpoints e WHERE e.id = d.endpoint_id) THEN now()
                     ELSE NULL END
             WHERE d.id = ANY($2) AND d.lease_owner = $1",
        )
        .bind(owner)
        .bind(ids)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Releases everything a worker still holds (graceful shutdown): due now.
    pub async fn release_all(&self, owner: Uuid) -> Result<u64> {
        let r = sqlx::query(
            "UPDATE deliveries SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL,
                next_attempt_at = now(), updated_at = now()
             WHERE status = 'in_flight' AND lease_owner = $1",
        )
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Dead-letters a leased delivery without an attempt (its endpoint was deleted or
    /// disabled while it was queued).
    pub async fn bury(&self, owner: Uuid, id: Uuid, reason: &str) -> Result<()> {
        sqlx::query(
            "UPDATE deliveries SET status = 'dead', lease_owner = NULL, lease_expires_at = NULL, finished_at = now(),
                updated_at = now(), last_error = $3
             WHERE id = $2 AND lease_owner = $1",
        )
        .bind(owner)
        .bind(id)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Returns deliveries whose lease expired (their worker died or stalled) to the
    /// queue, due now. The attempt the dead worker may have made is not counted:
    /// at-least-once means the receiver may see it again, with the same webhook-id.
    pub async fn rescue_expired(&self) -> Result<u64> {
        let r = sqlx::query(
            "UPDATE deliveries SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL,
                next_attempt_at = now(), updated_at = now(), last_error = 'lease expired: worker lost'
             WHERE id IN (SELECT id FROM deliveries WHERE status = 'in_flight' AND lease_expires_at < now()
                          LIMIT 10000 FOR UPDATE SKIP LOCKED)",
        )
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Extends to `lease_ms` from now the leases of those of `ids` that `owner`
    /// still holds, and returns them; a row rescued in the meantime (its lease ran
    /// out first) is left alone, and missing from the answer.
    ///
    /// Locking: each row for the length of this statement only, like the claim. A
    /// worker renews only what it holds in memory (see `worker::lease`), and only
    /// rows held for a good part of their lease, so the common path of a delivery
    /// done in milliseconds never comes here.
    pub async fn renew_leases(
        &self,
        owner: Uuid,
        ids: &[Uuid],
        lease_ms: i64,
    ) -> Result<Vec<Uuid>> {
        let renewed: Vec<(Uuid,)> = sqlx::query_as(
            "UPDATE deliveries SET lease_expires_at = now() + $3 * interval '1 millisecond'
             WHERE id = ANY($1) AND status = 'in_flight' AND lease_owner = $2
             RETURNING id",
        )
        .bind(ids)
        .bind(owner)
        .bind(lease_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(renewed.into_iter().map(|(id,)| id).collect())
    }

    /// When the earliest scheduled delivery is due (for the worker's sleep).
    pub async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>> {
        let (at,): (Option<DateTime<Utc>>,) = sqlx::query_as(
            "SELECT min(next_attempt_at) FROM deliveries WHERE status = 'pending' AND next_attempt_at IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(at)
    }
}
