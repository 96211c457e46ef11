//! Delivery figures of endpoints, as the `WebhookEndpoint` status shows them, and
//! the controller's change feed: which Kubernetes-managed endpoints' figures may
//! have changed since it last looked.
//!
//! Nothing here writes, and nothing on the queue's hot path writes for it: the
//! feed reads the rows delivery already leaves behind (attempt log, queue rows,
//! endpoint rows) through the indexes they already have.

use chrono::{DateTime, Utc};
use sqlx::FromRow;
use uuid::Uuid;

use super::endpoints::circuit_name;
use super::Store;
use crate::domain::ids::EndpointId;
use crate::error::Result;

/// One endpoint's recent delivery figures, for the `WebhookEndpoint` status.
#[derive(Debug, Default, Clone, PartialEq, FromRow)]
pub struct DeliverySummary {
    /// Successful attempts since the cut-off (one per delivered message).
    pub succeeded: i64,
    /// Failed attempts since the cut-off (rate limits and attempts that sent
    /// nothing are not failures of the receiver).
    pub failed: i64,
    /// Deliveries dead-lettered since the cut-off.
    pub dead: i64,
    /// Deliveries pending or in flight now.
    pub pending: i64,
    /// Start of the latest successful attempt since the cut-off.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Start of the latest failed attempt since the cut-off.
    pub last_failure_at: Option<DateTime<Utc>>,
}

#[derive(FromRow)]
struct SummaryRow {
    id: Uuid,
    #[sqlx(flatten)]
    summary: DeliverySummary,
}

/// What [`Store::figures_changed`] looks at. Both time ranges are the caller's:
/// the store knows nothing of polls or of how late a row may be written.
#[derive(Debug, Clone)]
pub struct FigureChanges {
    /// Only this tenant (a controller that watches one namespace), else all.
    pub tenant: Option<String>,
    /// Anything written after this: attempts (by their start), new deliveries,
    /// dead letters, changes of the endpoint row.
    pub after: DateTime<Utc>,
    /// Attempts and dead letters that left the figures' window: those in
    /// `[left.0, left.1)` (the window's start at the previous look and now).
    pub left: (DateTime<Utc>, DateTime<Utc>),
}

/// A Kubernetes-managed endpoint whose figures may have changed: only what the
/// feed compares with the status (state and circuit; the figures are asked for
/// separately), not the whole endpoint. A mass change, such as 10,000 resources
/// applied at once, returns every managed endpoint for as long as it stays in
/// the feed's window, so the row is kept small.
#[derive(Debug, Clone)]
pub struct ManagedEndpointRef {
    /// The endpoint.
    pub id: EndpointId,
    /// `active`, `paused` or `disabled`.
    pub state: String,
    /// `closed` or `open`.
    pub circuit_state: String,
    /// Its tenant (the resource's namespace).
    pub tenant: String,
    /// UID of the WebhookEndpoint resource.
    pub k8s_uid: String,
    /// `namespace/name` of the resource.
    pub k8s_name: String,
}

#[derive(FromRow)]
struct ManagedRow {
    id: Uuid,
    status: String,
    circuit_open: bool,
    tenant: String,
    k8s_uid: String,
    k8s_name: Option<String>,
}

/// The smallest UUIDv7 of millisecond `t`: delivery ids are UUIDv7 made by the
/// database when the row is inserted, so `id > floor(t)` is "inserted after t".
fn uuid_v7_floor(t: DateTime<Utc>) -> Uuid {
    let ms = u64::try_from(t.timestamp_millis()).unwrap_or(0);
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    Uuid::from_bytes(bytes)
}

impl Store {
    /// Delivery figures of one endpoint since `since`.
    pub async fn delivery_summary(
        &self,
        tenant: &str,
        endpoint: EndpointId,
        since: DateTime<Utc>,
    ) -> Result<DeliverySummary> {
        let mut all = self
            .delivery_summaries(&[(tenant.to_string(), endpoint)], since)
            .await?;
        Ok(all.pop().map(|(_, s)| s).unwrap_or_default())
    }

    /// Delivery figures of several endpoints (`(tenant, endpoint)`) since `since`,
    /// in one statement. Every part is an index range scan per endpoint (attempts
    /// by endpoint and time, dead rows by tenant and time, the endpoint's pending
    /// rows), so it stays cheap for busy endpoints.
    pub async fn delivery_summaries(
        &self,
        endpoints: &[(String, EndpointId)],
        since: DateTime<Utc>,
    ) -> Result<Vec<(EndpointId, DeliverySummary)>> {
        if endpoints.is_empty() {
            return Ok(Vec::new());
        }
        let tenants: Vec<&str> = endpoints.iter().map(|(t, _)| t.as_str()).collect();
        let ids: Vec<Uuid> = endpoints.iter().map(|(_, id)| id.uuid()).collect();
        let rows: Vec<SummaryRow> = sqlx::query_as(
            "SELECT e.id, s.succeeded, s.failed, s.last_success_at, s.last_failure_at,
                    (SELECT count(*) FROM deliveries d
                      WHERE d.tenant = e.tenant AND d.status = 'dead' AND d.finished_at >= $3
                        AND d.endpoint_id = e.id) AS dead,
                    (SELECT count(*) FROM deliveries d
                      WHERE d.endpoint_id = e.id AND d.status IN ('pending', 'in_flight')) AS pending
             FROM unnest($1::uuid[], $2::text[]) AS e(id, tenant)
             CROSS JOIN LATERAL (
                SELECT count(*) FILTER (WHERE a.succeeded) AS succeeded,
                       -- The receiver's failures: not its 429s (deferred, nothing
                       -- spent), not attempts a transformation refused (nothing
                       -- sent; they show in `dead`).
                       count(*) FILTER (WHERE NOT a.succeeded AND NOT a.rate_limited AND a.sent) AS failed,
                       max(a.started_at) FILTER (WHERE a.succeeded) AS last_success_at,
                       max(a.started_at) FILTER (WHERE NOT a.succeeded AND NOT a.rate_limited AND a.sent)
                         AS last_failure_at
                FROM delivery_attempts a
                WHERE a.endpoint_id = e.id AND a.started_at >= $3
             ) s",
        )
        .bind(&ids)
        .bind(&tenants)
        .bind(since)
        // Planned per call: a generic plan made on a small table could scan it
        // whole for every endpoint once it is large.
        .persistent(false)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| (EndpointId::from_uuid(r.id), r.summary))
            .collect())
    }

    /// The Kubernetes-managed endpoints whose figures may have changed, as
    /// `window` bounds it: those with an attempt started, a delivery created or
    /// dead-lettered, or a change of their row after `window.after`, or with an
    /// attempt or dead letter leaving the figures' window in `window.left`.
    /// "May": the caller compares the figures with what it shows.
    ///
    /// Cost, at 10,000 managed endpoints and however large the queue: a scan of
    /// the managed endpoint rows, and per endpoint three index descents that
    /// each stop at the first entry (the latest attempt, an attempt in the
    /// range that left the window, a pending row newer than `after`), plus one
    /// range of the recent dead letters. 150 ms with 2 M attempts and 2 M
    /// deliveries on a loaded 2-core machine, whatever their number. No index
    /// is added for it: a time-only index on the attempt log or the queue would
    /// cost every delivery a write.
    pub async fn figures_changed(&self, window: &FigureChanges) -> Result<Vec<ManagedEndpointRef>> {
        let rows: Vec<ManagedRow> = sqlx::query_as(
            "WITH managed AS (
                SELECT id, tenant, status::text AS status, (circuit_open_until IS NOT NULL) AS circuit_open, updated_at,
                       k8s_uid, k8s_name
                FROM endpoints
                WHERE k8s_uid IS NOT NULL AND deleted_at IS NULL AND ($1::text IS NULL OR tenant = $1)
             ), dead AS (
                -- By tenant, two ranges of the tenant's dead-letter index (tenant,
                -- finished_at); the row gives the endpoint. OFFSET 0 keeps it a
                -- lookup per tenant: pulled up into a join, it scans the whole
                -- index for the time ranges alone.
                SELECT DISTINCT d.endpoint_id
                FROM (SELECT DISTINCT tenant FROM managed) t
                CROSS JOIN LATERAL (
                    SELECT d.endpoint_id FROM deliveries d
                    WHERE d.tenant = t.tenant AND d.status = 'dead'
                      AND (d.finished_at > $2 OR (d.finished_at >= $3 AND d.finished_at < $4))
                    OFFSET 0
                ) d
             )
             SELECT e.id, e.status, e.circuit_open, e.tenant, e.k8s_uid, e.k8s_name FROM managed e
             -- Correlated scalar subqueries, not EXISTS: under OR the planner may
             -- turn an EXISTS into a hashed subplan over a sequential scan of the
             -- whole attempt log (measured: 330 ms at 2 M attempts, growing with
             -- it), where these stay one index descent per endpoint.
             WHERE e.updated_at > $2
                OR (SELECT max(a.started_at) FROM delivery_attempts a WHERE a.endpoint_id = e.id) > $2
                OR (SELECT true FROM delivery_attempts a
                    WHERE a.endpoint_id = e.id AND a.started_at >= $3 AND a.started_at < $4 LIMIT 1)
                -- New work raises `pending` before any attempt is made (a paused
                -- endpoint's held rows never get one).
                OR (SELECT true FROM deliveries d
                    WHERE d.endpoint_id = e.id AND d.status IN ('pending', 'in_flight') AND d.id > $5 LIMIT 1)
                OR e.id IN (SELECT endpoint_id FROM dead)",
        )
        .bind(window.tenant.as_deref())
        .bind(window.after)
        .bind(window.left.0)
        .bind(window.left.1)
        .bind(uuid_v7_floor(window.after))
        .persistent(false)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                Some(ManagedEndpointRef {
                    k8s_name: r.k8s_name?,
                    k8s_uid: r.k8s_uid,
                    tenant: r.tenant,
                    id: EndpointId::from_uuid(r.id),
                    state: r.status,
                    circuit_state: circuit_name(r.circuit_open).into(),
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v7_floor_sorts_before_every_id_of_its_millisecond_and_after_earlier_ones() {
        let t = DateTime::parse_from_rfc3339("2025-06-01T12:00:00.123Z")
            .unwrap()
            .with_timezone(&Utc);
        let floor = uuid_v7_floor(t);
        let ts = uuid::Timestamp::from_unix(uuid::NoContext, 1_748_779_200, 123_000_000);
        let same_ms = Uuid::new_v7(ts);
        let earlier = Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            1_748_779_200,
            122_000_000,
        ));
        // PostgreSQL compares uuids bytewise, as Uuid's Ord does.
        assert!(floor < same_ms);
        assert!(earlier < floor);
        assert_eq!(floor.get_timestamp(), None, "not itself a valid v7 id");
    }
}
