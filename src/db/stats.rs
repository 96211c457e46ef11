//! Aggregates for the dashboard and for `/metrics` (the WebhookEndpoint status
//! figures are in [`super::figures`]).

use std::collections::HashMap;

use chrono::{DateTime, DurationRound, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::Store;
use crate::domain::ids::EndpointId;
use crate::error::Result;

/// One endpoint's last hour.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointStats {
    /// `ep_…`
    #[schema(value_type = String)]
    pub endpoint_id: EndpointId,
    /// Requests sent in the last hour (attempts a transformation refused or
    /// cancelled never reached the receiver and are not counted).
    pub attempts: i64,
    /// Successful attempts.
    pub succeeded: i64,
    /// Failed attempts (rate limits are not failures).
    pub failed: i64,
    /// Answers of 429 that were deferred without spending an attempt.
    pub rate_limited: i64,
    /// succeeded / (succeeded + failed), null without either.
    pub success_rate: Option<f64>,
    /// Mean attempt duration.
    pub avg_latency_ms: Option<f64>,
    /// Median attempt duration.
    pub p50_latency_ms: Option<f64>,
    /// Status code of the latest attempt.
    pub last_status_code: Option<i32>,
    /// Time of the latest attempt.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// Attempts per minute over the last 60 minutes, oldest first.
    pub per_minute: Vec<i64>,
}

/// One minute of the tenant's traffic.
#[derive(Debug, Serialize, ToSchema)]
pub struct Bucket {
    /// Start of the minute.
    pub minute: DateTime<Utc>,
    /// Successful attempts.
    pub delivered: i64,
    /// Failed attempts (not rate limits, and not attempts a transformation
    /// refused: those show as dead letters when they end one).
    pub failed: i64,
    /// Deliveries that went dead.
    pub dead: i64,
}

/// Queue figures for `/metrics`.
#[derive(Debug, Default)]
pub struct QueueStats {
    /// Rows per delivery status.
    pub by_status: Vec<(String, i64)>,
    /// Age of the oldest due delivery, seconds.
    pub oldest_due_secs: f64,
    /// Pending deliveries whose attempt is due now (not those waiting for a retry).
    pub due: i64,
}

impl QueueStats {
    /// What a worker fleet has to do right now: due plus in-flight deliveries.
    /// The autoscaling metric (see the chart's `worker.keda`).
    pub fn work(&self) -> i64 {
        let in_flight = self
            .by_status
            .iter()
            .find(|(s, _)| s == "in_flight")
            .map_or(0, |(_, n)| *n);
        self.due + in_flight
    }
}

type StatsRow = (
    Uuid,
    i64,
    i64,
    i64,
    Option<f64>,
    Option<f64>,
    Option<i32>,
    Option<DateTime<Utc>>,
);

impl Store {
    /// Last-hour figures of each of the tenant's endpoints.
    pub async fn endpoint_stats(&self, tenant: &str) -> Result<Vec<EndpointStats>> {
        let rows: Vec<StatsRow> = sqlx::query_as(
            "SELECT e.id, count(a.attempt), count(a.attempt) FILTER (WHERE a.succeeded),
                    count(a.attempt) FILTER (WHERE a.rate_limited),
                    avg(a.duration_ms)::float8, percentile_cont(0.5) WITHIN GROUP (ORDER BY a.duration_ms),
                    (SELECT l.status_code FROM delivery_attempts l WHERE l.endpoint_id = e.id AND l.sent
                     ORDER BY l.started_at DESC LIMIT 1),
                    max(a.started_at)
             FROM endpoints e
             LEFT JOIN delivery_attempts a ON a.endpoint_id = e.id AND a.started_at > now() - interval '1 hour' AND a.sent
             WHERE e.tenant = $1 AND e.deleted_at IS NULL
             GROUP BY e.id ORDER BY e.id",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        let now = Utc::now()
            .duration_trunc(chrono::Duration::minutes(1))
            .unwrap_or_else(|_| Utc::now());
        let minutes: Vec<(Uuid, DateTime<Utc>, i64)> = sqlx::query_as(
            "SELECT a.endpoint_id, date_trunc('minute', a.started_at), count(*)
             FROM delivery_attempts a JOIN endpoints e ON e.id = a.endpoint_id
             WHERE e.tenant = $1 AND a.started_at > $2 - interval '59 minutes' AND a.sent
             GROUP BY 1, 2",
        )
        .bind(tenant)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let mut per: HashMap<Uuid, Vec<i64>> = HashMap::new();
        for (ep, minute, n) in minutes {
            let back = (now - minute).num_minutes();
            if (0..60).contains(&back) {
                per.entry(ep).or_insert_with(|| vec![0; 60])[59 - back as usize] += n;
            }
        }
        Ok(rows
            .into_iter()
            .map(
                |(id, attempts, succeeded, rate_limited, avg, p50, last_code, last_at)| {
                    let failed = attempts - succeeded - rate_limited;
                    EndpointStats {
                        endpoint_id: EndpointId::from_uuid(id),
                        attempts,
                        succeeded,
                        failed,
                        rate_limited,
                        success_rate: (succeeded + failed > 0)
                            .then(|| succeeded as f64 / (succeeded + failed) as f64),
                        avg_latency_ms: avg,
                        p50_latency_ms: p50,
                        last_status_code: last_code,
                        last_attempt_at: last_at,
                        per_minute: per.remove(&id).unwrap_or_else(|| vec![0; 60]),
                    }
                },
            )
            .collect())
    }

    /// Delivered / failed / dead per minute over the last `minutes`, oldest first.
    pub async fn timeseries(&self, tenant: &str, minutes: i64) -> Result<Vec<Bucket>> {
        let minutes = minutes.clamp(1, 24 * 60);
        let now = Utc::now()
            .duration_trunc(chrono::Duration::minutes(1))
            .unwrap_or_else(|_| Utc::now());
        let start = now - chrono::Duration::minutes(minutes - 1);
        let attempts: Vec<(DateTime<Utc>, i64, i64)> = sqlx::query_as(
            "SELECT date_trunc('minute', a.started_at), count(*) FILTER (WHERE a.succeeded),
                    count(*) FILTER (WHERE NOT a.succeeded AND NOT a.rate_limited)
             FROM delivery_attempts a
             WHERE a.started_at >= $2 AND a.sent AND a.endpoint_id IN (SELECT id FROM endpoints WHERE tenant = $1)
             GROUP BY 1",
        )
        .bind(tenant)
        .bind(start)
        .fetch_all(&self.pool)
        .await?;
        let dead: Vec<(DateTime<Utc>, i64)> = sqlx::query_as(
            "SELECT date_trunc('minute', finished_at), count(*) FROM deliveries
             WHERE tenant = $1 AND status = 'dead' AND finished_at >= $2 GROUP BY 1",
        )
        .bind(tenant)
        .bind(start)
        .fetch_all(&self.pool)
        .await?;
        let mut buckets: Vec<Bucket> = (0..minutes)
            .map(|i| Bucket {
                minute: start + chrono::Duration::minutes(i),
                delivered: 0,
                failed: 0,
                dead: 0,
            })
            .collect();
        let idx = |m: DateTime<Utc>| -> Option<usize> {
            let i = (m - start).num_minutes();
            (0..minutes).contains(&i).then_some(i as usize)
        };
        for (m, ok, failed) in attempts {
            if let Some(i) = idx(m) {
                buckets[i].delivered += ok;
                buckets[i].failed += failed;
            }
        }
        for (m, n) in dead {
            if let Some(i) = idx(m) {
                buckets[i].dead += n;
            }
        }
        Ok(buckets)
    }

    /// Queue depth by state and the age of the oldest due delivery.
    pub async fn queue_stats(&self) -> Result<QueueStats> {
        let by_status: Vec<(String, i64)> =
            sqlx::query_as("SELECT status::text, count(*) FROM deliveries GROUP BY 1")
                .fetch_all(&self.pool)
                .await?;
        // One scan of deliveries_due_idx (ordinary rows) and one of
        // deliveries_fifo_idx (FIFO rows, held ones included: they are queued and
        // their age is what a user waits on) give both the age and the count.
        let (oldest, due): (Option<f64>, i64) = sqlx::query_as(
            "SELECT extract(epoch FROM now() - least(a.m, b.m))::float8, a.n + b.n FROM
                (SELECT min(next_attempt_at) AS m, count(*) AS n FROM deliveries
                 WHERE status = 'pending' AND next_attempt_at <= now() AND NOT fifo) a,
                (SELECT min(next_attempt_at) AS m, count(*) AS n FROM deliveries
                 WHERE status = 'pending' AND next_attempt_at <= now() AND fifo) b",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(QueueStats {
            by_status,
            oldest_due_secs: oldest.unwrap_or(0.0).max(0.0),
            due,
        })
    }
}
