//! The queue: claim, complete, release and rescue (used by workers), and the
//! listing, detail and redrive queries (used by the API).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::Store;
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
    /// Attempts made so far (all rounds).
    pub attempts: i32,
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
            next_attempt_at: r.next_attempt_at,
            last_status_code: r.last_status_code,
            last_error: r.last_error,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

const COLUMNS: &str =
    "d.id, d.event_id, d.endpoint_id, ev.event_type, d.status::text AS status, d.attempts,
    d.next_attempt_at, d.last_status_code, d.last_error, d.created_at, d.updated_at";

/// One attempt on the wire.
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
    /// Page size, 1-1000 (default 100).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The states a delivery can be in.
pub const STATUSES: [&str; 4] = ["pending", "in_flight", "succeeded", "dead"];

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
}

/// What a worker writes back for one delivery after an attempt.
#[derive(Debug, Clone)]
pub struct Completion {
    /// Delivery id.
    pub id: Uuid,
    /// Total attempts including this one.
    pub attempt: i32,
    /// The new state: `pending` (retry), `succeeded` or `dead`.
    pub status: &'static str,
    /// Due time of the retry.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Whether the attempt succeeded.
    pub succeeded: bool,
    /// HTTP status, if any.
    pub status_code: Option<i32>,
    /// Error text, if any.
    pub error: Option<String>,
    /// Response excerpt.
    pub response_body: Option<String>,
    /// When the attempt started.
    pub started_at: DateTime<Utc>,
    /// How long it took.
    pub duration_ms: i32,
    /// Whether this attempt was the probe of an open circuit.
    pub probe: bool,
}

/// What [`Store::complete`] wrote.
#[derive(Debug, Default, Clone)]
pub struct Completed {
    /// Endpoints whose circuit this batch opened.
    pub opened: Vec<Uuid>,
    /// Deliveries still leased to us and written.
    pub written: u64,
    /// Deliveries made due because a probe closed their endpoint's circuit.
    pub unheld: u64,
}

/// What the first completion statement found: rows written, and per endpoint
/// that needs circuit bookkeeping, the batch's outcome for it.
#[derive(sqlx::FromRow)]
struct Streaks {
    written: i64,
    endpoints: Vec<Uuid>,
    any_ok: Vec<bool>,
    fails: Vec<i32>,
    probe_failed: Vec<bool>,
}

/// Cuts a response body to [`RESPONSE_EXCERPT`] bytes on a character boundary.
pub fn excerpt(body: &[u8]) -> String {
    let cut = &body[..body.len().min(RESPONSE_EXCERPT)];
    String::from_utf8_lossy(cut).into_owned()
}

fn parse_cursor(cursor: Option<&str>) -> Result<Option<Uuid>> {
    cursor
        .map(|c| {
            c.parse::<DeliveryId>().map(|d| d.uuid()).map_err(|_| {
                Error::invalid("invalid-cursor", "cursor is not a value this API returned")
            })
        })
        .transpose()
}

impl Store {
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
             RETURNING d.id, d.event_id, d.tenant, d.endpoint_id, d.attempts, d.round_base, ev.body, ev.traceparent,
                 e.url, e.secret_enc,
                 CASE WHEN e.prev_secret_expires_at > now() THEN e.prev_secret_enc END AS prev_secret_enc,
                 e.headers, e.max_attempts, e.retry_base_ms, e.retry_cap_ms, e.timeout_ms, e.max_in_flight, e.rate_limit,
                 CASE WHEN e.deleted_at IS NOT NULL THEN 'deleted' ELSE e.status::text END AS endpoint_state,
                 e.circuit_open_until",
        )
        .bind(limit)
        .bind(owner)
        .bind(lease_ms)
        .bind(skip)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Writes the outcome of a batch of attempts: the state of each delivery, its
    /// attempt log row, and the endpoints' failure streaks. Guarded by
    /// `lease_owner`: a worker whose lease was rescued by another cannot overwrite
    /// the newer state. Returns how many deliveries were still held and written.
    ///
    /// One round trip when every endpoint in the batch is healthy (the common
    /// case); a second statement, [`Store::track_streaks`], only for endpoints
    /// that failed or were already failing.
    pub async fn complete(
        &self,
        owner: Uuid,
        batch: &[Completion],
        circuit_threshold: i32,
        probe_ms: i64,
    ) -> Result<Completed> {
        if batch.is_empty() {
            return Ok(Completed::default());
        }
        let n = batch.len();
        let mut ids = Vec::with_capacity(n);
        let mut attempts = Vec::with_capacity(n);
        let mut statuses = Vec::with_capacity(n);
        let mut next_at = Vec::with_capacity(n);
        let mut ok = Vec::with_capacity(n);
        let mut codes = Vec::with_capacity(n);
        let mut errors = Vec::with_capacity(n);
        let mut bodies = Vec::with_capacity(n);
        let mut started = Vec::with_capacity(n);
        let mut durations = Vec::with_capacity(n);
        let mut probes = Vec::with_capacity(n);
        for c in batch {
            probes.push(c.probe);
            ids.push(c.id);
            attempts.push(c.attempt);
            statuses.push(c.status);
            next_at.push(c.next_attempt_at);
            ok.push(c.succeeded);
            codes.push(c.status_code);
            errors.push(c.error.as_deref());
            bodies.push(c.response_body.as_deref());
            started.push(c.started_at);
            durations.push(c.duration_ms);
        }
        // Not a cached prepared statement: a generic plan made while the table was
        // small (every fresh install, until autovacuum first analyzes it) joins by
        // a sequential scan of `deliveries` and keeps doing so as it grows. Planned
        // per call, the join is one primary-key probe per row.
        let streaks: Streaks = sqlx::query_as(
            "WITH input AS (
                SELECT * FROM unnest($2::uuid[], $3::int[], $4::text[], $5::timestamptz[], $6::bool[], $7::int[],
                                     $8::text[], $9::text[], $10::timestamptz[], $11::int[], $12::bool[])
                  AS u(id, attempt, status, next_at, ok, code, err, body, started, dur, probe)
             ), upd AS (
                UPDATE deliveries d
                SET status = u.status::delivery_status, attempts = u.attempt, next_attempt_at = u.next_at,
                    lease_owner = NULL, lease_expires_at = NULL, last_status_code = u.code, last_error = u.err,
                    updated_at = now(),
                    finished_at = CASE WHEN u.status IN ('succeeded', 'dead') THEN now() END
                FROM input u
                -- The lease guard. `lease_owner` is set exactly while the row is
                -- in_flight (a CHECK constraint), so it is the whole guard; a
                -- `status = 'in_flight'` term here would tempt the planner into
                -- the lease index, whose dead entries it then walks for every batch,
                -- instead of one primary-key probe per row.
                WHERE d.id = u.id AND d.lease_owner = $1
                -- The attempt's own fields come back with the row, so the log and
                -- the streaks below read `upd` alone, with no join back to `input`.
                RETURNING d.id, d.endpoint_id, u.attempt, u.started, u.dur, u.code, u.err, u.body, u.ok, u.probe
             ), log AS (
                INSERT INTO delivery_attempts (delivery_id, attempt, endpoint_id, started_at, duration_ms, status_code,
                                               error, response_body, succeeded)
                SELECT id, attempt, endpoint_id, started, dur, code, err, body, ok FROM upd
                ON CONFLICT DO NOTHING
             ), streak AS (
                SELECT endpoint_id, bool_or(ok) AS any_ok, count(*) FILTER (WHERE NOT ok)::int AS fails,
                       bool_or(probe AND NOT ok) AS probe_failed
                FROM upd GROUP BY endpoint_id
             ), attention AS (
                -- Healthy endpoints (all succeeded, no streak, circuit closed) need
                -- no second statement, and their rows are not written at all.
                SELECT s.* FROM streak s JOIN endpoints e ON e.id = s.endpoint_id
                WHERE NOT s.any_ok OR e.consecutive_failures > 0 OR e.circuit_open_until IS NOT NULL
             )
             SELECT (SELECT count(*) FROM upd) AS written,
                    coalesce(array_agg(endpoint_id), '{}') AS endpoints, coalesce(array_agg(any_ok), '{}') AS any_ok,
                    coalesce(array_agg(fails), '{}') AS fails, coalesce(array_agg(probe_failed), '{}') AS probe_failed
             FROM attention",
        )
        .bind(owner)
        .bind(&ids)
        .bind(&attempts)
        .bind(&statuses)
        .bind(&next_at)
        .bind(&ok)
        .bind(&codes)
        .bind(&errors)
        .bind(&bodies)
        .bind(&started)
        .bind(&durations)
        .bind(&probes)
        .persistent(false)
        .fetch_one(&self.pool)
        .await?;
        let mut done = Completed {
            written: streaks.written as u64,
            ..Default::default()
        };
        if !streaks.endpoints.is_empty() {
            let (unheld, opened) = self
                .track_streaks(&streaks, circuit_threshold, probe_ms)
                .await?;
            done.unheld = unheld;
            done.opened = opened;
        }
        Ok(done)
    }

    /// The circuit breaker's bookkeeping for the endpoints of a completed batch
    /// that failed or were failing. Not atomic with the delivery writes before it:
    /// if the process dies in between, one batch's streak is lost, which only
    /// delays an opening; every update here is computed from the row as it is, so
    /// concurrent workers still add up.
    async fn track_streaks(
        &self,
        s: &Streaks,
        circuit_threshold: i32,
        probe_ms: i64,
    ) -> Result<(u64, Vec<Uuid>)> {
        let (unheld, opened): (i64, Vec<Uuid>) = sqlx::query_as(
            "WITH streak AS (
                SELECT * FROM unnest($1::uuid[], $2::bool[], $3::int[], $4::bool[])
                  AS s(endpoint_id, any_ok, fails, probe_failed)
             ), unheld AS (
                -- A success closes an open circuit: the deliveries parked until the
                -- next probe time are due now, not minutes later.
                UPDATE deliveries d SET next_attempt_at = now(), updated_at = now()
                FROM streak s JOIN endpoints e0 ON e0.id = s.endpoint_id
                WHERE s.any_ok AND e0.circuit_open_until IS NOT NULL AND d.endpoint_id = s.endpoint_id
                  AND d.status = 'pending' AND d.next_attempt_at > now() AND d.next_attempt_at <= e0.circuit_open_until
                RETURNING 1
             ), ep AS (
                -- Only a change of the failure streak touches the endpoint row (no
                -- hot-row contention for healthy endpoints).
                --
                -- Circuit breaker: a streak reaching the threshold opens the circuit
                -- for probe_ms; a failed *probe* doubles the interval (up to 10
                -- minutes) and moves the next probe; failures of attempts that were
                -- already in flight when it opened change nothing; any success closes it.
                UPDATE endpoints e
                SET consecutive_failures = CASE WHEN s.any_ok THEN 0 ELSE e.consecutive_failures + s.fails END,
                    failing_since = CASE WHEN s.any_ok THEN NULL ELSE coalesce(e.failing_since, now()) END,
                    circuit_probe_ms = CASE
                        WHEN s.any_ok THEN NULL
                        WHEN e.circuit_open_until IS NOT NULL THEN
                            CASE WHEN s.probe_failed THEN least(coalesce(e.circuit_probe_ms, $6) * 2, 600000) ELSE e.circuit_probe_ms END
                        WHEN e.consecutive_failures + s.fails >= $5 THEN $6
                        ELSE NULL END,
                    circuit_open_until = CASE
                        WHEN s.any_ok THEN NULL
                        WHEN e.circuit_open_until IS NOT NULL THEN
                            CASE WHEN s.probe_failed
                                 THEN now() + least(coalesce(e.circuit_probe_ms, $6) * 2, 600000) * interval '1 millisecond'
                                 ELSE e.circuit_open_until END
                        WHEN e.consecutive_failures + s.fails >= $5 THEN now() + $6 * interval '1 millisecond'
                        ELSE NULL END
                -- `before` is the row as this statement found it, to tell an opening.
                FROM streak s JOIN endpoints before ON before.id = s.endpoint_id
                WHERE e.id = s.endpoint_id AND (NOT s.any_ok OR e.consecutive_failures > 0 OR e.circuit_open_until IS NOT NULL)
                RETURNING e.id, e.circuit_open_until,
                    (before.circuit_open_until IS NULL AND e.circuit_open_until IS NOT NULL) AS opened,
                    e.circuit_open_until IS DISTINCT FROM before.circuit_open_until AS moved
             ), parked AS (
                -- When a circuit opens (or a failed probe moves the next one), the
                -- endpoint's queued rows are parked until the probe time in one go:
                -- left at the head of the due index, every claim would have to step
                -- over them.
                UPDATE deliveries d SET next_attempt_at = ep.circuit_open_until, updated_at = now()
                FROM ep
                WHERE ep.moved AND ep.circuit_open_until IS NOT NULL AND d.endpoint_id = ep.id
                  AND d.status = 'pending' AND d.next_attempt_at < ep.circuit_open_until
                RETURNING 1
             )
             SELECT (SELECT count(*) FROM unheld), coalesce((SELECT array_agg(id) FROM ep WHERE opened), '{}')",
        )
        .bind(&s.endpoints)
        .bind(&s.any_ok)
        .bind(&s.fails)
        .bind(&s.probe_failed)
        .bind(circuit_threshold)
        .bind(probe_ms)
        // Planned per call for the same reason as the completion: a stale generic
        // plan would scan the whole queue for the endpoint's parked rows, and this
        // runs exactly when an endpoint is failing and its backlog is largest.
        .persistent(false)
        .fetch_one(&self.pool)
        .await?;
        Ok((unheld as u64, opened))
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

    /// When the earliest scheduled delivery is due (for the worker's sleep).
    pub async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>> {
        let (at,): (Option<DateTime<Utc>>,) = sqlx::query_as(
            "SELECT min(next_attempt_at) FROM deliveries WHERE status = 'pending' AND next_attempt_at IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(at)
    }

    /// A page of the tenant's deliveries, newest first.
    pub async fn list_deliveries(&self, tenant: &str, f: &DeliveryFilter) -> Result<Vec<Delivery>> {
        if let Some(s) = &f.status {
            if !STATUSES.contains(&s.as_str()) {
                return Err(Error::invalid(
                    "invalid-filter",
                    format!("status must be one of {}", STATUSES.join(", ")),
                ));
            }
        }
        let cursor = parse_cursor(f.cursor.as_deref())?;
        let rows: Vec<DeliveryRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM deliveries d JOIN events ev ON ev.id = d.event_id
             WHERE d.tenant = $1
               AND ($2::text IS NULL OR d.status = $2::delivery_status)
               AND ($3::uuid IS NULL OR d.endpoint_id = $3)
               AND ($4::uuid IS NULL OR d.event_id = $4)
               AND ($5::text IS NULL OR ev.event_type = $5)
               AND ($6::uuid IS NULL OR d.id < $6)
             ORDER BY d.id DESC LIMIT $7"
        ))
        .bind(tenant)
        .bind(&f.status)
        .bind(f.endpoint_id.map(|e| e.uuid()))
        .bind(f.event_id.map(|e| e.uuid()))
        .bind(&f.event_type)
        .bind(cursor)
        .bind(super::page_limit(f.limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// The deliveries of one event.
    pub async fn deliveries_of_event(&self, tenant: &str, id: EventId) -> Result<Vec<Delivery>> {
        let rows: Vec<DeliveryRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM deliveries d JOIN events ev ON ev.id = d.event_id
             WHERE d.event_id = $1 AND d.tenant = $2 ORDER BY d.id"
        ))
        .bind(id.uuid())
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// One delivery with its attempt log.
    pub async fn get_delivery(&self, tenant: &str, id: DeliveryId) -> Result<DeliveryDetail> {
        let row: Option<DeliveryRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM deliveries d JOIN events ev ON ev.id = d.event_id WHERE d.id = $1 AND d.tenant = $2"
        ))
        .bind(id.uuid())
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        let delivery: Delivery = row.ok_or(Error::NotFound("delivery"))?.into();
        let attempt_log: Vec<Attempt> = sqlx::query_as(
            "SELECT attempt, started_at, duration_ms, status_code, error, response_body
             FROM delivery_attempts WHERE delivery_id = $1 ORDER BY attempt",
        )
        .bind(id.uuid())
        .fetch_all(&self.pool)
        .await?;
        Ok(DeliveryDetail {
            delivery,
            attempt_log,
        })
    }

    /// Sends a dead or succeeded delivery again with a fresh attempt budget; its
    /// history is kept. 409 while it is pending or in flight.
    pub async fn redrive(&self, tenant: &str, id: DeliveryId) -> Result<Delivery> {
        let updated = sqlx::query(
            "UPDATE deliveries d SET status = 'pending', round_base = d.attempts, finished_at = NULL,
                next_attempt_at = CASE WHEN e.status = 'active' THEN now() END, updated_at = now()
             FROM endpoints e
             WHERE d.id = $1 AND d.tenant = $2 AND d.status IN ('dead', 'succeeded')
               AND e.id = d.endpoint_id AND e.deleted_at IS NULL",
        )
        .bind(id.uuid())
        .bind(tenant)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if updated == 0 {
            let current = self.get_delivery(tenant, id).await?.delivery;
            if current.status == "pending" || current.status == "in_flight" {
                return Err(Error::conflict(
                    "delivery-not-finished",
                    format!(
                        "the delivery is {}; only dead or succeeded deliveries can be redriven",
                        current.status
                    ),
                ));
            }
            return Err(Error::conflict(
                "endpoint-deleted",
                "the delivery's endpoint was deleted",
            ));
        }
        Ok(self.get_delivery(tenant, id).await?.delivery)
    }

    /// Redrives every dead letter that matches (or counts them, with `dry_run`).
    /// Dead letters of deleted endpoints cannot be redriven (purge them instead).
    pub async fn redrive_dead(&self, tenant: &str, f: &RedriveFilter) -> Result<u64> {
        let filter = dead_letter_filter(true);
        let sql = if f.dry_run {
            format!("SELECT count(*) FROM deliveries d, endpoints e WHERE {filter}")
        } else {
            format!(
                "WITH r AS (
                    UPDATE deliveries d SET status = 'pending', round_base = d.attempts, finished_at = NULL,
                        next_attempt_at = CASE WHEN e.status = 'active' THEN now() END, updated_at = now()
                    FROM endpoints e WHERE {filter} RETURNING 1)
                 SELECT count(*) FROM r"
            )
        };
        self.count_dead_letters(&sql, tenant, f).await
    }

    /// Deletes every dead letter that matches, with its attempt log (or counts them,
    /// with `dry_run`): the explicit way out of the dead-letter queue besides a
    /// redrive. Includes the dead letters of deleted endpoints.
    pub async fn purge_dead(&self, tenant: &str, f: &RedriveFilter) -> Result<u64> {
        let filter = dead_letter_filter(false);
        let sql = if f.dry_run {
            format!("SELECT count(*) FROM deliveries d, endpoints e WHERE {filter}")
        } else {
            // The attempt logs go in the same statement (there is no cascade).
            format!(
                "WITH r AS (DELETE FROM deliveries d USING endpoints e WHERE {filter} RETURNING d.id),
                      log AS (DELETE FROM delivery_attempts a USING r WHERE a.delivery_id = r.id)
                 SELECT count(*) FROM r"
            )
        };
        self.count_dead_letters(&sql, tenant, f).await
    }

    async fn count_dead_letters(&self, sql: &str, tenant: &str, f: &RedriveFilter) -> Result<u64> {
        let (n,): (i64,) = sqlx::query_as(sql)
            .bind(tenant)
            .bind(f.endpoint_id.map(|e| e.uuid()))
            .bind(&f.event_type)
            .bind(f.since)
            .bind(f.until)
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }
}

/// The WHERE clause selecting a tenant's dead letters by a [`RedriveFilter`]
/// (`$1` tenant, `$2` endpoint, `$3` event type, `$4`/`$5` death time range),
/// over `deliveries d` joined with their `endpoints e`.
fn dead_letter_filter(live_endpoints_only: bool) -> String {
    format!(
        "d.tenant = $1 AND d.status = 'dead'
           AND ($2::uuid IS NULL OR d.endpoint_id = $2)
           AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM events ev WHERE ev.id = d.event_id AND ev.event_type = $3))
           AND ($4::timestamptz IS NULL OR d.finished_at >= $4)
           AND ($5::timestamptz IS NULL OR d.finished_at < $5)
           AND e.id = d.endpoint_id{}",
        if live_endpoints_only { " AND e.deleted_at IS NULL" } else { "" }
    )
}
