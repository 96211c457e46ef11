//! Endpoints: where a tenant's events go. Written by the REST API and, for
//! Kubernetes-managed endpoints, by the controller, through the same methods.
//!
//! By job: the endpoint as the API shows it and its reads (here), the settings
//! and their validation ([`spec`]), creating, changing, pausing, deleting and
//! disabling ([`lifecycle`]), signing secrets ([`secrets`]) and the rows the
//! Kubernetes controller owns ([`managed`]).

mod lifecycle;
mod managed;
mod ordering;
mod secrets;
mod spec;

pub use managed::ManagedEndpoint;
pub use spec::{check_target, EndpointPatch, EndpointSpec, FormatName, OrderingName};

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::FromRow;
use utoipa::ToSchema;
use uuid::Uuid;

use super::Store;
use crate::domain::formats::Format;
use crate::domain::ids::EndpointId;
use crate::error::{Error, Result};

/// How long a rotated-out secret keeps signing alongside the new one.
pub const ROTATION_OVERLAP_HOURS: i64 = 24;
/// Most custom headers per endpoint.
pub const MAX_HEADERS: usize = 20;
/// Most event-type patterns per endpoint.
pub const MAX_EVENT_TYPES: usize = 50;
/// Longest per-attempt timeout an endpoint may set (also the schema's CHECK).
pub const MAX_TIMEOUT_MS: i64 = 300_000;

/// An endpoint as the API shows it. The secret is never part of it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Endpoint {
    /// `ep_…`
    #[schema(value_type = String, example = "ep_01JD5Q2Z0000000000000000")]
    pub id: EndpointId,
    /// Target URL.
    pub url: String,
    /// Free text.
    pub description: String,
    /// Subscribed event types: exact, `prefix.*` or `*`.
    pub event_types: Vec<String>,
    /// `active`, `paused` or `disabled`.
    pub status: String,
    /// Why the endpoint was disabled, when it was.
    pub disabled_reason: Option<String>,
    /// `kubernetes` when owned by a WebhookEndpoint resource.
    pub managed_by: Option<String>,
    /// `closed` or `open` (circuit breaker).
    pub circuit_state: String,
    /// Failures in a row.
    pub consecutive_failures: i32,
    /// Custom headers added to every request.
    pub headers: BTreeMap<String, String>,
    /// Attempts per round (default: server setting).
    pub max_attempts: Option<i32>,
    /// First retry delay in ms (default: server setting).
    pub retry_base_ms: Option<i64>,
    /// Largest retry delay in ms (default: server setting).
    pub retry_cap_ms: Option<i64>,
    /// Per-attempt timeout in ms (default: server setting).
    pub timeout_ms: Option<i64>,
    /// Most deliveries per second (per worker process).
    pub rate_limit: Option<i32>,
    /// Most deliveries in flight (per worker process).
    pub max_in_flight: Option<i32>,
    /// How deliveries are rendered: `standard` (the Standard Webhooks envelope),
    /// `discord` or `slack` (a readable chat message).
    #[schema(value_type = FormatName)]
    pub format: Format,
    /// JavaScript run before each delivery (docs/transformations.md), if any.
    pub transformation: Option<String>,
    /// `none`, or `fifo`: one delivery at a time, in the order the events were
    /// accepted (docs/fifo.md).
    #[schema(value_type = OrderingName)]
    pub ordering: String,
    /// FIFO endpoints: most events per request (1: one event per request, not
    /// an array; docs/fifo.md).
    pub batch_size: i32,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// The circuit breaker's state as the API and the status show it.
pub(crate) fn circuit_name(open: bool) -> &'static str {
    if open {
        "open"
    } else {
        "closed"
    }
}

#[derive(FromRow)]
pub(super) struct EndpointRow {
    id: Uuid,
    url: String,
    description: String,
    event_types: Vec<String>,
    status: String,
    disabled_reason: Option<String>,
    managed_by: Option<String>,
    circuit_open: bool,
    consecutive_failures: i32,
    headers: sqlx::types::Json<BTreeMap<String, String>>,
    max_attempts: Option<i32>,
    retry_base_ms: Option<i64>,
    retry_cap_ms: Option<i64>,
    timeout_ms: Option<i64>,
    rate_limit: Option<i32>,
    max_in_flight: Option<i32>,
    format: String,
    transformation: Option<String>,
    ordering: String,
    batch_size: i32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<EndpointRow> for Endpoint {
    fn from(r: EndpointRow) -> Self {
        Endpoint {
            id: EndpointId::from_uuid(r.id),
            url: r.url,
            description: r.description,
            event_types: r.event_types,
            status: r.status,
            disabled_reason: r.disabled_reason,
            managed_by: r.managed_by,
            circuit_state: circuit_name(r.circuit_open).into(),
            consecutive_failures: r.consecutive_failures,
            headers: r.headers.0,
            max_attempts: r.max_attempts,
            retry_base_ms: r.retry_base_ms,
            retry_cap_ms: r.retry_cap_ms,
            timeout_ms: r.timeout_ms,
            rate_limit: r.rate_limit,
            max_in_flight: r.max_in_flight,
            // The column is an enum of exactly these names.
            format: r.format.parse().unwrap_or_default(),
            transformation: r.transformation,
            ordering: r.ordering,
            batch_size: r.batch_size,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

pub(super) const COLUMNS: &str =
    "id, url, description, event_types, status::text AS status, disabled_reason, managed_by,
    (circuit_open_until IS NOT NULL) AS circuit_open, consecutive_failures, headers, max_attempts,
    retry_base_ms, retry_cap_ms, timeout_ms, rate_limit, max_in_flight, format::text AS format, transformation,
    ordering::text AS ordering, batch_size, created_at, updated_at";

impl Store {
    /// One endpoint of the tenant.
    pub async fn get_endpoint(&self, tenant: &str, id: EndpointId) -> Result<Endpoint> {
        let row: Option<EndpointRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM endpoints WHERE id = $1 AND tenant = $2 AND deleted_at IS NULL"
        ))
        .bind(id.uuid())
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        row.map(Into::into).ok_or(Error::NotFound("endpoint"))
    }

    /// A page of the tenant's endpoints, oldest first, after `cursor`.
    pub async fn list_endpoints(
        &self,
        tenant: &str,
        cursor: Option<EndpointId>,
        limit: i64,
    ) -> Result<Vec<Endpoint>> {
        let rows: Vec<EndpointRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM endpoints WHERE tenant = $1 AND deleted_at IS NULL AND ($2::uuid IS NULL OR id > $2)
             ORDER BY id LIMIT $3"
        ))
        .bind(tenant)
        .bind(cursor.map(|c| c.uuid()))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Fails with 409 when the endpoint is owned by Kubernetes (REST writes only).
    pub(super) async fn ensure_rest_managed(
        &self,
        tenant: &str,
        id: EndpointId,
    ) -> Result<Endpoint> {
        let ep = self.get_endpoint(tenant, id).await?;
        if ep.managed_by.is_some() {
            return Err(Error::conflict(
                "managed-by-kubernetes",
                "this endpoint is managed by a Kubernetes WebhookEndpoint resource; change it with kubectl",
            ));
        }
        Ok(ep)
    }
}
