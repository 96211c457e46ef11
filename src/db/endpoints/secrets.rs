//! Signing secrets: sealed at rest with the master key (AAD = endpoint id),
//! revealed and rotated through the API, decrypted for the worker to sign with.

use uuid::Uuid;

use super::ROTATION_OVERLAP_HOURS;
use crate::db::Store;
use crate::domain::ids::EndpointId;
use crate::domain::signing::Secret;
use crate::error::{Error, Result};

impl Store {
    pub(super) fn seal(&self, id: Uuid, secret: &Secret) -> Vec<u8> {
        self.key.encrypt(secret.as_bytes(), id.as_bytes())
    }

    pub(super) fn open(&self, id: Uuid, blob: &[u8]) -> Result<Secret> {
        Ok(Secret::from_bytes(self.key.decrypt(blob, id.as_bytes())?))
    }

    /// The current signing secret (REST reveal).
    pub async fn get_endpoint_secret(&self, tenant: &str, id: EndpointId) -> Result<Secret> {
        let row: Option<(Vec<u8>,)> = sqlx::query_as(
            "SELECT secret_enc FROM endpoints WHERE id = $1 AND tenant = $2 AND deleted_at IS NULL",
        )
        .bind(id.uuid())
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        let (blob,) = row.ok_or(Error::NotFound("endpoint"))?;
        self.open(id.uuid(), &blob)
    }

    /// Rotates the secret (REST): a new one signs from now on, and the old one keeps
    /// signing alongside for [`ROTATION_OVERLAP_HOURS`].
    pub async fn rotate_endpoint_secret(&self, tenant: &str, id: EndpointId) -> Result<Secret> {
        self.ensure_rest_managed(tenant, id).await?;
        let secret = Secret::generate();
        self.install_secret(id.uuid(), &secret).await?;
        Ok(secret)
    }

    /// Makes `secret` the signing secret; the previous one overlaps. A no-op when it
    /// is already the current secret.
    pub(in crate::db) async fn install_secret(&self, id: Uuid, secret: &Secret) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let (current,): (Vec<u8>,) =
            sqlx::query_as("SELECT secret_enc FROM endpoints WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
        if &self.open(id, &current)? == secret {
            return Ok(false);
        }
        sqlx::query(&format!(
            "UPDATE endpoints SET prev_secret_enc = secret_enc, prev_secret_expires_at = now() + interval '{ROTATION_OVERLAP_HOURS} hours',
                secret_enc = $2, updated_at = now() WHERE id = $1"
        ))
        .bind(id)
        .bind(self.seal(id, secret))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Decrypts the secrets a worker signs with: the current one, and the previous
    /// one while its overlap lasts.
    pub fn signing_secrets(
        &self,
        id: Uuid,
        current: &[u8],
        previous: Option<&[u8]>,
    ) -> Result<Vec<Secret>> {
        let mut out = vec![self.open(id, current)?];
        if let Some(p) = previous {
            out.push(self.open(id, p)?);
        }
        Ok(out)
    }
}
