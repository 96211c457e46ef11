//! `spec.transformation` and `spec.transformationFrom` against a real
//! kube-apiserver: checked before they are applied (the line of a syntax error
//! in the status), read from a ConfigMap, and re-applied when it changes.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use super::env::{wait_for, Kube, RunningController};
use super::{apply, manifest, wait_event, wait_ready, RECONCILE};
use crate::common::TestApp;

/// The code the store has for the namespace's only endpoint.
async fn stored_code(app: &TestApp, ns: &str) -> Option<String> {
    let eps = app.store.list_endpoints(ns, None, 10).await.unwrap();
    eps.first().and_then(|e| e.transformation.clone())
}

fn inline(code: &str) -> String {
    let indented: String = code.lines().map(|l| format!("    {l}\n")).collect();
    format!("  url: http://127.0.0.1:9/hook\n  transformation: |\n{indented}")
}

#[tokio::test]
async fn inline_code_is_checked_before_it_is_applied_and_its_line_is_in_the_status() {
    let Some(kube) = Kube::setup("we-transform").await else {
        return;
    };
    let ns = kube.ns.as_str();
    let app = TestApp::spawn_with(super::endpoints::no_worker()).await;
    let ctl = RunningController::solo(&kube, &app);

    let broken = "function handler(w) {\n  return w +;\n}";
    apply(&kube, &manifest(ns, "tickets", &inline(broken))).await;
    let we = wait_ready(&kube, "tickets", "False", Some("TransformationInvalid")).await;
    let message = we.status.unwrap().ready().unwrap().message.clone();
    assert!(
        message.contains("SyntaxError") && message.contains("line 2"),
        "{message}"
    );
    wait_event(&kube, "tickets", "TransformationInvalid").await;
    assert_eq!(stored_code(&app, ns).await, None, "nothing applied");

    let good = "function handler(w) {\n  w.payload = { t: w.eventType };\n  return w;\n}";
    apply(&kube, &manifest(ns, "tickets", &inline(good))).await;
    wait_ready(&kube, "tickets", "True", None).await;
    // The block scalar keeps a final newline.
    assert_eq!(
        stored_code(&app, ns).await.as_deref(),
        Some(format!("{good}\n").as_str())
    );

    // Both sources at once are refused by the CRD itself.
    let both = format!(
        "{}  transformationFrom:\n    name: code\n    key: handler.js\n",
        inline(good)
    );
    let out = kube
        .kubectl(&["apply", "-f", "-"], Some(&manifest(ns, "tickets", &both)))
        .await;
    assert!(!out.ok, "both sources were accepted");
    assert!(
        out.stderr
            .contains("set transformation or transformationFrom, not both"),
        "{}",
        out.stderr
    );

    ctl.stop().await;
    app.stop().await;
    kube.cleanup().await;
}

#[tokio::test]
async fn code_from_a_configmap_waits_for_it_and_follows_its_changes() {
    let Some(kube) = Kube::setup("we-transform-cm").await else {
        return;
    };
    let ns = kube.ns.as_str();
    let app = TestApp::spawn_with(super::endpoints::no_worker()).await;
    let ctl = RunningController::solo(&kube, &app);
    apply(
        &kube,
        &manifest(
            ns,
            "chat",
            "  url: http://127.0.0.1:9/hook\n  transformationFrom:\n    name: chat-code\n    key: handler.js\n",
        ),
    )
    .await;
    let we = wait_ready(&kube, "chat", "False", Some("TransformationMissing")).await;
    let message = we.status.unwrap().ready().unwrap().message.clone();
    assert!(
        message.contains("chat-code") && message.contains("does not exist"),
        "{message}"
    );

    // Creating the ConfigMap applies it (through the watch: within RECONCILE,
    // shorter than the 60 s retry of a missing source).
    let v1 = "function handler(w) { w.payload = { v: 1 }; return w }";
    let cms = kube.api::<ConfigMap>();
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "chat-code", "namespace": ns},
        "data": {"handler.js": v1}
    }))
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    wait_ready(&kube, "chat", "True", None).await;
    assert_eq!(stored_code(&app, ns).await.as_deref(), Some(v1));

    // A change of the ConfigMap alone (the resource's generation stays) is applied.
    let v2 = "function handler(w) { w.payload = { v: 2 }; return w }";
    cms.patch(
        "chat-code",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"handler.js": v2}})),
    )
    .await
    .unwrap();
    wait_for("the new code in the store", RECONCILE, || async {
        match stored_code(&app, ns).await {
            Some(c) if c == v2 => Ok(()),
            other => Err(format!("stored: {other:?}")),
        }
    })
    .await;

    // Code in the ConfigMap that does not compile is refused; the endpoint keeps v2.
    cms.patch(
        "chat-code",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"handler.js": "function handler( {"}})),
    )
    .await
    .unwrap();
    wait_ready(&kube, "chat", "False", Some("TransformationInvalid")).await;
    assert_eq!(stored_code(&app, ns).await.as_deref(), Some(v2));

    ctl.stop().await;
    app.stop().await;
    kube.cleanup().await;
}
