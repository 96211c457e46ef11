//! Leader election through a `coordination.k8s.io` Lease, so that of several
//! controller replicas exactly one reconciles. The others wait and take over
//! once the leader releases the Lease (graceful stop: at once) or stops renewing
//! it (a crash: when its term runs out).
//!
//! `kube-lease-manager` alone would make a waiting replica sleep until the
//! holder's term ends even after a release, so a rolling update would leave the
//! controllers without a leader for up to a Lease duration. A watch on the Lease
//! wakes the waiting replicas when it is released, and they take it then.

use std::future::Future;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Where and as whom this replica competes for leadership.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (the pod name in a cluster).
    pub identity: String,
    /// How long the Lease holds without renewal.
    pub duration: Duration,
}

impl LeaseSettings {
    async fn manager(&self, client: Client) -> kube_lease_manager::Result<LeaseManager> {
        let secs = self.duration.as_secs().max(2);
        // The holder renews a third of the duration before expiry.
        let grace = (secs / 3).max(1);
        LeaseManagerBuilder::new(client, &self.name)
            .with_namespace(&self.namespace)
            .with_identity(&self.identity)
            .with_duration(secs)
            .with_grace(grace)
            .build()
            .await
    }

    /// Yields whenever the Lease is seen without a holder (released, or never
    /// taken). Watch errors are retried with backoff; they only delay a takeover
    /// to the end of the old term, as without the watch.
    fn releases(&self, client: Client) -> BoxStream<'static, ()> {
        let leases: Api<Lease> = Api::namespaced(client, &self.namespace);
        let cfg = watcher::Config::default().fields(&format!("metadata.name={}", self.name));
        watcher(leases, cfg)
            .default_backoff()
            .applied_objects()
            .filter_map(|l| async move {
                let held = l
                    .ok()?
                    .spec
                    .and_then(|s| s.holder_identity)
                    .is_some_and(|h| !h.is_empty());
                (!held).then_some(())
            })
            .boxed()
    }
}

/// Work running while this replica leads.
struct Term {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Term {
    async fn end(self) {
        self.stop.cancel();
        if let Err(e) = self.task.await {
            warn!(error = %e, "reconcilers ended abnormally");
        }
        metrics::gauge!("hookit_controller_leader").set(0.0);
    }
}

/// Runs `work` whenever this replica holds the Lease, until `shutdown`. `work`
/// gets a token that is cancelled when leadership ends; it must then return.
/// On shutdown the Lease is released so another replica takes over at once.
pub async fn lead<F, Fut>(
    client: Client,
    lease: &LeaseSettings,
    shutdown: CancellationToken,
    work: F,
) -> anyhow::Result<()>
where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    metrics::gauge!("hookit_controller_leader").set(0.0);
    let mut retry = Duration::from_secs(1);
    let mut released = lease.releases(client.clone());
    while !shutdown.is_cancelled() {
        let mut manager = match lease.manager(client.clone()).await {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, lease = %lease.name, namespace = %lease.namespace, "cannot set up the leader-election Lease; retrying");
                pause(retry, &shutdown).await;
                retry = (retry * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        let mut term: Option<Term> = None;
        let failed = loop {
            let changed = tokio::select! {
                r = manager.changed() => r,
                // While another replica holds it, `changed` sleeps until that
                // term ends, trusting what it read last. On a release, drop it
                // (it holds nothing across that sleep) and start from a fresh
                // manager, whose first look reads the Lease and takes it.
                Some(()) = released.next(), if term.is_none() => {
                    match lease.manager(client.clone()).await {
                        Ok(m) => manager = m,
                        Err(e) => warn!(error = %e, "cannot re-read the released Lease; waiting for its term"),
                    }
                    continue;
                }
                _ = shutdown.cancelled() => break false,
            };
            match changed {
                Ok(true) => {
                    info!(identity = %lease.identity, "acquired the controller Lease; reconciling");
                    metrics::gauge!("hookit_controller_leader").set(1.0);
                    retry = Duration::from_secs(1);
                    let stop = shutdown.child_token();
                    let task = tokio::spawn(work(stop.clone()));
                    term = Some(Term { stop, task });
                }
                Ok(false) => {
                    warn!(identity = %lease.identity, "lost the controller Lease; stopping reconcilers");
                    if let Some(t) = term.take() {
                        t.end().await;
                    }
                }
                Err(e) => {
                    // Leadership can no longer be proven: stop, and start over with a
                    // fresh manager, which reports leadership anew once it is sure.
                    warn!(error = %e, "leader election failed; stopping reconcilers");
                    break true;
                }
            }
        };
        if let Some(t) = term.take() {
            t.end().await;
        }
        if failed {
            pause(retry, &shutdown).await;
            retry = (retry * 2).min(Duration::from_secs(30));
        } else if let Err(e) = manager.release().await {
            warn!(error = %e, "could not release the controller Lease; it expires on its own");
        }
    }
    Ok(())
}

async fn pause(d: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.cancelled() => {}
    }
}
