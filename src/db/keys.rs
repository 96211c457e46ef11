//! API keys: random, shown once, stored only as SHA-256 hashes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::Store;
use crate::error::{Error, Result};

/// Prefix of every API key, so leaked keys are recognisable by secret scanners.
pub const KEY_PREFIX: &str = "hk_";

/// The unique constraint on `api_keys.key_hash` (Postgres' default name).
const KEY_HASH_UNIQUE: &str = "api_keys_key_hash_key";

/// SHA-256 of a presented key.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A fresh random key (`hk_` + 32 random bytes, base64url).
pub fn generate_key() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(b))
}

/// Checks a tenant name: a DNS label (it doubles as a Kubernetes namespace).
pub fn validate_tenant(t: &str) -> Result<()> {
    let ok = !t.is_empty()
        && t.len() <= 63
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !t.starts_with('-')
        && !t.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "invalid-tenant",
            "a tenant is 1-63 lowercase letters, digits or '-', not starting or ending with '-'",
        ))
    }
}

/// Characters of a generated key kept to tell it apart in `hookit keys list`
/// (`hk_` and 8 of its 43 random characters: 48 of 256 bits).
const PREFIX_LEN: usize = KEY_PREFIX.len() + 8;

/// How stale `last_used_at` may get: it is written at most this often per key.
const LAST_USED_GRANULARITY_SECS: i64 = 60;

/// An API key as `hookit keys list` shows it: never the key, nor its hash.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyInfo {
    /// Key id (what `hookit keys revoke` takes).
    pub id: Uuid,
    /// The first characters of a generated key; None for Secret-granted ones.
    pub key_prefix: Option<String>,
    /// Tenant it authenticates.
    pub tenant: String,
    /// Label given at creation.
    pub name: Option<String>,
    /// `namespace/name` of the granting Kubernetes Secret.
    pub k8s_secret: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last accepted, to the minute (None: never).
    pub last_used_at: Option<DateTime<Utc>>,
    /// From then on refused.
    pub expires_at: Option<DateTime<Utc>>,
    /// Refused since.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Creates a key for `tenant` and returns it; only its hash is stored.
    pub async fn create_api_key(&self, tenant: &str, name: Option<&str>) -> Result<String> {
        Ok(self.create_api_key_expiring(tenant, name, None).await?.1)
    }

    /// Creates a key that is refused from `expires_at` on; returns its id and the key.
    pub async fn create_api_key_expiring(
        &self,
        tenant: &str,
        name: Option<&str>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<(Uuid, String)> {
        validate_tenant(tenant)?;
        let key = generate_key();
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO api_keys (id, tenant, key_hash, name, expires_at, key_prefix) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(tenant)
        .bind(&hash_key(&key)[..])
        .bind(name)
        .bind(expires_at)
        .bind(&key[..PREFIX_LEN])
        .execute(&self.pool)
        .await?;
        Ok((id, key))
    }

    /// The tenant a presented key belongs to, if it is valid: not revoked and not
    /// expired. The lookup is by hash, so the key itself never reaches the
    /// database. Callers cache the answer (see `api::extract`), so this runs at
    /// most once per key per cache period, and `last_used_at` is written at most
    /// once a minute per key, after the answer and off the request's path.
    pub async fn tenant_for_key(&self, key: &str) -> Result<Option<String>> {
        let hash = hash_key(key);
        let row: Option<(Uuid, String, Vec<u8>, bool)> = sqlx::query_as(
            "SELECT id, tenant, key_hash,
                    last_used_at IS NULL OR last_used_at < now() - $2 * interval '1 second'
             FROM api_keys
             WHERE key_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
        )
        .bind(&hash[..])
        .bind(LAST_USED_GRANULARITY_SECS as f64)
        .fetch_optional(&self.pool)
        .await?;
        // The index lookup already matched; compare again in constant time so no
        // code path compares key material with an early-exit comparison.
        let Some((id, tenant, stored, stale)) = row else {
            return Ok(None);
        };
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&stored[..], &hash[..])) {
            return Ok(None);
        }
        if stale {
            let pool = self.pool.clone();
            tokio::spawn(async move {
                // Best effort: a lost write only makes `last used` a minute older.
                let _ = sqlx::query("UPDATE api_keys SET last_used_at = now() WHERE id = $1")
                    .bind(id)
                    .execute(&pool)
                    .await;
            });
        }
        Ok(Some(tenant))
    }

    /// Every key, or a tenant's, newest first.
    pub async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<KeyInfo>> {
        Ok(sqlx::query_as::<_, KeyInfo>(
            "SELECT id, key_prefix, tenant, name, k8s_secret, created_at, last_used_at, expires_at, revoked_at
             FROM api_keys WHERE $1::text IS NULL OR tenant = $1 ORDER BY created_at DESC, id DESC",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Revokes key `id`. A key granted by a Kubernetes Secret is refused: the
    /// controller would grant it again, so deleting the Secret (or its label)
    /// is the way. Revoking a revoked key changes nothing.
    pub async fn revoke_api_key(&self, id: Uuid) -> Result<KeyInfo> {
        let key = sqlx::query_as::<_, KeyInfo>(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
             WHERE id = $1 AND k8s_secret IS NULL
             RETURNING id, key_prefix, tenant, name, k8s_secret, created_at, last_used_at, expires_at, revoked_at",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(k) = key {
            return Ok(k);
        }
        let secret: Option<Option<String>> =
            sqlx::query_scalar("SELECT k8s_secret FROM api_keys WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        match secret {
            Some(Some(s)) => Err(Error::conflict(
                "managed-by-kubernetes",
                format!("this key is granted by Kubernetes Secret {s}; delete the Secret, or remove its hookit.dev/api-key label, to revoke it"),
            )),
            _ => Err(Error::NotFound("API key")),
        }
    }

    /// Grants `key` to `tenant` on behalf of a Kubernetes Secret (`namespace/name`).
    /// Replaces any key the same Secret granted before.
    pub async fn upsert_k8s_api_key(
        &self,
        secret_ref: &str,
        tenant: &str,
        key: &str,
    ) -> Result<()> {
        validate_tenant(tenant)?;
        if key.len() < 16 {
            return Err(Error::invalid(
                "weak-api-key",
                "an API key must be at least 16 characters",
            ));
        }
        let hash = hash_key(key);
        let granted = sqlx::query(
            "INSERT INTO api_keys (id, tenant, key_hash, name, k8s_secret) VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (k8s_secret) DO UPDATE SET key_hash = EXCLUDED.key_hash, tenant = EXCLUDED.tenant, revoked_at = NULL",
        )
        .bind(Uuid::now_v7())
        .bind(tenant)
        .bind(&hash[..])
        .bind(secret_ref)
        .execute(&self.pool)
        .await;
        match granted {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(d)) if d.constraint() == Some(KEY_HASH_UNIQUE) => {
                Err(self.duplicate_key(tenant, &hash).await)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Why a Secret's key value cannot be granted: another grant holds it. A key
    /// authenticates exactly one tenant, so the first grant stands. The other
    /// holder is named only within the same tenant: naming another namespace's
    /// Secret would tell this one's owner more than the key already does.
    async fn duplicate_key(&self, tenant: &str, hash: &[u8; 32]) -> Error {
        let holder: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT tenant, k8s_secret FROM api_keys WHERE key_hash = $1")
                .bind(&hash[..])
                .fetch_optional(&self.pool)
                .await
                .ok()
                .flatten();
        let detail = match holder {
            Some((t, Some(secret))) if t == tenant => format!(
                "the same key value is already granted by Secret {secret}; give this Secret a value of its own, or delete it"
            ),
            Some((t, None)) if t == tenant => "the same key value is already an API key of this tenant (made with `hookit keys create`); give this Secret a value of its own".to_string(),
            _ => "the same key value is already an API key of another tenant (a key authenticates exactly one tenant; was the Secret copied from another namespace?); give this Secret a value of its own".to_string(),
        };
        Error::conflict("duplicate-api-key", detail)
    }

    /// Revokes the key a Kubernetes Secret granted (the Secret was deleted).
    pub async fn revoke_k8s_api_key(&self, secret_ref: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM api_keys WHERE k8s_secret = $1")
            .bind(secret_ref)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }
}
