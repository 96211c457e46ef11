//! API keys: random, shown once, stored only as SHA-256 hashes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::Store;
use crate::error::{Error, Result};

/// Prefix of every API key, so leaked keys are recognisable by secret scanners.
pub const KEY_PREFIX: &str = "hk_";

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

impl Store {
    /// Creates a key for `tenant` and returns it; only its hash is stored.
    pub async fn create_api_key(&self, tenant: &str, name: Option<&str>) -> Result<String> {
        validate_tenant(tenant)?;
        let key = generate_key();
        sqlx::query("INSERT INTO api_keys (id, tenant, key_hash, name) VALUES ($1, $2, $3, $4)")
            .bind(Uuid::now_v7())
            .bind(tenant)
            .bind(&hash_key(&key)[..])
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(key)
    }

    /// The tenant a presented key belongs to, if it is valid and not revoked.
    /// The lookup is by hash, so the key itself never reaches the database.
    pub async fn tenant_for_key(&self, key: &str) -> Result<Option<String>> {
        let hash = hash_key(key);
        let row: Option<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT tenant, key_hash FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(&hash[..])
        .fetch_optional(&self.pool)
        .await?;
        // The index lookup already matched; compare again in constant time so no
        // code path compares key material with an early-exit comparison.
        Ok(row.and_then(|(tenant, stored)| {
            bool::from(subtle::ConstantTimeEq::ct_eq(&stored[..], &hash[..])).then_some(tenant)
        }))
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
        sqlx::query(
            "INSERT INTO api_keys (id, tenant, key_hash, name, k8s_secret) VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (k8s_secret) DO UPDATE SET key_hash = EXCLUDED.key_hash, tenant = EXCLUDED.tenant, revoked_at = NULL",
        )
        .bind(Uuid::now_v7())
        .bind(tenant)
        .bind(&hash_key(key)[..])
        .bind(secret_ref)
        .execute(&self.pool)
        .await?;
        Ok(())
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
