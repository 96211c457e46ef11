//! WebhookEndpoint → endpoint row: apply, status, SSRF refusal, rotation through
//! Secrets, and deletion through the finalizer (the change feed's steady
//! state is in `feed`).

use std::time::Duration;

use hookit::domain::ids::EndpointId;
use hookit::domain::signing::{self, verify};
use hookit::operator::{WebhookEndpoint, ENDPOINT_FINALIZER, SIGNING_LABEL};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;

use super::env::{wait_for, Kube, RunningController};
use super::{apply, events_about, manifest, secret_value, wait_event, wait_ready, RECONCILE};
use crate::common::{Options, Receiver, TestApp};

pub(super) fn no_worker() -> Options {
    Options {
        worker: false,
        ..Default::default()
    }
}

/// Waits until the store signs with `expected` (`whsec_…`).
async fn wait_store_secret(app: &TestApp, ns: &str, id: EndpointId, expected: &str) {
    wait_for(
        "the store to sign with the new secret",
        RECONCILE,
        || async move {
            let s = app
                .store
                .get_endpoint_secret(ns, id)
                .await
                .map_err(|e| e.to_string())?;
            if s.expose() == expected {
                Ok(())
            } else {
                Err("still the old secret".into())
            }
        },
    )
    .await
}

fn endpoint_id(we: &WebhookEndpoint) -> EndpointId {
    we.status
        .as_ref()
        .and_then(|s| s.endpoint_id.as_deref())
        .expect("status.endpointId")
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_webhookendpoint_becomes_ready_with_a_row_and_an_owned_signing_secret() {
    let Some(kube) = Kube::setup("we-ready").await else {
        return;
    };
    let ns = kube.ns.as_str();
    let app = TestApp::spawn_with(no_worker()).await;
    let ctl = RunningController::solo(&kube, &app);
    apply(
        &kube,
        &manifest(
            ns,
            "orders",
            "  url: http://127.0.0.1:9/hooks/orders\n  eventTypes: [\"order.*\"]\n  retry: {maxAttempts: 4, initialBackoff: 2s, maxBackoff: 1m}\n  timeout: 5s\n  headers: {X-Team: fulfilment}\n  rateLimit: 7\n  maxInFlight: 3\n  description: order events\n  format: slack\n",
        ),
    )
    .await;
    let we = wait_ready(&kube, "orders", "True", Some("Delivering")).await;
    assert!(we.finalizers().iter().any(|f| f == ENDPOINT_FINALIZER));
    let status = we.status.clone().unwrap();
    assert_eq!(status.secret_name.as_deref(), Some("orders-signing"));
    assert_eq!(status.state.as_deref(), Some("active"));
    assert_eq!(status.circuit_state.as_deref(), Some("closed"));
    assert_eq!(status.deliveries.as_ref().map(|d| d.succeeded), Some(0));

    // The row, keyed by the resource, with every setting translated.
    let id = endpoint_id(&we);
    let ep = app.store.get_endpoint(ns, id).await.unwrap();
    assert_eq!(ep.managed_by.as_deref(), Some("kubernetes"));
    assert_eq!(ep.url, "http://127.0.0.1:9/hooks/orders");
    assert_eq!(ep.event_types, vec!["order.*".to_string()]);
    assert_eq!(ep.description, "order events");
    assert_eq!(
        (
            ep.max_attempts,
            ep.retry_base_ms,
            ep.retry_cap_ms,
            ep.timeout_ms
        ),
        (Some(4), Some(2_000), Some(60_000), Some(5_000))
    );
    assert_eq!((ep.rate_limit, ep.max_in_flight), (Some(7), Some(3)));
    assert_eq!(ep.format, hookit::domain::formats::Format::Slack);
    assert_eq!(
        ep.headers.get("X-Team").map(String::as_str),
        Some("fulfilment")
    );
    // Ordering and batching (docs/fifo.md) land in the row too.
    apply(
        &kube,
        &manifest(
            ns,
            "ledger",
            "  url: http://127.0.0.1:9/hooks/ledger\n  ordering: fifo\n  batchSize: 20\n",
        ),
    )
    .await;
    let ledger = wait_ready(&kube, "ledger", "True", Some("Delivering")).await;
    let row = app
        .store
        .get_endpoint(ns, endpoint_id(&ledger))
        .await
        .unwrap();
    assert_eq!((row.ordering.as_str(), row.batch_size), ("fifo", 20));

    // The generated Secret: owned by the resource, labelled, and holding the
    // secret the store signs with.
    let secret = kube.api::<Secret>().get("orders-signing").await.unwrap();
    let owner = &secret.owner_references()[0];
    assert_eq!(
        (owner.uid.as_str(), owner.controller),
        (we.uid().unwrap().as_str(), Some(true))
    );
    assert_eq!(
        secret.labels().get(SIGNING_LABEL).map(String::as_str),
        Some("true")
    );
    let current = secret_value(&kube, "orders-signing", "secret").await;
    assert_eq!(
        app.store
            .get_endpoint_secret(ns, id)
            .await
            .unwrap()
            .expose(),
        current
    );
    assert!(events_about(&kube, "orders")
        .await
        .iter()
        .any(|(r, _)| r == "SigningSecretCreated"));

    // REST writes to a Kubernetes-managed endpoint are refused.
    let key = app.key_for(ns).await;
    let r = app
        .req_as(&key, reqwest::Method::PATCH, &format!("/v1/endpoints/{id}"))
        .json(&json!({"description": "changed behind kubectl's back"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);

    // A spec change is applied: paused, new URL.
    apply(
        &kube,
        &manifest(
            ns,
            "orders",
            "  url: http://127.0.0.1:9/v2/orders\n  paused: true\n",
        ),
    )
    .await;
    let we = wait_ready(&kube, "orders", "True", Some("Paused")).await;
    assert_eq!(we.status.unwrap().observed_generation, Some(2));
    let ep = app.store.get_endpoint(ns, id).await.unwrap();
    assert_eq!(
        (ep.url.as_str(), ep.status.as_str()),
        ("http://127.0.0.1:9/v2/orders", "paused")
    );

    // Writing a new value into the owned Secret rotates the signing secret.
    let rotated = signing::Secret::generate().expose();
    kube.api::<Secret>()
        .patch(
            "orders-signing",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"secret": rotated}})),
        )
        .await
        .unwrap();
    wait_store_secret(&app, ns, id, &rotated).await;

    // Deleting the Secret by mistake does not rotate: it comes back as it was.
    kube.api::<Secret>()
        .delete("orders-signing", &DeleteParams::default())
        .await
        .unwrap();
    let api = kube.api::<Secret>();
    wait_for("orders-signing to be recreated", RECONCILE, || async {
        match api.get_opt("orders-signing").await {
            Ok(Some(s)) if s.metadata.deletion_timestamp.is_none() => Ok(()),
            other => Err(format!("{:?}", other.map(|s| s.map(|s| s.metadata.uid)))),
        }
    })
    .await;
    assert_eq!(
        secret_value(&kube, "orders-signing", "secret").await,
        rotated
    );
    assert_eq!(
        app.store
            .get_endpoint_secret(ns, id)
            .await
            .unwrap()
            .expose(),
        rotated
    );

    ctl.stop().await;
    app.stop().await;
    kube.cleanup().await;
}

#[tokio::test]
async fn a_url_refused_by_the_ssrf_policy_is_reported_in_status_and_not_stored() {
    let Some(kube) = Kube::setup("we-ssrf").await else {
        return;
    };
    let ns = kube.ns.as_str();
    let app = TestApp::spawn_with(no_worker()).await;
    // The production default: no private targets.
    let mut cfg = RunningController::config(ns, "solo");
    cfg.allow_private_targets.clear();
    let ctl = RunningController::start(cfg, kube.client.clone(), app.store.clone());

    for (name, url, class) in [
        ("loopback", "http://127.0.0.1:8080/hook", "loopback"),
        (
            "metadata",
            "http://169.254.169.254/latest/meta-data",
            "link-local",
        ),
        ("private", "http://10.1.2.3/hook", "private"),
        ("mapped", "http://[::ffff:127.0.0.1]/hook", "loopback"),
    ] {
        apply(&kube, &manifest(ns, name, &format!("  url: {url}\n"))).await;
        let we = wait_ready(&kube, name, "False", Some("UrlRefused")).await;
        let message = we.status.unwrap().ready().unwrap().message.clone();
        assert!(
            message.contains("SSRF") && message.contains(class),
            "{name}: unclear refusal: {message}"
        );
        wait_event(&kube, name, "UrlRefused").await;
    }
    assert!(app
        .store
        .list_endpoints(ns, None, 100)
        .await
        .unwrap()
        .is_empty());

    // Fixing the URL (a public literal address needs no DNS) makes it Ready.
    apply(
        &kube,
        &manifest(ns, "loopback", "  url: http://93.184.216.34/hook\n"),
    )
    .await;
    wait_ready(&kube, "loopback", "True", None).await;
    assert_eq!(
        app.store.list_endpoints(ns, None, 100).await.unwrap().len(),
        1
    );

    // Breaking it again refuses it with a new message (the endpoint keeps its
    // last accepted settings): a second Event. Fixing and breaking it once more
    // repeats that exact Warning: counted on it (its series), not a third Event.
    let refused = manifest(ns, "loopback", "  url: http://127.0.0.1:8080/hook\n");
    let fixed = manifest(ns, "loopback", "  url: http://93.184.216.34/hook\n");
    apply(&kube, &refused).await;
    wait_ready(&kube, "loopback", "False", Some("UrlRefused")).await;
    apply(&kube, &fixed).await;
    wait_ready(&kube, "loopback", "True", None).await;
    apply(&kube, &refused).await;
    wait_ready(&kube, "loopback", "False", Some("UrlRefused")).await;
    wait_for(
        "the repeated UrlRefused Event counted",
        RECONCILE,
        || async {
            let mut counts: Vec<_> = kube
                .api::<Event>()
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?
                .items
                .into_iter()
                .filter(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("loopback")
                        && e.reason.as_deref() == Some("UrlRefused")
                })
                .map(|e| e.series.map(|s| s.count))
                .collect();
            counts.sort();
            match counts.as_slice() {
                [None, Some(2)] => Ok(()),
                other => Err(format!("UrlRefused Events (series counts): {other:?}")),
            }
        },
    )
    .await;

    ctl.stop().await;
    app.stop().await;
    kube.cleanup().await;
}

#[tokio::test]
async fn changing_a_referenced_secret_rotates_and_both_signatures_are_sent() {
    let Some(kube) = Kube::setup("we-rotation").await else {
        return;
    };
    let ns = kube.ns.as_str();
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let ctl = RunningController::solo(&kube, &app);
    let old = signing::Secret::generate();
    let new = signing::Secret::generate();
    let secret_yaml = |value: &str| {
        format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: partner-signing\n  namespace: {ns}\nstringData:\n  whsec: {value}\n")
    };
    apply(&kube, &secret_yaml(&old.expose())).await;
    apply(
        &kube,
        &manifest(
            ns,
            "partner",
            &format!(
                "  url: {}\n  secretRef: {{name: partner-signing, key: whsec}}\n",
                receiver.url("/partner")
            ),
        ),
    )
    .await;
    let we = wait_ready(&kube, "partner", "True", None).await;
    let id = endpoint_id(&we);
    assert_eq!(
        we.status.unwrap().secret_name.as_deref(),
        Some("partner-signing")
    );
    assert!(kube
        .api::<Secret>()
        .get_opt("partner-signing-signing")
        .await
        .unwrap()
        .is_none());

    let key = app.key_for(ns).await;
    let publish = |n: u32| {
        let (app, key) = (&app, &key);
        async move {
            let r = app
                .req_as(key, reqwest::Method::POST, "/v1/events")
                .json(&json!({"event_type": "invoice.paid", "payload": {"n": n}}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 202);
        }
    };
    let verifies = |r: &crate::common::receiver::Received, s: &signing::Secret| {
        verify(
            s,
            &r.header("webhook-id"),
            &r.header("webhook-timestamp"),
            &r.header("webhook-signature"),
            &r.body,
            chrono::Utc::now().timestamp(),
        )
        .is_ok()
    };
    publish(1).await;
    let got = receiver.wait_for(1, Duration::from_secs(20)).await;
    assert!(verifies(&got[0], &old));
    assert_eq!(got[0].header("webhook-signature").split(' ').count(), 1);

    // Rotate by changing the referenced Secret (a .watches() trigger).
    apply(&kube, &secret_yaml(&new.expose())).await;
    wait_store_secret(&app, ns, id, &new.expose()).await;
    publish(2).await;
    let got = receiver.wait_for(2, Duration::from_secs(20)).await;
    let second = &got[1];
    assert_eq!(second.header("webhook-signature").split(' ').count(), 2);
    assert!(verifies(second, &new), "the new secret must sign");
    assert!(
        verifies(second, &old),
        "the old secret keeps signing during the overlap"
    );

    // The referenced Secret disappearing is reported; the endpoint keeps its key.
    kube.api::<Secret>()
        .delete("partner-signing", &DeleteParams::default())
        .await
        .unwrap();
    let we = wait_ready(&kube, "partner", "False", Some("SecretNotFound")).await;
    assert!(we
        .status
        .unwrap()
        .ready()
        .unwrap()
        .message
        .contains("last accepted settings"));
    assert_eq!(app.store.get_endpoint_secret(ns, id).await.unwrap(), new);

    ctl.stop().await;
    app.stop().await;
    kube.cleanup().await;
}

#[tokio::test]
async fn deleting_a_webhookendpoint_retires_it_and_dead_letters_its_pending_deliveries() {
    let Some(kube) = Kube::setup("we-delete").await else {
        return;
    };
    let ns = kube.ns.as_str();
    // No worker: deliveries stay pending.
    let app = TestApp::spawn_with(no_worker()).await;
    let ctl = RunningController::solo(&kube, &app);
    apply(
        &kube,
        &manifest(ns, "doomed", "  url: http://127.0.0.1:9/doomed\n"),
    )
    .await;
    let we = wait_ready(&kube, "doomed", "True", None).await;
    let id = endpoint_id(&we);
    let key = app.key_for(ns).await;
    for n in 0..3 {
        let r = app
            .req_as(&key, reqwest::Method::POST, "/v1/events")
            .json(&json!({"event_type": "order.created", "payload": {"n": n}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
    }
    let pending: (i64,) = sqlx::query_as(
        "SELECT count(*) FROM deliveries WHERE endpoint_id = $1 AND status = 'pending'",
    )
    .bind(id.uuid())
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(pending.0, 3);

    let api = kube.api::<WebhookEndpoint>();
    api.delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the resource to be gone", RECONCILE, || async {
        match api.get_opt("doomed").await {
            Ok(None) => Ok(()),
            other => Err(format!(
                "{:?}",
                other.map(|o| o.map(|o| o.finalizers().to_vec()))
            )),
        }
    })
    .await;
    assert!(matches!(
        app.store.get_endpoint(ns, id).await,
        Err(hookit::error::Error::NotFound(_))
    ));
    let rows: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT status::text, last_error FROM deliveries WHERE endpoint_id = $1")
            .bind(id.uuid())
            .fetch_all(app.store.pool())
            .await
            .unwrap();
    assert_eq!(rows.len(), 3, "deliveries are dead-lettered, never dropped");
    for (status, error) in rows {
        assert_eq!(status, "dead");
        assert_eq!(error.as_deref(), Some("endpoint deleted"));
    }
    assert!(events_about(&kube, "doomed")
        .await
        .iter()
        .any(|(r, _)| r == "Retired"));

    ctl.stop().await;
    app.stop().await;
    kube.cleanup().await;
}

#[tokio::test]
async fn an_endpoint_the_worker_disabled_stays_disabled_until_the_spec_resumes_it() {
    let Some(kube) = Kube::setup("we-disabled").await else {
        return;
    };
    let ns = kube.ns.as_str();
    let app = TestApp::spawn_with(no_worker()).await;
    let ctl = RunningController::solo(&kube, &app);
    apply(
        &kube,
        &manifest(ns, "flaky", "  url: http://127.0.0.1:9/flaky\n"),
    )
    .await;
    let we = wait_ready(&kube, "flaky", "True", None).await;
    let id = endpoint_id(&we);

    // What the worker does after a 410 Gone or days of failures.
    app.store
        .disable_endpoint(id.uuid(), "410 Gone")
        .await
        .unwrap();
    // The periodic refresh (1s here) reports it and must not undo it.
    let we = wait_ready(&kube, "flaky", "False", Some("Disabled")).await;
    assert!(we
        .status
        .as_ref()
        .unwrap()
        .ready()
        .unwrap()
        .message
        .contains("410 Gone"));
    assert_eq!(we.status.unwrap().state.as_deref(), Some("disabled"));
    assert_eq!(
        app.store.get_endpoint(ns, id).await.unwrap().status,
        "disabled"
    );

    // Pausing and resuming through the spec brings it back.
    apply(
        &kube,
        &manifest(
            ns,
            "flaky",
            "  url: http://127.0.0.1:9/flaky\n  paused: true\n",
        ),
    )
    .await;
    wait_ready(&kube, "flaky", "False", Some("Disabled")).await;
    apply(
        &kube,
        &manifest(
            ns,
            "flaky",
            "  url: http://127.0.0.1:9/flaky\n  paused: false\n",
        ),
    )
    .await;
    wait_ready(&kube, "flaky", "True", Some("Delivering")).await;
    assert_eq!(
        app.store.get_endpoint(ns, id).await.unwrap().status,
        "active"
    );

    ctl.stop().await;
    app.stop().await;
    kube.cleanup().await;
}

#[tokio::test]
async fn deleting_a_foreign_signing_secret_clears_the_conflict_at_once() {
    let Some(kube) = Kube::setup("we-foreign").await else {
        return;
    };
    let ns = kube.ns.as_str();
    let app = TestApp::spawn_with(no_worker()).await;
    let ctl = RunningController::solo(&kube, &app);
    // A Secret of the generated name that nobody labelled or owns: the
    // controller must not take it over.
    apply(
        &kube,
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: orders-signing\n  namespace: {ns}\nstringData:\n  unrelated: keep-me\n"
        ),
    )
    .await;
    apply(
        &kube,
        &manifest(ns, "orders", "  url: http://127.0.0.1:9/orders\n"),
    )
    .await;
    let we = wait_ready(&kube, "orders", "False", Some("SecretConflict")).await;
    let message = we.status.unwrap().ready().unwrap().message.clone();
    assert!(message.contains("orders-signing"), "{message}");
    assert_eq!(
        secret_value(&kube, "orders-signing", "unrelated").await,
        "keep-me"
    );

    // Deleting it, as the message says, is noticed by the Secret watch: the
    // retry of a refused spec is minutes away, far beyond this wait.
    kube.api::<Secret>()
        .delete("orders-signing", &DeleteParams::default())
        .await
        .unwrap();
    wait_ready(&kube, "orders", "True", None).await;
    let s = kube.api::<Secret>().get("orders-signing").await.unwrap();
    assert!(
        s.owner_references().iter().any(|o| o.name == "orders"),
        "the recreated Secret is owned by the endpoint"
    );

    ctl.stop().await;
    app.stop().await;
    kube.cleanup().await;
}
