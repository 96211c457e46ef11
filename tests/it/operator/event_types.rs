//! The `EventTypesKnown` condition: a WebhookEndpoint subscribing to types its
//! namespace's event-type catalog lacks says so in its status, and stops saying
//! so when the spec (or the catalog) catches up.

use hookit::operator::{WebhookEndpoint, EVENT_TYPES_KNOWN};
use serde_json::json;

use super::endpoints::no_worker;
use super::env::{wait_for, Kube, RunningController};
use super::{apply, manifest, wait_ready, RECONCILE};
use crate::common::TestApp;

/// Waits until the condition has `status` and `reason`; returns its message.
async fn wait_types_condition(kube: &Kube, name: &str, status: &str, reason: &str) -> String {
    let api = kube.api::<WebhookEndpoint>();
    wait_for(
        &format!("{name} {EVENT_TYPES_KNOWN}={status} {reason}"),
        RECONCILE,
        || {
            let api = api.clone();
            async move {
                let we = api.get(name).await.map_err(|e| e.to_string())?;
                let st = we.status.unwrap_or_default();
                let c = st
                    .conditions
                    .iter()
                    .find(|c| c.type_ == EVENT_TYPES_KNOWN)
                    .ok_or("no EventTypesKnown condition yet")?;
                if c.status == status && c.reason == reason {
                    Ok(c.message.clone())
                } else {
                    Err(format!("{c:?}"))
                }
            }
        },
    )
    .await
}

#[tokio::test]
async fn subscriptions_the_catalog_lacks_show_in_a_condition() {
    let Some(kube) = Kube::setup("we-types").await else {
        return;
    };
    let ns = kube.ns.as_str();
    let app = TestApp::spawn_with(no_worker()).await;
    // The namespace is the tenant: its catalog has order.created.
    let key = app.key_for(ns).await;
    let r = app
        .req_as(&key, reqwest::Method::POST, "/v1/event-types")
        .json(&json!({"name": "order.created"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let ctl = RunningController::solo(&kube, &app);
    apply(
        &kube,
        &manifest(
            ns,
            "orders",
            "  url: http://127.0.0.1:9/hooks/orders\n  eventTypes: [\"order.*\", \"refund.*\"]\n",
        ),
    )
    .await;
    // Applied regardless: a missing type is a warning, not a refusal.
    wait_ready(&kube, "orders", "True", Some("Delivering")).await;
    let message = wait_types_condition(&kube, "orders", "False", "UnknownEventTypes").await;
    assert!(message.contains("refund.*"), "{message}");
    assert!(!message.contains("order.*"), "{message}");

    // The spec catches up: the condition turns True, Ready stays as it was.
    apply(
        &kube,
        &manifest(
            ns,
            "orders",
            "  url: http://127.0.0.1:9/hooks/orders\n  eventTypes: [\"order.*\"]\n",
        ),
    )
    .await;
    wait_types_condition(&kube, "orders", "True", "Known").await;
    let we = wait_ready(&kube, "orders", "True", Some("Delivering")).await;
    assert_eq!(we.status.unwrap().conditions.len(), 2);
    ctl.stop().await;
    app.stop().await;
    kube.cleanup().await;
}
