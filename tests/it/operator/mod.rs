//! Operator tests against a real Kubernetes API server (see `env`): the CRD as
//! committed, manifests through `kubectl apply`, the controller reconciling
//! into a real database, API keys from Secrets, leader election, the chart's
//! RBAC rules, and an event travelling from the API to a receiver registered
//! by a WebhookEndpoint.
//!
//! Run: `cargo test --test it operator` (binaries from `scripts/k8s-bins.sh`;
//! `HOOKIT_REQUIRE_K8S=1` to fail instead of skipping without them;
//! `HOOKIT_KUBECONFIG=<file>` to use an existing cluster).

mod api_keys;
mod chart;
mod crd;
mod endpoints;
pub mod env;
mod event_types;
mod feed;
mod install;
mod kubelet;
mod kubelet_node;
mod leader;
mod rbac;
mod transformations;

use std::time::Duration;

use hookit::operator::WebhookEndpoint;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;

use env::{wait_for, Kube};

/// Held by the tests that run a node (scripts/kubelet-node.sh): one at a time
/// can own its bridge, its address and the host's iptables rules.
pub(crate) static NODE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Why a node test cannot run here: not root, or one of `tools` missing.
fn node_prerequisites(tools: &[&str]) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("a node needs root (namespaces, mounts, cgroups)".into());
    }
    for tool in tools {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Err(format!("{tool} is not installed (scripts/setup.sh)"));
        }
    }
    Ok(())
}

/// The words of field `key` (`"Uid:"`, `"CapEff:"`) in a `/proc/<pid>/status` text.
fn status_field<'a>(status: &'a str, key: &str) -> Vec<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_default()
        .split_whitespace()
        .collect()
}

/// Skips a node test that cannot run here, or fails it under
/// `HOOKIT_REQUIRE_K8S=1` unless `opt_out=skip` says that a CI runs it in a
/// step of its own (as root: the GitHub workflow does), rather than hiding it.
fn skip_node_test(test: &str, opt_out: &str, why: &str) {
    let opted_out = std::env::var(opt_out).as_deref() == Ok("skip");
    if std::env::var("HOOKIT_REQUIRE_K8S").as_deref() == Ok("1") && !opted_out {
        panic!("HOOKIT_REQUIRE_K8S=1 but {why} ({opt_out}=skip skips only the {test} test)");
    }
    eprintln!("SKIPPING the {test} test: {why}");
}

/// How long a reconcile may take to show up in a test.
const RECONCILE: Duration = Duration::from_secs(30);

/// A WebhookEndpoint manifest; `spec` is YAML indented by two spaces.
fn manifest(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: hookit.dev/v1alpha1\nkind: WebhookEndpoint\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{spec}"
    )
}

/// `kubectl apply`, which must succeed.
async fn apply(kube: &Kube, yaml: &str) {
    let out = kube.kubectl(&["apply", "-f", "-"], Some(yaml)).await;
    assert!(out.ok, "kubectl apply failed: {}\n{yaml}", out.stderr);
}

/// Waits until the resource's Ready condition has `status` (and `reason`, when
/// given) for its current generation; returns the resource.
async fn wait_ready(
    kube: &Kube,
    name: &str,
    status: &str,
    reason: Option<&str>,
) -> WebhookEndpoint {
    let api = kube.api::<WebhookEndpoint>();
    wait_for(
        &format!("{name} Ready={status} {reason:?}"),
        RECONCILE,
        || {
            let api = api.clone();
            async move {
                let we = api.get(name).await.map_err(|e| e.to_string())?;
                let st = we.status.clone().unwrap_or_default();
                let c = st.ready().cloned().ok_or("no Ready condition yet")?;
                let current = st.observed_generation == we.metadata.generation;
                if current && c.status == status && reason.is_none_or(|r| c.reason == r) {
                    Ok(we)
                } else {
                    Err(format!(
                        "{c:?} (observedGeneration {:?})",
                        st.observed_generation
                    ))
                }
            }
        },
    )
    .await
}

/// The Events recorded in the namespace about `name`: (reason, reporting instance).
async fn events_about(kube: &Kube, name: &str) -> Vec<(String, String)> {
    let events = kube
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap();
    events
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| {
            (
                e.reason.unwrap_or_default(),
                e.reporting_instance.unwrap_or_default(),
            )
        })
        .collect()
}

/// Waits until an Event with `reason` was recorded about `name` (Events are
/// recorded after the status write, so they can trail it).
async fn wait_event(kube: &Kube, name: &str, reason: &str) {
    wait_for(
        &format!("a {reason} Event about {name}"),
        RECONCILE,
        || async {
            let events = events_about(kube, name).await;
            if events.iter().any(|(r, _)| r == reason) {
                Ok(())
            } else {
                Err(format!("{events:?}"))
            }
        },
    )
    .await
}

/// The text value of a Secret's entry.
async fn secret_value(kube: &Kube, name: &str, key: &str) -> String {
    let s = kube.api::<Secret>().get(name).await.unwrap();
    let bytes = s.data.unwrap().remove(key).unwrap().0;
    String::from_utf8(bytes).unwrap()
}
