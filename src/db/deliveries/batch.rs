//! FIFO batches: the deliveries a claimed head takes with it in one request when
//! its endpoint has `batch_size` above 1 (docs/fifo.md).
//!
//! Only the head is ever in flight (the claim and `deliveries_fifo_one_in_flight`
//! see to that); the other members stay `pending` right behind it, marked with
//! the batch's id, and take the head's outcome when it is written
//! ([`Store::complete`](crate::db::Store::complete)). Nothing else can take
//! them meanwhile: no other claimer sends anything of an endpoint whose head is
//! in flight, and a row behind a pending head is never a head.

use sqlx::FromRow;
use uuid::Uuid;

use super::Claimed;
use crate::db::Store;
use crate::error::Result;

/// Most bytes of events one batch carries (the head always goes, even alone
/// over this). 1 MiB is the smallest request-body limit common in front of
/// receivers (nginx's default `client_max_body_size`).
pub const MAX_BATCH_BYTES: i64 = 1024 * 1024;

/// One request's worth of a FIFO endpoint's queue.
#[derive(Debug)]
pub struct FifoBatch {
    /// The batch's id (`batch_…` as the `webhook-id`): fixed when the batch is
    /// first formed, so every retry names the same events.
    pub id: Uuid,
    /// The head and the members, in acceptance order.
    pub items: Vec<BatchItem>,
}

/// One event of a batch.
#[derive(Debug, FromRow)]
pub struct BatchItem {
    /// Delivery id.
    pub id: Uuid,
    /// Event id.
    pub event_id: Uuid,
    /// The event's envelope, as stored.
    pub body: String,
}

#[derive(FromRow)]
struct Row {
    batch: Uuid,
    #[sqlx(flatten)]
    item: BatchItem,
}

impl FifoBatch {
    /// The deliveries other than `head`, which take its outcome, each with its
    /// event id.
    pub fn members(&self, head: Uuid) -> Vec<(Uuid, Uuid)> {
        self.items
            .iter()
            .filter(|i| i.id != head)
            .map(|i| (i.id, i.event_id))
            .collect()
    }
}

impl Store {
    /// The batch that claimed FIFO head `head` (leased to `owner`) goes out in.
    ///
    /// - A head that was already sent in a batch (a retry, or a give-back and
    ///   a new claim) goes with that batch's members that are still pending:
    ///   the same events, or fewer (never more), so the `webhook-id` a receiver
    ///   may have deduplicated on never names an event it did not get.
    /// - Otherwise a batch is formed: the head and the pending deliveries right
    ///   behind it in acceptance order that belong to no batch, up to
    ///   `batch_size` events and [`MAX_BATCH_BYTES`], stopping at the first one
    ///   that belongs to another batch (taking rows past it would send them
    ///   ahead of it).
    ///
    /// Locking: the members are updated (so row-locked) only for this
    /// statement; the statement re-checks that each is still pending, so a
    /// concurrent delete or disable of the endpoint, which dead-letters them,
    /// wins cleanly. `None` when `owner` no longer holds the head (its lease
    /// was rescued): it must not be sent.
    pub async fn fifo_batch(&self, owner: Uuid, head: &Claimed) -> Result<Option<FifoBatch>> {
        let rows: Vec<Row> = sqlx::query_as(
            "WITH head AS (
                SELECT id, endpoint_id, batch_id FROM deliveries
                WHERE id = $2 AND lease_owner = $1 AND fifo
             ), behind AS (
                -- The window runs in the index's order, so the scan stops at the
                -- LIMIT: a batch costs about batch_size index probes.
                SELECT d.id, count(d.batch_id) OVER w AS batched_so_far,
                       sum(octet_length(ev.body)) OVER w AS bytes
                FROM head h
                JOIN deliveries d ON d.endpoint_id = h.endpoint_id AND d.fifo AND d.status = 'pending'
                JOIN events ev ON ev.id = d.event_id
                WHERE h.batch_id IS NULL AND d.id <> h.id
                WINDOW w AS (ORDER BY d.created_at, d.event_id, d.id)
                ORDER BY d.created_at, d.event_id, d.id
                LIMIT $3 - 1
             ), joined AS (
                UPDATE deliveries d SET batch_id = $6, updated_at = now()
                FROM behind b
                WHERE d.id = b.id AND b.batched_so_far = 0 AND b.bytes + $5 <= $4
                  AND d.status = 'pending' AND d.fifo AND d.batch_id IS NULL
                RETURNING d.id
             ), formed AS (
                -- Runs although nothing reads it (as every data-modifying WITH does).
                UPDATE deliveries d SET batch_id = $6
                FROM head h WHERE d.id = h.id AND h.batch_id IS NULL
                RETURNING d.id
             ), kept AS (
                SELECT m.id FROM head h JOIN deliveries m ON m.batch_id = h.batch_id
                WHERE m.id <> h.id AND m.status = 'pending' AND m.fifo
             )
             SELECT (SELECT coalesce(batch_id, $6) FROM head) AS batch, d.id, d.event_id, ev.body
             FROM deliveries d JOIN events ev ON ev.id = d.event_id
             WHERE d.id IN (SELECT id FROM head UNION ALL SELECT id FROM joined UNION ALL SELECT id FROM kept)
             ORDER BY d.created_at, d.event_id, d.id",
        )
        .bind(owner)
        .bind(head.id)
        .bind(i64::from(head.batch_size))
        .bind(MAX_BATCH_BYTES)
        .bind(head.body.len() as i64)
        // A fresh id per batch formed, never the head's delivery id: a redriven
        // head forms a new batch, and must not reuse the id of its dead one.
        .bind(Uuid::now_v7())
        .fetch_all(&self.pool)
        .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let id = first.batch;
        let items: Vec<BatchItem> = rows.into_iter().map(|r| r.item).collect();
        metrics::histogram!("hookit_fifo_batch_size").record(items.len() as f64);
        Ok(Some(FifoBatch { id, items }))
    }
}
