//! The only place that speaks SQL. `Store` wraps the pool and the master key; each
//! file adds the queries of one table (`impl Store` blocks), and the REST API, the
//! worker and the Kubernetes controller all go through these methods.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::domain::crypto::MasterKey;
use crate::domain::page::PageLimit;
use crate::error::Result;

pub mod availability;
mod batcher;
pub mod deliveries;
pub mod endpoints;
pub mod event_types;
pub mod events;
pub mod events_batch;
pub mod figures;
pub mod keys;
pub mod maintenance;
pub mod ops;
pub mod stats;
pub mod tenant_settings;

/// Channel on which ingestion announces new work to sleeping workers.
pub const WORK_CHANNEL: &str = "hookit_work";

/// Longest a readiness ping waits for the database.
pub const PING_TIMEOUT: Duration = Duration::from_secs(2);

pub use crate::domain::page::MAX_PAGE;

/// Database access for every role.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
    key: MasterKey,
    /// Whether the database is reachable (see [`availability`]).
    availability: availability::Availability,
    /// Ingestion's group-commit writers, started on first use.
    batcher: std::sync::Arc<std::sync::OnceLock<batcher::Batcher>>,
}

impl Store {
    /// Wraps an existing pool.
    pub fn new(pool: PgPool, key: MasterKey) -> Self {
        let availability = availability::Availability::new((*pool.connect_options()).clone());
        Self {
            pool,
            key,
            availability,
            batcher: Default::default(),
        }
    }
    /// Whether the database is reachable, as this process last found out.
    pub fn availability(&self) -> &availability::Availability {
        &self.availability
    }
    /// The pool (for health checks and LISTEN).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
    /// The master key that encrypts endpoint secrets.
    pub fn master_key(&self) -> &MasterKey {
        &self.key
    }
    /// Whether the database answers: at once when it is known down, otherwise
    /// within [`PING_TIMEOUT`].
    pub async fn ping(&self) -> Result<()> {
        if let Some(down) = self.availability.down_for() {
            return Err(crate::error::Error::DatabaseDown(down));
        }
        let r =
            match tokio::time::timeout(PING_TIMEOUT, sqlx::query("SELECT 1").execute(&self.pool))
                .await
            {
                Ok(r) => r.map(|_| ()).map_err(Into::into),
                Err(_) => Err(crate::error::Error::Unavailable(sqlx::Error::PoolTimedOut)),
            };
        if let Err(e) = &r {
            self.availability.report(e);
        }
        r
    }
    /// Wakes sleeping workers (coalesced by the caller).
    pub async fn notify_work(&self) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(WORK_CHANNEL)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Opens a pool. Connections are made lazily, so a process can start while the
/// database is still coming up; `/readyz` reports when it is reachable.
pub async fn connect(url: &str, size: u32) -> Result<PgPool> {
    let opts: PgConnectOptions = url.parse()?;
    let opts = opts.application_name("hookit");
    let pool = PgPoolOptions::new()
        .max_connections(size)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(Some(Duration::from_secs(300)))
        .connect_lazy_with(opts);
    Ok(pool)
}

/// Applies the migrations embedded in the binary.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("./migrations").run(pool).await
}

/// Cursor pagination: an opaque string that is the last id of the previous page.
pub fn page_limit(limit: Option<PageLimit>) -> i64 {
    PageLimit::or_default(limit)
}
