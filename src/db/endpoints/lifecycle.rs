//! Creating, changing, pausing, deleting and disabling endpoints. Deliveries
//! are never dropped on the way: deleting or disabling dead-letters the pending
//! ones with the reason, pausing holds them without spending attempts.

use uuid::Uuid;

use super::{Endpoint, EndpointPatch, EndpointRow, EndpointSpec, COLUMNS};
use crate::db::Store;
use crate::domain::ids::EndpointId;
use crate::domain::signing::Secret;
use crate::domain::ssrf::SsrfPolicy;
use crate::domain::transform::code_sha;
use crate::error::{Error, Result};

impl Store {
    /// Creates an endpoint for `tenant` (REST). The URL must already have passed
    /// [`check_target`].
    pub async fn create_endpoint(
        &self,
        tenant: &str,
        spec: &EndpointSpec,
        max_per_tenant: i64,
    ) -> Result<Endpoint> {
        let secret = match &spec.secret {
            Some(s) => {
                Secret::parse(s).map_err(|e| Error::invalid("invalid-secret", e.to_string()))?
            }
            None => Secret::generate(),
        };
        let id = EndpointId::new().uuid();
        let mut tx = self.pool.begin().await?;
        // Serialise creations per tenant so the per-tenant cap cannot be overshot
        // by concurrent requests.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('endpoints:' || $1))")
            .bind(tenant)
            .execute(&mut *tx)
            .await?;
        let (count,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM endpoints WHERE tenant = $1 AND deleted_at IS NULL",
        )
        .bind(tenant)
        .fetch_one(&mut *tx)
        .await?;
        if count >= max_per_tenant {
            return Err(Error::conflict(
                "too-many-endpoints",
                format!("a tenant may have at most {max_per_tenant} endpoints"),
            ));
        }
        let row: EndpointRow = sqlx::query_as(&format!(
            "INSERT INTO endpoints (id, tenant, url, description, event_types, secret_enc, headers, max_attempts,
                retry_base_ms, retry_cap_ms, timeout_ms, rate_limit, max_in_flight, format, transformation,
                transformation_sha, ordering, batch_size)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::endpoint_format, $15, $16,
                $17::endpoint_ordering, $18)
             RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(tenant)
        .bind(&spec.url)
        .bind(spec.description.clone().unwrap_or_default())
        .bind(spec.event_types.clone().unwrap_or_else(|| vec!["*".into()]))
        .bind(self.seal(id, &secret))
        .bind(sqlx::types::Json(spec.headers.clone().unwrap_or_default()))
        .bind(spec.max_attempts)
        .bind(spec.retry_base_ms)
        .bind(spec.retry_cap_ms)
        .bind(spec.timeout_ms)
        .bind(spec.rate_limit)
        .bind(spec.max_in_flight)
        .bind(spec.format()?.as_str())
        .bind(&spec.transformation)
        .bind(spec.transformation.as_deref().map(code_sha))
        .bind(spec.ordering()?)
        .bind(spec.batch_size.unwrap_or(1))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.into())
    }

    /// Applies a partial update (REST). A new URL must already have passed [`check_target`].
    pub async fn update_endpoint(
        &self,
        tenant: &str,
        id: EndpointId,
        p: &EndpointPatch,
        ssrf: &SsrfPolicy,
    ) -> Result<Endpoint> {
        p.validate(ssrf)?;
        self.ensure_rest_managed(tenant, id).await?;
        if p.touches_batching() {
            // Not atomic with the update below: a concurrent PATCH may still
            // combine into a pair this refuses. The worker checks the rule
            // again on every claim and sends one event per request then.
            p.check_batching_on(&self.get_endpoint(tenant, id).await?)?;
        }
        if let Some(ordering) = super::spec::parse_ordering(p.ordering.as_deref())? {
            // Before the other fields, so the row returned below shows it.
            self.set_ordering(id.uuid(), ordering).await?;
        }
        let row: Option<EndpointRow> = sqlx::query_as(&format!(
            "UPDATE endpoints SET url = coalesce($3, url), event_types = coalesce($4, event_types),
                description = coalesce($5, description), max_attempts = coalesce($6, max_attempts),
                retry_base_ms = coalesce($7, retry_base_ms), retry_cap_ms = coalesce($8, retry_cap_ms),
                timeout_ms = coalesce($9, timeout_ms), headers = coalesce($10, headers),
                rate_limit = coalesce($11, rate_limit), max_in_flight = coalesce($12, max_in_flight),
                format = coalesce($13::endpoint_format, format),
                transformation = CASE WHEN $14 THEN $15 ELSE transformation END,
                transformation_sha = CASE WHEN $14 THEN $16 ELSE transformation_sha END,
                batch_size = coalesce($17, batch_size), updated_at = now()
             WHERE id = $1 AND tenant = $2 AND deleted_at IS NULL RETURNING {COLUMNS}"
        ))
        .bind(id.uuid())
        .bind(tenant)
        .bind(&p.url)
        .bind(&p.event_types)
        .bind(&p.description)
        .bind(p.max_attempts)
        .bind(p.retry_base_ms)
        .bind(p.retry_cap_ms)
        .bind(p.timeout_ms)
        .bind(p.headers.clone().map(sqlx::types::Json))
        .bind(p.rate_limit)
        .bind(p.max_in_flight)
        .bind(super::spec::parse_format(p.format.as_deref())?.map(|f| f.as_str()))
        .bind(p.transformation.is_some())
        .bind(p.transformation.clone().flatten())
        .bind(p.transformation.as_ref().and_then(|t| t.as_deref()).map(code_sha))
        .bind(p.batch_size)
        .fetch_optional(&self.pool)
        .await?;
        row.map(Into::into).ok_or(Error::NotFound("endpoint"))
    }

    /// Deletes an endpoint (REST).
    pub async fn delete_endpoint(&self, tenant: &str, id: EndpointId) -> Result<()> {
        self.ensure_rest_managed(tenant, id).await?;
        self.retire_endpoint(id.uuid()).await
    }

    /// Takes an endpoint out of delivery: it disappears from the API, and its
    /// pending deliveries are dead-lettered ("endpoint deleted") rather than dropped,
    /// so they stay visible and countable.
    pub(super) async fn retire_endpoint(&self, id: Uuid) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE endpoints SET deleted_at = now(), updated_at = now() WHERE id = $1 AND deleted_at IS NULL")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE deliveries SET status = 'dead', next_attempt_at = NULL, finished_at = now(), updated_at = now(),
                last_error = 'endpoint deleted'
             WHERE endpoint_id = $1 AND status = 'pending'",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Pauses or resumes (REST). Pausing holds pending deliveries without spending
    /// attempts; resuming makes them due now.
    pub async fn set_paused(&self, tenant: &str, id: EndpointId, paused: bool) -> Result<Endpoint> {
        self.ensure_rest_managed(tenant, id).await?;
        self.apply_pause(id.uuid(), paused).await?;
        self.get_endpoint(tenant, id).await
    }

    pub(super) async fn apply_pause(&self, id: Uuid, paused: bool) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // Resuming also re-enables a disabled endpoint (after the receiver is fixed),
        // with a clean failure record and a closed circuit.
        let sql = if paused {
            "UPDATE endpoints SET status = 'paused', updated_at = now() WHERE id = $1 AND status = 'active' AND deleted_at IS NULL"
        } else {
            "UPDATE endpoints SET status = 'active', disabled_reason = NULL, consecutive_failures = 0, failing_since = NULL,
                circuit_open_until = NULL, updated_at = now()
             WHERE id = $1 AND status IN ('paused', 'disabled') AND deleted_at IS NULL"
        };
        let changed = sqlx::query(sql)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if changed > 0 {
            let sql = if paused {
                "UPDATE deliveries SET next_attempt_at = NULL, updated_at = now() WHERE endpoint_id = $1 AND status = 'pending'"
            } else {
                "UPDATE deliveries SET next_attempt_at = now(), updated_at = now()
                 WHERE endpoint_id = $1 AND status = 'pending' AND next_attempt_at IS NULL"
            };
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Disables an endpoint (410 Gone, or failing too long): its pending deliveries
    /// are dead-lettered with the reason, never dropped.
    pub async fn disable_endpoint(&self, id: Uuid, reason: &str) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE endpoints SET status = 'disabled', disabled_reason = $2, updated_at = now()
             WHERE id = $1 AND status <> 'disabled'",
        )
        .bind(id)
        .bind(reason)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let dead = sqlx::query(
            "UPDATE deliveries SET status = 'dead', next_attempt_at = NULL, finished_at = now(), updated_at = now(),
                last_error = 'endpoint disabled: ' || $2
             WHERE endpoint_id = $1 AND status = 'pending'",
        )
        .bind(id)
        .bind(reason)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(if changed > 0 { dead } else { 0 })
    }
}
