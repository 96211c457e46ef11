//! Two controller replicas: only the Lease holder reconciles, and when it stops
//! the other takes over.

use std::time::Duration;

use hookit::operator::LEASE_NAME;
use k8s_openapi::api::coordination::v1::Lease;

use super::env::{wait_for, Kube, RunningController};
use super::{apply, events_about, manifest, wait_ready};
use crate::common::{Options, TestApp};

/// The Lease duration of both replicas.
const TERM: Duration = Duration::from_secs(24);

async fn holder(kube: &Kube, not: Option<&str>) -> String {
    let leases = kube.api::<Lease>();
    wait_for(
        &format!("a Lease holder other than {not:?}"),
        Duration::from_secs(30),
        || async {
            let lease = leases
                .get_opt(LEASE_NAME)
                .await
                .map_err(|e| e.to_string())?;
            let h = lease
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity)
                .ok_or("no holder")?;
            if Some(h.as_str()) == not {
                Err(format!("still {h}"))
            } else {
                Ok(h)
            }
        },
    )
    .await
}

#[tokio::test]
async fn only_the_lease_holder_reconciles_and_the_other_replica_takes_over() {
    let Some(kube) = Kube::setup("leader").await else {
        return;
    };
    let ns = kube.ns.as_str();
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let mut replicas: Vec<(String, Option<RunningController>)> = ["replica-a", "replica-b"]
        .into_iter()
        .map(|id| {
            // A long term, so that a takeover on release is told apart from
            // one at the term's end.
            let mut cfg = RunningController::config(ns, id);
            cfg.controller_lease = TERM;
            let c = RunningController::start(cfg, kube.client.clone(), app.store.clone());
            (id.to_string(), Some(c))
        })
        .collect();

    let leader = holder(&kube, None).await;
    apply(
        &kube,
        &manifest(ns, "first", "  url: http://127.0.0.1:9/first\n"),
    )
    .await;
    wait_ready(&kube, "first", "True", None).await;
    let reporters: Vec<String> = events_about(&kube, "first")
        .await
        .into_iter()
        .map(|(_, i)| i)
        .collect();
    assert!(!reporters.is_empty(), "the reconcile recorded no Event");
    assert!(
        reporters.iter().all(|i| *i == leader),
        "only the leader {leader} may reconcile; Events came from {reporters:?}"
    );

    // Stop the leader gracefully: it releases the Lease, the other takes it.
    let started = tokio::time::Instant::now();
    let leader_ctl = replicas
        .iter_mut()
        .find(|(id, _)| *id == leader)
        .unwrap()
        .1
        .take()
        .unwrap();
    leader_ctl.stop().await;
    let successor = holder(&kube, Some(&leader)).await;
    let takeover = started.elapsed();
    eprintln!("takeover after {:.2}s", takeover.as_secs_f64());
    // The holder renews a third of the term before its end, so a successor
    // that waited for the term would take at least TERM / 3 after the release.
    assert!(
        takeover < TERM / 4,
        "the successor took over after {takeover:?}: it waited for the released term ({TERM:?}) to run out"
    );
    apply(
        &kube,
        &manifest(ns, "second", "  url: http://127.0.0.1:9/second\n"),
    )
    .await;
    wait_ready(&kube, "second", "True", None).await;
    let reporters: Vec<String> = events_about(&kube, "second")
        .await
        .into_iter()
        .map(|(_, i)| i)
        .collect();
    assert!(
        !reporters.is_empty() && reporters.iter().all(|i| *i == successor),
        "{reporters:?}"
    );

    for (_, c) in replicas {
        if let Some(c) = c {
            c.stop().await;
        }
    }
    app.stop().await;
    kube.cleanup().await;
}
