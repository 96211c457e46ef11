//! Idempotent ingestion: replays, conflicting reuse, and concurrent duplicates.

use std::collections::HashSet;

use serde_json::json;

use crate::common::{Options, TestApp};

#[tokio::test]
async fn a_repeated_key_replays_the_original_response() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    app.endpoint(json!({"url": "https://93.184.216.34/a"}))
        .await;
    let body = json!({"event_type": "order.created", "payload": {"id": 7}});
    let first = app
        .req(reqwest::Method::POST, "/v1/events")
        .header("idempotency-key", "order-7")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: serde_json::Value = first.json().await.unwrap();

    let again = app
        .req(reqwest::Method::POST, "/v1/events")
        .header("idempotency-key", "order-7")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(first, again);

    let different = json!({"event_type": "order.created", "payload": {"id": 8}});
    let r = app
        .req(reqwest::Method::POST, "/v1/events")
        .header("idempotency-key", "order-7")
        .json(&different)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(r.headers()["content-type"], "application/problem+json");

    // The same key in another tenant is another request.
    let other = app.key_for("globex").await;
    let r = app
        .req_as(&other, reqwest::Method::POST, "/v1/events")
        .header("idempotency-key", "order-7")
        .json(&different)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    let (events,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(events, 2);
    app.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_requests_with_one_key_store_one_event() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    app.endpoint(json!({"url": "https://93.184.216.34/a"}))
        .await;
    app.endpoint(json!({"url": "https://93.184.216.34/b"}))
        .await;
    let body = json!({"event_type": "payment.succeeded", "payload": {"amount": 100}});
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let req = app
            .req(reqwest::Method::POST, "/v1/events")
            .header("idempotency-key", "pay-1")
            .json(&body);
        tasks.push(tokio::spawn(async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let v: serde_json::Value = r.json().await.unwrap();
            (
                status,
                v["id"].as_str().unwrap_or_default().to_string(),
                v["deliveries"].clone(),
            )
        }));
    }
    let mut ids = HashSet::new();
    let mut created = 0;
    for t in tasks {
        let (status, id, deliveries) = t.await.unwrap();
        assert!(status == 202 || status == 200, "status {status}");
        created += usize::from(status == 202);
        assert_eq!(deliveries, 2);
        ids.insert(id);
    }
    assert_eq!(ids.len(), 1, "all fifty got the same event id");
    assert_eq!(created, 1, "exactly one request created it");
    let (events,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    let (deliveries,): (i64,) = sqlx::query_as("SELECT count(*) FROM deliveries")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!((events, deliveries), (1, 2));
    app.stop().await;
}

#[tokio::test]
async fn bad_idempotency_keys_are_refused() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let body = json!({"event_type": "a.b", "payload": {}});
    for key in ["x".repeat(256), "has space".to_string()] {
        let r = app
            .req(reqwest::Method::POST, "/v1/events")
            .header("idempotency-key", key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422);
    }
    let (events,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(events, 0);
    app.stop().await;
}
