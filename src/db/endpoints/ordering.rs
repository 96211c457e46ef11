//! Changing an endpoint's `ordering`, and with it the `fifo` flag its queued
//! deliveries carry (the claim reads the flag, not the endpoint: see
//! `db::deliveries::claim`).

use uuid::Uuid;

use crate::db::Store;
use crate::error::Result;

impl Store {
    /// Sets `endpoint`'s ordering (`none` or `fifo`) and re-flags its queued
    /// deliveries in the same statement, so no claim sees the endpoint in one
    /// mode and its rows in the other. A no-op when it is already so.
    ///
    /// - To `fifo`: its pending deliveries join the ordered queue (order among
    ///   them is acceptance order). Deliveries already in flight are left as they
    ///   are and may finish concurrently with the first FIFO head: they were sent
    ///   before the switch, so no order was promised for them.
    /// - To `none`: its pending and in-flight deliveries become ordinary ones and
    ///   are claimed concurrently from then on.
    ///
    /// Locking: the endpoint row is locked by the UPDATE, so two changes of one
    /// endpoint are serialised. An event fanned out by a group commit whose
    /// snapshot predates the change keeps the old mode (the fan-out reads the
    /// endpoint without locking it, to keep ingestion free of endpoint locks):
    /// such an event was accepted concurrently with the change, so no order with
    /// respect to it was promised either. A FIFO row left on a `none` endpoint
    /// is still sent (FIFO rows are found from the queue, not from the endpoint).
    pub(crate) async fn set_ordering(&self, endpoint: Uuid, ordering: &str) -> Result<()> {
        sqlx::query(
            "WITH ep AS (
                UPDATE endpoints SET ordering = $2::endpoint_ordering, updated_at = now()
                WHERE id = $1 AND ordering <> $2::endpoint_ordering
                RETURNING id
             )
             -- Leaving FIFO also dissolves unfinished batches (their members
             -- become ordinary deliveries, each sent on its own).
             UPDATE deliveries d SET fifo = ($2 = 'fifo'),
                 batch_id = CASE WHEN $2 = 'fifo' THEN d.batch_id END, updated_at = now()
             FROM ep
             WHERE d.endpoint_id = ep.id AND d.fifo <> ($2 = 'fifo')
               AND (d.status = 'pending' OR (d.status = 'in_flight' AND $2 = 'none'))",
        )
        .bind(endpoint)
        .bind(ordering)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
