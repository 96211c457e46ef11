//! Retention.

use std::time::Duration;

use hookit::domain::ids::EventId;
use serde_json::json;

use crate::common::{eventually, Options, TestApp};

/// The UUID `{0}` with its first 48 bits (a UUIDv7's millisecond timestamp)
/// set to `$2` days ago: it sorts among the ids drawn then.
const V7_DAYS_AGO: &str = "encode(overlay(uuid_send({0}) PLACING substring(int8send((extract(epoch FROM now() - $2 * interval '1 day') * 1000)::bigint) FROM 3) FROM 1 FOR 6), 'hex')::uuid";

/// An API without a worker, so that nothing is delivered behind the test's back.
async fn quiet_app() -> TestApp {
    TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await
}

/// Marks every delivery of `event` finished with `status` after one attempt.
async fn finish(pool: &sqlx::PgPool, event: uuid::Uuid, status: &str) {
    sqlx::query(
        "UPDATE deliveries SET status = $2::delivery_status, attempts = 1, next_attempt_at = NULL, finished_at = now()
         WHERE event_id = $1",
    )
    .bind(event)
    .bind(status)
    .execute(pool)
    .await
    .unwrap();
}

/// Publishes a `one.x` event under an idempotency key; returns its id.
async fn publish_keyed(app: &TestApp, key: &str) -> uuid::Uuid {
    let r = app
        .req(reqwest::Method::POST, "/v1/events")
        .header("idempotency-key", key)
        .json(&json!({"event_type": "one.x", "payload": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let body: serde_json::Value = r.json().await.unwrap();
    body["id"]
        .as_str()
        .unwrap()
        .parse::<EventId>()
        .unwrap()
        .uuid()
}

/// Makes an event `days` old, as if accepted then: its `created_at` and its
/// id (a UUIDv7 drawn at acceptance, which retention reads its age from), with
/// its deliveries and idempotency record re-pointed (the record carries its
/// event's instant). Returns the event's new id.
async fn backdate(pool: &sqlx::PgPool, event: uuid::Uuid, days: f64) -> uuid::Uuid {
    let (id,): (uuid::Uuid,) = sqlx::query_as(&format!(
        "WITH new AS (SELECT {} AS id),
              d AS (UPDATE deliveries SET event_id = (SELECT id FROM new) WHERE event_id = $1),
              k AS (UPDATE idempotency_keys SET event_id = (SELECT id FROM new),
                           created_at = now() - $2 * interval '1 day' WHERE event_id = $1)
         UPDATE events SET id = (SELECT id FROM new), created_at = now() - $2 * interval '1 day'
         WHERE id = $1 RETURNING id",
        V7_DAYS_AGO.replace("{0}", "$1::uuid")
    ))
    .bind(event)
    .bind(days)
    .fetch_one(pool)
    .await
    .unwrap();
    id
}

#[tokio::test]
async fn retention_prunes_only_old_fully_delivered_events() {
    let app = quiet_app().await;
    let pool = app.store.pool();
    let a = app
        .endpoint(json!({"url": "https://93.184.216.34/a"}))
        .await;
    app.endpoint(json!({"url": "https://93.184.216.34/b", "event_types": ["two.*"]}))
        .await;
    let uuid = |id: &str| id.parse::<EventId>().unwrap().uuid();

    let old_ok = uuid(&app.publish("one.x", json!({})).await);
    finish(pool, old_ok, "succeeded").await;
    sqlx::query(
        "INSERT INTO delivery_attempts (delivery_id, attempt, endpoint_id, started_at, duration_ms, status_code, succeeded)
         SELECT id, 1, endpoint_id, now() - interval '40 days', 5, 200, true FROM deliveries WHERE event_id = $1",
    )
    .bind(old_ok)
    .execute(pool)
    .await
    .unwrap();
    let old_ok = backdate(pool, old_ok, 40.0).await;
    let old_dead = uuid(&app.publish("one.x", json!({})).await);
    finish(pool, old_dead, "dead").await;
    let old_dead = backdate(pool, old_dead, 40.0).await;
    let old_pending = uuid(&app.publish("one.x", json!({})).await);
    let old_pending = backdate(pool, old_pending, 40.0).await;
    // Two deliveries: one succeeded, one dead letter.
    let old_mixed = uuid(&app.publish("two.x", json!({})).await);
    finish(pool, old_mixed, "succeeded").await;
    sqlx::query("UPDATE deliveries SET status = 'dead' WHERE event_id = $1 AND endpoint_id = $2")
        .bind(old_mixed)
        .bind(a.parse::<hookit::domain::ids::EndpointId>().unwrap().uuid())
        .execute(pool)
        .await
        .unwrap();
    let old_mixed = backdate(pool, old_mixed, 40.0).await;
    let new_ok = uuid(&app.publish("one.x", json!({})).await);
    finish(pool, new_ok, "succeeded").await;
    // An idempotency record past its 24 h, on an event that is itself kept.
    publish_keyed(&app, "old-key").await;
    sqlx::query(
        "UPDATE idempotency_keys SET created_at = now() - interval '2 days' WHERE key = 'old-key'",
    )
    .execute(pool)
    .await
    .unwrap();
    // Enough old delivered events to need several batches.
    sqlx::query(&format!(
        "WITH ev AS (
            INSERT INTO events (id, tenant, event_type, body, created_at)
            SELECT {}, 'acme', 'bulk.old', '{{}}', now() - $2 * interval '1 day' FROM generate_series(1, 2500)
            RETURNING id)
         INSERT INTO deliveries (id, tenant, event_id, endpoint_id, status, attempts, finished_at)
         SELECT gen_random_uuid(), 'acme', ev.id, $1, 'succeeded', 1, now() FROM ev",
        V7_DAYS_AGO.replace("{0}", "gen_random_uuid()")
    ))
    .bind(a.parse::<hookit::domain::ids::EndpointId>().unwrap().uuid())
    .bind(35.0)
    .execute(pool)
    .await
    .unwrap();

    let retention = Duration::from_secs(30 * 86_400);
    // Oldest first, one batch at a time.
    assert_eq!(app.store.prune(retention, 1).await.unwrap(), 1000);
    let exists = |event: uuid::Uuid| async move {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM events WHERE id = $1")
            .bind(event)
            .fetch_one(pool)
            .await
            .unwrap();
        n == 1
    };
    assert!(
        !exists(old_ok).await,
        "the oldest delivered event goes in the first batch"
    );
    assert_eq!(app.store.prune(retention, 50).await.unwrap(), 1501);
    assert_eq!(
        app.store.prune(retention, 50).await.unwrap(),
        0,
        "nothing left to prune"
    );

    for (what, event) in [
        ("dead letter", old_dead),
        ("pending", old_pending),
        ("partly dead", old_mixed),
        ("recent", new_ok),
    ] {
        assert!(exists(event).await, "the {what} event was kept");
    }
    let count = |sql: &'static str| async move {
        let (n,): (i64,) = sqlx::query_as(sql).fetch_one(pool).await.unwrap();
        n
    };
    assert_eq!(
        count("SELECT count(*) FROM events WHERE event_type = 'bulk.old'").await,
        0
    );
    assert_eq!(count("SELECT count(*) FROM deliveries d LEFT JOIN events e ON e.id = d.event_id WHERE e.id IS NULL").await, 0);
    assert_eq!(
        count("SELECT count(*) FROM delivery_attempts").await,
        0,
        "attempt logs go with their event"
    );
    assert_eq!(
        count("SELECT count(*) FROM idempotency_keys WHERE key = 'old-key'").await,
        0,
        "expired idempotency records are pruned"
    );
    assert_eq!(
        count("SELECT count(*) FROM deliveries WHERE status = 'dead'").await,
        2,
        "dead letters are kept"
    );
    app.stop().await;
}

#[tokio::test]
async fn retention_keeps_a_delivery_redriven_while_it_prunes() {
    let app = quiet_app().await;
    let pool = app.store.pool();
    app.endpoint(json!({"url": "https://93.184.216.34/a"}))
        .await;
    let event = app
        .publish("one.x", json!({}))
        .await
        .parse::<EventId>()
        .unwrap()
        .uuid();
    finish(pool, event, "succeeded").await;
    let event = backdate(pool, event, 40.0).await;

    // A redrive of the delivery, still uncommitted: retention's snapshot sees a
    // fully delivered old event and picks it, then waits for the delivery's lock.
    let mut redrive = pool.begin().await.unwrap();
    sqlx::query(
        "UPDATE deliveries SET status = 'pending', round_base = attempts, finished_at = NULL,
             next_attempt_at = now(), updated_at = now()
         WHERE event_id = $1",
    )
    .bind(event)
    .execute(&mut *redrive)
    .await
    .unwrap();
    let store = app.store.clone();
    let pruning = tokio::spawn(async move {
        store
            .prune(Duration::from_secs(30 * 86_400), 1)
            .await
            .unwrap()
    });
    eventually("retention waits for the redrive's row lock", Duration::from_secs(10), || async {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%WITH picked AS%'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        n > 0
    })
    .await;
    redrive.commit().await.unwrap();

    assert_eq!(pruning.await.unwrap(), 0, "nothing was pruned");
    let (events,): (i64,) = sqlx::query_as("SELECT count(*) FROM events WHERE id = $1")
        .bind(event)
        .fetch_one(pool)
        .await
        .unwrap();
    let (status,): (String,) =
        sqlx::query_as("SELECT status::text FROM deliveries WHERE event_id = $1")
            .bind(event)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(
        (events, status.as_str()),
        (1, "pending"),
        "the redriven delivery and its event survive retention"
    );
    app.stop().await;
}

/// With a retention shorter than the idempotency window, a key goes with its
/// event: a retry after both are pruned is a new event, not a conflict with a
/// record whose event is gone.
#[tokio::test]
async fn an_idempotency_record_never_outlives_its_event() {
    let app = quiet_app().await;
    let pool = app.store.pool();
    app.endpoint(json!({"url": "https://93.184.216.34/a"}))
        .await;
    let first = publish_keyed(&app, "order-7").await;
    finish(pool, first, "succeeded").await;
    // Two hours old, with a retention of one hour: past retention, well
    // inside the 24 h idempotency window.
    let first = backdate(pool, first, 2.0 / 24.0).await;
    assert_eq!(
        app.store
            .prune(Duration::from_secs(3600), 50)
            .await
            .unwrap(),
        1
    );
    let (keys,): (i64,) = sqlx::query_as("SELECT count(*) FROM idempotency_keys")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(keys, 0, "the record went with its event");
    let again = publish_keyed(&app, "order-7").await;
    assert_ne!(again, first, "the retry is a new event");
    app.stop().await;
}
