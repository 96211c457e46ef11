//! Leases: the claim (who locks what, and why no lock lives across HTTP; FIFO
//! endpoints' one-at-a-time rule), giving
//! leased rows back, dead-lettering without an attempt, and rescuing leases whose
//! worker is gone.

use std::collections::BTreeMap;

use sqlx::FromRow;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::db::Store;
use crate::domain::formats::{Format, UnknownFormat};
use crate::error::Result;

/// The endpoints with FIFO work (pending or in flight), each once: a skip scan
/// of `deliveries_fifo_idx` (one index probe per endpoint, whatever its backlog),
/// as the recursive CTE `fifo_endpoints(endpoint_id)`.
const FIFO_ENDPOINTS: &str = "fifo_endpoints(endpoint_id) AS (
    (SELECT endpoint_id FROM deliveries WHERE fifo AND status IN ('pending', 'in_flight')
     ORDER BY endpoint_id LIMIT 1)
    UNION ALL
    SELECT (SELECT o.endpoint_id FROM deliveries o
            WHERE o.fifo AND o.status IN ('pending', 'in_flight') AND o.endpoint_id > f.endpoint_id
            ORDER BY o.endpoint_id LIMIT 1)
    FROM fifo_endpoints f WHERE f.endpoint_id IS NOT NULL
)";

/// The head of FIFO endpoint `f.endpoint_id`: its oldest pending delivery in
/// acceptance order (see migration 0012 for why this order). One probe of
/// `deliveries_fifo_idx`.
const FIFO_HEAD: &str = "SELECT o.id FROM deliveries o
    WHERE o.endpoint_id = f.endpoint_id AND o.fifo AND o.status = 'pending'
    ORDER BY o.created_at, o.event_id, o.id LIMIT 1";

/// None of FIFO endpoint `f.endpoint_id`'s deliveries is in flight.
const FIFO_IDLE: &str = "NOT EXISTS (SELECT 1 FROM deliveries b
    WHERE b.endpoint_id = f.endpoint_id AND b.fifo AND b.status = 'in_flight')";

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
    /// Whether this is a FIFO delivery (its endpoint's head).
    pub fifo: bool,
    /// The endpoint's `batch_size` (see [`Claimed::batched`]).
    pub batch_size: i32,
}

impl Claimed {
    /// How the body is rendered for this endpoint. The column is an enum of
    /// exactly these names, so an unknown one is a bug: refused, never guessed.
    pub fn format(&self) -> Result<Format, UnknownFormat> {
        self.format.parse()
    }

    /// Whether this head goes out in a batch ([`Store::fifo_batch`]): a FIFO
    /// delivery of an endpoint with `batch_size` above 1 that sends the
    /// standard envelope untransformed, as of this claim. The API refuses other
    /// combinations; one that slipped through a race is sent one event per
    /// request rather than as an array nobody asked for.
    pub fn batched(&self) -> bool {
        self.fifo
            && self.batch_size > 1
            && self.transformation_sha.is_none()
            && matches!(self.format(), Ok(Format::Standard))
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
    /// Locking: each CTE picks due rows and row-locks them with SKIP LOCKED, so
    /// concurrent workers take disjoint batches without waiting on each other; the
    /// UPDATE then flips them to `in_flight` with the lease in the same statement,
    /// and the locks are released at its (implicit) commit. No lock is held while
    /// the HTTP request runs: the lease alone marks ownership, and every later write
    /// is guarded by `lease_owner`.
    ///
    /// Two kinds of rows, two CTEs:
    /// - `heads`: FIFO endpoints (`ordering = 'fifo'`, rows with `fifo` set). For
    ///   each endpoint with FIFO work (a skip scan of `deliveries_fifo_idx`) only
    ///   its head, the oldest pending delivery in acceptance order
    ///   `(created_at, event_id, id)`, is a candidate, and only when none of the
    ///   endpoint's deliveries is in flight. Concurrent claimers are safe without
    ///   any lock across HTTP: a claimer that sees the head pending also sees it
    ///   as older than its successors, so it can only try the head; two claimers
    ///   trying the head are serialised by its row lock (SKIP LOCKED: the loser
    ///   moves on to other endpoints, never to the successor), and a claimer whose
    ///   snapshot is stale re-checks the head's own row after locking it (READ
    ///   COMMITTED re-evaluates `d.status = 'pending'` on the newest version), so
    ///   a head already taken or finished is skipped. What a snapshot cannot see
    ///   is a row that became pending after it (a redrive of an older dead letter,
    ///   an event committed late by a concurrent group commit): two claimers could
    ///   then pick two different "heads". The unique index
    ///   `deliveries_fifo_one_in_flight` makes the second of those fail rather
    ///   than send two; the statement is then retried on a fresh snapshot.
    /// - `due`: every other row, in due order, through `deliveries_due_idx`, which
    ///   holds non-FIFO rows only, so held FIFO rows cost this scan nothing.
    ///
    /// Heads go first: there is at most one per FIFO endpoint, and a FIFO
    /// endpoint's throughput is bounded by its round trips, so it should not wait
    /// for a backlog of ordinary rows; ordinary rows fill the rest of the batch.
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
        let sql = format!(
            "WITH RECURSIVE {FIFO_ENDPOINTS}, heads AS (
                SELECT d.id FROM fifo_endpoints f
                CROSS JOIN LATERAL ({FIFO_HEAD}) h
                JOIN deliveries d ON d.id = h.id
                WHERE NOT (f.endpoint_id = ANY($4)) AND {FIFO_IDLE}
                  -- Re-checked on the newest row version after locking (see above).
                  AND d.status = 'pending' AND d.fifo AND d.next_attempt_at <= now()
                ORDER BY d.next_attempt_at, d.id
                LIMIT $1
                FOR UPDATE OF d SKIP LOCKED
             ), due AS (
                SELECT id FROM deliveries
                WHERE status = 'pending' AND next_attempt_at <= now() AND NOT fifo AND NOT (endpoint_id = ANY($4))
                ORDER BY next_attempt_at, id
                LIMIT $1
                FOR UPDATE SKIP LOCKED
             ), picked AS (
                -- The limit is applied where `due` is read, not inside it: with a
                -- computed LIMIT the planner cannot see that the claim index's
                -- order ends the scan early. A WITH query is evaluated only as far
                -- as it is read, so rows past the batch are neither scanned nor locked.
                SELECT id FROM heads
                UNION ALL
                (SELECT id FROM due LIMIT greatest($1 - (SELECT count(*) FROM heads), 0))
             )
             UPDATE deliveries d
             SET status = 'in_flight', next_attempt_at = NULL, lease_owner = $2,
                 lease_expires_at = now() + $3 * interval '1 millisecond', updated_at = now()
             FROM picked, events ev, endpoints e
             WHERE d.id = picked.id AND ev.id = d.event_id AND e.id = d.endpoint_id
             RETURNING d.id, d.event_id, d.tenant, d.endpoint_id, d.attempts, d.round_base, d.rate_limited, ev.body, ev.traceparent,
                 e.url, e.secret_enc,
                 CASE WHEN e.prev_secret_expires_at > now() THEN e.prev_secret_enc END AS prev_secret_enc,
                 e.headers, e.max_attempts, e.retry_base_ms, e.retry_cap_ms, e.timeout_ms, e.max_in_flight, e.rate_limit,
                 CASE WHEN e.deleted_at IS NOT NULL THEN 'deleted' ELSE e.status::text END AS endpoint_state,
                 e.circuit_open_until, e.format::text AS format, ev.event_type, e.transformation_sha, d.fifo, e.batch_size"
        );
        // Bounded: a conflict needs a claimer racing on a snapshot older than a
        // row that just became pending, which a fresh snapshot no longer is.
        let mut tries = 0;
        loop {
            let r = sqlx::query_as::<_, Claimed>(&sql)
                .bind(limit)
                .bind(owner)
                .bind(lease_ms)
                .bind(skip)
                .fetch_all(&self.pool)
                .await;
            match r {
                Err(sqlx::Error::Database(e))
                    if tries < 3 && e.constraint() == Some("deliveries_fifo_one_in_flight") =>
                {
                    tries += 1;
                    metrics::counter!("hookit_fifo_claim_conflicts_total").increment(1);
                }
                r => return Ok(r?),
            }
        }
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

    /// When the earliest scheduled delivery is due (for the worker's sleep): the
    /// earliest ordinary row, or the earliest FIFO head that may be sent (rows
    /// held behind a head are not due, however old their timestamp).
    pub async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>> {
        let (at,): (Option<DateTime<Utc>>,) = sqlx::query_as(&format!(
            "WITH RECURSIVE {FIFO_ENDPOINTS}
             SELECT least(
                (SELECT min(next_attempt_at) FROM deliveries
                 WHERE status = 'pending' AND next_attempt_at IS NOT NULL AND NOT fifo),
                (SELECT min(d.next_attempt_at) FROM fifo_endpoints f
                 CROSS JOIN LATERAL ({FIFO_HEAD}) h
                 JOIN deliveries d ON d.id = h.id
                 WHERE {FIFO_IDLE}))"
        ))
        .fetch_one(&self.pool)
        .await?;
        Ok(at)
    }
}
