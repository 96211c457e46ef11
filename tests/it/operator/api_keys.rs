//! API keys from labelled Secrets, and the whole path: a key granted by a
//! Secret publishes an event that reaches a receiver registered by a
//! WebhookEndpoint.

use std::time::Duration;

use hookit::domain::signing::{self, verify};
use hookit::operator::{WebhookEndpoint, API_KEY_FINALIZER};
use k8s_openapi::api::core::v1::Secret;
use kube::api::DeleteParams;
use kube::ResourceExt;
use serde_json::json;

use super::env::{wait_for, Kube, RunningController};
use super::{apply, manifest, secret_value, wait_event, wait_ready, RECONCILE};
use crate::common::{Options, Receiver, TestApp};

fn key_secret(ns: &str, name: &str, label: Option<&str>, key: &str) -> String {
    let labels = label
        .map(|v| format!("  labels:\n    hookit.dev/api-key: \"{v}\"\n"))
        .unwrap_or_default();
    format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {ns}\n{labels}stringData:\n  key: {key}\n")
}

fn fresh_key() -> String {
    format!("hk_k8s_{}", uuid::Uuid::new_v4().simple())
}

async fn wait_tenant(app: &TestApp, key: &str, expected: Option<&str>) {
    wait_for(
        &format!("key to map to {expected:?}"),
        RECONCILE,
        || async {
            let t = app
                .store
                .tenant_for_key(key)
                .await
                .map_err(|e| e.to_string())?;
            if t.as_deref() == expected {
                Ok(())
            } else {
                Err(format!("{t:?}"))
            }
        },
    )
    .await
}

async fn has_finalizer(kube: &Kube, name: &str) -> Option<bool> {
    let s = kube.api::<Secret>().get_opt(name).await.unwrap()?;
    Some(s.finalizers().iter().any(|f| f == API_KEY_FINALIZER))
}

async fn publish_status(app: &TestApp, key: &str) -> u16 {
    app.req_as(key, reqwest::Method::POST, "/v1/events")
        .json(&json!({"event_type": "order.created", "payload": {}}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_labelled_secret_grants_its_key_to_the_namespace_and_losing_it_revokes() {
    let Some(kube) = Kube::setup("apikey").await else {
        return;
    };
    let ns = kube.ns.as_str();
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let ctl = RunningController::solo(&kube, &app);

    let key = fresh_key();
    apply(&kube, &key_secret(ns, "client-a", Some("true"), &key)).await;
    wait_tenant(&app, &key, Some(ns)).await;
    assert_eq!(has_finalizer(&kube, "client-a").await, Some(true));
    assert_eq!(publish_status(&app, &key).await, 202);

    // Taking the label away revokes, and releases the Secret.
    let out = kube
        .kubectl(
            &[
                "label",
                "secret",
                "client-a",
                "-n",
                ns,
                "hookit.dev/api-key-",
            ],
            None,
        )
        .await;
    assert!(out.ok, "{}", out.stderr);
    wait_tenant(&app, &key, None).await;
    wait_for("the finalizer to go", RECONCILE, || async {
        match has_finalizer(&kube, "client-a").await {
            Some(false) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // The API caches key lookups for a few seconds; the revocation lands after that.
    wait_for("the API to refuse the revoked key", RECONCILE, || async {
        match publish_status(&app, &key).await {
            401 => Ok(()),
            other => Err(other.to_string()),
        }
    })
    .await;

    // Labelled again, then a new value: the old key stops working.
    apply(&kube, &key_secret(ns, "client-a", Some("true"), &key)).await;
    wait_tenant(&app, &key, Some(ns)).await;
    let replacement = fresh_key();
    apply(
        &kube,
        &key_secret(ns, "client-a", Some("true"), &replacement),
    )
    .await;
    wait_tenant(&app, &replacement, Some(ns)).await;
    assert_eq!(app.store.tenant_for_key(&key).await.unwrap(), None);

    // Deleting the Secret revokes before the Secret goes.
    kube.api::<Secret>()
        .delete("client-a", &DeleteParams::default())
        .await
        .unwrap();
    wait_tenant(&app, &replacement, None).await;
    wait_for("the Secret to be deleted", RECONCILE, || async {
        match has_finalizer(&kube, "client-a").await {
            None => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // A weak key is refused with an Event; unlabelled Secrets are left alone.
    apply(&kube, &key_secret(ns, "weak", Some("true"), "short")).await;
    apply(&kube, &key_secret(ns, "plain", None, &fresh_key())).await;
    wait_event(&kube, "weak", "ApiKeyRefused").await;
    assert_eq!(app.store.tenant_for_key("short").await.unwrap(), None);
    assert_eq!(has_finalizer(&kube, "plain").await, Some(false));

    ctl.stop().await;
    app.stop().await;
    kube.cleanup().await;
}

#[tokio::test]
async fn a_key_value_granted_twice_is_refused_with_an_event_and_granted_once_free() {
    let Some(kube) = Kube::setup("apikey-dup").await else {
        return;
    };
    let ns = kube.ns.as_str();
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let ctl = RunningController::solo(&kube, &app);

    // A mirroring tool copied the Secret: same value, second name.
    let key = fresh_key();
    apply(&kube, &key_secret(ns, "original", Some("true"), &key)).await;
    wait_tenant(&app, &key, Some(ns)).await;
    apply(&kube, &key_secret(ns, "mirror", Some("true"), &key)).await;
    wait_event(&kube, "mirror", "ApiKeyConflict").await;
    let note = event_note(&kube, "mirror", "ApiKeyConflict").await;
    assert!(
        note.contains(&format!("{ns}/original")) && !note.contains(&key),
        "the Event names the grant in the way, never the key: {note}"
    );
    assert_eq!(
        publish_status(&app, &key).await,
        202,
        "the first grant stands"
    );

    // The same value in another tenant is refused without naming that tenant.
    let other = app
        .store
        .upsert_k8s_api_key("elsewhere/copy", "elsewhere", &key)
        .await
        .expect_err("a key authenticates one tenant");
    let text = other.to_string();
    assert!(
        text.contains("another tenant") && !text.contains(ns),
        "{text}"
    );

    // Once the original goes, the copy is granted (on its periodic re-check).
    kube.api::<Secret>()
        .delete("original", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the copy to be granted", RECONCILE * 2, || async {
        let by = granted_by(&app, &key).await;
        if by.as_deref() == Some(&format!("{ns}/mirror")) {
            Ok(())
        } else {
            Err(format!("{by:?}"))
        }
    })
    .await;
    // `hookit keys revoke` cannot take a Secret's grant away: the controller owns it.
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM api_keys WHERE k8s_secret = $1")
        .bind(format!("{ns}/mirror"))
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    let refused = app.store.revoke_api_key(id).await.unwrap_err().to_string();
    assert!(
        refused.contains(&format!("Secret {ns}/mirror")),
        "{refused}"
    );

    ctl.stop().await;
    app.stop().await;
    kube.cleanup().await;
}

/// The note of the first Event with `reason` about `name`.
async fn event_note(kube: &Kube, name: &str, reason: &str) -> String {
    use k8s_openapi::api::events::v1::Event;
    let events = kube.api::<Event>().list(&Default::default()).await.unwrap();
    events
        .items
        .into_iter()
        .find(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .and_then(|e| e.note)
        .unwrap_or_default()
}

/// Which Secret (`namespace/name`) grants `key`, read from the database.
async fn granted_by(app: &TestApp, key: &str) -> Option<String> {
    sqlx::query_scalar::<_, Option<String>>("SELECT k8s_secret FROM api_keys WHERE key_hash = $1")
        .bind(&hookit::db::keys::hash_key(key)[..])
        .fetch_optional(app.store.pool())
        .await
        .unwrap()
        .flatten()
}

#[tokio::test]
async fn an_event_published_with_a_secret_granted_key_reaches_the_webhookendpoint_receiver() {
    let Some(kube) = Kube::setup("e2e").await else {
        return;
    };
    let ns = kube.ns.as_str();
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let ctl = RunningController::solo(&kube, &app);
    let key = fresh_key();
    apply(&kube, &key_secret(ns, "publisher", Some("true"), &key)).await;
    apply(
        &kube,
        &manifest(
            ns,
            "orders",
            &format!(
                "  url: {}\n  eventTypes: [\"order.*\"]\n",
                receiver.url("/orders")
            ),
        ),
    )
    .await;
    wait_ready(&kube, "orders", "True", None).await;
    wait_tenant(&app, &key, Some(ns)).await;

    for (event_type, n) in [("user.created", 1), ("order.created", 2)] {
        let r = app
            .req_as(&key, reqwest::Method::POST, "/v1/events")
            .json(&json!({"event_type": event_type, "payload": {"n": n}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
    }
    let got = receiver.wait_for(1, Duration::from_secs(20)).await;
    let body: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(
        body["type"], "order.created",
        "only subscribed types arrive: {body}"
    );
    assert_eq!(got[0].path, "/orders");
    let secret =
        signing::Secret::parse(&secret_value(&kube, "orders-signing", "secret").await).unwrap();
    verify(
        &secret,
        &got[0].header("webhook-id"),
        &got[0].header("webhook-timestamp"),
        &got[0].header("webhook-signature"),
        &got[0].body,
        chrono::Utc::now().timestamp(),
    )
    .expect("signed with the secret in Secret orders-signing");

    // The status catches up with the delivery.
    let api = kube.api::<WebhookEndpoint>();
    let figures = wait_for("status.deliveries.succeeded = 1", RECONCILE, || async {
        let we = api.get("orders").await.map_err(|e| e.to_string())?;
        let d = we.status.and_then(|s| s.deliveries).ok_or("no figures")?;
        if d.succeeded == 1 {
            Ok(d)
        } else {
            Err(format!("{d:?}"))
        }
    })
    .await;
    assert!(figures.last_delivery_time.is_some());
    assert_eq!((figures.failed, figures.dead), (0, 0));
    assert_eq!(receiver.received().len(), 1);

    ctl.stop().await;
    app.stop().await;
    kube.cleanup().await;
}
