//! `hookit keys`: create, list and revoke API keys, against `DATABASE_URL`, else
//! the running standalone's embedded cluster, else a briefly started one.

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use uuid::Uuid;

use crate::config::Config;
use crate::db::keys::KeyInfo;
use crate::db::{self, Store};
use crate::domain::crypto::MasterKey;
use crate::embedded_pg::{self, EmbeddedPg};

/// Runs `f` with a store on the configured database.
async fn with_store<T, F, Fut>(cfg: &Config, f: F) -> anyhow::Result<T>
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = crate::error::Result<T>>,
{
    use sqlx::Connection;
    // Keys are hashed, not encrypted: the master key is not used here.
    let key = match &cfg.master_key {
        Some(k) => k.clone(),
        None => MasterKey::from_base64(&MasterKey::generate_base64())?,
    };
    if let Some(url) = &cfg.database_url {
        let pool = db::connect(url, 2).await?;
        return Ok(f(Store::new(pool, key)).await?);
    }
    let dir = cfg
        .data_dir
        .clone()
        .unwrap_or_else(embedded_pg::default_data_dir);
    if let Ok(url) = std::fs::read_to_string(dir.join("database.url")) {
        if sqlx::PgConnection::connect(url.trim()).await.is_ok() {
            let pool = db::connect(url.trim(), 2).await?;
            return Ok(f(Store::new(pool, key)).await?);
        }
    }
    let pg = EmbeddedPg::start(&dir).await?;
    let pool = db::connect(&pg.url("postgres"), 2).await?;
    db::migrate(&pool).await?;
    let result = f(Store::new(pool.clone(), key)).await;
    pool.close().await;
    pg.stop().await?;
    Ok(result?)
}

/// `hookit keys create`: returns (id, key, expiry).
pub async fn create(
    cfg: &Config,
    tenant: &str,
    name: Option<&str>,
    expires_in: Option<Duration>,
) -> anyhow::Result<(Uuid, String, Option<chrono::DateTime<Utc>>)> {
    let expires_at = expires_in
        .map(|d| chrono::Duration::from_std(d).map(|d| Utc::now() + d))
        .transpose()
        .context("--expires-in is too long")?;
    let (id, key) = with_store(cfg, |s| async move {
        s.create_api_key_expiring(tenant, name, expires_at).await
    })
    .await?;
    Ok((id, key, expires_at))
}

/// `hookit keys list`.
pub async fn list(cfg: &Config, tenant: Option<&str>) -> anyhow::Result<Vec<KeyInfo>> {
    with_store(cfg, |s| async move { s.list_api_keys(tenant).await }).await
}

/// `hookit keys revoke`.
pub async fn revoke(cfg: &Config, id: Uuid) -> anyhow::Result<KeyInfo> {
    with_store(cfg, |s| async move { s.revoke_api_key(id).await }).await
}

/// The state a listed key is in.
pub fn state(k: &KeyInfo) -> &'static str {
    let now = Utc::now();
    if k.revoked_at.is_some() {
        "revoked"
    } else if k.expires_at.is_some_and(|e| e <= now) {
        "expired"
    } else {
        "active"
    }
}

/// `hookit keys list` as a table (one line per key; never the key).
pub fn table(keys: &[KeyInfo]) -> String {
    let when = |t: Option<chrono::DateTime<Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_else(|| "-".into())
    };
    let mut rows = vec![[
        "ID".to_string(),
        "PREFIX".into(),
        "TENANT".into(),
        "STATE".into(),
        "CREATED".into(),
        "LAST USED".into(),
        "EXPIRES".into(),
        "NAME / SOURCE".into(),
    ]];
    for k in keys {
        rows.push([
            k.id.to_string(),
            k.key_prefix
                .clone()
                .map(|p| format!("{p}…"))
                .unwrap_or_else(|| "-".into()),
            k.tenant.clone(),
            state(k).into(),
            when(Some(k.created_at)),
            when(k.last_used_at),
            when(k.expires_at),
            match (&k.name, &k.k8s_secret) {
                (_, Some(s)) => format!("Secret {s}"),
                (Some(n), None) => n.clone(),
                (None, None) => "-".into(),
            },
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}", w = *w))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
