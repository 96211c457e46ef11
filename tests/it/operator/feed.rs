//! The controller's delivery change feed: a quiet endpoint is not reconciled
//! until a delivery changes its figures, and the feed's query finds exactly
//! the managed endpoints whose figures moved.

use std::time::Duration;

use hookit::db::endpoints::{EndpointSpec, ManagedEndpoint};
use hookit::db::figures::FigureChanges;
use hookit::domain::ids::EndpointId;
use hookit::domain::signing;
use hookit::operator::WebhookEndpoint;
use serde_json::json;

use super::endpoints::no_worker;
use super::env::{wait_for, Kube};
use super::rbac::{sample, ControllerProcess};
use super::{apply, manifest, wait_ready, RECONCILE};
use crate::common::{Receiver, TestApp};

/// Reconciles of WebhookEndpoints and looks of the change feed, from /metrics.
async fn reconciles_and_looks(ctl: &ControllerProcess) -> (f64, f64) {
    let page = ctl.metrics().await;
    (
        sample(
            &page,
            "hookit_controller_reconciles_total{controller=\"webhookendpoint\"",
        ),
        sample(&page, "hookit_controller_feed_polls_total{result=\"ok\"}"),
    )
}

/// Waits (bounded) until `looks` looks of the change feed in a row pass without
/// a reconcile of a WebhookEndpoint; returns the reconcile count.
async fn quiet_for(ctl: &ControllerProcess, looks: f64) -> f64 {
    let since = std::cell::Cell::new(reconciles_and_looks(ctl).await);
    wait_for(
        &format!("{looks} looks of the change feed without a reconcile"),
        RECONCILE,
        || async {
            let (r0, l0) = since.get();
            let (r, l) = reconciles_and_looks(ctl).await;
            if r != r0 {
                since.set((r, l));
                Err(format!("reconciled: {r0} -> {r}"))
            } else if l - l0 >= looks {
                Ok(r)
            } else {
                Err(format!("{} quiet looks so far", l - l0))
            }
        },
    )
    .await
}

#[tokio::test]
async fn a_quiet_endpoint_is_not_reconciled_until_a_delivery_changes_its_figures() {
    let Some(kube) = Kube::setup("we-quiet").await else {
        return;
    };
    let ns = kube.ns.as_str();
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    // The real binary, for its /metrics: the feed looks every second.
    let mut ctl = ControllerProcess::spawn(&kube.kubeconfig, &app, ns, "quiet-0");
    apply(
        &kube,
        &manifest(ns, "quiet", &format!("  url: {}\n", receiver.url("/quiet"))),
    )
    .await;
    let we = wait_ready(&kube, "quiet", "True", Some("Delivering")).await;
    assert_eq!(we.status.unwrap().deliveries.unwrap().succeeded, 0);

    // Once the reconciles that becoming Ready causes are done (its own status
    // write, the generated Secret), nothing is reconciled while nothing
    // happens: the feed keeps looking (the row changed a moment ago, so it
    // compares the figures every time) and finds the status up to date.
    let settled = quiet_for(&ctl, 2.0).await;
    assert_eq!(
        quiet_for(&ctl, 5.0).await,
        settled,
        "reconciled while nothing changed"
    );

    // A delivery changes the figures, and only the feed can tell: the status
    // follows without any change to the resource.
    let key = app.key_for(ns).await;
    let r = app
        .req_as(&key, reqwest::Method::POST, "/v1/events")
        .json(&json!({"event_type": "order.created", "payload": {"n": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    receiver.wait_for(1, Duration::from_secs(20)).await;
    let api = kube.api::<WebhookEndpoint>();
    wait_for("the status to count the delivery", RECONCILE, || async {
        let we = api.get("quiet").await.map_err(|e| e.to_string())?;
        let figures = we.status.and_then(|s| s.deliveries).unwrap_or_default();
        if figures.succeeded == 1 && figures.pending == 0 && figures.last_delivery_time.is_some() {
            Ok(())
        } else {
            Err(format!("{figures:?}"))
        }
    })
    .await;
    let page = ctl.metrics().await;
    assert!(
        sample(&page, "hookit_controller_feed_triggers_total") >= 1.0,
        "the feed did not trigger the refresh:\n{page}"
    );

    // Then quiet again: the attempt stays in the feed's look-back (it allows
    // for attempts logged late), but the status already shows it.
    let settled = quiet_for(&ctl, 2.0).await;
    assert_eq!(
        quiet_for(&ctl, 5.0).await,
        settled,
        "reconciled again for a delivery the status already shows"
    );

    assert!(ctl.terminate().await.success());
    app.stop().await;
    kube.cleanup().await;
}

/// A managed endpoint row for `tenant/name`, last changed an hour ago.
async fn managed_row(app: &TestApp, tenant: &str, name: &str) -> EndpointId {
    let ep = app
        .store
        .upsert_managed_endpoint(&ManagedEndpoint {
            uid: uuid::Uuid::new_v4().to_string(),
            name: format!("{tenant}/{name}"),
            tenant: tenant.into(),
            spec: EndpointSpec {
                url: format!("http://127.0.0.1:9/{name}"),
                ..Default::default()
            },
            paused: false,
            secret: signing::Secret::generate(),
        })
        .await
        .unwrap();
    sqlx::query("UPDATE endpoints SET updated_at = now() - interval '1 hour' WHERE id = $1")
        .bind(ep.id.uuid())
        .execute(app.store.pool())
        .await
        .unwrap();
    ep.id
}

/// A delivery row of `endpoint` (with an id of now) and, when `started` is
/// given, its attempt: what the ingestion and the completion statements leave.
async fn delivery_row(
    app: &TestApp,
    tenant: &str,
    endpoint: EndpointId,
    status: &str,
    started: Option<chrono::DateTime<chrono::Utc>>,
) {
    let (id,): (uuid::Uuid,) = sqlx::query_as(
        "INSERT INTO deliveries (id, tenant, event_id, endpoint_id, status, attempts, next_attempt_at, finished_at)
         VALUES (hookit_uuid_v7(), $1, gen_random_uuid(), $2, $3::delivery_status, $4,
                 CASE WHEN $3 = 'pending' THEN now() END,
                 CASE WHEN $3 IN ('succeeded', 'dead') THEN coalesce($5, now()) END)
         RETURNING id",
    )
    .bind(tenant)
    .bind(endpoint.uuid())
    .bind(status)
    .bind(i32::from(started.is_some()))
    .bind(started)
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    if let Some(at) = started {
        sqlx::query(
            "INSERT INTO delivery_attempts (delivery_id, attempt, endpoint_id, started_at, duration_ms, succeeded)
             VALUES ($1, 1, $2, $3, 10, $4)",
        )
        .bind(id)
        .bind(endpoint.uuid())
        .bind(at)
        .bind(status == "succeeded")
        .execute(app.store.pool())
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn the_change_feed_finds_exactly_the_managed_endpoints_whose_figures_moved() {
    let app = TestApp::spawn_with(no_worker()).await;
    let now = chrono::Utc::now();
    let ago = |secs: i64| now - chrono::Duration::seconds(secs);
    let day = 24 * 3600;
    let t = "feed";
    let quiet = managed_row(&app, t, "quiet").await;
    delivery_row(&app, t, quiet, "succeeded", Some(ago(7200))).await;
    // An attempt that started before the look-back's start is not seen; one
    // logged late, started inside it, is.
    let late = managed_row(&app, t, "late").await;
    delivery_row(&app, t, late, "succeeded", Some(ago(300))).await;
    // An attempt leaving the 24-hour window between the two looks.
    let aged = managed_row(&app, t, "aged").await;
    delivery_row(&app, t, aged, "succeeded", Some(ago(day + 30))).await;
    let queued = managed_row(&app, t, "queued").await;
    delivery_row(&app, t, queued, "pending", None).await;
    // Dead-lettered without an attempt (the endpoint went away mid-queue).
    let buried = managed_row(&app, t, "buried").await;
    delivery_row(&app, t, buried, "dead", None).await;
    let touched = managed_row(&app, t, "touched").await;
    app.store
        .disable_endpoint(touched.uuid(), "410 Gone")
        .await
        .unwrap();
    // Not the controller's business: a REST endpoint, and another namespace.
    let key = app.key_for(t).await;
    let rest: EndpointId = {
        let r = app
            .req_as(&key, reqwest::Method::POST, "/v1/endpoints")
            .json(&json!({"url": "http://127.0.0.1:9/rest"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        r.json::<serde_json::Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    delivery_row(&app, t, rest, "succeeded", Some(ago(5))).await;
    let elsewhere = managed_row(&app, "other", "elsewhere").await;
    delivery_row(&app, "other", elsewhere, "succeeded", Some(ago(5))).await;

    let window = FigureChanges {
        tenant: Some(t.into()),
        after: ago(600),
        left: (ago(day + 60), ago(day)),
    };
    let mut found: Vec<String> = app
        .store
        .figures_changed(&window)
        .await
        .unwrap()
        .into_iter()
        .map(|c| {
            assert_eq!(c.tenant, t);
            c.k8s_name
        })
        .collect();
    found.sort();
    let expected: Vec<String> = ["aged", "buried", "late", "queued", "touched"]
        .iter()
        .map(|n| format!("{t}/{n}"))
        .collect();
    assert_eq!(found, expected);
    let all = FigureChanges {
        tenant: None,
        ..window
    };
    assert_eq!(app.store.figures_changed(&all).await.unwrap().len(), 6);

    // The figures of several endpoints at once are those of each alone.
    let since = ago(day);
    let keys: Vec<_> = [quiet, late, aged, queued, buried]
        .into_iter()
        .map(|id| (t.to_string(), id))
        .collect();
    let many = app.store.delivery_summaries(&keys, since).await.unwrap();
    assert_eq!(many.len(), keys.len());
    for (id, summary) in many {
        assert_eq!(
            summary,
            app.store.delivery_summary(t, id, since).await.unwrap()
        );
    }
    let late_figures = app.store.delivery_summary(t, late, since).await.unwrap();
    assert_eq!((late_figures.succeeded, late_figures.pending), (1, 0));
    let queued_figures = app.store.delivery_summary(t, queued, since).await.unwrap();
    assert_eq!((queued_figures.succeeded, queued_figures.pending), (0, 1));
    let buried_figures = app.store.delivery_summary(t, buried, since).await.unwrap();
    assert_eq!(buried_figures.dead, 1);

    app.stop().await;
}
