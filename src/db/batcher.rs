//! Group commit for ingestion. Concurrent `POST /v1/events` and
//! `POST /v1/events/batch` requests are gathered into one multi-row statement (and
//! so one transaction and one WAL flush): a few writer tasks each take whatever
//! requests have queued up while the previous statement ran. An idle API still
//! answers a lone request with a single statement, and under load the batch grows
//! by itself, with no timer adding latency.
//!
//! A request is never split across statements: a batch request's rows commit
//! together or not at all, so a failed statement never leaves half a batch stored.
//!
//! During an outage no request waits longer than [`INGEST_BOUND`]: a writer whose
//! connection is slow to come asks for a probe (see `db::availability`) and gives
//! up on its batch as soon as the database is known down; a request whose bound
//! ran out is dropped from the queue before any writer sends it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, Mutex};
use uuid::Uuid;

use super::availability::Availability;
use crate::domain::patterns::candidates;
use crate::error::{Error, Result};

/// Longest an ingestion request waits for its statement (the documented bound of
/// a 503 during an outage).
pub(crate) const INGEST_BOUND: Duration = Duration::from_secs(5);
/// A connection that has not come within this is suspicious: ask for a probe.
const SLOW_ACQUIRE: Duration = Duration::from_millis(200);

/// A writer stops gathering requests once its statement has this many rows.
const MAX_BATCH: usize = 256;
/// Hard cap on the rows of one statement: a request that would push it past this
/// waits for the next statement (one request alone may still have up to the
/// batch route's 1,000 rows).
const MAX_ROWS: usize = 2000;
/// Statements in flight at once (so one slow commit does not stall the queue).
const WRITERS: usize = 3;

/// One event waiting to be written.
#[derive(Debug)]
pub(crate) struct Job {
    pub tenant: String,
    pub key: Option<String>,
    pub hash: Vec<u8>,
    pub id: Uuid,
    pub event_type: String,
    pub body: String,
    pub traceparent: Option<String>,
    pub created_at: DateTime<Utc>,
    pub only_endpoint: Option<Uuid>,
}

/// Per row: created (false: its idempotency key existed) and deliveries fanned out.
pub(crate) type Written = (bool, i64);

/// The rows of one API request and where to answer, in the rows' order.
#[derive(Debug)]
struct Request {
    jobs: Vec<Job>,
    reply: oneshot::Sender<Result<Vec<Written>>>,
}

/// The queue in front of the writers.
#[derive(Debug, Clone)]
pub(crate) struct Batcher {
    tx: mpsc::Sender<Request>,
}

impl Batcher {
    /// Starts the writers on the current runtime.
    pub(crate) fn start(pool: sqlx::PgPool, availability: Availability) -> Self {
        let (tx, rx) = mpsc::channel::<Request>(MAX_BATCH * WRITERS * 4);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..WRITERS {
            let (rx, pool, availability) = (rx.clone(), pool.clone(), availability.clone());
            tokio::spawn(async move {
                let mut batch: Vec<Request> = Vec::with_capacity(MAX_BATCH);
                // A request that did not fit the previous statement goes first in
                // this writer's next one (it keeps its place ahead of later ones).
                let mut held: Option<Request> = None;
                loop {
                    let mut rows = 0;
                    if let Some(r) = held.take() {
                        rows += r.jobs.len();
                        batch.push(r);
                    }
                    {
                        let mut rx = rx.lock().await;
                        if batch.is_empty() {
                            match rx.recv().await {
                                Some(r) => {
                                    rows += r.jobs.len();
                                    batch.push(r);
                                }
                                None => return,
                            }
                        }
                        while rows < MAX_BATCH {
                            match rx.try_recv() {
                                Ok(r) if rows + r.jobs.len() > MAX_ROWS => {
                                    held = Some(r);
                                    break;
                                }
                                Ok(r) => {
                                    rows += r.jobs.len();
                                    batch.push(r);
                                }
                                Err(_) => break,
                            }
                        }
                    }
                    write(&pool, &availability, &mut batch).await;
                }
            });
        }
        Self { tx }
    }

    /// Queues the rows of one request and waits for their statement to commit, at
    /// most [`INGEST_BOUND`]; answers one [`Written`] per job, in order. The jobs
    /// commit together or not at all. Past the bound the answer is a 503: if no
    /// writer has taken the request yet it is never written; if one has, its
    /// statement may still commit (as when a connection drops after a commit),
    /// which an Idempotency-Key makes harmless.
    pub(crate) async fn submit(&self, jobs: Vec<Job>) -> Result<Vec<Written>> {
        let (reply, rx) = oneshot::channel();
        let wait = async {
            self.tx
                .send(Request { jobs, reply })
                .await
                .map_err(|_| Error::Unavailable(sqlx::Error::PoolClosed))?;
            rx.await
                .map_err(|_| Error::Unavailable(sqlx::Error::PoolClosed))?
        };
        tokio::time::timeout(INGEST_BOUND, wait)
            .await
            .unwrap_or(Err(Error::Unavailable(sqlx::Error::PoolTimedOut)))
    }
}

/// A connection for one statement, or why there is none: waits for the pool, but
/// asks for a probe if that is slow, and stops waiting once the database is known
/// down.
async fn connection(
    pool: &sqlx::PgPool,
    availability: &Availability,
) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>> {
    if let Some(down) = availability.down_for() {
        return Err(Error::DatabaseDown(down));
    }
    let acquire = pool.acquire();
    tokio::pin!(acquire);
    if let Ok(c) = tokio::time::timeout(SLOW_ACQUIRE, &mut acquire).await {
        return c.map_err(|e| {
            let e = Error::from(e);
            availability.report(&e);
            e
        });
    }
    availability.suspect();
    tokio::select! {
        c = &mut acquire => c.map_err(|e| {
            let e = Error::from(e);
            availability.report(&e);
            e
        }),
        _ = availability.went_down() => Err(Error::DatabaseDown(availability.down_for().unwrap_or_default())),
    }
}

/// Answers every request of `batch` with `e`.
fn fail_all(batch: &mut Vec<Request>, e: &Error) {
    for j in batch.drain(..) {
        let copy = match e {
            Error::DatabaseDown(d) => Error::DatabaseDown(*d),
            other => Error::Unavailable(sqlx::Error::Protocol(format!(
                "ingestion batch failed: {other}"
            ))),
        };
        let _ = j.reply.send(Err(copy));
    }
}

async fn write(pool: &sqlx::PgPool, availability: &Availability, batch: &mut Vec<Request>) {
    // Requests whose bound ran out have gone: do not write what nobody will confirm.
    batch.retain(|j| !j.reply.is_closed());
    if batch.is_empty() {
        return;
    }
    let mut conn = match connection(pool, availability).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, requests = batch.len(), "ingestion batch refused: no database connection");
            return fail_all(batch, &e);
        }
    };
    batch.retain(|j| !j.reply.is_closed());
    if batch.is_empty() {
        return;
    }
    let n: usize = batch.iter().map(|r| r.jobs.len()).sum();
    metrics::histogram!("hookit_ingest_batch_size").record(n as f64);
    let (
        mut tenants,
        mut keys,
        mut hashes,
        mut ids,
        mut types,
        mut bodies,
        mut tps,
        mut ats,
        mut only,
        mut pats,
    ) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for j in batch.iter().flat_map(|r| r.jobs.iter()) {
        tenants.push(j.tenant.as_str());
        keys.push(j.key.as_deref());
        hashes.push(j.hash.as_slice());
        ids.push(j.id);
        types.push(j.event_type.as_str());
        bodies.push(j.body.as_str());
        tps.push(j.traceparent.as_deref());
        ats.push(j.created_at);
        only.push(j.only_endpoint);
        // The patterns that match the type, computed here rather than by a SQL
        // function per event (that function cost Postgres about 5 µs of CPU
        // per event, 12-16 % of the ingestion statement). Space-separated:
        // event types are validated to `[A-Za-z0-9_.-]`.
        pats.push(candidates(&j.event_type).join(" "));
    }
    // One statement: every idempotency record, event and delivery of the batch
    // commit together. A repeated key (earlier, concurrently, or twice in this very
    // batch) inserts no idempotency row, hence no event and no deliveries; the
    // caller then replays the stored answer.
    //
    // Shape, for Postgres's CPU (the bound of ingestion): the bodies go straight
    // from their array into `events` and are never copied into a CTE's
    // tuplestore or a hash table. Only the small columns that the idempotency
    // check and the fan-out need are materialized once, in `input`, and the
    // answer is built from what was inserted rather than by joining every input
    // row again. With bodies in `input` the statement cost about a quarter more
    // Postgres CPU per event (measured with pgbench).
    let result: std::result::Result<Vec<(Uuid, i64)>, sqlx::Error> = sqlx::query_as(
        "WITH input AS MATERIALIZED (
            SELECT u.id, u.tenant, u.key, u.hash, u.created_at, u.only_ep, string_to_array(u.pats, ' ') AS pats
            FROM unnest($4::uuid[], $1::text[], $2::text[], $3::bytea[], $8::timestamptz[], $9::uuid[], $10::text[])
              AS u(id, tenant, key, hash, created_at, only_ep, pats)
         ), idem AS (
            -- Stamped with its event's instant: retention relies on a record
            -- never being younger than its event (see `Store::prune`).
            INSERT INTO idempotency_keys (tenant, key, request_hash, event_id, created_at)
            SELECT tenant, key, hash, id, created_at FROM input WHERE key IS NOT NULL
            ON CONFLICT DO NOTHING
            RETURNING event_id
         ), ev AS (
            INSERT INTO events (id, tenant, event_type, body, traceparent, created_at)
            SELECT u.id, u.tenant, u.event_type, u.body, u.traceparent, u.created_at
            FROM unnest($4::uuid[], $1::text[], $5::text[], $6::text[], $7::text[], $8::timestamptz[], $2::text[])
              AS u(id, tenant, event_type, body, traceparent, created_at, key)
            WHERE u.key IS NULL OR u.id IN (SELECT event_id FROM idem)
            RETURNING id, tenant, created_at
         ), dl AS (
            INSERT INTO deliveries (id, tenant, event_id, endpoint_id, next_attempt_at, created_at, updated_at, fifo)
            SELECT hookit_uuid_v7(), ev.tenant, ev.id, e.id,
                   -- Paused endpoints get held deliveries (no due time, nothing spent);
                   -- behind an open circuit: due when the next probe is.
                   CASE WHEN e.status = 'active' THEN greatest(ev.created_at, e.circuit_open_until) END,
                   ev.created_at, ev.created_at,
                   -- Copied so the claim knows FIFO rows without a join (0012).
                   e.ordering = 'fifo'
            FROM ev JOIN input i ON i.id = ev.id
            JOIN endpoints e ON e.tenant = ev.tenant AND e.deleted_at IS NULL AND e.status <> 'disabled'
            WHERE CASE WHEN i.only_ep IS NULL THEN e.event_types && i.pats ELSE e.id = i.only_ep END
            RETURNING event_id
         )
         -- One row per event created; an input row without one was a repeated key.
         SELECT ev.id, coalesce(c.n, 0)
         FROM ev LEFT JOIN (SELECT event_id, count(*) AS n FROM dl GROUP BY 1) c ON c.event_id = ev.id",
    )
    .bind(&tenants)
    .bind(&keys)
    .bind(&hashes)
    .bind(&ids)
    .bind(&types)
    .bind(&bodies)
    .bind(&tps)
    .bind(&ats)
    .bind(&only)
    .bind(&pats)
    .fetch_all(&mut *conn)
    .await;
    drop(conn);
    match result {
        Ok(rows) => {
            let created: std::collections::HashMap<Uuid, i64> = rows.into_iter().collect();
            for r in batch.drain(..) {
                let written: Vec<Written> = r
                    .jobs
                    .iter()
                    .map(|j| match created.get(&j.id) {
                        Some(&n) => (true, n),
                        None => (false, 0),
                    })
                    .collect();
                let _ = r.reply.send(Ok(written));
            }
        }
        Err(e) => {
            // Every request of the batch gets the error (503 when the database is
            // unreachable), so there is no 2xx without a commit. (If the connection
            // dropped just after the commit, the events may exist: a retry with the
            // same Idempotency-Key then replays instead of duplicating.) Every row is
            // validated before it is queued, and a repeated key is not an error
            // (ON CONFLICT DO NOTHING), so one request, or one item of a batch
            // request, cannot fail the statement for the others.
            let unavailable = crate::error::is_unavailable(&e);
            if unavailable {
                availability.suspect();
            }
            tracing::warn!(error = %e, events = n, "ingestion batch failed");
            for j in batch.drain(..) {
                let copy = sqlx::Error::Protocol(format!("ingestion batch failed: {e}"));
                let _ = j.reply.send(Err(if unavailable {
                    Error::Unavailable(copy)
                } else {
                    Error::Db(copy)
                }));
            }
        }
    }
}
