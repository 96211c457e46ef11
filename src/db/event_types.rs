//! The event-type catalog: a tenant's types with their description, JSON Schema
//! and example, and the reads the publish path's validator cache makes.
//!
//! Versioning: every write to a tenant's catalog first bumps
//! `tenant_settings.catalog_version` (an upsert, so the row exists) and stamps the
//! written type with the new number, in one transaction. The bump takes the
//! settings row's lock until commit, so catalog writes of a tenant commit in
//! version order: a reader that has seen version V has seen every type written at
//! V or before, and `catalog_changes(since = V)` is exactly what it missed.
//! Types are never deleted (deprecated instead), so changes are only upserts.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use sqlx::FromRow;
use utoipa::ToSchema;

use super::Store;
use crate::error::{Error, Result};

/// Most event types in one tenant's catalog.
pub const MAX_EVENT_TYPES_PER_TENANT: i64 = 1000;

/// An event type as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventType {
    /// Dot-separated name, as events carry it in `event_type`.
    #[schema(example = "order.created")]
    pub name: String,
    /// What the event means and when it is sent.
    pub description: String,
    /// JSON Schema (draft 2020-12) of the payload, as it was given; null when
    /// payloads of this type are not checked.
    #[schema(value_type = Option<Value>)]
    pub schema: Option<Box<RawValue>>,
    /// An example payload (valid against the schema).
    #[schema(value_type = Option<Object>)]
    pub example: Option<Box<RawValue>>,
    /// Whether the type is deprecated: still accepted, flagged to publishers.
    pub deprecated: bool,
    /// When it was deprecated.
    pub deprecated_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Catalog version of the last change (compare-and-set for updates).
    #[serde(skip)]
    pub version: i64,
}

/// The settings of a type as written by create and update, already checked by
/// the API layer (name rules, schema compiles, example matches).
#[derive(Debug)]
pub struct EventTypeFields<'a> {
    /// Free text.
    pub description: &'a str,
    /// JSON text of the schema.
    pub schema: Option<&'a str>,
    /// JSON text of the example.
    pub example: Option<&'a str>,
    /// Deprecated (true), restored (false), or left as it is (None).
    pub deprecated: Option<bool>,
}

/// A catalog row as the validator cache needs it.
#[derive(Debug, FromRow)]
pub struct CatalogRow {
    /// The type's name.
    pub name: String,
    /// Catalog version of its last change.
    pub version: i64,
    /// JSON text of its schema.
    pub schema: Option<String>,
    /// When it was deprecated, if it is.
    pub deprecated_at: Option<DateTime<Utc>>,
}

/// Whether the tenant refuses unknown types, and its catalog's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CatalogHead {
    /// `strict_event_types`.
    pub strict: bool,
    /// `catalog_version` (0 for a tenant that never wrote one).
    pub version: i64,
}

#[derive(FromRow)]
struct EventTypeRow {
    name: String,
    description: String,
    schema: Option<String>,
    example: Option<String>,
    deprecated_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
}

const COLUMNS: &str =
    "name, description, schema, example, deprecated_at, created_at, updated_at, version";

/// Stored JSON text back to raw JSON (it was checked on the way in).
fn raw(text: Option<String>) -> Result<Option<Box<RawValue>>> {
    text.map(|t| RawValue::from_string(t).map_err(|e| Error::Db(sqlx::Error::Decode(Box::new(e)))))
        .transpose()
}

impl TryFrom<EventTypeRow> for EventType {
    type Error = Error;
    fn try_from(r: EventTypeRow) -> Result<Self> {
        Ok(EventType {
            name: r.name,
            description: r.description,
            schema: raw(r.schema)?,
            example: raw(r.example)?,
            deprecated: r.deprecated_at.is_some(),
            deprecated_at: r.deprecated_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
            version: r.version,
        })
    }
}

/// Takes the next catalog version of `tenant` inside `tx` (see the module doc).
async fn bump(tx: &mut sqlx::PgConnection, tenant: &str) -> Result<i64> {
    let (v,): (i64,) = sqlx::query_as(
        "INSERT INTO tenant_settings (tenant, catalog_version) VALUES ($1, 1)
         ON CONFLICT (tenant) DO UPDATE
           SET catalog_version = tenant_settings.catalog_version + 1, updated_at = now()
         RETURNING catalog_version",
    )
    .bind(tenant)
    .fetch_one(&mut *tx)
    .await?;
    Ok(v)
}

impl Store {
    /// Adds a type to the tenant's catalog; 409 if the name is taken.
    pub async fn create_event_type(
        &self,
        tenant: &str,
        name: &str,
        f: &EventTypeFields<'_>,
    ) -> Result<EventType> {
        let mut tx = self.pool.begin().await?;
        // Also serialises this tenant's catalog writes, so the cap holds.
        let version = bump(&mut tx, tenant).await?;
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM event_types WHERE tenant = $1")
            .bind(tenant)
            .fetch_one(&mut *tx)
            .await?;
        if count >= MAX_EVENT_TYPES_PER_TENANT {
            return Err(Error::conflict(
                "too-many-event-types",
                format!(
                    "a tenant's catalog holds at most {MAX_EVENT_TYPES_PER_TENANT} event types"
                ),
            ));
        }
        let row: Option<EventTypeRow> = sqlx::query_as(&format!(
            "INSERT INTO event_types (tenant, name, description, schema, example, version, deprecated_at)
             VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $7 THEN now() END)
             ON CONFLICT (tenant, name) DO NOTHING RETURNING {COLUMNS}"
        ))
        .bind(tenant)
        .bind(name)
        .bind(f.description)
        .bind(f.schema)
        .bind(f.example)
        .bind(version)
        .bind(f.deprecated.unwrap_or(false))
        .fetch_optional(&mut *tx)
        .await?;
        let row = row.ok_or_else(|| {
            Error::conflict(
                "event-type-exists",
                format!("the event type `{name}` already exists; change it with PATCH"),
            )
        })?;
        tx.commit().await?;
        row.try_into()
    }

    /// Replaces a type's fields if it is still at `expected_version` (the one
    /// the caller validated against); 409 if it changed meanwhile.
    pub async fn update_event_type(
        &self,
        tenant: &str,
        name: &str,
        expected_version: i64,
        f: &EventTypeFields<'_>,
    ) -> Result<EventType> {
        let mut tx = self.pool.begin().await?;
        let version = bump(&mut tx, tenant).await?;
        let row: Option<EventTypeRow> = sqlx::query_as(&format!(
            "UPDATE event_types SET description = $4, schema = $5, example = $6, version = $7,
                deprecated_at = CASE WHEN $8::boolean IS NULL THEN deprecated_at
                                     WHEN $8 THEN coalesce(deprecated_at, now()) END,
                updated_at = now()
             WHERE tenant = $1 AND name = $2 AND version = $3 RETURNING {COLUMNS}"
        ))
        .bind(tenant)
        .bind(name)
        .bind(expected_version)
        .bind(f.description)
        .bind(f.schema)
        .bind(f.example)
        .bind(version)
        .bind(f.deprecated)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            // Either gone (never: types are not deleted) or changed concurrently.
            self.get_event_type(tenant, name).await?;
            return Err(Error::conflict(
                "event-type-changed",
                format!("the event type `{name}` was changed concurrently; retry"),
            ));
        };
        tx.commit().await?;
        row.try_into()
    }

    /// Marks a type deprecated (keeping the first deprecation time).
    pub async fn deprecate_event_type(&self, tenant: &str, name: &str) -> Result<EventType> {
        let mut tx = self.pool.begin().await?;
        let version = bump(&mut tx, tenant).await?;
        let row: Option<EventTypeRow> = sqlx::query_as(&format!(
            "UPDATE event_types SET deprecated_at = coalesce(deprecated_at, now()), version = $3,
                updated_at = now()
             WHERE tenant = $1 AND name = $2 RETURNING {COLUMNS}"
        ))
        .bind(tenant)
        .bind(name)
        .bind(version)
        .fetch_optional(&mut *tx)
        .await?;
        let row = row.ok_or(Error::NotFound("event type"))?;
        tx.commit().await?;
        row.try_into()
    }

    /// One type of the tenant's catalog.
    pub async fn get_event_type(&self, tenant: &str, name: &str) -> Result<EventType> {
        let row: Option<EventTypeRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM event_types WHERE tenant = $1 AND name = $2"
        ))
        .bind(tenant)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.ok_or(Error::NotFound("event type"))?.try_into()
    }

    /// A page of the tenant's catalog in name order, after `cursor` (a name).
    pub async fn list_event_types(
        &self,
        tenant: &str,
        cursor: Option<&str>,
        limit: i64,
    ) -> Result<Vec<EventType>> {
        let rows: Vec<EventTypeRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM event_types WHERE tenant = $1 AND ($2::text IS NULL OR name > $2)
             ORDER BY name LIMIT $3"
        ))
        .bind(tenant)
        .bind(cursor)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// Every type name of the tenant with whether it is deprecated (for the
    /// subscription warnings of endpoints).
    pub async fn event_type_names(&self, tenant: &str) -> Result<Vec<(String, bool)>> {
        Ok(sqlx::query_as(
            "SELECT name, deprecated_at IS NOT NULL FROM event_types WHERE tenant = $1 ORDER BY name",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The tenant's strict switch and catalog version: the validator cache's
    /// freshness check, one primary-key read.
    pub async fn catalog_head(&self, tenant: &str) -> Result<CatalogHead> {
        let row: Option<(bool, i64)> = sqlx::query_as(
            "SELECT strict_event_types, catalog_version FROM tenant_settings WHERE tenant = $1",
        )
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        Ok(
            row.map_or_else(CatalogHead::default, |(strict, version)| CatalogHead {
                strict,
                version,
            }),
        )
    }

    /// The types written after catalog version `since`.
    pub async fn catalog_changes(&self, tenant: &str, since: i64) -> Result<Vec<CatalogRow>> {
        Ok(sqlx::query_as(
            "SELECT name, version, schema, deprecated_at
             FROM event_types WHERE tenant = $1 AND version > $2",
        )
        .bind(tenant)
        .bind(since)
        .fetch_all(&self.pool)
        .await?)
    }
}
