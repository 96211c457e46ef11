//! The API's queries over deliveries: listing, detail, redrive and purge of dead
//! letters.

use crate::db::Store;
use crate::error::{Error, Result};

use super::{
    parse_cursor, Attempt, Delivery, DeliveryDetail, DeliveryFilter, DeliveryRow, RedriveFilter,
    COLUMNS, STATUSES,
};
use crate::domain::ids::{DeliveryId, EventId};

impl Store {
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
        .bind(crate::db::page_limit(f.limit))
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
            "SELECT attempt, started_at, duration_ms, status_code, error, response_body, rate_limited, sent
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
            "UPDATE deliveries d SET status = 'pending', round_base = d.attempts, rate_limited = 0, finished_at = NULL, batch_id = NULL,
                next_attempt_at = CASE WHEN e.status = 'active' THEN now() END, updated_at = now()
             FROM endpoints e
             WHERE d.id = $1 AND d.tenant = $2 AND d.status IN ('dead', 'succeeded', 'skipped')
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
                    UPDATE deliveries d SET status = 'pending', round_base = d.attempts, rate_limited = 0, finished_at = NULL, batch_id = NULL,
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
