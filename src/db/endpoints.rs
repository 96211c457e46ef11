//! Endpoints: where a tenant's events go. Written by the REST API and, for
//! Kubernetes-managed endpoints, by the controller, through the same methods.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use utoipa::ToSchema;
use uuid::Uuid;

use super::Store;
use crate::domain::ids::EndpointId;
use crate::domain::patterns::validate_pattern;
use crate::domain::signing::Secret;
use crate::domain::ssrf::SsrfPolicy;
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
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
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
            circuit_state: if r.circuit_open { "open" } else { "closed" }.into(),
            consecutive_failures: r.consecutive_failures,
            headers: r.headers.0,
            max_attempts: r.max_attempts,
            retry_base_ms: r.retry_base_ms,
            retry_cap_ms: r.retry_cap_ms,
            timeout_ms: r.timeout_ms,
            rate_limit: r.rate_limit,
            max_in_flight: r.max_in_flight,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

pub(super) const COLUMNS: &str =
    "id, url, description, event_types, status::text AS status, disabled_reason, managed_by,
    (circuit_open_until IS NOT NULL) AS circuit_open, consecutive_failures, headers, max_attempts,
    retry_base_ms, retry_cap_ms, timeout_ms, rate_limit, max_in_flight, created_at, updated_at";

/// The settings of an endpoint, as written by the API or the controller.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// Target URL (http or https; checked against the SSRF policy).
    pub url: String,
    /// Subscribed event types; default `["*"]`.
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Signing secret `whsec_…`; generated when absent.
    #[serde(default)]
    pub secret: Option<String>,
    /// Attempts per round, 1-100.
    #[serde(default)]
    pub max_attempts: Option<i32>,
    /// First retry delay in ms.
    #[serde(default)]
    pub retry_base_ms: Option<i64>,
    /// Largest retry delay in ms.
    #[serde(default)]
    pub retry_cap_ms: Option<i64>,
    /// Per-attempt timeout in ms (100-300000).
    #[serde(default)]
    pub timeout_ms: Option<i64>,
    /// Custom headers.
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    /// Most deliveries per second (per worker process).
    #[serde(default)]
    pub rate_limit: Option<i32>,
    /// Most deliveries in flight (per worker process).
    #[serde(default)]
    pub max_in_flight: Option<i32>,
}

/// A partial update: absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointPatch {
    /// New URL.
    pub url: Option<String>,
    /// New subscriptions.
    pub event_types: Option<Vec<String>>,
    /// New description.
    pub description: Option<String>,
    /// New attempt budget.
    pub max_attempts: Option<i32>,
    /// New first retry delay in ms.
    pub retry_base_ms: Option<i64>,
    /// New largest retry delay in ms.
    pub retry_cap_ms: Option<i64>,
    /// New timeout in ms.
    pub timeout_ms: Option<i64>,
    /// New custom headers (replaces all).
    pub headers: Option<BTreeMap<String, String>>,
    /// New rate limit.
    pub rate_limit: Option<i32>,
    /// New in-flight cap.
    pub max_in_flight: Option<i32>,
}

/// Headers HookIt sets itself; an endpoint cannot override them.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "traceparent",
    "upgrade",
    "te",
    "keep-alive",
];

fn validate_headers(h: &BTreeMap<String, String>) -> Result<()> {
    if h.len() > MAX_HEADERS {
        return Err(Error::invalid(
            "invalid-headers",
            format!("at most {MAX_HEADERS} custom headers"),
        ));
    }
    for (k, v) in h {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
            Error::invalid(
                "invalid-headers",
                format!("`{k}` is not a valid header name"),
            )
        })?;
        if RESERVED_HEADERS.contains(&name.as_str()) {
            return Err(Error::invalid(
                "invalid-headers",
                format!("`{k}` is set by HookIt and cannot be overridden"),
            ));
        }
        if v.len() > 4096 || reqwest::header::HeaderValue::from_str(v).is_err() {
            return Err(Error::invalid(
                "invalid-headers",
                format!("the value of `{k}` is not a valid header value"),
            ));
        }
    }
    Ok(())
}

fn validate_event_types(types: &[String]) -> Result<()> {
    if types.is_empty() || types.len() > MAX_EVENT_TYPES {
        return Err(Error::invalid(
            "invalid-event-types",
            format!("event_types needs 1 to {MAX_EVENT_TYPES} patterns"),
        ));
    }
    for t in types {
        validate_pattern(t)
            .map_err(|e| Error::invalid("invalid-event-types", format!("`{t}`: {e}")))?;
    }
    Ok(())
}

fn validate_numbers(
    max_attempts: Option<i32>,
    base: Option<i64>,
    cap: Option<i64>,
    timeout: Option<i64>,
    rate: Option<i32>,
    in_flight: Option<i32>,
) -> Result<()> {
    let bad =
        |f: &str, range: &str| Error::invalid("invalid-endpoint", format!("{f} must be {range}"));
    if max_attempts.is_some_and(|v| !(1..=100).contains(&v)) {
        return Err(bad("max_attempts", "from 1 to 100"));
    }
    if base.is_some_and(|v| !(1..=86_400_000).contains(&v)) {
        return Err(bad("retry_base_ms", "from 1 to 86400000"));
    }
    if cap.is_some_and(|v| !(1..=7 * 86_400_000).contains(&v)) {
        return Err(bad("retry_cap_ms", "from 1 to 604800000"));
    }
    if timeout.is_some_and(|v| !(100..=MAX_TIMEOUT_MS).contains(&v)) {
        return Err(bad("timeout_ms", "from 100 to 300000"));
    }
    if rate.is_some_and(|v| !(1..=100_000).contains(&v)) {
        return Err(bad("rate_limit", "from 1 to 100000"));
    }
    if in_flight.is_some_and(|v| !(1..=10_000).contains(&v)) {
        return Err(bad("max_in_flight", "from 1 to 10000"));
    }
    Ok(())
}

impl EndpointSpec {
    /// Validates everything but DNS (see [`check_target`]).
    pub fn validate(&self, ssrf: &SsrfPolicy) -> Result<()> {
        ssrf.check_url(&self.url)?;
        self.as_patch().validate(ssrf)
    }

    fn as_patch(&self) -> EndpointPatch {
        EndpointPatch {
            url: None,
            event_types: self.event_types.clone(),
            description: self.description.clone(),
            max_attempts: self.max_attempts,
            retry_base_ms: self.retry_base_ms,
            retry_cap_ms: self.retry_cap_ms,
            timeout_ms: self.timeout_ms,
            headers: self.headers.clone(),
            rate_limit: self.rate_limit,
            max_in_flight: self.max_in_flight,
        }
    }
}

impl EndpointPatch {
    /// Validates the fields that are present (DNS aside).
    pub fn validate(&self, ssrf: &SsrfPolicy) -> Result<()> {
        if let Some(u) = &self.url {
            ssrf.check_url(u)?;
        }
        if let Some(t) = &self.event_types {
            validate_event_types(t)?;
        }
        if let Some(h) = &self.headers {
            validate_headers(h)?;
        }
        if self.description.as_ref().is_some_and(|d| d.len() > 1024) {
            return Err(Error::invalid(
                "invalid-endpoint",
                "description is at most 1024 characters",
            ));
        }
        validate_numbers(
            self.max_attempts,
            self.retry_base_ms,
            self.retry_cap_ms,
            self.timeout_ms,
            self.rate_limit,
            self.max_in_flight,
        )
    }
}

/// Resolves the URL's host and checks every address against the SSRF policy; a
/// host with any forbidden address is refused (fail closed).
pub async fn check_target(ssrf: &SsrfPolicy, raw: &str) -> Result<()> {
    let url = ssrf.check_url(raw)?;
    if let Some(url::Host::Domain(d)) = url.host() {
        let port = url.port_or_known_default().unwrap_or(443);
        let host = d.trim_end_matches('.').to_string();
        let addrs: Vec<_> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|_| crate::domain::ssrf::SsrfError::Unresolvable(host.clone()))?
            .collect();
        if addrs.is_empty() {
            return Err(crate::domain::ssrf::SsrfError::Unresolvable(host).into());
        }
        for a in addrs {
            ssrf.check_ip(a.ip())?;
        }
    }
    Ok(())
}

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
    fn seal(&self, id: Uuid, secret: &Secret) -> Vec<u8> {
        self.key.encrypt(secret.as_bytes(), id.as_bytes())
    }

    fn open(&self, id: Uuid, blob: &[u8]) -> Result<Secret> {
        Ok(Secret::from_bytes(self.key.decrypt(blob, id.as_bytes())?))
    }

    /// Creates an endpoint for `tenant` (REST). The URL must already have passed
    /// [`check_target`].
    pub async fn create_endpoint(
        &self,
        tenant: &str,
        spec: &EndpointSpec,
        max_per_tenant: i64,
    ) -> Result<Endpoint> {
        let secret = match &spec.secret {
            Some(s) => {
                Secret::parse(s).map_err(|e| Error::invalid("invalid-secret", e.to_string()))?
            }
            None => Secret::generate(),
        };
        let id = EndpointId::new().uuid();
        let mut tx = self.pool.begin().await?;
        // Serialise creations per tenant so the per-tenant cap cannot be overshot
        // by concurrent requests.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('endpoints:' || $1))")
            .bind(tenant)
            .execute(&mut *tx)
            .await?;
        let (count,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM endpoints WHERE tenant = $1 AND deleted_at IS NULL",
        )
        .bind(tenant)
        .fetch_one(&mut *tx)
        .await?;
        if count >= max_per_tenant {
            return Err(Error::conflict(
                "too-many-endpoints",
                format!("a tenant may have at most {max_per_tenant} endpoints"),
            ));
        }
        let row: EndpointRow = sqlx::query_as(&format!(
            "INSERT INTO endpoints (id, tenant, url, description, event_types, secret_enc, headers, max_attempts,
                retry_base_ms, retry_cap_ms, timeout_ms, rate_limit, max_in_flight)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(tenant)
        .bind(&spec.url)
        .bind(spec.description.clone().unwrap_or_default())
        .bind(spec.event_types.clone().unwrap_or_else(|| vec!["*".into()]))
        .bind(self.seal(id, &secret))
        .bind(sqlx::types::Json(spec.headers.clone().unwrap_or_default()))
        .bind(spec.max_attempts)
        .bind(spec.retry_base_ms)
        .bind(spec.retry_cap_ms)
        .bind(spec.timeout_ms)
        .bind(spec.rate_limit)
        .bind(spec.max_in_flight)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.into())
    }

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
    async fn ensure_rest_managed(&self, tenant: &str, id: EndpointId) -> Result<Endpoint> {
        let ep = self.get_endpoint(tenant, id).await?;
        if ep.managed_by.is_some() {
            return Err(Error::conflict(
                "managed-by-kubernetes",
                "this endpoint is managed by a Kubernetes WebhookEndpoint resource; change it with kubectl",
            ));
        }
        Ok(ep)
    }

    /// Applies a partial update (REST). A new URL must already have passed [`check_target`].
    pub async fn update_endpoint(
        &self,
        tenant: &str,
        id: EndpointId,
        p: &EndpointPatch,
        ssrf: &SsrfPolicy,
    ) -> Result<Endpoint> {
        p.validate(ssrf)?;
        self.ensure_rest_managed(tenant, id).await?;
        let row: Option<EndpointRow> = sqlx::query_as(&format!(
            "UPDATE endpoints SET url = coalesce($3, url), event_types = coalesce($4, event_types),
                description = coalesce($5, description), max_attempts = coalesce($6, max_attempts),
                retry_base_ms = coalesce($7, retry_base_ms), retry_cap_ms = coalesce($8, retry_cap_ms),
                timeout_ms = coalesce($9, timeout_ms), headers = coalesce($10, headers),
                rate_limit = coalesce($11, rate_limit), max_in_flight = coalesce($12, max_in_flight), updated_at = now()
             WHERE id = $1 AND tenant = $2 AND deleted_at IS NULL RETURNING {COLUMNS}"
        ))
        .bind(id.uuid())
        .bind(tenant)
        .bind(&p.url)
        .bind(&p.event_types)
        .bind(&p.description)
        .bind(p.max_attempts)
        .bind(p.retry_base_ms)
        .bind(p.retry_cap_ms)
        .bind(p.timeout_ms)
        .bind(p.headers.clone().map(sqlx::types::Json))
        .bind(p.rate_limit)
        .bind(p.max_in_flight)
        .fetch_optional(&self.pool)
        .await?;
        row.map(Into::into).ok_or(Error::NotFound("endpoint"))
    }

    /// Deletes an endpoint (REST).
    pub async fn delete_endpoint(&self, tenant: &str, id: EndpointId) -> Result<()> {
        self.ensure_rest_managed(tenant, id).await?;
        self.retire_endpoint(id.uuid()).await
    }

    /// Takes an endpoint out of delivery: it disappears from the API, and its
    /// pending deliveries are dead-lettered ("endpoint deleted") rather than dropped,
    /// so they stay visible and countable.
    async fn retire_endpoint(&self, id: Uuid) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE endpoints SET deleted_at = now(), updated_at = now() WHERE id = $1 AND deleted_at IS NULL")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE deliveries SET status = 'dead', next_attempt_at = NULL, finished_at = now(), updated_at = now(),
                last_error = 'endpoint deleted'
             WHERE endpoint_id = $1 AND status = 'pending'",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Pauses or resumes (REST). Pausing holds pending deliveries without spending
    /// attempts; resuming makes them due now.
    pub async fn set_paused(&self, tenant: &str, id: EndpointId, paused: bool) -> Result<Endpoint> {
        self.ensure_rest_managed(tenant, id).await?;
        self.apply_pause(id.uuid(), paused).await?;
        self.get_endpoint(tenant, id).await
    }

    async fn apply_pause(&self, id: Uuid, paused: bool) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // Resuming also re-enables a disabled endpoint (after the receiver is fixed),
        // with a clean failure record and a closed circuit.
        let sql = if paused {
            "UPDATE endpoints SET status = 'paused', updated_at = now() WHERE id = $1 AND status = 'active' AND deleted_at IS NULL"
        } else {
            "UPDATE endpoints SET status = 'active', disabled_reason = NULL, consecutive_failures = 0, failing_since = NULL,
                circuit_open_until = NULL, updated_at = now()
             WHERE id = $1 AND status IN ('paused', 'disabled') AND deleted_at IS NULL"
        };
        let changed = sqlx::query(sql)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if changed > 0 {
            let sql = if paused {
                "UPDATE deliveries SET next_attempt_at = NULL, updated_at = now() WHERE endpoint_id = $1 AND status = 'pending'"
            } else {
                "UPDATE deliveries SET next_attempt_at = now(), updated_at = now()
                 WHERE endpoint_id = $1 AND status = 'pending' AND next_attempt_at IS NULL"
            };
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
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
    pub(super) async fn install_secret(&self, id: Uuid, secret: &Secret) -> Result<bool> {
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
                        max_in_flight = $11, k8s_name = $12, deleted_at = NULL, updated_at = now()
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
                .execute(&self.pool)
                .await?;
                self.install_secret(id, &m.secret).await?;
                id
            }
            None => {
                let id = EndpointId::new().uuid();
                sqlx::query(
                    "INSERT INTO endpoints (id, tenant, url, description, event_types, secret_enc, headers, max_attempts,
                        retry_base_ms, retry_cap_ms, timeout_ms, rate_limit, max_in_flight, managed_by, k8s_uid, k8s_name)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'kubernetes', $14, $15)
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

    /// Disables an endpoint (410 Gone, or failing too long): its pending deliveries
    /// are dead-lettered with the reason, never dropped.
    pub async fn disable_endpoint(&self, id: Uuid, reason: &str) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE endpoints SET status = 'disabled', disabled_reason = $2, updated_at = now()
             WHERE id = $1 AND status <> 'disabled'",
        )
        .bind(id)
        .bind(reason)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let dead = sqlx::query(
            "UPDATE deliveries SET status = 'dead', next_attempt_at = NULL, finished_at = now(), updated_at = now(),
                last_error = 'endpoint disabled: ' || $2
             WHERE endpoint_id = $1 AND status = 'pending'",
        )
        .bind(id)
        .bind(reason)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(if changed > 0 { dead } else { 0 })
    }
}
