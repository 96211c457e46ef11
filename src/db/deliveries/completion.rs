//! Completion: one statement writes a batch of attempts' outcomes (guarded by the
//! lease), a second one does the circuit breaker's bookkeeping when an endpoint of
//! the batch is failing.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::db::Store;
use crate::error::Result;

/// What a worker writes back for one delivery after an attempt.
#[derive(Debug, Clone)]
pub struct Completion {
    /// Delivery id.
    pub id: Uuid,
    /// Total attempts including this one.
    pub attempt: i32,
    /// The new state: `pending` (retry), `succeeded`, `dead` or `skipped`.
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
    /// The delivery's count of this round's rate-limited deferrals, after this
    /// attempt.
    pub rate_limited: i32,
    /// Whether this attempt was a 429 deferred without spending an attempt. It
    /// is logged as such and left out of the failure streak: a receiver asking
    /// to slow down is not failing, and must not open its circuit.
    pub deferred: bool,
    /// Whether a request went on the wire. Not when the endpoint's
    /// transformation refused to build it or cancelled it: such an attempt is
    /// logged, but says nothing about the receiver, so it is left out of the
    /// streak and of the endpoint's failure figures.
    pub sent: bool,
    /// The other deliveries sent in the same request (a FIFO batch, see
    /// `db::deliveries::batch`): they take this outcome. Empty otherwise.
    pub members: Vec<Uuid>,
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
    /// FIFO deliveries that finished (succeeded, dead or skipped): each makes its
    /// endpoint's next delivery the head, due at once, which workers asleep on
    /// [`Store::next_due_at`] would otherwise not know about.
    pub fifo_advanced: u64,
}

/// What the first completion statement found: rows written, and per endpoint
/// that needs circuit bookkeeping, the batch's outcome for it.
#[derive(sqlx::FromRow)]
struct Streaks {
    written: i64,
    fifo_advanced: i64,
    endpoints: Vec<Uuid>,
    any_ok: Vec<bool>,
    fails: Vec<i32>,
    probe_failed: Vec<bool>,
}

/// The first part of the completion statement: the outcomes as rows, and the
/// guarded update of the deliveries they are for.
const COMPLETE_UPDATE: &str = "WITH input AS (
                SELECT * FROM unnest($2::uuid[], $3::int[], $4::text[], $5::timestamptz[], $6::bool[], $7::int[],
                                     $8::text[], $9::text[], $10::timestamptz[], $11::int[], $12::bool[],
                                     $13::int[], $14::bool[], $15::bool[])
                  AS u(id, attempt, status, next_at, ok, code, err, body, started, dur, probe, limited, deferred, sent)
             ), upd AS (
                UPDATE deliveries d
                SET status = u.status::delivery_status, attempts = u.attempt, rate_limited = u.limited,
                    next_attempt_at = u.next_at,
                    lease_owner = NULL, lease_expires_at = NULL, last_status_code = u.code, last_error = u.err,
                    updated_at = now(),
                    finished_at = CASE WHEN u.status IN ('succeeded', 'dead', 'skipped') THEN now() END
                FROM input u
                -- The lease guard. `lease_owner` is set exactly while the row is
                -- in_flight (a CHECK constraint), so it is the whole guard; a
                -- `status = 'in_flight'` term here would tempt the planner into
                -- the lease index, whose dead entries it then walks for every batch,
                -- instead of one primary-key probe per row.
                WHERE d.id = u.id AND d.lease_owner = $1
                -- The attempt's own fields come back with the row, so the log and
                -- the streaks below read `upd` alone, with no join back to `input`.
                RETURNING d.id, d.endpoint_id, u.attempt, u.started, u.dur, u.code, u.err, u.body, u.ok, u.probe,
                    u.deferred, u.sent, d.fifo, u.status, d.batch_id, d.round_base, u.limited, d.next_attempt_at
";

/// The members of FIFO batches (only in a statement whose batch has some).
const COMPLETE_MEMBERS: &str = "             ), members AS (
                -- A FIFO batch succeeds or fails as a whole: the members sent with
                -- a head take its outcome. They stayed `pending` behind it (only a
                -- head is ever in flight), so the head's lease guard above is
                -- theirs too: a head whose lease was rescued writes nothing here
                -- either. Only the members this request carried, and only while
                -- they are still in its batch and pending (a concurrent delete of
                -- the endpoint has dead-lettered them first).
                UPDATE deliveries m
                SET status = u.status::delivery_status, attempts = m.round_base + (u.attempt - u.round_base),
                    rate_limited = u.limited, next_attempt_at = u.next_attempt_at,
                    last_status_code = u.code, last_error = u.err, updated_at = now(),
                    finished_at = CASE WHEN u.status IN ('succeeded', 'dead', 'skipped') THEN now() END
                FROM unnest($16::uuid[], $17::uuid[]) AS mb(id, head)
                JOIN upd u ON u.id = mb.head
                WHERE m.id = mb.id AND m.batch_id = u.batch_id AND m.status = 'pending' AND m.fifo
                RETURNING m.id, m.endpoint_id, m.attempts AS attempt, u.started, u.dur, u.code, u.err, u.body, u.ok,
                    u.deferred, u.sent
";

/// The attempt log: the deliveries written.
const LOG_PLAIN: &str = "             ), log AS (
                INSERT INTO delivery_attempts (delivery_id, attempt, endpoint_id, started_at, duration_ms, status_code,
                                               error, response_body, succeeded, rate_limited, sent)
                SELECT id, attempt, endpoint_id, started, dur, code, err, body, ok, deferred, sent FROM upd
                ON CONFLICT DO NOTHING
";

/// The attempt log: the deliveries written and the batch members.
const LOG_WITH_MEMBERS: &str = "             ), log AS (
                INSERT INTO delivery_attempts (delivery_id, attempt, endpoint_id, started_at, duration_ms, status_code,
                                               error, response_body, succeeded, rate_limited, sent)
                SELECT id, attempt, endpoint_id, started, dur, code, err, body, ok, deferred, sent FROM upd
                UNION ALL
                SELECT id, attempt, endpoint_id, started, dur, code, err, body, ok, deferred, sent FROM members
                ON CONFLICT DO NOTHING
";

/// The failure streaks, and what the statement returns.
const COMPLETE_TAIL: &str = "             ), streak AS (
                SELECT endpoint_id, bool_or(ok) AS any_ok, count(*) FILTER (WHERE NOT ok)::int AS fails,
                       bool_or(probe AND NOT ok) AS probe_failed
                -- A deferred 429 is neither a success nor a failure of the endpoint,
                -- and nor is an attempt that never reached it (transformation).
                FROM upd WHERE NOT deferred AND sent GROUP BY endpoint_id
             ), attention AS (
                -- Healthy endpoints (all succeeded, no streak, circuit closed) need
                -- no second statement, and their rows are not written at all.
                SELECT s.* FROM streak s JOIN endpoints e ON e.id = s.endpoint_id
                WHERE NOT s.any_ok OR e.consecutive_failures > 0 OR e.circuit_open_until IS NOT NULL
             )
             SELECT (SELECT count(*) FROM upd) AS written,
                    (SELECT count(*) FROM upd WHERE fifo AND status <> 'pending') AS fifo_advanced,
                    coalesce(array_agg(endpoint_id), '{}') AS endpoints, coalesce(array_agg(any_ok), '{}') AS any_ok,
                    coalesce(array_agg(fails), '{}') AS fails, coalesce(array_agg(probe_failed), '{}') AS probe_failed
             FROM attention";

impl Store {
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
        let mut limited = Vec::with_capacity(n);
        let mut deferred = Vec::with_capacity(n);
        let mut sent = Vec::with_capacity(n);
        let mut members = Vec::new();
        let mut member_heads = Vec::new();
        for c in batch {
            members.extend_from_slice(&c.members);
            member_heads.extend(std::iter::repeat_n(c.id, c.members.len()));
            sent.push(c.sent);
            limited.push(c.rate_limited);
            deferred.push(c.deferred);
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
        // The members' part only when the batch has FIFO batches: the common
        // statement stays as it was.
        let sql = if members.is_empty() {
            format!("{COMPLETE_UPDATE}{LOG_PLAIN}{COMPLETE_TAIL}")
        } else {
            format!("{COMPLETE_UPDATE}{COMPLETE_MEMBERS}{LOG_WITH_MEMBERS}{COMPLETE_TAIL}")
        };
        let mut query = sqlx::query_as(&sql)
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
            .bind(&limited)
            .bind(&deferred)
            .bind(&sent);
        if !members.is_empty() {
            query = query.bind(&members).bind(&member_heads);
        }
        // Not a cached prepared statement: a generic plan made while the table was
        // small (every fresh install, until autovacuum first analyzes it) joins by
        // a sequential scan of `deliveries` and keeps doing so as it grows. Planned
        // per call, the join is one primary-key probe per row.
        let streaks: Streaks = query.persistent(false).fetch_one(&self.pool).await?;
        let mut done = Completed {
            written: streaks.written as u64,
            fifo_advanced: streaks.fifo_advanced as u64,
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
}
