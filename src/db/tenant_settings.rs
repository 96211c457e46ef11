//! Per-tenant settings: one row per tenant that changed one, defaults otherwise.
//! Today the only setting is `strict_event_types`; the row also carries the
//! catalog version (see `db::event_types`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::Store;
use crate::error::Result;

/// A tenant's settings as the API shows them.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TenantSettings {
    /// Refuse events whose type is not in the catalog (422 `unknown-event-type`).
    /// Off by default: types without a catalog entry are accepted.
    pub strict_event_types: bool,
    /// Last change of the settings or the catalog; null if never changed.
    pub updated_at: Option<DateTime<Utc>>,
}

impl Store {
    /// The tenant's settings (defaults when it never set any).
    pub async fn tenant_settings(&self, tenant: &str) -> Result<TenantSettings> {
        let row: Option<(bool, DateTime<Utc>)> = sqlx::query_as(
            "SELECT strict_event_types, updated_at FROM tenant_settings WHERE tenant = $1",
        )
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some((strict, at)) => TenantSettings {
                strict_event_types: strict,
                updated_at: Some(at),
            },
            None => TenantSettings {
                strict_event_types: false,
                updated_at: None,
            },
        })
    }

    /// Changes the settings that are given; returns them all.
    pub async fn set_tenant_settings(
        &self,
        tenant: &str,
        strict_event_types: Option<bool>,
    ) -> Result<TenantSettings> {
        let (strict, at): (bool, DateTime<Utc>) = sqlx::query_as(
            "INSERT INTO tenant_settings (tenant, strict_event_types) VALUES ($1, coalesce($2, false))
             ON CONFLICT (tenant) DO UPDATE
               SET strict_event_types = coalesce($2, tenant_settings.strict_event_types),
                   updated_at = now()
             RETURNING strict_event_types, updated_at",
        )
        .bind(tenant)
        .bind(strict_event_types)
        .fetch_one(&self.pool)
        .await?;
        Ok(TenantSettings {
            strict_event_types: strict,
            updated_at: Some(at),
        })
    }
}
