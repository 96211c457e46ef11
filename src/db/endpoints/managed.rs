//! The rows of Kubernetes-managed endpoints, keyed by the resource's UID: the
//! controller's upsert (with secret rotation when the Secret changed) and its
//! finalizer's retire.

use uuid::Uuid;

use super::{Endpoint, EndpointSpec};
use crate::db::Store;
use crate::domain::ids::EndpointId;
use crate::domain::signing::Secret;
use crate::domain::transform::code_sha;
use crate::error::Result;

/// What the controller writes for a `WebhookEndpoint`.
#[derive(Debug, Clone)]
pub struct ManagedEndpoint {
    /// The resource's UID (stable across renames of nothing; the key of the row).
    pub uid: String,
    /// `namespace/name` of the resource.
    pub name: String,
    /// The tenant (= namespace).
    pub tenant: String,
    /// The settings.
    pub spec: EndpointSpec,
    /// Whether `spec.paused` is set.
    pub paused: bool,
    /// The signing secret from the Secret (plaintext `whsec_…`).
    pub secret: Secret,
}

impl Store {
    /// Creates or updates the row of a Kubernetes-managed endpoint (keyed by UID),
    /// rotating the secret when the Secret's content changed. Returns the endpoint.
    pub async fn upsert_managed_endpoint(&self, m: &ManagedEndpoint) -> Result<Endpoint> {
        let existing: Option<(Uuid,)> =
            sqlx::query_as("SELECT id FROM endpoints WHERE k8s_uid = $1")
                .bind(&m.uid)
                .fetch_optional(&self.pool)
                .await?;
        let spec = &m.spec;
        let id = match existing {
            Some((id,)) => {
                sqlx::query(
                    "UPDATE endpoints SET url = $2, event_types = $3, description = $4, max_attempts = $5,
                        retry_base_ms = $6, retry_cap_ms = $7, timeout_ms = $8, headers = $9, rate_limit = $10,
                        max_in_flight = $11, k8s_name = $12, format = $13::endpoint_format, transformation = $14,
                        transformation_sha = $15, batch_size = $16, deleted_at = NULL, updated_at = now()
                     WHERE id = $1",
                )
                .bind(id)
                .bind(&spec.url)
                .bind(spec.event_types.clone().unwrap_or_else(|| vec!["*".into()]))
                .bind(spec.description.clone().unwrap_or_default())
                .bind(spec.max_attempts)
                .bind(spec.retry_base_ms)
                .bind(spec.retry_cap_ms)
                .bind(spec.timeout_ms)
                .bind(sqlx::types::Json(spec.headers.clone().unwrap_or_default()))
                .bind(spec.rate_limit)
                .bind(spec.max_in_flight)
                .bind(&m.name)
                .bind(spec.format()?.as_str())
                .bind(&spec.transformation)
                .bind(spec.transformation.as_deref().map(code_sha))
                .bind(spec.batch_size.unwrap_or(1))
                .execute(&self.pool)
                .await?;
                self.install_secret(id, &m.secret).await?;
                id
            }
            None => {
                let id = EndpointId::new().uuid();
                sqlx::query(
                    "INSERT INTO endpoints (id, tenant, url, description, event_types, secret_enc, headers, max_attempts,
                        retry_base_ms, retry_cap_ms, timeout_ms, rate_limit, max_in_flight, managed_by, k8s_uid, k8s_name,
                        format, transformation, transformation_sha, batch_size)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'kubernetes', $14, $15,
                        $16::endpoint_format, $17, $18, $19)
                     ON CONFLICT (k8s_uid) DO NOTHING",
                )
                .bind(id)
                .bind(&m.tenant)
                .bind(&spec.url)
                .bind(spec.description.clone().unwrap_or_default())
                .bind(spec.event_types.clone().unwrap_or_else(|| vec!["*".into()]))
                .bind(self.seal(id, &m.secret))
                .bind(sqlx::types::Json(spec.headers.clone().unwrap_or_default()))
                .bind(spec.max_attempts)
                .bind(spec.retry_base_ms)
                .bind(spec.retry_cap_ms)
                .bind(spec.timeout_ms)
                .bind(spec.rate_limit)
                .bind(spec.max_in_flight)
                .bind(&m.uid)
                .bind(&m.name)
                .bind(spec.format()?.as_str())
                .bind(&spec.transformation)
                .bind(spec.transformation.as_deref().map(code_sha))
                .bind(spec.batch_size.unwrap_or(1))
                .execute(&self.pool)
                .await?;
                // A concurrent reconcile may have won the insert; read back by UID.
                let (id,): (Uuid,) = sqlx::query_as("SELECT id FROM endpoints WHERE k8s_uid = $1")
                    .bind(&m.uid)
                    .fetch_one(&self.pool)
                    .await?;
                id
            }
        };
        self.set_ordering(id, spec.ordering()?).await?;
        self.apply_pause(id, m.paused).await?;
        self.get_endpoint(&m.tenant, EndpointId::from_uuid(id))
            .await
    }

    /// Removes a Kubernetes-managed endpoint from delivery (finalizer). Idempotent.
    pub async fn retire_managed_endpoint(&self, uid: &str) -> Result<()> {
        let row: Option<(Uuid,)> = sqlx::query_as("SELECT id FROM endpoints WHERE k8s_uid = $1")
            .bind(uid)
            .fetch_optional(&self.pool)
            .await?;
        if let Some((id,)) = row {
            self.retire_endpoint(id).await?;
        }
        Ok(())
    }
}
