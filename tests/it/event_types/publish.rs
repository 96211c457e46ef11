//! Schema checks at publish (single and batch), the strict switch, deprecation.

use serde_json::json;

use super::*;
use crate::common::TestApp;

#[tokio::test]
async fn a_payload_that_breaks_its_schema_is_refused_with_pointers() {
    let app = TestApp::spawn_with(no_worker()).await;
    app.endpoint(json!({"url": "https://93.184.216.34/a"}))
        .await;
    create_order_type(&app).await;
    let (_, _) = app
        .post("/v1/event-types", json!({"name": "order.note"}))
        .await;

    let (status, p) = app
        .post(
            "/v1/events",
            json!({"event_type": "order.created", "payload": {"id": 7, "amount": -3, "lines": [{"sku": "a"}, {"qty": 1}]}}),
        )
        .await;
    assert_eq!(status, 422, "{p}");
    assert_eq!(problem_type(&p), "payload-schema-mismatch");
    let mut got = pointers(&p);
    got.sort();
    assert_eq!(got, ["/payload/amount", "/payload/id", "/payload/lines/1"]);
    assert!(p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| !e["detail"].as_str().unwrap().is_empty()));
    let (_, p) = app
        .post(
            "/v1/events",
            json!({"event_type": "order.created", "payload": {"id": "o-2"}}),
        )
        .await;
    assert_eq!(pointers(&p), ["/payload"]);
    assert!(p["errors"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("amount"));
    assert_eq!(count(&app, "SELECT count(*) FROM events").await, 0);

    // Valid payloads, types without a schema and unknown types are accepted.
    app.publish("order.created", json!({"id": "o-1", "amount": 5}))
        .await;
    app.publish("order.note", json!({"anything": [1, "two"]}))
        .await;
    app.publish("never.heard.of", json!({"x": 1})).await;
    assert_eq!(count(&app, "SELECT count(*) FROM events").await, 3);

    // The schema is the tenant's: another tenant's order.created is unchecked.
    let other = app.key_for("globex").await;
    let r = app
        .req_as(&other, reqwest::Method::POST, "/v1/events")
        .json(&json!({"event_type": "order.created", "payload": {"id": 7}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    app.stop().await;
}

#[tokio::test]
async fn a_batch_refuses_only_the_items_that_break_their_schema() {
    let app = TestApp::spawn_with(no_worker()).await;
    app.endpoint(json!({"url": "https://93.184.216.34/a"}))
        .await;
    create_order_type(&app).await;
    let (status, body) = app
        .post(
            "/v1/events/batch",
            json!({"events": [
                {"event_type": "order.created", "payload": {"id": "o-1", "amount": 1}},
                {"event_type": "order.created", "payload": {"id": "o-2", "amount": "ten"}, "idempotency_key": "k2"},
                {"event_type": "other.thing", "payload": {"id": 3}},
                {"event_type": "order.created", "payload": {"amount": 4}},
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let statuses: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["accepted", "refused", "accepted", "refused"]);
    let second = &body["results"][1]["problem"];
    assert_eq!(problem_type(second), "payload-schema-mismatch");
    assert_eq!(pointers(second), ["/payload/amount"]);
    assert_eq!(pointers(&body["results"][3]["problem"]), ["/payload"]);
    assert_eq!(count(&app, "SELECT count(*) FROM events").await, 2);
    // A refused item leaves its idempotency key unused.
    assert_eq!(
        count(&app, "SELECT count(*) FROM idempotency_keys").await,
        0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_strict_tenant_refuses_unknown_types_and_only_it() {
    let app = TestApp::spawn_with(no_worker()).await;
    app.endpoint(json!({"url": "https://93.184.216.34/a"}))
        .await;
    let (status, s) = app.get("/v1/settings").await;
    assert_eq!(status, 200);
    assert_eq!(s["strict_event_types"], false);
    create_order_type(&app).await;
    app.publish("unlisted.type", json!({})).await;

    let (status, s) = patch(&app, "/v1/settings", json!({"strict_event_types": true})).await;
    assert_eq!((status, &s["strict_event_types"]), (200, &json!(true)));
    let (status, p) = app
        .post(
            "/v1/events",
            json!({"event_type": "unlisted.type", "payload": {}}),
        )
        .await;
    assert_eq!((status, problem_type(&p)), (422, "unknown-event-type"));
    app.publish("order.created", json!({"id": "o", "amount": 1}))
        .await;
    let (_, body) = app
        .post(
            "/v1/events/batch",
            json!({"events": [
                {"event_type": "unlisted.type", "payload": {}},
                {"event_type": "order.created", "payload": {"id": "o", "amount": 2}},
            ]}),
        )
        .await;
    assert_eq!(body["results"][0]["status"], "refused");
    assert_eq!(
        problem_type(&body["results"][0]["problem"]),
        "unknown-event-type"
    );
    assert_eq!(body["results"][1]["status"], "accepted");

    // Other tenants are not strict.
    let other = app.key_for("globex").await;
    let r = app
        .req_as(&other, reqwest::Method::POST, "/v1/events")
        .json(&json!({"event_type": "unlisted.type", "payload": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    // Unknown fields are a bad request; off again, unknown types pass again.
    let (status, _) = patch(&app, "/v1/settings", json!({"strict": true})).await;
    assert_eq!(status, 400);
    // serde would fill the patch from an array by position: refused instead.
    let (status, p) = patch(&app, "/v1/settings", json!([false])).await;
    assert_eq!((status, problem_type(&p)), (400, "invalid-body"));
    let (_, s) = app.get("/v1/settings").await;
    assert_eq!(s["strict_event_types"], true);
    patch(&app, "/v1/settings", json!({"strict_event_types": false})).await;
    app.publish("unlisted.type", json!({})).await;
    app.stop().await;
}

#[tokio::test]
async fn a_deprecated_type_is_accepted_and_flagged() {
    let app = TestApp::spawn_with(no_worker()).await;
    app.endpoint(json!({"url": "https://93.184.216.34/a"}))
        .await;
    create_order_type(&app).await;
    let r = app
        .req(reqwest::Method::POST, "/v1/events")
        .json(&json!({"event_type": "order.created", "payload": {"id": "o", "amount": 1}}))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("deprecation").is_none());

    let (_, et) = app
        .post("/v1/event-types/order.created/deprecate", json!({}))
        .await;
    let at = chrono::DateTime::parse_from_rfc3339(et["deprecated_at"].as_str().unwrap()).unwrap();
    let r = app
        .req(reqwest::Method::POST, "/v1/events")
        .json(&json!({"event_type": "order.created", "payload": {"id": "o", "amount": 2}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // RFC 9745: `@` and the Unix time of the deprecation.
    assert_eq!(
        r.headers()["deprecation"].to_str().unwrap(),
        format!("@{}", at.timestamp())
    );
    assert!(r.headers()["link"]
        .to_str()
        .unwrap()
        .contains("/v1/event-types/order.created>; rel=\"deprecation\""));

    // Still checked against its schema.
    let (status, _) = app
        .post(
            "/v1/events",
            json!({"event_type": "order.created", "payload": {"id": 1}}),
        )
        .await;
    assert_eq!(status, 422);

    let (_, body) = app
        .post(
            "/v1/events/batch",
            json!({"events": [
                {"event_type": "order.created", "payload": {"id": "o", "amount": 3}},
                {"event_type": "other.type", "payload": {}},
            ]}),
        )
        .await;
    assert_eq!(body["results"][0]["status"], "accepted");
    assert_eq!(
        body["results"][0]["warnings"][0]["kind"],
        "deprecated-event-type"
    );
    assert!(body["results"][1].get("warnings").is_none(), "{body}");
    app.stop().await;
}
