//! How soon a change of the catalog reaches the validators of this and another
//! API process.

use std::sync::Arc;
use std::time::Duration;

use hookit::api::{self, AppState};
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::common::{eventually, TestApp};

#[tokio::test]
async fn a_change_reaches_this_process_at_its_next_publish() {
    let app = TestApp::spawn_with(no_worker()).await;
    app.endpoint(json!({"url": "https://93.184.216.34/a"}))
        .await;
    let payload = json!({"id": "o-1", "amount": 5});
    // No type yet: accepted (and the empty catalog is now cached).
    app.publish("order.created", payload.clone()).await;
    create_order_type(&app).await;
    app.publish("order.created", payload.clone()).await;
    let (status, _) = app
        .post(
            "/v1/events",
            json!({"event_type": "order.created", "payload": {"id": 1}}),
        )
        .await;
    assert_eq!(status, 422);

    // A stricter schema (and a matching example) applies at once...
    let (status, body) = patch(
        &app,
        "/v1/event-types/order.created",
        json!({"schema": {"type": "object", "required": ["id", "amount", "currency"]},
               "example": {"id": "o", "amount": 1, "currency": "EUR"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, p) = app
        .post(
            "/v1/events",
            json!({"event_type": "order.created", "payload": payload}),
        )
        .await;
    assert_eq!(status, 422, "{p}");
    assert!(p["errors"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("currency"));
    // ...and so does its removal.
    patch(
        &app,
        "/v1/event-types/order.created",
        json!({"schema": null}),
    )
    .await;
    app.publish("order.created", json!({"id": 1})).await;
    app.stop().await;
}

/// A second API process on the same database, with a validator cache of its own.
struct SecondApi {
    base: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl SecondApi {
    async fn start(app: &TestApp) -> Self {
        let state = AppState::new(&app.cfg, app.store.clone(), Arc::new(Notify::new()), None)
            .expect("app state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let task = tokio::spawn(api::serve_on(listener, state, stop.clone()));
        Self { base, stop, task }
    }

    async fn publish(&self, app: &TestApp, body: Value) -> u16 {
        app.http
            .post(format!("{}/v1/events", self.base))
            .bearer_auth(&app.key)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_change_reaches_another_api_process_within_the_revalidation_interval() {
    let app = TestApp::spawn_with(no_worker()).await;
    app.endpoint(json!({"url": "https://93.184.216.34/a"}))
        .await;
    create_order_type(&app).await;
    let other = SecondApi::start(&app).await;
    let bad =
        json!({"event_type": "order.created", "payload": {"id": "o", "amount": 1, "currency": 1}});
    // The other process compiles the current schema: this payload passes there.
    assert_eq!(other.publish(&app, bad.clone()).await, 202);

    let (status, _) = patch(
        &app,
        "/v1/event-types/order.created",
        json!({"schema": {"type": "object", "properties": {"currency": {"type": "string"}}}}),
    )
    .await;
    assert_eq!(status, 200);
    // This process knows at once; the other within its revalidation interval.
    let (status, _) = app.post("/v1/events", bad.clone()).await;
    assert_eq!(status, 422);
    let limit = hookit::api::catalog::REVALIDATE + Duration::from_secs(2);
    eventually(
        "the other API process to apply the new schema",
        limit,
        || {
            let bad = bad.clone();
            let other = &other;
            let app = &app;
            async move { other.publish(app, bad).await == 422 }
        },
    )
    .await;
    // And the strict switch the same way.
    patch(&app, "/v1/settings", json!({"strict_event_types": true})).await;
    let unknown = json!({"event_type": "un.known", "payload": {}});
    eventually("the other API process to apply strict mode", limit, || {
        let unknown = unknown.clone();
        let other = &other;
        let app = &app;
        async move { other.publish(app, unknown).await == 422 }
    })
    .await;
    other.stop().await;
    app.stop().await;
}
