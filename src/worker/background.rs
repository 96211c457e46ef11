//! The worker's background loops: wake-ups on `NOTIFY`, the lease rescue, and the
//! renewal of leases held longer than half their term.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::db::WORK_CHANNEL;

use super::Worker;

impl Worker {
    /// Wakes the claim loop on `NOTIFY hookit_work`.
    pub(super) async fn listen_loop(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let mut listener = match sqlx::postgres::PgListener::connect_with(self.store.pool())
                .await
            {
                Ok(l) => l,
                Err(e) => {
                    debug!(error = %e, "LISTEN connection failed; retrying");
                    tokio::select! { _ = tokio::time::sleep(Duration::from_secs(1)) => continue, _ = stop.cancelled() => return }
                }
            };
            if listener.listen(WORK_CHANNEL).await.is_err() {
                tokio::select! { _ = tokio::time::sleep(Duration::from_secs(1)) => continue, _ = stop.cancelled() => return }
            }
            loop {
                tokio::select! {
                    r = listener.recv() => match r {
                        Ok(_) => self.wake.notify_one(),
                        Err(_) => {
                            // Notifications may have been lost while disconnected.
                            self.wake.notify_one();
                            break;
                        }
                    },
                    _ = stop.cancelled() => return,
                }
            }
        }
    }

    /// Periodically returns expired leases to the queue and un-holds resumed
    /// endpoints' deliveries.
    pub(super) async fn rescue_loop(self: Arc<Self>, stop: CancellationToken) {
        let every = (self.cfg.lease / 4).clamp(Duration::from_millis(250), Duration::from_secs(15));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! { _ = tick.tick() => {}, _ = stop.cancelled() => return }
            match self.store.rescue_expired().await {
                Ok(n) if n > 0 => {
                    warn!(rescued = n, "rescued deliveries whose lease expired");
                    self.wake.notify_one();
                }
                Ok(_) => {}
                Err(e) => debug!(error = %e, "lease rescue failed"),
            }
            if let Ok(n) = self.store.unhold_active().await {
                if n > 0 {
                    self.wake.notify_one();
                }
            }
        }
    }

    /// Every quarter lease, extends the leases this worker has held for more than
    /// half their term (see [`super::lease`]).
    pub(super) async fn renew_loop(self: Arc<Self>, stop: CancellationToken) {
        let lease = self.cfg.lease;
        let every = (lease / 4).clamp(Duration::from_millis(100), Duration::from_secs(15));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! { _ = tick.tick() => {}, _ = stop.cancelled() => return }
            let due = self.held.due_for_renewal(std::time::Instant::now(), lease);
            if due.is_empty() {
                continue;
            }
            let sent_at = std::time::Instant::now();
            match self
                .store
                .renew_leases(self.id, &due, lease.as_millis() as i64)
                .await
            {
                Ok(renewed) => {
                    metrics::counter!("hookit_lease_renewals_total")
                        .increment(renewed.len() as u64);
                    let lost = self.held.renewed(&due, &renewed, sent_at, lease);
                    if lost > 0 {
                        warn!(lost, "leases ran out before they could be renewed; those deliveries may be sent again");
                    }
                }
                Err(e) => {
                    self.store.availability().report(&e);
                    warn!(error = %e, n = due.len(), "lease renewal failed; retrying next tick");
                }
            }
        }
    }
}
