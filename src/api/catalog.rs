//! The publish path's view of each tenant's event-type catalog: the strict
//! switch and a compiled validator per type, kept in memory so that no publish
//! compiles a schema or reads the catalog.
//!
//! Freshness, with several API processes: each tenant's snapshot remembers the
//! catalog version it was built from (`tenant_settings.catalog_version`, bumped
//! by every catalog write; see `db::event_types`). A snapshot is served for up to
//! [`REVALIDATE`]; after that the next publish of the tenant reads the version
//! (one primary-key read) and, only if it moved, the types written since, and
//! compiles just those. So:
//! - a change made through this process is seen by its next publish (the write
//!   marks the tenant stale);
//! - a change made through another process is seen within [`REVALIDATE`];
//! - steady state costs one small read per tenant per second per process, and
//!   compiles nothing.
//!
//! A version check is preferred to a plain TTL because the TTL would recompile
//! every schema each time it expired, and to a check per publish because that
//! would add a database round trip to the group-committed hot path.
//!
//! While one request refreshes a tenant, others keep using the previous
//! snapshot rather than waiting (only the very first load is waited for).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use serde_json::Value;

use super::problem::Problem;
use crate::db::event_types::CatalogHead;
use crate::db::Store;
use crate::domain::event_schema::EventSchema;
use crate::error::Result;

/// Longest a snapshot is served without checking the catalog version.
pub const REVALIDATE: Duration = Duration::from_secs(1);

/// Every tenant's catalog snapshot in this process.
#[derive(Clone, Default)]
pub struct Catalogs(Arc<Mutex<HashMap<String, Arc<Slot>>>>);

#[derive(Default)]
struct Slot {
    current: RwLock<Option<Arc<Snapshot>>>,
    /// Held by the one request that refreshes the tenant.
    refreshing: tokio::sync::Mutex<()>,
    /// Set by a catalog write through this process: refresh before the next use.
    stale: AtomicBool,
}

/// One tenant's catalog as of a version.
#[derive(Debug)]
pub struct Snapshot {
    head: CatalogHead,
    checked: Instant,
    types: Arc<HashMap<String, Arc<Entry>>>,
}

#[derive(Debug)]
struct Entry {
    version: i64,
    deprecated_at: Option<DateTime<Utc>>,
    schema: Option<Arc<EventSchema>>,
}

/// What a publish should know about an accepted event's type.
#[derive(Debug, Default, Clone, Copy)]
pub struct Verdict {
    /// When the type was deprecated, if it is.
    pub deprecated_at: Option<DateTime<Utc>>,
}

impl Catalogs {
    /// The tenant's snapshot, refreshed first if it is due (see the module doc).
    pub async fn snapshot(&self, store: &Store, tenant: &str) -> Result<Arc<Snapshot>> {
        let slot = self.slot(tenant);
        let current = slot.current();
        if let Some(s) = slot.fresh(&current) {
            return Ok(s);
        }
        let _guard = match (&current, slot.refreshing.try_lock()) {
            (_, Ok(g)) => g,
            // Someone is refreshing: the previous snapshot is at most a moment older.
            (Some(s), Err(_)) => return Ok(s.clone()),
            (None, Err(_)) => slot.refreshing.lock().await,
        };
        // The holder before us may have just refreshed.
        let current = slot.current();
        if let Some(s) = slot.fresh(&current) {
            return Ok(s);
        }
        // Cleared before reading, so a write that commits during the read marks
        // the tenant stale again and the next publish reads once more.
        slot.stale.store(false, Ordering::SeqCst);
        let next = match refresh(store, tenant, current.as_deref()).await {
            Ok(n) => Arc::new(n),
            Err(e) => {
                slot.stale.store(true, Ordering::SeqCst);
                return Err(e);
            }
        };
        if let Ok(mut c) = slot.current.write() {
            *c = Some(next.clone());
        }
        Ok(next)
    }

    /// Marks the tenant's snapshot out of date (after a catalog or settings write
    /// through this process).
    pub fn invalidate(&self, tenant: &str) {
        self.slot(tenant).stale.store(true, Ordering::SeqCst);
    }

    fn slot(&self, tenant: &str) -> Arc<Slot> {
        let mut map = match self.0.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(s) = map.get(tenant) {
            return s.clone();
        }
        let s = Arc::new(Slot::default());
        map.insert(tenant.to_string(), s.clone());
        s
    }
}

impl Slot {
    fn current(&self) -> Option<Arc<Snapshot>> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    fn fresh(&self, current: &Option<Arc<Snapshot>>) -> Option<Arc<Snapshot>> {
        current
            .as_ref()
            .filter(|s| !self.stale.load(Ordering::SeqCst) && s.checked.elapsed() < REVALIDATE)
            .cloned()
    }
}

/// The next snapshot after `previous`: the same types if the version did not
/// move, otherwise those plus the ones written since, compiled.
async fn refresh(store: &Store, tenant: &str, previous: Option<&Snapshot>) -> Result<Snapshot> {
    let head = store.catalog_head(tenant).await?;
    let checked = Instant::now();
    if let Some(p) = previous.filter(|p| p.head.version == head.version) {
        return Ok(Snapshot {
            head,
            checked,
            types: p.types.clone(),
        });
    }
    let since = previous.map_or(0, |p| p.head.version);
    let changes = store.catalog_changes(tenant, since).await?;
    let mut types: HashMap<String, Arc<Entry>> =
        previous.map(|p| (*p.types).clone()).unwrap_or_default();
    // Rows committed between the two reads are newer than `head`: take them too.
    let mut version = head.version;
    for row in changes {
        version = version.max(row.version);
        let schema = match row.schema.as_deref().map(compile_stored).transpose() {
            Ok(s) => s.map(Arc::new),
            Err(detail) => {
                // Checked when written; only a validator upgrade could get here.
                // Fail open (the type behaves as schemaless) and say so.
                tracing::warn!(%tenant, event_type = %row.name, %detail, "stored event-type schema does not compile; not validating it");
                None
            }
        };
        types.insert(
            row.name,
            Arc::new(Entry {
                version: row.version,
                deprecated_at: row.deprecated_at,
                schema,
            }),
        );
    }
    debug_assert!(types.values().all(|e| e.version <= version));
    Ok(Snapshot {
        head: CatalogHead { version, ..head },
        checked,
        types: Arc::new(types),
    })
}

fn compile_stored(text: &str) -> Result<EventSchema, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    EventSchema::compile(&v, "").map_err(|e| e.detail)
}

impl Snapshot {
    /// Checks an event against the catalog: refused when the tenant is strict and
    /// the type unknown, or when the payload breaks the type's schema (422 with
    /// `errors` pointing into `/payload`). Unknown types of a non-strict tenant,
    /// and types without a schema, pass.
    pub fn check(&self, event_type: &str, payload: &RawValue) -> Result<Verdict, Problem> {
        let Some(entry) = self.types.get(event_type) else {
            if self.head.strict {
                return Err(Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unknown-event-type",
                    "Unknown event type",
                    format!(
                        "`{event_type}` is not in this tenant's event-type catalog, and the tenant \
                         refuses unknown types (strict_event_types); create it with POST /v1/event-types"
                    ),
                ));
            }
            return Ok(Verdict::default());
        };
        if let Some(schema) = &entry.schema {
            let doc: Value = serde_json::from_str(payload.get())
                .map_err(|e| Problem::bad_request(format!("invalid JSON: {e}")))?;
            schema.check(&doc, "/payload").map_err(|errors| {
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "payload-schema-mismatch",
                    "Payload does not match its event type's schema",
                    format!(
                        "the payload breaks the schema of `{event_type}` in {} place(s); see errors",
                        errors.len()
                    ),
                )
                .with_errors(errors)
            })?;
        }
        Ok(Verdict {
            deprecated_at: entry.deprecated_at,
        })
    }
}
