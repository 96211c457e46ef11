//! Endpoints are warned about subscriptions the catalog lacks.

use serde_json::json;

use super::*;
use crate::common::TestApp;

#[tokio::test]
async fn endpoints_are_warned_about_subscriptions_the_catalog_lacks() {
    let app = TestApp::spawn_with(no_worker()).await;
    // No catalog: the tenant has not opted in, nothing to warn about.
    let (status, ep) = app
        .post(
            "/v1/endpoints",
            json!({"url": "https://93.184.216.34/a", "event_types": ["order.*"]}),
        )
        .await;
    assert_eq!(status, 201);
    assert!(ep.get("warnings").is_none(), "{ep}");

    create_order_type(&app).await;
    app.post("/v1/event-types", json!({"name": "invoice.legacy"}))
        .await;
    app.post("/v1/event-types/invoice.legacy/deprecate", json!({}))
        .await;
    let (status, ep) = app
        .post(
            "/v1/endpoints",
            json!({"url": "https://93.184.216.34/b",
                   "event_types": ["order.*", "order.created", "refund.*", "customer.deleted", "invoice.legacy", "*"]}),
        )
        .await;
    assert_eq!(status, 201, "{ep}");
    let warned: Vec<(&str, &str)> = ep["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["kind"].as_str().unwrap(), w["subject"].as_str().unwrap()))
        .collect();
    assert_eq!(
        warned,
        [
            ("unknown-event-type", "refund.*"),
            ("unknown-event-type", "customer.deleted"),
            ("deprecated-event-type", "invoice.legacy"),
        ]
    );
    // The endpoint itself is as created, with every subscription.
    assert_eq!(ep["event_types"].as_array().unwrap().len(), 6);

    let id = ep["id"].as_str().unwrap();
    let (status, ep) = patch(
        &app,
        &format!("/v1/endpoints/{id}"),
        json!({"event_types": ["order.created", "order.paid"]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ep["warnings"][0]["subject"], "order.paid");
    assert_eq!(ep["warnings"].as_array().unwrap().len(), 1);
    let (_, ep) = patch(
        &app,
        &format!("/v1/endpoints/{id}"),
        json!({"event_types": ["order.*"]}),
    )
    .await;
    assert!(ep.get("warnings").is_none(), "{ep}");
    // Reads carry no warnings.
    let (_, shown) = app.get(&format!("/v1/endpoints/{id}")).await;
    assert!(shown.get("warnings").is_none());
    app.stop().await;
}
