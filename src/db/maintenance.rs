//! Background upkeep: un-holding deliveries of resumed endpoints, retention, and
//! expiry of idempotency records. Everything works in small batches so it never
//! holds long locks or stalls delivery.

use std::time::Duration;

use super::Store;
use crate::domain::ids::v7_floor;
use crate::error::Result;

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_TTL_HOURS: i64 = 24;

/// Rows deleted per statement by retention.
const PRUNE_BATCH: i64 = 1000;

impl Store {
    /// Makes held deliveries of active endpoints due. Closes the race in which an
    /// event ingested while its endpoint was being resumed got a held row that the
    /// resume did not see.
    pub async fn unhold_active(&self) -> Result<u64> {
        let r = sqlx::query(
            "UPDATE deliveries d SET next_attempt_at = now(), updated_at = now()
             FROM endpoints e
             WHERE d.status = 'pending' AND d.next_attempt_at IS NULL AND e.id = d.endpoint_id
               AND e.status = 'active' AND e.deleted_at IS NULL",
        )
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Deletes, in small batches, events older than `retention` whose deliveries all
    /// succeeded (with their deliveries and attempt logs), and expired idempotency
    /// keys. Events with a dead, pending or in-flight delivery are kept: dead
    /// letters stay until redriven or purged. Returns events deleted.
    pub async fn prune(&self, retention: Duration, max_batches: u32) -> Result<u64> {
        let secs = retention.as_secs() as f64;
        let cutoff = v7_floor(
            (chrono::Utc::now().timestamp_millis() as u64)
                .saturating_sub(retention.as_millis() as u64),
        );
        let mut total = 0;
        for _ in 0..max_batches {
            // Locking: the picked events are row-locked (SKIP LOCKED, so two
            // pruners take disjoint batches). Their deliveries are deleted only if
            // still `succeeded` when the DELETE gets their row lock: a redrive
            // that raced this statement has made one pending, and that delivery
            // stays. Its event stays too, because an event goes only when every
            // delivery it had in this statement's snapshot was deleted here.
            // Attempt logs go with their deliveries (there is no cascade).
            //
            // Old events are found on the primary key: an event id is a UUIDv7
            // drawn when the event was accepted, so ids below the cutoff's
            // smallest UUIDv7 are the old ones, oldest first (0014 dropped the
            // index on `created_at`). `created_at` is still checked, so an id
            // that is not such a UUID can delay its event's pruning but never
            // prune a young event.
            let (picked, deleted): (i64, i64) = sqlx::query_as(
                "WITH picked AS (
                    SELECT ev.id FROM events ev
                    WHERE ev.id < $3 AND ev.created_at < now() - $1 * interval '1 second'
                      AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = ev.id AND d.status NOT IN ('succeeded', 'skipped'))
                    ORDER BY ev.id LIMIT $2
                    FOR UPDATE SKIP LOCKED
                 ), dl AS (
                    DELETE FROM deliveries d USING picked p
                    WHERE d.event_id = p.id AND d.status IN ('succeeded', 'skipped')
                    RETURNING d.id
                 ), log AS (
                    DELETE FROM delivery_attempts a USING dl WHERE a.delivery_id = dl.id
                 ), ev AS (
                    DELETE FROM events e USING picked p
                    WHERE e.id = p.id
                      AND NOT EXISTS (SELECT 1 FROM deliveries d
                                      WHERE d.event_id = p.id AND d.id NOT IN (SELECT id FROM dl))
                    RETURNING 1
                 )
                 SELECT (SELECT count(*) FROM picked), (SELECT count(*) FROM ev)",
            )
            .bind(secs)
            .bind(PRUNE_BATCH)
            .bind(cutoff)
            .fetch_one(&self.pool)
            .await?;
            total += deleted as u64;
            if picked < PRUNE_BATCH {
                break;
            }
        }
        sqlx::query(&format!(
            "DELETE FROM idempotency_keys WHERE (tenant, key) IN (
                SELECT tenant, key FROM idempotency_keys WHERE created_at < now() - interval '{IDEMPOTENCY_TTL_HOURS} hours'
                LIMIT 10000)"
        ))
        .execute(&self.pool)
        .await?;
        Ok(total)
    }

    /// Disables endpoints that have failed continuously for longer than `window`
    /// (no success since `failing_since`); their pending deliveries are dead-lettered.
    pub async fn disable_failing_endpoints(&self, window: Duration) -> Result<Vec<uuid::Uuid>> {
        let ids: Vec<(uuid::Uuid,)> = sqlx::query_as(
            "SELECT id FROM endpoints WHERE status = 'active' AND deleted_at IS NULL
               AND failing_since < now() - $1 * interval '1 second'",
        )
        .bind(window.as_secs() as f64)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for (id,) in ids {
            let reason = format!(
                "failing continuously for more than {}",
                humantime::format_duration(window)
            );
            self.disable_endpoint(id, &reason).await?;
            out.push(id);
        }
        Ok(out)
    }
}
