//! Background upkeep: un-holding deliveries of resumed endpoints, retention, and
//! expiry of idempotency records. Everything works in small batches so it never
//! holds long locks or stalls delivery.

use std::time::Duration;

use super::Store;
use crate::domain::ids::v7_floor;
use crate::error::Result;

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_TTL_HOURS: i64 = 24;

/// Events deleted per statement by retention.
const PRUNE_BATCH: i64 = 1000;
/// Idempotency records deleted per statement.
const KEY_PRUNE_BATCH: i64 = 10_000;
/// Longest one `prune` call keeps going before leaving the rest to the next
/// (it runs once a minute). A batch of 1,000 events, each with a delivery and
/// an attempt, took 110-190 ms on the 2-core development machine, so this is
/// room for roughly 160,000-270,000 events a minute. The fixed 50 batches it
/// replaced fell behind any sustained rate above 833 events/s.
const PRUNE_BUDGET: Duration = Duration::from_secs(30);

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

    /// Deletes, in small batches, expired idempotency records, then events
    /// older than `retention` whose deliveries all succeeded (with their
    /// deliveries and attempt logs). Events with a dead, pending or in-flight
    /// delivery are kept: dead letters stay until redriven or purged. Stops after
    /// `max_batches` statements of each kind or [`PRUNE_BUDGET`], whichever
    /// comes first; the rest waits for the next call. Returns events deleted.
    ///
    /// An idempotency record must never outlive its event: a retry of its key
    /// would find the record, insert nothing, and have no event to replay. There
    /// is no foreign key to enforce it (its cascade scanned the whole key table
    /// for every event deleted; 0014 dropped it), so it is kept by order:
    ///   * a record carries its event's `created_at`, and lives
    ///     `min(24 h, retention)`, never longer than the event;
    ///   * both cutoffs come from one clock reading, so the records' cutoff is
    ///     never earlier than the events';
    ///   * records go first, and events only once every expired record is gone.
    pub async fn prune(&self, retention: Duration, max_batches: u32) -> Result<u64> {
        let began = std::time::Instant::now();
        let now = chrono::Utc::now();
        let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        let events_before = now
            .checked_sub_signed(retention)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        let keys_before = now
            .checked_sub_signed(retention.min(chrono::Duration::hours(IDEMPOTENCY_TTL_HOURS)))
            .unwrap_or(events_before);

        let mut keys_done = false;
        for _ in 0..max_batches {
            let r = sqlx::query(
                "DELETE FROM idempotency_keys WHERE (tenant, key) IN (
                    SELECT tenant, key FROM idempotency_keys WHERE created_at < $1 LIMIT $2)",
            )
            .bind(keys_before)
            .bind(KEY_PRUNE_BATCH)
            .execute(&self.pool)
            .await?;
            if (r.rows_affected() as i64) < KEY_PRUNE_BATCH {
                keys_done = true;
                break;
            }
            if began.elapsed() > PRUNE_BUDGET {
                break;
            }
        }
        if !keys_done {
            return Ok(0);
        }

        // Old events are found on the primary key: an event id is a UUIDv7
        // drawn when the event was accepted, so ids below the cutoff's smallest
        // UUIDv7 are the old ones, oldest first (0014 dropped the index on
        // `created_at`). `created_at` is still checked, so an id that is not
        // such a UUID can delay its event's pruning but never prune a young event.
        let below = v7_floor(events_before.timestamp_millis().max(0) as u64);
        let mut total = 0;
        for _ in 0..max_batches {
            // Locking: the picked events are row-locked (SKIP LOCKED, so two
            // pruners take disjoint batches). Their deliveries are deleted only if
            // still `succeeded` when the DELETE gets their row lock: a redrive
            // that raced this statement has made one pending, and that delivery
            // stays. Its event stays too, because an event goes only when every
            // delivery it had in this statement's snapshot was deleted here.
            // Attempt logs go with their deliveries (there is no cascade).
            let (picked, deleted): (i64, i64) = sqlx::query_as(
                "WITH picked AS (
                    SELECT ev.id FROM events ev
                    WHERE ev.id < $3 AND ev.created_at < $1
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
            .bind(events_before)
            .bind(PRUNE_BATCH)
            .bind(below)
            .fetch_one(&self.pool)
            .await?;
            total += deleted as u64;
            if picked < PRUNE_BATCH || began.elapsed() > PRUNE_BUDGET {
                break;
            }
        }
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
