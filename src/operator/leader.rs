//! Leader election through a `coordination.k8s.io` Lease, so that of several
//! controller replicas exactly one reconciles. The others wait and take over
//! once the leader releases the Lease (graceful stop) or stops renewing it.

use std::future::Future;
use std::time::Duration;

use kube::Client;
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
    while !shutdown.is_cancelled() {
        let manager = match lease.manager(client.clone()).await {
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
